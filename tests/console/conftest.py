"""Fixtures of the Integrations page: scopes written straight into the engine's tables (so their times can be
set in the past), and Airflow's own API server app with our plugins mounted, served for real.

`airflow_api` builds the app the way `airflow api-server` does (`airflow.api_fastapi.app.create_app`): Airflow's
plugin manager loads plugins/airflow_plugin.py and mounts its apps, the SimpleAuthManager issues real JWTs from
POST /auth/token, and Airflow's metadata database (the `airflow_db` fixture) answers its revoked-token check.
"""
from __future__ import annotations

import datetime as dt
import json
import secrets
from dataclasses import dataclass

import pytest

from tests.loopback import LoopbackServers

UTC = dt.timezone.utc
USERS = {"admin": "ADMIN", "viewer": "VIEWER"}


@pytest.fixture
def console_db(clean_db):
    """No scopes, runs, quarantined records or credentials left by another test."""
    clean_db.execute("TRUNCATE etl.run_ledger, etl.quarantine, etl.credentials CASCADE")
    clean_db.commit()
    return clean_db


@dataclass
class Seed:
    """Writes scopes as the pipelines would have left them, at chosen times."""

    conn: object
    now: dt.datetime

    def connection(self, connection_id: str, *, company_name: str | None = None, host_system: str = "qbo",
                   host_identifier: str | None = "9130350000000001", enabled: bool = True, authorized: bool = True,
                   start_date: dt.date | None = dt.date(2026, 1, 1), next_sync_at: dt.datetime | None = None,
                   consent_lost: bool = False, secret: bytes = b"gAAAA-encrypted") -> None:
        self.conn.execute(
            "INSERT INTO trustfile.connections (connection_id, enabled, start_date, host_system, host_identifier, "
            "host_credentials, company_name, company_token, next_sync_at, consent_lost_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (connection_id, enabled, start_date, host_system, host_identifier, secret if authorized else None,
             company_name, secret, next_sync_at, self.now if consent_lost else None))

    def run(self, pipeline: str, scope: str, status: str, *, ago: dt.timedelta, took: dt.timedelta | None = None,
            error: str | None = None, mode: str = "incremental", run_id: str | None = None) -> None:
        started = self.now - ago
        finished = None if status == "running" else started + (took or dt.timedelta(minutes=2))
        self.conn.execute(
            "INSERT INTO etl.run_ledger (pipeline, scope, run_id, task_id, mode, status, error, started_at, "
            "finished_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (pipeline, scope, run_id or f"scheduled__{started.isoformat()}", "sync_connection", mode, status, error,
             started, finished))

    def quarantine(self, pipeline: str, scope: str, count: int) -> None:
        self.conn.execute(
            "INSERT INTO etl.quarantine (pipeline, scope, record_key, reason, payload) "
            "SELECT %s, %s, 'Invoice-' || n, 'no tax code', '{}'::jsonb FROM generate_series(1, %s) AS n",
            (pipeline, scope, count))

    def credential(self, credential_id: str, *, integration: str, name: str, scope: str | None = None,
                   expires_in: dt.timedelta | None = None, kind: str = "external") -> None:
        self.conn.execute(
            "INSERT INTO etl.credentials (credential_id, integration, scope, name, kind, expires_at) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (credential_id, integration, scope, name, kind, None if expires_in is None else self.now + expires_in))

    def watermark(self, pipeline: str, scope: str, *, paused_reason: str | None = None) -> None:
        self.conn.execute(
            "INSERT INTO etl.watermarks (pipeline, scope, cursor_kind, ts_value, moved_by_run, paused_reason) "
            "VALUES (%s, %s, 'timestamp', %s, 'seed', %s)", (pipeline, scope, self.now, paused_reason))

    def many(self, count: int, *, runs_each: int = 48) -> list[str]:
        """`count` TrustFile companies synced hourly for `runs_each` hours, every tenth one failing since two
        runs, with quarantined records and credentials: the page's worst realistic day. Returns their names."""
        values = {"count": count, "runs": runs_each, "now": self.now,
                  "next": self.now.replace(minute=0) + dt.timedelta(hours=1)}
        for statement in MANY:
            self.conn.execute(statement, values)
        return [f"Company {n}" for n in range(1, count + 1)]


MANY = (
    """INSERT INTO trustfile.connections (connection_id, enabled, start_date, host_system, host_identifier,
                                          host_credentials, company_name, next_sync_at)
       SELECT 'conn-' || n, true, DATE '2026-01-01', 'qbo', 'realm-' || n, '\\x01', 'Company ' || n, %(next)s
         FROM generate_series(1, %(count)s) AS n""",
    """INSERT INTO etl.run_ledger (pipeline, scope, run_id, mode, status, error, started_at, finished_at)
       SELECT 'trustfile_sync', 'conn-' || n, 'scheduled__' || h, 'incremental',
              CASE WHEN n %% 10 = 0 AND h <= 2 THEN 'failed' ELSE 'success' END,
              CASE WHEN n %% 10 = 0 AND h <= 2 THEN 'VendorApiError: QuickBooks Online answered 503' END,
              %(now)s - make_interval(hours => h), %(now)s - make_interval(hours => h) + interval '1 minute'
         FROM generate_series(1, %(count)s) AS n, generate_series(1, %(runs)s) AS h""",
    """INSERT INTO etl.quarantine (pipeline, scope, record_key, reason, payload)
       SELECT 'trustfile_sync', 'conn-' || n, 'Invoice-' || k, 'no tax code', '{}'::jsonb
         FROM generate_series(1, %(count)s) AS n, generate_series(1, n %% 4) AS k""",
    """INSERT INTO etl.credentials (credential_id, integration, scope, name, kind, expires_at)
       SELECT 'qbo:refresh_token:realm-' || n, 'qbo', 'conn-' || n, 'QuickBooks refresh token, Company ' || n,
              'oauth_refresh_token', %(now)s + make_interval(days => n)
         FROM generate_series(1, %(count)s) AS n""",
)


@pytest.fixture
def seed(console_db):
    """A `Seed` at the present minute; commit with `seed.conn.commit()` before a request reads it."""
    return Seed(console_db, dt.datetime.now(UTC).replace(second=0, microsecond=0))


# ---- Airflow's API server, as `airflow api-server` builds it, on a free port ---------------------------------

@dataclass
class AirflowApi:
    url: str
    passwords: dict[str, str]

    def token(self, username: str) -> str:
        """Log in as the UI does (POST /auth/token with the user's password): the JWT it keeps in `_token`."""
        import httpx

        answer = httpx.post(f"{self.url}/auth/token", json={"username": username, "password": self.passwords[username]})
        assert answer.status_code == 201, answer.text
        return answer.json()["access_token"]


def _airflow_environment(tmp_path_factory, db_url: str) -> tuple[dict[str, str], dict[str, str]]:
    home = tmp_path_factory.mktemp("airflow-api")
    passwords = {user: secrets.token_urlsafe(12) for user in USERS}
    passwords_file = home / "passwords.json"
    passwords_file.write_text(json.dumps(passwords))
    return {
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r.lower()}" for u, r in USERS.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
        "INTEGRATIONS_DATABASE_URL": db_url,
    }, passwords


@pytest.fixture(scope="module")
def airflow_api(airflow_db, db_url, tmp_path_factory):
    """Airflow's API server app with our plugins, served by uvicorn on 127.0.0.1; users `admin` and `viewer`."""
    environment, passwords = _airflow_environment(tmp_path_factory, db_url)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        from airflow.api_fastapi import app as airflow_app

        airflow_app.purge_cached_app()
        servers = LoopbackServers()
        port = servers.start(airflow_app.create_app(apps="core"), "Airflow's API server app", lifespan="on",
                             timeout=30)
        yield AirflowApi(f"http://127.0.0.1:{port}", passwords)
        servers.stop()
        airflow_app.purge_cached_app()
