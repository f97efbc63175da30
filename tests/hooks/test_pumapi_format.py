"""PUMAPI answer parsing (hooks.pumapi_format): every recorded response in shared/fixtures/pumapi, one test
each, read the same as pyppms reads it, plus the order / invoice shapes the recordings do not cover.

pyppms (GPLv3) is a test-time oracle only: imported here, never by the platform, none of its code copied. It is
driven the way its own tests drive it: `PpmsConnection(url, "", cache=<case dir>)` serves
`<case>/<action>/<params>.txt` (with a `_status-code.txt` sibling as the HTTP status), with `requests.post`
replaced by a refusal so a cache miss can neither reach a network nor write a file.

Where pyppms converts, the comparison first applies the same documented normalisation to our strings:
- `dict_from_single_response` (getuser, getgroup) turns exactly `true` / `false` into booleans;
- `parse_multiline_response` (getsystems, getuserexp, getrunningsheet) reads through pandas, which turns
  `True`/`False`/`true`/`false` into booleans, numbers into numbers and `n/a` / empty into "";
- list answers are compared as pyppms returns them (getsysrights: the logins whose right is not `D`;
  nextbooking / getbooking: a booking object; setright: True for `done`).
Where pyppms swallows an answer we refuse (a booking request "not authorized" is None to pyppms), the test
checks pyppms's `request()` refused it too; a few files also carry explicit expected values (EXPECTED).
"""
from __future__ import annotations

import datetime as dt
import decimal
import numbers
import os
from pathlib import Path

import pytest

from hooks.pumapi_format import (
    INVOICE_COLUMNS,
    INVOICE_DETAIL_COLUMNS,
    INVOICE_DETAILS_PREAMBLE_LINES,
    ORDER_COLUMNS,
    ORDER_LINE_COLUMNS,
    SHAPES,
    PumapiError,
    PumapiFormatError,
    error_in,
    parse,
    parse_bool,
    parse_date,
    parse_datetime,
    parse_decimal,
    parse_int,
    read_table,
)

ROOT = Path(__file__).resolve().parents[2]
# The recordings are pyppms's (GPLv3 data), kept beside the project, not in it: $PUMAPI_FIXTURES, else
# ../shared/fixtures/pumapi beside this checkout, else the team machines' /work/shared (where a fresh clone in
# a temporary folder, as CI makes, finds them). None there fails the guard test below, never skips.
FIXTURE_PLACES = [Path(p) for p in (os.environ.get("PUMAPI_FIXTURES"),) if p] + [
    ROOT.parent / "shared" / "fixtures" / "pumapi", Path("/work/shared/fixtures/pumapi")]
FIXTURES = next((place for place in FIXTURE_PLACES if place.is_dir()), FIXTURE_PLACES[0])
STATUS_SUFFIX = "_status-code.txt"
NOT_A_KEY = "not-a-real-key-0123456789"


def _on_disk() -> set[Path]:
    return {p for p in FIXTURES.rglob("*") if p.is_file()}


def _responses(files: set[Path]) -> list[Path]:
    return sorted(p for p in files if p.suffix == ".txt" and not p.name.endswith(STATUS_SUFFIX))


RESPONSES = _responses(_on_disk()) if FIXTURES.is_dir() else []


def _id(path: Path) -> str:
    return str(path.relative_to(FIXTURES))


def request_of(path: Path) -> tuple[str, dict[str, str]]:
    """The action and the parameters a recorded response answered (pyppms's file naming)."""
    if path.stem == "response":
        return path.parent.name, {}
    return path.parent.name, dict(pair.split("--", 1) for pair in path.stem.split("__"))


def status_of(path: Path) -> int:
    sibling = path.with_name(path.stem + STATUS_SUFFIX)
    return int(sibling.read_text().strip()) if sibling.exists() else 200


def body_of(path: Path) -> str:
    return path.read_bytes().decode("utf-8")  # as the wire has it: \r\n line ends kept


# --- pyppms, the oracle -----------------------------------------------------------------------------------------

@pytest.fixture
def pyppms(monkeypatch):
    import pyppms.ppms
    from loguru import logger

    def refuse(*args, **kwargs):
        raise AssertionError("pyppms tried an on-line request: the recorded response is missing")

    monkeypatch.setattr(pyppms.ppms.requests, "post", refuse)
    logger.disable("pyppms")
    yield pyppms
    logger.enable("pyppms")


