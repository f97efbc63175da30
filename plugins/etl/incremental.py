"""The incremental load: watermark → extract since it → transform → upsert + advance → ledger.

A pipeline declares what is particular to it in an `IncrementalSource` (the Singer-SDK idea:
a stream states its table, cursor and how to fetch; one engine does the rest). `run_load()`
is plain Python so it is tested without a scheduler; the Airflow operator is a thin wrapper.

Window semantics: an incremental run reads records whose cursor is >= the watermark (the
boundary record is read again and lands as `unchanged`), and moves the watermark to the
largest cursor it loaded. A backfill reads [start, end) and leaves the watermark alone.
"""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import psycopg

from etl import ledger, loader, watermarks
from etl.progress import Progress
from etl.tables import TargetTable
from etl.watermarks import CursorKind

log = logging.getLogger(__name__)

Mode = Literal["incremental", "backfill"]


class Reject(Exception):
    """Raised by a transform for a record that must be quarantined with this reason."""


@dataclass(frozen=True)
class Window:
    start: Any          # inclusive; the watermark in incremental mode
    end: Any = None     # exclusive; None means "up to now"


@dataclass(frozen=True)
class IncrementalSource:
    pipeline: str
    target: TargetTable
    cursor_kind: CursorKind
    initial_cursor: Any
    extract: Callable[[str, Window], Iterable[Any]]       # (scope, window) -> records
    transform: Callable[[Any], Sequence]                  # record -> row in target.columns order, or Reject
    cursor_of: Callable[[Any], Any]
    key_of: Callable[[Any], str]


@dataclass(frozen=True)
class LoadReport:
    ledger_id: int
    pipeline: str
    scope: str
    mode: Mode
    watermark_before: str | None
    watermark_after: str | None
    counts: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_load(
    conn: psycopg.Connection,
    source: IncrementalSource,
    *,
    scope: str,
    run_id: str,
    mode: Mode = "incremental",
    window: Window | None = None,
    task_id: str | None = None,
    try_number: int | None = None,
) -> LoadReport:
    """Run one load. `conn` must not be in a transaction; it is committed once, at the end."""
    if mode == "backfill" and (window is None or window.start is None or window.end is None):
        raise ValueError("a backfill needs an explicit window with start and end")
    if mode not in ("incremental", "backfill"):
        raise ValueError(f"unknown mode {mode!r}: use incremental or backfill")

    if mode == "incremental":
        with watermarks.claimed(conn, source.pipeline, scope):
            return _run(conn, source, scope, run_id, mode, None, task_id, try_number)
    return _run(conn, source, scope, run_id, mode, window, task_id, try_number)


def _run(conn, source: IncrementalSource, scope, run_id, mode, window, task_id, try_number) -> LoadReport:
    current = watermarks.read(conn, source.pipeline, scope)
    conn.commit()
    before = watermarks.render(current.value) if current else None
    if mode == "incremental":
        window = Window(current.value if current else source.initial_cursor)
    info = ledger.RunInfo(
        pipeline=source.pipeline, scope=scope, run_id=run_id, mode=mode, task_id=task_id,
        try_number=try_number, window_start=watermarks.render(window.start),
        window_end=watermarks.render(window.end) if window.end is not None else None,
        watermark_before=before,
    )
    with ledger.ledgered_run(conn, info) as run:
        log.info("%s %s/%s: window %s .. %s, ledger row %d", mode, source.pipeline, scope,
                 info.window_start, info.window_end or "now", run.id)
        _load(conn, source, scope, window, run, run_id, mode)
    log.info("%s %s/%s done: %s, watermark %s -> %s", mode, source.pipeline, scope, run.counts.as_dict(), before,
             run.watermark_after)
    return LoadReport(run.id, source.pipeline, scope, mode, before, run.watermark_after, run.counts.as_dict())


def _load(conn, source: IncrementalSource, scope, window: Window, run: ledger.LedgeredRun, run_id, mode) -> None:
    """Inside the run's transaction: extract, transform, upsert, quarantine, advance the watermark."""
    counts = run.counts
    rejects = ledger.QuarantineBuffer(source.pipeline, scope)
    high = _HighWater(source.cursor_kind)
    rows = _transformed(source, source.extract(scope, window), counts, rejects, high)
    upserted = loader.upsert(conn, source.target, rows)
    counts.inserted, counts.updated, counts.unchanged = upserted.inserted, upserted.updated, upserted.unchanged
    counts.quarantined = rejects.flush(conn, run.id)
    if mode != "incremental":
        return
    if high.value is not None:
        moved = watermarks.advance(conn, source.pipeline, scope, source.cursor_kind, high.value, run_id=run_id)
        run.watermark_after = watermarks.render(moved.value)
    else:
        current = watermarks.read(conn, source.pipeline, scope)
        run.watermark_after = watermarks.render(current.value) if current else None


class _HighWater:
    """The cursor the watermark moves to: the largest one loaded (for JSON cursors, the last one).

    A quarantined record's cursor counts only when it is of the right kind and plausible (a
    timestamp no later than now plus an hour, an id no larger than the largest loaded): one
    corrupt record must not push the watermark past everything that follows it.
    """

    FUTURE_SKEW = dt.timedelta(hours=1)

    def __init__(self, kind: CursorKind) -> None:
        self.kind = kind
        self.value: Any = None

    def see(self, cursor: Any) -> None:
        if self.kind == "json" or self.value is None or cursor > self.value:
            self.value = cursor

    def see_rejected(self, cursor: Any) -> None:
        if cursor is None or self.kind == "json":
            return
        try:
            watermarks.check_value(self.kind, cursor)
        except watermarks.WatermarkError:
            return
        if self.kind == "timestamp" and cursor > dt.datetime.now(dt.timezone.utc) + self.FUTURE_SKEW:
            return
        if self.kind == "id" and (self.value is None or cursor > self.value):
            return
        self.see(cursor)


def _transformed(source: IncrementalSource, records: Iterable[Any], counts: ledger.RunCounts,
                 rejects: ledger.QuarantineBuffer, high: _HighWater) -> Iterator[Sequence]:
    progress = Progress(log)
    for record in records:
        counts.read += 1
        try:
            row = source.transform(record)
        except Reject as exc:
            # The watermark passes quarantined records too: they wait in etl.quarantine for a
            # fix and a backfill, instead of being re-read and re-quarantined on every run.
            rejects.add(_safe_call(source.key_of, record), str(exc), record)
            high.see_rejected(_safe_call(source.cursor_of, record, convert=False))
            continue
        high.see(source.cursor_of(record))
        yield row
        progress.tick("%s/%s: %d records read, %d quarantined so far", source.pipeline, rejects.scope,
                      counts.read, rejects.count)


def _safe_call(getter: Callable[[Any], Any], record: Any, *, convert: bool = True) -> Any:
    try:
        value = getter(record)
    except Exception:  # noqa: BLE001 - a record too malformed to have a key or cursor is still quarantined
        return None
    return str(value) if convert and value is not None else value
