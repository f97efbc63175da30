"""The PPMS PUMAPI sandbox (issue 13, point 1) over plain HTTP: as faithful to vendors.md §4 and the recorded
responses as we know them, and no kinder: form POSTs only, HTTP 200 for every answer with errors in the
body, CRLF lines, title lines before the header, empty bodies for what does not exist, `createorder`
making exactly one order per accepted call and none on refusal. Bodies are read with the csv module here,
not with our parser."""
from __future__ import annotations

import csv
import io
import json
import re
import signal
from decimal import Decimal

import pytest
import requests

from sandbox import launch, ppms

TEN_PAST = "2026-01-05T10:10:00+00:00"
DAY = re.compile(r"^(\d{4}/\d{2}/\d{2})?$")


@pytest.fixture
def api(sandbox):
    """POST a form to the sandbox's PUMAPI with the key (overridable); the body text, after checking the 200."""
    def call(action: str | None, *, key: str | None = ppms.API_KEY, raw: bool = False, **params):
        data = dict(params)
        if key is not None:
            data["apikey"] = key
        if action is not None:
            data["action"] = action
        answer = requests.post(f"{sandbox.url}/ppms/pumapi/", data=data, timeout=30)
        assert answer.status_code == 200
        return answer if raw else answer.text
    sandbox.control("ppms", set_clock=TEN_PAST)
    return call


def lines(body: str) -> list[str]:
    """The body's lines: every one ends in CRLF, the last one included."""
    assert body == "" or body.endswith("\r\n")
    assert "\n" not in body.replace("\r\n", "")
    return body.split("\r\n")[:-1]


def rows(body: str, skip: int) -> tuple[list[str], list[list[str]]]:
    """(the header, the data rows) of a CSV body whose header follows `skip` title lines."""
    parsed = list(csv.reader(io.StringIO("\n".join(lines(body)[skip:]))))
    return [name.strip() for name in parsed[0]], parsed[1:]


# ---- transport and errors ---------------------------------------------------------------------------

def test_auth_answers_an_empty_body(api, sandbox):
    assert api("auth") == ""
    assert sandbox.state("ppms")["calls"] == {"auth": 1}


@pytest.mark.parametrize("key", [None, "", "wrong", ppms.API_KEY + "x", ppms.API_KEY[:-1]])
def test_a_missing_or_wrong_key_is_a_200_with_the_error_in_the_body(api, sandbox, key):
    answer = api("getorders", key=key, raw=True)
    assert answer.text == "error: request not authorized\r\n"
    assert sandbox.state("ppms")["calls"] == {}          # counted only when authorized


def test_the_key_must_be_in_the_form_body(sandbox, api):
    url = f"{sandbox.url}/ppms/pumapi/"
    in_query = requests.post(url, params={"apikey": ppms.API_KEY, "action": "auth"}, timeout=30)
    as_json = requests.post(url, json={"apikey": ppms.API_KEY, "action": "auth"}, timeout=30)
    as_get = requests.get(url, params={"apikey": ppms.API_KEY, "action": "auth"}, timeout=30)
    for answer in (in_query, as_json, as_get):
        assert (answer.status_code, answer.text) == (200, "error: request not authorized\r\n")
    multipart = requests.post(url, files={"apikey": (None, ppms.API_KEY), "action": (None, "auth")}, timeout=30)
    assert (multipart.status_code, multipart.text) == (200, "")
    moved = requests.post(url[:-1], data={"apikey": ppms.API_KEY, "action": "auth"}, timeout=30,
                          allow_redirects=False)
    assert moved.status_code == 301 and moved.headers["location"] == "/ppms/pumapi/"
    followed = requests.post(url[:-1], data={"apikey": ppms.API_KEY, "action": "auth"}, timeout=30)
    assert followed.text == "error: request not authorized\r\n"      # requests follows a 301 POST with a GET
    assert sandbox.state("ppms")["calls"] == {"auth": 1}


def test_unknown_actions_and_missing_parameters_are_errors_in_200_bodies(api, sandbox):
    assert api(None) == "error: missing parameter action\r\n"
    assert api("getservices") == "error: invalid action getservices\r\n"     # not a documented action
    assert api("GetOrders") == "error: invalid action GetOrders\r\n"
    for action, name in (("getuser", "login"), ("getorderlines", "orderref"), ("getinvoice", "invoiceid"),
                         ("getinvoicedetails", "invoiceid"), ("createorder", "serviceid")):
        assert api(action) == f"error: missing parameter {name}\r\n"
    assert api("createorder", serviceid="101") == "error: missing parameter login\r\n"
    assert api("createorder", serviceid="101", login="x") == "error: missing parameter quantity\r\n"
    assert sandbox.state("ppms")["calls"]["createorder"] == 3


