"""The PPMS sync of one PUMAPI connection: orders, their lines and invoices into schema `ppms`.

PUMAPI has no modified-since filter, so a run lists every order (one `getorders` call) and compares each
summary row with the fingerprint we hold (a hash of the row's values as PPMS wrote them): an order is new,
changed or unchanged. Only the lines of new and changed orders are fetched (`getorderlines`, one call per
order), by a few workers at once (WORKERS, each with its own hook and HTTP session), and they replace the
order's lines we held (a line no longer listed is deleted). Invoices cannot change at PPMS: `getinvoicelist`,
then `getinvoice` and `getinvoicedetails` only for the ids we do not hold yet.

What `getorders` cannot show: a line's quantity changed upstream leaves the order's summary row as it was, so
the sync does not see it until the summary changes (status, dates, invoiced flag). `full=True` fetches the
lines of every order listed, whatever its fingerprint: the on-call's full refresh.

A PPMS order always has at least one line: `getorderlines` answering nothing for an order `getorders` lists is
a read that failed, not an order emptied. That order's lines are "not read this run": the lines we hold, its
fingerprint and `lines_fetched_at` stay as they were (a new order is held with UNREAD, no fingerprint), so the
next run fetches it again; the run warns, naming the order, and counts it (`orders_lines_unread`).

The ledger row counts every row read once: inserted (a new order, line, invoice), updated (an order whose
summary changed, a line that changed or was deleted) or unchanged; the lines a run refetches count by what
their upsert did, and the report says how many orders' lines were fetched (`lines_fetched`).

One run is one ledger row (pipeline `ppms_sync`, scope = the connection id) and one transaction: orders,
lines, invoices and the ledger's `success` commit together, so a run that fails (PPMS down through the
hook's retries, a refusal, an answer we cannot read) changes nothing but its ledger row, marked `failed`,
and the next run starts from the same state. Runs of one scope never overlap (an advisory claim).
"""
from __future__ import annotations

import concurrent.futures
import datetime as dt
import hashlib
import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg

from etl import ledger, loader, watermarks
from etl.progress import Progress
from etl.tables import TargetTable
from hooks.pumapi import PumapiHook, PumapiUnreadable
from hooks.pumapi_format import (
    INVOICE_DETAIL_COLUMNS,
    ORDER_COLUMNS,
    parse_bool,
    parse_date,
    parse_decimal,
    parse_int,
)

log = logging.getLogger(__name__)

PIPELINE = "ppms_sync"
WORKERS = 4     # PUMAPI calls in flight at once: PPMS is one PHP server a core facility shares with its users

ORDERS = TargetTable("ppms", "orders", (
    "scope", "order_ref", "core_facility_ref", "user_login", "group_login", "project_ref", "quoted_date",
    "ordered_date", "completed_date", "status", "invoiced", "fingerprint", "changed_at", "lines_fetched_at"))
LINES = TargetTable("ppms", "order_lines", (
    "scope", "order_ref", "line_id", "service_id", "quantity", "user_login", "group_login", "project_ref",
    "quoted_date", "ordered_date", "completed_date", "status", "invoiced"))
INVOICES = TargetTable("ppms", "invoices", ("scope", "invoice_id"))
INVOICE_ACCOUNTS = TargetTable("ppms", "invoice_accounts",
                               ("scope", "invoice_id", "position", "account_number", "amount"))
# getinvoicedetails' columns, in its order: (our column, how its text is read)
DETAIL_COLUMNS: tuple[tuple[str, Callable[[str], Any]], ...] = (
    ("reference", str), ("user_name", str), ("group_login", str), ("project", str), ("affiliation", str),
    ("session_type", str), ("system_type", str), ("system_name", str), ("date", parse_date),
    ("start_time", lambda v: dt.time.fromisoformat(v.strip()) if v.strip() else None),
    ("duration_booked", parse_decimal), ("duration_used", parse_decimal), ("used_by_others", parse_decimal),
    ("booked_by_others", parse_decimal), ("cancelled", lambda v: parse_bool(v) if v.strip() else None),
    ("cancelled_date", parse_date), ("special_env_1", str), ("special_env_2", str), ("user_comments", str),
    ("notes", str), ("account_number", str), ("account_number_subsidy", str), ("rebate", parse_decimal),
    ("fee", parse_decimal), ("subsidy", parse_decimal), ("final_amount", parse_decimal),
)
assert len(DETAIL_COLUMNS) == len(INVOICE_DETAIL_COLUMNS)
INVOICE_DETAILS = TargetTable("ppms", "invoice_details",
                              ("scope", "invoice_id", "position", *(name for name, _ in DETAIL_COLUMNS)))
