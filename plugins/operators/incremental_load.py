"""An Airflow operator for an incremental load, and the Params form that drives its backfills.

Scheduled runs load since the watermark. A manual run from the UI with mode `backfill` and a
start/end re-loads exactly that window and leaves the watermark where it was; a form it cannot read
fails the task at once (BadInput), without retries.
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Any

from airflow.sdk import BaseOperator, Param

from etl import db
from etl.incremental import IncrementalSource, Window, run_load
from etl.watermarks import CursorKind
from notifiers.failures import BadInput, Scope, reported


def backfill_params() -> dict[str, Param]:
    """The Params form of a DAG whose tasks are incremental loads."""
    return {
        "mode": Param("incremental", type="string", enum=["incremental", "backfill"], title="Mode",
                      description="incremental: since the watermark. "
                                  "backfill: exactly [start, end), watermark untouched."),
        "start": Param(None, type=["null", "string"], title="Backfill start (inclusive)",
                       description="Backfill only: an ISO 8601 timestamp with offset "
                                   "(e.g. 2026-01-01T00:00:00+00:00), or an id for id cursors."),
        "end": Param(None, type=["null", "string"], title="Backfill end (exclusive)",
                     description="Backfill only: same format as start, after it."),
    }


EXPECTED = {"timestamp": "is not an ISO 8601 timestamp with offset, e.g. 2026-01-01T00:00:00+00:00",
            "id": "is not an integer id", "json": "is not a JSON value"}


def parse_cursor(kind: CursorKind, text: str, *, field: str) -> Any:
    """Turn a Params string into a cursor value of `kind`, or explain what was expected."""
    try:
        if kind == "timestamp":
            value = dt.datetime.fromisoformat(text)
            if value.tzinfo is None:
                raise ValueError("no UTC offset")
            return value
        if kind == "id":
            return int(text)
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"param {field}={text!r} {EXPECTED[kind]} ({exc})") from None


def window_from_params(params: dict, kind: CursorKind) -> tuple[str, Window | None]:
    mode = params.get("mode") or "incremental"
    if mode == "incremental":
        return mode, None
    if mode != "backfill":
        raise ValueError(f"param mode={mode!r}: use incremental or backfill")
    start, end = params.get("start"), params.get("end")
    if not start or not end:
        raise ValueError("a backfill needs both start and end params")
    window = Window(parse_cursor(kind, start, field="start"), parse_cursor(kind, end, field="end"))
    if not window.start < window.end:
        raise ValueError(f"backfill window is empty: start {start} is not before end {end}")
    return mode, window


class IncrementalLoadOperator(BaseOperator):
    """Load one (pipeline, scope) incrementally, or backfill a window from the run's Params."""

    ui_color = "#d8ecf7"

    def __init__(self, *, source: IncrementalSource, scope: str, **kwargs):
        super().__init__(**kwargs)
        self.source = source
        self.scope = scope

    def execute(self, context) -> dict:
        with reported(context, Scope(f"{self.source.pipeline} scope", self.scope)):
            try:
                mode, window = window_from_params(context["params"], self.source.cursor_kind)
            except ValueError as exc:     # a bad form: no retry can fix it
                raise BadInput(str(exc)) from None
            ti = context["ti"]
            with db.connect() as conn:
                report = run_load(
                    conn, self.source, scope=self.scope, run_id=context["run_id"], mode=mode, window=window,
                    task_id=ti.task_id, try_number=ti.try_number,
                )
        return report.as_dict()
