"""The TrustFile sync engine against the QBO and TrustFile sandboxes and a real PostgreSQL."""
from __future__ import annotations

import datetime as dt
import json
import time
from decimal import Decimal

import pytest
from cryptography.fernet import Fernet

from sandbox import qbo as qbo_sandbox
from sandbox import trustfile as tf_sandbox

REALM = qbo_sandbox.REALMS[0]
COMPANY = tf_sandbox.SEEDED_CONNECTIONS[0]
DOCUMENTS = 4 * 40          # the sandbox's SalesReceipts, Invoices, RefundReceipts and CreditMemos per realm


@pytest.fixture
def wired(sandbox, conn, monkeypatch):
    """Connection COMPANY, enabled since 2026-01-01 and authorized for REALM."""
    from etl.encryption import encrypt

    monkeypatch.setenv("INTEGRATIONS_FERNET_KEY", Fernet.generate_key().decode())
    monkeypatch.setenv("AIRFLOW_CONN_QBO_DEFAULT", json.dumps(
        {"conn_type": "qbo", "host": f"{sandbox.url}/qbo", "login": qbo_sandbox.CLIENT_ID,
         "password": qbo_sandbox.CLIENT_SECRET, "extra": {"token_url": f"{sandbox.url}/qbo/oauth2/v1/tokens/bearer"}}))
    monkeypatch.setenv("AIRFLOW_CONN_TRUSTFILE_DEFAULT", json.dumps(
        {"conn_type": "trustfile", "host": f"{sandbox.url}/trustfile", "password": tf_sandbox.TOKEN}))
    conn.execute("TRUNCATE trustfile.connections, etl.watermarks, etl.watermark_history, etl.oauth_tokens CASCADE")
    credentials = encrypt(json.dumps({"realm_id": REALM, "refresh_token": qbo_sandbox.INITIAL_REFRESH_TOKENS[REALM]}))
    conn.execute("INSERT INTO trustfile.connections (connection_id, enabled, start_date, host_identifier, "
                 "host_credentials) VALUES (%s, true, '2026-01-01', %s, %s)", (COMPANY, REALM, credentials))
    conn.commit()
    return conn


def job(conn):
    from integrations.trustfile.tasks import build_job

    return build_job(conn, COMPANY)


def stored_items(sandbox) -> dict[str, dict]:
    items = sandbox.state("trustfile")["items"].get(COMPANY, [])
    assert len(items) == len({i["itemId"] for i in items})
    return {i["itemId"]: i for i in items}


def sync(conn, **budget):
    from integrations.trustfile.sync import Budget, run_sync

    return run_sync(conn, job(conn), run_id="test", budget=Budget(**budget))


def test_first_sync_pushes_every_document_once_and_a_second_pushes_nothing(wired, sandbox):
    first = sync(wired)
    assert first.caught_up and first.read == DOCUMENTS and first.inserted == DOCUMENTS and first.quarantined == 0
    items = stored_items(sandbox)
    assert len(items) == DOCUMENTS and first.pushed == DOCUMENTS and first.push_calls == 1
    # every item reconciles with its row, and money went through Decimal
    for item_id, total in wired.execute("SELECT item_id, source_total FROM trustfile.transactions"):
        item = items[item_id]
        parts = sum(Decimal(str(item[k])) for k in ("salesAmount", "salesTax", "shippingAmount", "shippingTax"))
        assert parts == total
    flagged = [i for i in items.values() if i.get("reviewRequired")]
    assert flagged and all(i["shipToAddress"]["zip"] == "93722" and i["reviewMessage"] for i in flagged)

    second = sync(wired)
    assert (second.inserted, second.updated, second.push_selected) == (0, 0, 0)
    assert sandbox.state("trustfile")["push_calls"][COMPANY] == 1


def test_five_changed_documents_are_exactly_what_the_next_sync_pushes(wired, sandbox):
    sync(wired)
    writes = sandbox.state("trustfile")["item_writes"][COMPANY]
    changed = [("SalesReceipt", "101"), ("SalesReceipt", "102"), ("Invoice", "141"), ("RefundReceipt", "181"),
               ("CreditMemo", "221")]
    sandbox.control("qbo", touch=[{"realm": REALM, "entity": e, "id": i, "fields": {"TxnDate": "2026-02-02"}}
                                  for e, i in changed])
    time.sleep(1.1)     # a sync reads whole seconds that are over (QBO's timestamps have no fraction)
    report = sync(wired)
    assert (report.updated, report.pushed) == (5, 5)
    assert sandbox.state("trustfile")["item_writes"][COMPANY] == writes + 5
    items = stored_items(sandbox)
    assert all(items[f"qbo-{e}-{i}"]["transactionDate"] == "2026-02-02T00:00:00" for e, i in changed)


