"""QuickBooks payments linked to OMS-Pro tickets (issue 12 item 3): a ticket's amount paid, payment date,
payment ids and paid status follow the QBO payments applied to its invoice.

Each run (per QBO company, under the watermark claim) reads the payments changed between the watermark
(minus OVERLAP) and the run's start, and the deletions (from CDC, or past its reach or cap by looking up the
payments we hold live links for by Id: one we hold that QuickBooks no longer has is deleted), and records each
payment's part of each invoice in oms.payment_links. For every invoice those changes touch, and every invoice still in
oms.payment_reviews, the ticket's values are computed again from all of the invoice's live links (never
added to what TrackVia holds), and only the fields that differ are PUT. An invoice without a ticket sends
its payments to oms.payment_reviews, retried every run against the fresh ticket index.

Links, reviews, the ledger row and the watermark commit in one transaction, after the PUTs. A crash between
the PUTs and the commit is safe: the rerun reads the same window, computes the same values, finds the
tickets already holding them and PUTs nothing. A spent TrackVia request budget is a wait, not a failure:
links, reviews and watermark roll back, the ledger row closes as a success without a watermark_after, and
BudgetSpent goes on for the operator to defer; the rerun PUTs only what was not yet sent.
"""
from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation

import psycopg

from etl import ledger, watermarks
from etl.request_budget import BudgetSpent
from hooks.qbo import QboHook
from hooks.trackvia import TrackViaHook
from integrations.oms.config import OmsConfig, TicketPayments

log = logging.getLogger(__name__)

PIPELINE = "oms_payment_linking"
# Payments stamped in the watermark's own second, and QBO's servers' clock skew.
OVERLAP = dt.timedelta(minutes=5)
FIRST_RUN_SINCE = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
# The watermark moves to the run's start, not to the newest payment seen: a quiet month would otherwise
# leave it past CDC's 30-day reach.

# QuickBooks' change feed reaches 30 days back; a day's margin for a run that starts near the edge.
CDC_REACH = dt.timedelta(days=29)
IDS_PER_QUERY = 100               # ids per `Id IN (...)`: keeps the query text short, and each answer one page
CENT = Decimal("0.01")


@dataclass
class LinkReport:
    """What a run did, for XCom and the on-call log. `api_calls`: every HTTP request to QBO and TrackVia."""

    realm: str
    ledger_id: int | None = None
    watermark_before: str | None = None
    watermark_after: str | None = None
    payments_read: int = 0
    payments_deleted: int = 0
    links_upserted: int = 0
    tickets_updated: int = 0
    unchanged: int = 0
    sent_to_review: int = 0
    resolved_from_review: int = 0
    api_calls: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Link:
    payment_id: str
    invoice_id: str
    amount: Decimal
    txn_date: str | None
    voided: bool


def links_of(payment: dict) -> list[Link]:
    """The payment's part of each invoice it applies to (lines summed per invoice). QBO voids a payment by
    zeroing its amounts and noting "Voided", keeping the links: the link stays, marked voided."""
    voided = "voided" in str(payment.get("PrivateNote") or "").lower() or Decimal(str(payment.get("TotalAmt", 0))) == 0
    parts: dict[str, Decimal] = defaultdict(Decimal)
    for line in payment.get("Line", []):
        for linked in line.get("LinkedTxn", []):
            if linked.get("TxnType") == "Invoice":
                parts[str(linked["TxnId"])] += Decimal(str(line.get("Amount", 0)))
    return [Link(str(payment["Id"]), invoice, amount.quantize(CENT), payment.get("TxnDate"), voided)
            for invoice, amount in parts.items()]


def _counter(hook: QboHook | TrackViaHook, calls: list[int]) -> None:
    """Count every HTTP answer the hook's session gets (retries and token refreshes included)."""
    hook.session.hooks["response"].append(lambda response, *args, **kwargs: calls.append(1))


