-- Stratocore PPMS (issue 13, order creation): requests to bill, one row per order line, each created at PPMS
-- exactly once through `createorder` (integrations.ppms.order_requests). PUMAPI orders have one line and
-- createorder has no idempotency key, so this table is the outbox:
--
--   pending --row committed with the highest order ref PPMS listed--> sending (attempts + 1), then createorder
--   sending --PPMS answered its order ref----------------------------> created (order_ref, settled_by 'answer')
--   sending --PPMS refused (`error: ...`)----------------------------> refused (error = PPMS's text)
--   sending --no answer (5xx, timeout, a dropped answer, a crash)---> sending: the next export looks it up
--   sending, next export --one matching order found------------------> created (settled_by 'lookup')
--   sending, next export --none found--------------------------------> sent again (attempts + 1)
--   sending, next export --several match equally---------------------> sending with `held` set: never sent
--                                                                       again by itself; on-call decides
-- `scope` is the Airflow connection id of the PPMS instance (one PUMAPI URL and key), as in 0016's tables.

CREATE SCHEMA IF NOT EXISTS ppms;

CREATE TABLE ppms.order_requests (
    request_id      text        NOT NULL CHECK (btrim(request_id) <> ''),   -- the DAG run id, or a caller's id
    line_no         integer     NOT NULL CHECK (line_no >= 1),
    scope           text        NOT NULL CHECK (btrim(scope) <> ''),
    login           text        NOT NULL CHECK (btrim(login) <> ''),
    service_id      integer     NOT NULL CHECK (service_id > 0),
    quantity        numeric     NOT NULL CHECK (quantity > 0),
    project_id      integer     CHECK (project_id > 0),
    accepted        boolean     NOT NULL DEFAULT false,
    completed       boolean     NOT NULL DEFAULT false,
    completed_date  timestamp,                -- PPMS's local `YYYY-MM-DD hh:mm:ss`, as given
    comments        text,
    state           text        NOT NULL DEFAULT 'pending'
                                CHECK (state IN ('pending', 'sending', 'created', 'refused')),
    order_ref       bigint      CHECK (order_ref > 0),
    settled_by      text        CHECK (settled_by IN ('answer', 'lookup')),
    error           text,                     -- refused: PPMS's text; sending: the last failure of the call
    highest_ref     bigint,                   -- the highest order ref PPMS had when the line was last sent
    held            text,                     -- why reconciliation will not decide (ambiguous): on-call's call
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    alerted_at      timestamptz,              -- a refusal is alerted once
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,              -- the last createorder (or the commit just before it)
    completed_at    timestamptz,
    PRIMARY KEY (request_id, line_no),
    CHECK (accepted OR NOT completed),
    CHECK (completed OR completed_date IS NULL),
    CHECK ((state = 'created') = (order_ref IS NOT NULL)),
    CHECK ((state = 'created') = (settled_by IS NOT NULL)),
    CHECK (state <> 'refused' OR error IS NOT NULL),
    CHECK (state = 'pending' OR (attempts >= 1 AND highest_ref IS NOT NULL AND sent_at IS NOT NULL)),
    CHECK (state IN ('created', 'refused') = (completed_at IS NOT NULL)),
    CHECK (held IS NULL OR state = 'sending')
);
-- No PPMS order is claimed by two of our lines.
CREATE UNIQUE INDEX order_requests_order_ref ON ppms.order_requests (scope, order_ref) WHERE order_ref IS NOT NULL;
CREATE INDEX order_requests_open ON ppms.order_requests (scope, state) WHERE state IN ('pending', 'sending');
