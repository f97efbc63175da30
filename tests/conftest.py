"""Test fixtures: a real PostgreSQL for the session, a fresh migrated database per test module.

The server is the embedded one (started in a temporary folder on a free port, by the same code as
`make up`'s, so with a password: generated per session, scram-sha-256, in every URL below) unless
TEST_DATABASE_URL names a server we may create databases on. Airflow is configured before it
is first imported: its metadata database lives on the same server, for the DAG tests.
"""
from __future__ import annotations

import json
import os
import secrets
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from sandbox.launch import free_port

ROOT = Path(__file__).resolve().parents[1]
_TMP = Path(tempfile.mkdtemp(prefix="integrations-tests-"))


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


_EXTERNAL = os.environ.get("TEST_DATABASE_URL")


def _embedded_server():
    from stack.embedded_pg import EmbeddedPostgres

    return EmbeddedPostgres(_TMP / "pg" / "data", free_port(), password=secrets.token_urlsafe(32))


_SERVER = None if _EXTERNAL else _embedded_server()
SERVER_URL = _EXTERNAL or _SERVER.url()
_RUN = uuid.uuid4().hex[:8]
AIRFLOW_DB = f"airflow_test_{_RUN}"

os.environ.update(
    {
        "AIRFLOW_HOME": str(_TMP / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # As `make up` and any deployment: Airflow encrypts connection passwords and extras at rest.
        "AIRFLOW__CORE__FERNET_KEY": __import__("cryptography.fernet").fernet.Fernet.generate_key().decode(),
        # dag.test() serializes DAGs from the configured bundles: ours, plus the tests' own DAGs.
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps([
            {"name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
             "kwargs": {"path": str(ROOT / "dags")}},
            {"name": "test-dags", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
             "kwargs": {"path": str(ROOT / "tests" / "dag_bundle")}},
        ]),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": _with_database(SERVER_URL, AIRFLOW_DB).replace(
            "postgresql://", "postgresql+psycopg2://", 1
        ),
    }
)


@pytest.fixture(scope="session")
def pg_server():
    """Admin URL of a running PostgreSQL server (embedded unless TEST_DATABASE_URL is set)."""
    if _EXTERNAL:
        yield SERVER_URL
        return
    _SERVER.start(server_options=("-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"))
    yield SERVER_URL
    _SERVER.stop()


def _create_database(server_url: str, name: str, template: str | None = None) -> str:
    import psycopg
    from psycopg import sql

    with psycopg.connect(server_url, autocommit=True) as conn:
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        conn.execute(statement)
    return _with_database(server_url, name)


