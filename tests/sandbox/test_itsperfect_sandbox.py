"""The ItsPerfect sandbox (issue 11, point 2) over plain HTTP: as faithful to vendors.md §3 as we know it,
and no kinder: token and basic auth on every call, Yii-style paging headers, the hourly limit that counts
the vendor's own calls, and its 429 past it."""
from __future__ import annotations

import datetime as dt
import signal

import pytest
import requests

from sandbox import itsperfect as itsp
from sandbox import launch

AUTH = (itsp.USERNAME, itsp.PASSWORD)
TEN_PAST = "2026-01-05T10:10:00+00:00"


@pytest.fixture
def api(sandbox):
    """GET/POST on the sandbox's ItsPerfect with the tenant's token and basic auth (both overridable)."""
    def call(method: str, resource: str, *, token: str | None = itsp.TOKEN, auth=AUTH, base=None, **kwargs):
        params = dict(kwargs.pop("params", {}))
        if token is not None:
            params["token"] = token
        return requests.request(method, f"{base or sandbox.url}/itsperfect/api/v2/{resource}", params=params,
                                auth=auth, timeout=30, **kwargs)
    sandbox.control("itsperfect", set_clock=TEN_PAST, server_calls_per_hour=0)   # no hour turns mid-test
    return call


def order(**changes) -> dict:
    body = {"orderType": "2", "date": "2026-01-05 13:25:04", "reference": "web-1001", "orderNumber": "1001",
            "customerId": "C-1", "currency": "EUR", "warehouseId": "1", "shippingCosts": "0",
            "shippingAddress": {"addressId": "", "name": "Test customer", "street": "Invoice street",
                                "housenumber": "1", "postalCode": "1234 AB", "city": "Amsterdam", "countryId": "1"},
            "invoiceAddress": {"addressId": "", "name": "Test customer", "street": "Billing street",
                               "housenumber": "3", "postalCode": "1234 AB", "city": "Amsterdam", "countryId": "1"},
            "items": [{"barcode": None, "quantity": "2", "price": "19.95"}]}
    body.update(changes)
    return body


def a_barcode(api, warehouse: int = 1) -> str:
    return api("GET", "stock", params={"warehouseId": warehouse}).json()["stock"][0]["warehouses"][0][
        "colors"][0]["sizes"][0]["barcode"]


@pytest.mark.parametrize("token, auth", [(None, AUTH), ("wrong", AUTH), (itsp.TOKEN, None),
                                         (itsp.TOKEN, (itsp.USERNAME, "wrong"))])
def test_every_call_needs_the_token_and_basic_auth(api, token, auth):
    answer = api("GET", "warehouses", token=token, auth=auth)
    assert answer.status_code == 401
    assert set(answer.json()) == {"error"} and isinstance(answer.json()["error"], str)
    assert "X-Request-Limit-Remaining" in answer.headers


def test_warehouses_envelope_one_inactive(api):
    answer = api("GET", "warehouses")
    assert answer.status_code == 200
    warehouses = answer.json()["warehouses"]
    assert [w["active"] for w in warehouses].count(0) == 1
    assert {"id", "active", "warehouse", "country", "subsidiary", "retailStock"} <= set(warehouses[0])


