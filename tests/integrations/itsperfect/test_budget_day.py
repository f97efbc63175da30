"""Issue 11's budget acceptance: eight stock-pull and order-export tasks at once on one tenant, over a simulated
day on the sandbox's clock, never past the tenant's 750 requests an hour (its own server-side calls included),
no task failing, all the work done across the hours, and the hours with work queued used to the budget.

Each task runs the real procedure (integrations.itsperfect.stock / orders) in a thread of its own with its
own hook and database connection, as a worker would; when its budget is spent it waits as the deferred
operator does (operators.budgeted, tested with the triggerer in test_dags.py), here until the simulated clock
reaches the reset, which the test moves once every task is waiting. The budget follows the sandbox's clock
(the hook's `clock=`), so a simulated hour is a real few seconds.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import threading

import pytest

from etl import db
from etl.request_budget import VENDOR_CLOCK_MARGIN, BudgetSpent
from hooks.itsperfect import ItsPerfectHook
from integrations.itsperfect import orders, stock
from sandbox import itsperfect as itsp
from tests.integrations.itsperfect.seeding import Shop

UTC = dt.timezone.utc
DAY_START = dt.datetime(2026, 6, 1, tzinfo=UTC)
SERVER_CALLS_PER_HOUR = 60
HEADROOM = 80                     # at least the tenant's own calls in an hour: docs/integrations/itsperfect.md
CONNECTORS = ("itsperfect_north", "itsperfect_south", "itsperfect_east", "itsperfect_west")
ORDERS_PER_ACCOUNT = 400
PAGE_SIZE = 2                     # the sandbox's page cap, small so the stock costs hours of requests
BIG_WAREHOUSE, BIG_BARCODES = 900, 8_000


class SimulatedClock:
    """The sandbox's clock, read without a request: real time plus the offset the sandbox reports."""

    def __init__(self, sandbox):
        self.sandbox = sandbox
        self.offset = 0.0
        self.read()

    def read(self) -> None:
        self.offset = self.sandbox.state("itsperfect")["settings"]["clock_offset"]

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(UTC) + dt.timedelta(seconds=self.offset)

    def advance_past(self, moment: dt.datetime) -> None:
        """To the moment the budget reopens after the reset `moment`, as the deferred operator waits."""
        wait = moment + VENDOR_CLOCK_MARGIN - self()
        self.sandbox.control("itsperfect", advance_clock_seconds=wait.total_seconds() + 1)
        self.read()


class Day:
    """Tasks that wait for the clock when their budget is spent; the clock moves once all of them wait."""

    def __init__(self, clock: SimulatedClock, tasks: int):
        self.clock, self.pending = clock, tasks
        self.waiting: dict[str, dt.datetime] = {}
        self.failures: dict[str, BaseException] = {}
        self.deferrals = 0
        self.changed = threading.Condition()

    def run(self, name: str, work) -> None:
        try:
            while True:
                try:
                    work()
                    return
                except BudgetSpent as spent:
                    self._wait(name, spent.resets_at)
        except BaseException as exc:   # noqa: BLE001 - every failure is the test's to report
            self.failures[name] = exc
        finally:
            with self.changed:
                self.pending -= 1
                self.changed.notify_all()

    def _wait(self, name: str, resets_at: dt.datetime) -> None:
        with self.changed:
            self.waiting[name] = resets_at
            self.deferrals += 1
            self.changed.notify_all()
            while name in self.waiting:
                self.changed.wait()

    def drive(self, timeout_seconds: float) -> None:
        """Move the clock past the reset each time every unfinished task is waiting for it."""
        deadline = dt.datetime.now(UTC) + dt.timedelta(seconds=timeout_seconds)
        with self.changed:
            while self.pending:
                if self.pending == len(self.waiting):
                    self.clock.advance_past(max(self.waiting.values()))
                    self.waiting.clear()
                    self.changed.notify_all()
                assert dt.datetime.now(UTC) < deadline, "the simulated day did not end in time"
                self.changed.wait(timeout=1)