# ---- people, systems, projects ----------------------------------------------------------------------

def test_getusers_is_one_login_a_line(api):
    everyone, active, inactive = (lines(api("getusers", **p)) for p in ({}, {"active": "true"}, {"active": "false"}))
    assert len(everyone) == 30 and sorted(everyone) == everyone
    assert sorted(active + inactive) == everyone and inactive and active
    assert all(re.fullmatch(r"[a-z0-9]+", login) for login in everyone)


def test_getuser_is_a_two_line_csv_and_empty_for_an_unknown_login(api):
    login = lines(api("getusers", active="false"))[0]
    body = api("getuser", login=login)
    assert len(lines(body)) == 2
    assert lines(body)[0] == "login,lname,fname,email,phone,bcode,affiliation,unitlogin,mustchpwd,mustchbcode,active"
    assert lines(body)[1].startswith(f'"{login}",') and lines(body)[1].endswith(",false,false,false")
    header, data = rows(body, 0)
    assert dict(zip(header, data[0], strict=True))["login"] == login
    assert api("getuser", login="nobody") == ""
    assert lines(api("getuser", login=login, noheaders="true")) == lines(body)[1:]


def test_getsystems_and_getprojects(api):
    header, systems = rows(api("getsystems"), 0)
    assert header[:3] == ["Core facility ref", "System id", "Type"] and len(header) == 11
    assert {r[1] for r in systems} >= {"69"} and all(r[0] == "2" and r[5] in ("True", "False") for r in systems)
    csv_body = api("getprojects")
    header, projects = rows(csv_body, 0)
    assert header[0] == "Core facility ref." and len(projects) == 10
    as_json = json.loads(api("getprojects", format="json"))
    assert [p["Project ref."] for p in as_json] == [int(r[5]) for r in projects]
    assert as_json[0]["Active"] is True and isinstance(as_json[0]["Phase"], int)
    assert any("," in p["Project name"] for p in as_json)          # quoted values with commas in the CSV
    assert api("getorders", format="json").startswith("Orders of core facility 2")   # no JSON: CSV


def test_getgroup_row_runs_past_its_header(api):
    """As recorded (getgroup/unitlogin--pyppms_group.txt): after creationdate an extra `""`, then a comma."""
    groups = lines(api("getgroups"))
    body = api("getgroup", unitlogin=groups[0])
    header, data = rows(body, 0)
    assert lines(body)[1].endswith(',"",')
    assert len(data[0]) == len(header) + 2 and data[0][-2:] == ["", ""]
    assert api("getgroup", unitlogin="nope") == ""


# ---- orders -----------------------------------------------------------------------------------------

def orders(api) -> dict[str, list[str]]:
    body = api("getorders")
    header, data = rows(body, 1)
    assert header == ["Core facility ref.", "Order ref.", "User", "Group", "Project ref", "Quoted date",
                      "Ordered date", "Completed date", "Status", "Invoiced"]
    assert all(len(r) == 10 for r in data)
    return {r[1]: r for r in data}


def test_getorders_title_header_and_rows(api):
    body = api("getorders")
    title, header = lines(body)[:2]
    assert title == "Orders of core facility 2, Sandbox Imaging Core, as of 2026/01/05 10:10"
    assert header.startswith("Core facility ref., Order ref., User,")        # the ", " spacing quirk
    assert lines(body)[2].startswith("2,1001,\"")                             # numbers bare, strings quoted
    found = orders(api)
    assert list(found) == [str(ref) for ref in range(1001, 1151)]
    users = set(lines(api("getusers")))
    for ref, (facility, _, user, group, project, quoted, ordered, completed, status, invoiced) in found.items():
        assert facility == "2" and user in users and group and (project == "" or project.isdigit())
        assert all(DAY.match(d) for d in (quoted, ordered, completed)) and quoted
        assert status in ("Quoted", "Ordered", "Completed", "Cancelled") and invoiced in ("True", "False")
        assert (status == "Completed") == bool(completed), ref
        assert invoiced == "False" or status == "Completed"
    statuses = {r[8] for r in found.values()}
    assert statuses == {"Quoted", "Ordered", "Completed", "Cancelled"}
    assert {r[9] for r in found.values()} == {"True", "False"}
    assert lines(api("getorders", noheaders="true")) == lines(body)[2:]
    assert lines(api("getorders", noheaders="True")) == lines(body)        # PHP compares strings


