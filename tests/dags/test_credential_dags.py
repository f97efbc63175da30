"""credential_registry and credential_rotation under real Airflow (dag.test()), against the sandbox."""
from __future__ import annotations

import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from sandbox import trustfile as tf_sandbox

ROOT = Path(__file__).resolve().parents[2]
UTC = dt.timezone.utc
TRUSTFILE = "airflow:trustfile_default"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


@pytest.fixture
def registry(clean_db, vendor_connections):
    clean_db.execute("TRUNCATE etl.credentials CASCADE")
    clean_db.commit()
    return clean_db


@pytest.fixture
def trustfile_connection(sandbox, monkeypatch):
    """`(password, expires_at)` -> the trustfile_default connection as an operator would edit it in the form."""
    def edit(password: str = tf_sandbox.TOKEN, expires_at: str | None = None) -> None:
        extra = {"provisioning_url": f"{sandbox.url}/trustfile", **({"expires_at": expires_at} if expires_at else {})}
        monkeypatch.setenv("AIRFLOW_CONN_TRUSTFILE_DEFAULT", json.dumps(
            {"conn_type": "trustfile", "host": f"{sandbox.url}/trustfile", "password": password, "extra": extra}))
    return edit


@pytest.fixture
def webhook(monkeypatch):
    """A chat webhook on 127.0.0.1: the texts it received."""
    received: list[str] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"])))["text"])
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("ALERT_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/hooks/secret-token")
    yield received
    server.shutdown()


def states(run) -> dict[str, tuple[str, int]]:
    return {ti.task_id: (str(ti.state), ti.try_number) for ti in run.get_task_instances()}


def row(conn, credential_id: str) -> tuple:
    return conn.execute("SELECT last_verified_at, last_verify_error, expires_at FROM etl.credentials "
                        "WHERE credential_id = %s", (credential_id,)).fetchone()


def test_the_rotation_form_asks_for_an_id_only_with_title_and_description(dagbag):
    params = dagbag.dags["credential_rotation"].params
    assert list(params) == ["credential_id"]
    param = params.get_param("credential_id")
    assert param.schema["title"] and "never here" in param.description
    assert not dagbag.dags["credential_registry"].params                              # nothing to choose


def test_the_daily_run_fails_at_once_when_a_credential_has_expired(airflow_db, dagbag, registry, trustfile_connection):
    trustfile_connection(expires_at=(dt.datetime.now(UTC) - dt.timedelta(days=1)).date().isoformat())
    run = dagbag.get_dag("credential_registry").test()
    assert str(run.state) == "failed"
    assert states(run) == {"verify_credentials": ("success", 1), "report_expirations": ("failed", 1)}
    verified, error, expires = row(registry, TRUSTFILE)
    assert error is None and verified > dt.datetime.now(UTC) - dt.timedelta(minutes=5)   # works, but expired
    assert expires < dt.datetime.now(UTC)


def test_the_daily_run_alerts_once_before_an_expiry_and_stays_green(airflow_db, dagbag, registry,
                                                                    trustfile_connection, webhook):
    expires = (dt.datetime.now(UTC) + dt.timedelta(days=6)).date()
    trustfile_connection(expires_at=expires.isoformat())
    for _ in range(2):
        run = dagbag.get_dag("credential_registry").test()
        assert str(run.state) == "success", states(run)
    assert len(webhook) == 1 and f"(airflow:trustfile_default, owner integrations) expires on {expires}" in webhook[0]
    assert "/credentials.md#airflow-connections" in webhook[0]
    assert {r[0] for r in registry.execute("SELECT days_before FROM etl.credential_alerts")} == {30, 14, 7}


def test_a_verified_rotation_updates_last_verified(airflow_db, dagbag, registry, trustfile_connection):
    trustfile_connection(password="the-revoked-token")
    assert str(dagbag.get_dag("credential_registry").test().state) == "failed"
    verified, error, _ = row(registry, TRUSTFILE)
    assert verified is None and "HTTP 401" in error and "the-revoked-token" not in error

    next_year = (dt.datetime.now(UTC) + dt.timedelta(days=365)).date()
    trustfile_connection(password=tf_sandbox.TOKEN, expires_at=next_year.isoformat())   # the form, not the Params
    before = dt.datetime.now(UTC)
    run = dagbag.get_dag("credential_rotation").test(run_conf={"credential_id": TRUSTFILE})
    assert str(run.state) == "success", states(run)
    verified, error, expires = row(registry, TRUSTFILE)
    assert verified >= before and error is None
    assert expires == dt.datetime.combine(next_year, dt.time(), UTC)
    assert str(dagbag.get_dag("credential_registry").test().state) == "success"


def test_a_rotation_of_an_unknown_credential_fails_at_once_and_names_the_valid_ones(airflow_db, dagbag, registry,
                                                                                  trustfile_connection, capsys):
    trustfile_connection()
    run = dagbag.get_dag("credential_rotation").test(run_conf={"credential_id": "airflow:trustfile_defualt"})
    assert str(run.state) == "failed"
    assert states(run)["validate_credential"] == ("failed", 1)
    assert "did you mean 'airflow:trustfile_default'" in capsys.readouterr().out
    assert row(registry, TRUSTFILE)[0] is None                                          # nothing was checked
