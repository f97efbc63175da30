"""Vendor request budgets shared by every task of every DAG on every worker (`etl.request_budgets`).

A vendor that counts requests per window (ItsPerfect: 750 an hour, its own server-side calls
included) must never be sent a request past its limit: errors there break the integration. So a
request is reserved before it is sent, under the budget row's lock, in a transaction committed at
once; a refusal (`BudgetSpent`) carries the time the window resets, for the caller to defer until
then. The vendor's own figures (remaining, reset moment) are reconciled in as responses come back,
because the vendor counts calls we never made.

The window is the vendor's once it has reported its reset moment; before that (and after it
ends, until the vendor reports again) it is a guess: the clock's window (the hour) for a new
budget, the vendor's previous window moved on by whole windows afterwards.

`credential` names the credential (a connection id), never the secret itself.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import psycopg
from psycopg import pq

log = logging.getLogger(__name__)

HOUR = dt.timedelta(hours=1)
# A window the vendor reported ends this long after its reset moment by our clock: a vendor whose clock lags
# ours by a few seconds would still refuse a request sent at its reset moment by ours.
VENDOR_CLOCK_MARGIN = dt.timedelta(seconds=5)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_COLUMNS = ("vendor, credential, request_limit, headroom, window_seconds, window_start, resets_at, "
            "window_source, used, reserved, reported_remaining, reported_resets_at, reported_at")

Connectable = psycopg.Connection | Callable[[], psycopg.Connection]


@dataclass(frozen=True)
class Budget:
    """One (vendor, credential) budget in its current window."""

    vendor: str
    credential: str
    limit: int
    headroom: int
    window: dt.timedelta
    window_start: dt.datetime
    resets_at: dt.datetime
    window_source: str            # 'vendor' (reported by it) or 'clock' (our guess)
    used: int                     # counts against the limit: our reservations, or the vendor's count if higher
    reserved: int                 # what we reserved ourselves in this window
    reported_remaining: int | None = None
    reported_resets_at: dt.datetime | None = None
    reported_at: dt.datetime | None = None

    @property
    def allowed(self) -> int:
        """What may be used in a window: the limit less the headroom kept for the unexpected."""
        return self.limit - self.headroom

    @property
    def left(self) -> int:
        return max(0, self.allowed - self.used)


class BudgetSpent(Exception):
    """No room left in the window: defer until `resets_at` (no failure, no retry)."""

    def __init__(self, budget: Budget, requested: int):
        self.vendor, self.credential, self.resets_at = budget.vendor, budget.credential, budget.resets_at
        self.budget, self.requested = budget, requested
        super().__init__(
            f"{budget.vendor} request budget of {budget.credential} is spent: {budget.used} of {budget.allowed} "
            f"allowed (limit {budget.limit}, headroom {budget.headroom}) used in the window ending "
            f"{budget.resets_at.isoformat()}, {requested} more requested; wait until then, nothing to fix"
        )


def reserve(target: Connectable, vendor: str, credential: str, n: int = 1, *, limit: int, headroom: int = 0,
            window: dt.timedelta = HOUR, now: dt.datetime | None = None) -> Budget:
    """Reserve `n` requests before sending them, or raise BudgetSpent with the window's reset time.

    `target`: a connection outside any transaction, or a callable opening one; the reservation is
    committed before this returns so other workers see it. `limit`, `headroom` and `window` are the
    vendor's declaration (the latest one wins); `now` defaults to the database's clock.
    """
    if n < 1 or n > limit - headroom:
        raise ValueError(f"{vendor}/{credential}: {n} requests can never fit in a budget of {limit} "
                         f"with headroom {headroom}; reserve at most {limit - headroom} at once")
    with _transaction(target) as conn:
        start = _aligned(now or _db_now(conn), window, _EPOCH)
        conn.execute(
            "INSERT INTO etl.request_budgets (vendor, credential, request_limit, headroom, window_seconds,"
            " window_start, resets_at) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (vendor, credential, limit, headroom, int(window.total_seconds()), start, start + window),
        )
        locked = _locked(conn, vendor, credential)
        budget = replace(_current(locked, now or _db_now(conn)), limit=limit, headroom=headroom, window=window)
        if budget.used + n > budget.allowed:
            raise BudgetSpent(budget, n)
        budget = replace(budget, used=budget.used + n, reserved=budget.reserved + n)
        _store(conn, budget)
    return budget


def reconcile(target: Connectable, vendor: str, credential: str, *, remaining: int, resets_at: dt.datetime,
              now: dt.datetime | None = None) -> Budget | None:
    """Take in the vendor's count (e.g. X-Request-Limit-Remaining / X-Request-Limit-Date) after a response.

    Within a window `used` only moves up (to the vendor's spend when it counted calls we never made;
    never below our reservations, some of which it may not have seen yet). A report of a later window
    than the vendor's own last one starts afresh; a report of an older or ended window is stale and
    ignored (None). A clock-guessed window is replaced by the vendor's.
    """
    if resets_at.tzinfo is None:
        raise ValueError(f"{vendor}/{credential}: the reset moment {resets_at} has no time zone; parse the "
                         "vendor's header with its offset")
    with _transaction(target) as conn:
        locked = _locked(conn, vendor, credential)
        if locked is None:
            log.warning("%s/%s: the vendor reported its budget, but nothing was reserved from it", vendor, credential)
            return None
        moment = now or _db_now(conn)
        budget = _reconciled(_current(locked, moment), remaining, resets_at, moment)
        if budget is None:
            log.debug("%s/%s: stale budget report ignored (window ending %s)", vendor, credential, resets_at)
            return None
        _store(conn, budget)
    return budget


def exhaust(target: Connectable, vendor: str, credential: str, *, reported_reset: dt.datetime | None,
            backoff: dt.timedelta = dt.timedelta(minutes=1), now: dt.datetime | None = None) -> Budget:
    """The vendor refused a request for its limit (a 429): the window is spent for every worker, whatever our
    count said, until the reset it reported, or for `backoff` when it reported none still ahead of our clock
    (a vendor whose clock lags ours still counts the window our clock thought over). Returns the budget."""
    if reported_reset is not None and reported_reset.tzinfo is None:
        raise ValueError(f"{vendor}/{credential}: the reset moment {reported_reset} has no time zone")
    with _transaction(target) as conn:
        locked = _locked(conn, vendor, credential)
        if locked is None:
            raise ValueError(f"{vendor}/{credential}: no budget to exhaust; reserve() creates it")
        moment = now or _db_now(conn)
        budget = _current(locked, moment)
        until = reported_reset if reported_reset is not None and reported_reset > moment else moment + backoff
        resets_at = max(until, budget.resets_at) if budget.window_source == "vendor" else until
        budget = replace(budget, window_start=min(budget.window_start, resets_at - budget.window),
                         resets_at=resets_at, window_source="vendor", used=max(budget.used, budget.limit))
        _store(conn, budget)
    return budget


def usage(conn: psycopg.Connection, *, now: dt.datetime | None = None) -> list[Budget]:
    """Every budget in its current window (used, left, reset time), for the Integrations page."""
    moment = now or _db_now(conn)
    rows = conn.execute(f"SELECT {_COLUMNS} FROM etl.request_budgets ORDER BY vendor, credential").fetchall()
    return [_current(_budget(row), moment) for row in rows]


def _reconciled(budget: Budget, remaining: int, resets_at: dt.datetime, now: dt.datetime) -> Budget | None:
    """The budget after the vendor's report, or None when the report is stale."""
    vendor_window = budget.window_source == "vendor"
    if resets_at <= now or (vendor_window and resets_at < budget.resets_at):
        return None
    spent = max(0, budget.limit - remaining)
    reported = replace(budget, window_start=resets_at - budget.window, resets_at=resets_at, window_source="vendor",
                       reported_remaining=remaining, reported_resets_at=resets_at, reported_at=now)
    if vendor_window and resets_at > budget.resets_at:
        return replace(reported, used=spent, reserved=0)
    return replace(reported, used=max(budget.used, spent))