def test_a_deleted_document_is_sent_again_with_zero_amounts(wired, sandbox):
    sync(wired)
    sandbox.control("qbo", delete=[{"realm": REALM, "entity": "Invoice", "id": "141"}])
    time.sleep(1.1)
    report = sync(wired)
    assert (report.deleted, report.pushed) == (1, 1)
    item = stored_items(sandbox)["qbo-Invoice-141"]
    assert [item[k] for k in ("salesAmount", "salesTax", "shippingAmount", "shippingTax")] == [0, 0, 0, 0]


def test_an_item_trustfile_refuses_is_recorded_and_the_rest_pushed(wired, sandbox):
    from integrations.trustfile.sync import SyncJob

    bare = job(wired)
    no_fallback = SyncJob(**{**bare.__dict__, "fallback_address": None})   # a company without an address
    from integrations.trustfile.sync import run_sync

    report = run_sync(wired, no_fallback, run_id="test")
    assert report.rejected > 0 and report.pushed == DOCUMENTS - report.rejected
    bad = wired.execute("SELECT item_id, message FROM trustfile.bad_items WHERE stage = 'trustfile'").fetchall()
    assert len(bad) == report.rejected and all("zip" in message or "state" in message for _, message in bad)
    again = run_sync(wired, no_fallback, run_id="test")
    assert again.push_selected == 0                          # refused and unchanged: not pushed again


def test_windows_end_after_their_documents_and_a_budget_stops_the_run(wired, sandbox):
    from etl import watermarks
    from hooks.qbo import QboHook
    from integrations.trustfile.sync import PIPELINE

    receipts = sorted(dt.datetime.fromisoformat(r["MetaData"]["LastUpdatedTime"])
                      for r in QboHook(realm_id=REALM, refresh_token=qbo_sandbox.INITIAL_REFRESH_TOKENS[REALM])
                      .query("SalesReceipt"))
    first_row = wired.execute("SELECT coalesce(max(id), 0) + 1 FROM etl.run_ledger").fetchone()[0]
    report = sync(wired, window_documents=40, max_documents=1)
    # 40 shared by four entities: the window ends at the 11th sales receipt's time; the budget stops the run
    assert not report.caught_up and report.windows == 1
    mark = watermarks.read(wired, PIPELINE, COMPANY).value
    assert mark == receipts[10]
    ends = wired.execute("SELECT window_end, watermark_after FROM etl.run_ledger WHERE pipeline = %s AND id >= %s",
                         (PIPELINE, first_row)).fetchall()
    assert ends == [(mark.isoformat(), mark.isoformat())]     # the ledger says where the window really ended
    runs = 1
    while not report.caught_up:
        report = sync(wired, window_documents=40, max_documents=1)
        runs += 1
    assert runs >= DOCUMENTS // 40 and len(stored_items(sandbox)) == DOCUMENTS
    read = [n for (n,) in wired.execute("SELECT rows_read FROM etl.run_ledger WHERE pipeline = %s AND id >= %s "
                                        "ORDER BY id", (PIPELINE, first_row))]
    assert max(read[:-1]) <= 40 + 4      # a window holds its limit, give or take what shares its last second


def test_a_burst_inside_the_overlap_does_not_make_every_window_crawl(wired, sandbox):
    """What the overlap re-reads does not count toward a window's documents: 40 sales receipts stamped
    within one minute, windows of 8 (2 per entity), are read in a few windows, not one per second."""
    from hooks.qbo import QboHook

    hook = QboHook(realm_id=REALM, refresh_token=qbo_sandbox.INITIAL_REFRESH_TOKENS[REALM])
    ids = [r["Id"] for r in hook.query("SalesReceipt")]
    burst = dt.datetime(2026, 1, 4, 12, 0, tzinfo=dt.timezone.utc)
    sandbox.control("qbo", restamp=[{"realm": REALM, "entity": "SalesReceipt",
                                     "at": {i: (burst + dt.timedelta(seconds=n)).isoformat()
                                            for n, i in enumerate(ids)}}])
    report, windows = sync(wired, window_documents=8), 0
    windows += report.windows
    while not report.caught_up:
        report = sync(wired, window_documents=8)
        windows += report.windows
    assert len(stored_items(sandbox)) == DOCUMENTS
    assert windows <= DOCUMENTS // 4      # 31 here; counting what the overlap re-reads made it 58


