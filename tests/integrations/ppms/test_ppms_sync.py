"""The PPMS sync against the sandbox's PPMS on a real PostgreSQL: the tables equal the sandbox's data, a rerun
fetches no line and changes nothing, an upstream change costs exactly its own fetches, a run failing halfway
writes nothing and the next one completes, a quantity-only change waits for a full refresh, an order PPMS
lists without lines keeps its lines and is fetched again, the ledger's counts add up, and the DAG runs for
real."""
from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
import uuid
from decimal import Decimal

import pytest

from hooks.pumapi import PumapiHook
from integrations.ppms import sync
from sandbox import ppms as ppms_sandbox

SCOPE = "ppms_default"
TABLES = {"orders": "order_ref", "order_lines": "order_ref, line_id", "invoices": "invoice_id",
          "invoice_accounts": "invoice_id, position", "invoice_details": "invoice_id, position"}


@pytest.fixture
def ppms(ppms_connection, sandbox, conn):
    conn.execute("TRUNCATE ppms.orders, ppms.invoices, etl.run_ledger CASCADE")
    conn.commit()
    return sandbox


def run(conn, *, full: bool = False) -> sync.SyncReport:
    conn.rollback()         # end the test's own reads: the sync runs in a transaction of its own
    return sync.sync(conn, PumapiHook(SCOPE), SCOPE, f"test-{uuid.uuid4().hex[:8]}", full=full)


def snapshot(conn) -> dict[str, list[tuple]]:
    return {table: conn.execute(f"SELECT * FROM ppms.{table} ORDER BY scope, {key}").fetchall()
            for table, key in TABLES.items()}


def calls(sandbox) -> dict[str, int]:
    return dict(sandbox.state("ppms")["calls"])


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {action: n - before.get(action, 0) for action, n in after.items() if n != before.get(action, 0)}


def day(text: str) -> dt.date | None:
    return dt.date.fromisoformat(text.replace("/", "-")) if text else None


def summary(order: dict) -> tuple:
    return (order["user"], order["group"], order["projectref"], day(order["quoted"]), day(order["ordered"]),
            day(order["completed"]), order["status"], order["invoiced"])


def held_orders(conn) -> dict[int, tuple]:
    rows = conn.execute("SELECT order_ref, user_login, group_login, project_ref, quoted_date, ordered_date, "
                        "completed_date, status, invoiced FROM ppms.orders WHERE scope = %s", (SCOPE,))
    return {ref: tuple(rest) for ref, *rest in rows}


def held_lines(conn) -> list[tuple]:
    return conn.execute("SELECT order_ref, line_id, service_id, quantity, user_login, group_login, project_ref, "
                        "quoted_date, ordered_date, completed_date, status, invoiced FROM ppms.order_lines "
                        "WHERE scope = %s ORDER BY order_ref, line_id", (SCOPE,)).fetchall()


def expected_lines(state: dict) -> list[tuple]:
    return sorted((o["orderref"], line["orderid"], line["serviceid"], Decimal(line["quantity"]), *summary(o))
                  for o in state["orders"] for line in o["lines"])


def assert_tables_equal_the_sandbox(conn, state: dict) -> None:
    assert held_orders(conn) == {o["orderref"]: summary(o) for o in state["orders"]}
    assert held_lines(conn) == expected_lines(state)
    accounts = {}
    for invoice_id, account, amount in conn.execute(
            "SELECT invoice_id, account_number, amount FROM ppms.invoice_accounts WHERE scope = %s "
            "ORDER BY invoice_id, position", (SCOPE,)):
        accounts.setdefault(invoice_id, []).append([account, str(amount)])
    assert accounts == {i["invoiceid"]: i["charges"] for i in state["invoices"]}
    details = {invoice_id: (rows, total) for invoice_id, rows, total in conn.execute(
        "SELECT invoice_id, count(*), sum(final_amount) FROM ppms.invoice_details WHERE scope = %s GROUP BY 1",
        (SCOPE,))}
    assert details == {i["invoiceid"]: (i["detail_rows"], sum(Decimal(a) for _, a in i["charges"]))
                       for i in state["invoices"]}


