"""Holding a worker at a chosen instant so a test can kill it there: row locks taken from another session
(the worker waits on them), and polling until the worker is seen waiting, or something else is true."""
from __future__ import annotations

import subprocess
import time

import psycopg


class Locker:
    """Row locks held from another session: where the worker must write them, it waits until it is killed."""

    def __init__(self, db_url: str):
        self.conn = psycopg.connect(db_url)

    def lock(self, query: str, *params) -> None:
        assert self.conn.execute(query + " FOR UPDATE", params).fetchall()

    def release(self) -> None:
        self.conn.rollback()

    def close(self) -> None:
        self.conn.close()


def until(condition, what: str, worker: subprocess.Popen | None = None, seconds: float = 30) -> None:
    """Poll `condition` until true; fail at `seconds`, or at once if the `worker` process has ended."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert worker is None or worker.poll() is None, f"the worker ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def waiting(conn: psycopg.Connection) -> bool:
    """Whether some session waits for a lock (the worker reached the held row)."""
    conn.rollback()
    answer = conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()[0] > 0
    conn.rollback()
    return answer
