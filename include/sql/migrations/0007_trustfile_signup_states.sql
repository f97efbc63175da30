-- A stored company token proves the signup succeeded, so its connection must be syncable (`due` takes
-- only 'external' and 'provisioned'). Parallel provisions of one email could leave a connection
-- 'signup_failed' with its token, never synced: repair those (with an activity saying so), then forbid it.
WITH repaired AS (
    UPDATE trustfile.connections
       SET provisioning_state = 'provisioned', status_changed_at = now(),
           status_message = CASE WHEN enabled THEN 'enabled' ELSE 'signed up; waiting for TrustFile to enable it' END
     WHERE company_token IS NOT NULL AND provisioning_state NOT IN ('provisioned', 'external')
    RETURNING connection_id
)
INSERT INTO trustfile.activities (connection_id, action)
SELECT connection_id, 'Signup state repaired: its company token was stored, so it is provisioned' FROM repaired;

ALTER TABLE trustfile.connections ADD CONSTRAINT company_token_means_syncable
    CHECK (company_token IS NULL OR provisioning_state IN ('provisioned', 'external'));