class Refused(Exception):
    """pyppms would not accept this answer (it raised, or returned its failure value)."""


def _single(values: dict) -> dict:
    """Our record as pyppms's dict_from_single_response reads it: exactly `true`/`false` become booleans."""
    return {k: True if v == "true" else False if v == "false" else v for k, v in values.items()}


PANDAS_NA = {"", "n/a", "N/A", "NA", "NaN", "nan", "null", "NULL", "None", "<NA>", "#N/A"}  # read_csv's defaults


def _pandas_ours(rows: list[dict]) -> list[dict]:
    """Our rows as pyppms's pandas reading shapes them: booleans, NA spellings as ""."""
    def canon(v: str):
        if v in ("True", "true"):
            return True
        if v in ("False", "false"):
            return False
        return "" if v in PANDAS_NA else v
    return [{k: canon(v) for k, v in row.items()} for row in rows]


def _pandas_theirs(rows: list[dict]) -> list[dict]:
    """pyppms's pandas values back as text: numbers as PUMAPI wrote them (integers, plain decimals)."""
    def canon(v):
        if isinstance(v, bool) or type(v).__name__ == "bool_":
            return bool(v)
        if isinstance(v, numbers.Integral):
            return str(int(v))
        if isinstance(v, numbers.Real):
            return repr(float(v))
        return v
    return [{k: canon(v) for k, v in row.items()} for row in rows]


def oracle(pyppms, path: Path):
    """(what pyppms reads from `path`, a function putting our parse in the same terms); raises Refused."""
    import requests
    from pyppms.common import dict_from_single_response, parse_multiline_response

    action, params = request_of(path)
    case = str(path.parents[1])
    conn = pyppms.ppms.PpmsConnection("https://pumapi.invalid/pumapi/", "", cache=case)
    try:
        if action == "auth":
            pyppms.ppms.PpmsConnection("https://pumapi.invalid/pumapi/", NOT_A_KEY, cache=case)
            return True, lambda ours: ours == ""
        if action == "getuser":
            return conn.get_user_dict(params["login"]), lambda ours: None if ours is None else _single(ours)
        if action == "getgroup":
            conn.get_group(params["unitlogin"])  # KeyError when PPMS does not know the group
            theirs = dict_from_single_response(conn.request("getgroup", params).text)
            return theirs, lambda ours: None if ours is None else _single(ours)
        if action == "getusers":
            return conn.get_user_ids(active=params.get("active") == "true"), list
        if action == "getgroups":
            return conn.get_groups(), list
        if action in ("getadmins", "getgroupusers"):
            # get_admins() / get_group_users() read these lines, then fetch each user (and its getuserprojects,
            # not recorded): the reading is the lines
            return conn.request(action, params).text.splitlines(), list
        if action == "getsysrights":
            theirs = conn.get_users_with_access_to_system(params["id"])
            return theirs, lambda ours: [line.split(":", 1)[1] for line in ours if line[0].upper() != "D"]
        if action == "setright":
            if not conn.set_system_booking_permissions(params["login"], params["id"], params["type"]):
                raise Refused("set_system_booking_permissions returned False")
            return True, lambda ours: ours == "done"
        if action in ("getbooking", "nextbooking"):
            conn.request(action, params)  # get_booking() swallows a refusal as None: ask request() itself
            booking = conn.get_booking(params["id"], action.removesuffix("booking"))
            if booking is None:
                return None, lambda ours: None if ours == [] else ours
            theirs = (booking.username, booking.session, booking.starttime if action == "nextbooking" else None)
            return theirs, lambda ours: (ours[0], ours[2], _minutes_from_now(ours[1], booking.starttime))
        if action in ("getsystems", "getuserexp", "getrunningsheet"):
            theirs = parse_multiline_response(conn.request(action, params).text, graceful=action == "getuserexp")
            if action == "getrunningsheet":
                for entry in theirs:  # what get_running_sheet() reads of every entry first
                    entry["User"], entry["Object"]
            return _pandas_theirs(theirs), _pandas_ours
    except (requests.exceptions.ConnectionError, KeyError, ValueError) as exc:
        if action in ("getuser", "getgroup") and isinstance(exc, KeyError) and not body_of(path).strip():
            return None, lambda ours: ours  # "unknown to PPMS": our None
        raise Refused(f"{type(exc).__name__}: {exc}") from exc
    raise AssertionError(f"no pyppms oracle for {action}: add one, or expected values in EXPECTED")


