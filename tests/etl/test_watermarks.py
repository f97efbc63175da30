"""Watermarks: typed cursors, forward only, moved inside the caller's transaction, reset logged."""
from __future__ import annotations

import datetime as dt

import pytest

from etl import watermarks
from etl.db import connect

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


def test_advance_then_read_each_kind(conn):
    with conn.transaction():
        watermarks.advance(conn, "p", "ts", "timestamp", T0, run_id="r1")
        watermarks.advance(conn, "p", "id", "id", 41, run_id="r1")
        watermarks.advance(conn, "p", "json", "json", {"page_token": "abc"}, run_id="r1")
    assert watermarks.read(conn, "p", "ts").value == T0
    assert watermarks.read(conn, "p", "id").value == 41
    stored = watermarks.read(conn, "p", "json")
    assert stored.value == {"page_token": "abc"} and stored.moved_by_run == "r1"
    assert watermarks.read(conn, "p", "never-ran") is None


def test_refuses_to_move_backward(conn):
    with conn.transaction():
        watermarks.advance(conn, "p", "back", "timestamp", T0, run_id="r1")
    with pytest.raises(watermarks.WatermarkError, match="refuses to move backward"):
        with conn.transaction():
            watermarks.advance(conn, "p", "back", "timestamp", T0 - dt.timedelta(seconds=1), run_id="r2")
    assert watermarks.read(conn, "p", "back").value == T0


def test_same_value_is_a_no_op_and_kind_cannot_change(conn):
    with conn.transaction():
        watermarks.advance(conn, "p", "same", "id", 7, run_id="r1")
        watermarks.advance(conn, "p", "same", "id", 7, run_id="r2")
    assert watermarks.read(conn, "p", "same").moved_by_run == "r1"
    with pytest.raises(watermarks.WatermarkError, match="reset\\(\\) it explicitly"), conn.transaction():
        watermarks.advance(conn, "p", "same", "timestamp", T0, run_id="r3")


def test_rejects_naive_timestamps_and_wrong_types(conn):
    with pytest.raises(watermarks.WatermarkError, match="timezone-aware"):
        watermarks.advance(conn, "p", "x", "timestamp", dt.datetime(2026, 1, 1), run_id="r")
    with pytest.raises(watermarks.WatermarkError, match="needs an int"):
        watermarks.advance(conn, "p", "x", "id", "12", run_id="r")
    conn.rollback()


def test_advance_rolls_back_with_the_callers_transaction(conn):
    with pytest.raises(RuntimeError, match="load failed"), conn.transaction():
        watermarks.advance(conn, "p", "atomic", "id", 100, run_id="r1")
        raise RuntimeError("load failed")
    assert watermarks.read(conn, "p", "atomic") is None


def test_reset_rewinds_with_a_reason_and_history(conn):
    with conn.transaction():
        watermarks.advance(conn, "p", "rw", "id", 10, run_id="r1")
        watermarks.advance(conn, "p", "rw", "id", 20, run_id="r2")
    with pytest.raises(watermarks.WatermarkError, match="needs a reason"):
        watermarks.reset(conn, "p", "rw", "id", 5, run_id="ops", reason=" ")
    conn.rollback()
    with conn.transaction():
        watermarks.reset(conn, "p", "rw", "id", 5, run_id="ops", reason="source restored from backup")
    assert watermarks.read(conn, "p", "rw").value == 5
    history = conn.execute(
        "SELECT action, old_value, new_value, run_id, reason FROM etl.watermark_history "
        "WHERE pipeline = 'p' AND scope = 'rw' ORDER BY id"
    ).fetchall()
    assert history == [
        ("advance", None, "10", "r1", None),
        ("advance", "10", "20", "r2", None),
        ("reset", "20", "5", "ops", "source restored from backup"),
    ]


def test_claim_is_exclusive_per_scope_until_commit(conn, db_url):
    with connect(db_url) as other:
        with conn.transaction():
            watermarks.claim(conn, "p", "busy")
            with pytest.raises(watermarks.WatermarkBusy, match="being loaded or reset by another run"):
                watermarks.claim(other, "p", "busy")
            other.rollback()
            watermarks.claim(other, "p", "another-scope")
            other.rollback()
        watermarks.claim(other, "p", "busy")  # released at commit
        other.rollback()
