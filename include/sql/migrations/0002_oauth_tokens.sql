-- OAuth tokens shared by every worker: one row per (vendor, scope), e.g. ('qbo', <realm id>).
-- Refresh tokens rotate; the newest is written in the same transaction that holds the row lock
-- around the refresh call, so concurrent refreshers never race and never strand each other.
CREATE TABLE etl.oauth_tokens (
    vendor              text        NOT NULL,
    scope               text        NOT NULL,
    refresh_token       bytea       NOT NULL,   -- Fernet-encrypted (etl.encryption)
    refresh_expires_at  timestamptz,
    access_token        bytea,                  -- Fernet-encrypted
    access_expires_at   timestamptz,
    seed_fingerprint    text        NOT NULL,   -- sha256 of the connection's initial refresh token
    rotated_at          timestamptz NOT NULL DEFAULT now(),
    rotations           bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (vendor, scope)
);
COMMENT ON TABLE etl.oauth_tokens IS
    'Current OAuth tokens per vendor and scope, encrypted; read by every worker, rotated under a row lock.';
