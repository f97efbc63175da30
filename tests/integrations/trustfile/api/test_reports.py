"""GET /errors and GET /baditems: the rows of one UTC day, in the contract's shapes and formats."""
from __future__ import annotations

import pytest
import requests
from psycopg.types.json import Jsonb

ITEM = {"itemId": "qbo-SalesReceipt-101", "transactionDate": "2026-03-01T00:00:00", "salesAmount": "abc"}


@pytest.fixture
def api(serve, clean_db):
    conn = clean_db
    conn.execute("INSERT INTO trustfile.connections (connection_id) VALUES ('c1'), ('c2')")
    conn.execute(
        "INSERT INTO trustfile.errors (at, type, connection_id, message) VALUES "
        "('2026-03-01 23:30:00-05', 'CONNECTION', 'c1', 'request for token ABC was throttled, retrying in 2 hours'),"
        "('2026-03-02 00:00:00+00', 'SYSTEM', NULL, 'TrustFile answered 503 three times'),"
        "('2026-03-02 23:59:59.999+00', 'INTEGRATION', 'c2', 'QuickBooks refused the refresh token'),"
        "('2026-03-03 00:00:00+00', 'SYSTEM', NULL, 'the next day'),"
        "('2026-03-01 23:59:59+00', 'SYSTEM', NULL, 'the day before')")
    conn.execute(
        "INSERT INTO trustfile.bad_items (at, connection_id, item_id, stage, message, friendly_message, payload) "
        "VALUES ('2026-03-02 10:15:30.25+00', 'c1', 'qbo-SalesReceipt-101', 'trustfile', "
        "'salesAmount: should be number', 'missing sales', %s), "
        "('2026-03-03 00:00:01+00', 'c2', NULL, 'mapping', 'no ship-to state', 'missing address', '{}')",
        (Jsonb(ITEM),))
    conn.commit()
    return serve()


def test_errors_of_a_utc_day_grouped_by_type(api, auth):
    response = requests.get(f"{api}/errors", params={"date": "2026-03-02"}, headers=auth, timeout=10)
    assert response.status_code == 200
    assert response.json() == {"errors": {
        "integration": [{"type": "INTEGRATION", "timestamp": "2026-03-02T23:59:59+00:00", "connectionId": "c2",
                         "message": "QuickBooks refused the refresh token"}],
        "connection": [{"type": "CONNECTION", "timestamp": "2026-03-02T04:30:00+00:00", "connectionId": "c1",
                        "message": "request for token ABC was throttled, retrying in 2 hours"}],
        "system": [{"type": "SYSTEM", "timestamp": "2026-03-02T00:00:00+00:00", "connectionId": None,
                    "message": "TrustFile answered 503 three times"}]}}


def test_a_day_without_errors_has_every_group_empty(api, auth):
    answer = requests.get(f"{api}/errors?date=2025-12-31", headers=auth, timeout=10).json()
    assert answer == {"errors": {"integration": [], "connection": [], "system": []}}


def test_bad_items_of_a_utc_day_carry_the_refused_payload(api, auth):
    response = requests.get(f"{api}/baditems", params={"date": "2026-03-02"}, headers=auth, timeout=10)
    assert response.status_code == 200
    assert response.json() == {"errors": [{"timestamp": "2026-03-02T10:15:30+00:00",
                                           "message": "salesAmount: should be number", "connectionId": "c1",
                                           "badItems": [ITEM], "friendlyMessage": "missing sales"}]}
    next_day = requests.get(f"{api}/baditems?date=2026-03-03", headers=auth, timeout=10).json()["errors"]
    assert [(e["connectionId"], e["badItems"], e["friendlyMessage"]) for e in next_day] == [
        ("c2", [{}], "missing address")]


@pytest.mark.parametrize("path", ["/errors", "/baditems"])
@pytest.mark.parametrize(("query", "message"), [
    ("", "Missing date"), ("?date=", "Missing date"),
    ("?date=2026-3-2", "date must be a date as yyyy-mm-dd"),
    ("?date=2026-02-30", "date '2026-02-30' is not a calendar date"),
    ("?date=2026-03-02T00:00:00", "date must be a date as yyyy-mm-dd"),
])
def test_a_missing_or_bad_date_is_a_400(api, auth, path, query, message):
    response = requests.get(f"{api}{path}{query}", headers=auth, timeout=10)
    assert (response.status_code, response.json()) == (400, {"message": message})


@pytest.mark.parametrize("path", ["/errors", "/baditems"])
@pytest.mark.parametrize("day", ["9999-12-31", "0001-01-01"])
def test_the_first_and_last_calendar_days_are_empty_days_not_a_500(api, auth, path, day):
    response = requests.get(f"{api}{path}?date={day}", headers=auth, timeout=10)
    assert response.status_code == 200
    assert response.json() == ({"errors": {"integration": [], "connection": [], "system": []}} if path == "/errors"
                               else {"errors": []})