def test_getorderlines_repeat_the_order_and_unknown_refs_are_empty(api):
    found = orders(api)
    counts = []
    for ref in ("1001", "1002", "1003", "1150"):
        body = api("getorderlines", orderref=ref)
        assert lines(body)[0] == f"Order {ref}, core facility 2"
        header, data = rows(body, 1)
        assert header == ["Core facility ref.", "Order ref.", "Order id", "Service id", "Quantity", "User", "Group",
                          "Project ref", "Quoted date", "Ordered date", "Completed date", "Status", "Invoiced"]
        assert 1 <= len(data) <= 4
        counts.append(len(data))
        for line in data:
            assert line[:2] + line[5:] == found[ref]
            assert int(line[3]) in {s[0] for s in ppms.SERVICES} and Decimal(line[4]) > 0
        assert lines(api("getorderlines", orderref=ref, noheaders="true")) == lines(body)[2:]
    assert api("getorderlines", orderref="999999") == "" and api("getorderlines", orderref="x") == ""


# ---- invoices ---------------------------------------------------------------------------------------

def test_invoices_list_charges_and_details_agree(api):
    ids = lines(api("getinvoicelist"))
    assert len(ids) == 25 and all(re.fullmatch(r"2-\d{4}-\d{4}", i) for i in ids)
    invoiced = {ref for ref, r in orders(api).items() if r[9] == "True"}
    referenced = set()
    for invoice_id in ids:
        header, charges = rows(api("getinvoice", invoiceid=invoice_id), 0)
        assert header == ["Account number", "Amount"] and charges
        assert all(re.fullmatch(r"-?\d+\.\d{2}", amount) for _, amount in charges)
        details = api("getinvoicedetails", invoiceid=invoice_id)
        assert lines(details)[0] == f"Invoice {invoice_id}"
        header, data = rows(details, 2)
        assert header[0] == "Reference" and header[-1] == "Final amount" and len(header) == 26
        assert all(len(r) == 26 for r in data)
        totals: dict[str, Decimal] = {}
        for r in data:
            totals[r[20]] = totals.get(r[20], Decimal(0)) + Decimal(r[25])
            if r[5] == "Service":
                referenced.add(r[0])
        assert {a: Decimal(v) for a, v in charges} == totals
        assert lines(api("getinvoicedetails", invoiceid=invoice_id, noheaders="true")) == lines(details)[3:]
    assert referenced == invoiced
    assert api("getinvoice", invoiceid="2-1999-0001") == "" and api("getinvoicedetails", invoiceid="nope") == ""


# ---- createorder ------------------------------------------------------------------------------------

def active_login(api) -> str:
    return lines(api("getusers", active="true"))[0]


def test_createorder_makes_exactly_one_order_of_one_line(api, sandbox):
    login = active_login(api)
    body = api("createorder", serviceid="102", login=login, quantity="2", comments="grid, batch 7")
    assert body == "1151\r\n"
    found = orders(api)
    assert len(found) == 151
    assert found["1151"] == ["2", "1151", login, found["1151"][3], "", "2026/01/05", "", "", "Quoted", "False"]
    _, data = rows(api("getorderlines", orderref="1151"), 1)
    assert len(data) == 1 and data[0][3:5] == ["102", "2"]
    state = sandbox.state("ppms")
    assert state["created_orders"] == [{"orderref": 1151, "at": state["created_orders"][0]["at"], "params": {
        "serviceid": "102", "login": login, "quantity": "2", "comments": "grid, batch 7"}}]
    assert state["counts"]["orders"] == 151
    again = api("createorder", serviceid="102", login=login, quantity="2")     # no idempotency at PPMS
    assert again == "1152\r\n" and len(orders(api)) == 152


