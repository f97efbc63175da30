"""TrackVia hook against the sandbox's OMS-Pro and a real PostgreSQL: views by name, paging exact and lazy
with start/max and totalCount, batch create, update one, the vendor's errors with what on-call does, every
request reserved from the shared budget (a 429 spends it for every worker), no secret in any log line,
and no way to delete anything."""
from __future__ import annotations

import json
import logging
import math

import pytest

from etl.request_budget import BudgetSpent
from hooks.trackvia import TrackViaHook, ViewNotFound
from hooks.vendor_http import VendorApiError
from sandbox import trackvia as tv

WRONG_USER_KEY = "wrong-tv-user-key-3f9a"
TICKETS, TICKETS_BY_UPDATED = 201, 202

HOOK = TrackViaHook                     # whose budget the `budgets` fixture reads


@pytest.fixture
def connection(sandbox, monkeypatch, db_url, budgets):
    def make(conn_id: str = "trackvia_default", token: str = tv.TOKEN, user_key: str = tv.USER_KEY,
             **extra) -> TrackViaHook:
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(
            {"conn_type": "trackvia", "host": f"{sandbox.url}/trackvia", "password": token,
             "extra": {"api_key": user_key, **extra}}))
        return TrackViaHook(conn_id, conninfo=db_url)

    monkeypatch.setattr(TrackViaHook, "backoff_initial", 0.01)
    monkeypatch.setattr(TrackViaHook, "backoff_max", 0.05)
    return make


@pytest.fixture
def hook(connection, sandbox):
    yield connection()
    assert sandbox.state("trackvia")["delete_requests"] == 0


def calls(sandbox, method: str = "GET", suffix: str = "") -> list[dict]:
    return [r for r in sandbox.requests("trackvia") if r["method"] == method and r["path"].endswith(suffix)]


def test_the_app_and_views_by_exact_name_with_their_structure(hook):
    assert hook.app_id(tv.APP) == tv.APP_ID
    view_id, structure = hook.view("All Tickets", app=tv.APP)
    assert view_id == TICKETS
    fields = {f["name"]: f for f in structure}
    assert fields["QBO Invoice Number"]["canUpdate"] is True and fields["Paid"]["choices"] == ["Yes", "No"]
    assert hook.view("Tickets by Updated")[0] == TICKETS_BY_UPDATED
    with pytest.raises(ViewNotFound) as raised:
        hook.view("all tickets", app=tv.APP)           # exact and case-sensitive
    assert "0 views named 'all tickets' in app 'OMS-Pro'" in str(raised.value)
    assert "'All Tickets'" in str(raised.value) and "'Site Visits by Updated'" in str(raised.value)


