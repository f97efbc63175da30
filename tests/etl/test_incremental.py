"""The incremental load: atomic rows + watermark, quarantine, backfill, failure, a kill mid-commit."""
from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import synthetic_source as src

from etl import watermarks
from etl.db import connect
from etl.incremental import Window, run_load

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fresh_tables(conn):
    conn.execute(src.SCHEMA)
    conn.execute("TRUNCATE etl.watermarks, etl.watermark_history, etl.quarantine, etl.run_ledger CASCADE")
    conn.commit()


def target_rows(conn):
    return conn.execute(
        "SELECT event_id, updated_at, amount, customer FROM scratch.events ORDER BY event_id").fetchall()


def ledger(conn, scope):
    return conn.execute(
        "SELECT mode, status, rows_read, rows_inserted, rows_updated, rows_unchanged, rows_quarantined, "
        "watermark_before, watermark_after, error FROM etl.run_ledger WHERE scope = %s ORDER BY id", (scope,)
    ).fetchall()


def test_first_run_loads_and_advances_second_run_reads_only_the_boundary(conn, db_url):
    src.seed(conn, 50)
    source = src.make_source(db_url)
    report = run_load(conn, source, scope="acme", run_id="run-1")
    assert report.counts == {"read": 50, "inserted": 50, "updated": 0, "unchanged": 0, "quarantined": 0}
    assert watermarks.read(conn, src.PIPELINE, "acme").value == src.T0 + dt.timedelta(minutes=49)

    src.seed(conn, 10, start=50)
    report = run_load(conn, source, scope="acme", run_id="run-2")
    # The boundary record (cursor == watermark) is read again and recognised as unchanged.
    assert report.counts == {"read": 11, "inserted": 10, "updated": 0, "unchanged": 1, "quarantined": 0}
    assert watermarks.read(conn, src.PIPELINE, "acme").value == src.T0 + dt.timedelta(minutes=59)

    report = run_load(conn, source, scope="acme", run_id="run-3")
    assert report.counts["inserted"] == report.counts["updated"] == 0
    assert len(target_rows(conn)) == 60
    assert [row[:2] for row in ledger(conn, "acme")] == [("incremental", "success")] * 3


def test_quarantine_keeps_bad_rows_with_reasons_while_good_rows_load(conn, db_url):
    src.seed(conn, 20, bad={3, 19})
    report = run_load(conn, src.make_source(db_url), scope="q", run_id="run-q")
    assert report.counts == {"read": 20, "inserted": 18, "updated": 0, "unchanged": 0, "quarantined": 2}
    quarantined = conn.execute(
        "SELECT q.record_key, q.reason, q.payload->>'amount', l.run_id FROM etl.quarantine q "
        "JOIN etl.run_ledger l ON l.id = q.ledger_id ORDER BY q.record_key"
    ).fetchall()
    assert quarantined == [
        ("E000003", "amount 'not-money' is not a decimal number", "not-money", "run-q"),
        ("E000019", "amount 'not-money' is not a decimal number", "not-money", "run-q"),
    ]
    # The watermark passes the quarantined last record, so it is not re-quarantined every run.
    assert watermarks.read(conn, src.PIPELINE, "q").value == src.T0 + dt.timedelta(minutes=19)


def test_backfill_reloads_its_window_and_leaves_the_watermark(conn, db_url):
    src.seed(conn, 30)
    source = src.make_source(db_url)
    run_load(conn, source, scope="bf", run_id="run-1")
    before = watermarks.read(conn, src.PIPELINE, "bf")

    conn.execute("UPDATE scratch.events SET customer = 'tampered' WHERE event_id IN ('E000005', 'E000025')")
    conn.commit()
    window = Window(src.T0 + dt.timedelta(minutes=0), src.T0 + dt.timedelta(minutes=10))
    report = run_load(conn, source, scope="bf", run_id="backfill-1", mode="backfill", window=window)
    assert report.counts == {"read": 10, "inserted": 0, "updated": 1, "unchanged": 9, "quarantined": 0}
    assert watermarks.read(conn, src.PIPELINE, "bf") == before
    customers = dict(conn.execute("SELECT event_id, customer FROM scratch.events").fetchall())
    assert customers["E000005"] == "C5" and customers["E000025"] == "tampered"  # outside the window: untouched
    assert ledger(conn, "bf")[-1][:2] == ("backfill", "success")

    again = run_load(conn, source, scope="bf", run_id="backfill-2", mode="backfill", window=window)
    assert again.counts["unchanged"] == 10
    with pytest.raises(ValueError, match="explicit window"):
        run_load(conn, source, scope="bf", run_id="backfill-3", mode="backfill")


def test_a_failing_extract_commits_nothing_and_ledgers_the_error(conn, db_url):
    src.seed(conn, 10)

    def explode():
        raise ConnectionError("vendor went away after the last page")

    with pytest.raises(ConnectionError):
        run_load(conn, src.make_source(db_url, after_last=explode), scope="boom", run_id="run-boom")
    assert target_rows(conn) == []
    assert watermarks.read(conn, src.PIPELINE, "boom") is None
    (row,) = ledger(conn, "boom")
    assert row[1] == "failed" and row[-1] == "ConnectionError: vendor went away after the last page"


def test_concurrent_run_of_the_same_scope_is_refused(conn, db_url):
    src.seed(conn, 5)
    with connect(db_url) as holder:
        with holder.transaction():
            watermarks.claim(holder, src.PIPELINE, "busy")
            with pytest.raises(watermarks.WatermarkBusy):
                run_load(conn, src.make_source(db_url), scope="busy", run_id="second")
    assert ledger(conn, "busy") == []  # refused before it started: nothing to close
    assert run_load(conn, src.make_source(db_url), scope="busy", run_id="third").counts["inserted"] == 5