TEXT_DETAILS = frozenset(name for name, read in DETAIL_COLUMNS if read is str and name != "reference")
UNREADABLE_HINT = "PPMS answered a value we cannot read; nothing of this run was written. Open the run's log"
UNREAD = ""     # the fingerprint of a new order whose lines were not read: never a sha256, so it is fetched again


@dataclass
class SyncReport:
    """What a run did, for XCom (as_dict()). `calls` counts PUMAPI's answers per action, as the hook returned
    them (a retried call counts once)."""

    scope: str
    full: bool = False
    ledger_id: int | None = None
    calls: dict[str, int] = field(default_factory=dict)
    orders_listed: int = 0
    orders_new: int = 0
    orders_changed: int = 0
    orders_unchanged: int = 0
    orders_not_listed: int = 0          # held by us, no longer listed by PPMS: kept, never deleted
    lines_fetched: int = 0              # orders whose lines were fetched
    lines: dict[str, int] = field(default_factory=dict)    # the lines' upsert: staged, inserted, updated, unchanged
    lines_deleted: int = 0              # lines of a refetched order that PPMS no longer lists
    orders_lines_unread: int = 0        # listed, but getorderlines answered nothing: lines kept, fetched again
    invoices_listed: int = 0
    invoices_new: int = 0
    invoice_rows: int = 0               # account and detail rows of the new invoices

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def changes(self) -> int:
        return (self.orders_new + self.orders_changed + self.lines.get("inserted", 0) + self.lines.get("updated", 0)
                + self.lines_deleted + self.invoices_new)


@dataclass(frozen=True)
class _Held:
    fingerprint: str
    changed_at: dt.datetime
    lines_fetched_at: dt.datetime | None


