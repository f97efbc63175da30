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

A malformed record is quarantined (etl.quarantine: the reason, naming the order or invoice and the column, and
the raw values, secrets redacted) and the rest loads; the report counts `quarantined` per kind:
- getorders listing an order ref twice: identical rows are one order (the repeats dropped, counted in
  `orders_duplicates`); rows that differ quarantine the order.
- an order whose summary row, or one of whose lines, holds a value we cannot read (a date, number, flag, an
  empty required column, a line naming another order): the order with its lines is quarantined.
A quarantined order is not loaded this run: the rows we hold for it are left as they were (its fingerprint
too), so the next run reads it again. An invoice whose accounts or details are empty or unreadable is
quarantined and not held, so the next run fetches it again. An answer we cannot read as a whole (not the
declared header, a refusal) still fails the run.

Memory: the line and invoice fetches are submitted a few at a time (at most IN_FLIGHT per worker), and each
answer is written, then dropped, as it completes; invoices are written one at a time.

One run is one ledger row (pipeline `ppms_sync`, scope = the connection id) and one transaction: orders,
lines, invoices, the quarantine and the ledger's `success` commit together, so a run that fails (PPMS down
through the hook's retries, a refusal, an answer we cannot read) changes nothing but its ledger row, marked
`failed`, and the next run starts from the same state. Runs of one scope never overlap (an advisory claim).
"""
from __future__ import annotations

import concurrent.futures
import datetime as dt
import hashlib
import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from etl import ledger, loader, watermarks
from etl.progress import Progress
from etl.tables import TargetTable
from hooks.pumapi import PumapiHook
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
IN_FLIGHT = 2   # fetches submitted per worker at most: the answers waiting to be written stay few

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
    invoices_new: int = 0               # loaded this run (quarantined ones not counted)
    invoice_rows: int = 0               # account and detail rows of the new invoices
    orders_duplicates: int = 0          # getorders rows repeating another row exactly: dropped
    quarantined: dict[str, int] = field(default_factory=lambda: {"orders": 0, "invoices": 0})

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
        self.size = count
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
            run.counts = _sync(conn, hook, scope, pool, report, run.id)
        finally:
            pool.close()        # a failure cancels the fetches not started, and waits for those in flight
            report.calls = dict(sorted(pool.calls.items()))
    log.info("%s: PPMS sync done: %d orders listed (%d new, %d changed, %d unchanged, %d held but no longer "
             "listed); lines of %d orders fetched (%s, %d deleted; %d orders' lines not read); %d invoices "
             "listed, %d new; quarantined %s; calls %s", scope, report.orders_listed, report.orders_new,
             report.orders_changed,
             report.orders_unchanged, report.orders_not_listed, report.lines_fetched, report.lines,
             report.lines_deleted, report.orders_lines_unread, report.invoices_listed, report.invoices_new,
             report.quarantined, report.calls)
    return report


def _sync(conn: psycopg.Connection, hook: PumapiHook, scope: str, pool: _Workers, report: SyncReport,
          ledger_id: int) -> ledger.RunCounts:
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
    rejects = _Quarantine(scope, report)

    orders, to_fetch, fingerprints, kinds = [], [], {}, {}
    summaries, listed_refs = _distinct_orders(scope, listed, rejects, report)
    for ref, (record, fingerprint) in summaries.items():
        try:
            row = _order_row(scope, record)
        except _Malformed as exc:
            rejects.order(ref, str(exc), {"order": record})
            continue
        before = held.get(ref)
        kind = "new" if before is None else "changed" if before.fingerprint != fingerprint else "unchanged"
        setattr(report, f"orders_{kind}", getattr(report, f"orders_{kind}") + 1)
        if kind == "unchanged" and not report.full:
            continue
        changed_at = now if kind != "unchanged" else before.changed_at
        orders.append((*row, fingerprint, changed_at, now))
        to_fetch.append(ref)
        fingerprints[ref], kinds[ref] = fingerprint, kind
    report.orders_listed = len(listed_refs) + rejects.unkeyed_orders
    report.orders_not_listed = len(held.keys() - listed_refs)
    if report.orders_not_listed:
        log.warning("%s: %d order(s) we hold are no longer listed by getorders (PPMS cancels orders, it does not "
                    "delete them through PUMAPI): kept as last seen", scope, report.orders_not_listed)
    new_invoices = [i for i in dict.fromkeys(invoice_ids) if i not in held_invoices]
    report.invoices_listed = len(set(invoice_ids))
    log.info("%s: %d orders listed: %d new, %d changed, %d unchanged, %d quarantined; fetching the lines of %d%s; "
             "%d invoices listed, %d new", scope, report.orders_listed, report.orders_new, report.orders_changed,
             report.orders_unchanged, report.quarantined["orders"], len(to_fetch),
             " (full refresh)" if report.full else "", report.invoices_listed, len(new_invoices))

    # The rows we hold of the orders refetched, as they were: an order whose lines turn out unreadable is put
    # back as it was (a new one is removed), so it is read again next run.
    conn.execute("CREATE TEMPORARY TABLE _ppms_orders_before ON COMMIT DROP AS SELECT * FROM ppms.orders "
                 "WHERE scope = %s AND order_ref = ANY(%s)", (scope, [r for r in to_fetch if kinds[r] != "new"]))
    loader.upsert(conn, ORDERS, orders)
    del orders

    fetched_keys: list[tuple[int, int]] = []
    unread: list[int] = []
    quarantined: list[int] = []
    line_answers = _completed(pool, (_lines_of(pool, ref) for ref in to_fetch))
    lines = loader.upsert(conn, LINES, _line_rows(scope, line_answers, summaries, rejects, fetched_keys, unread,
                                                  quarantined))
    report.lines = lines.as_dict()
    report.lines_fetched = len(to_fetch)
    report.orders_lines_unread = len(unread)
    read = set(to_fetch) - set(unread) - set(quarantined)
    report.lines_deleted = conn.execute(
        """
        DELETE FROM ppms.order_lines l
         WHERE l.scope = %(scope)s AND l.order_ref = ANY(%(orders)s)
           AND (l.order_ref, l.line_id) NOT IN (SELECT * FROM unnest(%(refs)s::bigint[], %(ids)s::bigint[]))
        """, {"scope": scope, "orders": sorted(read), "refs": [k[0] for k in fetched_keys],
              "ids": [k[1] for k in fetched_keys]}).rowcount
    del fetched_keys
    if unread:
        _keep_unread(conn, scope, {ref: fingerprints[ref] for ref in sorted(unread)}, held)
    if quarantined:
        _put_back(conn, scope, quarantined, kinds)
        for ref in quarantined:
            setattr(report, f"orders_{kinds[ref]}", getattr(report, f"orders_{kinds[ref]}") - 1)
    conn.execute("DROP TABLE _ppms_orders_before")

    # An order counts by its summary: new (inserted), changed (updated), unchanged or quarantined. A full run
    # rewrites the lines_fetched_at of unchanged orders too: that is not an update of the order.
    counts = ledger.RunCounts(read=report.orders_listed, inserted=report.orders_new, updated=report.orders_changed,
                              unchanged=report.orders_unchanged)
    counts.read += lines.staged + report.lines_deleted
    counts.inserted += lines.inserted
    counts.updated += lines.updated + report.lines_deleted
    counts.unchanged += lines.unchanged

    # Invoices, one at a time as their answers arrive: an invoice, its accounts and its details.
    invoice_answers = _completed(pool, (_invoice_of(pool, i) for i in new_invoices))
    for invoice_id, account_records, detail_records in invoice_answers:
        try:
            if not account_records or not detail_records:    # listed by getinvoicelist a moment ago: wrong
                raise _Malformed(f"getinvoice answered {len(account_records)} account row(s) and getinvoicedetails "
                                 f"{len(detail_records)} detail row(s) for invoice {invoice_id}, which "
                                 "getinvoicelist lists (an invoice has both)")
            accounts = [(scope, invoice_id, n, *_account(invoice_id, n, r)) for n, r in enumerate(account_records, 1)]
            details = [(scope, invoice_id, n, *_detail(invoice_id, n, r)) for n, r in enumerate(detail_records, 1)]
        except _Malformed as exc:
            rejects.invoice(invoice_id, str(exc), {"accounts": account_records, "details": detail_records})
            continue
        loader.upsert(conn, INVOICES, [(scope, invoice_id)])
        for table, rows in ((INVOICE_ACCOUNTS, accounts), (INVOICE_DETAILS, details)):
            upserted = loader.upsert(conn, table, rows)
            counts.read += upserted.staged
            counts.inserted += upserted.inserted
            counts.updated += upserted.updated
            counts.unchanged += upserted.unchanged
        report.invoice_rows += len(accounts) + len(details)
        report.invoices_new += 1
    counts.read += report.invoices_listed       # an invoice id listed: new (inserted), held (unchanged) or quarantined
    counts.inserted += report.invoices_new
    counts.unchanged += report.invoices_listed - len(new_invoices)
    counts.quarantined = rejects.flush(conn, ledger_id)
    return counts


class _Malformed(Exception):
    """A record holding a value we cannot read: the message names the record and the column."""


class _Quarantine:
    """The run's rejects (etl.quarantine, written at the run's end in its transaction), counted per kind; the
    reason and the raw values are redacted of every secret Airflow knows of."""

    def __init__(self, scope: str, report: SyncReport) -> None:
        self.scope, self.report = scope, report
        self.buffer = ledger.QuarantineBuffer(PIPELINE, scope)
        self.unkeyed_orders = 0     # orders quarantined with no readable order ref

    def order(self, ref: int | str | None, reason: str, payload: dict) -> None:
        self._add("orders", f"order {ref}", reason, payload)
        log.warning("%s: order %s quarantined (not loaded this run, the rows we hold of it kept; read again next "
                    "run): %s", self.scope, ref, ledger.redact_text(reason))

    def invoice(self, invoice_id: str, reason: str, payload: dict) -> None:
        self._add("invoices", f"invoice {invoice_id}", reason, payload)
        log.warning("%s: invoice %s quarantined (not held; fetched again next run): %s", self.scope, invoice_id,
                    ledger.redact_text(reason))

    def _add(self, kind: str, key: str, reason: str, payload: object) -> None:
        self.report.quarantined[kind] += 1
        self.buffer.add(ledger.redact_text(key), ledger.redact_text(reason), _redacted(payload))

    def flush(self, conn: psycopg.Connection, ledger_id: int) -> int:
        return self.buffer.flush(conn, ledger_id)


def _redacted(value: object) -> object:
    if isinstance(value, str):
        return ledger.redact_text(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return value


def _distinct_orders(scope: str, listed: list[dict[str, str]], rejects: _Quarantine,
                     report: SyncReport) -> tuple[dict[int, tuple[dict[str, str], str]], set[int]]:
    """getorders' rows by order ref (the row and its fingerprint), and every order ref listed. A row repeating
    another exactly is dropped (counted); rows of one order ref that differ quarantine that order; a row without
    a readable order ref is quarantined."""
    first: dict[int, tuple[dict[str, str], str]] = {}
    clashes: dict[int, list[dict[str, str]]] = {}
    for record in listed:
        fingerprint = _fingerprint(record)
        try:
            ref = _read(f"getorders, order {record.get('Order ref.', '?')[:20]!r}", record, "Order ref.", parse_int,
                        required=True)
        except _Malformed as exc:
            rejects.unkeyed_orders += 1
            rejects.order(record.get("Order ref.", "?")[:60], str(exc), {"order": record})
            continue
        if ref not in first:
            first[ref] = (record, fingerprint)
        elif first[ref][1] == fingerprint:
            report.orders_duplicates += 1
        else:
            clashes.setdefault(ref, [first[ref][0]]).append(record)
    if report.orders_duplicates:
        log.info("%s: getorders repeated %d row(s) exactly: dropped", scope, report.orders_duplicates)
    listed_refs = set(first)
    for ref, records in clashes.items():
        del first[ref]
        differ = [c for c in ORDER_COLUMNS if len({r.get(c, "") for r in records}) > 1]
        rejects.order(ref, f"getorders listed order {ref} {len(records)} times with different values (column(s) "
                           f"{', '.join(map(repr, differ))})", {"rows": records})
    return first, listed_refs


def _put_back(conn: psycopg.Connection, scope: str, refs: list[int], kinds: dict[int, str]) -> None:
    """The orders quarantined for their lines: a new one is removed (it has no line yet), a held one gets back
    the row it had before this run (summary, fingerprint, changed_at, lines_fetched_at); their lines were not
    touched."""
    conn.execute("DELETE FROM ppms.orders WHERE scope = %s AND order_ref = ANY(%s)",
                 (scope, [r for r in refs if kinds[r] == "new"]))
    columns = [c for c in ORDERS.columns if c not in ("scope", "order_ref")]
    conn.execute(sql.SQL("UPDATE ppms.orders o SET ({}) = ({}) FROM _ppms_orders_before b "
                         "WHERE o.scope = b.scope AND o.order_ref = b.order_ref AND b.order_ref = ANY(%s)").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(sql.Identifier("b", c) for c in columns)), ([r for r in refs if kinds[r] != "new"],))


def _completed(pool: _Workers, works: Iterable[Callable[[PumapiHook], Any]]) -> Iterator[Any]:
    """The answers of `works` as they complete, with at most IN_FLIGHT per worker submitted at once: a result is
    dropped once the caller is done with it. The first failure is raised (the fetches not started are not)."""
    works = iter(works)
    limit = max(1, IN_FLIGHT * pool.size)
    pending: set[concurrent.futures.Future] = set()
    for work in works:
        pending.add(pool.submit(work))
        if len(pending) >= limit:
            break
    while pending:
        done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
        for _ in range(len(done)):
            work = next(works, None)
            if work is not None:
                pending.add(pool.submit(work))
        while done:
            yield done.pop().result()


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
        return invoice_id, accounts, details
    return work


def _line_rows(scope: str, answers: Iterable[tuple[int, list[dict]]],
               summaries: dict[int, tuple[dict[str, str], str]], rejects: _Quarantine, keys: list[tuple[int, int]],
               unread: list[int], quarantined: list[int]) -> Iterator[tuple]:
    """The fetched lines as rows, order by order as the answers arrive (streamed into the upsert's COPY); the
    orders getorderlines answered nothing for go to `unread`, those with a line we cannot read (the order
    quarantined, none of its lines written) to `quarantined`."""
    progress = Progress(log)
    for done, (order_ref, lines) in enumerate(answers, 1):
        if not lines:
            unread.append(order_ref)
        try:
            rows = [_line_row(scope, order_ref, record) for record in lines]
        except _Malformed as exc:
            quarantined.append(order_ref)
            rejects.order(order_ref, str(exc), {"order": summaries[order_ref][0], "lines": lines})
            rows = []
        for row in rows:
            keys.append((order_ref, row[2]))
            yield row
        progress.tick("%s: lines of %d orders read (%d line rows so far)", scope, done, len(keys))


# ---- typed rows ------------------------------------------------------------------------------------------

def _fingerprint(record: dict[str, str]) -> str:
    """sha256 of the summary row's values as PPMS wrote them, in getorders' column order."""
    return hashlib.sha256("\x1f".join(record.get(c, "") for c in ORDER_COLUMNS).encode()).hexdigest()


def _read(what: str, record: dict[str, str], column: str, read: Callable[[str], Any], *,
          required: bool = False) -> Any:
    value = record.get(column, "")
    try:
        typed = read(value)
    except (ValueError, ArithmeticError) as exc:
        raise _Malformed(f"{what}: column {column!r} holds {value[:60]!r}: {exc}") from None
    if required and typed in (None, ""):
        raise _Malformed(f"{what}: column {column!r} is empty")
    return typed


def _summary(what: str, record: dict[str, str]) -> tuple:
    """user, group, project, the three dates, status, invoiced: the columns an order and its lines share."""
    return (_read(what, record, "User", str.strip, required=True),
            _read(what, record, "Group", str.strip, required=True),
            _read(what, record, "Project ref", parse_int),
            _read(what, record, "Quoted date", parse_date),
            _read(what, record, "Ordered date", parse_date),
            _read(what, record, "Completed date", parse_date),
            _read(what, record, "Status", str.strip, required=True),
            _read(what, record, "Invoiced", parse_bool))


def _order_row(scope: str, record: dict[str, str]) -> tuple:
    """(scope, order_ref, core_facility_ref, user ... invoiced): ORDERS' columns up to the fingerprint."""
    what = f"getorders, order {record.get('Order ref.', '?')[:20]!r}"
    ref = _read(what, record, "Order ref.", parse_int, required=True)
    return (scope, ref, _read(what, record, "Core facility ref.", parse_int), *_summary(what, record))


def _line_row(scope: str, order_ref: int, record: dict[str, str]) -> tuple:
    what = f"getorderlines of order {order_ref}, line {record.get('Order id', '?')[:20]!r}"
    if _read(what, record, "Order ref.", parse_int) != order_ref:
        raise _Malformed(f"{what}: the line names order {record.get('Order ref.', '')[:20]!r}")
    return (scope, order_ref, _read(what, record, "Order id", parse_int, required=True),
            _read(what, record, "Service id", parse_int, required=True),
            _read(what, record, "Quantity", parse_decimal, required=True), *_summary(what, record))


def _account(invoice_id: str, position: int, record: dict[str, str]) -> tuple:
    what = f"getinvoice of invoice {invoice_id}, row {position}"
    return (_read(what, record, "Account number", str.strip, required=True),
            _read(what, record, "Amount", parse_decimal, required=True))


def _detail(invoice_id: str, position: int, record: dict[str, str]) -> tuple:
    what = f"getinvoicedetails of invoice {invoice_id}, row {position}"
    values = []
    for (name, read), column in zip(DETAIL_COLUMNS, INVOICE_DETAIL_COLUMNS, strict=True):
        value = _read(what, record, column, read, required=name in ("reference", "final_amount"))
        values.append((value.strip() or None) if name in TEXT_DETAILS else value)
    values[0] = values[0].strip()
    return tuple(values)
