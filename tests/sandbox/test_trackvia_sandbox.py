"""The TrackVia sandbox (issue 12, point 1) over plain HTTP: as faithful to vendors.md §1 as we know it, and
no kinder: user_key and token on every call, start/max paging with totalCount, 401 accessDenied for what
does not exist, value conversions refused with the vendor's messages, DELETE answered and counted."""
from __future__ import annotations

import signal

import pytest
import requests

from sandbox import launch
from sandbox import trackvia as tv

TEN_PAST = "2026-01-05T10:10:00+00:00"
CUSTOMERS, TICKETS, TICKETS_BY_UPDATED, VISITS, VISITS_BY_UPDATED = 101, 201, 202, 301, 302


@pytest.fixture
def api(sandbox):
    """A call on the sandbox's TrackVia with the user key and the token as a Bearer header (overridable)."""
    def call(method: str, path: str, *, user_key: str | None = tv.USER_KEY, token: str | None = tv.TOKEN,
             base=None, **kwargs):
        params = dict(kwargs.pop("params", {}))
        if user_key is not None:
            params["user_key"] = user_key
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return requests.request(method, f"{base or sandbox.url}/trackvia/openapi/{path}", params=params,
                                headers=headers, timeout=30, **kwargs)
    sandbox.control("trackvia", set_clock=TEN_PAST)
    return call


def type1(answer, status: int, name: str, message: str) -> None:
    assert answer.status_code == status
    assert answer.json() == {"errors": [], "message": message, "name": name, "code": str(status)}


def test_both_token_forms_are_accepted(api):
    header = api("GET", "apps")
    query = api("GET", "apps", token=None, params={"access_token": tv.TOKEN})
    assert header.status_code == query.status_code == 200
    assert header.json() == query.json() == [{"id": tv.APP_ID, "name": tv.APP}]
    assert api("GET", "apps", params={"name": tv.APP}).json() == [{"id": tv.APP_ID, "name": tv.APP}]
    assert api("GET", "apps", params={"name": "oms-pro"}).json() == []


@pytest.mark.parametrize("user_key", [None, "wrong"])
def test_a_wrong_user_key_is_the_gateways_plain_403(api, user_key):
    answer = api("GET", "apps", user_key=user_key)
    assert answer.status_code == 403
    assert answer.text == "Authentication failed" and answer.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize("token, description", [
    (None, "Invalid access token: <redacted>"), ("wrong", "Invalid access token: <redacted>"),
    (tv.EXPIRED_TOKEN, "Access token expired: <redacted>")])
def test_a_bad_token_is_the_oauth_401(api, token, description):
    answer = api("GET", "views", token=token)
    assert answer.status_code == 401
    assert answer.json() == {"error": "invalid_token", "error_description": description}


def test_views_by_exact_name(api):
    views = api("GET", "views").json()
    assert {v["name"]: v["id"] for v in views} == {
        "All Customers": CUSTOMERS, "All Tickets": TICKETS, "Tickets by Updated": TICKETS_BY_UPDATED,
        "All Site Visits": VISITS, "Site Visits by Updated": VISITS_BY_UPDATED}
    assert api("GET", "views", params={"name": "Tickets by Updated"}).json() == [
        {"id": TICKETS_BY_UPDATED, "name": "Tickets by Updated", "applicationName": tv.APP, "default": False}]
    assert api("GET", "views", params={"name": "all tickets"}).json() == []     # case-sensitive


def test_paging_with_exact_total_count(api):
    seen, start = [], 0
    while True:
        page = api("GET", f"views/{TICKETS}", params={"start": start, "max": 60}).json()
        assert page["totalCount"] == 250
        seen += [row["id"] for row in page["data"]]
        if len(page["data"]) < 60:
            break
        start += 60
    assert seen == list(range(1, 251))          # All Tickets: by Record ID
    default = api("GET", f"views/{VISITS}").json()
    assert len(default["data"]) == default["totalCount"] == 400
    type1(api("GET", f"views/{TICKETS}", params={"max": 100_001}), 400, "invalidRequest",
          "Invalid request submitted. Attempting to request more than 100000 records.")


def test_fields_as_the_vendor_encodes_them(api):
    page = api("GET", f"views/{TICKETS}", params={"max": 40}).json()
    structure = {f["name"]: f for f in page["structure"]}
    assert structure["Status"]["choices"] == list(tv.TICKET_STATUSES)
    assert structure["Customer"]["type"] == "relationship" and structure["Invoice Total"]["type"] == "currency"
    assert {"name", "type", "required", "unique", "canRead", "canUpdate", "canCreate", "fieldMetaId"} <= set(
        structure["Updated"])
    first = page["data"][0]
    assert first["Ticket Number"] == first["Record ID"] == "T-00001" and first["QBO Invoice Number"] == "IN-141"
    assert isinstance(first["Invoice Total"], str) and isinstance(first["Customer(id)"], int)
    customer = api("GET", f"views/{CUSTOMERS}/records/{first['Customer(id)']}").json()["data"]
    assert first["Customer"] == customer["Customer Name"]
    completed = [t for t in page["data"] if t["Status"] == "Completed"]
    assert any(t["Completed Date"] is None for t in completed)
    assert any(len(t["Completed Date"] or "") == 10 for t in completed)