class _Workers:
    """WORKERS hooks of the run's connection, each used by one thread at a time (a requests.Session is not
    thread-safe), and the answers counted per action. The connection is read here, in the calling thread."""

    def __init__(self, hook: PumapiHook, count: int) -> None:
        self.hooks: queue.SimpleQueue[PumapiHook] = queue.SimpleQueue()
        for _ in range(count):
            worker = type(hook)(hook.conn_id)
            _ = worker.connection          # Airflow's connection lookup stays in the task's thread
            self.hooks.put(worker)
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.pool = concurrent.futures.ThreadPoolExecutor(count, thread_name_prefix="pumapi")

    def count(self, action: str) -> None:
        with self._lock:
            self.calls[action] += 1

    def submit(self, work: Callable[[PumapiHook], Any]) -> concurrent.futures.Future:
        def run():
            hook = self.hooks.get()
            try:
                return work(hook)
            finally:
                self.hooks.put(hook)
        return self.pool.submit(run)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def sync(conn: psycopg.Connection, hook: PumapiHook, scope: str, run_id: str, *, full: bool = False,
         workers: int = WORKERS) -> SyncReport:
    """Sync `scope` (the connection id of `hook`) in one transaction; `conn` must be outside one."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise RuntimeError("the PPMS sync commits once at its end: the connection is inside a transaction already")
    report = SyncReport(scope, full=full)
    info = ledger.RunInfo(pipeline=PIPELINE, scope=scope, run_id=run_id, mode="backfill" if full else "incremental")
    with watermarks.claimed(conn, PIPELINE, scope), ledger.ledgered_run(conn, info) as run:
        report.ledger_id = run.id
        pool = _Workers(hook, workers)
        try:
            run.counts = _sync(conn, hook, scope, pool, report)
        finally:
            pool.close()        # a failure cancels the fetches not started, and waits for those in flight
            report.calls = dict(sorted(pool.calls.items()))
    log.info("%s: PPMS sync done: %d orders listed (%d new, %d changed, %d unchanged, %d held but no longer "
             "listed); lines of %d orders fetched (%s, %d deleted; %d orders' lines not read); %d invoices "
             "listed, %d new; calls %s", scope, report.orders_listed, report.orders_new, report.orders_changed,
             report.orders_unchanged, report.orders_not_listed, report.lines_fetched, report.lines,
             report.lines_deleted, report.orders_lines_unread, report.invoices_listed, report.invoices_new,
             report.calls)
    return report


def _sync(conn: psycopg.Connection, hook: PumapiHook, scope: str, pool: _Workers,
          report: SyncReport) -> ledger.RunCounts:
    """Inside the run's transaction: list, diff, fetch what is needed (the workers overlap with our writes)."""
    now = conn.execute("SELECT now()").fetchone()[0]
    listed = hook.orders()
    pool.count("getorders")
    invoice_ids = hook.invoice_ids()
    pool.count("getinvoicelist")
    held = {ref: _Held(fp, changed, fetched) for ref, fp, changed, fetched in conn.execute(
        "SELECT order_ref, fingerprint, changed_at, lines_fetched_at FROM ppms.orders WHERE scope = %s", (scope,))}
    held_invoices = {row[0] for row in conn.execute("SELECT invoice_id FROM ppms.invoices WHERE scope = %s",
                                                    (scope,))}

    orders, to_fetch, fingerprints = [], [], {}
    seen: set[int] = set()
    for record in listed:
        row = _order_row(hook, scope, record)
        ref, fingerprint = row[1], _fingerprint(record)
        if ref in seen:
            raise PumapiUnreadable(hook.vendor, "POST", hook.endpoint, 200, f"getorders listed order {ref} twice",
                                   hint=UNREADABLE_HINT)
        seen.add(ref)
        before = held.get(ref)
        if before is None:
            report.orders_new += 1
        elif before.fingerprint != fingerprint:
            report.orders_changed += 1
        else:
            report.orders_unchanged += 1
            if not report.full:
                continue
        changed_at = now if before is None or before.fingerprint != fingerprint else before.changed_at
        orders.append((*row, fingerprint, changed_at, now))
        to_fetch.append(ref)
        fingerprints[ref] = fingerprint
    report.orders_listed = len(listed)
    report.orders_not_listed = len(held.keys() - seen)
    if report.orders_not_listed:
        log.warning("%s: %d order(s) we hold are no longer listed by getorders (PPMS cancels orders, it does not "
                    "delete them through PUMAPI): kept as last seen", scope, report.orders_not_listed)
    new_invoices = [i for i in dict.fromkeys(invoice_ids) if i not in held_invoices]
    report.invoices_listed, report.invoices_new = len(set(invoice_ids)), len(new_invoices)
    log.info("%s: %d orders listed: %d new, %d changed, %d unchanged; fetching the lines of %d%s; %d invoices "
             "listed, %d new", scope, len(listed), report.orders_new, report.orders_changed,
             report.orders_unchanged, len(to_fetch), " (full refresh)" if report.full else "",
             report.invoices_listed, len(new_invoices))

    # The fetches start now; the orders are written while the first answers come in.
    line_jobs = [pool.submit(_lines_of(pool, ref)) for ref in to_fetch]
    invoice_jobs = [pool.submit(_invoice_of(pool, invoice_id)) for invoice_id in new_invoices]

    # An order counts by its summary: new (inserted), changed (updated) or unchanged. A full run rewrites the
    # lines_fetched_at of unchanged orders too: that is not an update of the order.
    loader.upsert(conn, ORDERS, orders)
    counts = ledger.RunCounts(read=len(listed), inserted=report.orders_new, updated=report.orders_changed,
                              unchanged=report.orders_unchanged)

    fetched_keys: list[tuple[int, int]] = []
    unread: list[int] = []
    lines = loader.upsert(conn, LINES, _line_rows(hook, scope, line_jobs, fetched_keys, unread))
    report.lines = lines.as_dict()
    report.lines_fetched = len(line_jobs)
    report.orders_lines_unread = len(unread)
    read = set(to_fetch) - set(unread)
    report.lines_deleted = conn.execute(
        """
        DELETE FROM ppms.order_lines l
         WHERE l.scope = %(scope)s AND l.order_ref = ANY(%(orders)s)
           AND (l.order_ref, l.line_id) NOT IN (SELECT * FROM unnest(%(refs)s::bigint[], %(ids)s::bigint[]))
        """, {"scope": scope, "orders": sorted(read), "refs": [k[0] for k in fetched_keys],
              "ids": [k[1] for k in fetched_keys]}).rowcount
    if unread:
        _keep_unread(conn, scope, {ref: fingerprints[ref] for ref in sorted(unread)}, held)
    counts.read += lines.staged + report.lines_deleted
    counts.inserted += lines.inserted
    counts.updated += lines.updated + report.lines_deleted
    counts.unchanged += lines.unchanged

    accounts, details = [], []
    for job in invoice_jobs:
        invoice_id, account_rows, detail_rows = job.result()
        accounts += [(scope, invoice_id, n, *_account(hook, invoice_id, n, r)) for n, r in enumerate(account_rows, 1)]
        details += [(scope, invoice_id, n, *_detail(hook, invoice_id, n, r)) for n, r in enumerate(detail_rows, 1)]
    loader.upsert(conn, INVOICES, [(scope, invoice_id) for invoice_id in new_invoices])
    for table, rows in ((INVOICE_ACCOUNTS, accounts), (INVOICE_DETAILS, details)):
        upserted = loader.upsert(conn, table, rows)
        counts.read += upserted.staged
        counts.inserted += upserted.inserted
        counts.updated += upserted.updated
        counts.unchanged += upserted.unchanged
    report.invoice_rows = len(accounts) + len(details)
    counts.read += report.invoices_listed           # an invoice id listed: new (inserted) or held (unchanged)
    counts.inserted += len(new_invoices)
    counts.unchanged += report.invoices_listed - len(new_invoices)
    return counts


