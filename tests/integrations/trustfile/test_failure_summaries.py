"""What on-call reads first (issue 10, points 1 to 3): real trustfile_sync and trustfile_backfill runs
(dag.test) against the sandbox and PostgreSQL, one per kind of failure. The failed try's first ERROR line
is the summary: the connection's id and company, what happened, the next step of that kind of failure and
its runbook section, before Airflow's traceback. A backfill's bad form fails at once, says what is valid,
and leaves TrustFile's view (`/extractor/errors`, every connection's status) as it was. Mapped sync tasks
are named by company."""
from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest
import requests

from sandbox import qbo as qbo_sandbox
from sandbox import trustfile as tf_sandbox
from tests.task_logs import first_error, task_log

ROOT = Path(__file__).resolve().parents[3]
REALM, OTHER_REALM = qbo_sandbox.REALMS[0], qbo_sandbox.REALMS[1]
ACME = ("conn-acme", "Acme Tools")


@pytest.fixture
def dags(airflow_db):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.pool import Pool

    Pool.create_or_update_pool("trustfile_sync", slots=2, description="tests", include_deferred=False)
    return DagBag(dag_folder=str(ROOT / "dags")).dags


def add_connection(conn, connection_id: str, realm: str, *, company: str | None = None, token: str | None = None):
    """An enabled connection authorized for `realm`: signed up by us (company name, token) or made by TrustFile."""
    from etl.encryption import encrypt

    credentials = encrypt(json.dumps({"realm_id": realm, "refresh_token": qbo_sandbox.INITIAL_REFRESH_TOKENS[realm]}))
    conn.execute(
        "INSERT INTO trustfile.connections (connection_id, enabled, start_date, host_system, host_identifier, "
        "host_credentials, provisioning_state, company_name, company_token, status_message) "
        "VALUES (%s, true, '2026-01-01', 'qbo', %s, %s, %s, %s, %s, 'up to date')",
        (connection_id, realm, credentials, "provisioned" if token else "external", company,
         encrypt(token) if token else None))
    conn.commit()


@pytest.fixture
def acme(sandbox, clean_db, vendor_connections, monkeypatch):
    """Acme Tools, signed up to TrustFile, authorized for REALM; the hooks retry at once (same count, no waits)."""
    from hooks.qbo import QboHook
    from hooks.trustfile import TrustFileHook

    for hook in (QboHook, TrustFileHook):
        monkeypatch.setattr(hook, "backoff_initial", 0.01)
        monkeypatch.setattr(hook, "backoff_max", 0.05)
    monkeypatch.setattr(QboHook, "throttle_wait_seconds", 0.01)
    sandbox.control("qbo", per_entity=3)
    signed = requests.post(f"{sandbox.url}/trustfile/v4/company/signup", timeout=10,
                           headers={"Authorization": f"Bearer {tf_sandbox.TOKEN}"},
                           json={"email": "owner@acme.example", "companyName": ACME[1], "companyLine1": "1 Main St",
                                 "companyCity": "Fresno", "companyState": "CA", "companyZip": "93722"}).json()
    add_connection(clean_db, ACME[0], REALM, company=ACME[1], token=signed["companyToken"])
    return ACME


def run(dags, dag_id: str, *, retries: int | None = None, **conf):
    """One dag.test() run: (the DagRun, its log events, its seconds). `retries=0` spares a failing scheduled
    task Airflow's real retry delays (a minute, doubling)."""
    dag = dags[dag_id]
    if retries is not None:
        for task in dag.tasks:
            task.retries = retries
    started = time.monotonic()
    with task_log() as events:
        dag_run = dag.test(run_conf=conf or None)
    return dag_run, events, time.monotonic() - started


def assert_summary(block: str, task: str, kind: str, scope: tuple[str, str], *, system: str | None = None,
                   step: str | None = None) -> None:
    from notifiers.failures import CLASSES

    error_class = CLASSES[kind]
    assert f"[integrations] {task} failed" in block, block
    assert f"Scope: TrustFile connection {scope[0]} ({scope[1]})" in block, block
    assert f"Next step: {step or error_class.next_step.format(system=system)}" in block, block
    assert f"Runbook: {error_class.url}" in block, block
    assert "Traceback" not in block


def task_states(dag_run) -> dict[str, tuple[str, int]]:
    return {ti.task_id: (str(ti.state), ti.try_number) for ti in dag_run.get_task_instances()}


# ---- the sync, one kind of failure each --------------------------------------------------------------

def sync_fails(dags, scope=ACME, **expected) -> str:
    dag_run, log, _ = run(dags, "trustfile_sync", retries=0)
    assert str(dag_run.state) == "failed", task_states(dag_run)
    block = first_error(log, "sync_connection")
    assert_summary(block, "trustfile_sync.sync_connection", scope=scope, **expected)
    return block


def test_a_vendor_outage_after_retries_says_nothing_to_repair(dags, acme, sandbox):
    sandbox.faults("trustfile", burst_5xx=100, only_path="/items")
    block = sync_fails(dags, kind="outage", system="TrustFile")
    assert "What happened: TrustFile did not answer" in block and "HTTP 503" in block


