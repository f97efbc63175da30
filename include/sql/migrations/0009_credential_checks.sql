-- When a credential was last checked, whether or not the check passed. last_verified_at counts only
-- successes, so it cannot hold a request budget ("QuickBooks: at most one check a day per company"): a
-- failed check followed by a retry or a manual rerun the same day would call the vendor again.
ALTER TABLE etl.credentials ADD COLUMN last_checked_at timestamptz;
COMMENT ON COLUMN etl.credentials.last_checked_at IS
    'The last check, passed or failed (the request budget); last_verified_at is the last one that passed.';
