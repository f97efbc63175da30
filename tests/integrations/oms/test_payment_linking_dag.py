"""oms_payment_linking run for real with dag.test() against the sandbox's QuickBooks (its last company, as
`make up`'s qbo_oms_pro) and OMS-Pro: the config checked first, one mapped task per configured connection,
payments on their tickets once, a second run that sends no PUT, a voided payment reversed and an unmatched
payment linked once its ticket appears, each by the next DAG run; a config naming a missing field failing the
first task by name, and a connection that does not exist failing its mapped task at once."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest
from cryptography.fernet import Fernet

from sandbox import qbo as qbo_sandbox
from tests.integrations.oms.test_payments import assert_tickets_match_qbo, puts, tickets
from tests.task_logs import task_log

REALM = qbo_sandbox.REALMS[-1]
QBO_CONNECTION = {"conn_type": "qbo", "login": qbo_sandbox.CLIENT_ID, "password": qbo_sandbox.CLIENT_SECRET}


@pytest.fixture
def linking(airflow_db, conn, db_url, sandbox, trackvia_connection, monkeypatch):
    """TrackVia and qbo_oms_pro (the sandbox's last company, its initial refresh token) on the sandbox."""
    conn.execute("TRUNCATE oms.payment_links, oms.payment_reviews, etl.oauth_tokens, etl.request_budgets, "
                 "etl.watermarks, etl.run_ledger CASCADE")
    conn.commit()
    monkeypatch.setenv("INTEGRATIONS_FERNET_KEY", Fernet.generate_key().decode())
    trackvia_connection()
    monkeypatch.setenv("AIRFLOW_CONN_QBO_OMS_PRO", json.dumps(qbo_sandbox.company_connection(sandbox.url, REALM)))
    return sandbox


def run():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag().get_dag("oms_payment_linking").test()


def states(dag_run) -> list[tuple[str, str | None, str]]:
    return sorted((ti.task_id, ti.rendered_map_index, str(ti.state)) for ti in dag_run.get_task_instances())


def qbo_hook(db_url):
    from hooks.qbo import QboHook

    return QboHook("qbo_oms_pro", conninfo=db_url)


def ledger(conn) -> list[tuple[str, str, int | None, bool]]:
    return conn.execute("SELECT scope, status, rows_updated, watermark_after IS NOT NULL FROM etl.run_ledger "
                        "WHERE pipeline = 'oms_payment_linking' ORDER BY id").fetchall()


def open_reviews(conn, invoice_id: str) -> list[tuple[str, str]]:
    return conn.execute("SELECT payment_id, reason FROM oms.payment_reviews WHERE realm = %s AND invoice_id = %s "
                        "AND resolved_at IS NULL", (REALM, invoice_id)).fetchall()


def test_payments_land_once_a_rerun_sends_nothing_and_a_void_and_a_new_ticket_follow_on_the_next_run(
        linking, conn, db_url):
    sandbox, qbo = linking, qbo_hook(db_url)
    invoices = list(qbo.query("Invoice"))
    ticketed = tickets(sandbox)
    # A ticketed invoice nothing has paid yet gets two partial payments; an invoice without a ticket gets one.
    unpaid = next(i for i in invoices if i["DocNumber"] in ticketed and i["Balance"] == i["TotalAmt"])
    unmatched = next(i for i in invoices if i["DocNumber"] == "IN-177")
    assert "IN-177" not in ticketed
    third = (Decimal(str(unpaid["Balance"])) / 3).quantize(Decimal("0.01"))
    partial = sandbox.control("qbo", add_payment=[
        {"realm": REALM, "invoice_id": unpaid["Id"], "amount": float(third), "txn_date": "2026-11-20"},
        {"realm": REALM, "invoice_id": unpaid["Id"], "amount": float(third), "txn_date": "2026-11-22"}],
    )["added_payments"]
    waiting = sandbox.control("qbo", add_payment=[{"realm": REALM, "invoice_id": unmatched["Id"], "amount": 12.5}]
                              )["added_payments"][0]

    first = run()

    assert first.state == "success"
    assert states(first) == [("check_config", None, "success"), ("companies", None, "success"),
                             ("link", "qbo_oms_pro", "success")]
    paid = assert_tickets_match_qbo(qbo, sandbox)
    put_paths = [r["path"] for r in sandbox.requests("trackvia") if r["method"] == "PUT"]
    assert paid > 0 and len(put_paths) == paid == len(set(put_paths))           # every ticket once
    ticket = tickets(sandbox)[unpaid["DocNumber"]]
    assert (Decimal(ticket["Amount Paid"]), ticket["QBO Payment IDs"]) == (2 * third, ", ".join(partial))
    assert (ticket["Payment Date"], ticket["Paid"]) == ("2026-11-22", "No")       # partial payments sum
    reviews = open_reviews(conn, unmatched["Id"])
    assert waiting in [p for p, _ in reviews] and all("IN-177" in reason for _, reason in reviews)
    assert conn.execute("SELECT count(*) FROM oms.payment_links WHERE realm = %s", (REALM,)).fetchone()[0] == 43
    assert ledger(conn) == [(REALM, "success", paid, True)]

    second = run()

    assert second.state == "success" and puts(sandbox) == paid                      # no PUT
    assert ledger(conn)[1:] == [(REALM, "success", 0, True)]

    sandbox.control("qbo", void_payment=[{"realm": REALM, "id": partial[1]}])
    sandbox.control("trackvia", create=[{"table": "Tickets", "fields": {"QBO Invoice Number": "IN-177",
                                                                        "Paid": "No", "Status": "Open"}}])

    third_run = run()

    assert third_run.state == "success" and puts(sandbox) == paid + 2
    ticket = tickets(sandbox)[unpaid["DocNumber"]]
    assert (Decimal(ticket["Amount Paid"]), ticket["QBO Payment IDs"]) == (third, partial[0])
    assert (ticket["Payment Date"], ticket["Paid"]) == ("2026-11-20", "No")       # the voided part reversed
    assert open_reviews(conn, unmatched["Id"]) == []
    assert waiting in tickets(sandbox)["IN-177"]["QBO Payment IDs"].split(", ")
    assert_tickets_match_qbo(qbo, sandbox)
    assert ledger(conn)[2:] == [(REALM, "success", 2, True)]
    assert sandbox.state("trackvia")["delete_requests"] == 0


def test_a_config_naming_a_missing_field_fails_the_first_task_by_name_and_links_nothing(linking, conn, tmp_path,
                                                                                       monkeypatch):
    from integrations.oms.config import CONFIG_FILE

    broken = tmp_path / "oms_pro.yaml"
    broken.write_text(CONFIG_FILE.read_text().replace("amount_paid: Amount Paid", "amount_paid: Amount Received", 1))
    monkeypatch.setenv("OMS_PRO_CONFIG", str(broken))

    with task_log() as events:
        dag_run = run()

    assert dag_run.state == "failed"
    found = {(ti.task_id, ti.map_index): str(ti.state) for ti in dag_run.get_task_instances()}
    assert found[("check_config", -1)] == "failed" and "success" not in found.values()
    assert found[("link", -1)] == "upstream_failed"                     # never expanded, never ran
    errors = " ".join(text for level, text in events if level == "error")
    assert "Amount Received" in errors and "All Tickets" in errors
    assert puts(linking) == 0 and ledger(conn) == []
    assert not any(r["path"].startswith("/qbo/v3") for r in linking.requests("qbo"))


def test_a_connection_that_does_not_exist_or_has_no_company_fails_its_task_at_once_and_the_others_link(
        linking, conn, tmp_path, monkeypatch):
    from integrations.oms.config import CONFIG_FILE

    monkeypatch.setenv("AIRFLOW_CONN_QBO_NO_REALM", json.dumps(
        {**QBO_CONNECTION, "host": f"{linking.url}/qbo", "extra": {"refresh_token": "a-consent"}}))
    listed = tmp_path / "oms_pro.yaml"
    listed.write_text(CONFIG_FILE.read_text().replace(
        "    - qbo_oms_pro", "    - qbo_nowhere\n    - qbo_oms_pro\n    - qbo_no_realm", 1))
    monkeypatch.setenv("OMS_PRO_CONFIG", str(listed))

    with task_log() as events:
        dag_run = run()

    assert dag_run.state == "failed"
    links = {ti.rendered_map_index: ti for ti in dag_run.get_task_instances() if ti.task_id == "link"}
    assert {name: (str(ti.state), ti.try_number) for name, ti in links.items()} == {
        "qbo_nowhere": ("failed", 1), "qbo_oms_pro": ("success", 1), "qbo_no_realm": ("failed", 1)}
    errors = [text for level, text in events if level == "error"]
    assert any("no Airflow connection 'qbo_nowhere'" in text and "not retried" in text for text in errors)
    assert any("connection 'qbo_no_realm' has no extra realm_id" in text for text in errors)
    assert ledger(conn) == [(REALM, "success", puts(linking), True)]