def test_a_sparse_history_is_read_in_one_window_at_the_minimum_of_calls(wired, sandbox):
    report = sync(wired)
    queries = [r for r in sandbox.requests("qbo") if r["path"].endswith("/query")]
    assert report.windows == 1 and report.read == DOCUMENTS
    assert len(queries) == 4      # one short page per entity: everything since 90 days before the start date


def test_backfill_reload_and_repush_leave_the_watermark_alone(wired, sandbox):
    from etl import watermarks
    from integrations.trustfile.sync import PIPELINE, run_backfill

    sync(wired)
    mark = watermarks.read(wired, PIPELINE, COMPANY)
    since, until = dt.datetime(2026, 1, 5, tzinfo=dt.timezone.utc), dt.datetime(2026, 1, 7, tzinfo=dt.timezone.utc)
    wired.execute("UPDATE trustfile.transactions SET customer_name = 'drifted'")    # what a reload repairs
    wired.commit()
    reloaded = run_backfill(wired, job(wired), mode="reload", since=since, until=until, run_id="backfill")
    assert reloaded.read == DOCUMENTS and reloaded.updated == DOCUMENTS and reloaded.push_selected == 0
    assert watermarks.read(wired, PIPELINE, COMPANY).value == mark.value
    writes = sandbox.state("trustfile")["item_writes"][COMPANY]
    repushed = run_backfill(wired, job(wired), mode="repush", since=since, until=until, run_id="backfill")
    assert repushed.pushed == DOCUMENTS and sandbox.state("trustfile")["item_writes"][COMPANY] == writes + DOCUMENTS
    assert watermarks.read(wired, PIPELINE, COMPANY).value == mark.value
    pending = wired.execute("SELECT count(*) FROM trustfile.transactions t JOIN trustfile.push_ledger p "
                            "USING (connection_id, item_id) WHERE p.content_hash <> t.content_hash").fetchone()[0]
    assert pending == 0


KILLABLE_SYNC = """
import sys
from etl import db
from integrations.trustfile.sync import run_sync
from integrations.trustfile.tasks import build_job
with db.connect(sys.argv[1]) as conn:
    run_sync(conn, build_job(conn, sys.argv[2]), run_id="killed")
"""


def test_a_sync_killed_in_the_middle_of_its_push_ends_with_every_item_once_and_current(wired, sandbox, db_url):
    import os
    import signal
    import subprocess
    import sys

    sandbox.control("qbo", per_entity=700)              # 2800 documents: three push calls
    sandbox.faults("trustfile", latency_ms=400, only_path="/items")
    worker = subprocess.Popen([sys.executable, "-c", KILLABLE_SYNC, db_url, COMPANY], env=os.environ.copy())
    deadline = time.monotonic() + 60
    while sandbox.state("trustfile")["push_calls"].get(COMPANY, 0) < 2:   # the first call is in the ledger
        assert worker.poll() is None and time.monotonic() < deadline, "the sync ended before it could be killed"
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    partial = sandbox.state("trustfile")
    assert 1000 <= len(partial["items"][COMPANY]) < 2800

    sandbox.faults("trustfile")
    touched = {"realm": REALM, "entity": "Invoice", "id": str(101 + 700), "fields": {"TxnDate": "2026-03-03"}}
    sandbox.control("qbo", touch=[touched])
    time.sleep(1.1)
    report = sync(wired)
    items = stored_items(sandbox)
    assert len(items) == 2800 and report.pushed <= 1800    # what the ledger had not recorded, no more
    stored = dict(wired.execute("SELECT item_id, item FROM trustfile.transactions").fetchall())
    assert stored == items                                  # every item in TrustFile is our latest content
    assert items["qbo-Invoice-801"]["transactionDate"] == "2026-03-03T00:00:00"


