-- Request budgets (etl.request_budgets, used by plugins/etl/request_budget.py): one row per (vendor, credential)
-- holding the current rate-limit window and what was spent in it, so every task of every DAG on every worker
-- reserves from the same count under the row's lock before it sends a request (ItsPerfect: 750 an hour,
-- counting its own server-side calls; TrackVia and QBO declare theirs). The vendor's own figures
-- (X-Request-Limit-Remaining / X-Request-Limit-Date for ItsPerfect) are reconciled into the row as they come.
CREATE TABLE etl.request_budgets (
    vendor              text        NOT NULL,
    credential          text        NOT NULL,      -- the connection id or scope, never the secret
    request_limit       integer     NOT NULL CHECK (request_limit > 0),
    headroom            integer     NOT NULL DEFAULT 0 CHECK (headroom >= 0 AND headroom < request_limit),
    window_seconds      integer     NOT NULL DEFAULT 3600 CHECK (window_seconds > 0),
    window_start        timestamptz NOT NULL,
    resets_at           timestamptz NOT NULL,
    window_source       text        NOT NULL DEFAULT 'clock' CHECK (window_source IN ('clock', 'vendor')),
    used                integer     NOT NULL DEFAULT 0,   -- counts against the limit: ours, or the vendor's if higher
    reserved            integer     NOT NULL DEFAULT 0,   -- what we reserved ourselves in this window
    reported_remaining  integer,                          -- the vendor's last figure for this window
    reported_resets_at  timestamptz,
    reported_at         timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (vendor, credential),
    CHECK (resets_at > window_start),
    CHECK (used >= reserved AND reserved >= 0)
);
COMMENT ON TABLE etl.request_budgets IS
    'Rate-limit window per (vendor, credential): reserved under a row lock before each request, reconciled with the vendor''s reported remaining count; window_source says whether the window is the vendor''s or a clock guess.';
