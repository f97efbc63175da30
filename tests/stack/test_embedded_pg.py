"""The embedded PostgreSQL of `make up` asks every client for its password (SCRAM), on TCP and on
its Unix socket: another account on the machine is no longer superuser of both databases.

The server is started the way `make up` starts it (`stack.__main__.resolve_databases()`, its data
and secrets in a folder of this test), on a port of its own."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from sandbox.launch import free_port
from stack import __main__ as stack_main
from stack import settings
from stack.embedded_pg import EmbeddedPostgres, pg_bin

ROOT = Path(__file__).resolve().parents[2]


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc, scheme="postgresql"))


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc, scheme="postgresql"))


@pytest.fixture(scope="module")
def local_dir():
    folder = Path(tempfile.mkdtemp(prefix="stack-pg-test-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_port():
    return free_port()


@pytest.fixture
def make_up_settings(local_dir, pg_port, monkeypatch):
    """stack.settings pointed at this test's folder and port, no database URL given: the embedded server."""
    monkeypatch.setattr(settings, "LOCAL", local_dir)
    monkeypatch.setattr(settings, "PGDATA", local_dir / "postgres" / "data")
    monkeypatch.setattr(settings, "SECRETS_FILE", local_dir / "secrets.json")
    monkeypatch.setattr(settings, "EMBEDDED_PG_PORT", pg_port)
    for name in ("INTEGRATIONS_DATABASE_URL", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "PGPASSWORD", "PGUSER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PGPASSFILE", str(local_dir / "no-such-pgpass"))   # no password from ~/.pgpass either
    return local_dir


@pytest.fixture
def running(make_up_settings, capsys):
    integrations, metadata, server = stack_main.resolve_databases()
    printed = capsys.readouterr()
    yield integrations, metadata, server, printed.out + printed.err
    server.stop()


def test_a_connection_without_the_password_is_refused_and_one_with_it_works(running, make_up_settings):
    integrations, metadata, server, printed = running
    for url in (integrations, metadata):                                  # both databases, over TCP
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(_without_password(url), connect_timeout=5).close()

    password = json.loads((make_up_settings / "secrets.json").read_text())["postgres_password"]
    assert len(password) >= 24
    for url in (integrations, metadata):
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(_with_password(url, "not-" + password), connect_timeout=5).close()
        with psycopg.connect(_with_password(url, password), connect_timeout=5) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    with psycopg.connect(integrations) as conn:                       # the URL make up hands to everyone
        assert conn.execute("SELECT current_database()").fetchone() == ("integrations",)
        verifier = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'").fetchone()[0]
    assert verifier.startswith("SCRAM-SHA-256$")
    with psycopg.connect(metadata.replace("postgresql+psycopg2://", "postgresql://", 1)) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("airflow",)

    # The Unix socket (in the data folder) asks too: no `trust` line is left in pg_hba.conf.
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(host=str(server.pgdata), port=server.port, user="postgres", dbname="postgres",
                        connect_timeout=5).close()
    hba = [line.split() for line in (server.pgdata / "pg_hba.conf").read_text().splitlines()
           if line.strip() and not line.lstrip().startswith("#")]
    assert hba and {line[-1] for line in hba} == {"scram-sha-256"}

    secrets_file = make_up_settings / "secrets.json"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert password not in printed                                     # never in make up's output
    assert password not in repr(server) and password not in str(server)


def test_a_data_folder_made_by_an_older_make_up_with_trust_is_secured_on_start(make_up_settings, capsys):
    """`.local/postgres/data` initialised with `--auth=trust` before this change, its server even still
    running: the next start stops it, rewrites its pg_hba.conf and sets the password, so nobody needs
    to delete their data."""
    pgdata = make_up_settings / "old-postgres" / "data"
    old = EmbeddedPostgres(pgdata, free_port(), password="unused-by-the-old-layout")
    pgdata.mkdir(parents=True)
    old._prepare_permissions()
    pg_bin.initdb(["--auth=trust", "--encoding=UTF8", "--locale=C", "-U", "postgres"], pgdata=pgdata,
                  **old._run_as())
    assert "trust" in (pgdata / "pg_hba.conf").read_text()
    pg_bin.pg_ctl(["-w", "-o", f"-h 127.0.0.1 -p {old.port} -k {pgdata}", "-l", str(pgdata.parent / "log"),
                   "start"], pgdata=pgdata, timeout=90, **old._run_as())     # and still running, the old way
    with psycopg.connect(_without_password(old.url())) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)

    server = EmbeddedPostgres(pgdata, old.port, password="a-new-generated-password-0123456789")
    server.start()
    try:
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(_without_password(server.url()), connect_timeout=5).close()
        with psycopg.connect(server.url(), connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop()
    assert "a-new-generated-password" not in "".join(capsys.readouterr())


def test_the_password_in_the_secrets_file_is_the_one_the_server_takes_after_a_restart(running, make_up_settings):
    """The secrets file is the source of truth: a restart (`make up` again) keeps the password working,
    and a secrets file regenerated beside old data is applied at the next start."""
    integrations, _, server, _ = running
    server.stop()
    secrets_file = make_up_settings / "secrets.json"
    stored = json.loads(secrets_file.read_text())
    stored["postgres_password"] = "rotated-" + stored["postgres_password"]
    secrets_file.write_text(json.dumps(stored))
    again, _, server_again = stack_main.resolve_databases()
    try:
        assert again != integrations
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(integrations, connect_timeout=5).close()
        with psycopg.connect(again, connect_timeout=5) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("integrations",)
    finally:
        server_again.stop()


def test_the_test_server_is_the_same_shape_and_asks_for_a_password_too(pg_server):
    """tests/conftest.py starts its server with the same code and a generated password, so every test
    runs against what `make up` runs."""
    if os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("TEST_DATABASE_URL names an external server")
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(_without_password(pg_server), connect_timeout=5).close()
    with psycopg.connect(pg_server, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_migrate_and_psql_commands_use_the_password_without_showing_it(running, make_up_settings, pg_port, capsys):
    """`python -m stack migrate` (what `make migrate` should run) and `python -m stack psql` (the runbook's
    way in) reach the password-protected server with the secrets file's password, and print it nowhere."""
    password = json.loads((make_up_settings / "secrets.json").read_text())["postgres_password"]
    assert stack_main.main(["migrate"]) == 0
    printed = capsys.readouterr()
    assert "migrations:" in printed.out and "postgres:***@" in printed.out

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "INTEGRATIONS_DATABASE_URL"))}
    env.update(STACK_LOCAL_DIR=str(make_up_settings), EMBEDDED_PG_PORT=str(pg_port),
               PGPASSFILE=str(make_up_settings / "no-such-pgpass"))
    psql = subprocess.run([sys.executable, "-m", "stack", "psql"], input="SELECT count(*) > 0 AS migrated "
                          "FROM etl.schema_migrations;\n", env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert psql.returncode == 0, psql.stderr
    assert " t\n" in psql.stdout
    for text in (printed.out, printed.err, psql.stdout, psql.stderr):
        assert password not in text
