"""The admin's full cycle (register, warehouses from the tenant, map an account and a location, attributes, list)
and every way a mapping is refused, with the reason in `detail`."""
from __future__ import annotations

import pytest

MAIN = {"connector": "shop_eu", "warehouse_id": 1}


@pytest.fixture
def model(admin, rows, airflow_connections):
    """Connector shop_eu registered through the API, its warehouses as the stock DAG leaves them, our accounts."""
    airflow_connections.create("shop_eu", active=True, create_orders=True, get_stock=True)
    assert admin.put("/connectors/shop_eu").status_code == 200
    rows.warehouse("shop_eu", 1, "Main")
    rows.warehouse("shop_eu", 2, "Outlet")
    rows.warehouse("shop_eu", 3, "Closed", active=False)
    rows.account("A1", "L1", "L2")
    rows.conn.commit()
    return rows


def test_the_full_cycle(admin, model):
    account = admin.put("/accounts/A1/connector", json=MAIN)
    location = admin.put("/locations/L1/connector", json={"connector": "shop_eu", "warehouse_id": 2})
    attribute = admin.put("/connectors/shop_eu/attributes/channel", json={"value": "webshop"})

    assert account.status_code == location.status_code == attribute.status_code == 200
    assert account.json() == {"account_id": "A1", "connector": "shop_eu", "warehouse_id": 1, "warehouse_name": "Main",
                              "warehouse_active": True}
    assert admin.get("/accounts/A1/connector").json() == account.json()
    assert admin.get("/locations/L1/connector").json() == {
        "location_id": "L1", "connector": "shop_eu", "warehouse_id": 2, "warehouse_name": "Outlet",
        "warehouse_active": True}
    assert admin.get("/connectors/shop_eu/attributes").json() == {"attributes": [{"name": "channel",
                                                                                   "value": "webshop"}]}
    [listed] = admin.get("/connectors").json()["connectors"]
    assert (listed["connector"], listed["active"], listed["error"]) == ("shop_eu", True, None)
    assert [w["name"] for w in listed["warehouses"]] == ["Main", "Outlet", "Closed"]
    assert model.conn.execute("SELECT * FROM itsperfect.account_connectors").fetchall() == [("A1", "shop_eu", 1)]
    assert model.conn.execute("SELECT * FROM itsperfect.connector_locations").fetchall() == [("L1", "shop_eu", 2)]


@pytest.mark.parametrize("owner", ["accounts/A1", "locations/L1"])
def test_the_same_put_twice_is_one_row_and_200_both_times(admin, model, owner):
    first, second = (admin.put(f"/{owner}/connector", json=MAIN) for _ in range(2))

    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    table = "itsperfect.account_connectors" if owner.startswith("accounts") else "itsperfect.connector_locations"
    assert model.count(table) == 1


def test_a_second_mapping_of_a_location_replaces_the_first(admin, model):
    admin.put("/locations/L1/connector", json=MAIN)

    answer = admin.put("/locations/L1/connector", json={"connector": "shop_eu", "warehouse_id": 2})

    assert answer.status_code == 200 and answer.json()["warehouse_id"] == 2
    assert model.conn.execute("SELECT * FROM itsperfect.connector_locations").fetchall() == [("L1", "shop_eu", 2)]


