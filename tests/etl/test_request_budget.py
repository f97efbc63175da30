"""Request budgets on a real PostgreSQL: atomic under parallel workers, windowed, reconciled with the vendor."""
from __future__ import annotations

import datetime as dt
import threading
from functools import partial

import pytest

from etl import request_budget as rb
from etl.db import connect

UTC = dt.timezone.utc


def at(hour: int, minute: int = 0, second: int = 0) -> dt.datetime:
    return dt.datetime(2026, 3, 2, hour, minute, second, tzinfo=UTC)


def row(conn, credential: str) -> dict:
    cur = conn.execute("SELECT used, reserved, window_start, resets_at, window_source FROM etl.request_budgets "
                       "WHERE vendor = 'itsperfect' AND credential = %s", (credential,))
    values = cur.fetchone()
    conn.commit()
    return dict(zip(("used", "reserved", "window_start", "resets_at", "window_source"), values, strict=True))


def spend(connect_fn, credential: str, *, limit: int, headroom: int, now: dt.datetime) -> tuple[int, rb.BudgetSpent]:
    """Reserve one at a time until refused; how many went through, and the refusal."""
    granted = 0
    while True:
        try:
            rb.reserve(connect_fn, "itsperfect", credential, limit=limit, headroom=headroom, now=now)
        except rb.BudgetSpent as spent:
            return granted, spent
        granted += 1


def test_parallel_workers_never_reserve_past_limit_minus_headroom(db_url, conn):
    barrier = threading.Barrier(8)
    granted: list[int] = []
    errors: list[BaseException] = []

    def worker():
        try:
            with connect(db_url, autocommit=True) as own:
                barrier.wait()
                granted.append(spend(own, "parallel", limit=300, headroom=20, now=at(10, 5))[0])
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sum(granted) == 280 and len(granted) == 8
    assert row(conn, "parallel")["used"] == 280


def test_connection_factory_reserves_and_commits_at_once(db_url, conn):
    reservation = rb.reserve(partial(connect, db_url), "itsperfect", "factory", n=3, limit=750, headroom=15,
                             now=at(10, 5))
    assert (reservation.used, reservation.left, reservation.resets_at) == (3, 732, at(11))
    assert row(conn, "factory")["used"] == 3


def test_window_is_the_clock_hour_until_the_vendor_reports_and_rolls_over(db_url):
    with connect(db_url, autocommit=True) as own:
        granted, spent = spend(own, "clock", limit=10, headroom=2, now=at(10, 20, 30))
        assert granted == 8 and spent.resets_at == at(11)
        assert spend(own, "clock", limit=10, headroom=2, now=at(10, 59, 59))[0] == 0
        after = rb.reserve(own, "itsperfect", "clock", limit=10, headroom=2, now=at(11))
        assert (after.used, after.left, after.resets_at) == (1, 7, at(12))
        later = rb.reserve(own, "itsperfect", "clock", limit=10, headroom=2, now=at(14, 30))
        assert (later.used, later.resets_at) == (1, at(15))


def test_spent_budget_says_when_it_resets(db_url):
    with connect(db_url, autocommit=True) as own:
        rb.reserve(own, "itsperfect", "spent", limit=750, headroom=15, now=at(10, 30))
        rb.reconcile(own, "itsperfect", "spent", remaining=16, resets_at=at(11, 20), now=at(10, 31))
        with pytest.raises(rb.BudgetSpent) as refused:
            rb.reserve(own, "itsperfect", "spent", n=2, limit=750, headroom=15, now=at(10, 32))
    spent = refused.value
    assert (spent.vendor, spent.credential, spent.resets_at) == ("itsperfect", "spent", at(11, 20))
    assert "itsperfect" in str(spent) and "spent" in str(spent) and "2026-03-02T11:20:00+00:00" in str(spent)
    assert "735" in str(spent)


def test_reconcile_moves_used_up_to_what_the_vendor_counted(db_url, conn):
    with connect(db_url, autocommit=True) as own:
        for _ in range(5):
            rb.reserve(own, "itsperfect", "server-side", limit=750, headroom=15, now=at(10, 30))
        budget = rb.reconcile(own, "itsperfect", "server-side", remaining=700, resets_at=at(11, 20), now=at(10, 31))
    assert budget is not None and (budget.used, budget.left) == (50, 685)
    assert row(conn, "server-side") == {"used": 50, "reserved": 5, "window_start": at(10, 20),
                                        "resets_at": at(11, 20), "window_source": "vendor"}


def test_reconcile_never_moves_used_below_our_reservations(db_url, conn):
    with connect(db_url, autocommit=True) as own:
        for _ in range(30):
            rb.reserve(own, "itsperfect", "in-flight", limit=750, headroom=15, now=at(10, 30))
        rb.reconcile(own, "itsperfect", "in-flight", remaining=740, resets_at=at(11, 20), now=at(10, 31))
        assert row(conn, "in-flight")["used"] == 30
        rb.reconcile(own, "itsperfect", "in-flight", remaining=600, resets_at=at(11, 20), now=at(10, 32))
        rb.reconcile(own, "itsperfect", "in-flight", remaining=700, resets_at=at(11, 20), now=at(10, 33))
    assert row(conn, "in-flight")["used"] == 150


