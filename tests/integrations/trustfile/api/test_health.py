"""GET /health from real checks: our database, the QuickBooks OAuth client and one company, TrustFile's
answer to our token; fast, cached for the vendors, never raising, never quoting a secret."""
from __future__ import annotations

import json
import threading
import time

import psycopg
import pytest
import requests

from integrations.trustfile import consent
from integrations.trustfile.api import health_checks as health
from sandbox import qbo as qbo_sandbox

REALM = qbo_sandbox.REALMS[0]


def statuses(base: str) -> dict[str, tuple[str, str]]:
    response = requests.get(f"{base}/health", timeout=30)
    assert response.status_code == 200
    return {s["type"]: (s["status"], s["description"]) for s in response.json()["statuses"]}


def calls(sandbox, vendor: str, endpoint: str) -> int:
    return len([r for r in sandbox.requests(vendor) if r["path"].endswith(endpoint)])


@pytest.fixture
def authorized(clean_db):
    """`authorized(refresh_token)`: an enabled connection linked to the sandbox's first company."""

    def link(refresh_token: str = qbo_sandbox.INITIAL_REFRESH_TOKENS[REALM]) -> None:
        clean_db.execute("INSERT INTO trustfile.connections (connection_id, enabled) VALUES ('c1', true)")
        clean_db.commit()
        consent.authorize_qbo(clean_db, "c1", REALM, refresh_token)

    return link


def test_configured_systems_without_a_company_are_ok_and_qbo_is_not_called(serve, vendor_connections, sandbox):
    assert statuses(serve()) == {
        "connector": ("OK", "NOMINAL"),
        "hostSystem": ("OK", "OAuth client configured; no enabled company authorized yet"),
        "trustfile": ("OK", "NOMINAL")}
    assert calls(sandbox, "trustfile", "/v3/connections/credential-check") == 1
    assert sandbox.requests("qbo") == []


def test_vendor_checks_are_remembered_so_polling_does_not_reach_the_vendors(serve, vendor_connections, sandbox,
                                                                           authorized):
    authorized()
    base = serve()
    for _ in range(3):
        assert statuses(base)["hostSystem"] == ("OK", "NOMINAL")
    assert calls(sandbox, "trustfile", "/credential-check") == 1
    assert calls(sandbox, "qbo", f"/v3/company/{REALM}/query") == 1   # one COUNT query for one company


def test_trustfile_refusing_our_token_fails_without_quoting_it(serve, vendor_connections, monkeypatch):
    wrong = {**vendor_connections["trustfile_default"], "password": "a-revoked-extractor-token"}
    monkeypatch.setenv("AIRFLOW_CONN_TRUSTFILE_DEFAULT", json.dumps(wrong))
    answer = requests.get(f"{serve()}/health", timeout=30).text
    assert '"type":"trustfile","status":"FAIL","description":"credentials refused (HTTP 401)"' in answer
    assert "a-revoked-extractor-token" not in answer


