"""The order export of one account to its ItsPerfect tenant: each order created there exactly once.

ItsPerfect's POST /orders is not idempotent (a repeated reference makes a second order), so every order
goes through the outbox itsperfect.order_exports, one row per order:

    (new order) --payload built; row committed with the watermark--> sending (attempts 1)
    (new order) --payload cannot be built-----------------------> refused (our error), alerted, nothing sent
    sending --POST answered with the vendor's order-------------> sent (itsperfect_id, itsperfect_number)
    sending --POST refused (a 4xx with its error)---------------> refused (the vendor's error), alerted
    sending --POST failed otherwise, or the run died------------> sending: settled by the next run
    sending, next run --found by its reference------------------> sent, without a POST
    sending, next run --not found-------------> attempts + 1 (committed), the same payload POSTed again
    sending, next run --not found after MAX_ATTEMPTS POSTs------> refused (the last answer), alerted

A row is committed before its POST and completed in a commit of its own after it, so whatever instant a
worker dies at, the next run either finds the row sent or looks the order up before it sends anything
again. That lookup trusts that no POST of the dead try is still being processed by the vendor: the DAG
retries after 5 minutes (dags/itsperfect_orders.py) and runs every 15, against the hook's 70 s for one
POST. A refusal is alerted in the transaction that records it (alerted_at), so no rerun alerts again; the
run goes on with the other orders. A refused order is never sent again by itself: fix it, then
`POST /itsperfect/order-exports/<order id>/retry` (the admin API deletes the refused row and moves the
account's watermark back before the order).

New orders are found by commerce.orders.created_at above the watermark less OVERLAP: created_at is set
when a row is inserted, not when its transaction commits, so an order may become visible after later ones
were exported; rows already in the outbox are skipped. The watermark moves in the transaction that inserts
each outbox row: from then on the outbox, not the watermark, answers for the order. A watermark never set
exports every order of the account; to start later, reset it before the first run.

Runs of one account are serialised by the watermark's claim (a session advisory lock, dropped by
PostgreSQL if the worker dies). A spent request budget (`BudgetSpent`) ends the run after what it did was
committed and closes its ledger row as a success: the caller defers until the reset and calls again.

Ledger counts: read = orders considered (outbox rows settled plus new orders read), inserted = orders
ItsPerfect created on our POST (sent + resent), updated = outbox rows completed from the vendor's record
(settled_by_reference), unchanged = orders already in the outbox (skipped), quarantined = refused.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from etl import ledger, watermarks
from etl.request_budget import BudgetSpent
from hooks.itsperfect import ItsPerfectHook
from hooks.vendor_http import VendorApiError
from integrations.itsperfect.order_payload import OrderNotExportable, build_payload
from notifiers import on_call

log = logging.getLogger(__name__)

PIPELINE = "itsperfect_orders"
# Longer than any transaction that inserts orders stays open before it commits.
OVERLAP = dt.timedelta(minutes=5)
# 4xx answers that are not about this order: our credentials, a wrong URL or method, the budget.
NOT_REFUSALS = (401, 403, 404, 405, 429)
# POSTs of one order that the vendor neither created nor refused before it is given up on (refused, alerted):
# an order the vendor fails on every time must not hold up the account's other orders for good.
MAX_ATTEMPTS = 5


class ExportError(RuntimeError):
    """The account cannot be exported as it is set up; the message says what to change."""

    on_call_class = "bad_input"


@dataclass
class ExportReport:
    sent: int = 0                    # new orders ItsPerfect created on our POST
    settled_by_reference: int = 0    # unanswered exports found at ItsPerfect by their reference
    resent: int = 0                  # unanswered exports not found there, sent again and created
    refused: int = 0                 # refused by ItsPerfect, or not exportable at all
    skipped: int = 0                 # orders of the overlap already in the outbox

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Target:
    account_id: str
    connector: str
    warehouse_id: int
    attributes: tuple[tuple[str, str], ...]


def accounts_to_export(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """(account, connector) of every account mapped to a connector, in account order: the DAG keeps those
    whose connector's switches say it creates orders."""
    with conn.transaction():
        return [(account, connector) for account, connector in conn.execute(
            "SELECT account_id, connector FROM itsperfect.account_connectors ORDER BY account_id")]