def _keep_unread(conn: psycopg.Connection, scope: str, unread: dict[int, str], held: dict[int, _Held]) -> None:
    """The orders getorderlines answered nothing for (order ref: its listed fingerprint): their summary rows are
    as listed, but their fingerprint and lines_fetched_at go back to what they were (UNREAD and none for a new
    order), so the next run fetches a new or changed one again (an unchanged one, of a full run: the next full)."""
    before = [held.get(ref) for ref in unread]
    conn.execute(
        """
        UPDATE ppms.orders o SET fingerprint = k.fingerprint, lines_fetched_at = k.fetched_at
          FROM unnest(%(refs)s::bigint[], %(fingerprints)s::text[], %(fetched)s::timestamptz[])
               AS k(order_ref, fingerprint, fetched_at)
         WHERE o.scope = %(scope)s AND o.order_ref = k.order_ref
        """, {"scope": scope, "refs": list(unread),
              "fingerprints": [b.fingerprint if b else UNREAD for b in before],
              "fetched": [b.lines_fetched_at if b else None for b in before]})
    for (ref, fingerprint), was in zip(unread.items(), before, strict=True):
        log.warning("%s: getorderlines answered no line for order %d, which getorders lists (a PPMS order has at "
                    "least one line): its lines were not read this run; the lines we hold and its fingerprint "
                    "are kept, and %s fetches it again", scope, ref,
                    "the next full run" if was is not None and was.fingerprint == fingerprint else "the next run")


def _lines_of(pool: _Workers, order_ref: int) -> Callable[[PumapiHook], tuple[int, list[dict]]]:
    def work(hook: PumapiHook) -> tuple[int, list[dict]]:
        lines = hook.order_lines(str(order_ref))
        pool.count("getorderlines")
        return order_ref, lines
    return work


def _invoice_of(pool: _Workers, invoice_id: str) -> Callable[[PumapiHook], tuple[str, list[dict], list[dict]]]:
    def work(hook: PumapiHook) -> tuple[str, list[dict], list[dict]]:
        accounts = hook.invoice(invoice_id)
        pool.count("getinvoice")
        details = hook.invoice_details(invoice_id)
        pool.count("getinvoicedetails")
        if not accounts and not details:    # listed by getinvoicelist a moment ago: an empty answer is wrong
            raise PumapiUnreadable(hook.vendor, "POST", hook.endpoint, 200,
                                   f"getinvoice and getinvoicedetails answered nothing for invoice {invoice_id}, "
                                   "which getinvoicelist lists", hint=UNREADABLE_HINT)
        return invoice_id, accounts, details
    return work


