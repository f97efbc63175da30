"""The ItsPerfect admin API served for real: Airflow's own API server app with our plugins (the console's
`airflow_api` fixture), real JWTs from its SimpleAuthManager (users `admin` and `viewer`), connections created
through Airflow's REST API as a person would, and our rows seeded straight into PostgreSQL."""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import httpx
import pytest

from tests.console.conftest import airflow_api  # noqa: F401 - Airflow's API server app, served on a free port

PREFIX = "/itsperfect"


@pytest.fixture(scope="module", autouse=True)
def server_context():
    """What `airflow api-server` sets before anything else (airflow.api_fastapi.main): connections are then read
    from the metadata database too, as in production, not only from AIRFLOW_CONN_* variables."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("_AIRFLOW_PROCESS_CONTEXT", "server")
        yield


@pytest.fixture(scope="module")
def api(airflow_api):  # noqa: F811 - the imported fixture
    """The API server of this module; our app is built again on its first request, on this module's database
    (Airflow loads plugins once per process, and the earlier module's database is gone)."""
    from airflow import plugins_manager

    apps, _ = plugins_manager.get_fastapi_plugins()
    [mounted] = [entry["app"] for entry in apps if entry["url_prefix"] == PREFIX]
    mounted.app = None
    return airflow_api


def _client(api, user: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {api.token(user)}"} if user else {}
    return httpx.Client(base_url=api.url + PREFIX, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def admin(api):
    with _client(api, "admin") as client:
        yield client


@pytest.fixture(scope="module")
def viewer(api):
    with _client(api, "viewer") as client:
        yield client


@pytest.fixture(scope="module")
def anonymous(api):
    with _client(api, None) as client:
        yield client


@dataclass
class AirflowConnections:
    """Airflow connections, created and deleted through Airflow's REST API as a person (the admin) would."""

    client: httpx.Client
    created: list[str]

    def create(self, conn_id: str, conn_type: str = "itsperfect", *, host: str = "https://tenant.itsperfect.it/api/v2",
               password: str = "api-password", **extra) -> None:
        answer = self.client.post("/api/v2/connections", json={
            "connection_id": conn_id, "conn_type": conn_type, "host": host, "password": password,
            "extra": json.dumps(extra)})
        assert answer.status_code == 201, answer.text
        self.created.append(conn_id)

    def delete(self, conn_id: str) -> None:
        self.client.delete(f"/api/v2/connections/{conn_id}").raise_for_status()
        self.created.remove(conn_id)


@pytest.fixture
def airflow_connections(api):
    """The metadata database is the session's: what a test creates is deleted at its end."""
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {api.token('admin')}"},
                      timeout=30) as client:
        connections = AirflowConnections(client, [])
        yield connections
        for conn_id in connections.created:
            client.delete(f"/api/v2/connections/{conn_id}")


@dataclass
class Rows:
    """Rows of migration 0011 as the business and the pipelines would have left them."""

    conn: object

    def warehouse(self, connector: str, warehouse_id: int, name: str, *, active: bool = True) -> None:
        self.conn.execute("INSERT INTO itsperfect.warehouses (connector, warehouse_id, name, active) "
                          "VALUES (%s, %s, %s, %s)", (connector, warehouse_id, name, active))

    def account(self, account_id: str, *locations: str) -> None:
        self.conn.execute("INSERT INTO commerce.accounts (account_id, name) VALUES (%s, %s)",
                          (account_id, f"Account {account_id}"))
        for location_id in locations:
            self.conn.execute("INSERT INTO commerce.locations (location_id, account_id, name) VALUES (%s, %s, %s)",
                              (location_id, account_id, f"Store {location_id}"))

    def export(self, order_id: str, account_id: str, connector: str, state: str, *, error: str | None = None) -> None:
        reference = f"REF-{order_id}"
        self.conn.execute(
            "INSERT INTO commerce.orders (order_id, account_id, reference, order_number, customer_id, ordered_at, "
            "currency) VALUES (%s, %s, %s, %s, 'C1', %s, 'EUR')",
            (order_id, account_id, reference, order_id, dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)))
        sent = state == "sent"
        self.conn.execute(
            "INSERT INTO itsperfect.order_exports (order_id, connector, reference, state, payload, attempts, "
            "itsperfect_id, itsperfect_number, error, completed_at) VALUES (%s, %s, %s, %s, '{}', 1, %s, %s, %s, %s)",
            (order_id, connector, reference, state, 9001 if sent else None, "IP-9001" if sent else None, error,
             dt.datetime.now(dt.timezone.utc) if state != "sending" else None))

    def count(self, table: str) -> int:
        return self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


@pytest.fixture
def rows(conn):
    """Nothing of the connector model, our commerce tables or watermarks left by another test; commit before a
    request."""
    conn.execute("TRUNCATE itsperfect.connectors, commerce.accounts, etl.watermarks, etl.watermark_history CASCADE")
    conn.commit()
    yield Rows(conn)
    conn.rollback()