def test_by_updated_order_and_an_upstream_edit_moves_a_record_to_the_end(api, sandbox):
    rows = api("GET", f"views/{TICKETS_BY_UPDATED}", params={"max": 1000}).json()["data"]
    assert [(r["Updated"], r["id"]) for r in rows] == sorted((r["Updated"], r["id"]) for r in rows)
    assert rows[-1]["id"] != 12
    sandbox.control("trackvia", edit=[{"table": "Tickets", "id": 12, "fields": {"Priority": "High"}}])
    after = api("GET", f"views/{TICKETS_BY_UPDATED}", params={"start": 249, "max": 5}).json()
    assert after["totalCount"] == 250 and [r["id"] for r in after["data"]] == [12]
    assert after["data"][0]["Updated"] == TEN_PAST and after["data"][0]["Last User"] == tv.PEOPLE[0][0]


def test_get_one_and_find(api):
    one = api("GET", f"views/{VISITS}/records/7").json()
    assert set(one) == {"structure", "data"} and one["data"]["id"] == 7 and one["data"]["Visit Number"] == "SV-00007"
    found = api("GET", f"views/{TICKETS}/find", params={"q": "in-14"}).json()
    assert {r["QBO Invoice Number"] for r in found["data"]} == {f"IN-{n}" for n in range(141, 150)}
    assert found["totalCount"] == 9


def test_batch_create(api, sandbox):
    answer = api("POST", f"views/{TICKETS}/records", json={"data": [
        {"Customer": 3, "Status": "Open", "Invoice Total": 125.5},
        {"Customer": "4", "Region": "West", "Completed Date": "2026-01-04"}]})
    assert answer.status_code == 200
    body = answer.json()
    assert body["totalCount"] == 2 and [r["id"] for r in body["data"]] == [251, 252]
    made = body["data"][0]
    assert made["Ticket Number"] == "T-00251" and made["Invoice Total"] == "125.50" and made["Customer(id)"] == 3
    assert made["Created"] == made["Updated"] == made["Status Changed"] == TEN_PAST
    assert made["Created By User"] == tv.API_USER[0] and body["data"][1]["Completed Date"] == "2026-01-04"
    state = sandbox.state("trackvia")
    assert state["counts"]["Tickets"] == 252 and state["post_requests"] == 1


def test_put_changes_only_the_fields_given(api, sandbox):
    before = api("GET", f"views/{TICKETS}/records/20").json()["data"]
    sandbox.control("trackvia", advance_clock_seconds=60)
    status = "Completed" if before["Status"] != "Completed" else "Open"
    answer = api("PUT", f"views/{TICKETS}/records/20", json={"data": [{"Status": status, "Amount Paid": "10"}]})
    assert answer.status_code == 200
    after = answer.json()["data"][0]
    assert after["Status"] == status and after["Amount Paid"] == "10.00"
    assert after["Updated"] == after["Status Changed"] == "2026-01-05T10:11:00+00:00"
    assert after["Last User"] == tv.API_USER[0] and after["Last User(id)"] == tv.API_USER[1]
    untouched = {k for k in before if k not in ("Status", "Amount Paid", "Updated", "Status Changed", "Last User",
                                                "Last User(id)")}
    assert {k: after[k] for k in untouched} == {k: before[k] for k in untouched}
    again = api("PUT", f"views/{TICKETS}/records/20", json={"data": [{"Status": status, "Paid": "Yes"}]})
    assert again.json()["data"][0]["Status Changed"] == after["Status Changed"]     # Status did not change
    assert sandbox.state("trackvia")["put_requests"] == 2


@pytest.mark.parametrize("fields, status, name, message", [
    ({"WONT WORK": 1}, 401, "accessDenied",
     'DENIED!!! - field "WONT WORK" either does not exist or you do not have access to it.'),
    ({"Updated": TEN_PAST}, 401, "accessDenied",
     'DENIED!!! - field "Updated" either does not exist or you do not have access to it.'),
    ({"Customer": "Baseball"}, 400, "invalidRequest",
     'Invalid request submitted. One or more value conversions failed: Could not convert "Baseball" to Long'),
    ({"Completed Date": "05/01/2026"}, 400, "invalidRequest",
     'Invalid request submitted. The value "05/01/2026" is not a valid DATE for field "Completed Date".'),
    ({"Status Changed": ""}, 400, "invalidRequest",
     'Invalid request submitted. The value "" is not a valid DATETIME for field "Status Changed".'),
    ({"Paid": "yes"}, 400, "invalidRequest",
     'Invalid request submitted. The value "yes" is not a valid choice for field "Paid".'),
])
def test_bad_writes_answer_the_vendors_errors_and_change_nothing(api, sandbox, fields, status, name, message):
    before = api("GET", f"views/{TICKETS}/records/5").json()["data"]
    type1(api("PUT", f"views/{TICKETS}/records/5", json={"data": [fields]}), status, name, message)
    type1(api("POST", f"views/{TICKETS}/records", json={"data": [{"Region": "North"}, fields]}), status, name, message)
    assert api("GET", f"views/{TICKETS}/records/5").json()["data"] == before
    assert sandbox.state("trackvia")["counts"]["Tickets"] == 250        # all or nothing