def test_createorder_accepted_and_completed(api):
    login = active_login(api)
    accepted = api("createorder", serviceid="101", login=login, quantity="1.5", accepted="true", projectid="3")
    completed = api("createorder", serviceid="103", login=login, quantity="1", accepted="true", completed="true",
                    completeddate="2026-01-02 15:30:00")
    today = api("createorder", serviceid="103", login=login, quantity="1", accepted="true", completed="true")
    python_true = api("createorder", serviceid="103", login=login, quantity="1", accepted="True")
    found = orders(api)
    assert found[accepted.strip()][4:] == ["3", "2026/01/05", "2026/01/05", "", "Ordered", "False"]
    assert found[completed.strip()][5:] == ["2026/01/05", "2026/01/05", "2026/01/02", "Completed", "False"]
    assert found[today.strip()][7:9] == ["2026/01/05", "Completed"]
    assert found[python_true.strip()][8] == "Quoted"          # `True` is not `true`: not accepted
    _, data = rows(api("getorderlines", orderref=accepted.strip()), 1)
    assert data[0][4] == "1.5"


@pytest.mark.parametrize("params, error", [
    ({"serviceid": "99"}, "error: invalid service id 99"),
    ({"serviceid": "abc"}, "error: invalid service id abc"),
    ({"login": "nobody"}, "error: invalid user nobody"),
    ({"login": "INACTIVE"}, "error: invalid user INACTIVE"),
    ({"quantity": "0"}, "error: invalid quantity"),
    ({"quantity": "-1"}, "error: invalid quantity"),
    ({"quantity": "two"}, "error: invalid quantity"),
    ({"projectid": "99"}, "error: invalid project id 99"),
    ({"completed": "true"}, "error: completed requires accepted"),
    ({"accepted": "true", "completed": "true", "completeddate": "2026/01/02"}, "error: invalid completeddate"),
])
def test_a_refused_createorder_creates_nothing(api, sandbox, params, error):
    login = active_login(api)
    if params.get("login") == "INACTIVE":
        params = {**params, "login": lines(api("getusers", active="false"))[0]}
        error = f"error: invalid user {params['login']}"
    body = api("createorder", **{"serviceid": "101", "login": login, "quantity": "1", **params})
    assert body == error + "\r\n"
    state = sandbox.state("ppms")
    assert state["counts"]["orders"] == 150 and state["created_orders"] == []
    assert len(orders(api)) == 150
    assert api("createorder", serviceid="101", login=login, quantity="1") == "1151\r\n"   # refs not consumed


def test_a_dropped_answer_still_made_the_order(api, sandbox):
    """The kill/crash case: PPMS made the order, the answer never arrived whole."""
    login = active_login(api)
    sandbox.faults("ppms", drop_next=1, only_path="/pumapi/")
    with pytest.raises(requests.exceptions.RequestException):
        api("createorder", serviceid="101", login=login, quantity="1")
    state = sandbox.state("ppms")
    assert [o["orderref"] for o in state["created_orders"]] == [1151] and state["counts"]["orders"] == 151
    assert [r["status"] for r in sandbox.requests("ppms")][-1] == 200


def test_faults_apply_to_ppms(api, sandbox):
    sandbox.faults("ppms", burst_5xx=1)
    answer = requests.post(f"{sandbox.url}/ppms/pumapi/", data={"apikey": ppms.API_KEY, "action": "auth"},
                           timeout=30)
    assert answer.status_code == 503
    assert api("auth") == ""
    assert sandbox.state("ppms")["calls"] == {"auth": 1}


# ---- controls, reset, restart -----------------------------------------------------------------------

def test_upstream_changes_show_in_the_summary_rows(api, sandbox):
    before = orders(api)
    ordered = next(ref for ref, r in before.items() if r[8] == "Ordered")
    quoted = next(ref for ref, r in before.items() if r[8] == "Quoted")
    sandbox.control("ppms", update_orders=[{"orderref": int(ordered), "status": "Completed"},
                                           {"orderref": int(quoted), "status": "Cancelled"}])
    after = orders(api)
    assert after[ordered][7:9] == ["2026/01/05", "Completed"] and after[quoted][8] == "Cancelled"
    assert {ref for ref in before if before[ref] != after[ref]} == {ordered, quoted}
    _, data = rows(api("getorderlines", orderref=ordered), 1)
    assert all(line[11] == "Completed" for line in data)
    # a line's quantity: the order's summary row does not show it
    line_id = data[0][2]
    sandbox.control("ppms", update_lines=[{"orderref": int(ordered), "orderid": int(line_id), "quantity": 7}])
    assert orders(api) == after
    _, data = rows(api("getorderlines", orderref=ordered), 1)
    assert data[0][4] == "7"


