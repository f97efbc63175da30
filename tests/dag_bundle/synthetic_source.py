"""A vendor-free source for engine tests: rows of a scratch table read as if from an API.

`scratch.source_events` plays the remote system; `scratch.events` is the target. Records are
dicts, as a JSON API would give them. Used in-process by the tests and as a script by the
kill test (`python tests/dag_bundle/synthetic_source.py URL SCOPE GO_FILE`), which waits for GO_FILE after
the last record so the test can freeze the run between load and commit.
"""
from __future__ import annotations

import datetime as dt
import sys
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path

import psycopg

from etl.incremental import IncrementalSource, Reject, Window
from etl.tables import TargetTable

PIPELINE = "synthetic_events"
TARGET = TargetTable("scratch", "events", ("event_id", "updated_at", "amount", "customer"))
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

SCHEMA = """
CREATE SCHEMA IF NOT EXISTS scratch;
DROP TABLE IF EXISTS scratch.source_events, scratch.events;
CREATE TABLE scratch.source_events (event_id text PRIMARY KEY, updated_at timestamptz NOT NULL,
                                    amount text, customer text);
CREATE TABLE scratch.events (event_id text PRIMARY KEY, updated_at timestamptz NOT NULL,
                             amount numeric(12,2) NOT NULL, customer text NOT NULL);
"""


def seed(conn: psycopg.Connection, n: int, *, start: int = 0, bad: set[int] = frozenset()) -> None:
    """Insert n source events one minute apart; indexes in `bad` get an unparseable amount."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO scratch.source_events VALUES (%s, %s, %s, %s) ON CONFLICT (event_id) DO UPDATE "
            "SET updated_at = EXCLUDED.updated_at, amount = EXCLUDED.amount, customer = EXCLUDED.customer",
            [(f"E{i:06d}", T0 + dt.timedelta(minutes=i), "not-money" if i in bad else f"{i}.50", f"C{i % 7}")
             for i in range(start, start + n)],
        )
    conn.commit()


def make_source(url: str | None, *, after_last=None) -> IncrementalSource:
    """The source; with url=None it reads through the `integrations_db` connection (inside a DAG)."""

    def extract(scope: str, window: Window):
        from etl.db import connect

        with connect(url) as remote:
            query = "SELECT event_id, updated_at, amount, customer FROM scratch.source_events WHERE updated_at >= %s"
            args = [window.start]
            if window.end is not None:
                query += " AND updated_at < %s"
                args.append(window.end)
            for event_id, updated_at, amount, customer in remote.execute(query + " ORDER BY updated_at", args):
                yield {"id": event_id, "updatedAt": updated_at.isoformat(), "amount": amount, "customer": customer}
        if after_last:
            after_last()

    def transform(record: dict):
        try:
            amount = Decimal(record["amount"])
        except (InvalidOperation, TypeError):
            raise Reject(f"amount {record['amount']!r} is not a decimal number") from None
        return (record["id"], dt.datetime.fromisoformat(record["updatedAt"]), amount, record["customer"])

    return IncrementalSource(
        pipeline=PIPELINE, target=TARGET, cursor_kind="timestamp", initial_cursor=T0,
        extract=extract, transform=transform,
        cursor_of=lambda record: dt.datetime.fromisoformat(record["updatedAt"]),
        key_of=lambda record: record["id"],
    )


def _wait_for(go_file: Path) -> None:
    while not go_file.exists():
        time.sleep(0.05)


if __name__ == "__main__":
    from etl.db import connect
    from etl.incremental import run_load

    url, scope, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    with connect(url) as conn:
        run_load(conn, make_source(url, after_last=lambda: _wait_for(go)), scope=scope, run_id="killed-run")