def test_stale_reports_are_ignored(db_url, conn):
    with connect(db_url, autocommit=True) as own:
        rb.reserve(own, "itsperfect", "stale", limit=750, headroom=15, now=at(10, 30))
        rb.reconcile(own, "itsperfect", "stale", remaining=740, resets_at=at(11, 20), now=at(10, 31))
        older = rb.reconcile(own, "itsperfect", "stale", remaining=100, resets_at=at(10, 20), now=at(10, 32))
        ended = rb.reconcile(own, "itsperfect", "stale", remaining=100, resets_at=at(10, 32), now=at(10, 33))
    assert older is None and ended is None
    assert row(conn, "stale") == {"used": 10, "reserved": 1, "window_start": at(10, 20),
                                  "resets_at": at(11, 20), "window_source": "vendor"}


def test_a_later_vendor_window_starts_afresh(db_url, conn):
    with connect(db_url, autocommit=True) as own:
        rb.reserve(own, "itsperfect", "rollover", limit=750, headroom=15, now=at(10, 30))
        rb.reconcile(own, "itsperfect", "rollover", remaining=100, resets_at=at(11, 20), now=at(10, 31))
        # the vendor's window ended: the next one is guessed on the vendor's grid until it reports again
        guessed = rb.reserve(own, "itsperfect", "rollover", n=4, limit=750, headroom=15, now=at(11, 25))
        assert (guessed.used, guessed.resets_at) == (4, at(12, 20))
        assert row(conn, "rollover")["window_source"] == "clock"
        rb.reconcile(own, "itsperfect", "rollover", remaining=740, resets_at=at(12, 21), now=at(11, 26))
        assert row(conn, "rollover") == {"used": 10, "reserved": 4, "window_start": at(11, 21),
                                         "resets_at": at(12, 21), "window_source": "vendor"}
        # the vendor reset before the time it announced: its new count replaces ours
        rb.reconcile(own, "itsperfect", "rollover", remaining=748, resets_at=at(13, 0), now=at(12, 0))
    assert row(conn, "rollover") == {"used": 2, "reserved": 0, "window_start": at(12, 0),
                                     "resets_at": at(13, 0), "window_source": "vendor"}


def test_usage_lists_each_budget_for_the_integrations_page(db_url):
    with connect(db_url, autocommit=True) as own:
        rb.reserve(own, "trackvia", "oms_default", n=7, limit=100, headroom=10, now=at(10, 30))
        rb.reserve(own, "qbo", "qbo_default", n=2, limit=500, headroom=0, window=dt.timedelta(minutes=1),
                   now=at(10, 30))
        now = {b.vendor: b for b in rb.usage(own, now=at(10, 30, 30))}
        later = {b.vendor: b for b in rb.usage(own, now=at(10, 45))}
    assert (now["trackvia"].credential, now["trackvia"].used, now["trackvia"].left) == ("oms_default", 7, 83)
    assert now["trackvia"].resets_at == at(11)
    assert (now["qbo"].used, now["qbo"].left, now["qbo"].resets_at) == (2, 498, at(10, 31))
    assert (later["qbo"].used, later["qbo"].left, later["qbo"].resets_at) == (0, 500, at(10, 46))


def test_reserve_refuses_what_could_never_fit_and_an_open_transaction(db_url, conn):
    with pytest.raises(ValueError, match="never fit"):
        rb.reserve(conn, "itsperfect", "misuse", n=740, limit=750, headroom=15, now=at(10))
    conn.execute("SELECT 1")
    with pytest.raises(ValueError, match="outside a transaction"):
        rb.reserve(conn, "itsperfect", "misuse", limit=750, headroom=15, now=at(10))
    conn.rollback()


def test_a_vendor_window_reopens_only_after_a_margin_for_its_clock(db_url, conn):
    with connect(db_url, autocommit=True) as own:
        rb.reserve(own, "itsperfect", "margin", limit=750, headroom=15, now=at(10, 30))
        rb.reconcile(own, "itsperfect", "margin", remaining=0, resets_at=at(11), now=at(10, 31))
        with pytest.raises(rb.BudgetSpent):          # our clock says 11:00:02; the vendor's may not yet
            rb.reserve(own, "itsperfect", "margin", limit=750, headroom=15, now=at(11, 0, 2))
        reopened = rb.reserve(own, "itsperfect", "margin", limit=750, headroom=15, now=at(11) + rb.VENDOR_CLOCK_MARGIN)
    assert (reopened.used, reopened.window_source) == (1, "clock")


def test_a_vendor_refusal_spends_the_window_for_everyone_until_its_reset_or_a_backoff(db_url, conn):
    with connect(db_url, autocommit=True) as own:
        rb.reserve(own, "itsperfect", "refused", limit=750, headroom=15, now=at(10, 30))
        # the vendor refused at 10:40 with its reset at 11:00 (it counted calls we never made)
        spent = rb.exhaust(own, "itsperfect", "refused", reported_reset=at(11), now=at(10, 40))
        assert (spent.used, spent.left, spent.resets_at) == (750, 0, at(11))
        with pytest.raises(rb.BudgetSpent) as refused:
            rb.reserve(own, "itsperfect", "refused", limit=750, headroom=15, now=at(10, 41))
        assert refused.value.resets_at == at(11)
        # at 11:00:06 our clock opened a new window, but the vendor's lags: it refuses with its old reset moment,
        # which is already past for us; the window is held for the backoff instead of being sent into again
        rb.reserve(own, "itsperfect", "refused", limit=750, headroom=15, now=at(11, 0, 6))
        held = rb.exhaust(own, "itsperfect", "refused", reported_reset=at(11), now=at(11, 0, 7))
        assert held.resets_at == at(11, 1, 7) and held.left == 0
        with pytest.raises(rb.BudgetSpent):
            rb.reserve(own, "itsperfect", "refused", limit=750, headroom=15, now=at(11, 0, 30))
