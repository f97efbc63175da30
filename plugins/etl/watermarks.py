"""Incremental state per (pipeline, scope), kept beside the data it covers.

`advance()` runs inside the caller's transaction, so the rows of a batch and the watermark
that covers them commit together or not at all. A watermark only moves forward; `reset()` is
the one, logged, way back, and never ahead of the clock. Every move is recorded in
etl.watermark_history for on-call.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb

from etl.db import session_lock

log = logging.getLogger(__name__)

CursorKind = Literal["timestamp", "id", "json"]
_COLUMN = {"timestamp": "ts_value", "id": "id_value", "json": "json_value"}
# How far ahead of the database's clock a reset may set a timestamp: worker and source clocks drift.
CLOCK_SKEW = dt.timedelta(minutes=5)


class WatermarkError(RuntimeError):
    """A watermark operation was refused; the message names pipeline, scope and what to do."""


class WatermarkBusy(WatermarkError):
    """Another run holds this (pipeline, scope): two incremental loads must not interleave."""


class WatermarkInFuture(WatermarkError):
    """A reset to a time still to come: every run would succeed while skipping the changes until then."""


@dataclass(frozen=True)
class Watermark:
    pipeline: str
    scope: str
    kind: CursorKind
    value: Any
    moved_at: dt.datetime | None = None
    moved_by_run: str | None = None


def check_value(kind: CursorKind, value: Any) -> Any:
    if kind == "timestamp":
        if not isinstance(value, dt.datetime) or value.tzinfo is None:
            raise WatermarkError(f"a timestamp watermark needs a timezone-aware datetime, got {value!r}")
        return value
    if kind == "id":
        if isinstance(value, bool) or not isinstance(value, int):
            raise WatermarkError(f"an id watermark needs an int, got {value!r}")
        return value
    if kind == "json":
        json.dumps(value)  # raises for values that cannot be stored
        return Jsonb(value)
    raise WatermarkError(f"unknown cursor kind {kind!r}; use timestamp, id or json")


def render(value: Any) -> str:
    """The text form used in the ledger and the history (ISO 8601 for timestamps)."""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, Jsonb):
        value = value.obj
    return json.dumps(value, sort_keys=True, default=str) if not isinstance(value, int) else str(value)


def _lock_key(pipeline: str, scope: str) -> str:
    return f"watermark:{pipeline}:{scope}"


def _busy(pipeline: str, scope: str) -> WatermarkBusy:
    return WatermarkBusy(
        f"pipeline {pipeline!r} scope {scope!r} is being loaded or reset by another run; "
        "this run stops so the window is not loaded twice. Retry after the other run ends."
    )


@contextlib.contextmanager
def claimed(conn: psycopg.Connection, pipeline: str, scope: str) -> Iterator[None]:
    """Hold (pipeline, scope) for a whole incremental run, or raise WatermarkBusy at once.

    Taken before the watermark is read and released after the load commits, so no other run,
    and no reset(), can move the watermark between the read that sets the window and the
    advance that closes it. A session-level advisory lock: PostgreSQL drops it if the worker dies.
    """
    with session_lock(conn, _lock_key(pipeline, scope), wait=False) as held:
        if not held:
            raise _busy(pipeline, scope)
        yield


def claim(conn: psycopg.Connection, pipeline: str, scope: str) -> None:
    """Claim (pipeline, scope) until the caller's transaction ends, or raise WatermarkBusy."""
    key = _lock_key(pipeline, scope)
    if not conn.execute("SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))", (key,)).fetchone()[0]:
        raise _busy(pipeline, scope)


def read(conn: psycopg.Connection, pipeline: str, scope: str, *, for_update: bool = False) -> Watermark | None:
    """The current watermark, or None if this (pipeline, scope) never ran."""
    query = (
        "SELECT cursor_kind, ts_value, id_value, json_value, moved_at, moved_by_run "
        "FROM etl.watermarks WHERE pipeline = %s AND scope = %s"
    )
    if for_update:
        query += " FOR UPDATE"
    row = conn.execute(query, (pipeline, scope)).fetchone()
    if row is None:
        return None
    kind, ts_value, id_value, json_value, moved_at, moved_by_run = row
    value = {"timestamp": ts_value, "id": id_value, "json": json_value}[kind]
    return Watermark(pipeline, scope, kind, value, moved_at, moved_by_run)


