-- OMS-Pro table sweeps (issue 12 item 5): each run of a declared rule over a view, its resumable cursor and
-- counts, and every record it changed or would change (a dry run's report, read later).

CREATE TABLE oms.sweep_runs (
    id              bigserial   PRIMARY KEY,
    sweep           text        NOT NULL,
    dry_run         boolean     NOT NULL,
    rule            jsonb       NOT NULL,               -- the rule as declared when the run began
    fingerprint     text        NOT NULL,               -- a resumed run must apply the same rule
    view_name       text        NOT NULL,
    batch_size      integer     NOT NULL CHECK (batch_size BETWEEN 2 AND 1000),
    dag_run_id      text        NOT NULL,               -- the DAG run that began it (a resume may be another)
    status          text        NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'done', 'superseded')),
    cursor_updated  timestamptz,                        -- the last (Updated, Record ID) handled, committed per page
    cursor_id       bigint,
    lookups         integer     NOT NULL DEFAULT 0,     -- API calls: 3 per attempt (views, structure, count)
    pages           integer     NOT NULL DEFAULT 0,     -- ... + pages read
    puts            integer     NOT NULL DEFAULT 0,     -- ... + PUTs answered
    read            integer     NOT NULL DEFAULT 0,     -- record versions handled
    unchanged       integer     NOT NULL DEFAULT 0,     -- not matched, or already holding the value
    started_at      timestamptz NOT NULL DEFAULT now(),
    resumed_at      timestamptz,
    finished_at     timestamptz
);
-- One unfinished run per sweep and kind: the next trigger resumes it.
CREATE UNIQUE INDEX sweep_runs_one_running ON oms.sweep_runs (sweep, dry_run) WHERE status = 'running';

-- A record the run changed (or, dry, would change). `outcome`: planned (dry run), sending (row committed
-- before the PUT: after a kill, the record's value tells whether it landed), inserted (the field was empty),
-- updated (it held another value), failed (TrackVia refused the PUT; `error` says why).
CREATE TABLE oms.sweep_changes (
    run_id       bigint      NOT NULL REFERENCES oms.sweep_runs (id),
    record_id    bigint      NOT NULL,
    record_name  text,                                  -- the record's Record ID as people read it
    field        text        NOT NULL,
    before       text,
    after        text,
    outcome      text        NOT NULL CHECK (outcome IN ('planned', 'sending', 'inserted', 'updated', 'failed')),
    error        text,
    changed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, record_id)
);
COMMENT ON TABLE oms.sweep_changes IS
    'OMS-Pro sweep report: per run (oms.sweep_runs), each record changed or, for a dry run, to be changed.';