def export_orders(conn: psycopg.Connection, hook: ItsPerfectHook, account_id: str, *, run_id: str,
                  task_id: str | None = None, try_number: int | None = None) -> ExportReport:
    """Settle the account's unanswered exports, then export its new orders; `conn` outside a transaction,
    `hook` on the account's connector."""
    deferred: BudgetSpent | None = None
    with watermarks.claimed(conn, PIPELINE, account_id):
        with conn.transaction():
            current = watermarks.read(conn, PIPELINE, account_id)
        info = ledger.RunInfo(PIPELINE, account_id, run_id, "incremental", task_id=task_id, try_number=try_number,
                              watermark_before=watermarks.render(current.value) if current else None)
        with ledger.ledgered_run(conn, info, atomic=False) as run:
            export = _AccountExport(conn, hook, target(conn, account_id, hook), run_id)
            try:
                export.settle()
                export.send_new()
            except BudgetSpent as exc:
                deferred = exc
                log.info("account %s: request budget spent after %s; the rest goes on after %s", account_id,
                         export.report.as_dict(), exc.resets_at.isoformat())
            run.counts = export.counts()
            run.watermark_after = export.watermark()
    if deferred is not None:
        raise deferred
    log.info("account %s: orders exported to ItsPerfect: %s", account_id, export.report.as_dict())
    return export.report


def target(conn: psycopg.Connection, account_id: str, hook: ItsPerfectHook) -> Target:
    """Where the account's orders go, checked before anything is sent."""
    with conn.transaction():
        row = conn.execute("SELECT a.connector, a.warehouse_id, w.active FROM itsperfect.account_connectors a "
                           "JOIN itsperfect.warehouses w USING (connector, warehouse_id) WHERE a.account_id = %s",
                           (account_id,)).fetchone()
        if row is None:
            raise ExportError(f"account {account_id} has no ItsPerfect connector: map it to a connector and warehouse "
                              "in itsperfect.account_connectors before its orders can be exported")
        connector, warehouse_id, active = row
        attributes = conn.execute("SELECT name, value FROM itsperfect.extension_attributes WHERE connector = %s "
                                  "ORDER BY name", (connector,)).fetchall()
    if not active:
        raise ExportError(f"account {account_id} exports to warehouse {warehouse_id} of ItsPerfect connector "
                          f"{connector}, which ItsPerfect lists as inactive and would refuse every order for: map "
                          "the account to an active warehouse")
    if hook.conn_id != connector:
        raise ExportError(f"account {account_id} exports through ItsPerfect connector {connector}, but the hook "
                          f"given is for connection {hook.conn_id}")
    return Target(account_id, connector, warehouse_id, tuple(attributes))


@dataclass(frozen=True)
class Pending:
    order_id: str
    reference: str
    payload: dict


