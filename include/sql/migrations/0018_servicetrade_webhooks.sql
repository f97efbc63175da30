-- ServiceTrade webhooks (issue 14): the inbox the receiver writes before it answers, the debounced events the
-- processing reads, and the current state of the entities it fetches. `account` is the Airflow connection id of
-- the ServiceTrade account (type `servicetrade`), as TrustFile's host_identifier names it.
--
--   delivery --secret checked, message stored (inbox) and its entities folded into events--> 200
--   event pending --quiet window passed, or maximum wait--> ripe --fetched, upserted, version matched--> done
--   a notification after the fetch read the event bumps `version`: the event stays pending and is fetched again.

CREATE SCHEMA IF NOT EXISTS servicetrade;

-- One row per account whose deliveries we accept. The secret is only in the subscription's hookUrl at
-- ServiceTrade; here its SHA-256, compared in constant time by the receiver. While a subscription is replaced
-- (new URL or new secret), the old one's secret stays accepted until the old subscription is deleted.
CREATE TABLE servicetrade.webhook_accounts (
    account           text        PRIMARY KEY CHECK (btrim(account) <> ''),
    secret_sha256     bytea       NOT NULL CHECK (length(secret_sha256) = 32),
    previous_sha256   bytea       CHECK (length(previous_sha256) = 32),
    subscription_id   bigint,                    -- ServiceTrade's webhook id
    hook_url_base     text,                      -- the hookUrl without its secret
    subscribed_at     timestamptz,
    verified_at       timestamptz                -- last time the subscription DAG found it enabled, URL unchanged
);

-- Every delivery body as received, well-formed or not; idempotent by (account, messageId).
CREATE TABLE servicetrade.webhook_inbox (
    id             bigserial   PRIMARY KEY,
    account        text        NOT NULL,
    message_id     text,                         -- null when the body was malformed
    received_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    remote_addr    inet,
    body           bytea       NOT NULL,
    malformed      text,                         -- why it was answered 400; null when well-formed
    notifications  integer     NOT NULL DEFAULT 0,   -- entity notifications in the message
    interesting    integer     NOT NULL DEFAULT 0    -- of which the account's filter kept
);
CREATE UNIQUE INDEX webhook_inbox_message ON servicetrade.webhook_inbox (account, message_id)
    WHERE message_id IS NOT NULL;
CREATE INDEX webhook_inbox_received ON servicetrade.webhook_inbox (received_at);

-- One row per entity ever announced; `pending` while a notification waits for its fetch.
CREATE TABLE servicetrade.webhook_events (
    account        text        NOT NULL,
    entity_type    text        NOT NULL,         -- job, jobitem, invoice, location (lower case)
    entity_id      bigint      NOT NULL,
    pending        boolean     NOT NULL,
    first_seen     timestamptz NOT NULL,         -- first notification since the last fetch
    last_seen      timestamptz NOT NULL,         -- latest notification
    version        bigint      NOT NULL DEFAULT 1,   -- bumped by every message that names it
    notifications  integer     NOT NULL,         -- messages naming it since the last fetch
    last_action    text        NOT NULL,         -- created, updated or deleted, as last announced
    attempts       integer     NOT NULL DEFAULT 0,   -- failed fetches since the last success
    last_error     text,
    fetched_at     timestamptz,                  -- last successful fetch
    fetches        integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (account, entity_type, entity_id)
);
CREATE INDEX webhook_events_pending ON servicetrade.webhook_events (account, last_seen) WHERE pending;

-- Current state of what the webhooks (and the hourly safety net) keep current. `record` is ServiceTrade's
-- answer as fetched; `deleted_at` is set when ServiceTrade answers 404 for an announced entity.
CREATE TABLE servicetrade.jobs (
    account        text        NOT NULL,
    id             bigint      NOT NULL,
    number         text,
    status         text,
    job_type       text,
    location_id    bigint,
    customer_id    bigint,
    completed_on   timestamptz,
    updated        timestamptz NOT NULL,
    record         jsonb       NOT NULL,
    deleted_at     timestamptz,
    PRIMARY KEY (account, id)
);

CREATE TABLE servicetrade.job_items (
    account        text        NOT NULL,
    id             bigint      NOT NULL,
    job_id         bigint,
    name           text,
    quantity       numeric,
    price          numeric,
    updated        timestamptz NOT NULL,
    record         jsonb       NOT NULL,
    deleted_at     timestamptz,
    PRIMARY KEY (account, id)
);

CREATE TABLE servicetrade.invoices (
    account           text        NOT NULL,
    id                bigint      NOT NULL,
    invoice_number    text,
    invoice_type      text,
    status            text,
    job_id            bigint,
    total_price       numeric,
    transaction_date  timestamptz,
    updated           timestamptz NOT NULL,
    record            jsonb       NOT NULL,
    deleted_at        timestamptz,
    PRIMARY KEY (account, id)
);

CREATE TABLE servicetrade.locations (
    account        text        NOT NULL,
    id             bigint      NOT NULL,
    name           text,
    company_id     bigint,
    status         text,
    updated        timestamptz NOT NULL,
    record         jsonb       NOT NULL,
    deleted_at     timestamptz,
    PRIMARY KEY (account, id)
);