def test_a_servicetrade_connection_syncs_through_the_same_engine(wired, sandbox, monkeypatch):
    from etl.encryption import encrypt
    from sandbox import servicetrade as st_sandbox

    monkeypatch.setenv("AIRFLOW_CONN_SERVICETRADE_DEFAULT", json.dumps(
        {"conn_type": "servicetrade", "host": f"{sandbox.url}/servicetrade/api", "login": st_sandbox.USERNAME,
         "password": st_sandbox.PASSWORD}))
    company = tf_sandbox.SEEDED_CONNECTIONS[1]
    wired.execute("INSERT INTO trustfile.connections (connection_id, enabled, start_date, host_system, "
                  "host_identifier, host_credentials) VALUES (%s, true, '2026-01-01', 'servicetrade', 'acme-fire', %s)",
                  (company, encrypt(json.dumps({"airflow_conn_id": "servicetrade_default"}))))
    wired.commit()
    from integrations.trustfile.sync import run_sync
    from integrations.trustfile.tasks import build_job

    report = run_sync(wired, build_job(wired, company), run_id="test")
    stored = sandbox.state("trustfile")["items"][company]
    loaded = wired.execute("SELECT count(*) FROM trustfile.transactions WHERE connection_id = %s "
                           "AND source_system = 'servicetrade'", (company,)).fetchone()[0]
    assert report.caught_up and report.read > 40 and loaded == report.inserted == len(stored) == report.pushed
    assert report.quarantined >= 1                    # the sandbox's invoice that is a cent off
    reasons = [r[0] for r in wired.execute("SELECT message FROM trustfile.bad_items WHERE connection_id = %s "
                                           "AND stage = 'mapping'", (company,))]
    assert len(reasons) == report.quarantined and all(r.startswith("unreconciled: ") for r in reasons)
    assert any(i["refund"] for i in stored) and any(i.get("reviewRequired") for i in stored)
    assert sandbox.state("servicetrade")["open_sessions"] == 0
    again = run_sync(wired, build_job(wired, company), run_id="test")
    assert again.push_selected == 0


def test_moving_the_start_date_back_rewinds_the_watermark_to_it(wired, sandbox):
    wired.execute("UPDATE trustfile.connections SET start_date = '2026-01-06'")
    wired.commit()
    later = sync(wired)
    assert later.inserted == 0 and later.before_start > 0      # the sandbox's documents are dated Jan 5
    wired.execute("UPDATE trustfile.connections SET start_date = '2026-01-01'")
    wired.commit()
    earlier = sync(wired)
    assert earlier.inserted == DOCUMENTS and earlier.watermark_before == "2025-10-03T00:00:00+00:00"  # minus LOOKBACK
    history = wired.execute("SELECT action, reason FROM etl.watermark_history WHERE action = 'reset'").fetchall()
    assert history == [("reset", "startDate moved back from 2026-01-06 to 2026-01-01")]


def test_a_deleted_and_recreated_connection_syncs_from_its_start_date_again(wired, sandbox):
    from integrations.trustfile import connections

    sync(wired)
    credentials = wired.execute("SELECT host_credentials FROM trustfile.connections").fetchone()[0]
    assert connections.delete(wired, COMPANY)
    assert wired.execute("SELECT count(*) FROM trustfile.transactions").fetchone()[0] == 0
    wired.execute("INSERT INTO trustfile.connections (connection_id, enabled, start_date, host_identifier, "
                  "host_credentials) VALUES (%s, true, '2026-01-01', %s, %s)", (COMPANY, REALM, credentials))
    wired.commit()
    assert sync(wired).inserted == DOCUMENTS


def test_each_window_commits_on_its_own_so_a_failure_keeps_the_windows_before_it(wired, sandbox, db_url):
    from etl import watermarks
    from etl.db import connect
    from integrations.trustfile.sync import LOOKBACK, PIPELINE, SyncJob, start_of

    class FailsInThirdWindow:
        """The real QBO host, until its third window: then the host system goes away."""

        def __init__(self, host):
            self.host, self.windows = host, 0
            self.name, self.overlap, self.identifier = host.name, host.overlap, host.identifier
            self.warnings = host.warnings

        @property
        def window_end(self):
            return self.host.window_end

        def documents(self, since, until, **limits):
            self.windows += 1
            if self.windows == 3:
                raise ConnectionError("QuickBooks went away")
            return self.host.documents(since, until, **limits)

        def to_transaction(self, document, *, fallback_address):
            return self.host.to_transaction(document, fallback_address=fallback_address)

    real = job(wired)
    failing = SyncJob(**{**real.__dict__, "host": FailsInThirdWindow(real.host)})
    from integrations.trustfile.sync import Budget, run_sync

    with pytest.raises(ConnectionError):
        run_sync(wired, failing, run_id="window-failure", budget=Budget(window_documents=40))
    with connect(db_url) as other:
        ledger = other.execute("SELECT status, watermark_after FROM etl.run_ledger WHERE run_id = 'window-failure' "
                               "ORDER BY id").fetchall()
        mark = watermarks.read(other, PIPELINE, COMPANY).value
    assert [s for s, _ in ledger] == ["success", "success", "failed"]
    assert mark.isoformat() == ledger[1][1] and mark > start_of(dt.date(2026, 1, 1)) - LOOKBACK