def link_payments(conn: psycopg.Connection, qbo: QboHook, trackvia: TrackViaHook, config: OmsConfig, *,
                  realm: str, run_id: str) -> LinkReport:
    """One run for QBO company `realm`; `conn` must be outside a transaction."""
    use = config.payment_linking.tickets
    report = LinkReport(realm)
    calls: list[int] = []
    _counter(qbo, calls)
    _counter(trackvia, calls)
    with watermarks.claimed(conn, PIPELINE, realm):
        current = watermarks.read(conn, PIPELINE, realm)
        conn.rollback()
        since = current.value - OVERLAP if current else FIRST_RUN_SINCE
        # QBO stamps whole seconds and the query's bound is sent in whole seconds: the window takes in the
        # run's current second whole (a payment later in it is read again next run, within the overlap).
        until = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=1)
        report.watermark_before = current.value.isoformat() if current else None
        info = ledger.RunInfo(pipeline=PIPELINE, scope=realm, run_id=run_id, mode="incremental",
                              watermark_before=report.watermark_before, window_start=since.isoformat())
        spent: BudgetSpent | None = None
        try:
            with ledger.ledgered_run(conn, info) as run:     # one transaction: links, reviews, watermark
                report.ledger_id = run.id
                try:
                    with conn.transaction():                 # a savepoint: a spent budget undoes it whole
                        changed = _record_changes(conn, qbo, realm, since, until, current is not None, report)
                        _update_tickets(conn, qbo, trackvia, config.app, use, realm, changed, report)
                        after = max(until, current.value) if current else until
                        watermarks.advance(conn, PIPELINE, realm, "timestamp", after, run_id=run_id)
                        report.watermark_after = run.watermark_after = after.isoformat()
                except BudgetSpent as exc:                   # a wait, not a failure: the rerun reads the window again
                    spent = exc
                # Spent: the row closes as a success saying how far it got (the PUTs sent are in TrackVia), with
                # no watermark_after; the links and reviews were rolled back with the watermark.
                run.counts = ledger.RunCounts(read=report.payments_read,
                                              inserted=0 if spent else report.sent_to_review,
                                              updated=report.tickets_updated, unchanged=report.unchanged)
        finally:
            report.api_calls = len(calls)
    if spent is not None:
        log.info("%s: payment linking cut by the request budget (links, reviews and watermark rolled back; "
                 "the rerun finds the tickets already updated and does not PUT them again): %s", realm,
                 report.as_dict())
        raise spent
    log.info("%s: payments linked: %s", realm, report.as_dict())
    return report


def _record_changes(conn: psycopg.Connection, qbo: QboHook, realm: str, since: dt.datetime, until: dt.datetime,
                    deletions: bool, report: LinkReport) -> set[str]:
    """Upsert the links of payments changed in [since, until), mark deleted payments' links; the invoices
    whose links changed. CDC is skipped on a first run: a payment deleted before we ever saw it has no link."""
    changed: set[str] = set()
    for payment in qbo.changed_since("Payment", since, until):
        report.payments_read += 1
        links = links_of(payment)
        changed.update(link.invoice_id for link in links)
        for link in links:
            conn.execute(
                """
                INSERT INTO oms.payment_links (realm, payment_id, invoice_id, amount, txn_date, voided, deleted)
                VALUES (%s, %s, %s, %s, %s, %s, false)
                ON CONFLICT (realm, payment_id, invoice_id) DO UPDATE SET
                    amount = EXCLUDED.amount, txn_date = EXCLUDED.txn_date, voided = EXCLUDED.voided,
                    deleted = false, seen_at = now()
                """, (realm, link.payment_id, link.invoice_id, link.amount, link.txn_date, link.voided))
            report.links_upserted += 1
        # A payment edited to apply to other invoices no longer pays the ones it left.
        left = conn.execute("UPDATE oms.payment_links SET deleted = true, seen_at = now() WHERE realm = %s "
                            "AND payment_id = %s AND NOT deleted AND NOT (invoice_id = ANY(%s)) RETURNING invoice_id",
                            (realm, str(payment["Id"]), [link.invoice_id for link in links])).fetchall()
        changed.update(row[0] for row in left)
    if deletions:
        gone = _deleted_payments(conn, qbo, realm, since)
        report.payments_deleted = len(gone)
        if gone:
            rows = conn.execute("UPDATE oms.payment_links SET deleted = true, seen_at = now() "
                                "WHERE realm = %s AND payment_id = ANY(%s) AND NOT deleted RETURNING invoice_id",
                                (realm, gone)).fetchall()
            changed.update(row[0] for row in rows)
    return changed


