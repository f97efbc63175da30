-- The ETL engine's own state: watermarks, their history, the run ledger and the quarantine.
-- Everything lives in schema `etl`; integrations get schemas of their own.

CREATE TABLE etl.watermarks (
    pipeline        text        NOT NULL,
    scope           text        NOT NULL,
    cursor_kind     text        NOT NULL CHECK (cursor_kind IN ('timestamp', 'id', 'json')),
    ts_value        timestamptz,
    id_value        bigint,
    json_value      jsonb,
    moved_at        timestamptz NOT NULL DEFAULT now(),
    moved_by_run    text        NOT NULL,
    PRIMARY KEY (pipeline, scope),
    CHECK ((cursor_kind = 'timestamp') = (ts_value IS NOT NULL)),
    CHECK ((cursor_kind = 'id') = (id_value IS NOT NULL)),
    CHECK ((cursor_kind = 'json') = (json_value IS NOT NULL))
);
COMMENT ON TABLE etl.watermarks IS
    'Incremental cursor per (pipeline, scope). Moves forward with the rows it covers, in one transaction; only reset() rewinds it.';

CREATE TABLE etl.watermark_history (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pipeline        text        NOT NULL,
    scope           text        NOT NULL,
    action          text        NOT NULL CHECK (action IN ('advance', 'reset')),
    old_value       text,
    new_value       text        NOT NULL,
    run_id          text        NOT NULL,
    reason          text,
    at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX watermark_history_scope ON etl.watermark_history (pipeline, scope, at DESC);

CREATE TABLE etl.run_ledger (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pipeline            text        NOT NULL,
    scope               text        NOT NULL,
    run_id              text        NOT NULL,
    task_id             text,
    try_number          integer,
    mode                text        NOT NULL CHECK (mode IN ('incremental', 'backfill', 'maintenance')),
    window_start        text,
    window_end          text,
    watermark_before    text,
    watermark_after     text,
    rows_read           bigint      NOT NULL DEFAULT 0,
    rows_inserted       bigint      NOT NULL DEFAULT 0,
    rows_updated        bigint      NOT NULL DEFAULT 0,
    rows_unchanged      bigint      NOT NULL DEFAULT 0,
    rows_quarantined    bigint      NOT NULL DEFAULT 0,
    status              text        NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'success', 'failed')),
    error               text,
    started_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz
);
CREATE INDEX run_ledger_scope ON etl.run_ledger (pipeline, scope, started_at DESC);
CREATE INDEX run_ledger_started ON etl.run_ledger (started_at);
COMMENT ON TABLE etl.run_ledger IS
    'One row per pipeline task run; on-call starts here: status, error, window and row counts.';

CREATE TABLE etl.quarantine (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ledger_id       bigint      REFERENCES etl.run_ledger (id) ON DELETE SET NULL,
    pipeline        text        NOT NULL,
    scope           text        NOT NULL,
    record_key      text,
    reason          text        NOT NULL,
    payload         jsonb       NOT NULL,
    quarantined_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX quarantine_scope ON etl.quarantine (pipeline, scope, quarantined_at DESC);
CREATE INDEX quarantine_ledger ON etl.quarantine (ledger_id);
COMMENT ON TABLE etl.quarantine IS
    'Records a pipeline refused, with the reason; the rest of their batch loaded.';
