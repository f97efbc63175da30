-- Stratocore PPMS (issue 13, the sync): orders, their lines and invoices as PUMAPI lists them
-- (integrations.ppms.sync). Every table is keyed by `scope`, the Airflow connection id of the PPMS instance
-- (one PUMAPI URL and key), so a second core facility can be synced beside the first.
--
-- PUMAPI has no modified-since: the sync lists every order (getorders) and compares each summary row with
-- `fingerprint` (a hash of the row's values as PPMS wrote them); only new or changed orders have their lines
-- fetched. Invoices never change at PPMS: an invoice id we hold is never fetched again.

CREATE SCHEMA IF NOT EXISTS ppms;

-- getorders: one row per order, as its summary row last read.
CREATE TABLE ppms.orders (
    scope              text        NOT NULL,
    order_ref          bigint      NOT NULL,
    core_facility_ref  integer,
    user_login         text        NOT NULL,
    group_login        text        NOT NULL,
    project_ref        integer,
    quoted_date        date,
    ordered_date       date,
    completed_date     date,
    status             text        NOT NULL,
    invoiced           boolean     NOT NULL,
    fingerprint        text        NOT NULL,     -- sha256 of the summary row's values, in getorders' column order
    first_seen_at      timestamptz NOT NULL DEFAULT now(),
    changed_at         timestamptz NOT NULL DEFAULT now(),   -- first seen, or last seen with another summary
    lines_fetched_at   timestamptz,                          -- when its lines were last read (getorderlines)
    PRIMARY KEY (scope, order_ref)
);

-- getorderlines: the lines of an order, replaced whole whenever the order's lines are fetched again.
CREATE TABLE ppms.order_lines (
    scope              text          NOT NULL,
    order_ref          bigint        NOT NULL,
    line_id            bigint        NOT NULL,   -- PUMAPI's `Order id` column: the line's own id
    service_id         integer       NOT NULL,
    quantity           numeric(14,4) NOT NULL,
    user_login         text          NOT NULL,
    group_login        text          NOT NULL,
    project_ref        integer,
    quoted_date        date,
    ordered_date       date,
    completed_date     date,
    status             text          NOT NULL,
    invoiced           boolean       NOT NULL,
    PRIMARY KEY (scope, order_ref, line_id),
    FOREIGN KEY (scope, order_ref) REFERENCES ppms.orders ON DELETE CASCADE
);
CREATE INDEX ON ppms.order_lines (scope, service_id);

-- getinvoicelist: the invoices we hold; fetched once (getinvoice + getinvoicedetails), never changed after.
CREATE TABLE ppms.invoices (
    scope       text        NOT NULL,
    invoice_id  text        NOT NULL,            -- `2-2025-0007`: a string, not a number
    fetched_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, invoice_id)
);

-- getinvoice: the amount charged to each account number (bcode), in the order PPMS listed them.
CREATE TABLE ppms.invoice_accounts (
    scope           text          NOT NULL,
    invoice_id      text          NOT NULL,
    position        integer       NOT NULL CHECK (position >= 1),
    account_number  text          NOT NULL,
    amount          numeric(14,2) NOT NULL,
    PRIMARY KEY (scope, invoice_id, position),
    FOREIGN KEY (scope, invoice_id) REFERENCES ppms.invoices ON DELETE CASCADE
);

-- getinvoicedetails: one row per detail line (a session, a training, a service line, a subsidy), in the order
-- PPMS listed them. `reference` is a session id, an order ref or a subsidy's own reference: not a foreign key.
CREATE TABLE ppms.invoice_details (
    scope                    text          NOT NULL,
    invoice_id               text          NOT NULL,
    position                 integer       NOT NULL CHECK (position >= 1),
    reference                text          NOT NULL,
    user_name                text,
    group_login              text,
    project                  text,
    affiliation              text,
    session_type             text,
    system_type              text,
    system_name              text,
    date                     date,
    start_time               time,
    duration_booked          numeric(10,2),   -- hours
    duration_used            numeric(10,2),
    used_by_others           numeric(10,2),
    booked_by_others         numeric(10,2),
    cancelled                boolean,
    cancelled_date           date,
    special_env_1            text,
    special_env_2            text,
    user_comments            text,
    notes                    text,
    account_number           text,
    account_number_subsidy   text,
    rebate                   numeric(14,2),
    fee                      numeric(14,2),
    subsidy                  numeric(14,2),
    final_amount             numeric(14,2),
    PRIMARY KEY (scope, invoice_id, position),
    FOREIGN KEY (scope, invoice_id) REFERENCES ppms.invoices ON DELETE CASCADE
);