def test_an_oauth_client_without_its_secret_fails_the_host_system(serve, vendor_connections, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_QBO_DEFAULT", json.dumps({**vendor_connections["qbo_default"], "password": ""}))
    assert statuses(serve())["hostSystem"] == ("FAIL", "OAuth client not configured (client id and secret)")


def test_a_company_whose_consent_was_revoked_degrades_the_host_system(serve, vendor_connections, authorized):
    authorized("RT1-revoked-long-ago")
    status, description = statuses(serve())["hostSystem"]
    assert (status, description) == ("DEGRADED", "a company's consent no longer works (HTTP 400); the extractor "
                                                 "log names it")
    assert "RT1-revoked-long-ago" not in description


def test_quickbooks_failing_fails_the_host_system_after_one_attempt(serve, vendor_connections, sandbox, authorized):
    authorized()
    sandbox.faults("qbo", burst_5xx=5, only_path="/query")
    assert statuses(serve())["hostSystem"] == ("FAIL", "server error (HTTP 503)")
    assert calls(sandbox, "qbo", "/query") == 1


def test_a_slow_vendor_is_degraded_and_a_silent_one_fails_within_the_deadline(serve, vendor_connections, sandbox,
                                                                              monkeypatch):
    monkeypatch.setattr(health, "SLOW_SECONDS", 0.3)
    monkeypatch.setattr(health, "TIMEOUT_SECONDS", 1.0)
    sandbox.faults("trustfile", latency_ms=500)
    status, description = statuses(serve())["trustfile"]
    assert status == "DEGRADED" and description.startswith("slow: answered in 0.")
    sandbox.faults("trustfile", latency_ms=2500)
    started = time.monotonic()
    assert statuses(serve())["trustfile"] == ("FAIL", "no answer within 1 s")
    assert time.monotonic() - started < 2.0


def test_errors_recorded_in_the_last_hour_degrade_the_connector(serve, vendor_connections, clean_db):
    clean_db.execute("INSERT INTO trustfile.errors (at, type, message) VALUES "
                     "(now() - interval '5 minutes', 'CONNECTION', 'throttled'), (now(), 'CONNECTION', 'throttled'), "
                     "(now(), 'SYSTEM', 'TrustFile 503'), (now() - interval '2 hours', 'INTEGRATION', 'old')")
    clean_db.commit()
    assert statuses(serve())["connector"] == (
        "DEGRADED", "errors in the last hour: 2 CONNECTION, 1 SYSTEM (GET /errors)")


def test_an_unreachable_database_or_a_raising_check_is_a_fail_not_an_error(serve, vendor_connections):
    base = serve(conninfo="postgresql://postgres@127.0.0.1:1/none?connect_timeout=1",
                 health_overrides={"trustfile": lambda: 1 / 0})
    found = statuses(base)
    assert found["connector"] == ("FAIL", "OperationalError")
    assert found["trustfile"] == ("FAIL", "ZeroDivisionError")


# ---- the extractor run alone (issue 9, point 9) -------------------------------------------------------

def test_an_app_given_its_database_reads_a_company_s_tokens_there_not_in_integrations_db(
        serve, vendor_connections, authorized, monkeypatch):
    authorized()
    monkeypatch.delenv("AIRFLOW_CONN_INTEGRATIONS_DB")     # only the conninfo the app was given
    assert statuses(serve())["hostSystem"] == ("OK", "NOMINAL")


def test_runnable_alone_with_uvicorn_configured_by_integrations_database_url(vendor_connections, authorized,
                                                                           db_url, sandbox):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from sandbox.launch import free_port

    authorized()
    root = Path(__file__).resolve().parents[4]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "AIRFLOW_CONN_INTEGRATIONS_DB"}
    env.update(INTEGRATIONS_DATABASE_URL=db_url, AVALARA_TO_EXTRACTOR_TOKEN="standalone-token",
               PYTHONPATH=os.pathsep.join([str(root / "plugins"), str(root)]))
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "integrations.trustfile.api.app:create_app",
                               "--factory", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                              cwd=root, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/health", timeout=30)
                break
            except requests.ConnectionError:
                assert server.poll() is None and time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.2)
        found = {s["type"]: (s["status"], s["description"]) for s in answer.json()["statuses"]}
        assert found == dict.fromkeys(("connector", "hostSystem", "trustfile"), ("OK", "NOMINAL"))
        listed = requests.get(f"http://127.0.0.1:{port}/connections", timeout=10,
                              headers={"Authorization": "Bearer standalone-token"})
        assert (listed.status_code, listed.json()) == (200, {"connections": ["c1"]})
    finally:
        server.terminate()
        server.wait(timeout=10)


# ---- the company's QuickBooks quota is the sync's (issue 9, point 15) ---------------------------------

def test_a_recent_successful_sync_answers_for_quickbooks_without_a_call(serve, vendor_connections, sandbox,
                                                                       authorized, clean_db):
    authorized()
    clean_db.execute("UPDATE trustfile.connections SET last_sync_at = now() - interval '20 minutes'")
    clean_db.commit()
    assert statuses(serve())["hostSystem"] == ("OK", "NOMINAL")
    assert sandbox.requests("qbo") == []


def test_the_company_is_probed_at_most_once_per_probe_interval_however_often_health_is_polled(
        serve, vendor_connections, sandbox, authorized, monkeypatch):
    authorized()
    monkeypatch.setattr(health, "CACHE_SECONDS", 0.0)      # every poll runs the checks again
    base = serve()
    for _ in range(4):
        assert statuses(base)["hostSystem"] == ("OK", "NOMINAL")
    assert calls(sandbox, "qbo", f"/v3/company/{REALM}/query") == 1


def test_throttling_is_not_a_failure(serve, vendor_connections, sandbox, authorized):
    authorized()
    sandbox.faults("qbo", throttle_next=5)
    found = statuses(serve())
    assert found["hostSystem"] == ("DEGRADED", "throttled (HTTP 429)")
    sandbox.faults("trustfile", throttle_next=5)
    assert statuses(serve())["trustfile"] == ("DEGRADED", "throttled (HTTP 429)")


