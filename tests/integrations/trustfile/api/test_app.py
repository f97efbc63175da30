"""The extractor API TrustFile calls: auth on every route but health, the contract's shapes, 400s."""
from __future__ import annotations

import asyncio
import json
import re
import secrets

import pytest
from fastapi.testclient import TestClient

from integrations.trustfile import connections as store
from integrations.trustfile.api.app import create_app
from integrations.trustfile.api.common import Conn

TOKEN = "tf-to-extractor-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+00:00$")

PROTECTED = [
    ("GET", "/connections", None), ("POST", "/connections", {"connectionId": "x"}),
    ("HEAD", "/connections/c1", None), ("GET", "/connections/c1", None),
    ("PUT", "/connections/c1", {"enabled": True}), ("DELETE", "/connections/c1", None),
    ("GET", "/connections/c1/activities", None), ("GET", "/connector", None),
    ("PUT", "/connector", {"enabled": True}),
    ("GET", "/connections/c1/authentication?redirectUri=https%3A%2F%2Fapp.trustfile.avalara.com%2Fok", None),
    ("GET", "/errors?date=2026-03-02", None), ("GET", "/baditems?date=2026-03-02", None),
    ("GET", "/openapi.json", None), ("GET", "/no/such/route", None),
]


@pytest.fixture
def client(db_url, conn):
    conn.execute("TRUNCATE trustfile.connections CASCADE")
    conn.execute("UPDATE trustfile.connector SET enabled = true")
    conn.commit()
    with TestClient(create_app(db_url, TOKEN), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}],
                         ids=["missing", "wrong", "not-bearer"])
def test_every_protected_route_needs_the_token(client, method, path, body, headers):
    response = client.request(method, path, json=body, headers=headers)
    assert response.status_code == 401
    if method != "HEAD":
        assert response.json() == {"message": "You are not authorized"}


def test_health_needs_no_token_and_reports_each_system(client, monkeypatch):
    for conn_id in ("QBO_DEFAULT", "TRUSTFILE_DEFAULT"):
        monkeypatch.delenv(f"AIRFLOW_CONN_{conn_id}", raising=False)
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"statuses": [
        {"type": "connector", "status": "OK", "description": "NOMINAL"},
        {"type": "hostSystem", "status": "FAIL", "description": "connection not defined"},
        {"type": "trustfile", "status": "FAIL", "description": "connection not defined"}]}


def test_the_consent_callback_needs_no_token_but_a_sealed_state(client):
    response = client.get("/oauth/qbo/callback?code=abc&realmId=1", follow_redirects=False)
    assert response.status_code == 400
    assert response.json() == {"message": "This authorization link is invalid or has expired: start the "
                                          "authorization again from TrustFile."}


def test_connection_lifecycle_in_the_contracts_formats(client):
    created = client.post("/connections", json={"connectionId": "c1"}, headers=AUTH)
    assert created.status_code == 200 and created.json() == {"connectionId": "c1", "startDate": None, "enabled": False}
    assert client.head("/connections/c1", headers=AUTH).status_code == 200
    assert client.get("/connections?enabled=false", headers=AUTH).json() == {"connections": ["c1"]}
    assert client.get("/connections?enabled=true", headers=AUTH).json() == {"connections": []}

    enabled = client.put("/connections/c1", json={"enabled": True, "startDate": "2026-04-01", "connectionId": "c1"},
                         headers=AUTH).json()
    assert enabled["enabled"] is True and enabled["startDate"] == "2026-04-01" and enabled["authorized"] is False
    assert STAMP.match(enabled["statusChangedAt"]) and enabled["lastSyncAt"] is None
    assert client.get("/connector", headers=AUTH).json() == {"enabled": True, "userCount": 1}

    actions = client.get("/connections/c1/activities?days=14&limit=10", headers=AUTH).json()["activities"]
    assert [a["action"] for a in actions] == ["Start date set to 2026-04-01", "Enabled", "Connection created"]
    assert all(STAMP.match(a["timestamp"]) for a in actions)

    assert client.put("/connector", json={"enabled": False}, headers=AUTH).json() == {"enabled": False, "userCount": 1}
    assert client.delete("/connections/c1", headers=AUTH).json() == {"success": True}
    assert client.get("/connections/c1", headers=AUTH).status_code == 404