def test_a_first_run_makes_the_tables_equal_the_sandbox_and_counts_its_calls(ppms, conn):
    before = ppms.state("ppms")
    counts = before["counts"]

    report = run(conn)

    state = ppms.state("ppms")
    assert_tables_equal_the_sandbox(conn, state)
    assert report.calls == delta(state["calls"], before["calls"]) == {
        "getorders": 1, "getinvoicelist": 1, "getorderlines": counts["orders"], "getinvoice": counts["invoices"],
        "getinvoicedetails": counts["invoices"]}
    assert (report.orders_listed, report.orders_new, report.orders_changed, report.orders_unchanged) == (
        counts["orders"], counts["orders"], 0, 0)
    assert report.lines_fetched == counts["orders"] and report.lines["inserted"] == counts["lines"]
    assert report.invoices_new == report.invoices_listed == counts["invoices"]
    # every detail column typed: a service line of an invoiced order, a session with its durations and time
    service = conn.execute("SELECT d.reference, d.date, d.final_amount FROM ppms.invoice_details d "
                           "WHERE d.session_type = 'Service' LIMIT 1").fetchone()
    assert service[0].isdigit() and isinstance(service[1], dt.date) and isinstance(service[2], Decimal)
    session = conn.execute("SELECT start_time, duration_booked, cancelled FROM ppms.invoice_details "
                           "WHERE session_type = 'Autonomous' LIMIT 1").fetchone()
    assert isinstance(session[0], dt.time) and session[1] > 0 and session[2] is False
    ledger = conn.execute("SELECT pipeline, scope, status, rows_read, rows_inserted, rows_updated "
                          "FROM etl.run_ledger").fetchall()
    assert len(ledger) == 1 and ledger[0][:3] == ("ppms_sync", SCOPE, "success")
    assert ledger[0][4] >= counts["orders"] + counts["lines"] + counts["invoices"] and ledger[0][5] == 0
    assert ledger[0][3] > counts["orders"] + counts["lines"]


def test_a_second_run_fetches_no_line_and_changes_nothing(ppms, conn):
    run(conn)
    tables, before = snapshot(conn), calls(ppms)

    report = run(conn)

    assert delta(calls(ppms), before) == report.calls == {"getorders": 1, "getinvoicelist": 1}
    assert report.changes == 0 and report.lines_fetched == 0 and report.orders_new == report.orders_changed == 0
    assert report.orders_unchanged == report.orders_listed and report.invoices_new == 0
    assert snapshot(conn) == tables
    assert [r[0] for r in conn.execute("SELECT status FROM etl.run_ledger ORDER BY id")] == ["success", "success"]
    assert conn.execute("SELECT rows_inserted, rows_updated FROM etl.run_ledger ORDER BY id DESC LIMIT 1"
                        ).fetchone() == (0, 0)