def _minutes_from_now(minutes: str, theirs: dt.datetime) -> dt.datetime:
    """Our `minutes until the start` as pyppms's absolute start, when it is within a minute of pyppms's."""
    ours = dt.datetime.now().replace(second=0, microsecond=0) + dt.timedelta(minutes=int(minutes))
    return theirs if abs(ours - theirs) <= dt.timedelta(minutes=1) else ours


# Values asserted outright, independent of pyppms (quirks both could get wrong the same way).
EXPECTED = {
    "cached_responses/stage_0/getgroup/unitlogin--pyppms_group.txt": lambda got: (
        len(got) == 14 and got["creationdate"] == "2022/04/05" and got["active"] == "true" and got["ext"] == "false"
    ),
    "cached_responses/stage_0/getrunningsheet/day--2028-12-24__plateformid--2.txt": lambda got: (
        len(got) == 4 and got[0] == {
            "Location": "VDI (Development)", "Start time": "09:00", "End time": "10:00",
            "Object": "Python Development System", "User": "Python PumAPI", "Training": "", "Assisted": "",
        }
    ),
    "cached_responses/stage_0/getsystems/response.txt": lambda got: (
        got[0]["System id"] == "69" and got[0]["Active"] == "True"
        and got[0]["Autonomy Required After Hours"] == "False" and parse_bool(got[0]["Active"]) is True
    ),
    "cached_responses/stage_0/getuser/login--pyppms-deact.txt": lambda got: (
        got["active"] == "false" and parse_bool(got["active"]) is False and got["phone"] == "+98 (76) 54 3007"
    ),
    "cached_responses/stage_0/getuser/login--invalidlogin.txt": lambda got: got is None,
    "cached_responses/stage_0/getsysrights/id--69.txt": lambda got: got[0] == "S:admin" and len(got) == 5,
    "cached_responses/stage_0/nextbooking/id--69.txt": lambda got: got == ["pyppms", "3329289", "158456"],
    "cached_responses/stage_0/getuserexp/id--69.txt": lambda got: got[2]["login"] == "pyppms-deact"
    and got[2]["last_res"] == "n/a",
    "cached_responses/stage_1/setright/id--69__login--pyppms__type--D.txt": lambda got: got == "done",
    "mocked_responses/auth_wrong_status_code/auth/response.txt": lambda got: got == "",  # the body alone is fine
    "mocked_responses/update_systems__broken_id/getsystems/response.txt": lambda got: [
        r["System id"] for r in got] == ["no-integer-value", "31"],
}


def test_the_recorded_responses_are_all_under_test():
    """A new recording cannot be skipped: the parametrized list is every response file on disk, and every other
    file on disk is the status sibling of one of them (or the folder's README)."""
    assert FIXTURES.is_dir(), (f"the recorded PUMAPI responses are in none of {[str(p) for p in FIXTURE_PLACES]}: "
                               "set PUMAPI_FIXTURES to their folder")
    files = _on_disk()
    assert RESPONSES == _responses(files)
    siblings = {p.with_name(p.stem + STATUS_SUFFIX) for p in RESPONSES}
    assert files - set(RESPONSES) - siblings == {FIXTURES / "README.md"}
    assert all(p.read_text().strip().isdigit() for p in files & siblings)
    assert set(EXPECTED) <= {_id(p) for p in RESPONSES}
    assert {request_of(p)[0] for p in RESPONSES} <= set(SHAPES)


@pytest.mark.parametrize("path", RESPONSES, ids=_id)
def test_recorded_response_reads_as_pyppms_reads_it(path: Path, pyppms):
    action, params = request_of(path)
    body, status = body_of(path), status_of(path)
    try:
        theirs, in_their_terms = oracle(pyppms, path)
    except Refused:
        # pyppms refuses this answer: so do we, naming the action, and never quoting more than ~200 characters
        with pytest.raises((PumapiError, PumapiFormatError)) as raised:
            parse(action, body, params=params, status=status)
        assert raised.value.action == action and f"PUMAPI {action} " in str(raised.value)
        assert NOT_A_KEY not in str(raised.value) and len(str(raised.value)) < 400
        if status != 200:  # the hook raises on any non-200 status, whatever the body says
            assert isinstance(raised.value, PumapiError) and str(status) in raised.value.text
        return
    got = parse(action, body, params=params, status=status)
    assert in_their_terms(got) == theirs
    if _id(path) in EXPECTED:
        assert EXPECTED[_id(path)](got), got


