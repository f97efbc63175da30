"""The TrustFile sync of one connection: extract and load with the watermark, then push what changed.

Extract: from the watermark (initially the connection's start date) up to now, in windows that
end early once they hold about `Budget.window_documents` (the host ends one at a moment before
which it read everything), each re-read from `host.overlap` before its start (host clock skew;
re-read documents land as unchanged). Windows are sized by documents, not time, so a sparse
history costs the few calls its pages need and a dense one never makes a huge transaction. A
window's documents are mapped, upserted into trustfile.transactions and the watermark moves to the
window's end in one transaction: the scan is complete up to there. Windows follow one another until
the connection is caught up or the run's budget is spent, so a company with years of history takes
several runs and cannot hold a pool slot for hours.

Push: every transaction whose item hash differs from the push ledger's, in item-id order, 1000
per call; after each call its items are written to the ledger in one transaction. A push cut
off in the middle leaves at most one call's items unrecorded; the next run pushes them again,
and TrustFile upserts by itemId, so each item ends there exactly once with its latest content.
Items TrustFile refuses are recorded (`rejected`, with their hash, so they are not pushed again
until they change) and listed by GET /baditems.

Both steps run under the connection's watermark claim: a sync and a backfill of the same
connection never interleave.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import psycopg
from psycopg.types.json import Jsonb

from etl import ledger, loader, watermarks
from etl.progress import Progress
from etl.tables import TargetTable
from hooks.trustfile import MAX_ITEMS_PER_CALL, TrustFileHook
from integrations.trustfile.hosts.base import Document, HostSystem
from integrations.trustfile.model import Address, Transaction, Unreconciled, item_id, start_of

log = logging.getLogger(__name__)

PIPELINE = "trustfile_sync"
# Documents are found by when they were last updated, but belong by their own date: an invoice
# entered in December for January 5 was last touched before a January 1 start date. The first
# scan therefore starts this long before the start date; the transaction-date filter does the rest.
LOOKBACK = dt.timedelta(days=90)
COLUMNS = (
    "connection_id", "item_id", "source_system", "source_company", "source_entity", "source_id", "kind", "status",
    "transaction_date", "source_updated_at", "customer_ref", "customer_name",
    "ship_to_line1", "ship_to_city", "ship_to_state", "ship_to_zip",
    "ship_from_line1", "ship_from_city", "ship_from_state", "ship_from_zip",
    "sales_amount", "sales_tax", "shipping_amount", "shipping_tax", "source_total", "currency",
    "review_required", "review_message", "lines", "item", "content_hash",
)
TRANSACTIONS = TargetTable("trustfile", "transactions", COLUMNS)
AMOUNT_FIELDS = ("salesAmount", "salesTax", "shippingAmount", "shippingTax")
FRIENDLY = {"unreconciled": "amounts do not add up to the document's total",
            "unreadable": "the source document could not be read"}


class ConnectionGone(RuntimeError):
    """TrustFile deleted the connection while it was queued or being synced: nothing to do."""


@dataclass(frozen=True)
class Budget:
    """How much one window holds (one transaction), and how much one run may do for one connection
    before it lets the others have the pool slot."""

    window_documents: int = 20_000
    max_documents: int = 100_000
    max_seconds: float = 1800.0


@dataclass(frozen=True)
class SyncJob:
    """One connection, wired to its host system and to TrustFile (built by the operator layer)."""

    connection_id: str
    start_date: dt.date
    host: HostSystem
    trustfile: TrustFileHook
    push_target: str                  # the company token, or the connection id TrustFile gave us
    fallback_address: Address | None  # the company's address, for documents without a usable one
    synced_from: dt.date | None = None   # the start date the watermark began from


@dataclass
class SyncReport:
    windows: int = 0
    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined: int = 0
    deleted: int = 0
    before_start: int = 0
    watermark_before: str | None = None
    watermark_after: str | None = None
    caught_up: bool = False
    warnings: list[str] = field(default_factory=list)   # what the host could not verify (e.g. old deletions)
    push_selected: int = 0
    push_calls: int = 0
    pushed: int = 0
    rejected: int = 0
    extract_seconds: float = 0.0
    push_seconds: float = 0.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def item_hash(item: dict) -> str:
    return hashlib.sha256(json.dumps(item, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def row_of(connection_id: str, transaction: Transaction) -> tuple:
    """The trustfile.transactions row (COLUMNS order) of a mapped transaction."""
    t, ship_from = transaction, transaction.ship_from or Address()
    item = t.as_item()
    lines = [{"line_no": line.line_no, "description": line.description, "amount": str(line.amount),
              "is_shipping": line.is_shipping, "taxable": line.taxable} for line in t.lines]
    return (connection_id, t.item_id, t.source_system, t.source_company, t.source_entity, t.source_id, t.kind,
            t.status, t.transaction_date, t.source_updated_at, t.customer_ref, t.customer_name,
            t.ship_to.line1, t.ship_to.city, t.ship_to.state, t.ship_to.zip,
            ship_from.line1, ship_from.city, ship_from.state, ship_from.zip,
            t.sales_amount, t.sales_tax, t.shipping_amount, t.shipping_tax, t.source_total, t.currency,
            t.review_required, t.review_message, lines, item, item_hash(item))


# ---- the two entry points -----------------------------------------------------------------------

def run_sync(conn: psycopg.Connection, job: SyncJob, *, run_id: str, budget: Budget = Budget(),
             task_id: str | None = None, try_number: int | None = None) -> SyncReport:
    """Incremental: windows from the watermark until caught up or out of budget, then the push."""
    report = SyncReport()
    with watermarks.claimed(conn, PIPELINE, job.connection_id):
        started = time.monotonic()
        _extract(conn, job, report, run_id, budget, task_id, try_number)
        report.extract_seconds = round(time.monotonic() - started, 2)
        _push(conn, job, report)
        report.push_seconds = round(time.monotonic() - started - report.extract_seconds, 2)
    return report


def run_backfill(conn: psycopg.Connection, job: SyncJob, *, mode: Literal["reload", "repush"],
                 since: dt.datetime, until: dt.datetime, run_id: str, task_id: str | None = None,
                 try_number: int | None = None) -> SyncReport:
    """Exactly [since, until) of the host's last-updated time; the watermark is left where it is.

    reload: extract and load that window again, then push whatever that changed.
    repush: push every stored transaction last updated in the window, whatever the ledger says.
    """
    if mode not in ("reload", "repush"):
        raise ValueError(f"unknown backfill mode {mode!r}: use reload or repush")
    if not since < until:
        raise ValueError(f"backfill window is empty: {since.isoformat()} is not before {until.isoformat()}")
    report = SyncReport()
    with watermarks.claimed(conn, PIPELINE, job.connection_id):
        current = watermarks.read(conn, PIPELINE, job.connection_id)
        conn.commit()
        report.watermark_before = report.watermark_after = watermarks.render(current.value) if current else None
        if mode == "reload":
            _load_window(conn, job, report, since, until, run_id=run_id, mode="backfill", advance=False,
                         task_id=task_id, try_number=try_number)
            _push(conn, job, report)
        else:
            _push(conn, job, report, window=(since, until))
    return report


# ---- extract and load ---------------------------------------------------------------------------

def _extract(conn, job: SyncJob, report: SyncReport, run_id, budget: Budget, task_id, try_number) -> None:
    floor = start_of(job.start_date) - LOOKBACK
    current = watermarks.read(conn, PIPELINE, job.connection_id)
    conn.commit()   # each window below must be its own transaction, committed when it ends
    with conn.transaction():
        if current is not None and job.synced_from is not None and job.start_date < job.synced_from:
            current = watermarks.reset(conn, PIPELINE, job.connection_id, "timestamp", floor, run_id=run_id,
                                       reason=f"startDate moved back from {job.synced_from} to {job.start_date}")
        conn.execute("UPDATE trustfile.connections SET synced_from = %s WHERE connection_id = %s "
                     "AND synced_from IS DISTINCT FROM %s", (job.start_date, job.connection_id, job.start_date))
    report.watermark_before = watermarks.render(current.value) if current else None
    position = current.value if current else floor
    started = time.monotonic()
    while True:
        # Host timestamps have whole seconds: a window ends on one, so its last second is over.
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        if position >= now:
            report.caught_up = True
            break
        since = max(position - job.host.overlap, floor)
        until = _load_window(conn, job, report, since, now, run_id=run_id, mode="incremental", advance=True,
                             task_id=task_id, try_number=try_number, limit=budget.window_documents,
                             min_end=position)
        position = until
        report.watermark_after = watermarks.render(until)
        if until >= now:
            report.caught_up = True
            break
        if report.read >= budget.max_documents or time.monotonic() - started >= budget.max_seconds:
            log.info("%s: run budget spent after %d windows (%d documents); the next run goes on from %s",
                     job.connection_id, report.windows, report.read, until.isoformat())
            break
    report.watermark_after = report.watermark_after or report.watermark_before


def _load_window(conn, job: SyncJob, report: SyncReport, since: dt.datetime, until: dt.datetime, *, run_id: str,
                 mode: str, advance: bool, task_id, try_number, limit: int | None = None,
                 min_end: dt.datetime | None = None) -> dt.datetime:
    """Load the host's documents of [since, until) in one transaction; return where the window ended
    (`until`, or earlier past `limit` documents: see HostSystem.documents)."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise RuntimeError("a window is loaded in a transaction of its own: the connection is inside one already")
    info = ledger.RunInfo(pipeline=PIPELINE, scope=job.connection_id, run_id=run_id, mode=mode, task_id=task_id,
                          try_number=try_number, window_start=watermarks.render(since),
                          window_end=watermarks.render(until), watermark_before=report.watermark_before)
    withdrawn: list[tuple[Document, str]] = []
    with ledger.ledgered_run(conn, info) as run:
        log.info("%s %s: window %s .. %s (ledger row %d)", mode, job.connection_id, info.window_start,
                 info.window_end, run.id)
        # Held until the window commits: a DELETE through the API waits for it (a PUT does not), and a deleted
        # connection gets no watermark back from a window that was already running.
        if conn.execute("SELECT 1 FROM trustfile.connections WHERE connection_id = %s FOR KEY SHARE",
                        (job.connection_id,)).fetchone() is None:
            raise ConnectionGone(f"connection {job.connection_id} no longer exists (deleted through the API)")
        counts = run.counts
        rejects = ledger.QuarantineBuffer(PIPELINE, job.connection_id)
        rows = _rows(job, job.host.documents(since, until, limit=limit, min_end=min_end), counts, rejects, withdrawn,
                     report)
        upserted = loader.upsert(conn, TRANSACTIONS, rows)
        counts.inserted, counts.updated, counts.unchanged = upserted.inserted, upserted.updated, upserted.unchanged
        counts.quarantined = rejects.flush(conn, run.id)
        _record_mapping_rejects(conn, run.id)
        report.deleted += _withdraw(conn, job, withdrawn)
        run.watermark_after = report.watermark_before
        end = job.host.window_end.astimezone(dt.timezone.utc)
        run.window_end = watermarks.render(end) if end < until else None
        if advance:
            moved = watermarks.advance(conn, PIPELINE, job.connection_id, "timestamp", end, run_id=run_id)
            run.watermark_after = watermarks.render(moved.value)
    report.windows += 1
    report.inserted += counts.inserted
    report.updated += counts.updated
    report.unchanged += counts.unchanged
    report.quarantined += counts.quarantined
    report.warnings += [w for w in job.host.warnings if w not in report.warnings]
    log.info("%s %s: window done%s: %s", mode, job.connection_id,
             f" early, at {end.isoformat()} ({limit} documents)" if end < until else "", counts.as_dict())
    return end