class _AccountExport:
    """One run's work for one account; every step commits on its own."""

    def __init__(self, conn: psycopg.Connection, hook: ItsPerfectHook, target: Target, run_id: str):
        self.conn, self.hook, self.target, self.run_id = conn, hook, target, run_id
        self.report = ExportReport()
        self.read = 0
        self.position: dt.datetime | None = None

    def counts(self) -> ledger.RunCounts:
        r = self.report
        return ledger.RunCounts(read=self.read, inserted=r.sent + r.resent, updated=r.settled_by_reference,
                                unchanged=r.skipped, quarantined=r.refused)

    def watermark(self) -> str | None:
        with self.conn.transaction():
            current = watermarks.read(self.conn, PIPELINE, self.target.account_id)
        return watermarks.render(current.value) if current else None

    # ---- step 3: the exports an earlier run left unanswered ----------------------------------------

    def settle(self) -> None:
        with self.conn.transaction():
            rows = self.conn.execute(
                "SELECT e.order_id, e.reference, e.connector, e.payload, e.attempts, e.error "
                "FROM itsperfect.order_exports e "
                "JOIN commerce.orders o USING (order_id) WHERE o.account_id = %s AND e.state = 'sending' "
                "ORDER BY e.created_at, e.order_id", (self.target.account_id,)).fetchall()
        for order_id, reference, connector, payload, attempts, error in rows:
            self.read += 1
            if connector != self.target.connector:
                raise ExportError(f"order {order_id} (reference {reference}) of account {self.target.account_id} "
                                  f"was being sent to ItsPerfect connector {connector}, but the account now exports "
                                  f"to {self.target.connector}: look the reference up in {connector}'s tenant and "
                                  "set its row in itsperfect.order_exports to what you find")
            found = sorted(self.hook.orders_by_reference(reference), key=lambda order: order["id"])
            if found:
                if len(found) > 1:
                    on_call.warn(f"ItsPerfect holds {len(found)} orders with reference {reference} (ids "
                                 f"{', '.join(str(o['id']) for o in found)}) for order {order_id} of account "
                                 f"{self.target.account_id}: cancel all but {found[0]['id']} in ItsPerfect")
                self._complete(Pending(order_id, reference, payload), found[0])
                self.report.settled_by_reference += 1
                continue
            if attempts >= MAX_ATTEMPTS:
                self._refuse(Pending(order_id, reference, payload), f"not created after {attempts} attempts; the "
                             f"last answer: {error or 'none (the run ended before it)'}")
                continue
            with self.conn.transaction():
                self.conn.execute("UPDATE itsperfect.order_exports SET attempts = attempts + 1 WHERE order_id = %s",
                                  (order_id,))
            if self._send(Pending(order_id, reference, payload)):
                self.report.resent += 1

    # ---- step 4: new orders since the watermark -----------------------------------------------------

    def send_new(self) -> None:
        with self.conn.transaction():
            current = watermarks.read(self.conn, PIPELINE, self.target.account_id)
            self.position = current.value if current else None
            candidates = self.conn.execute(
                "SELECT o.order_id, o.created_at, e.order_id IS NOT NULL FROM commerce.orders o "
                "LEFT JOIN itsperfect.order_exports e USING (order_id) "
                "WHERE o.account_id = %s AND o.created_at > coalesce(%s::timestamptz, '-infinity') "
                "ORDER BY o.created_at, o.order_id",
                (self.target.account_id, self.position - OVERLAP if self.position else None)).fetchall()
        for order_id, created_at, exported in candidates:
            self.read += 1
            if exported:
                self.report.skipped += 1
                continue
            with self.conn.transaction():
                pending = self._record(order_id, created_at)
            if pending is not None and self._send(pending):
                self.report.sent += 1

    def _record(self, order_id: str, created_at: dt.datetime) -> Pending | None:
        """The order's outbox row and the watermark that covers it, in the caller's transaction; None when
        the order cannot be exported (recorded as refused and alerted)."""
        with self.conn.cursor(row_factory=dict_row) as cur:
            order = cur.execute("SELECT * FROM commerce.orders WHERE order_id = %s", (order_id,)).fetchone()
            if order is None:             # deleted since it was listed: nothing to export
                return None
            lines = cur.execute("SELECT * FROM commerce.order_lines WHERE order_id = %s", (order_id,)).fetchall()
            addresses = cur.execute("SELECT * FROM commerce.order_addresses WHERE order_id = %s",
                                    (order_id,)).fetchall()
        self._advance(created_at)
        try:
            payload = build_payload(order, lines, addresses, self.target.warehouse_id, self.target.attributes)
        except OrderNotExportable as exc:
            self.conn.execute(
                "INSERT INTO itsperfect.order_exports (order_id, connector, reference, state, payload, error, "
                "alerted_at, completed_at) VALUES (%s, %s, %s, 'refused', '{}', %s, now(), now())",
                (order_id, self.target.connector, order["reference"], str(exc)))
            self._alert(f"{exc} (account {self.target.account_id})")
            self.report.refused += 1
            return None
        self.conn.execute("INSERT INTO itsperfect.order_exports (order_id, connector, reference, state, payload, "
                          "attempts) VALUES (%s, %s, %s, 'sending', %s, 1)",
                          (order_id, self.target.connector, order["reference"], Jsonb(payload)))
        return Pending(order_id, order["reference"], payload)

    def _advance(self, created_at: dt.datetime) -> None:
        """Orders found in the overlap can be older than the watermark, which never moves back."""
        if self.position is None or created_at > self.position:
            watermarks.advance(self.conn, PIPELINE, self.target.account_id, "timestamp", created_at,
                               run_id=self.run_id)
            self.position = created_at

    # ---- the POST and its outcome -------------------------------------------------------------------

    def _send(self, pending: Pending) -> bool:
        """POST the committed payload; True when ItsPerfect created the order, False when it refused it."""
        try:
            created = self.hook.create_order(pending.payload)
        except VendorApiError as exc:
            if not _refusal(exc):
                log.error("order %s (reference %s) of account %s: the POST failed; its export stays 'sending' "
                          "and the next run looks it up by reference before it sends it again",
                          pending.order_id, pending.reference, self.target.account_id)
                with self.conn.transaction():
                    self.conn.execute("UPDATE itsperfect.order_exports SET error = %s WHERE order_id = %s "
                                      "AND state = 'sending'", (ledger.redact_text(str(exc))[:2000], pending.order_id))
                raise
            body = exc.body if isinstance(exc.body, dict) else {}
            self._refuse(pending, str(body.get("error") or exc.detail))
            return False
        self._complete(pending, created)
        return True

    def _complete(self, pending: Pending, vendor_order: dict) -> None:
        try:
            vendor_id = int(vendor_order["id"])
        except (KeyError, TypeError, ValueError):
            raise RuntimeError(f"ItsPerfect answered for order {pending.order_id} (reference {pending.reference}) "
                               f"with an order without a usable id (fields {sorted(vendor_order)}); its export "
                               "stays 'sending' and the next run looks it up by reference") from None
        number = str(vendor_order.get("orderNumber") or "")
        with self.conn.transaction():
            self.conn.execute("UPDATE itsperfect.order_exports SET state = 'sent', itsperfect_id = %s, "
                              "itsperfect_number = %s, completed_at = now() WHERE order_id = %s AND state = 'sending'",
                              (vendor_id, number, pending.order_id))
        log.info("order %s (reference %s) is ItsPerfect order %s (number %s)", pending.order_id, pending.reference,
                 vendor_id, number)

    def _refuse(self, pending: Pending, error: str) -> None:
        """Recorded, and alerted, in one transaction: an alert repeats only if the worker dies between the two."""
        with self.conn.transaction():
            self.conn.execute("UPDATE itsperfect.order_exports SET state = 'refused', error = %s, alerted_at = now(), "
                              "completed_at = now() WHERE order_id = %s AND state = 'sending'",
                              (error, pending.order_id))
            self._alert(f"ItsPerfect refused order {pending.order_id} (reference {pending.reference}) of account "
                        f"{self.target.account_id}: {error}")
        self.report.refused += 1

    def _alert(self, what: str) -> None:
        on_call.warn(ledger.redact_text(
            f"{what}. The order is not exported and is not sent again by itself: fix it, then "
            f"POST /itsperfect/order-exports/<order id>/retry (docs/integrations/itsperfect-admin-api.md)."))


def _refusal(exc: VendorApiError) -> bool:
    """A definite answer about this order: a 4xx with the vendor's `{"error": ...}` (the sandbox answers 400),
    not one about our credentials, the URL or the budget. Anything else (5xx, timeouts) leaves the order's fate
    unknown: it stays 'sending', is looked up by reference, and is given up on after MAX_ATTEMPTS."""
    return (exc.status is not None and 400 <= exc.status < 500 and exc.status not in NOT_REFUSALS
            and isinstance(exc.body, dict) and isinstance(exc.body.get("error"), str))