def test_missing_view_or_record_is_401_access_denied(api):
    type1(api("GET", "views/5000"), 401, "accessDenied",
          "DENIED!!! - View: 5000 either does not exist or you do not have access to it.")
    type1(api("GET", f"views/{TICKETS}/records/99999"), 401, "accessDenied",
          "DENIED!!! - Record: 99999 either does not exist or you do not have access to it.")
    type1(api("PUT", f"views/{CUSTOMERS}/records/41", json={"data": [{"Customer Name": "x"}]}), 401,
          "accessDenied", "DENIED!!! - Record: 41 either does not exist or you do not have access to it.")


@pytest.mark.deletes_in_trackvia
def test_delete_is_answered_as_the_vendor_does_and_counted(api, sandbox):
    assert api("DELETE", f"views/{VISITS}/records/3").status_code == 204
    assert api("GET", f"views/{VISITS}/records/3").status_code == 401
    assert api("DELETE", f"views/{CUSTOMERS}/records/all", user_key="wrong").status_code == 403
    state = sandbox.state("trackvia")
    assert state["delete_requests"] == 2 and state["counts"]["Site Visits"] == 399


def test_past_the_hourly_limit_429_plain_then_the_next_hour(api, sandbox):
    sandbox.control("trackvia", hourly_limit=3)
    statuses = [api("GET", "apps").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = api("GET", "apps", token="wrong")
    assert refused.status_code == 429 and refused.text == "Usage limit exceeded"
    assert not [h for h in refused.headers if "limit" in h.lower() or h.lower() == "retry-after"]
    state = sandbox.state("trackvia")
    assert (state["calls_this_hour"], state["refused_this_hour"]) == (3, 2)
    sandbox.control("trackvia", advance_clock_seconds=3000)           # 11:00 passes: a new clock hour
    assert api("GET", "apps").status_code == 200


def test_generate_tickets_for_the_sweep_benchmark(api, sandbox):
    state = sandbox.control("trackvia", generate_tickets=10_000)
    assert state["counts"]["Tickets"] == 10_000 and "Tickets" not in state["records"]
    last = api("GET", f"views/{TICKETS}", params={"start": 9_999, "max": 10}).json()
    assert last["totalCount"] == 10_000 and last["data"][0]["Ticket Number"] == "T-10000"


def test_state_survives_a_restart(tmp_path):
    path = tmp_path / "sandbox-state.json"
    auth = {"user_key": tv.USER_KEY, "access_token": tv.TOKEN}
    process, url = launch.start("--state-file", str(path))
    try:
        requests.put(f"{url}/_sandbox/control/trackvia", timeout=10, json={
            "set_clock": TEN_PAST, "hourly_limit": 900, "generate_tickets": 1200,
            "edit": [{"table": "Site Visits", "id": 4, "fields": {"Technician": "Zoe Park"}}]}).raise_for_status()
        put = requests.put(f"{url}/trackvia/openapi/views/{TICKETS}/records/9", params=auth, timeout=10,
                           json={"data": [{"Paid": "Yes"}]})
        assert put.status_code == 200
        requests.delete(f"{url}/trackvia/openapi/views/{VISITS}/records/5", params=auth, timeout=10)
        before = requests.get(f"{url}/_sandbox/state/trackvia", timeout=10).json()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    process, url = launch.start("--state-file", str(path))
    try:
        after = requests.get(f"{url}/_sandbox/state/trackvia", timeout=10).json()
        assert after["records"] == before["records"] and after["counts"] == before["counts"]
        assert after["counts"] == {"Customers": 40, "Tickets": 1200, "Site Visits": 399}
        assert (after["limit"], after["delete_requests"], after["put_requests"]) == (900, 1, 1)
        ticket = requests.get(f"{url}/trackvia/openapi/views/{TICKETS}/records/9", params=auth, timeout=10).json()
        assert ticket["data"]["Paid"] == "Yes"
        assert after["records"]["Site Visits"][3]["Technician"] == "Zoe Park"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_faults_apply_to_trackvia(api, sandbox):
    sandbox.faults("trackvia", throttle_next=1)
    throttled = api("GET", "apps")
    assert throttled.status_code == 429 and throttled.text == "Usage limit exceeded"
    assert api("GET", "apps").status_code == 200
