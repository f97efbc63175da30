-- OMS-Pro payment linking (issue 12 item 3): QuickBooks payments applied to invoices, written onto the
-- OMS-Pro ticket that carries the invoice's DocNumber.

CREATE SCHEMA IF NOT EXISTS oms;

-- Our record of each payment's part of each invoice: a ticket's amount paid, payment date and payment ids
-- are computed from here (every run, from every link of the invoice), never added up in TrackVia.
CREATE TABLE oms.payment_links (
    realm       text          NOT NULL,
    payment_id  text          NOT NULL,
    invoice_id  text          NOT NULL,
    doc_number  text,                                   -- the invoice's, once read (null: invoice not found)
    amount      numeric(14,2) NOT NULL,
    txn_date    date,
    voided      boolean       NOT NULL DEFAULT false,   -- QBO voids by zeroing the amounts, links kept
    deleted     boolean       NOT NULL DEFAULT false,   -- the payment is gone (CDC) or no longer links here
    seen_at     timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (realm, payment_id, invoice_id)
);
CREATE INDEX ON oms.payment_links (realm, invoice_id);

-- Payments whose invoice has no ticket (or could not be read): retried every run until resolved.
CREATE TABLE oms.payment_reviews (
    realm          text        NOT NULL,
    payment_id     text        NOT NULL,
    invoice_id     text        NOT NULL,
    doc_number     text,
    reason         text        NOT NULL,
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    last_tried_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at    timestamptz,
    PRIMARY KEY (realm, payment_id, invoice_id)
);
CREATE INDEX ON oms.payment_reviews (realm) WHERE resolved_at IS NULL;
COMMENT ON TABLE oms.payment_reviews IS
    'QBO payments whose invoice has no OMS-Pro ticket; on-call: unresolved rows (resolved_at null), see reason.';
