"""A task's log as dag.test() produces it, for tests that read it: every event in the order it happened."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def task_log() -> Iterator[list[tuple[str, str]]]:
    """(level, text) of every log event while it is open, Airflow's own (structlog) and our modules' (logging)
    alike, in the order they happen: the order of a task's log file, which dag.test() prints instead."""
    import structlog

    events: list[tuple[str, str]] = []

    class Sink(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            events.append((record.levelname.lower(), record.getMessage()))

    def keep(_, method: str, event: dict) -> dict:
        events.append(("error" if method in ("exception", "critical") else method, str(event.get("event"))))
        return event

    sink = Sink(logging.DEBUG)
    logging.getLogger().addHandler(sink)
    try:
        with structlog.testing.capture_logs(processors=(keep,)):
            yield events
    finally:
        logging.getLogger().removeHandler(sink)


def first_error(events: list[tuple[str, str]], task_id: str) -> str:
    """The first ERROR line of a task's log (with the lines of the same record)."""
    start = events.index(("info", f"[DAG TEST] starting task_id={task_id} map_index=" + (
        "0" if task_id == "sync_connection" else "-1")))
    return next(text for level, text in events[start:] if level == "error")