def test_a_reset_cannot_slip_in_while_a_load_runs(conn, db_url):
    src.seed(conn, 5)
    attempts = []

    def reset_during_extract():
        with connect(db_url) as other:
            try:
                with other.transaction():
                    watermarks.reset(other, src.PIPELINE, "race", "timestamp", src.T0, run_id="ops", reason="rewind")
            except watermarks.WatermarkBusy as exc:
                attempts.append(exc)

    run_load(conn, src.make_source(db_url, after_last=reset_during_extract), scope="race", run_id="load")
    assert len(attempts) == 1
    assert watermarks.read(conn, src.PIPELINE, "race").value == src.T0 + dt.timedelta(minutes=4)


def test_a_rejected_record_with_an_absurd_cursor_does_not_move_the_watermark(conn, db_url):
    import datetime as dt_

    from etl.incremental import IncrementalSource, Reject

    records = [{"id": "a", "at": src.T0, "ok": True},
               {"id": "b", "at": dt_.datetime(9999, 1, 1, tzinfo=dt_.timezone.utc), "ok": False},
               {"id": "c", "at": "not a time", "ok": False}]

    def transform(record):
        if not record["ok"]:
            raise Reject("corrupt record")
        return (record["id"], record["at"], 1, "C")

    source = IncrementalSource(src.PIPELINE, src.TARGET, "timestamp", src.T0, lambda scope, window: iter(records),
                               transform, cursor_of=lambda r: r["at"], key_of=lambda r: r["id"])
    report = run_load(conn, source, scope="absurd", run_id="r")
    assert report.counts["quarantined"] == 2
    assert watermarks.read(conn, src.PIPELINE, "absurd").value == src.T0


def test_json_cursors_keep_the_last_one_seen(conn):
    from etl.incremental import IncrementalSource

    pages = [{"id": f"k{n}", "token": {"page": token}} for n, token in enumerate(["tok-b9", "tok-a1"])]
    source = IncrementalSource(src.PIPELINE, src.TARGET, "json", {"page": None},
                               lambda scope, window: iter(pages),
                               lambda r: (r["id"], src.T0, 1, "C"), cursor_of=lambda r: r["token"],
                               key_of=lambda r: r["id"])
    run_load(conn, source, scope="json", run_id="r")
    assert watermarks.read(conn, src.PIPELINE, "json").value == {"page": "tok-a1"}


def test_quarantine_stores_records_jsonb_would_refuse(conn):
    from etl.incremental import IncrementalSource, Reject

    def transform(record):
        raise Reject("bad amount\x00")

    records = [{"id": "n", "amount": float("nan"), "note": "nul\x00inside", "at": src.T0}]
    source = IncrementalSource(src.PIPELINE, src.TARGET, "timestamp", src.T0, lambda scope, window: iter(records),
                               transform, cursor_of=lambda r: r["at"], key_of=lambda r: r["id"])
    assert run_load(conn, source, scope="nan", run_id="r").counts["quarantined"] == 1
    assert conn.execute("SELECT reason, payload->>'amount', payload->>'note' FROM etl.quarantine").fetchone() == (
        "bad amount", None, "nulinside")


def test_killed_between_load_and_commit_leaves_nothing_and_rerun_converges(conn, db_url, tmp_path):
    src.seed(conn, 2000, bad={7})
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT / "tests" / "dag_bundle")])}
    child = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "dag_bundle" / "synthetic_source.py"), db_url, "kill", str(go)], env=env)
    try:
        ledger_id = _wait(lambda: conn.execute(
            "SELECT id FROM etl.run_ledger WHERE scope = 'kill' AND status = 'running'").fetchone())[0]
        conn.commit()
        with connect(db_url) as gate, connect(db_url, autocommit=True) as watch:
            # Hold the ledger row: the child's final step (closing it) will wait here, after its
            # rows, quarantine and watermark are written but before its COMMIT. NO KEY UPDATE
            # lets the quarantine's foreign-key check through and stops only that last UPDATE.
            gate.execute("SELECT 1 FROM etl.run_ledger WHERE id = %s FOR NO KEY UPDATE", (ledger_id,))
            go.touch()
            _wait(lambda: watch.execute(
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE '%%UPDATE etl.run_ledger SET status = ''success''%%'"
            ).fetchone())
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
            gate.rollback()
    finally:
        if child.poll() is None:
            child.kill()
    with connect(db_url, autocommit=True) as watch:  # the killed client's backend ends its transaction
        _wait(lambda: not watch.execute(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = 'integrations-etl' AND state <> 'idle' "
            "AND pid <> pg_backend_pid()").fetchone())
    assert target_rows(conn) == []
    assert watermarks.read(conn, src.PIPELINE, "kill") is None
    assert conn.execute("SELECT count(*) FROM etl.quarantine").fetchone() == (0,)
    assert ledger(conn, "kill")[0][1] == "running"  # left for integrations_maintenance to close

    report = run_load(conn, src.make_source(db_url), scope="kill", run_id="rerun")
    assert report.counts == {"read": 2000, "inserted": 1999, "updated": 0, "unchanged": 0, "quarantined": 1}
    assert len(target_rows(conn)) == 1999
    assert watermarks.read(conn, src.PIPELINE, "kill").value == src.T0 + dt.timedelta(minutes=1999)


def _wait(probe, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(0.05)
    raise TimeoutError("condition not reached")