def test_upstream_changes_cost_exactly_their_own_fetches(ppms, conn):
    run(conn)
    state = ppms.state("ppms")
    target = next(o for o in state["orders"] if o["status"] == "Ordered")
    first_seen, fetched_before = conn.execute(
        "SELECT first_seen_at, lines_fetched_at FROM ppms.orders WHERE order_ref = %s", (target["orderref"],)
    ).fetchone()

    # one order completed at PPMS: its lines, and only its lines, are fetched again
    ppms.control("ppms", update_orders=[{"orderref": target["orderref"], "status": "Completed"}])
    before = calls(ppms)
    report = run(conn)
    assert delta(calls(ppms), before) == {"getorders": 1, "getinvoicelist": 1, "getorderlines": 1}
    assert (report.orders_changed, report.orders_new, report.lines_fetched) == (1, 0, 1)
    refetched = conn.execute("SELECT order_ref, status, completed_date IS NOT NULL, first_seen_at FROM ppms.orders "
                             "WHERE lines_fetched_at > %s", (fetched_before,)).fetchall()
    assert refetched == [(target["orderref"], "Completed", True, first_seen)]
    assert_tables_equal_the_sandbox(conn, ppms.state("ppms"))

    # a new order entered at PPMS: its lines are fetched
    ppms.control("ppms", add_orders=[{"login": target["user"], "status": "Ordered",
                                      "lines": [{"serviceid": 102, "quantity": 3}, {"serviceid": 105, "quantity": 1}]}])
    before = calls(ppms)
    report = run(conn)
    assert delta(calls(ppms), before) == {"getorders": 1, "getinvoicelist": 1, "getorderlines": 1}
    assert (report.orders_new, report.orders_changed, report.lines["inserted"]) == (1, 0, 2)
    assert_tables_equal_the_sandbox(conn, ppms.state("ppms"))

    # a new invoice (of the order completed above, which is now invoiced): fetched once, and the order again
    ppms.control("ppms", add_invoices=[{"orderrefs": [target["orderref"]]}])
    before = calls(ppms)
    report = run(conn)
    assert delta(calls(ppms), before) == {"getorders": 1, "getinvoicelist": 1, "getorderlines": 1, "getinvoice": 1,
                                          "getinvoicedetails": 1}
    assert report.invoices_new == 1 and report.orders_changed == 1
    assert_tables_equal_the_sandbox(conn, ppms.state("ppms"))
    before = calls(ppms)
    assert run(conn).changes == 0 and delta(calls(ppms), before) == {"getorders": 1, "getinvoicelist": 1}


def test_a_quantity_changed_upstream_waits_for_a_full_refresh(ppms, conn):
    run(conn)
    order = ppms.state("ppms")["orders"][0]
    line = order["lines"][0]
    ppms.control("ppms", update_lines=[{"orderref": order["orderref"], "orderid": line["orderid"], "quantity": 42}])

    assert run(conn).changes == 0        # getorders' summary row did not change: the sync cannot see it
    stale = "SELECT quantity FROM ppms.order_lines WHERE order_ref = %s AND line_id = %s"
    assert conn.execute(stale, (order["orderref"], line["orderid"])).fetchone()[0] == Decimal(line["quantity"])

    before = calls(ppms)
    report = run(conn, full=True)
    state = ppms.state("ppms")
    assert delta(state["calls"], before)["getorderlines"] == len(state["orders"]) == report.lines_fetched
    assert report.lines["updated"] == 1 and report.orders_changed == 0 and report.orders_new == 0
    assert conn.execute(stale, (order["orderref"], line["orderid"])).fetchone()[0] == Decimal(42)
    assert_tables_equal_the_sandbox(conn, state)


def ledger_counts(conn) -> dict[str, int]:
    row = conn.execute("SELECT rows_read, rows_inserted, rows_updated, rows_unchanged FROM etl.run_ledger "
                       "ORDER BY id DESC LIMIT 1").fetchone()
    return dict(zip(("read", "inserted", "updated", "unchanged"), row, strict=True))


def test_the_ledger_counts_add_up_and_a_full_run_of_nothing_changed_updates_nothing(ppms, conn):
    """Every row read is inserted, updated or unchanged, once: a full refresh refetches every order's lines but
    an order whose summary did not change is unchanged, not updated."""
    run(conn)
    first = ledger_counts(conn)
    assert first["read"] == first["inserted"] + first["updated"] + first["unchanged"]
    assert first["updated"] == 0

    report = run(conn, full=True)

    counts = ledger_counts(conn)
    assert report.lines_fetched == report.orders_listed == report.orders_unchanged
    assert report.changes == 0 and report.lines["unchanged"] == report.lines["staged"] > 0
    assert counts["updated"] == counts["inserted"] == 0
    assert counts["read"] == counts["inserted"] + counts["updated"] + counts["unchanged"] == counts["unchanged"]
    assert counts["read"] >= report.orders_listed + report.lines["staged"]


