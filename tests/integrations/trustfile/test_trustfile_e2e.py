"""The TrustFile extractor end to end: companies provisioned by the DAG, authorized and enabled through
the extractor API (uvicorn on 127.0.0.1), synced by trustfile_sync against the QBO and TrustFile
sandboxes, backfilled by trustfile_backfill; assertions on PostgreSQL and on what TrustFile holds."""
from __future__ import annotations

import datetime as dt
import re
import time
from decimal import Decimal

import pytest
import requests

from sandbox import qbo as qbo_sandbox

COMPANIES = [
    ("owner@one.example", "One Co", {"line1": "1 Main St", "city": "Fresno", "state": "CA", "zip": "93722"}),
    ("owner@two.example", "Two Co", {"line1": "2 Main St", "city": "Austin", "state": "TX", "zip": "78701"}),
    ("owner@three.example", "Three Co", {}),        # no address: documents without one cannot be placed
]
DOCUMENTS = 4 * 40
AMOUNTS = ("salesAmount", "salesTax", "shippingAmount", "shippingTax")
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+00:00$")


def run(dag_id: str, **conf) -> None:
    from airflow.dag_processing.dagbag import DagBag

    assert str(DagBag().get_dag(dag_id).test(run_conf=conf or None).state) == "success", dag_id


def authorize(base: str, auth: dict, connection_id: str) -> None:
    """TrustFile opens the consent; the browser goes to Intuit (the sandbox) and back to our callback."""
    started = requests.get(f"{base}/connections/{connection_id}/authentication", headers=auth, allow_redirects=False,
                           params={"redirectUri": "https://app.trustfile.example/connectors/success"})
    assert started.status_code == 302
    at_intuit = requests.get(started.headers["location"], allow_redirects=False)
    back = requests.get(at_intuit.headers["location"], allow_redirects=False)
    assert back.status_code == 302 and "success=true" in back.headers["location"]


@pytest.fixture
def platform(airflow_db, vendor_connections, serve, sandbox, clean_db, auth):
    from airflow.models.pool import Pool

    Pool.create_or_update_pool("trustfile_sync", slots=2, description="tests", include_deferred=False)
    base = serve()
    ids = []
    for n, (email, name, address) in enumerate(COMPANIES):
        run("trustfile_provision", email=email, company_name=name, **address)
        connection_id = clean_db.execute("SELECT connection_id FROM trustfile.connections WHERE signup_email = %s",
                                         (email,)).fetchone()[0]
        sandbox.control("qbo", consent_realm=qbo_sandbox.REALMS[n])
        authorize(base, auth, connection_id)
        enabled = requests.put(f"{base}/connections/{connection_id}", headers=auth,
                               json={"enabled": True, "startDate": "2026-01-01"})
        assert enabled.status_code == 200 and enabled.json()["authorized"] is True
        ids.append(connection_id)
    return base, ids


def holdings(sandbox, conn, connection_id: str) -> dict[str, dict]:
    """TrustFile's items for a connection's company, asserting each itemId is there once."""
    from etl.encryption import decrypt

    token = decrypt(conn.execute("SELECT company_token FROM trustfile.connections WHERE connection_id = %s",
                                 (connection_id,)).fetchone()[0])
    items = sandbox.state("trustfile")["items"].get(token, [])
    assert len(items) == len({i["itemId"] for i in items})
    return {i["itemId"]: i for i in items}


def test_three_companies_are_synced_once_reconciled_then_only_changes_are_pushed(platform, sandbox, clean_db, auth):
    from integrations.trustfile.tasks import build_job

    base, ids = platform
    run("trustfile_sync")

    for n, connection_id in enumerate(ids):
        items = holdings(sandbox, clean_db, connection_id)
        refused = {r[0] for r in clean_db.execute(
            "SELECT item_id FROM trustfile.bad_items WHERE connection_id = %s AND stage = 'trustfile'",
            (connection_id,))}
        assert len(items) + len(refused) == DOCUMENTS and not set(items) & refused
        assert bool(refused) == (n == 2)                 # only the company without an address has refusals
        if n < 2:
            flagged = [i for i in items.values() if i.get("reviewRequired")]
            assert flagged and all(i["reviewMessage"] and i["shipToAddress"]["zip"] for i in flagged)
    # amounts reconcile with QuickBooks' own totals, document by document
    realm = qbo_sandbox.REALMS[0]
    hook = build_job(clean_db, ids[0]).host.hook          # the consent's tokens: a second seed would rotate them
    items = holdings(sandbox, clean_db, ids[0])
    for entity in ("SalesReceipt", "Invoice", "RefundReceipt", "CreditMemo"):
        for record in hook.query(entity):
            item = items[f"qbo-{entity}-{record['Id']}"]
            assert sum(Decimal(str(item[k])) for k in AMOUNTS) == Decimal(str(record["TotalAmt"]))
            assert item["refund"] is (entity in ("RefundReceipt", "CreditMemo"))

    described = requests.get(f"{base}/connections/{ids[0]}", headers=auth).json()
    assert described["statusMessage"].startswith("up to date") and TIMESTAMP.match(described["lastSyncAt"])
    assert TIMESTAMP.match(described["nextSyncAt"]) and described["hostSystemIdentifier"] == f"qbo {realm}"
    actions = [a["action"] for a in requests.get(f"{base}/connections/{ids[0]}/activities", headers=auth).json()[
        "activities"]]
    assert actions[0].startswith("Synced: up to date")
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    bad = requests.get(f"{base}/baditems", params={"date": today}, headers=auth).json()["errors"]
    assert bad and all(e["connectionId"] == ids[2] and e["badItems"] and ("zip" in e["message"] or
                                                                         "state" in e["message"]) for e in bad)

    calls = sandbox.state("trustfile")["push_calls"]
    run("trustfile_sync")
    assert sandbox.state("trustfile")["push_calls"] == calls          # nothing new: nothing pushed

    writes = sum(sandbox.state("trustfile")["item_writes"].values())
    changed = [(0, "SalesReceipt", "101"), (0, "Invoice", "141"), (0, "CreditMemo", "221"),
               (1, "RefundReceipt", "181"), (1, "SalesReceipt", "102")]
    sandbox.control("qbo", touch=[{"realm": qbo_sandbox.REALMS[n], "entity": e, "id": i,
                                   "fields": {"TxnDate": "2026-02-03"}} for n, e, i in changed])
    time.sleep(1.1)     # QBO's timestamps are whole seconds; a sync reads the seconds that are over
    run("trustfile_sync")
    assert sum(sandbox.state("trustfile")["item_writes"].values()) == writes + 5
    for n, entity, source_id in changed:
        assert holdings(sandbox, clean_db, ids[n])[f"qbo-{entity}-{source_id}"]["transactionDate"].startswith(
            "2026-02-03")


