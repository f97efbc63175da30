"""ItsPerfect hook against the sandbox and a real PostgreSQL: paging exact and lazy, every request
reserved from the shared hourly budget and reconciled with the vendor's count, a spent budget (ours or
the vendor's 429) stops the hook before it sends, and the token never reaches a log line."""
from __future__ import annotations

import datetime as dt
import json
import logging
import math

import pytest

from etl.request_budget import BudgetSpent
from hooks.itsperfect import ItsPerfectHook
from hooks.vendor_http import VendorApiError
from sandbox import itsperfect as itsp

WRONG_TOKEN = "wrong-itsp-token-77c1"
WRONG_PASSWORD = "wrong-itsp-password-91"

HOOK = ItsPerfectHook                     # whose budget the `budgets` fixture reads


@pytest.fixture
def sandbox_hour(sandbox):
    """The sandbox's clock 10 minutes into the next hour (never crossing an hour mid-test), with the
    vendor's own server-side calls as a burst of 40 now (deterministic counts). Returns the reset moment."""
    now = dt.datetime.now(dt.timezone.utc)
    start = now.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1, minutes=10)
    sandbox.control("itsperfect", set_clock=start.isoformat(), server_calls_per_hour=0, server_calls_now=40)
    return start.replace(minute=0) + dt.timedelta(hours=1)


@pytest.fixture
def connection(sandbox, monkeypatch, db_url):
    def make(conn_id: str = "itsperfect_default", token: str = itsp.TOKEN,
             password: str = itsp.PASSWORD) -> ItsPerfectHook:
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(
            itsp.airflow_connection(sandbox.url, token=token, password=password)))
        return ItsPerfectHook(conn_id, conninfo=db_url)

    monkeypatch.setattr(ItsPerfectHook, "backoff_initial", 0.01)
    monkeypatch.setattr(ItsPerfectHook, "backoff_max", 0.05)
    return make


@pytest.fixture
def hook(connection, budgets, sandbox_hour):
    return connection()


def calls(sandbox, resource: str) -> list[dict]:
    return [r for r in sandbox.requests("itsperfect") if r["path"].endswith(f"/api/v2/{resource}")]


def test_stock_pages_exact_and_lazy(hook, sandbox, monkeypatch):
    monkeypatch.setattr(ItsPerfectHook, "page_size", 10)
    held = sandbox.state("itsperfect")["warehouses"]["1"]["items"]
    assert held > 20
    stock = hook.stock(1)
    first = next(stock)
    assert len(calls(sandbox, "stock")) == 1          # one page asked for, not the whole list
    items = [first["itemId"]] + [row["itemId"] for row in stock]
    assert len(items) == len(set(items)) == held
    assert len(calls(sandbox, "stock")) == math.ceil(held / 10)   # the minimum pages, nothing more
    assert all("warehouseId=1" in r["query"] and "limit=10" in r["query"] for r in calls(sandbox, "stock"))
    assert isinstance(first["warehouses"][0]["colors"][0]["sizes"][0]["stock"], str)


def test_warehouses_in_one_call(hook, sandbox):
    warehouses = list(hook.warehouses())
    assert [w["id"] for w in warehouses] == [1, 2, 3, 4]
    assert len(calls(sandbox, "warehouses")) == 1


def test_every_request_is_reserved_and_reconciled_with_the_vendors_count(hook, sandbox, budgets, sandbox_hour):
    list(hook.warehouses())
    list(hook.stock(2))
    state = sandbox.state("itsperfect")
    budget = budgets()
    assert budget.reserved == len(sandbox.requests("itsperfect")) == state["client_calls"]
    assert budget.used == state["calls_this_hour"] == state["client_calls"] + 40   # its server-side calls count
    assert (budget.limit, budget.headroom, budget.window_source) == (750, ItsPerfectHook.budget_headroom, "vendor")
    assert budget.resets_at == sandbox_hour
    assert budget.reported_remaining == state["remaining"]