def test_an_order_listed_without_lines_keeps_its_lines_and_is_fetched_again(ppms, conn, caplog):
    """A PPMS order always has a line: getorderlines answering nothing for an order getorders lists is a read
    that failed, not an order emptied. Its lines and fingerprint stay as they were (a new order is held without
    a fingerprint), the run says so, and the next run fetches the order again."""
    run(conn)
    state = ppms.state("ppms")
    changed = next(o for o in state["orders"] if o["status"] == "Ordered")
    fingerprint = "SELECT fingerprint, lines_fetched_at FROM ppms.orders WHERE order_ref = %s"
    held_before = conn.execute(fingerprint, (changed["orderref"],)).fetchone()
    lines_before = [line for line in held_lines(conn) if line[0] == changed["orderref"]]
    assert lines_before
    ppms.control("ppms", update_orders=[{"orderref": changed["orderref"], "status": "Completed"}],
                 add_orders=[{"login": changed["user"], "status": "Ordered", "lines": [{"serviceid": 103,
                                                                                         "quantity": 2}]}])
    new = ppms.state("ppms")["orders"][-1]["orderref"]
    ppms.control("ppms", empty_lines_for=[changed["orderref"], new])

    with caplog.at_level(logging.WARNING, logger=sync.log.name):
        report = run(conn)

    assert (report.orders_changed, report.orders_new, report.lines_fetched) == (1, 1, 2)
    assert report.orders_lines_unread == 2 and report.lines_deleted == 0
    assert [line for line in held_lines(conn) if line[0] == changed["orderref"]] == lines_before
    assert conn.execute(fingerprint, (changed["orderref"],)).fetchone() == held_before
    assert held_orders(conn)[changed["orderref"]][6] == "Completed"      # the summary row is as listed
    assert held_orders(conn)[new][6] == "Ordered" and [line for line in held_lines(conn) if line[0] == new] == []
    assert conn.execute(fingerprint, (new,)).fetchone()[1] is None
    for ref in (changed["orderref"], new):
        assert f"getorderlines answered no line for order {ref}" in caplog.text
    assert conn.execute("SELECT status FROM etl.run_ledger ORDER BY id DESC LIMIT 1").fetchone() == ("success",)

    # PPMS answers again: the next run fetches both orders' lines, and the one after fetches nothing
    ppms.control("ppms", empty_lines_for=[])
    before = calls(ppms)
    report = run(conn)
    assert delta(calls(ppms), before) == {"getorders": 1, "getinvoicelist": 1, "getorderlines": 2}
    assert report.orders_lines_unread == 0 and report.lines_fetched == 2
    assert_tables_equal_the_sandbox(conn, ppms.state("ppms"))
    before = calls(ppms)
    assert run(conn).changes == 0 and delta(calls(ppms), before) == {"getorders": 1, "getinvoicelist": 1}


def test_a_run_failing_halfway_writes_nothing_and_the_next_one_completes(ppms, conn, db_url):
    """PPMS starts answering 503 while the lines are being fetched, through every retry: the orders already
    upserted and the lines already copied roll back with the run, whose ledger row is failed."""
    ppms.faults("ppms", latency_ms=40)
    failure: list[BaseException] = []

    def first_run():
        from etl.db import connect

        with connect(db_url) as own:
            try:
                run(own)
            except Exception as exc:       # noqa: BLE001 - the test reads it below
                failure.append(exc)

    worker = threading.Thread(target=first_run)
    worker.start()
    deadline = time.monotonic() + 20
    while calls(ppms).get("getorderlines", 0) < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    ppms.faults("ppms", burst_5xx=100_000)
    worker.join(timeout=60)
    ppms.faults("ppms")
    assert not worker.is_alive()

    assert len(failure) == 1 and "503" in str(failure[0]) and "Stratocore PPMS" in str(failure[0])
    assert all(rows == [] for rows in snapshot(conn).values())
    status, error = conn.execute("SELECT status, error FROM etl.run_ledger").fetchone()
    assert status == "failed" and "503" in error and ppms_sandbox.API_KEY not in error

    report = run(conn)
    assert report.orders_new == report.orders_listed
    assert_tables_equal_the_sandbox(conn, ppms.state("ppms"))
    assert [r[0] for r in conn.execute("SELECT status FROM etl.run_ledger ORDER BY id")] == ["failed", "success"]