def _deleted_payments(conn: psycopg.Connection, qbo: QboHook, realm: str, since: dt.datetime) -> list[str]:
    """The payments QuickBooks deleted since `since`. CDC tells when it can: within its 30 days and under its
    1000-object cap. Past either (a long pause, a bulk import) the payments we hold live links for are looked up
    by Id, and every one QuickBooks no longer has is gone: one slower run, nothing lost, nothing for on-call to
    reset. Never a listing of the company's payments: paged by position, it loses a payment that someone updates
    meanwhile (it slides across a page boundary), and a payment missed would be marked deleted for good."""
    if dt.datetime.now(dt.timezone.utc) - since < CDC_REACH:
        answer = qbo.cdc(["Payment"], since)
        if not answer.capped:
            return [str(row["Id"]) for row in answer.changes["Payment"] if row.get("status") == "Deleted"]
        why = f"QuickBooks' change feed answered its 1000-object cap since {since.isoformat()}"
    else:
        why = f"{since.isoformat()} is beyond the 30 days QuickBooks' change feed reaches back"
    held = [row[0] for row in conn.execute("SELECT DISTINCT payment_id FROM oms.payment_links "
                                           "WHERE realm = %s AND NOT deleted", (realm,)).fetchall()]
    log.warning("%s: %s: looking up the %d payments we hold links for by Id to find the deleted ones", realm, why,
                len(held))
    live = _by_id(qbo, "Payment", held)
    return sorted(payment for payment in held if payment not in live)


def _affected_invoices(conn: psycopg.Connection, realm: str, changed: set[str]) -> list[str]:
    """The invoices whose links changed, and those of unresolved reviews (retried every run)."""
    rows = conn.execute("SELECT DISTINCT invoice_id FROM oms.payment_reviews WHERE realm = %s AND resolved_at IS NULL",
                        (realm,)).fetchall()
    return sorted(changed | {row[0] for row in rows}, key=lambda i: (len(i), i))


def _by_id(qbo: QboHook, entity: str, ids: list[str]) -> dict[str, dict]:
    """The `entity` rows with these Ids, by Id, one query per IDS_PER_QUERY ids; a missing one is simply absent.
    A chunk's answer fits one page (IDS_PER_QUERY rows at most, QBO's pages hold 1000): nothing is paged by
    position, so a row updated meanwhile cannot slide out of the answer."""
    found: dict[str, dict] = {}
    for first in range(0, len(ids), IDS_PER_QUERY):
        chunk = ids[first:first + IDS_PER_QUERY]
        listed = ", ".join("'" + i.replace("'", "") + "'" for i in chunk)   # QBO ids are digits; no quote survives
        for row in qbo.query(entity, where=f"Id IN ({listed})"):
            found[str(row["Id"])] = row
    return found


def _ticket_index(trackvia: TrackViaHook, app: str, use: TicketPayments) -> tuple[int, dict[str, dict]]:
    """The tickets view read once, by invoice number. TrackVia's API cannot filter a view by a field, and
    `find?q=` is a substring search (IN-14 would match IN-141 … IN-149): one read of the view serves every
    invoice of the run, for its pages' cost only."""
    view_id, _ = trackvia.view(use.view, app=app)
    index: dict[str, dict] = {}
    for record in trackvia.records(view_id):
        number = str(record.get(use.invoice_number) or "").strip()
        if number:
            index.setdefault(number, record)
    return view_id, index


def _desired(conn: psycopg.Connection, realm: str, invoice_id: str, balance: object,
             use: TicketPayments) -> dict[str, object]:
    """The ticket's payment fields from every live link of the invoice; all cleared when none is left."""
    total, latest, ids = conn.execute(
        """
        SELECT sum(amount), max(txn_date), array_agg(payment_id ORDER BY length(payment_id), payment_id)
          FROM oms.payment_links WHERE realm = %s AND invoice_id = %s AND NOT voided AND NOT deleted
        """, (realm, invoice_id)).fetchone()
    paid = balance is not None and Decimal(str(balance)) == 0
    return {use.amount_paid: f"{total:.2f}" if total is not None else None,
            use.payment_date: latest.isoformat() if latest else None,
            use.payment_ids: ", ".join(ids) if ids else None,
            use.paid.field: use.paid.paid_value if paid else use.paid.unpaid_value}


