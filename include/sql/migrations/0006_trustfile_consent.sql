-- The QuickBooks consent's `state` values, so that each works once and only for its connection: a row
-- when the consent starts, consumed in the same transaction as the callback's outcome (a link, or the
-- refusal recorded), and gone with its connection. The sealed `state` itself stays the proof of origin
-- (Fernet); this table is the proof that it was not used before.
CREATE TABLE trustfile.consent_states (
    nonce           text        PRIMARY KEY,          -- the random value sealed in the state
    connection_id   text        NOT NULL REFERENCES trustfile.connections (connection_id) ON DELETE CASCADE,
    issued_at       timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    consumed_at     timestamptz
);
CREATE INDEX consent_states_connection ON trustfile.consent_states (connection_id);
CREATE INDEX consent_states_expiry ON trustfile.consent_states (expires_at);

-- When QuickBooks stopped accepting the company's refresh token (invalid_grant): the consent's
-- credentials are dropped (the connection reads not authorized), and the connection waits for the
-- customer to authorize again instead of failing every hour. Cleared by the next consent.
ALTER TABLE trustfile.connections ADD COLUMN consent_lost_at timestamptz;