def test_a_spent_budget_raises_with_the_reset_time_and_sends_nothing(hook, sandbox, budgets, sandbox_hour):
    sandbox.control("itsperfect", server_calls_now=750 - 40 - ItsPerfectHook.budget_headroom - 1)
    hook.check_credentials()                     # the answer tells us the vendor's count: the budget is spent
    sent = sandbox.state("itsperfect")["client_calls"]
    with pytest.raises(BudgetSpent) as raised:
        list(hook.warehouses())
    assert raised.value.resets_at == sandbox_hour
    assert "wait until" in str(raised.value)
    assert sandbox.state("itsperfect")["client_calls"] == sent   # nothing more was sent
    ok, message = hook.test_connection()
    assert not ok and f"request budget of {hook.budget_key} is spent" in message
    assert budgets().used == 750 - ItsPerfectHook.budget_headroom


def test_a_vendor_429_is_not_retried_and_stops_every_worker_until_the_reset(hook, connection, sandbox, budgets,
                                                                             sandbox_hour):
    sandbox.faults("itsperfect", throttle_next=1)
    with pytest.raises(BudgetSpent) as raised:
        list(hook.warehouses())
    assert raised.value.resets_at == sandbox_hour
    assert [r["status"] for r in sandbox.requests("itsperfect")] == [429]
    with pytest.raises(BudgetSpent):
        connection().check_credentials()          # another hook (another worker) of the same credential
    assert len(sandbox.requests("itsperfect")) == 1


@pytest.mark.parametrize("past_limit_status", [401, 503])
def test_the_vendors_other_past_limit_answers_are_a_spent_budget_too(hook, sandbox, sandbox_hour, past_limit_status):
    hook.check_credentials()
    # A burst of the vendor's own calls we have not heard of yet fills its hour.
    sandbox.control("itsperfect", server_calls_now=750 - sandbox.state("itsperfect")["calls_this_hour"],
                    past_limit_status=past_limit_status)
    with pytest.raises(BudgetSpent) as raised:
        list(hook.warehouses())
    assert raised.value.resets_at == sandbox_hour
    assert [r["status"] for r in sandbox.requests("itsperfect")] == [200, past_limit_status]


def test_an_order_post_429_is_not_retried(hook, sandbox):
    sandbox.faults("itsperfect", throttle_next=1)
    with pytest.raises(BudgetSpent):
        hook.create_order({"reference": "R-1"})
    assert sandbox.state("itsperfect")["orders_received"] == 0
    assert len(sandbox.requests("itsperfect")) == 1


def order(reference: str = "R-100") -> dict:
    address = {"name": "Test customer", "street": "Main street", "housenumber": "1", "postalCode": "1234 AB",
               "city": "Amsterdam", "countryId": "1"}
    return {"orderType": "2", "date": "2026-01-05 10:00:00", "reference": reference, "customerId": "c1",
            "currency": "EUR", "warehouseId": "1", "shippingAddress": address, "invoiceAddress": address,
            "items": [{"barcode": itsp.ean13("871819", 0), "quantity": 1, "price": "10.00"}]}


def test_create_order_returns_the_vendors_order_and_a_refusal_is_readable_and_not_retried(hook, sandbox):
    created = hook.create_order(order())
    assert created["reference"] == "R-100" and created["id"] == 5001
    with pytest.raises(VendorApiError, match="HTTP 400.*The field currency is required") as raised:
        hook.create_order({**order("R-101"), "currency": ""})
    assert raised.value.status == 400
    assert sandbox.state("itsperfect")["orders_received"] == 1
    assert [r["status"] for r in calls(sandbox, "orders")] == [200, 400]


def test_an_order_is_found_by_its_exact_reference_in_one_request_or_the_lookup_says_it_cannot_tell(hook, sandbox):
    hook.create_order(order("R-200"))
    hook.create_order(order("R-2000"))
    assert [o["reference"] for o in hook.orders_by_reference("R-200")] == ["R-200"]
    assert hook.orders_by_reference("R-300") == []
    assert len(calls(sandbox, "orders")) == 4                 # two POSTs, one GET each lookup
    sandbox.control("itsperfect", filters_orders_by_reference=False)   # a tenant that ignores the parameter
    with pytest.raises(VendorApiError, match="got others too") as raised:
        hook.orders_by_reference("R-300")                     # "not found" here would send the order again
    assert "does not filter orders by reference" in str(raised.value)