def _line_rows(hook: PumapiHook, scope: str, jobs: list[concurrent.futures.Future],
               keys: list[tuple[int, int]], unread: list[int]) -> Iterator[tuple]:
    """The fetched lines as rows, order by order as the answers arrive (streamed into the upsert's COPY); the
    orders getorderlines answered nothing for go to `unread`."""
    progress = Progress(log)
    for done, job in enumerate(concurrent.futures.as_completed(jobs), 1):
        order_ref, lines = job.result()
        if not lines:
            unread.append(order_ref)
        for record in lines:
            row = _line_row(hook, scope, order_ref, record)
            keys.append((order_ref, row[2]))
            yield row
        progress.tick("%s: lines of %d of %d orders read (%d line rows so far)", scope, done, len(jobs), len(keys))


# ---- typed rows ------------------------------------------------------------------------------------------

def _fingerprint(record: dict[str, str]) -> str:
    """sha256 of the summary row's values as PPMS wrote them, in getorders' column order."""
    return hashlib.sha256("\x1f".join(record.get(c, "") for c in ORDER_COLUMNS).encode()).hexdigest()


def _read(hook: PumapiHook, what: str, record: dict[str, str], column: str, read: Callable[[str], Any],
          *, required: bool = False) -> Any:
    value = record.get(column, "")
    try:
        typed = read(value)
    except (ValueError, ArithmeticError) as exc:
        raise PumapiUnreadable(hook.vendor, "POST", hook.endpoint, 200,
                               f"{what}: column {column!r} holds {value[:60]!r}: {exc}", hint=UNREADABLE_HINT) from None
    if required and typed in (None, ""):
        raise PumapiUnreadable(hook.vendor, "POST", hook.endpoint, 200, f"{what}: column {column!r} is empty",
                               hint=UNREADABLE_HINT)
    return typed


def _summary(hook: PumapiHook, what: str, record: dict[str, str]) -> tuple:
    """user, group, project, the three dates, status, invoiced: the columns an order and its lines share."""
    return (_read(hook, what, record, "User", str.strip, required=True),
            _read(hook, what, record, "Group", str.strip, required=True),
            _read(hook, what, record, "Project ref", parse_int),
            _read(hook, what, record, "Quoted date", parse_date),
            _read(hook, what, record, "Ordered date", parse_date),
            _read(hook, what, record, "Completed date", parse_date),
            _read(hook, what, record, "Status", str.strip, required=True),
            _read(hook, what, record, "Invoiced", parse_bool))


def _order_row(hook: PumapiHook, scope: str, record: dict[str, str]) -> tuple:
    """(scope, order_ref, core_facility_ref, user ... invoiced): ORDERS' columns up to the fingerprint."""
    what = f"getorders, order {record.get('Order ref.', '?')[:20]!r}"
    ref = _read(hook, what, record, "Order ref.", parse_int, required=True)
    return (scope, ref, _read(hook, what, record, "Core facility ref.", parse_int), *_summary(hook, what, record))


def _line_row(hook: PumapiHook, scope: str, order_ref: int, record: dict[str, str]) -> tuple:
    what = f"getorderlines of order {order_ref}, line {record.get('Order id', '?')[:20]!r}"
    if _read(hook, what, record, "Order ref.", parse_int) != order_ref:
        raise PumapiUnreadable(hook.vendor, "POST", hook.endpoint, 200,
                               f"{what}: the line names order {record.get('Order ref.')!r}", hint=UNREADABLE_HINT)
    return (scope, order_ref, _read(hook, what, record, "Order id", parse_int, required=True),
            _read(hook, what, record, "Service id", parse_int, required=True),
            _read(hook, what, record, "Quantity", parse_decimal, required=True), *_summary(hook, what, record))


def _account(hook: PumapiHook, invoice_id: str, position: int, record: dict[str, str]) -> tuple:
    what = f"getinvoice of invoice {invoice_id}, row {position}"
    return (_read(hook, what, record, "Account number", str.strip, required=True),
            _read(hook, what, record, "Amount", parse_decimal, required=True))


def _detail(hook: PumapiHook, invoice_id: str, position: int, record: dict[str, str]) -> tuple:
    what = f"getinvoicedetails of invoice {invoice_id}, row {position}"
    values = []
    for (name, read), column in zip(DETAIL_COLUMNS, INVOICE_DETAIL_COLUMNS, strict=True):
        value = _read(hook, what, record, column, read, required=name in ("reference", "final_amount"))
        values.append((value.strip() or None) if name in TEXT_DETAILS else value)
    values[0] = values[0].strip()
    return tuple(values)