def test_a_company_that_must_authorize_again_degrades_the_host_system_without_a_call(
        serve, vendor_connections, sandbox, authorized, clean_db):
    authorized()
    clean_db.execute("UPDATE trustfile.connections SET host_credentials = NULL, consent_lost_at = now()")
    clean_db.commit()
    assert statuses(serve())["hostSystem"] == (
        "DEGRADED", "a company's consent no longer works: it must authorize again (the extractor log names it)")
    assert sandbox.requests("qbo") == []


# ---- a token refresh holding the company's token row; one probe at a time; failures forgotten sooner -------

def oauth_row_locked(db_url: str) -> bool:
    with psycopg.connect(db_url, autocommit=True) as watcher:
        return bool(watcher.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "WHERE c.relname = 'oauth_tokens' AND l.mode = 'RowShareLock' AND l.pid <> pg_backend_pid()").fetchone()[0])


def test_a_token_refresh_in_progress_degrades_the_host_system_and_the_connector_stays_ok(
        serve, vendor_connections, sandbox, authorized, db_url, monkeypatch):
    """Another worker refreshes the company's token (its token row locked while Intuit is slow): every poll
    answers at once, hostSystem DEGRADED, connector OK; no probe waits for the lock and none piles up."""
    from hooks.qbo import QboHook

    authorized()
    monkeypatch.setattr(health, "CACHE_SECONDS", 0.0)
    monkeypatch.setattr(health, "TIMEOUT_SECONDS", 1.0)
    monkeypatch.setattr(health, "TOKEN_LOCK_SECONDS", 0.3, raising=False)
    sandbox.faults("qbo", only_path="/tokens/bearer", latency_ms=9000)
    refresher = threading.Thread(target=lambda: QboHook(
        realm_id=REALM, refresh_token=qbo_sandbox.INITIAL_REFRESH_TOKENS[REALM], conninfo=db_url).check_credentials())
    refresher.start()
    try:
        deadline = time.monotonic() + 10
        while not oauth_row_locked(db_url):
            assert time.monotonic() < deadline, "the refresh never locked the token row"
            time.sleep(0.02)
        base = serve()
        answers = [statuses(base) for _ in range(8)]
        assert oauth_row_locked(db_url)                                  # still refreshing all along
    finally:
        refresher.join(timeout=30)
    assert {a["connector"] for a in answers} == {("OK", "NOMINAL")}
    assert {a["hostSystem"] for a in answers} == {("DEGRADED", "a token refresh is in progress")}
    assert calls(sandbox, "qbo", "/tokens/bearer") == 1 and calls(sandbox, "qbo", "/query") == 1   # the refresher's


def test_one_probe_at_a_time_however_many_polls_wait_for_it(serve, vendor_connections, sandbox, authorized,
                                                            monkeypatch):
    """QuickBooks answers the probe in 2.5 s, past the 1 s deadline: the polls meanwhile start no other probe
    (before: one each, until the probes filled the pool and even the connector check failed)."""
    authorized()
    monkeypatch.setattr(health, "CACHE_SECONDS", 0.0)
    monkeypatch.setattr(health, "TIMEOUT_SECONDS", 1.0)
    sandbox.faults("qbo", only_path="/query", latency_ms=2500)
    base = serve()
    answers = [statuses(base) for _ in range(7)]
    assert {a["connector"] for a in answers} == {("OK", "NOMINAL")}
    assert answers[0]["hostSystem"] == ("FAIL", "no answer within 1 s")
    assert {a["hostSystem"] for a in answers[1:]} == {("DEGRADED", "a QuickBooks probe is still running")}
    time.sleep(2.5)
    assert statuses(base)["hostSystem"] == ("OK", "NOMINAL")           # the probe's answer, once it came
    assert calls(sandbox, "qbo", "/query") == 1


def test_a_failed_probe_is_remembered_for_less_time_than_an_answer(serve, vendor_connections, sandbox, authorized,
                                                                   monkeypatch):
    authorized()
    monkeypatch.setattr(health, "CACHE_SECONDS", 0.0)
    monkeypatch.setattr(health, "FAILED_PROBE_SECONDS", 0.5, raising=False)
    sandbox.faults("qbo", only_path="/query", burst_5xx=1)
    base = serve()
    assert statuses(base)["hostSystem"] == ("FAIL", "server error (HTTP 503)")
    assert statuses(base)["hostSystem"] == ("FAIL", "server error (HTTP 503)")    # remembered: no new call
    assert calls(sandbox, "qbo", "/query") == 1
    time.sleep(0.6)
    assert statuses(base)["hostSystem"] == ("OK", "NOMINAL")             # probed again, well before 15 minutes
    assert statuses(base)["hostSystem"] == ("OK", "NOMINAL")
    assert calls(sandbox, "qbo", "/query") == 2
