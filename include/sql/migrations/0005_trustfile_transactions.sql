-- The TrustFile model: every sale and refund we extracted, per connection, keyed so that a
-- re-extracted document updates its row in place; what we pushed (a ledger of content hashes, so
-- only new or changed items are pushed again); what could not be pushed; and the errors TrustFile
-- reads through GET /errors. Deleting a connection deletes its rows (a re-created connection
-- starts over, and re-pushing is harmless: TrustFile upserts by itemId).

-- A scope switched off on purpose (a TrustFile connection disabled, the connector off) has a reason
-- here: the maintenance DAG's lag report lists it and does not alert on it.
ALTER TABLE etl.watermarks ADD COLUMN paused_reason text;

-- The start date the connection's watermark began from: when TrustFile moves startDate earlier,
-- the sync rewinds the watermark to it (the months in between were never read).
ALTER TABLE trustfile.connections ADD COLUMN synced_from date;

CREATE TABLE trustfile.transactions (
    connection_id       text        NOT NULL REFERENCES trustfile.connections (connection_id) ON DELETE CASCADE,
    item_id             text        NOT NULL,     -- <system>-<entity>-<id>: TrustFile's itemId
    source_system       text        NOT NULL,
    source_company      text        NOT NULL,     -- QBO realm, ServiceTrade account
    source_entity       text        NOT NULL,
    source_id           text        NOT NULL,
    kind                text        NOT NULL CHECK (kind IN ('sale', 'refund')),
    status              text        NOT NULL CHECK (status IN ('active', 'voided', 'deleted', 'before_start')),
    transaction_date    date        NOT NULL,
    source_updated_at   timestamptz NOT NULL,
    customer_ref        text,
    customer_name       text,
    ship_to_line1       text,
    ship_to_city        text,
    ship_to_state       text,
    ship_to_zip         text,
    ship_from_line1     text,
    ship_from_city      text,
    ship_from_state     text,
    ship_from_zip       text,
    sales_amount        numeric(18, 2) NOT NULL,
    sales_tax           numeric(18, 2) NOT NULL,
    shipping_amount     numeric(18, 2) NOT NULL,
    shipping_tax        numeric(18, 2) NOT NULL,
    source_total        numeric(18, 2) NOT NULL,
    currency            text        NOT NULL,
    review_required     boolean     NOT NULL,
    review_message      text,
    lines               jsonb       NOT NULL,     -- [{line_no, description, amount (text), is_shipping, taxable}]
    item                jsonb       NOT NULL,     -- the TrustFile item exactly as it is pushed
    content_hash        text        NOT NULL,     -- sha256 of `item`: what the push ledger compares
    PRIMARY KEY (connection_id, item_id),
    CHECK (sales_amount + sales_tax + shipping_amount + shipping_tax = source_total)
);
CREATE INDEX transactions_updated ON trustfile.transactions (connection_id, source_updated_at);
COMMENT ON TABLE trustfile.transactions IS
    'Sales and refunds in the TrustFile model, one row per source document and connection; amounts reconcile to the source total.';

-- The lines as rows, for SQL users; the table keeps them with their transaction so a re-extracted
-- document replaces its lines in the same upsert.
CREATE VIEW trustfile.transaction_lines AS
SELECT t.connection_id, t.item_id, (l ->> 'line_no')::int AS line_no, l ->> 'description' AS description,
       (l ->> 'amount')::numeric(18, 2) AS amount, (l ->> 'is_shipping')::boolean AS is_shipping,
       (l ->> 'taxable')::boolean AS taxable
  FROM trustfile.transactions t, jsonb_array_elements(t.lines) AS l;

CREATE TABLE trustfile.push_ledger (
    connection_id   text        NOT NULL,
    item_id         text        NOT NULL,
    content_hash    text        NOT NULL,     -- the content TrustFile has (pushed) or refused (rejected)
    outcome         text        NOT NULL CHECK (outcome IN ('pushed', 'rejected')),
    refund          boolean     NOT NULL,     -- TrustFile keys items by (itemId, refund): a flip leaves the old one
    at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection_id, item_id),
    FOREIGN KEY (connection_id, item_id) REFERENCES trustfile.transactions (connection_id, item_id) ON DELETE CASCADE
);
COMMENT ON TABLE trustfile.push_ledger IS
    'Per item, the content last pushed to TrustFile (or refused by it): an item is pushed again only when its hash changes.';

CREATE TABLE trustfile.bad_items (
    id                  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at                  timestamptz NOT NULL DEFAULT now(),
    connection_id       text        NOT NULL REFERENCES trustfile.connections (connection_id) ON DELETE CASCADE,
    item_id             text,
    stage               text        NOT NULL CHECK (stage IN ('mapping', 'trustfile')),
    message             text        NOT NULL,     -- the reason, as TrustFile or the mapping gave it
    friendly_message    text        NOT NULL,
    payload             jsonb       NOT NULL      -- the refused item, or the source document that did not map
);
CREATE INDEX bad_items_at ON trustfile.bad_items (at);

CREATE TABLE trustfile.errors (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    type            text        NOT NULL CHECK (type IN ('INTEGRATION', 'CONNECTION', 'SYSTEM')),
    connection_id   text,                     -- no foreign key: errors outlive a deleted connection
    message         text        NOT NULL      -- redacted (etl.ledger.redact_text)
);
CREATE INDEX errors_at ON trustfile.errors (at);
