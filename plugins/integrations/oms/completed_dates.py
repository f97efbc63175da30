"""Completed-date capture (issue 12 item 4): OMS-Pro tickets and site visits whose status is the completed
value and whose completed date is empty get it, from the date (UTC) of their `Status Changed`, else of the run.

TrackVia has no modified-since filter (vendors.md §1.5): we read a view sorted by `Updated` (then id) with
`view_scan`, which loses no record edited while it pages, from the watermark (the greatest `Updated` seen)
minus OVERLAP. An hourly run with few changes reads one page whatever the table's size.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass
from typing import Literal

import psycopg

from etl import ledger, watermarks
from etl.progress import Progress
from etl.request_budget import BudgetSpent
from hooks.trackvia import TrackViaHook
from integrations.oms.config import CompletedDateView, ConfigError, OmsConfig
from integrations.oms.view_scan import UPDATED, Mark, scan, updated_of

log = logging.getLogger(__name__)

PIPELINE = "oms_completed_dates"
# Edits stamped in the same second as the watermark, and clock skew between TrackVia's servers.
OVERLAP = dt.timedelta(minutes=10)
PAGE_SIZE = 1000

Table = Literal["tickets", "site_visits"]


@dataclass
class CaptureReport:
    """What a run did, for XCom. API calls: `lookups` (view by name, its structure, its count) + `pages` + `puts`."""

    table: str
    view: str
    ledger_id: int | None = None
    watermark_before: str | None = None
    watermark_after: str | None = None
    lookups: int = 0
    pages: int = 0
    puts: int = 0
    read: int = 0            # record versions after the cut
    updated: int = 0
    already_set: int = 0
    not_completed: int = 0

    @property
    def requests(self) -> int:
        return self.lookups + self.pages + self.puts

    def as_dict(self) -> dict:
        return asdict(self) | {"requests": self.requests}


def _checked_view(hook: TrackViaHook, config: OmsConfig, use: CompletedDateView, table: str) -> int:
    """The view's id, once its structure has every field we read and write (writable): before any PUT."""
    view_id, structure = hook.view(use.view, app=config.app)
    fields = {str(f.get("name")): f for f in structure}
    problems = [f"no field {name!r}" for name in (*use.reads, *use.writes, UPDATED) if name not in fields]
    problems += [f"field {name!r} is read-only to the API user" for name in use.writes
                 if name in fields and fields[name].get("canUpdate") is False]
    if problems:
        raise ConfigError(f"{config.path or 'the OMS-Pro config'}: completed_dates.{table}: view {use.view!r}: "
                          + "; ".join(problems) + f" (fields: {', '.join(sorted(fields))})")
    return view_id


def completed_date(record: dict, use: CompletedDateView, now: dt.datetime) -> str:
    """The date (UTC) the status changed when the record shows it, else the run's."""
    changed = record.get(use.status_changed)
    moment = dt.datetime.fromisoformat(changed) if changed else now
    moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc).date().isoformat()


def capture(conn: psycopg.Connection, hook: TrackViaHook, config: OmsConfig, *, table: Table, run_id: str,
            now: dt.datetime | None = None, page_size: int = PAGE_SIZE) -> CaptureReport:
    """Stamp the completed date of `table`'s completed records changed since the watermark.

    `conn` must be outside a transaction. Our PUTs move their records to the end of the view: the scan
    meets them there, and they are skipped by the version the PUT returned; the watermark goes past them, and
    the next run, reading from watermark - OVERLAP, sees them with their date set (already set, no PUT).
    A failure leaves the watermark where it was, and so does a spent request budget (the ledger row closes as a
    success, then BudgetSpent goes on for the operator to defer): the next attempt reads the window again and
    finds the records already stamped set."""
    use: CompletedDateView = getattr(config.completed_dates, table)
    now = now or dt.datetime.now(dt.timezone.utc)
    report = CaptureReport(table, use.view)
    with watermarks.claimed(conn, PIPELINE, table):
        current = watermarks.read(conn, PIPELINE, table)
        conn.rollback()
        since = current.value - OVERLAP if current else None
        report.watermark_before = current.value.isoformat() if current else None
        info = ledger.RunInfo(pipeline=PIPELINE, scope=table, run_id=run_id, mode="incremental",
                              watermark_before=report.watermark_before,
                              window_start=since.isoformat() if since else None)
        with ledger.ledgered_run(conn, info, atomic=False) as run:
            report.ledger_id = run.id
            view_id = _checked_view(hook, config, use, table)
            total = hook.count(view_id)
            report.lookups = 3                          # /views, the view's structure, its count
            spent: BudgetSpent | None = None
            try:
                newest = _stamp(hook, view_id, use, since, total, now, page_size, report)
            except BudgetSpent as exc:                  # a wait, not a failure: the rerun reads the window again
                spent, newest = exc, None
            after = max(filter(None, (newest, current.value if current else None)), default=None)
            if after is not None and spent is None:
                with conn.transaction():
                    watermarks.advance(conn, PIPELINE, table, "timestamp", after, run_id=run_id)
                report.watermark_after = run.watermark_after = after.isoformat()
            run.counts = ledger.RunCounts(read=report.read, updated=report.updated,
                                          unchanged=report.already_set + report.not_completed)
    log.info("%s: completed dates %s: %s", table, "cut by the request budget" if spent else "captured",
             report.as_dict())
    if spent is not None:
        raise spent
    return report


def _stamp(hook: TrackViaHook, view_id: int, use: CompletedDateView, since: dt.datetime | None, total: int,
           now: dt.datetime, page_size: int, report: CaptureReport) -> dt.datetime | None:
    """PUT the date on every record that needs it; the greatest Updated seen (our PUTs' included)."""
    ours: dict[int, dt.datetime] = {}        # id -> Updated of the version our PUT made
    edited: set[int] = set()                 # the ids we PUT: each moved its record to the view's end
    outcome: dict[int, str] = {}             # id -> updated / already_set / not_completed (updated sticks)
    pages: list[int] = []
    newest: dt.datetime | None = None
    progress = Progress(log)
    try:
        for record in scan(hook, view_id, Mark(since) if since else None, page_size, total=total, pages=pages,
                           edited=edited):
            rid, updated = int(record["id"]), updated_of(record)
            newest = max(newest or updated, updated)
            if ours.get(rid) == updated:
                continue
            report.read += 1
            if record.get(use.status) != use.completed_value:
                state = "not_completed"
            elif record.get(use.completed_date):
                state = "already_set"
            else:
                done = hook.update_record(view_id, rid, {use.completed_date: completed_date(record, use, now)})
                report.puts += 1
                ours[rid] = updated_of(done)
                edited.add(rid)
                newest = max(newest, ours[rid])
                state = "updated"
            if outcome.get(rid) != "updated":
                outcome[rid] = state
            progress.tick("%s: %d pages, %d records read, %d dates set so far", report.table, len(pages),
                          report.read, report.puts)
    finally:
        report.pages = len(pages)
        states = list(outcome.values())
        report.updated, report.already_set = states.count("updated"), states.count("already_set")
        report.not_completed = states.count("not_completed")
    return newest