def test_a_deletion_is_found_even_when_the_window_reaches_past_the_change_feed(wired, sandbox):
    from etl import watermarks
    from integrations.trustfile.sync import PIPELINE

    sync(wired)
    with wired.transaction():
        watermarks.reset(wired, PIPELINE, COMPANY, "timestamp",
                         dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=40), run_id="test", reason="lagging")
    sandbox.control("qbo", delete=[{"realm": REALM, "entity": "CreditMemo", "id": "221"}])
    time.sleep(1.1)
    report = sync(wired)
    assert report.deleted == 1 and report.windows == 1
    assert any("beyond QuickBooks' 30-day change feed" in w for w in report.warnings)
    assert stored_items(sandbox)["qbo-CreditMemo-221"]["salesAmount"] == 0


def test_a_malformed_document_is_quarantined_and_holds_back_nothing(wired, sandbox):
    sync(wired)
    sandbox.control("qbo", touch=[
        {"realm": REALM, "entity": "SalesReceipt", "id": "101", "fields": {"TotalAmt": {"value": "12.00"}}},
        {"realm": REALM, "entity": "Invoice", "id": "141", "fields": {"TxnDate": "2026-02-04"}}])
    time.sleep(1.1)
    report = sync(wired)
    assert (report.quarantined, report.pushed) == (1, 1)
    reason = wired.execute("SELECT message FROM trustfile.bad_items WHERE item_id = 'qbo-SalesReceipt-101'").fetchone()
    assert reason[0].startswith("unreadable: ValueError") and "is not an amount" in reason[0]


def test_a_connection_deleted_before_its_task_runs_is_skipped_without_an_alert(wired, sandbox):
    from airflow.sdk.exceptions import AirflowSkipException

    from integrations.trustfile import connections, status
    from integrations.trustfile.tasks import next_sync_at, sync

    assert connections.delete(wired, COMPANY)
    context = {"params": {}, "run_id": "test", "ti": type("TI", (), {"task_id": "sync_connection", "try_number": 1})}
    with pytest.raises(AirflowSkipException, match="no longer exists"):
        sync(COMPANY, context)
    status.record_sync(wired, COMPANY, message="m", activity="a", next_sync_at=next_sync_at())   # no row: no error
    assert wired.execute("SELECT count(*) FROM trustfile.errors").fetchone()[0] == 0


def test_a_document_that_turned_from_sale_to_refund_zeroes_its_old_entry_too():
    from integrations.trustfile.sync import _outgoing

    item = {"itemId": "servicetrade-invoice-7", "refund": True, "salesAmount": 50.0, "salesTax": 4.0,
            "shippingAmount": 0.0, "shippingTax": 0.0}
    sent = list(_outgoing([("servicetrade-invoice-7", item, "h2", False), ("x", {**item, "itemId": "x"}, "h", True),
                           ("y", {**item, "itemId": "y"}, "h", None)]))
    assert sent[0] == {**item, "refund": False, "salesAmount": 0.0, "salesTax": 0.0}
    assert sent[1:] == [item, {**item, "itemId": "x"}, {**item, "itemId": "y"}]


def test_a_document_re_dated_before_the_start_date_leaves_trustfile_s_totals(wired, sandbox):
    sync(wired)
    sandbox.control("qbo", touch=[{"realm": REALM, "entity": "Invoice", "id": "142",
                                   "fields": {"TxnDate": "2025-12-30"}}])
    time.sleep(1.1)
    report = sync(wired)
    assert (report.before_start, report.pushed) == (1, 1)
    item = stored_items(sandbox)["qbo-Invoice-142"]
    assert [item[k] for k in ("salesAmount", "salesTax", "shippingAmount", "shippingTax")] == [0, 0, 0, 0]
    assert wired.execute("SELECT status FROM trustfile.transactions WHERE item_id = 'qbo-Invoice-142'"
                         ).fetchone()[0] == "before_start"


def test_a_connection_trustfile_disabled_is_listed_by_the_lag_report_but_not_alerted_on(wired, sandbox, db_url):
    from etl.db import connect
    from etl.maintenance import WatermarkLagError, report_lag
    from integrations.trustfile import connections

    sync(wired)
    wired.execute("UPDATE etl.run_ledger SET finished_at = now() - interval '3 days' WHERE scope = %s", (COMPANY,))
    wired.commit()
    with pytest.raises(WatermarkLagError, match=COMPANY):
        report_lag(48)
    with connect(db_url, autocommit=True) as api:                      # as the extractor API uses it
        connections.update(api, COMPANY, enabled=False, start_date=None, start_date_given=False)
        assert [r["scope"] for r in report_lag(48)] == [COMPANY]      # listed, no alert
        connections.set_connector(api, False)
        connections.update(api, COMPANY, enabled=True, start_date=None, start_date_given=False)
        assert report_lag(48)                                          # the connector is still off
        connections.set_connector(api, True)
    with pytest.raises(WatermarkLagError, match=COMPANY):
        report_lag(48)