def _rows(job: SyncJob, documents: Iterable[Document], counts: ledger.RunCounts, rejects: ledger.QuarantineBuffer,
          withdrawn: list[tuple[Document, str]], report: SyncReport) -> Iterator[tuple]:
    progress = Progress(log)
    for document in documents:
        counts.read += 1
        report.read += 1
        if document.deleted:
            withdrawn.append((document, "deleted"))
            continue
        key = item_id(job.host.name, document.entity, document.source_id)
        try:
            transaction = job.host.to_transaction(document, fallback_address=job.fallback_address)
        except Unreconciled as exc:
            rejects.add(key, f"unreconciled: {exc}", document.record)
            continue
        except Exception as exc:  # noqa: BLE001 - one malformed document must not hold back the rest
            rejects.add(key, f"unreadable: {type(exc).__name__}: {exc}", document.record)
            continue
        if transaction.transaction_date < job.start_date:   # out of scope now, if we ever pushed it
            report.before_start += 1
            withdrawn.append((document, "before_start"))
            continue
        yield row_of(job.connection_id, transaction)
        progress.tick("%s: %d documents read, %d quarantined so far", job.connection_id, counts.read, rejects.count)


def _record_mapping_rejects(conn: psycopg.Connection, ledger_id: int) -> None:
    """Documents that did not map are in etl.quarantine; GET /baditems lists them too, once per reason
    (the overlap re-reads a quarantined document, and every run would list it again)."""
    conn.execute(
        "INSERT INTO trustfile.bad_items (connection_id, item_id, stage, message, friendly_message, payload) "
        "SELECT scope, record_key, 'mapping', reason, "
        "CASE WHEN reason LIKE 'unreconciled:%%' THEN %s ELSE %s END, payload "
        "FROM etl.quarantine q WHERE ledger_id = %s AND NOT EXISTS (SELECT 1 FROM trustfile.bad_items b "
        "WHERE b.connection_id = q.scope AND b.item_id = q.record_key AND b.message = q.reason)",
        (FRIENDLY["unreconciled"], FRIENDLY["unreadable"], ledger_id))