@pytest.mark.parametrize(("path", "body", "status", "detail"), [
    ("/accounts/A9/connector", MAIN, 404, "unknown account 'A9': commerce.accounts has no such row"),
    ("/locations/L9/connector", MAIN, 404, "unknown location 'L9': commerce.locations has no such row"),
    ("/accounts/A1/connector", {"connector": "shop_xx", "warehouse_id": 1}, 422,
     "connector 'shop_xx' is not registered; registered connectors: shop_eu"),
    ("/locations/L1/connector", {"connector": "shop_eu", "warehouse_id": 7}, 422,
     "warehouse 7 is not a warehouse of connector 'shop_eu'; its active warehouses: 1 (Main), 2 (Outlet)"),
    ("/accounts/A1/connector", {"connector": "shop_eu", "warehouse_id": 3}, 422,
     "warehouse 3 (Closed) of connector 'shop_eu' is inactive in ItsPerfect; its active warehouses: 1 (Main), "
     "2 (Outlet)"),
    ("/accounts/A1/connector", {"connector": "shop_eu", "warehouse_id": "1"}, 422,
     "warehouse_id: Input should be a valid integer (got '1')"),
    ("/accounts/A1/connector", {"connector": "shop_eu", "warehouse_id": 2**31}, 422,
     "warehouse_id: Input should be less than or equal to 2147483647 (got 2147483648)"),
    ("/accounts/A1/connector", {"connector": "shop_eu"}, 422, "warehouse_id: Field required"),
    ("/accounts/A1/connector", {**MAIN, "priority": 1}, 422, "priority: Extra inputs are not permitted (got 1)"),
    ("/accounts/A%20B/connector", MAIN, 422, "account_id: an id is 1 to 64 letters, digits, '.', '_' or '-' "
                                             "(got 'A B')"),
])
def test_a_mapping_is_refused_with_its_reason(admin, model, path, body, status, detail):
    answer = admin.put(path, json=body)

    assert answer.status_code == status, answer.text
    assert answer.json()["detail"].startswith(detail)
    assert model.count("itsperfect.account_connectors") == model.count("itsperfect.connector_locations") == 0


def test_a_connector_without_warehouses_yet_says_where_they_come_from(admin, model):
    model.conn.execute("INSERT INTO itsperfect.connectors (connector) VALUES ('shop_new')")
    model.conn.commit()

    answer = admin.put("/accounts/A1/connector", json={"connector": "shop_new", "warehouse_id": 1})

    assert answer.status_code == 422
    assert answer.json()["detail"].endswith("its active warehouses: none (none yet: the stock DAG lists them from "
                                            "the tenant)")


def test_a_body_that_is_not_json_or_too_large_is_refused(admin, model):
    broken = admin.put("/accounts/A1/connector", content=b"{connector", headers={"Content-Type": "application/json"})
    large = admin.put("/accounts/A1/connector", json={**MAIN, "padding": "x" * 20_000})

    assert (broken.status_code, broken.json()) == (422, {"detail": "the body is not valid JSON"})
    assert large.status_code == 413
    assert model.count("itsperfect.account_connectors") == 0


def test_reading_and_deleting_what_is_not_mapped_is_404(admin, model):
    for path in ("/accounts/A1/connector", "/locations/L2/connector"):
        assert admin.get(path).status_code == 404
        assert admin.delete(path).json()["detail"].endswith("has no connector")
    assert admin.get("/accounts/A9/connector").json() == {
        "detail": "unknown account 'A9': commerce.accounts has no such row"}


def test_a_body_streamed_past_the_limit_is_refused(admin, model):
    def chunks():
        yield b'{"connector": "shop_eu", "warehouse_id": 1, "padding": "'
        for _ in range(40):
            yield b"x" * 1024
        yield b'"}'

    answer = admin.put("/accounts/A1/connector", content=chunks(), headers={"Content-Type": "application/json"})

    assert answer.status_code == 413
    assert answer.json() == {"detail": "the body must be a number of bytes up to 16384"}
    assert model.count("itsperfect.account_connectors") == 0


def test_a_mapping_committed_while_its_connector_is_deleted_is_a_conflict_not_sql(admin, model, db_url):
    """The DELETE checked for mappings before this one committed: PostgreSQL's foreign key refuses, we say 409."""
    import threading
    import time

    import psycopg

    model.conn.execute("INSERT INTO itsperfect.account_connectors VALUES ('A1', 'shop_eu', 1)")   # not committed
    answers = []
    deleting = threading.Thread(target=lambda: answers.append(admin.delete("/connectors/shop_eu")))
    deleting.start()
    with psycopg.connect(db_url, autocommit=True) as watcher:
        deadline = time.monotonic() + 10
        while not watcher.execute("SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                  "AND query LIKE 'DELETE FROM itsperfect.connectors%'").fetchone():
            assert time.monotonic() < deadline, "the DELETE never waited for the mapping's lock"
            time.sleep(0.02)
    model.conn.commit()
    deleting.join(timeout=30)

    [answer] = answers
    assert answer.status_code == 409, answer.text
    assert answer.json()["detail"].startswith("the change conflicts with rule account_connectors_connector_"
                                              "warehouse_id_fkey of itsperfect.account_connectors: another change "
                                              "came first")
    assert model.count("itsperfect.connectors") == 1