def _current(budget: Budget, now: dt.datetime) -> Budget:
    """The budget in the window holding `now`: a new guessed window once its window ended (a vendor's window
    VENDOR_CLOCK_MARGIN after its reset moment)."""
    if now < budget.resets_at + (VENDOR_CLOCK_MARGIN if budget.window_source == "vendor" else dt.timedelta(0)):
        return budget
    start = _aligned(now, budget.window, budget.resets_at)
    return replace(budget, window_start=start, resets_at=start + budget.window, window_source="clock",
                   used=0, reserved=0, reported_remaining=None, reported_resets_at=None, reported_at=None)


def _aligned(now: dt.datetime, window: dt.timedelta, anchor: dt.datetime) -> dt.datetime:
    """The start of the window holding `now` on the grid of windows starting at `anchor`."""
    return anchor + ((now - anchor) // window) * window


@contextlib.contextmanager
def _transaction(target: Connectable) -> Iterator[psycopg.Connection]:
    """A transaction committed on exit, so a reservation is visible before its request leaves."""
    if not isinstance(target, psycopg.Connection):
        with target() as conn, conn.transaction():
            yield conn
        return
    if target.info.transaction_status != pq.TransactionStatus.IDLE:
        raise ValueError("request budgets need a connection outside a transaction: a reservation must commit "
                         "before the request is sent, and must not hold the budget's lock meanwhile")
    with target.transaction():
        yield target


def _db_now(conn: psycopg.Connection) -> dt.datetime:
    """The database's clock: one clock for every worker."""
    return conn.execute("SELECT clock_timestamp()").fetchone()[0]


def _locked(conn: psycopg.Connection, vendor: str, credential: str) -> Budget | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM etl.request_budgets WHERE vendor = %s AND credential = %s "
                       "FOR UPDATE", (vendor, credential)).fetchone()
    return None if row is None else _budget(row)


def _budget(row: tuple) -> Budget:
    vendor, credential, limit, headroom, seconds, *rest = row
    return Budget(vendor, credential, limit, headroom, dt.timedelta(seconds=seconds), *rest)


def _store(conn: psycopg.Connection, budget: Budget) -> None:
    conn.execute(
        "UPDATE etl.request_budgets SET request_limit = %s, headroom = %s, window_seconds = %s, window_start = %s,"
        " resets_at = %s, window_source = %s, used = %s, reserved = %s, reported_remaining = %s,"
        " reported_resets_at = %s, reported_at = %s, updated_at = now() WHERE vendor = %s AND credential = %s",
        (budget.limit, budget.headroom, int(budget.window.total_seconds()), budget.window_start, budget.resets_at,
         budget.window_source, budget.used, budget.reserved, budget.reported_remaining, budget.reported_resets_at,
         budget.reported_at, budget.vendor, budget.credential),
    )