def _withdraw(conn: psycopg.Connection, job: SyncJob, withdrawn: list[tuple[Document, str]]) -> int:
    """A document we hold that was deleted, or re-dated before the start date, is kept with every
    amount 0 (status says why), so TrustFile's totals drop it. Returns how many were deleted."""
    deleted = 0
    for document, status in withdrawn:
        key = item_id(job.host.name, document.entity, document.source_id)
        row = conn.execute("SELECT item FROM trustfile.transactions WHERE connection_id = %s AND item_id = %s "
                           "AND status <> %s FOR UPDATE", (job.connection_id, key, status)).fetchone()
        if row is None:
            continue
        item = {**row[0], **dict.fromkeys(AMOUNT_FIELDS, 0.0)}
        conn.execute(
            "UPDATE trustfile.transactions SET status = %s, sales_amount = 0, sales_tax = 0, "
            "shipping_amount = 0, shipping_tax = 0, source_total = 0, lines = '[]', source_updated_at = %s, "
            "item = %s, content_hash = %s WHERE connection_id = %s AND item_id = %s",
            (status, document.updated_at, Jsonb(item), item_hash(item), job.connection_id, key))
        deleted += status == "deleted"
    return deleted


# ---- push ---------------------------------------------------------------------------------------

_PENDING = """
SELECT t.item_id, t.item, t.content_hash, p.refund
  FROM trustfile.transactions t
  LEFT JOIN trustfile.push_ledger p ON p.connection_id = t.connection_id AND p.item_id = t.item_id
 WHERE t.connection_id = %(connection)s AND p.content_hash IS DISTINCT FROM t.content_hash
 ORDER BY t.item_id
"""
_IN_WINDOW = """
SELECT t.item_id, t.item, t.content_hash, p.refund
  FROM trustfile.transactions t
  LEFT JOIN trustfile.push_ledger p ON p.connection_id = t.connection_id AND p.item_id = t.item_id
 WHERE t.connection_id = %(connection)s AND t.source_updated_at >= %(since)s AND t.source_updated_at < %(until)s
 ORDER BY t.item_id
"""


