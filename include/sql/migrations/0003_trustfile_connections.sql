-- The extractor's side of TrustFile: the companies (connections) TrustFile asks us to sync,
-- what happened to each (activities), and the connector switch. Managed through the extractor API.
CREATE SCHEMA trustfile;

CREATE TABLE trustfile.connections (
    connection_id       text        PRIMARY KEY,          -- TrustFile's connectionId
    enabled             boolean     NOT NULL DEFAULT false,
    start_date          date,
    host_system         text        NOT NULL DEFAULT 'qbo' CHECK (host_system IN ('qbo', 'servicetrade')),
    host_identifier     text,                             -- QBO realm id, ServiceTrade account
    host_credentials    bytea,                            -- Fernet-encrypted JSON (etl.encryption)
    status_changed_at   timestamptz NOT NULL DEFAULT now(),
    last_sync_at        timestamptz,
    next_sync_at        timestamptz,
    status_message      text        NOT NULL DEFAULT 'created; waiting for TrustFile to enable it',
    created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE trustfile.activities (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    connection_id   text        NOT NULL REFERENCES trustfile.connections (connection_id) ON DELETE CASCADE,
    at              timestamptz NOT NULL DEFAULT now(),
    action          text        NOT NULL
);
CREATE INDEX activities_connection ON trustfile.activities (connection_id, at DESC);

CREATE TABLE trustfile.connector (
    singleton   boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    enabled     boolean     NOT NULL DEFAULT true,
    changed_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO trustfile.connector (singleton) VALUES (true);