@pytest.mark.parametrize(("method", "path", "body", "message"), [
    ("POST", "/connections", {}, "Missing connectionId"),
    ("POST", "/connections", {"connectionId": "c2", "colour": "red"}, "unknown field 'colour'"),
    ("POST", "/connections", {"connectionId": "c2", "startDate": "2026-13-01"},
     "startDate '2026-13-01' is not a calendar date"),
    ("POST", "/connections", {"connectionId": "c2", "startDate": "01/04/2026"},
     "startDate must be a date as yyyy-mm-dd"),
    ("PUT", "/connections/c1", {"enabled": "maybe"}, "enabled: Input should be a valid boolean"),
    ("PUT", "/connections/c1", {"enabled": 0}, "enabled: Input should be a valid boolean"),
    ("PUT", "/connector", {"enabled": "true"}, "enabled: Input should be a valid boolean"),
    ("PUT", "/connector", {}, "Missing enabled"),
    ("POST", "/connections", {"connectionId": None}, "connectionId: Input should be a valid string"),
    ("PUT", "/connections/c1", {"connectionId": "other"}, "connectionId in the body differs from the one in the path"),
    ("GET", "/connections?enabled=yes", None, "enabled must be true or false"),
    ("GET", "/connections/c1/activities?days=0", None, "days: Input should be greater than or equal to 1"),
])
def test_bad_input_is_a_400_with_a_message(client, method, path, body, message):
    client.post("/connections", json={"connectionId": "c1"}, headers=AUTH)
    response = client.request(method, path, json=body, headers=AUTH)
    assert (response.status_code, response.json()) == (400, {"message": message})


def test_malformed_json_is_a_400(client):
    response = client.post("/connections", content=b'{"connectionId": ',
                           headers={**AUTH, "Content-Type": "application/json"})
    assert (response.status_code, response.json()) == (400, {"message": "the body is not valid JSON"})


def test_unknown_connections_are_404_and_duplicates_follow_the_contract(client):
    for method in ("GET", "PUT", "DELETE"):
        response = client.request(method, "/connections/nope", json={"enabled": True} if method == "PUT" else None,
                                  headers=AUTH)
        assert response.status_code == 404 and response.json() == {"message": "Unknown connection nope"}
    assert client.head("/connections/nope", headers=AUTH).status_code == 404
    client.post("/connections", json={"connectionId": "dup"}, headers=AUTH)
    again = client.post("/connections", json={"connectionId": "dup"}, headers=AUTH)
    assert (again.status_code, again.json()) == (500, {"message": "User already exists"})


def test_an_unreachable_database_is_a_503_not_a_stack_trace():
    unreachable = TestClient(create_app("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2", TOKEN),
                             raise_server_exceptions=False)
    answer = unreachable.get("/connections", headers=AUTH)
    assert answer.status_code == 503 and answer.json() == {"message": "the extractor's database is unavailable; "
                                                                      "try again later"}


def test_the_openapi_document_is_served_with_the_token(client):
    response = client.get("/openapi.json", headers=AUTH)
    assert response.status_code == 200 and response.json()["info"]["title"] == "TrustFile extractor"


@pytest.mark.parametrize(("case", "status", "message"), [
    ("too-long", 400, "the request holds a value the extractor's database cannot take (too long, or a NUL "
                      "character)"),
    ("nul", 400, "the request holds a value the extractor's database cannot take (too long, or a NUL character)"),
    ("terminated", 503, "the extractor's database is unavailable; try again later"),
])
def test_database_errors_caused_by_input_are_a_400_and_only_an_outage_a_503(db_url, conn, case, status, message):
    """Past the API's own checks, the store's errors are classed by cause: a value PostgreSQL refuses is the
    caller's (400), a lost or terminated session is ours and passes (503)."""
    app = create_app(db_url, TOKEN)

    @app.get("/probe/{case}")
    def probe(case: str, conn: Conn):
        if case == "too-long":   # random, so it cannot be compressed under the btree's row size limit
            store.create(conn, secrets.token_hex(10_000), None)
        elif case == "nul":
            store.get(conn, "a\x00b")
        else:
            conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    with TestClient(app, raise_server_exceptions=False) as test_client:
        response = test_client.get(f"/probe/{case}", headers=AUTH)
    assert (response.status_code, response.json()) == (status, {"message": message})


@pytest.mark.parametrize("declared", [b"ten", b"\xb2", b"-1"], ids=["word", "superscript-two", "negative"])
def test_a_content_length_that_is_not_a_number_is_a_400(db_url, declared):
    """uvicorn refuses these itself; an ASGI server that passes them on gets our 400, not a 500. Called
    as an ASGI app with the raw header (a test client would re-encode it)."""
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/health", "raw_path": b"/health", "root_path": "", "query_string": b"",
             "headers": [(b"content-length", declared)], "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1)}
    asyncio.run(create_app(db_url, TOKEN)(scope, receive, send))
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"]) == {"message": "Content-Length must be a number of bytes"}
