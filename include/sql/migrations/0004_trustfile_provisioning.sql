-- Companies we sign up to TrustFile ourselves (the provisioning DAG): who, and the company token
-- TrustFile returned, which is the connection's key for pushing items.
ALTER TABLE trustfile.connections
    ADD COLUMN provisioning_state text NOT NULL DEFAULT 'external'
        CHECK (provisioning_state IN ('external', 'signing_up', 'signup_failed', 'provisioned')),
    ADD COLUMN signup_email   text,
    ADD COLUMN company_name   text,
    ADD COLUMN company_token  bytea;      -- Fernet-encrypted (etl.encryption)
CREATE UNIQUE INDEX connections_signup_email ON trustfile.connections (lower(signup_email))
    WHERE signup_email IS NOT NULL;
COMMENT ON COLUMN trustfile.connections.provisioning_state IS
    'external: created by TrustFile through the API; signing_up / signup_failed / provisioned: by trustfile_provision.';