def _push(conn: psycopg.Connection, job: SyncJob, report: SyncReport,
          window: tuple[dt.datetime, dt.datetime] | None = None) -> None:
    """One query for everything to push, read 1000 rows at a time through a cursor that outlives
    each batch's commit: the work is linear in the items, where a query per batch is not."""
    params = {"connection": job.connection_id}
    if window is not None:
        params.update(since=window[0], until=window[1])
    progress = Progress(log)
    with conn.cursor(name="trustfile_push", withhold=True) as pending:
        pending.execute(_IN_WINDOW if window else _PENDING, params)
        conn.commit()   # the result is kept by the server; the snapshot and its locks are released
        while rows := pending.fetchmany(MAX_ITEMS_PER_CALL):
            answer = job.trustfile.push_items(job.push_target, list(_outgoing(rows)))
            with conn.transaction():
                _record_push(conn, job.connection_id, rows, answer.rejected)
            report.push_selected += len(rows)
            report.push_calls += answer.calls
            report.pushed += len(rows) - len(answer.rejected)
            report.rejected += len(answer.rejected)
            progress.tick("%s: %d items pushed, %d refused so far", job.connection_id, report.pushed, report.rejected)
    conn.commit()
    log.info("%s: push done: %d items in %d calls, %d refused by TrustFile", job.connection_id, report.pushed,
             report.push_calls, report.rejected)


def _outgoing(rows: list[tuple]) -> Iterator[dict]:
    """The items to send; a document that turned from sale to refund (or back) also zeroes its old
    entry, which TrustFile keeps apart under the same itemId and the other refund flag."""
    for _, item, _, pushed_refund in rows:
        if pushed_refund is not None and pushed_refund != item["refund"]:
            yield {**item, "refund": pushed_refund, **dict.fromkeys(AMOUNT_FIELDS, 0.0)}
        yield item


def _record_push(conn: psycopg.Connection, connection_id: str, rows: list[tuple], rejected: dict[str, list[str]]):
    ids, hashes, outcomes, refunds = [], [], [], []
    for key, item, content_hash, _ in rows:
        ids.append(key)
        hashes.append(content_hash)
        outcomes.append("rejected" if key in rejected else "pushed")
        refunds.append(bool(item["refund"]))
    conn.execute(
        "INSERT INTO trustfile.push_ledger (connection_id, item_id, content_hash, outcome, refund) "
        "SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::text[], %s::boolean[]) "
        "ON CONFLICT (connection_id, item_id) DO UPDATE SET content_hash = EXCLUDED.content_hash, "
        "outcome = EXCLUDED.outcome, refund = EXCLUDED.refund, at = now()",
        (connection_id, ids, hashes, outcomes, refunds))
    for key, item, _, _ in rows:
        if key in rejected:
            message = "; ".join(rejected[key])
            conn.execute(
                "INSERT INTO trustfile.bad_items (connection_id, item_id, stage, message, friendly_message, payload) "
                "VALUES (%s, %s, 'trustfile', %s, %s, %s)",
                (connection_id, key, message, f"TrustFile refused the item: {message}", Jsonb(item)))