def test_a_wrong_key_fails_the_run_before_anything_is_written(ppms, conn, monkeypatch):
    from hooks.pumapi import PumapiRefused

    monkeypatch.setenv("AIRFLOW_CONN_PPMS_DEFAULT",
                       json.dumps(ppms_sandbox.airflow_connection(ppms.url, key="wrong-ppms-key-7f1e")))
    with pytest.raises(PumapiRefused, match="getorders: error: request not authorized"):
        run(conn)
    assert all(rows == [] for rows in snapshot(conn).values())
    assert conn.execute("SELECT status FROM etl.run_ledger").fetchone() == ("failed",)


def test_the_dag_runs_for_real_and_a_full_run_is_a_param(ppms, conn, airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag().get_dag("ppms_sync")
    dag_run = dag.test()
    assert dag_run.state == "success"
    assert [(ti.task_id, str(ti.state)) for ti in dag_run.get_task_instances()] == [("sync", "success")]
    assert_tables_equal_the_sandbox(conn, ppms.state("ppms"))

    order = ppms.state("ppms")["orders"][-1]
    ppms.control("ppms", update_lines=[{"orderref": order["orderref"], "orderid": order["lines"][0]["orderid"],
                                        "quantity": 7}])
    before = calls(ppms)
    assert dag.test(run_conf={"full": True}).state == "success"
    state = ppms.state("ppms")
    assert delta(state["calls"], before)["getorderlines"] == len(state["orders"])
    assert_tables_equal_the_sandbox(conn, state)
    assert [r[0] for r in conn.execute("SELECT mode FROM etl.run_ledger ORDER BY id")] == ["incremental", "backfill"]


def quarantine(conn) -> list[tuple]:
    return conn.execute("SELECT q.record_key, q.reason, q.payload FROM etl.quarantine q "
                        "WHERE q.pipeline = 'ppms_sync' ORDER BY q.id").fetchall()


def test_a_malformed_order_is_quarantined_the_rest_loads_and_the_next_run_loads_it(ppms, conn):
    """getorders lists a new order twice with different values and a changed order's line holds a date PPMS
    cannot have: both orders are quarantined (the held one keeps its rows), an order listed twice identically
    is one order, every other order loads and the run succeeds; once PPMS answers right, the next run loads
    both."""
    run(conn)
    state = ppms.state("ppms")
    held = next(o for o in state["orders"] if o["status"] == "Ordered")
    twin = next(o for o in state["orders"] if o["orderref"] != held["orderref"])
    row = "SELECT * FROM ppms.orders WHERE order_ref = %s"
    held_row = conn.execute(row, (held["orderref"],)).fetchone()
    held_lines_before = [line for line in held_lines(conn) if line[0] == held["orderref"]]
    ppms.control("ppms", update_orders=[{"orderref": held["orderref"], "status": "Completed"}],
                 add_orders=[{"login": held["user"], "status": "Ordered", "lines": [{"serviceid": 102,
                                                                                      "quantity": 1}]}])
    new = ppms.state("ppms")["orders"][-1]["orderref"]
    ppms.control("ppms", corrupt=[
        {"orderref": held["orderref"], "orderid": held["lines"][0]["orderid"], "column": "Completed date",
         "value": "31/02/2026"},
        {"orderref": new, "duplicate": True, "column": "Status", "value": "Cancelled"},
        {"orderref": twin["orderref"], "duplicate": True}])

    report = run(conn)

    assert report.quarantined == {"orders": 2, "invoices": 0} and report.orders_duplicates == 1
    assert (report.orders_new, report.orders_changed, report.lines_fetched) == (0, 0, 1)
    assert report.orders_listed == len(ppms.state("ppms")["orders"])
    assert conn.execute(row, (held["orderref"],)).fetchone() == held_row
    assert [line for line in held_lines(conn) if line[0] == held["orderref"]] == held_lines_before
    assert new not in held_orders(conn)
    others = {o["orderref"]: summary(o) for o in ppms.state("ppms")["orders"]
              if o["orderref"] not in (held["orderref"], new)}
    assert {ref: s for ref, s in held_orders(conn).items() if ref != held["orderref"]} == others
    (dup_key, dup_reason, dup_payload), (line_key, line_reason, line_payload) = quarantine(conn)
    assert line_key == f"order {held['orderref']}" and f"getorderlines of order {held['orderref']}" in line_reason
    assert "'Completed date' holds '31/02/2026'" in line_reason
    assert line_payload["order"]["Status"] == "Completed" and len(line_payload["lines"]) == len(held["lines"])
    assert dup_key == f"order {new}" and f"getorders listed order {new} 2 times" in dup_reason
    assert "'Status'" in dup_reason and [r["Status"] for r in dup_payload["rows"]] == ["Ordered", "Cancelled"]
    assert conn.execute("SELECT status, rows_quarantined FROM etl.run_ledger ORDER BY id DESC LIMIT 1"
                        ).fetchone() == ("success", 2)
    counts = conn.execute("SELECT rows_read, rows_inserted + rows_updated + rows_unchanged + rows_quarantined "
                          "FROM etl.run_ledger ORDER BY id DESC LIMIT 1").fetchone()
    assert counts[0] == counts[1]

    # PPMS answers right again: the next run loads both orders, the one after changes nothing
    ppms.control("ppms", corrupt=[])
    before = calls(ppms)
    report = run(conn)
    assert delta(calls(ppms), before) == {"getorders": 1, "getinvoicelist": 1, "getorderlines": 2}
    assert (report.orders_new, report.orders_changed, report.quarantined["orders"]) == (1, 1, 0)
    assert_tables_equal_the_sandbox(conn, ppms.state("ppms"))
    assert run(conn).changes == 0


def test_an_invoice_answering_nothing_is_quarantined_and_fetched_by_a_later_run(ppms, conn):
    state = ppms.state("ppms")
    missing = state["invoices"][3]["invoiceid"]
    ppms.control("ppms", corrupt=[{"invoiceid": missing}])

    report = run(conn)

    assert report.quarantined == {"orders": 0, "invoices": 1}
    assert report.invoices_new == report.invoices_listed - 1 == len(state["invoices"]) - 1
    held = {row[0] for row in conn.execute("SELECT invoice_id FROM ppms.invoices")}
    assert held == {i["invoiceid"] for i in state["invoices"]} - {missing}
    [(key, reason, payload)] = quarantine(conn)
    assert key == f"invoice {missing}" and f"for invoice {missing}, which getinvoicelist lists" in reason
    assert payload == {"accounts": [], "details": []}
    assert held_orders(conn) == {o["orderref"]: summary(o) for o in state["orders"]}
    assert conn.execute("SELECT status, rows_quarantined FROM etl.run_ledger").fetchone() == ("success", 1)

    ppms.control("ppms", corrupt=[])
    before = calls(ppms)
    report = run(conn)
    assert delta(calls(ppms), before) == {"getorders": 1, "getinvoicelist": 1, "getinvoice": 1,
                                          "getinvoicedetails": 1}
    assert report.invoices_new == 1 and report.quarantined["invoices"] == 0
    assert_tables_equal_the_sandbox(conn, ppms.state("ppms"))