def test_a_5xx_get_is_retried_a_5xx_post_is_not(hook, sandbox, budgets):
    sandbox.faults("itsperfect", burst_5xx=2)
    assert len(list(hook.warehouses())) == 4
    sandbox.faults("itsperfect", burst_5xx=1)
    with pytest.raises(VendorApiError, match="HTTP 503"):
        hook.create_order(order())
    assert [r["status"] for r in sandbox.requests("itsperfect")] == [503, 503, 200, 503]
    assert budgets().reserved == 4              # every attempt reserved, the failed ones too


def test_a_200_without_its_envelope_or_a_truncated_body_is_never_no_records(hook, sandbox, monkeypatch):
    sandbox.faults("itsperfect", truncate_next=1)
    assert len(list(hook.warehouses())) == 4    # retried, not loaded half
    monkeypatch.setattr(ItsPerfectHook, "envelopes", {"warehouses": "depots"})
    with pytest.raises(VendorApiError, match="without its 'depots' list"):
        list(hook.warehouses())


def test_401_is_readable_and_names_the_credential(connection, budgets, sandbox_hour):
    with pytest.raises(VendorApiError) as raised:
        connection("itsperfect_badtoken", token=WRONG_TOKEN).check_credentials()
    text = str(raised.value)
    assert "HTTP 401" in text and "authentication token (***) is not valid" in text and "api_token" in text
    assert WRONG_TOKEN not in text and WRONG_TOKEN not in json.dumps(raised.value.body)
    ok, message = connection("itsperfect_badpass", password=WRONG_PASSWORD).test_connection()
    assert not ok and "Invalid username or password" in message and "username and password" in message
    assert connection().test_connection()[0] is True


def test_no_token_password_or_username_in_debug_logs_or_errors(connection, budgets, sandbox_hour, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    hook = connection()
    list(hook.warehouses())
    errors = []
    for bad in (connection("itsperfect_badtoken", token=WRONG_TOKEN),
                connection("itsperfect_badpass", password=WRONG_PASSWORD)):
        with pytest.raises(VendorApiError) as raised:
            list(bad.warehouses())
        errors.append(str(raised.value))
    output = caplog.text + "".join(capfd.readouterr()) + " ".join(errors)
    assert "/itsperfect/api/v2/warehouses" in output and "token=***" in output   # urllib3's lines, redacted
    for secret in (itsp.TOKEN, itsp.PASSWORD, itsp.USERNAME, WRONG_TOKEN, WRONG_PASSWORD):
        assert secret not in output


def test_the_budget_is_the_tenants_host_however_the_url_is_spelled(sandbox, monkeypatch, db_url):
    port = sandbox.url.rsplit(":", 1)[1]
    keys = []
    for n, host in enumerate((f"{sandbox.url}/itsperfect/api/v2", f"HTTP://user:pw@127.0.0.1:{port}/itsperfect/api/v2/")):
        monkeypatch.setenv(f"AIRFLOW_CONN_ITSPERFECT_SPELLING_{n}", json.dumps(
            {**itsp.airflow_connection(sandbox.url), "host": host}))
        keys.append(ItsPerfectHook(f"itsperfect_spelling_{n}", conninfo=db_url).budget_key)
    assert keys == [f"127.0.0.1:{port}"] * 2                # one budget; nothing of the URL but the host is kept


def test_a_headroom_that_leaves_nothing_is_refused_with_the_figures(sandbox, monkeypatch, db_url):
    monkeypatch.setenv("AIRFLOW_CONN_ITSPERFECT_NOTHING_LEFT", json.dumps(
        itsp.airflow_connection(sandbox.url, hourly_limit=40, budget_headroom=40)))
    ok, message = ItsPerfectHook("itsperfect_nothing_left", conninfo=db_url).test_connection()
    assert not ok and "budget_headroom 40 leaves nothing of hourly_limit 40" in message
    assert sandbox.requests("itsperfect") == []