def test_a_backfill_reloads_its_window_and_leaves_watermark_and_ledger_consistent(platform, sandbox, clean_db):
    from etl import watermarks
    from integrations.trustfile.sync import PIPELINE

    _, ids = platform
    run("trustfile_sync")
    marks = {i: watermarks.read(clean_db, PIPELINE, i).value for i in ids}
    clean_db.execute("UPDATE trustfile.transactions SET customer_name = 'drifted' WHERE connection_id = %s", (ids[0],))
    clean_db.commit()
    writes = sum(sandbox.state("trustfile")["item_writes"].values())
    run("trustfile_backfill", connection_id=ids[0], start="2026-01-05", end="2026-01-07", mode="reload")
    assert clean_db.execute("SELECT count(*) FROM trustfile.transactions WHERE customer_name = 'drifted'"
                            ).fetchone()[0] == 0
    assert {i: watermarks.read(clean_db, PIPELINE, i).value for i in ids} == marks
    assert sum(sandbox.state("trustfile")["item_writes"].values()) == writes      # same items: nothing to push
    run("trustfile_backfill", connection_id=ids[0], start="2026-01-05", end="2026-01-07", mode="repush")
    assert sum(sandbox.state("trustfile")["item_writes"].values()) == writes + DOCUMENTS
    pending = clean_db.execute(
        "SELECT count(*) FROM trustfile.transactions t "
        "LEFT JOIN trustfile.push_ledger p USING (connection_id, item_id) "
        "WHERE p.content_hash IS DISTINCT FROM t.content_hash").fetchone()[0]
    assert pending == 0


DAG_RUN_IN_A_CHILD = """
from airflow.dag_processing.dagbag import DagBag
DagBag().get_dag("trustfile_sync").test()
"""


def test_a_sync_run_killed_in_the_middle_of_its_push_and_run_again_leaves_each_item_once(platform, sandbox, clean_db):
    import os
    import signal
    import subprocess
    import sys

    _, ids = platform
    sandbox.control("qbo", per_entity=700)                       # 2800 documents a company: 3 push calls each
    sandbox.faults("trustfile", latency_ms=300, only_path="/items")
    child = subprocess.Popen([sys.executable, "-c", DAG_RUN_IN_A_CHILD], env=os.environ.copy(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while sum(sandbox.state("trustfile")["push_calls"].values()) < 2:
        assert child.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    assert sum(len(v) for v in sandbox.state("trustfile")["items"].values()) < 3 * 2800

    sandbox.faults("trustfile")
    sandbox.control("qbo", touch=[{"realm": qbo_sandbox.REALMS[0], "entity": "Invoice", "id": "801",
                                   "fields": {"TxnDate": "2026-03-03"}}])
    time.sleep(1.1)
    run("trustfile_sync")
    for _n, connection_id in enumerate(ids):
        items = holdings(sandbox, clean_db, connection_id)                # each itemId once
        ours = dict(clean_db.execute("SELECT item_id, item FROM trustfile.transactions WHERE connection_id = %s",
                                     (connection_id,)).fetchall())
        refused = {r[0] for r in clean_db.execute(
            "SELECT item_id FROM trustfile.bad_items WHERE connection_id = %s AND stage = 'trustfile'",
            (connection_id,))}
        assert len(ours) == 2800 and items == {k: v for k, v in ours.items() if k not in refused}   # latest content
    assert holdings(sandbox, clean_db, ids[0])["qbo-Invoice-801"]["transactionDate"].startswith("2026-03-03")
