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


def test_reset_refuses_a_future_timestamp_and_names_the_current_watermark(conn):
    """A watermark ahead of the clock makes every run skip the changes until then, and report success."""
    with conn.transaction():
        watermarks.advance(conn, "p", "future", "timestamp", T0, run_id="r1")
    ahead = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    with pytest.raises(watermarks.WatermarkInFuture, match=r"in the future.*current watermark is 2026-03-01T12:00:00"):
        with conn.transaction():
            watermarks.reset(conn, "p", "future", "timestamp", ahead, run_id="ops", reason="typo in the year")
    assert watermarks.read(conn, "p", "future").value == T0
    assert conn.execute("SELECT count(*) FROM etl.watermark_history WHERE scope = 'future' AND action = 'reset'"
                        ).fetchone() == (0,)
    with pytest.raises(watermarks.WatermarkInFuture, match="current watermark is none"), conn.transaction():
        watermarks.reset(conn, "p", "never-set", "timestamp", ahead, run_id="ops", reason="first setting")

    skewed = dt.datetime.now(dt.timezone.utc) + watermarks.CLOCK_SKEW / 2    # within the allowance: accepted
    with conn.transaction():
        watermarks.reset(conn, "p", "future", "timestamp", skewed, run_id="ops", reason="now, by another clock")
    assert watermarks.read(conn, "p", "future").value == skewed
    with conn.transaction():   # an id or JSON cursor has no clock to be ahead of
        watermarks.reset(conn, "p", "future-id", "id", 10**12, run_id="ops", reason="ids are not times")
