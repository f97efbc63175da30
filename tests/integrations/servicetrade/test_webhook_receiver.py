"""The receiver over real HTTP: who may deliver, what is stored before the answer, and what each answer means."""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging

import pytest
import requests

from integrations.servicetrade.webhook_config import load
from tests.integrations.servicetrade.webhook_accounts import register_account

SECRET = "s3cret-for-tests-only-0123456789abcdef"


def _message(message_id: str, *entities: tuple[str, int]) -> dict:
    return {"messageId": message_id, "timestamp": "1401833057",
            "data": [{"action": "updated", "timestamp": 1401833052, "userId": None,
                      "entity": {"type": kind, "id": entity_id}} for kind, entity_id in entities]}


def _inbox(conn, account: str) -> list[tuple]:
    conn.rollback()
    return conn.execute("SELECT message_id, malformed, body FROM servicetrade.webhook_inbox WHERE account = %s "
                        "ORDER BY id", (account,)).fetchall()


@pytest.fixture
def base(webhook_tables, conn, serve_receiver):
    register_account(conn, "acct", SECRET)
    return serve_receiver()


def test_a_delivery_is_stored_once_and_answered_200(base, conn):
    body = _message("m-1", ("job", 10_001), ("invoice", 20_003))
    first = requests.post(f"{base}/acct/{SECRET}", json=body, timeout=5)
    again = requests.post(f"{base}/acct/{SECRET}", json=body, timeout=5)
    assert (first.status_code, first.json()) == (200, {"stored": True})
    assert (again.status_code, again.json()) == (200, {"stored": False})
    assert [row[0] for row in _inbox(conn, "acct")] == ["m-1"]
    assert conn.execute("SELECT count(*) FROM servicetrade.webhook_events WHERE pending").fetchone() == (2,)


@pytest.mark.parametrize(("account", "secret"), [("acct", SECRET[:-1] + "X"), ("acct", "short"),
                                                 ("nobody", SECRET)])
def test_a_wrong_secret_or_unknown_account_is_404_and_nothing_is_stored(base, conn, account, secret):
    answer = requests.post(f"{base}/{account}/{secret}", json=_message("m-2", ("job", 1)), timeout=5)
    assert answer.status_code == 404
    assert conn.execute("SELECT count(*) FROM servicetrade.webhook_inbox").fetchone() == (0,)


def test_a_secret_rotated_a_moment_ago_is_accepted_at_its_first_delivery(base, conn):
    """The receiver holds the accounts' digests for 30 s; a 404 would be lost for good (ServiceTrade counts it as
    delivered), so a secret committed since the last read is found by one more read."""
    assert requests.post(f"{base}/acct/{SECRET}", json=_message("m-old", ("job", 1)), timeout=5).status_code == 200
    rotated = SECRET[::-1]
    register_account(conn, "acct", rotated)              # what servicetrade_webhook_subscription commits first
    register_account(conn, "brand-new", rotated + "2")
    assert requests.post(f"{base}/acct/{rotated}", json=_message("m-new", ("job", 1)), timeout=5).status_code == 200
    assert requests.post(f"{base}/brand-new/{rotated}2", json=_message("m-3", ("job", 2)), timeout=5).status_code \
        == 200
    assert requests.post(f"{base}/acct/{SECRET}x", json=_message("m-4", ("job", 1)), timeout=5).status_code == 404
    assert [row[0] for row in _inbox(conn, "acct")] == ["m-old", "m-new"]


def test_an_oversized_body_is_413_and_nothing_is_stored(webhook_tables, conn, serve_receiver):
    register_account(conn, "acct", SECRET)
    config = dataclasses.replace(load(), max_body_bytes=2_000)
    base = serve_receiver(config=config)
    big = _message("m-3", *[("job", n) for n in range(200)])
    declared = requests.post(f"{base}/acct/{SECRET}", json=big, timeout=5)
    streamed = requests.post(f"{base}/acct/{SECRET}", data=iter([json.dumps(big).encode()]), timeout=5)  # chunked
    assert declared.status_code == streamed.status_code == 413
    assert conn.execute("SELECT count(*) FROM servicetrade.webhook_inbox").fetchone() == (0,)


def test_malformed_json_is_400_and_the_raw_body_is_kept(base, conn):
    answer = requests.post(f"{base}/acct/{SECRET}", data=b'{"messageId": "m-4", "data": [', timeout=5)
    assert answer.status_code == 400 and "not JSON" in answer.json()["message"]
    assert _inbox(conn, "acct") == [(None, answer.json()["message"].split(": ", 1)[1],
                                     b'{"messageId": "m-4", "data": [')]


def test_an_address_outside_the_allowed_networks_is_403(webhook_tables, conn, serve_receiver):
    register_account(conn, "acct", SECRET)
    config = dataclasses.replace(load(), allowed_networks=(ipaddress.ip_network("203.0.113.0/24"),))
    answer = requests.post(f"{serve_receiver(config=config)}/acct/{SECRET}", json=_message("m-5"), timeout=5)
    assert answer.status_code == 403
    assert conn.execute("SELECT count(*) FROM servicetrade.webhook_inbox").fetchone() == (0,)


def test_a_database_that_does_not_answer_is_503(serve_receiver, caplog):
    from sandbox.launch import free_port

    base = serve_receiver(conninfo=f"postgresql://nobody@127.0.0.1:{free_port()}/none")
    with caplog.at_level(logging.DEBUG):
        answer = requests.post(f"{base}/acct/{SECRET}", json=_message("m-6", ("job", 1)), timeout=5)
    assert answer.status_code == 503
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith("urllib3")]   # not the test's client
    assert ours and not [line for line in ours if SECRET in line]


def test_airflows_access_log_never_prints_the_secret(webhook_tables, conn, db_url):
    """Airflow's own access-log middleware around the mounted receiver, as in the API server."""
    from airflow.api_fastapi.common.http_access_log import HttpAccessLogMiddleware
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from integrations.servicetrade.receiver import create_app

    register_account(conn, "acct", SECRET)
    root = FastAPI()
    root.mount("/servicetrade-webhooks", create_app(conninfo=db_url))
    logged = []
    root.add_middleware(HttpAccessLogMiddleware)
    import structlog

    structlog.configure(processors=[lambda _logger, _name, event: logged.append(event) or ""],
                        logger_factory=structlog.ReturnLoggerFactory())
    with TestClient(root) as client:
        assert client.post(f"/servicetrade-webhooks/acct/{SECRET}", json=_message("m-7")).status_code == 200
        assert client.post("/servicetrade-webhooks/acct/wrong", json=_message("m-8")).status_code == 404
    structlog.reset_defaults()
    paths = [event["path"] for event in logged if event.get("event") == "request finished"]
    assert paths == ["/servicetrade-webhooks/acct/***", "/servicetrade-webhooks/acct/***"]