def test_upstream_order_and_invoice(api, sandbox):
    login = active_login(api)
    state = sandbox.control("ppms", add_orders=[{"login": login, "status": "Completed", "lines": [
        {"serviceid": 105, "quantity": 4}, {"serviceid": 107, "quantity": 1}]}])
    assert state["counts"] == {"users": 30, "orders": 151, "lines": state["counts"]["lines"], "invoices": 25}
    assert state["created_orders"] == []                           # made by a person, not through createorder
    _, data = rows(api("getorderlines", orderref="1151"), 1)
    assert [(r[3], r[4]) for r in data] == [("105", "4"), ("107", "1")]
    state = sandbox.control("ppms", add_invoices=[{"orderrefs": [1151]}])
    assert state["invoices"][-1]["orders"] == [1151]
    new_id = lines(api("getinvoicelist"))[-1]
    assert new_id == state["invoices"][-1]["invoiceid"] and len(lines(api("getinvoicelist"))) == 26
    _, charges = rows(api("getinvoice", invoiceid=new_id), 0)
    assert sum(Decimal(a) for _, a in charges) >= Decimal("4") * Decimal("8.75") + Decimal("15.00")
    assert orders(api)["1151"][9] == "True"


def test_a_refused_control_changes_nothing(api, sandbox):
    before = orders(api)
    ref = next(ref for ref, r in before.items() if r[8] == "Quoted")
    answer = requests.put(f"{sandbox.url}/_sandbox/control/ppms", timeout=30, json={
        "update_orders": [{"orderref": int(ref), "status": "Cancelled"}, {"orderref": 1, "status": "Cancelled"}]})
    assert answer.status_code == 400 and "no order 1" in answer.json()["message"]
    assert orders(api) == before
    answer = requests.put(f"{sandbox.url}/_sandbox/control/ppms", timeout=30,
                          json={"add_invoices": [{"orderrefs": [int(ref)]}]})
    assert answer.status_code == 400


def test_seeded_data_is_deterministic_and_reset_restores_it(api, sandbox):
    first = api("getorders")
    details = api("getinvoicedetails", invoiceid="2-2025-0001")
    api("createorder", serviceid="101", login=active_login(api), quantity="1")
    sandbox.reset()
    sandbox.control("ppms", set_clock=TEN_PAST)
    assert api("getorders") == first and api("getinvoicedetails", invoiceid="2-2025-0001") == details
    assert sandbox.state("ppms")["calls"] == {"getorders": 1, "getinvoicedetails": 1}


def test_state_survives_a_restart(tmp_path):
    path = tmp_path / "sandbox-state.json"
    process, url = launch.start("--state-file", str(path))

    def post(base, **data):
        return requests.post(f"{base}/ppms/pumapi/", data={"apikey": ppms.API_KEY, **data}, timeout=10).text

    try:
        requests.put(f"{url}/_sandbox/control/ppms", timeout=10, json={
            "set_clock": TEN_PAST, "update_orders": [{"orderref": 1005, "status": "Cancelled"}]}).raise_for_status()
        login = post(url, action="getusers", active="true").split()[0]
        assert post(url, action="createorder", serviceid="104", login=login, quantity="0.75") == "1151\r\n"
        requests.put(f"{url}/_sandbox/control/ppms", timeout=10, json={
            "add_orders": [{"login": login, "status": "Completed"}]}).raise_for_status()
        requests.put(f"{url}/_sandbox/control/ppms", timeout=10,
                     json={"add_invoices": [{"orderrefs": [1152]}]}).raise_for_status()
        invoice_id = post(url, action="getinvoicelist").split()[-1]
        bodies = [post(url, action=a, **p) for a, p in (
            ("getorders", {"noheaders": "true"}), ("getorderlines", {"orderref": "1151"}), ("getinvoicelist", {}),
            ("getinvoicedetails", {"invoiceid": invoice_id}))]
        before = requests.get(f"{url}/_sandbox/state/ppms", timeout=10).json()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    process, url = launch.start("--state-file", str(path))
    try:
        after = requests.get(f"{url}/_sandbox/state/ppms", timeout=10).json()
        for key in ("calls", "created_orders", "orders", "invoices", "counts"):
            assert after[key] == before[key], key
        assert before["invoices"][-1]["invoiceid"] == invoice_id and before["calls"]["createorder"] == 1
        assert [post(url, action=a, **p) for a, p in (
            ("getorders", {"noheaders": "true"}), ("getorderlines", {"orderref": "1151"}), ("getinvoicelist", {}),
            ("getinvoicedetails", {"invoiceid": invoice_id}))] == bodies
        assert post(url, action="createorder", serviceid="104", login=login, quantity="1") == "1153\r\n"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
