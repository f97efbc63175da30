-- ItsPerfect (issue 11): the business's own side of stock and orders (schema commerce) and the connector
-- model that ties it to ItsPerfect tenants (schema itsperfect).
--
-- A connector is an Airflow connection of type `itsperfect` (API URL, basic auth user and password, the API
-- token, and the flags active / create orders / get stock), encrypted by Airflow and readable through any
-- secrets backend. `itsperfect.connectors` registers which connection ids are connectors, so that the tables
-- below can hold foreign keys to them; it never holds a secret.

CREATE SCHEMA IF NOT EXISTS commerce;
CREATE SCHEMA IF NOT EXISTS itsperfect;

-- ---- our side ----------------------------------------------------------------------------------------------

CREATE TABLE commerce.accounts (
    account_id  text        PRIMARY KEY CHECK (account_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    name        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE commerce.locations (
    location_id text        PRIMARY KEY CHECK (location_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    account_id  text        NOT NULL REFERENCES commerce.accounts,
    name        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON commerce.locations (account_id);

-- The catalogue we sell from: a barcode not in it cannot be stocked (the stock pull quarantines it).
CREATE TABLE commerce.products (
    barcode      text PRIMARY KEY CHECK (barcode ~ '^[0-9]{8,14}$'),
    item_number  text NOT NULL,
    colour       text NOT NULL DEFAULT '',
    size         text NOT NULL DEFAULT '',
    name         text NOT NULL DEFAULT ''
);

-- Stock per location and barcode, as the stock pull last saw it (a full update, not deltas).
CREATE TABLE commerce.location_quantities (
    location_id         text    NOT NULL REFERENCES commerce.locations ON DELETE CASCADE,
    barcode             text    NOT NULL REFERENCES commerce.products,
    item_number         text    NOT NULL,
    colour_number       text    NOT NULL DEFAULT '',
    colour              text    NOT NULL DEFAULT '',
    size                text    NOT NULL DEFAULT '',
    second_size         text    NOT NULL DEFAULT '',
    quantity            integer NOT NULL,            -- ItsPerfect `stock` (a string there)
    available_quantity  integer NOT NULL,            -- ItsPerfect `availableStock`
    PRIMARY KEY (location_id, barcode)
);

CREATE TABLE commerce.orders (
    order_id        text          PRIMARY KEY CHECK (order_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    account_id      text          NOT NULL REFERENCES commerce.accounts,
    reference       text          NOT NULL UNIQUE,   -- sent to ItsPerfect; how an unanswered export is found
    order_number    text          NOT NULL,
    customer_id     text          NOT NULL,
    ordered_at      timestamptz   NOT NULL,
    currency        char(3)       NOT NULL,
    shipping_costs  numeric(12,2) NOT NULL DEFAULT 0,
    comment         text          NOT NULL DEFAULT '',
    internal_comment text         NOT NULL DEFAULT '',
    channel_order_number text     NOT NULL DEFAULT '',
    channel_order_id     text     NOT NULL DEFAULT '',
    created_at      timestamptz   NOT NULL DEFAULT clock_timestamp()   -- the export's watermark cursor
);
CREATE INDEX ON commerce.orders (account_id, created_at);

CREATE TABLE commerce.order_lines (
    order_id  text          NOT NULL REFERENCES commerce.orders ON DELETE CASCADE,
    line_no   integer       NOT NULL CHECK (line_no > 0),
    barcode   text          NOT NULL,
    quantity  integer       NOT NULL CHECK (quantity > 0),
    price     numeric(12,2) NOT NULL,
    PRIMARY KEY (order_id, line_no)
);

CREATE TABLE commerce.order_addresses (
    order_id              text NOT NULL REFERENCES commerce.orders ON DELETE CASCADE,
    kind                  text NOT NULL CHECK (kind IN ('shipping', 'invoice')),
    name                  text NOT NULL,
    street                text NOT NULL,
    housenumber           text NOT NULL,
    housenumber_extension text NOT NULL DEFAULT '',
    postal_code           text NOT NULL,
    city                  text NOT NULL,
    country_id            text NOT NULL,             -- ItsPerfect's country id
    email                 text NOT NULL DEFAULT '',
    phone                 text NOT NULL DEFAULT '',
    PRIMARY KEY (order_id, kind)
);

-- ---- the connector model -----------------------------------------------------------------------------------

CREATE TABLE itsperfect.connectors (
    connector     text        PRIMARY KEY CHECK (connector ~ '^[A-Za-z0-9_.-]{1,200}$'),   -- Airflow conn id
    registered_at timestamptz NOT NULL DEFAULT now()
);

-- Warehouses as the tenant lists them: one gone or inactive upstream is marked inactive, never deleted.
CREATE TABLE itsperfect.warehouses (
    connector     text        NOT NULL REFERENCES itsperfect.connectors ON DELETE CASCADE,
    warehouse_id  integer     NOT NULL,
    name          text        NOT NULL,
    active        boolean     NOT NULL,
    refreshed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connector, warehouse_id)
);

-- Merged into every exported order's main node; a name equal to a standard key replaces that key.
CREATE TABLE itsperfect.extension_attributes (
    connector  text NOT NULL REFERENCES itsperfect.connectors ON DELETE CASCADE,
    name       text NOT NULL CHECK (name ~ '^[A-Za-z][A-Za-z0-9_]{0,63}$'),
    value      text NOT NULL,
    PRIMARY KEY (connector, name)
);

-- Which connector (and warehouse) an account's orders go to: one per account.
CREATE TABLE itsperfect.account_connectors (
    account_id    text    PRIMARY KEY REFERENCES commerce.accounts ON DELETE CASCADE,
    connector     text    NOT NULL,
    warehouse_id  integer NOT NULL,
    FOREIGN KEY (connector, warehouse_id) REFERENCES itsperfect.warehouses
);

-- Which warehouse's stock a location holds: at most one per location.
CREATE TABLE itsperfect.connector_locations (
    location_id   text    PRIMARY KEY REFERENCES commerce.locations ON DELETE CASCADE,
    connector     text    NOT NULL,
    warehouse_id  integer NOT NULL,
    FOREIGN KEY (connector, warehouse_id) REFERENCES itsperfect.warehouses
);
CREATE INDEX ON itsperfect.connector_locations (connector, warehouse_id);

-- ---- pipeline state ----------------------------------------------------------------------------------------

-- A warehouse's stock pass in progress: the next page to read, so a pull cut by the request budget
-- resumes where it stopped; `seen` holds the barcodes this pass read (the rest are zeroed at its end).
CREATE TABLE itsperfect.stock_passes (
    connector     text        NOT NULL,
    warehouse_id  integer     NOT NULL,
    next_page     integer     NOT NULL DEFAULT 1 CHECK (next_page >= 1),
    page_count    integer,
    started_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connector, warehouse_id),
    FOREIGN KEY (connector, warehouse_id) REFERENCES itsperfect.warehouses ON DELETE CASCADE
);
CREATE TABLE itsperfect.stock_pass_seen (
    connector     text    NOT NULL,
    warehouse_id  integer NOT NULL,
    barcode       text    NOT NULL,
    PRIMARY KEY (connector, warehouse_id, barcode),
    FOREIGN KEY (connector, warehouse_id) REFERENCES itsperfect.stock_passes ON DELETE CASCADE
);

-- The order export's outbox: the row is committed before the POST and completed after it, so an order
-- whose answer was lost is looked up by its reference before it is ever sent again.
CREATE TABLE itsperfect.order_exports (
    order_id          text        PRIMARY KEY REFERENCES commerce.orders,
    connector         text        NOT NULL REFERENCES itsperfect.connectors,
    reference         text        NOT NULL UNIQUE,
    state             text        NOT NULL DEFAULT 'sending' CHECK (state IN ('sending', 'sent', 'refused')),
    payload           jsonb       NOT NULL,
    attempts          integer     NOT NULL DEFAULT 0,
    itsperfect_id     bigint,
    itsperfect_number text,
    error             text,                          -- ItsPerfect's `error` text for a refused order
    alerted_at        timestamptz,                   -- a refusal is alerted once
    created_at        timestamptz NOT NULL DEFAULT now(),
    completed_at      timestamptz,
    CHECK ((state = 'sent') = (itsperfect_id IS NOT NULL)),
    CHECK (state <> 'refused' OR error IS NOT NULL)
);
CREATE INDEX ON itsperfect.order_exports (state) WHERE state <> 'sent';