# --- orders and invoices: our sandbox's layout (vendors.md §4.2), not recorded ----------------------------------

def _csv(*lines: str) -> str:
    return "\r\n".join(lines) + "\r\n"


ORDER_HEADER = ",".join(ORDER_COLUMNS)
ORDER_ROW = '2,1001,"jdoe","Doe, Lab","P-7",2026-01-05 10:00:00,2026-01-06 09:30:00,,"Accepted",false'


def test_orders_skip_their_title_line_and_read_quoted_commas():
    body = _csv("List of orders", ORDER_HEADER, ORDER_ROW, "", '2,1002,"amy","Lab B",,,,,"Quoted",False')
    rows = parse("getorders", body)
    assert [r["Order ref."] for r in rows] == ["1001", "1002"]
    assert rows[0]["Group"] == "Doe, Lab" and rows[0]["Completed date"] == "" and rows[0]["Status"] == "Accepted"
    assert parse_bool(rows[0]["Invoiced"]) is False and parse_bool(rows[1]["Invoiced"]) is False
    assert parse_datetime(rows[0]["Ordered date"]) == dt.datetime(2026, 1, 6, 9, 30)


def test_a_row_with_a_trailing_extra_field_keeps_the_headers_fields_and_a_short_row_is_padded():
    body = _csv("Orders", ORDER_HEADER, ORDER_ROW + ',"surplus",', "2,1003,jdoe")
    long, short = parse("getorders", body)
    assert list(long) == list(ORDER_COLUMNS) and long["Invoiced"] == "false" and "surplus" not in long.values()
    assert short["User"] == "jdoe" and short["Group"] == "" and short["Invoiced"] == ""


def test_header_names_are_stripped_of_surrounding_spaces():
    body = _csv("Orders", ", ".join(ORDER_COLUMNS), ORDER_ROW)
    assert parse("getorders", body)[0]["Order ref."] == "1001"


def test_noheaders_answers_are_rows_only_named_by_the_declared_columns():
    line = '2,1001,55,12,"3","jdoe","Doe, Lab","P-7",,2026-01-06,,"Accepted",true'
    (row,) = parse("getorderlines", _csv(line), params={"orderref": "1001", "noheaders": "true"})
    assert list(row) == list(ORDER_LINE_COLUMNS) and len(ORDER_LINE_COLUMNS) == 13
    assert row["Service id"] == "12" and parse_int(row["Quantity"]) == 3 and row["Group"] == "Doe, Lab"
    with_headers = _csv("Order lines of 1001", ",".join(ORDER_LINE_COLUMNS), line)
    assert parse("getorderlines", with_headers, params={"orderref": "1001"}) == [row]
    # PUMAPI compares strings: `True` (a Python True on the wire) is not `true`, the title and header come
    assert parse("getorderlines", with_headers, params={"orderref": "1001", "noheaders": True}) == [row]


def test_noheaders_for_an_action_without_declared_columns_needs_the_callers_names():
    with pytest.raises(ValueError, match="must name the columns"):
        read_table("getsomething", _csv("a,b"), noheaders=True)
    assert read_table("getsomething", _csv("a,b"), columns=("x", "y"), noheaders=True) == [{"x": "a", "y": "b"}]


def test_invoice_details_skip_a_three_line_preamble():
    detail = ['"S-1"', '"jdoe"', '"Doe, Lab"'] + ['""'] * (len(INVOICE_DETAIL_COLUMNS) - 4) + ["123.40"]
    body = _csv("Invoice 77", "Period: 2026-01", ",".join(INVOICE_DETAIL_COLUMNS), ",".join(detail))
    assert INVOICE_DETAILS_PREAMBLE_LINES == 3 and body.count("\r\n") == 4
    (row,) = parse("getinvoicedetails", body, params={"invoiceid": "77"})
    assert row["Reference"] == "S-1" and row["Group"] == "Doe, Lab"
    assert parse_decimal(row["Final amount"]) == decimal.Decimal("123.40") and parse_decimal(row["Rebate"]) is None
    headless = parse("getinvoicedetails", _csv(",".join(detail)), params={"invoiceid": "77", "noheaders": "true"})
    assert headless == [row]


