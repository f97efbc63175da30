-- The credential registry: every credential the platform uses, with its owner, its expiry, when it was
-- last verified and where it is used, so on-call hears of an expiry weeks before it breaks a pipeline.
-- Rows come from the platform itself (Airflow connections of our types, TrustFile company tokens, OAuth
-- refresh tokens) and from include/credentials.yaml (credentials used outside Airflow). The secret
-- itself is never stored here.
CREATE TABLE etl.credentials (
    credential_id     text        PRIMARY KEY,   -- e.g. 'airflow:qbo_default', 'qbo:refresh_token:<realm>'
    integration       text        NOT NULL,      -- 'trustfile', 'qbo', 'servicetrade', 'platform', ...
    scope             text,                      -- the pipeline scope it serves (a connection id), if one
    name              text        NOT NULL,      -- for people: "QuickBooks refresh token, Acme Inc."
    kind              text        NOT NULL CHECK (kind IN ('airflow_connection', 'company_token',
                                                           'oauth_refresh_token', 'external')),
    owner             text,
    expires_at        timestamptz,               -- NULL: no known expiry
    last_verified_at  timestamptz,
    last_verify_error text,
    used_by           text[]      NOT NULL DEFAULT '{}',   -- DAG ids (derived from code) and free-text places
    notes             text,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX credentials_expiry ON etl.credentials (expires_at) WHERE expires_at IS NOT NULL;
COMMENT ON TABLE etl.credentials IS
    'Every credential the platform uses: owner, expiry, last verification, where used. Never the secret.';

-- One row per (credential, threshold day) once its alert was sent, so a daily run alerts once per threshold.
CREATE TABLE etl.credential_alerts (
    credential_id text        NOT NULL REFERENCES etl.credentials ON DELETE CASCADE,
    expires_at    timestamptz NOT NULL,          -- the expiry the alert was about (a rotation starts afresh)
    days_before   integer     NOT NULL,
    alerted_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (credential_id, expires_at, days_before)
);