def _differs(field: str, use: TicketPayments, current: object, wanted: object) -> bool:
    """TrackVia gives numbers back as strings and empty fields as "" or null: compare what they mean."""
    if current in ("", None) or wanted in ("", None):
        return (current in ("", None)) != (wanted in ("", None))
    if field == use.amount_paid:
        try:
            return Decimal(str(current)) != Decimal(str(wanted))
        except InvalidOperation:
            return True
    if field == use.payment_date:
        return str(current)[:10] != str(wanted)[:10]
    return str(current) != str(wanted)


def _update_tickets(conn: psycopg.Connection, qbo: QboHook, trackvia: TrackViaHook, app: str,
                    use: TicketPayments, realm: str, changed: set[str], report: LinkReport) -> None:
    invoice_ids = _affected_invoices(conn, realm, changed)
    if not invoice_ids:
        return
    invoices = _by_id(qbo, "Invoice", invoice_ids)
    view_id, tickets = _ticket_index(trackvia, app, use)
    for invoice_id in invoice_ids:
        invoice = invoices.get(invoice_id)
        doc_number = str(invoice.get("DocNumber") or "") if invoice else ""
        conn.execute("UPDATE oms.payment_links SET doc_number = %s WHERE realm = %s AND invoice_id = %s",
                     (doc_number or None, realm, invoice_id))
        ticket = tickets.get(doc_number) if doc_number else None
        if ticket is None:
            reason = (f"invoice {invoice_id} not found in QuickBooks" if invoice is None else
                      f"no ticket in view {use.view!r} has {use.invoice_number} = {doc_number!r}")
            report.sent_to_review += _review(conn, realm, invoice_id, doc_number or None, reason)
            continue
        wanted = _desired(conn, realm, invoice_id, invoice.get("Balance"), use)
        changes = {f: v for f, v in wanted.items() if _differs(f, use, ticket.get(f), v)}
        if changes:
            trackvia.update_record(view_id, int(ticket["id"]), changes)
            report.tickets_updated += 1
        else:
            report.unchanged += 1
        report.resolved_from_review += conn.execute(
            "UPDATE oms.payment_reviews SET resolved_at = now(), last_tried_at = now(), doc_number = %s "
            "WHERE realm = %s AND invoice_id = %s AND resolved_at IS NULL", (doc_number, realm, invoice_id)).rowcount


def _review(conn: psycopg.Connection, realm: str, invoice_id: str, doc_number: str | None, reason: str) -> int:
    """Every live link of the invoice into the review table (tried again now if already there); how many
    payments are new to it. A review whose payment was voided or deleted meanwhile has nothing left to link."""
    conn.execute(
        """
        UPDATE oms.payment_reviews r SET resolved_at = now(), last_tried_at = now()
          FROM oms.payment_links l
         WHERE r.realm = %s AND r.invoice_id = %s AND r.resolved_at IS NULL AND l.realm = r.realm
           AND l.payment_id = r.payment_id AND l.invoice_id = r.invoice_id AND (l.voided OR l.deleted)
        """, (realm, invoice_id))
    rows = conn.execute(
        """
        INSERT INTO oms.payment_reviews (realm, payment_id, invoice_id, doc_number, reason)
        SELECT realm, payment_id, invoice_id, %s, %s FROM oms.payment_links
         WHERE realm = %s AND invoice_id = %s AND NOT voided AND NOT deleted
        ON CONFLICT (realm, payment_id, invoice_id) DO UPDATE SET
            reason = EXCLUDED.reason, doc_number = EXCLUDED.doc_number, last_tried_at = now(), resolved_at = NULL
        RETURNING (xmax = 0)
        """, (doc_number, reason, realm, invoice_id)).fetchall()
    return sum(1 for (inserted,) in rows if inserted)
