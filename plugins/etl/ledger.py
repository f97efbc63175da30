"""The run ledger (a row per pipeline task run) and the quarantine of rejected records.

A run is opened in its own committed transaction, so on-call sees it as `running` while it
works; it is closed as `success` inside the load's transaction (counts commit with the rows
they describe) or as `failed` in a fresh transaction after the load rolled back.
"""
from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg

log = logging.getLogger(__name__)

ERROR_TEXT_LIMIT = 4000


@dataclass
class RunCounts:
    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class RunInfo:
    pipeline: str
    scope: str
    run_id: str
    mode: str
    task_id: str | None = None
    try_number: int | None = None
    window_start: str | None = None
    window_end: str | None = None
    watermark_before: str | None = None


def open_run(conn: psycopg.Connection, info: RunInfo) -> int:
    """Insert a `running` ledger row and commit it at once; return its id."""
    with conn.transaction():
        return conn.execute(
            """
            INSERT INTO etl.run_ledger (pipeline, scope, run_id, task_id, try_number, mode,
                                        window_start, window_end, watermark_before)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id
            """,
            (info.pipeline, info.scope, info.run_id, info.task_id, info.try_number, info.mode,
             info.window_start, info.window_end, info.watermark_before),
        ).fetchone()[0]


def close_run(conn: psycopg.Connection, ledger_id: int, counts: RunCounts, *, watermark_after: str | None,
              window_end: str | None = None) -> None:
    """Mark the run `success` inside the caller's (load) transaction; `window_end` corrects the one
    it opened with when the window ended early."""
    conn.execute(
        """
        UPDATE etl.run_ledger SET status = 'success', finished_at = clock_timestamp(),
               rows_read = %s, rows_inserted = %s, rows_updated = %s, rows_unchanged = %s,
               rows_quarantined = %s, watermark_after = %s, window_end = coalesce(%s, window_end)
         WHERE id = %s
        """,
        (counts.read, counts.inserted, counts.updated, counts.unchanged, counts.quarantined,
         watermark_after, window_end, ledger_id),
    )


def fail_run(conn: psycopg.Connection, ledger_id: int, error: str) -> None:
    """Mark the run `failed` with its error (secrets Airflow knows of redacted), in a transaction of its own."""
    with conn.transaction():
        conn.execute(
            "UPDATE etl.run_ledger SET status = 'failed', finished_at = clock_timestamp(), error = %s WHERE id = %s",
            (redact_text(error)[:ERROR_TEXT_LIMIT], ledger_id),
        )


@dataclass
class LedgeredRun:
    """The open ledger row of a `ledgered_run`: the body fills in what the row is closed with."""

    id: int
    counts: RunCounts = field(default_factory=RunCounts)
    watermark_after: str | None = None
    window_end: str | None = None       # set when the window ended before the end it was opened with


@contextlib.contextmanager
def ledgered_run(conn: psycopg.Connection, info: RunInfo, *, atomic: bool = True) -> Iterator[LedgeredRun]:
    """Open `info`'s ledger row (committed at once: on-call sees it `running`) and close it with what the
    body recorded on the yielded run.

    atomic: the body runs in one transaction and the row is closed as `success` inside it, so the
    counts commit with the rows they describe. Not atomic: the body commits as it goes (batched
    deletes) and the row is closed after it. On any exception, KeyboardInterrupt included (Airflow
    stops tasks with SIGINT first), the body's transaction rolls back, the row is marked `failed` with
    the error in a transaction of its own, and the exception goes on.
    """
    run = LedgeredRun(open_run(conn, info))
    try:
        if atomic:
            with conn.transaction():
                yield run
                close_run(conn, run.id, run.counts, watermark_after=run.watermark_after, window_end=run.window_end)
        else:
            yield run
            with conn.transaction():
                close_run(conn, run.id, run.counts, watermark_after=run.watermark_after, window_end=run.window_end)
    except BaseException as exc:
        try:
            conn.rollback()
            fail_run(conn, run.id, f"{type(exc).__name__}: {exc}")
        except psycopg.Error:  # the database itself is what failed; the task's error says so
            log.exception("could not mark ledger row %d failed", run.id)
        raise


def redact_text(text: str) -> str:
    """Text with every secret registered with Airflow's masker replaced, and NUL characters dropped.

    Airflow masks log output only; an error stored in a table or posted to a webhook needs this.
    """
    try:
        from airflow.sdk.log import redact
    except ImportError:  # the engine also runs outside Airflow (tools, benchmarks)
        return text.replace("\x00", "")
    return str(redact(text)).replace("\x00", "")


@dataclass
class QuarantineBuffer:
    """Rejected records collected while the load's COPY stream is open.

    The COPY holds the connection, so rejects cannot be inserted as they come; they are spooled
    (in memory up to a few MB, then on disk) and written after the COPY, in the same transaction.
    """

    pipeline: str
    scope: str
    count: int = 0
    _spool: tempfile.SpooledTemporaryFile = field(
        default_factory=lambda: tempfile.SpooledTemporaryFile(max_size=4 * 1024 * 1024, mode="w+", encoding="utf-8")
    )

    def add(self, record_key: str | None, reason: str, payload: object) -> None:
        entry = [_storable(record_key), _storable(reason), _storable(payload)]
        self._spool.write(json.dumps(entry, default=str, allow_nan=False) + "\n")
        self.count += 1

    def _entries(self) -> Iterator[tuple[str | None, str, str]]:
        self._spool.seek(0)
        for line in self._spool:
            record_key, reason, payload = json.loads(line)
            yield record_key, reason, json.dumps(payload)

    def flush(self, conn: psycopg.Connection, ledger_id: int) -> int:
        """Write the spooled rejects into etl.quarantine inside the caller's transaction."""
        if self.count:
            with conn.cursor().copy(
                "COPY etl.quarantine (ledger_id, pipeline, scope, record_key, reason, payload) FROM STDIN"
            ) as copy:
                for record_key, reason, payload in self._entries():
                    copy.write_row((ledger_id, self.pipeline, self.scope, record_key, reason, payload))
        self._spool.close()
        return self.count


def _storable(value: object) -> object:
    """A value jsonb accepts: NaN and infinities become null, NUL characters are dropped.

    A malformed record is what the quarantine is for; writing it must never fail the load.
    """
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {str(k).replace("\x00", ""): _storable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_storable(v) for v in value]
    return value


def prune(conn: psycopg.Connection, *, older_than_days: int, batch_size: int = 10_000) -> int:
    """Delete finished ledger rows (and their quarantine rows) older than the retention, in batches."""
    if older_than_days < 1:
        raise ValueError("retention must be at least one day")
    total = 0
    while True:
        with conn.transaction():
            deleted = conn.execute(
                """
                WITH doomed AS (
                    SELECT id FROM etl.run_ledger
                     WHERE status <> 'running' AND started_at < now() - make_interval(days => %s)
                     ORDER BY id LIMIT %s
                ), gone_quarantine AS (
                    DELETE FROM etl.quarantine q USING doomed WHERE q.ledger_id = doomed.id
                )
                DELETE FROM etl.run_ledger l USING doomed WHERE l.id = doomed.id
                """,
                (older_than_days, batch_size),
            ).rowcount
        total += deleted
        if deleted < batch_size:
            return total