def test_records_page_exact_and_lazy_from_a_start(hook, sandbox):
    held = sandbox.state("trackvia")["counts"]["Tickets"]
    records = hook.records(TICKETS, page_size=100)
    first = next(records)
    assert len(calls(sandbox, suffix=f"/views/{TICKETS}")) == 1       # one page asked for, not the whole view
    ids = [first["id"]] + [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == held
    pages = calls(sandbox, suffix=f"/views/{TICKETS}")
    assert len(pages) == math.ceil(held / 100)                      # totalCount ends it: no empty page asked for
    assert [r["query"].split("start=")[1].split("&")[0] for r in pages] == [str(n * 100) for n in range(len(pages))]

    start = held - 2 * 25                                            # exactly two pages left: two calls
    tail = list(hook.records(TICKETS, page_size=25, start=start))
    assert [r["id"] for r in tail] == ids[start:]
    assert len(calls(sandbox, suffix=f"/views/{TICKETS}")) == len(pages) + 2
    with pytest.raises(ValueError, match="1 to 100000"):
        hook.records(TICKETS, page_size=100_001)


def test_one_record_batch_create_and_update_one(hook, sandbox):
    some = next(hook.records(TICKETS, page_size=1))
    assert hook.record(TICKETS, some["id"])["Record ID"] == some["Record ID"]
    rows = [{"Status": "Open", "Priority": "High", "Region": "North"} for _ in range(5)]
    created = hook.create_records(TICKETS, rows, batch=2)
    assert len(created) == 5 and len({r["id"] for r in created}) == 5
    assert sandbox.state("trackvia")["post_requests"] == 3          # batches of 2, 2, 1
    updated = hook.update_record(TICKETS, created[0]["id"], {"Amount Paid": 125.5, "Paid": "Yes"})
    assert updated["id"] == created[0]["id"] and updated["Paid"] == "Yes"
    assert float(updated["Amount Paid"]) == 125.5                   # numbers come back as strings
    assert hook.record(TICKETS, created[0]["id"])["Paid"] == "Yes"
    assert sandbox.state("trackvia")["put_requests"] == 1


def test_the_hook_cannot_delete():
    assert not any("delete" in name.lower() for name in dir(TrackViaHook))


def test_access_denied_names_the_view_record_or_field(hook):
    with pytest.raises(VendorApiError) as raised:
        next(hook.records(9999))
    text = str(raised.value)
    assert "HTTP 401" in text and "accessDenied: DENIED!!! - View: 9999" in text
    assert "view 9999 does not exist or the API user" in text and raised.value.body["name"] == "accessDenied"
    with pytest.raises(VendorApiError, match=r"record 99999 of view 201 does not exist or the API user"):
        hook.record(TICKETS, 99999)
    some = next(hook.records(TICKETS, page_size=1))
    with pytest.raises(VendorApiError, match=r'field "Colour".*that field of view 201 does not exist'):
        hook.update_record(TICKETS, some["id"], {"Colour": "red"})


def test_an_expired_token_and_a_wrong_user_key_say_what_to_do(connection, sandbox):
    with pytest.raises(VendorApiError) as raised:
        connection("trackvia_expired", token=tv.EXPIRED_TOKEN).check_credentials()
    text = str(raised.value)
    assert "HTTP 401" in text and "Access token expired" in text
    assert "auth token of connection 'trackvia_expired' expired" in text
    assert "put it in the connection's password" in text
    ok, message = connection("trackvia_wrong_key", user_key=WRONG_USER_KEY).test_connection()
    assert not ok and "HTTP 403" in message and "Authentication failed" in message
    assert "user_key" in message and "is wrong" in message
    assert connection().test_connection() == (True, "TrackVia: connection 'trackvia_default' works")
    assert len(calls(sandbox, suffix="/openapi/apps")) == 3          # one request each, no retries


def test_a_429_is_not_retried_and_spends_the_budget_for_every_worker(hook, connection, sandbox, budgets):
    hook.check_credentials()
    sandbox.control("trackvia", hourly_limit=sandbox.state("trackvia")["calls_this_hour"])
    with pytest.raises(BudgetSpent) as raised:
        hook.view("All Tickets")
    assert raised.value.credential == hook.budget_key
    assert [r["status"] for r in sandbox.requests("trackvia")] == [200, 429]
    with pytest.raises(BudgetSpent):
        connection("trackvia_other_worker").record(TICKETS, 1)      # same host: the same budget
    assert len(sandbox.requests("trackvia")) == 2                   # nothing more was sent
    budget = budgets()
    assert (budget.reserved, budget.limit, budget.headroom) == (2, 5000, 50) and budget.left == 0


def test_every_request_is_reserved_from_the_hosts_budget(connection, sandbox, budgets):
    hook = connection(hourly_limit=100, budget_headroom=10)
    list(hook.records(TICKETS_BY_UPDATED, page_size=100))
    budget = budgets()
    assert budget.reserved == len(sandbox.requests("trackvia")) == 3
    assert (budget.credential, budget.limit, budget.headroom) == (hook.budget_key, 100, 10)
    assert hook.budget_key == sandbox.url.split("://")[1]


def test_a_5xx_get_is_retried_a_5xx_write_is_not(hook, sandbox):
    some = next(hook.records(TICKETS, page_size=1))
    sandbox.faults("trackvia", burst_5xx=1)
    assert hook.record(TICKETS, some["id"])["id"] == some["id"]
    sandbox.faults("trackvia", burst_5xx=1)
    with pytest.raises(VendorApiError, match="HTTP 503"):
        hook.create_records(TICKETS, [{"Status": "Open"}])
    sandbox.faults("trackvia", burst_5xx=1)
    with pytest.raises(VendorApiError, match="HTTP 503"):
        hook.update_record(TICKETS, some["id"], {"Priority": "Low"})
    assert [(r["method"], r["status"]) for r in sandbox.requests("trackvia")] == [
        ("GET", 200), ("GET", 503), ("GET", 200), ("POST", 503), ("PUT", 503)]


def test_no_token_or_user_key_in_debug_logs_or_errors(connection, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    list(connection().records(TICKETS, page_size=200))
    errors = []
    for bad in (connection("trackvia_expired", token=tv.EXPIRED_TOKEN),
                connection("trackvia_wrong_key", user_key=WRONG_USER_KEY)):
        with pytest.raises(VendorApiError) as raised:
            bad.record(TICKETS, 1)
        errors.append(str(raised.value) + json.dumps(raised.value.body))
    output = caplog.text + "".join(capfd.readouterr()) + " ".join(errors)
    assert "/trackvia/openapi/views/201" in output and "user_key=***" in output   # urllib3's lines, redacted
    for secret in (tv.TOKEN, tv.USER_KEY, tv.EXPIRED_TOKEN, WRONG_USER_KEY):
        assert secret not in output