def test_paging_headers_exact_over_several_pages(api):
    seen, page = [], 1
    first = api("GET", "stock", params={"warehouseId": 1, "limit": 10})
    total = int(first.headers["X-Pagination-Total-Count"])
    pages = int(first.headers["X-Pagination-Page-Count"])
    assert total > 30 and pages == -(-total // 10)
    while True:
        answer = api("GET", "stock", params={"warehouseId": 1, "limit": 10, "page": page})
        assert answer.headers["X-Pagination-Current-Page"] == str(page)
        assert answer.headers["X-Pagination-Page-Count"] == str(pages)
        assert answer.headers["X-Pagination-Total-Count"] == str(total)
        seen += [row["itemId"] for row in answer.json()["stock"]]
        if int(answer.headers["X-Pagination-Current-Page"]) == pages:
            break
        page += 1
    assert len(seen) == len(set(seen)) == total
    past = api("GET", "stock", params={"warehouseId": 1, "limit": 10, "page": pages + 5})
    assert past.headers["X-Pagination-Current-Page"] == str(pages)        # Yii clamps into range
    capped = api("GET", "stock", params={"warehouseId": 1, "limit": 5000})
    assert len(capped.json()["stock"]) == min(total, itsp.MAX_LIMIT)      # limit silently capped


def test_stock_shape_mixed_types_and_barcodes(api):
    stock = api("GET", "stock", params={"warehouseId": 2}).json()["stock"]
    entry = stock[0]
    assert {"itemId", "itemNumber", "warehouses"} <= set(entry)
    warehouse = entry["warehouses"][0]
    assert warehouse["warehouseId"] == 2
    size = warehouse["colors"][0]["sizes"][0]
    assert isinstance(size["stock"], str) and isinstance(size["availableStock"], int)
    assert len(size["barcode"]) == 13 and size["barcode"].isdigit()
    assert {"colorId", "colorNumber", "color"} <= set(warehouse["colors"][0])


def test_error_shapes(api):
    missing = api("GET", "stock", params={"warehouseId": 999})
    assert missing.status_code == 404 and set(missing.json()) == {"error"}
    unknown = api("GET", "nothing-here")
    assert unknown.status_code == 404 and set(unknown.json()) == {"error"}
    wrong_method = api("DELETE", "warehouses")
    assert wrong_method.status_code == 405 and set(wrong_method.json()) == {"error"}


def test_limit_headers_decrease_and_count_server_side_calls(api, sandbox):
    first = api("GET", "warehouses")
    second = api("GET", "warehouses")
    assert first.headers["X-Request-Limit-Remaining"] == str(itsp.HOURLY_LIMIT - 1)
    assert second.headers["X-Request-Limit-Remaining"] == str(itsp.HOURLY_LIMIT - 2)
    reset = dt.datetime.fromisoformat(first.headers["X-Request-Limit-Date"])
    assert reset.tzinfo is not None and (reset.minute, reset.second) == (0, 0)
    sandbox.control("itsperfect", server_calls_now=40)        # the vendor's own integrations, not us
    third = api("GET", "warehouses")
    assert third.headers["X-Request-Limit-Remaining"] == str(itsp.HOURLY_LIMIT - 3 - 40)
    state = sandbox.state("itsperfect")
    assert (state["client_calls"], state["server_calls"], state["calls_this_hour"]) == (3, 40, 43)


def test_server_side_calls_accrue_evenly_over_the_hour(api, sandbox):
    sandbox.control("itsperfect", set_clock="2026-01-05T10:00:00+00:00", server_calls_per_hour=120)
    assert sandbox.state("itsperfect")["server_calls"] == 0
    sandbox.control("itsperfect", advance_clock_seconds=900)
    answer = api("GET", "warehouses")
    assert answer.headers["X-Request-Limit-Remaining"] == str(itsp.HOURLY_LIMIT - 30 - 1)
    assert answer.headers["X-Request-Limit-Date"] == "2026-01-05T11:00:00+00:00"
    sandbox.control("itsperfect", advance_clock_seconds=3600)  # the next hour: the last one closed at 120 + 1
    hours = sandbox.state("itsperfect")["hours"]
    assert hours[0] == {"start": "2026-01-05T10:00:00+00:00", "client": 1, "server": 120, "refused": 0,
                        "total": 121}


def test_a_wrong_password_still_counts_a_wrong_token_cannot(api, sandbox):
    missing = api("GET", "warehouses", token=None)
    assert missing.json() == {"error": "The authentication token () is not valid"}
    api("GET", "warehouses", auth=(itsp.USERNAME, "wrong"))
    assert sandbox.state("itsperfect")["client_calls"] == 1


def test_past_the_limit_answers_429_with_the_headers_then_resets(api, sandbox):
    sandbox.control("itsperfect", hourly_limit=5)
    statuses = [api("GET", "warehouses").status_code for _ in range(7)]
    assert statuses == [200] * 5 + [429] * 2
    refused = api("GET", "warehouses")
    assert refused.json() == {"error": "Request limit reached"}
    assert refused.headers["X-Request-Limit-Remaining"] == "0"
    assert sandbox.state("itsperfect")["refused_this_hour"] == 3
    sandbox.control("itsperfect", past_limit_status=403)
    assert api("GET", "warehouses").status_code == 403
    sandbox.control("itsperfect", advance_clock_seconds=3600)
    fresh = api("GET", "warehouses")
    assert fresh.status_code == 200 and fresh.headers["X-Request-Limit-Remaining"] == "4"
    assert max(hour["total"] for hour in sandbox.state("itsperfect")["hours"]) <= 5


def test_order_post_and_its_validation_error(api, sandbox):
    barcode = a_barcode(api)
    created = api("POST", "orders", json=order(items=[{"barcode": barcode, "quantity": "2", "price": "19.95"}]))
    assert created.status_code == 200
    assert created.json()["orders"][0]["reference"] == "web-1001"
    assert sandbox.state("itsperfect")["orders_received"] == 1
    found = api("GET", "orders", params={"reference": "web-1001"}).json()["orders"]
    assert [o["id"] for o in found] == [created.json()["orders"][0]["id"]]
    refused = api("POST", "orders", json=order(items=[{"barcode": "0000000000000", "quantity": "1", "price": "1"}]))
    assert refused.status_code == 400 and set(refused.json()) == {"error"}
    assert "0000000000000" in refused.json()["error"]
    no_reference = api("POST", "orders", json=order(reference="", items=[{"barcode": barcode, "quantity": "1"}]))
    assert no_reference.status_code == 400 and "reference" in no_reference.json()["error"]
    inactive = api("POST", "orders", json=order(warehouseId="4", items=[{"barcode": barcode, "quantity": "1"}]))
    assert inactive.status_code == 400 and "not active" in inactive.json()["error"]
    assert sandbox.state("itsperfect")["orders_received"] == 1


def test_upstream_deactivation_and_a_large_warehouse(api, sandbox):
    sandbox.control("itsperfect", deactivate_warehouses=[2], generate_warehouse={"id": 900, "barcodes": 5000})
    active = {w["id"]: w["active"] for w in api("GET", "warehouses").json()["warehouses"]}
    assert active[2] == 0 and active[900] == 1
    assert sandbox.state("itsperfect")["warehouses"]["900"]["barcodes"] == 5000
    first = api("GET", "stock", params={"warehouseId": 900, "limit": 100})
    assert first.headers["X-Pagination-Total-Count"] == "100"


def test_state_survives_a_restart(tmp_path):
    path = tmp_path / "sandbox-state.json"
    process, url = launch.start("--state-file", str(path))
    try:
        requests.put(f"{url}/_sandbox/control/itsperfect", timeout=10,
                     json={"set_clock": TEN_PAST, "server_calls_per_hour": 0,
                                                    "deactivate_warehouses": [3]}).raise_for_status()
        stock = requests.get(f"{url}/itsperfect/api/v2/stock", params={"token": itsp.TOKEN, "warehouseId": 1},
                             auth=AUTH, timeout=10).json()["stock"]
        barcode = stock[0]["warehouses"][0]["colors"][0]["sizes"][0]["barcode"]
        requests.put(f"{url}/_sandbox/control/itsperfect", timeout=10, json={"set_stock": [
            {"warehouseId": 1, "barcode": barcode, "stock": 77, "reserved": 7}]}).raise_for_status()
        stock = requests.get(f"{url}/itsperfect/api/v2/stock", params={"token": itsp.TOKEN, "warehouseId": 1},
                             auth=AUTH, timeout=10).json()["stock"]
        size = stock[0]["warehouses"][0]["colors"][0]["sizes"][0]
        assert (size["stock"], size["virtualStockReservation"], size["availableStock"]) == ("77", "7", 70)
        created = requests.post(f"{url}/itsperfect/api/v2/orders", params={"token": itsp.TOKEN}, auth=AUTH,
                                timeout=10, json=order(items=[{"barcode": barcode, "quantity": "1"}]))
        assert created.status_code == 200
        before = requests.get(f"{url}/_sandbox/state/itsperfect", timeout=10).json()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    process, url = launch.start("--state-file", str(path))
    try:
        after = requests.get(f"{url}/_sandbox/state/itsperfect", timeout=10).json()
        assert after["orders"] == before["orders"]
        assert after["client_calls"] == before["client_calls"] == 3
        assert after["warehouses"]["3"]["active"] == 0
        again = requests.get(f"{url}/itsperfect/api/v2/stock", params={"token": itsp.TOKEN, "warehouseId": 1},
                             auth=AUTH, timeout=10)
        assert again.json()["stock"] == stock
        assert again.headers["X-Request-Limit-Remaining"] == str(itsp.HOURLY_LIMIT - 4)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_faults_apply_to_itsperfect(api, sandbox):
    sandbox.faults("itsperfect", throttle_next=1, retry_after_seconds=2)
    throttled = api("GET", "warehouses")
    assert throttled.status_code == 429 and throttled.json() == {"error": "Request limit reached"}
    assert throttled.headers["Retry-After"] == "2" and "X-Request-Limit-Date" in throttled.headers
    assert api("GET", "warehouses").status_code == 200
    assert [r["status"] for r in sandbox.requests("itsperfect")][-2:] == [429, 200]