def test_credentials_the_vendor_rejects_name_the_connection_to_fix(dags, acme, sandbox, vendor_connections,
                                                                   monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_TRUSTFILE_DEFAULT",
                       json.dumps({**vendor_connections["trustfile_default"], "password": "a-revoked-token"}))
    block = sync_fails(dags, kind="credentials",
                       step="Put the current extractor_to_avalara token (Avalara issues it) in the password of the "
                            "Airflow connection trustfile_default, then clear the failed tasks: every TrustFile "
                            "connection fails the same way until then.")
    assert "a-revoked-token" not in block


def test_a_spent_request_budget_waits_for_the_next_run(dags, acme, sandbox):
    sandbox.faults("qbo", throttle_next=100, only_path="/query")
    sync_fails(dags, kind="budget", system="QuickBooks Online")


def test_data_the_vendor_refuses_says_what_to_ask_it(dags, acme, sandbox, clean_db):
    clean_db.execute("DELETE FROM trustfile.connections WHERE connection_id = %s", (ACME[0],))
    clean_db.commit()
    add_connection(clean_db, "conn-unknown-to-trustfile", OTHER_REALM)
    sync_fails(dags, scope=("conn-unknown-to-trustfile", f"QuickBooks company {OTHER_REALM}"),
               kind="data_refused",
               step="TrustFile does not know this connection (HTTP 404): ask TrustFile whether the company was "
                    "deleted; if so, DELETE /extractor/connections/conn-unknown-to-trustfile.")


def test_another_run_holding_the_connection_is_not_a_fault(dags, acme, db_url):
    from etl import db, watermarks
    from integrations.trustfile.sync import PIPELINE

    with db.connect(db_url) as other, watermarks.claimed(other, PIPELINE, ACME[0]):
        sync_fails(dags, kind="busy")


def test_our_bug_says_a_retry_will_not_fix_it(dags, acme, clean_db):
    from etl import watermarks
    from integrations.trustfile.sync import PIPELINE

    with clean_db.transaction():          # state the sync does not expect: a page cursor for a timestamp pipeline
        watermarks.reset(clean_db, PIPELINE, ACME[0], "json", {"page": 3}, run_id="t", reason="an old cursor")
    block = sync_fails(dags, kind="bug")
    assert "TypeError" in block


def test_mapped_sync_tasks_are_named_by_company(dags, acme, clean_db):
    add_connection(clean_db, tf_sandbox.SEEDED_CONNECTIONS[0], OTHER_REALM)
    dag_run, _, _ = run(dags, "trustfile_sync")
    assert str(dag_run.state) == "success", task_states(dag_run)
    names = sorted(ti.rendered_map_index for ti in dag_run.get_task_instances() if ti.task_id == "sync_connection")
    assert names == [ACME[1], f"QuickBooks company {OTHER_REALM}"]


# ---- a backfill's form ---------------------------------------------------------------------------------

@pytest.fixture
def trustfile_view(acme, serve, auth, clean_db):
    """What TrustFile sees: `GET /extractor/errors` of today and every connection's status."""
    base = serve()

    def view():
        today = dt.datetime.now(dt.timezone.utc).date().isoformat()
        errors = requests.get(f"{base}/errors", params={"date": today}, headers=auth, timeout=10).json()
        rows = clean_db.execute("SELECT connection_id, status_message, next_sync_at, last_sync_at, status_changed_at "
                                "FROM trustfile.connections ORDER BY connection_id").fetchall()
        clean_db.commit()
        return errors, rows

    return view


def refused_backfill(dags, view, **conf) -> str:
    before = view()
    dag_run, log, seconds = run(dags, "trustfile_backfill", **conf)
    states = task_states(dag_run)
    assert str(dag_run.state) == "failed" and states["check_form"] == ("failed", 1), states   # at once: no retry
    assert states["backfill_connection"][0] == "upstream_failed"
    assert seconds < 10
    assert view() == before
    return first_error(log, "check_form")


def test_a_backfill_ending_before_it_starts_fails_at_once_saying_what_is_valid(dags, trustfile_view):
    block = refused_backfill(dags, trustfile_view, connection_id=ACME[0], start="2026-01-07",
                             end="2026-01-05", mode="reload")
    assert_summary(block, "trustfile_backfill.check_form", "bad_input", ACME)
    assert "end 2026-01-05 is not after start 2026-01-07" in block and "e.g. start 2026-01-05, end 2026-01-07" in block


def test_a_backfill_of_an_unknown_connection_fails_listing_the_known_ones(dags, trustfile_view):
    block = refused_backfill(dags, trustfile_view, connection_id="conn-acmee", start="2026-01-05",
                             end="2026-01-07", mode="reload")
    assert "Scope: TrustFile connection conn-acmee (no such connection)" in block
    assert "no TrustFile connection 'conn-acmee'; the connections are: conn-acme (Acme Tools)" in block


def test_a_backfill_with_an_impossible_date_is_refused_before_any_run(dags, trustfile_view):
    from airflow.sdk.exceptions import ParamValidationError

    before = trustfile_view()
    started = time.monotonic()
    with pytest.raises(ParamValidationError, match=r"param start: '2026-13-45' is not a 'date'"):
        dags["trustfile_backfill"].test(run_conf={"connection_id": ACME[0], "start": "2026-13-45",
                                                  "end": "2026-01-07", "mode": "reload"})
    assert time.monotonic() - started < 10
    assert trustfile_view() == before
