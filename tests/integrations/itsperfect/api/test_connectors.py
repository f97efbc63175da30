"""Connectors through the admin API: registering an Airflow connection (read in the API server from Airflow's
metadata database, where the REST API put it), their switches and warehouses, and unregistering."""
from __future__ import annotations

import pytest


def test_registering_an_itsperfect_connection_twice_gives_one_connector_with_its_switches(
        admin, rows, airflow_connections):
    airflow_connections.create("shop_eu", active=True, create_orders="true", get_stock=False)

    first = admin.put("/connectors/shop_eu")
    second = admin.put("/connectors/shop_eu")

    assert first.status_code == second.status_code == 200, first.text
    assert first.json() == second.json()
    assert {key: value for key, value in first.json().items() if key not in ("registered_at", "warehouses_error")} \
        == {"connector": "shop_eu", "active": True, "create_orders": True, "get_stock": False, "error": None,
            "warehouses": []}
    # Registered all the same when the tenant cannot be asked for its warehouses (here: no user name, no token).
    problem = first.json()["warehouses_error"]
    assert "needs the basic auth username" in problem and "every hour" in problem
    assert rows.count("itsperfect.connectors") == 1


def test_registering_reads_the_tenants_warehouses_at_once_so_locations_can_be_mapped(
        admin, rows, airflow_connections, sandbox):
    from sandbox import itsperfect as itsp

    tenant = itsp.airflow_connection(sandbox.url, active=True)
    airflow_connections.create("shop_nl", host=tenant["host"], password=tenant["password"], **tenant["extra"])

    answer = admin.put("/connectors/shop_nl")

    assert answer.status_code == 200, answer.text
    assert answer.json()["warehouses_error"] is None
    assert [(w["warehouse_id"], w["active"]) for w in answer.json()["warehouses"]] == [
        (1, True), (2, True), (3, True), (4, False)]
    assert [r["path"] for r in sandbox.requests("itsperfect")] == ["/itsperfect/api/v2/warehouses"]


def test_a_connection_airflow_does_not_have_is_not_registered(admin, rows):
    answer = admin.put("/connectors/shop_nowhere")

    assert answer.status_code == 404
    assert "Airflow has no connection 'shop_nowhere'" in answer.json()["detail"]
    assert rows.count("itsperfect.connectors") == 0


def test_a_connection_of_another_type_is_not_registered(admin, rows, airflow_connections):
    airflow_connections.create("some_http", conn_type="http")

    answer = admin.put("/connectors/some_http")

    assert answer.status_code == 422
    assert answer.json() == {"detail": "Airflow connection 'some_http' is of type 'http'; a connector is a connection "
                                       "of type 'itsperfect'"}
    assert rows.count("itsperfect.connectors") == 0


@pytest.mark.parametrize("connection_id", ["café", "a" * 201, "shop eu"])
def test_a_connection_id_outside_the_connector_rule_is_refused(admin, rows, connection_id):
    answer = admin.put(f"/connectors/{connection_id}")

    assert answer.status_code == 422
    assert answer.json()["detail"].startswith("connection_id: a connector is an Airflow connection id: 1 to 200 ")


def test_the_list_shows_switches_warehouses_and_a_connector_whose_connection_is_gone(admin, rows, airflow_connections):
    airflow_connections.create("shop_eu", active=True, get_stock=True)
    airflow_connections.create("shop_us", active="yes", create_orders=1)
    assert admin.put("/connectors/shop_eu").status_code == admin.put("/connectors/shop_us").status_code == 200
    rows.warehouse("shop_eu", 2, "Outlet", active=False)
    rows.warehouse("shop_eu", 1, "Main")
    rows.conn.commit()
    airflow_connections.delete("shop_us")

    answer = admin.get("/connectors")

    assert answer.status_code == 200, answer.text
    eu, us = answer.json()["connectors"]
    assert (eu["connector"], eu["active"], eu["create_orders"], eu["get_stock"], eu["error"]) == (
        "shop_eu", True, False, True, None)
    assert [(w["warehouse_id"], w["name"], w["active"]) for w in eu["warehouses"]] == [
        (1, "Main", True), (2, "Outlet", False)]
    assert (us["connector"], us["active"], us["create_orders"], us["get_stock"]) == ("shop_us", None, None, None)
    assert "'shop_us' has no Airflow connection" in us["error"]
    assert admin.get("/connectors/shop_eu/warehouses").json() == {"warehouses": eu["warehouses"]}
    assert admin.get("/connectors/shop_us").json()["error"] == us["error"]


def test_an_unknown_connector_is_404_naming_the_registered_ones(admin, rows):
    rows.conn.execute("INSERT INTO itsperfect.connectors (connector) VALUES ('shop_eu'), ('shop_us')")
    rows.conn.commit()

    for path in ("/connectors/shop_xx", "/connectors/shop_xx/warehouses", "/connectors/shop_xx/attributes"):
        answer = admin.get(path)
        assert answer.status_code == 404, path
        assert answer.json()["detail"].startswith("connector 'shop_xx' is not registered; registered connectors: "
                                                  "shop_eu, shop_us")
    assert admin.delete("/connectors/shop_xx").status_code == 404


def test_a_mapped_connector_cannot_be_unregistered_until_its_mappings_are_gone(admin, rows, airflow_connections):
    airflow_connections.create("shop_eu", active=True)
    admin.put("/connectors/shop_eu")
    rows.warehouse("shop_eu", 1, "Main")
    rows.account("A1", "L1")
    rows.conn.commit()
    assert admin.put("/accounts/A1/connector", json={"connector": "shop_eu", "warehouse_id": 1}).status_code == 200
    assert admin.put("/locations/L1/connector", json={"connector": "shop_eu", "warehouse_id": 1}).status_code == 200

    refused = admin.delete("/connectors/shop_eu")

    assert refused.status_code == 409
    assert refused.json()["detail"].startswith("connector 'shop_eu' is still mapped: accounts A1; locations L1.")
    assert admin.delete("/accounts/A1/connector").status_code == 204
    assert admin.delete("/connectors/shop_eu").status_code == 409   # the location still is
    assert admin.delete("/locations/L1/connector").status_code == 204
    assert admin.delete("/connectors/shop_eu").status_code == 204
    assert rows.count("itsperfect.connectors") == rows.count("itsperfect.warehouses") == 0
    assert admin.delete("/connectors/shop_eu").status_code == 404


def test_a_connector_with_order_exports_stays_registered(admin, rows):
    rows.conn.execute("INSERT INTO itsperfect.connectors (connector) VALUES ('shop_eu')")
    rows.account("A1")
    rows.export("O1", "A1", "shop_eu", "sent")
    rows.conn.commit()

    answer = admin.delete("/connectors/shop_eu")

    assert answer.status_code == 409
    assert "has 1 order export(s) in the outbox" in answer.json()["detail"]
    assert rows.count("itsperfect.connectors") == 1