def _is_backward(kind: CursorKind, old: Any, new: Any) -> bool:
    # JSON cursors are opaque (page tokens, composite positions): only equality is meaningful.
    return kind in ("timestamp", "id") and new < old


def advance(
    conn: psycopg.Connection, pipeline: str, scope: str, kind: CursorKind, value: Any, *, run_id: str
) -> Watermark:
    """Move the watermark to `value` inside the caller's transaction; refuse to go backward."""
    stored = check_value(kind, value)
    current = read(conn, pipeline, scope, for_update=True)
    if current is not None:
        if current.kind != kind:
            raise WatermarkError(
                f"watermark {pipeline}/{scope} holds a {current.kind} cursor, not {kind}: "
                "reset() it explicitly to change its kind"
            )
        if _is_backward(kind, current.value, value):
            raise WatermarkError(
                f"watermark {pipeline}/{scope} refuses to move backward from {render(current.value)} "
                f"to {render(value)}; use reset() for an intended rewind"
            )
        if current.value == value:
            return current
    _write(conn, pipeline, scope, kind, stored, run_id)
    _history(conn, pipeline, scope, "advance", current, value, run_id, None)
    return Watermark(pipeline, scope, kind, value, None, run_id)


def reset(
    conn: psycopg.Connection, pipeline: str, scope: str, kind: CursorKind, value: Any, *, run_id: str, reason: str
) -> Watermark:
    """Set the watermark to any value, backward included; logged and kept in the history."""
    if not reason or not reason.strip():
        raise WatermarkError("reset() needs a reason: it is the only way a watermark moves back")
    stored = check_value(kind, value)
    claim(conn, pipeline, scope)  # never under a running load: it would advance past the rewind
    current = read(conn, pipeline, scope, for_update=True)
    if kind == "timestamp":
        _refuse_future(conn, pipeline, scope, value, current)
    _write(conn, pipeline, scope, kind, stored, run_id)
    _history(conn, pipeline, scope, "reset", current, value, run_id, reason)
    log.warning(
        "watermark %s/%s reset from %s to %s by %s: %s",
        pipeline, scope, render(current.value) if current else "nothing", render(value), run_id, reason,
    )
    return Watermark(pipeline, scope, kind, value, None, run_id)


def _refuse_future(conn, pipeline, scope, value: dt.datetime, current: Watermark | None) -> None:
    """The database's clock, not the worker's: one clock for every worker that might run the reset."""
    now = conn.execute("SELECT statement_timestamp()").fetchone()[0]
    if value > now + CLOCK_SKEW:
        raise WatermarkInFuture(
            f"watermark {pipeline}/{scope} refuses a reset to {render(value)}: that is in the future "
            f"(the database's clock says {render(now)}, {CLOCK_SKEW.seconds // 60} min of clock skew allowed), "
            f"and the next run would skip every change until then; the current watermark is "
            f"{render(current.value) if current else 'none (never set)'}; reset to a time at or before now"
        )


def _write(conn, pipeline, scope, kind, stored, run_id) -> None:
    values = {"ts_value": None, "id_value": None, "json_value": None, _COLUMN[kind]: stored}
    conn.execute(
        """
        INSERT INTO etl.watermarks (pipeline, scope, cursor_kind, ts_value, id_value, json_value,
                                    moved_at, moved_by_run)
        VALUES (%(pipeline)s, %(scope)s, %(kind)s, %(ts_value)s, %(id_value)s, %(json_value)s, now(), %(run_id)s)
        ON CONFLICT (pipeline, scope) DO UPDATE SET
            cursor_kind = EXCLUDED.cursor_kind, ts_value = EXCLUDED.ts_value, id_value = EXCLUDED.id_value,
            json_value = EXCLUDED.json_value, moved_at = EXCLUDED.moved_at, moved_by_run = EXCLUDED.moved_by_run
        """,
        {"pipeline": pipeline, "scope": scope, "kind": kind, "run_id": run_id, **values},
    )


def _history(conn, pipeline, scope, action, current, value, run_id, reason) -> None:
    conn.execute(
        "INSERT INTO etl.watermark_history (pipeline, scope, action, old_value, new_value, run_id, reason) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (pipeline, scope, action, render(current.value) if current else None, render(value), run_id, reason),
    )
