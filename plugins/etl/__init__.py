"""Our ETL engine: plain Python, no Airflow UI concerns, testable without a scheduler.

db          -- the one place that opens connections to the integrations database
migrate     -- applies include/sql/migrations in order, checksum-guarded
tables      -- target tables declared in code (the allow-list for the loader)
loader      -- COPY-based upsert with inserted / updated / unchanged counts
watermarks  -- incremental state per (pipeline, scope), advanced inside the caller's transaction
ledger      -- a row per pipeline task run, and the quarantine of rejected records
incremental -- the incremental-load procedure that wires the pieces together
"""