def test_invoices_and_the_invoice_list():
    body = _csv(",".join(INVOICE_COLUMNS), '"ACC-1",250.00', '"ACC-2",-10.5')
    assert parse("getinvoice", body, params={"invoiceid": "77"}) == [
        {"Account number": "ACC-1", "Amount": "250.00"}, {"Account number": "ACC-2", "Amount": "-10.5"}]
    assert parse("getinvoicelist", _csv("77", "78", "")) == ["77", "78"]


def test_empty_answers_mean_nothing():
    assert parse("getorders", "") == [] and parse("getorders", "\r\n") == []
    assert parse("getinvoicelist", "") == [] and parse("getuser", "", params={"login": "x"}) is None
    assert parse("auth", "") == ""
    with pytest.raises(PumapiFormatError, match="createorder"):
        parse("createorder", "  \r\n")


def test_createorder_answers_its_orderref_or_keeps_pumapis_error_text():
    assert parse("createorder", "4711\r\n", params={"serviceid": "12", "login": "jdoe", "quantity": "1"}) == "4711"
    with pytest.raises(PumapiError) as refused:
        parse("createorder", "error: invalid service id\r\n")
    assert refused.value.action == "createorder" and refused.value.text == "error: invalid service id"


def test_answers_that_do_not_fit_their_shape_name_the_action_and_the_line():
    with pytest.raises(PumapiFormatError) as no_header:  # the title line, then straight to a row
        parse("getorders", _csv("Orders", ORDER_ROW))
    assert no_header.value.action == "getorders" and no_header.value.line == 2
    with pytest.raises(PumapiFormatError, match="title line"):
        parse("getorders", "Orders only")
    user = _csv("login,lname,fname,email,phone,bcode,affiliation,unitlogin,mustchpwd,mustchbcode,active",
                '"a","A","","","","","","g",false,false,true', '"b","B","","","","","","g",false,false,true')
    with pytest.raises(PumapiFormatError) as two:
        parse("getuser", user, params={"login": "a"})
    assert two.value.line == 3 and "one record expected" in str(two.value)
    with pytest.raises(PumapiFormatError) as rights:
        parse("getsysrights", _csv("S:admin", "A:x", "malformed-entry"))
    assert rights.value.line == 3
    with pytest.raises(PumapiFormatError, match="none of"):
        parse("setright", "accepted")


def test_error_messages_quote_at_most_about_200_characters_of_a_body():
    huge = "x" * 5000
    with pytest.raises(PumapiFormatError) as raised:
        parse("getorders", _csv("Orders", huge))
    assert len(str(raised.value)) < 400 and "5000 characters" in str(raised.value)
    with pytest.raises(PumapiError) as refused:
        parse("getorders", "error: " + huge)
    assert len(str(refused.value)) < 400


def test_error_answers():
    assert error_in("getorders", "  ERROR: Invalid id\r\n") == "ERROR: Invalid id"
    assert error_in("getuser", "the request not authorized, sorry") == "the request not authorized, sorry"
    assert error_in("auth", "Some ERROR happened") == "Some ERROR happened"
    assert error_in("auth", "") is None
    # outside auth, "error" is only an error at the start: a name or a comment may contain the word
    assert error_in("getorders", _csv("Orders", ORDER_HEADER, '2,1,"u","Error Lab",,,,,"x",false')) is None
    with pytest.raises(PumapiError) as status:
        parse("getorders", _csv("Orders", ORDER_HEADER), status=503)
    assert status.value.action == "getorders" and status.value.text == "HTTP status 503"


def test_json_when_asked_and_unknown_actions():
    assert parse("getprojects", '[{"ProjectRef": 6}]', params={"format": "json"}) == [{"ProjectRef": 6}]
    with pytest.raises(PumapiFormatError, match="not JSON"):
        parse("getprojects", "Core facility ref.,Project name", params={"format": "json"})
    with pytest.raises(ValueError, match="no answer shape"):
        parse("getnothing", "x")


def test_typed_values():
    assert [parse_bool(v) for v in ("true", "True", "false", "False", " true ")] == [True, True, False, False, True]
    with pytest.raises(ValueError):
        parse_bool("yes")
    assert parse_int("69") == 69 and parse_int("") is None and parse_int("n/a") is None
    assert parse_date("2022/04/05") == dt.date(2022, 4, 5) == parse_date("2022-04-05") and parse_date("") is None
    assert parse_datetime("2026-01-05 10:00:00") == dt.datetime(2026, 1, 5, 10) and parse_datetime("n/a") is None
    with pytest.raises(ValueError):
        parse_decimal("12,5")
