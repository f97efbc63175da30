"""The hourly safety net against the sandbox over HTTP and a real PostgreSQL: every job and invoice loaded, the overlap
re-read without writes, an edit no webhook announced caught and named, rows and watermark committed together."""
from __future__ import annotations

import json
import logging

import pytest

from etl import watermarks
from hooks.servicetrade import ServiceTradeHook
from integrations.servicetrade import safety_net
from sandbox import servicetrade as st

ACCOUNT = "servicetrade_default"


@pytest.fixture
def hook(sandbox, webhook_tables, monkeypatch):
    monkeypatch.setenv(f"AIRFLOW_CONN_{ACCOUNT.upper()}", json.dumps(
        {"conn_type": "servicetrade", "host": f"{sandbox.url}/servicetrade/api", "login": st.USERNAME,
         "password": st.PASSWORD}))
    monkeypatch.setattr(ServiceTradeHook, "backoff_initial", 0.01)
    monkeypatch.setattr(ServiceTradeHook, "backoff_max", 0.02)
    conn = webhook_tables
    conn.execute("DELETE FROM etl.watermarks WHERE pipeline = %s", (safety_net.PIPELINE,))
    conn.execute("INSERT INTO servicetrade.webhook_accounts (account, secret_sha256) VALUES (%s, %s)",
                 (ACCOUNT, b"\x01" * 32))
    conn.commit()
    return ServiceTradeHook(ACCOUNT)


def net(conn, hook, run_id="run"):
    return safety_net.run(conn, hook, ACCOUNT, run_id)


def sandbox_records(hook) -> dict[str, dict[int, dict]]:
    with hook.transaction():
        return {"job": {r["id"]: r for r in hook.list_jobs(0)}, "invoice": {r["id"]: r for r in hook.list_invoices(0)}}


def held(conn, table) -> dict[int, dict]:
    rows = conn.execute(f"SELECT id, record FROM servicetrade.{table} WHERE account = %s", (ACCOUNT,)).fetchall()
    conn.commit()
    return dict(rows)


def watermark(conn):
    found = watermarks.read(conn, safety_net.PIPELINE, ACCOUNT)
    conn.commit()
    return found.value if found else None


def edit(hook, path, body):
    with hook.transaction():
        return hook.call("PUT", path, json=body)["data"]


def test_first_run_loads_everything_and_the_second_reads_only_the_overlap(conn, hook, sandbox):
    first = net(conn, hook)
    expected = sandbox_records(hook)
    assert held(conn, "jobs") == expected["job"] and held(conn, "invoices") == expected["invoice"]
    assert len(expected["job"]) == 240 and any(j["status"] == "canceled" for j in expected["job"].values())
    assert first.baseline and first.missed == 0 and first.window_start is None
    for name, records in expected.items():
        assert first.entities[name].read == first.entities[name].inserted == len(records)
    greatest = max(r["updated"] for records in expected.values() for r in records.values())
    wm = watermark(conn)
    assert greatest - 5 <= wm.timestamp() <= greatest           # minus the listings' few seconds
    assert conn.execute("SELECT status, rows_read, rows_inserted, watermark_after FROM etl.run_ledger "
                        "WHERE pipeline = %s", (safety_net.PIPELINE,)).fetchall() == [
        ("success", len(expected["job"]) + len(expected["invoice"]),
         len(expected["job"]) + len(expected["invoice"]), watermarks.render(wm))]
    conn.commit()

    calls_before = len(sandbox.requests("servicetrade"))
    second = net(conn, hook, "run-2")
    since = int((wm - safety_net.OVERLAP).timestamp())
    queries = [r["query"] for r in sandbox.requests("servicetrade")[calls_before:] if r["method"] == "GET"]
    assert queries and all(f"updatedAfter={since}" in q for q in queries)
    assert not second.baseline and second.missed == 0
    for name, records in expected.items():
        counts = second.entities[name]
        assert counts.read == sum(1 for r in records.values() if r["updated"] >= since)
        assert (counts.inserted, counts.updated, counts.missed) == (0, 0, 0)
        assert counts.unchanged == counts.read
    assert sum(c.read for c in second.entities.values()) < 20     # the overlap, not the history
    assert watermark(conn) == wm
    assert sandbox.state("servicetrade")["open_sessions"] == 0