@pytest.fixture
def tenant(sandbox, conn, db_url, monkeypatch):
    shop = Shop(conn, sandbox)
    shop.control(set_clock=DAY_START.isoformat(), server_calls_per_hour=SERVER_CALLS_PER_HOUR, max_limit=PAGE_SIZE,
                 generate_warehouse={"id": BIG_WAREHOUSE, "barcodes": BIG_BARCODES})
    conn.execute("TRUNCATE etl.request_budgets")
    conn.commit()
    for conn_id in CONNECTORS:        # four connectors of one tenant: one budget between them
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(
            itsp.airflow_connection(sandbox.url, budget_headroom=HEADROOM, active=True, get_stock=True,
                                    create_orders=True)))
    shop.catalogue()
    for n, conn_id in enumerate(CONNECTORS):
        shop.connector(conn_id, warehouses=(1, 2, 3, BIG_WAREHOUSE))
        shop.account(f"acct-{n}", connector=conn_id, warehouse_id=1, orders=ORDERS_PER_ACCOUNT)
        shop.location(f"loc-{n}", account=f"acct-{n}", connector=conn_id,
                      warehouse_id=BIG_WAREHOUSE if n % 2 else 1 + n // 2)
    conn.commit()
    return shop


def test_eight_tasks_over_a_simulated_day_stay_within_the_hourly_limit_and_use_it(tenant, sandbox, db_url):
    clock = SimulatedClock(sandbox)
    day = Day(clock, tasks=2 * len(CONNECTORS))

    def stock_task(conn_id: str):
        def work():
            with db.connect(db_url) as conn:
                stock.pull_stock(conn, ItsPerfectHook(conn_id, conninfo=db_url, clock=clock), conn_id, run_id="day")
        return work

    def export_task(account: str, conn_id: str):
        def work():
            with db.connect(db_url) as conn:
                orders.export_orders(conn, ItsPerfectHook(conn_id, conninfo=db_url, clock=clock), account,
                                     run_id="day")
        return work

    works = {f"stock {c}": stock_task(c) for c in CONNECTORS}
    works |= {f"orders acct-{n}": export_task(f"acct-{n}", c) for n, c in enumerate(CONNECTORS)}
    threads = [threading.Thread(target=day.run, args=(name, work), name=name) for name, work in works.items()]
    for thread in threads:
        thread.start()
    day.drive(timeout_seconds=600)
    for thread in threads:
        thread.join()

    assert day.failures == {}
    hours = sandbox.state("itsperfect")["hours"]
    worked = [h for h in hours if h["client"]]
    print("\nhour                       ours  server  total  refused")
    for h in worked:
        print(f"{h['start']}  {h['client']:5d}  {h['server']:6d}  {h['total']:5d}  {h['refused']:7d}")
    assert all(h["total"] <= itsp.HOURLY_LIMIT for h in hours), hours
    assert sum(h["refused"] for h in hours) == 0                   # never sent past the limit
    assert len(worked) >= 3 and day.deferrals >= 8                  # the work did span hours
    allowed = itsp.HOURLY_LIMIT - HEADROOM
    use = [h["client"] / allowed for h in worked[:-1]]              # the last hour: the work ran out
    print("budget use of the hours with work queued:", ", ".join(f"{u:.1%}" for u in use))
    assert min(use) >= 0.95

    # All the work done: every location holds its warehouse's stock, every order sent once.
    assert tenant.location_quantities() == tenant.expected_quantities()
    sent = sandbox.state("itsperfect")["orders"]
    assert len(sent) == len({o["reference"] for o in sent}) == ORDERS_PER_ACCOUNT * len(CONNECTORS)
    pages = sum(math.ceil(tenant.items_held(w) / PAGE_SIZE) for _, w in tenant.pulled_warehouses())
    assert sum(h["client"] for h in hours) >= pages + len(sent)