def _drop_database(server_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def migrated_template(pg_server):
    """A database with every migration applied, cloned by each test module."""
    from etl import migrate
    from etl.db import connect

    name = f"integrations_template_{_RUN}"
    url = _create_database(pg_server, name)
    with connect(url, autocommit=True) as conn:
        migrate.migrate(conn)
    yield name
    _drop_database(pg_server, name)


@pytest.fixture(scope="module")
def empty_db(pg_server, request):
    """A fresh database with nothing in it (for the migration tests)."""
    name = f"t_{_RUN}_{uuid.uuid4().hex[:8]}"
    yield _create_database(pg_server, name)
    _drop_database(pg_server, name)


@pytest.fixture(scope="module")
def db_url(pg_server, migrated_template):
    """A fresh, migrated integrations database for this test module; also the `integrations_db` connection."""
    name = f"t_{_RUN}_{uuid.uuid4().hex[:8]}"
    url = _create_database(pg_server, name, template=migrated_template)
    previous = os.environ.get("AIRFLOW_CONN_INTEGRATIONS_DB")
    os.environ["AIRFLOW_CONN_INTEGRATIONS_DB"] = url
    yield url
    if previous is None:
        os.environ.pop("AIRFLOW_CONN_INTEGRATIONS_DB", None)
    else:
        os.environ["AIRFLOW_CONN_INTEGRATIONS_DB"] = previous
    _drop_database(pg_server, name)


@pytest.fixture
def conn(db_url):
    from etl.db import connect

    with connect(db_url) as connection:
        yield connection


@pytest.fixture(scope="session")
def airflow_db(pg_server):
    """Airflow's metadata database, migrated, for tests that run DAGs with dag.test()."""
    _create_database(pg_server, AIRFLOW_DB)
    from airflow.utils.db import upgradedb

    upgradedb()
    yield
    from airflow import settings

    settings.dispose_orm()
    _drop_database(pg_server, AIRFLOW_DB)


@pytest.fixture(scope="session")
def sandbox_url():
    """Base URL of `python -m sandbox`, started once for the session on a free port."""
    from sandbox import launch

    process, url = launch.start()
    yield url
    process.terminate()
    process.wait(timeout=10)


class SandboxControl:
    """The tests' handle on the sandbox: reset, faults, and the requests it received."""

    def __init__(self, url: str):
        self.url = url

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        import urllib.request

        request = urllib.request.Request(f"{self.url}/_sandbox{path}", method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def reset(self) -> None:
        self._call("POST", "/reset")

    def faults(self, vendor: str, **faults) -> None:
        self._call("PUT", f"/faults/{vendor}", faults)

    def control(self, vendor: str, **payload) -> dict:
        return self._call("PUT", f"/control/{vendor}", payload)

    def state(self, vendor: str) -> dict:
        return self._call("GET", f"/state/{vendor}")

    def requests(self, vendor: str) -> list[dict]:
        return self._call("GET", f"/requests?vendor={vendor}")["requests"]

    def trustfile_items(self, connection_id: str, item_id: str) -> list[dict]:
        """What TrustFile holds under an itemId (sale and/or refund), read as TrustFile's own API answers."""
        import urllib.error
        import urllib.request

        from sandbox import trustfile as trustfile_sandbox

        request = urllib.request.Request(f"{self.url}/trustfile/v3/connections/{connection_id}/items/{item_id}",
                                         headers={"Authorization": f"Bearer {trustfile_sandbox.TOKEN}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())["items"]
        except urllib.error.HTTPError as error:
            if error.code == 404 and b"Item not found" in error.read():
                return []
            raise


@pytest.fixture
def sandbox(sandbox_url, request):
    """The session's sandbox, reset around the test. API users must never delete OMS-Pro records: after
    every test but the sandbox's own tests of DELETE, TrackVia has received none (issue 12's acceptance)."""
    control = SandboxControl(sandbox_url)
    control.reset()
    yield control
    deletes = control.state("trackvia")["delete_requests"]
    control.reset()
    if request.node.get_closest_marker("deletes_in_trackvia") is None:
        assert deletes == 0, f"{request.node.nodeid} sent {deletes} DELETE request(s) to TrackVia"


# ---- the extractor API served for real: uvicorn on 127.0.0.1 under /extractor, as the Airflow plugin
# mounts it, with the vendor connections on the sandbox and a fresh state in our database ----------

EXTRACTOR_TOKEN = "tf-to-extractor-test-token"
EXTRACTOR_AUTH = {"Authorization": f"Bearer {EXTRACTOR_TOKEN}"}


@pytest.fixture
def auth() -> dict:
    """The headers TrustFile sends us."""
    return dict(EXTRACTOR_AUTH)


@pytest.fixture
def clean_db(conn, monkeypatch):
    """No connections, tokens, watermarks or errors left by another test; a Fernet key of our own."""
    from cryptography.fernet import Fernet

    monkeypatch.setenv("INTEGRATIONS_FERNET_KEY", Fernet.generate_key().decode())
    conn.execute("TRUNCATE trustfile.connections, trustfile.errors, etl.oauth_tokens, etl.watermarks CASCADE")
    conn.execute("UPDATE trustfile.connector SET enabled = true")
    conn.commit()
    return conn


@pytest.fixture
def vendor_connections(sandbox, monkeypatch):
    """qbo_default as the extractor's OAuth client (no company of its own) and trustfile_default, on the sandbox."""
    from sandbox import qbo as qbo_sandbox
    from sandbox import trustfile as trustfile_sandbox

    qbo = {"conn_type": "qbo", "host": f"{sandbox.url}/qbo", "login": qbo_sandbox.CLIENT_ID,
           "password": qbo_sandbox.CLIENT_SECRET,
           "extra": {"oauth_endpoint_url": f"{sandbox.url}/qbo/oauth2/v1/tokens/bearer",
                     "authorize_url": f"{sandbox.url}/qbo/connect/oauth2"}}
    trustfile = {"conn_type": "trustfile", "host": f"{sandbox.url}/trustfile", "password": trustfile_sandbox.TOKEN,
                 "extra": {"provisioning_url": f"{sandbox.url}/trustfile"}}
    monkeypatch.setenv("AIRFLOW_CONN_QBO_DEFAULT", json.dumps(qbo))
    monkeypatch.setenv("AIRFLOW_CONN_TRUSTFILE_DEFAULT", json.dumps(trustfile))
    return {"qbo_default": qbo, "trustfile_default": trustfile}


@pytest.fixture
def serve(db_url, clean_db):
    """`serve(**create_app_options) -> base URL` (…/extractor); every server stops after the test."""
    from fastapi import FastAPI

    from integrations.trustfile.api.app import create_app
    from tests.loopback import LoopbackServers

    servers = LoopbackServers()

    def start(**options) -> str:
        port = free_port()
        base = f"http://127.0.0.1:{port}/extractor"
        options = {"conninfo": db_url, "token": EXTRACTOR_TOKEN, "public_url": base, **options}
        root = FastAPI()
        root.mount("/extractor", create_app(**options))
        servers.start(root, "the extractor API", port=port)
        return base

    yield start
    servers.stop()