def test_an_edit_no_webhook_announced_is_caught_and_named_and_a_pending_event_is_not_missed(
        conn, hook, sandbox, caplog):
    net(conn, hook)
    invoice_id = sorted(sandbox_records(hook)["invoice"])[3]
    edited = edit(hook, f"/invoice/{invoice_id}", {"notes": "edited at ServiceTrade, webhook dropped"})
    caplog.set_level(logging.INFO, logger=safety_net.__name__)
    report = net(conn, hook, "run-2")
    assert report.entities["invoice"].updated == 1 and report.entities["invoice"].missed == 1
    assert report.entities["job"].missed == 0 and report.missed == 1
    assert report.missed_sample == [("invoice", invoice_id)]
    assert report.as_dict()["missed"] == 1 and report.as_dict()["missed_sample"] == [["invoice", invoice_id]]
    assert held(conn, "invoices")[invoice_id] == edited
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"invoice {invoice_id}" in warnings[0] and "1 row(s)" in warnings[0]
    assert watermark(conn).timestamp() >= edited["updated"] - 5

    # Announced: the receiver folded a notification that the processing has not fetched yet.
    conn.execute("INSERT INTO servicetrade.webhook_events (account, entity_type, entity_id, pending, first_seen, "
                 "last_seen, notifications, last_action) VALUES (%s, 'invoice', %s, true, now(), now(), 1, 'updated')",
                 (ACCOUNT, invoice_id))
    conn.commit()
    edited = edit(hook, f"/invoice/{invoice_id}", {"notes": "edited again, announced this time"})
    caplog.clear()
    report = net(conn, hook, "run-3")
    assert report.entities["invoice"].updated == 1 and report.missed == 0 and report.missed_sample == []
    assert held(conn, "invoices")[invoice_id] == edited
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    # Once fetched (no longer pending), a later unannounced edit is missed again.
    conn.execute("UPDATE servicetrade.webhook_events SET pending = false WHERE entity_id = %s", (invoice_id,))
    conn.commit()
    edit(hook, f"/invoice/{invoice_id}", {"notes": "a third edit"})
    assert net(conn, hook, "run-4").missed_sample == [("invoice", invoice_id)]


def test_a_state_we_hold_newer_is_not_overwritten(conn, hook):
    net(conn, hook)
    invoice_id = sorted(held(conn, "invoices"))[0]
    edit(hook, f"/invoice/{invoice_id}", {"notes": "edited"})
    # The webhook processing stored a state newer than anything ServiceTrade will list this run.
    conn.execute("UPDATE servicetrade.invoices SET updated = now() + interval '1 hour', "
                 "record = record || '{\"notes\": \"newer\"}' WHERE account = %s AND id = %s", (ACCOUNT, invoice_id))
    conn.commit()
    report = net(conn, hook, "run-2")
    assert report.entities["invoice"].older_skipped == 1 and report.entities["invoice"].updated == 0
    assert report.missed == 0
    assert held(conn, "invoices")[invoice_id]["notes"] == "newer"


def test_a_failure_mid_run_commits_neither_rows_nor_watermark(conn, hook, sandbox):
    net(conn, hook)
    wm = watermark(conn)
    job_id = sorted(held(conn, "jobs"))[5]
    invoice_id = sorted(held(conn, "invoices"))[5]
    edit(hook, f"/job/{job_id}", {"description": "changed while no webhook came"})
    edit(hook, f"/invoice/{invoice_id}", {"notes": "changed too"})
    jobs_before = held(conn, "jobs")
    # The jobs are listed and upserted, then the invoice list fails through every retry.
    sandbox.faults("servicetrade", burst_5xx=50, only_path="/api/invoice", only_method="GET")
    with pytest.raises(Exception, match="ServiceTrade"):
        net(conn, hook, "run-failed")
    assert held(conn, "jobs") == jobs_before
    assert watermark(conn) == wm
    assert conn.execute("SELECT status FROM etl.run_ledger WHERE run_id = 'run-failed'").fetchone() == ("failed",)
    conn.commit()
    sandbox.faults("servicetrade")
    report = net(conn, hook, "run-again")
    assert (report.entities["job"].updated, report.entities["invoice"].updated) == (1, 1)
    assert sorted(report.missed_sample) == [("invoice", invoice_id), ("job", job_id)]
    assert held(conn, "jobs")[job_id]["description"] == "changed while no webhook came"
    assert watermark(conn) > wm
