"""Every route of the ItsPerfect admin API asks Airflow's own auth manager: anonymous 401, a user without the
right on connections 403 (the SimpleAuthManager gives connections to OP and ADMIN only, reads included), and a
refused write changes nothing."""
from __future__ import annotations

import jwt
import pytest
from fastapi.routing import APIRoute

from integrations.itsperfect.api.app import create_app

ROUTES = {
    ("GET", "/connectors"), ("GET", "/connectors/{connection_id}"), ("PUT", "/connectors/{connection_id}"),
    ("DELETE", "/connectors/{connection_id}"), ("GET", "/connectors/{connection_id}/warehouses"),
    ("GET", "/connectors/{connection_id}/attributes"), ("GET", "/connectors/{connection_id}/attributes/{name}"),
    ("PUT", "/connectors/{connection_id}/attributes/{name}"),
    ("DELETE", "/connectors/{connection_id}/attributes/{name}"),
    ("GET", "/accounts/{account_id}/connector"), ("PUT", "/accounts/{account_id}/connector"),
    ("DELETE", "/accounts/{account_id}/connector"),
    ("GET", "/locations/{location_id}/connector"), ("PUT", "/locations/{location_id}/connector"),
    ("DELETE", "/locations/{location_id}/connector"),
    ("GET", "/order-exports"), ("POST", "/order-exports/{order_id}/retry"),
}
VALUES = {"connection_id": "shop_eu", "name": "channel", "account_id": "A1", "location_id": "L1", "order_id": "O1"}
BODIES = {"/connectors/{connection_id}/attributes/{name}": {"value": "web"},
          "/accounts/{account_id}/connector": {"connector": "shop_eu", "warehouse_id": 1},
          "/locations/{location_id}/connector": {"connector": "shop_eu", "warehouse_id": 1}}


def _routes() -> list[tuple[str, str]]:
    app = create_app("postgresql://never-used")
    return sorted((method, route.path) for route in app.routes if isinstance(route, APIRoute)
                  for method in route.methods)


def _request(client, method: str, path: str):
    body = BODIES.get(path) if method in ("PUT", "POST") else None
    return client.request(method, path.format(**VALUES), json=body)


@pytest.fixture
def seeded(rows):
    """A registered connector, mapped, with an attribute and a refused export: what a refused write could change."""
    rows.conn.execute("INSERT INTO itsperfect.connectors (connector) VALUES ('shop_eu')")
    rows.warehouse("shop_eu", 1, "Main")
    rows.account("A1", "L1")
    rows.conn.execute("INSERT INTO itsperfect.account_connectors VALUES ('A1', 'shop_eu', 1)")
    rows.conn.execute("INSERT INTO itsperfect.connector_locations VALUES ('L1', 'shop_eu', 1)")
    rows.conn.execute("INSERT INTO itsperfect.extension_attributes VALUES ('shop_eu', 'channel', 'web')")
    rows.export("O1", "A1", "shop_eu", "refused", error="unknown barcode")
    rows.conn.commit()
    return rows


def _state(rows) -> dict:
    tables = ("itsperfect.connectors", "itsperfect.account_connectors", "itsperfect.connector_locations",
              "itsperfect.extension_attributes", "itsperfect.order_exports")
    return {table: rows.conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall() for table in tables}


def test_the_app_has_exactly_the_documented_routes():
    assert set(_routes()) == ROUTES


@pytest.mark.parametrize(("method", "path"), _routes())
def test_anonymous_is_refused_on_every_route(anonymous, seeded, method, path):
    answer = _request(anonymous, method, path)

    assert answer.status_code == 401, answer.text
    assert answer.json() == {"detail": "Not authenticated"}


@pytest.mark.parametrize(("method", "path"), _routes())
def test_a_viewer_is_forbidden_on_every_route_and_changes_nothing(viewer, seeded, method, path):
    before = _state(seeded)

    answer = _request(viewer, method, path)

    assert answer.status_code == 403, answer.text
    assert "shop_eu" not in answer.text
    seeded.conn.rollback()
    assert _state(seeded) == before


def test_a_token_airflow_did_not_sign_is_refused(anonymous, seeded):
    forged = jwt.encode({"sub": "admin", "role": "ADMIN", "aud": "apache-airflow"}, "not-the-secret" * 8,
                        algorithm="HS512")

    answer = anonymous.delete("/connectors/shop_eu", headers={"Authorization": f"Bearer {forged}"})

    assert answer.status_code == 403
    assert seeded.count("itsperfect.connectors") == 1


def test_the_admin_gets_through_by_bearer_or_by_the_uis_cookie(api, admin, anonymous, seeded):
    assert admin.get("/connectors/shop_eu/attributes").json() == {"attributes": [{"name": "channel", "value": "web"}]}
    cookie = anonymous.get("/connectors/shop_eu/warehouses", cookies={"_token": api.token("admin")})
    assert cookie.status_code == 200 and [w["name"] for w in cookie.json()["warehouses"]] == ["Main"]


def test_the_app_is_mounted_by_our_plugin(api, admin):
    import httpx

    answer = httpx.get(f"{api.url}/api/v2/plugins", headers=admin.headers)

    plugin = next(p for p in answer.json()["plugins"] if p["name"] == "itsperfect_admin")
    assert [(a["url_prefix"], a["name"]) for a in plugin["fastapi_apps"]] == [("/itsperfect", "ItsPerfect admin API")]
    assert plugin["external_views"] == []
