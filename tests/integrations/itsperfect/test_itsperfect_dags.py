"""itsperfect_stock and itsperfect_orders run for real with dag.test() against the sandbox: what the switches
choose, the rows in PostgreSQL, the calls the sandbox received, a rerun that changes nothing, and a task whose
request budget runs out deferred to the triggerer and resumed after the reset, without a failure or a retry."""
from __future__ import annotations

import json
import time

import pytest

from sandbox import itsperfect as itsp
from tests.integrations.itsperfect.seeding import Shop
from tests.task_logs import task_log

CONNECTOR = "itsperfect_default"


def connection(monkeypatch, sandbox, conn_id: str = CONNECTOR, **extra) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(
        itsp.airflow_connection(sandbox.url, **extra)))


def run(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag().get_dag(dag_id).test()


def tasks(dag_run) -> list[tuple[str, int, str, int]]:
    return sorted((ti.task_id, ti.map_index, str(ti.state), ti.try_number) for ti in dag_run.get_task_instances())


@pytest.fixture
def shop(airflow_db, conn, sandbox):
    conn.execute("TRUNCATE etl.request_budgets, etl.watermarks, etl.run_ledger, commerce.products, "
                 "commerce.accounts, itsperfect.connectors CASCADE")
    shop = Shop(conn, sandbox)
    shop.catalogue()
    shop.connector(CONNECTOR, warehouses=(1, 2, 3, 4))
    shop.account("brand", connector=CONNECTOR, warehouse_id=1, orders=3)
    shop.location("store-ams", account="brand", connector=CONNECTOR, warehouse_id=1)
    shop.location("store-utr", account="brand", connector=CONNECTOR, warehouse_id=3)
    conn.commit()
    return shop


def test_stock_and_orders_follow_the_switches_load_once_and_a_rerun_changes_nothing(shop, sandbox, monkeypatch,
                                                                                   conn):
    connection(monkeypatch, sandbox, active=True, get_stock=True, create_orders=False)
    stock_run = run("itsperfect_stock")
    assert tasks(stock_run) == [("connectors", -1, "success", 1), ("pull_stock", 0, "success", 1)]
    assert shop.location_quantities() == shop.expected_quantities() != {}
    orders_run = run("itsperfect_orders")                    # create_orders is off: no account is chosen
    assert tasks(orders_run) == [("accounts", -1, "success", 1), ("export_orders", -1, "skipped", 0)]
    assert sandbox.state("itsperfect")["orders_received"] == 0

    connection(monkeypatch, sandbox, active=True, get_stock=True, create_orders=True)
    run("itsperfect_orders")
    assert sandbox.state("itsperfect")["orders_received"] == 3
    calls = len(sandbox.requests("itsperfect"))
    rerun = run("itsperfect_stock")
    run("itsperfect_orders")
    assert rerun.state == "success" and sandbox.state("itsperfect")["orders_received"] == 3
    assert [r["path"] for r in sandbox.requests("itsperfect")[calls:] if r["method"] == "POST"] == []
    inserted, updated = conn.execute("SELECT rows_inserted, rows_updated FROM etl.run_ledger WHERE pipeline = "
                                     "'itsperfect_stock' ORDER BY id DESC LIMIT 1").fetchone()
    assert (inserted, updated) == (0, 0)

    connection(monkeypatch, sandbox, active=False, get_stock=True, create_orders=True)
    calls = len(sandbox.requests("itsperfect"))
    assert tasks(run("itsperfect_stock"))[0] == ("connectors", -1, "success", 1)
    assert len(sandbox.requests("itsperfect")) == calls      # switched off: not a single call


def test_a_spent_budget_defers_the_task_until_the_reset_and_it_resumes_without_a_retry(shop, sandbox, monkeypatch):
    # A window of 8 s and 10 requests allowed in it (limit 12, 2 kept back): warehouse 1's stock in pages of
    # 5 items (10 pages) and warehouse 3's cannot fit in one window.
    shop.control(window_seconds=8, hourly_limit=12, server_calls_per_hour=0, max_limit=5)
    connection(monkeypatch, sandbox, active=True, get_stock=True, hourly_limit=12, budget_headroom=2)
    started = time.monotonic()

    with task_log() as events:
        dag_run = run("itsperfect_stock")

    assert tasks(dag_run) == [("connectors", -1, "success", 1), ("pull_stock", 0, "success", 1)]
    deferrals = [text for level, text in events if "Deferred until" in text]
    assert deferrals and "request budget" in deferrals[0] and "no retry is spent" in deferrals[0]
    assert any("the request budget has reset; resuming" in text for _, text in events)
    assert time.monotonic() - started >= 5                    # it waited for the triggerer, not a retry
    state = sandbox.state("itsperfect")
    assert sum(h["refused"] for h in state["hours"]) == 0      # nothing was ever sent past the limit
    assert all(h["total"] <= 12 for h in state["hours"])
    assert shop.location_quantities() == shop.expected_quantities()


def test_a_task_resumed_after_its_switch_was_turned_off_does_nothing(shop, sandbox, monkeypatch):
    from airflow.sdk.exceptions import AirflowSkipException

    from integrations.itsperfect import tasks

    connection(monkeypatch, sandbox, active=True, get_stock=False, create_orders=False)
    with pytest.raises(AirflowSkipException, match="get_stock"):
        tasks.pull_stock(CONNECTOR, {"run_id": "resumed"})
    with pytest.raises(AirflowSkipException, match="create_orders"):
        tasks.export_account("brand", {"run_id": "resumed"})
    assert sandbox.requests("itsperfect") == []
