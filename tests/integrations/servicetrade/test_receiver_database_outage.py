"""Issue 14's acceptance: the receiver's database stopped for 10 s while the sandbox delivers → 503s during the gap
and, after the sandbox's own retries (3 attempts, 5 and 15 s apart), every message stored once, none lost.

The receiver gets a PostgreSQL server of its own here, so stopping it leaves the session's server alone."""
from __future__ import annotations

import secrets
import threading
import time

import psycopg
import pytest
import requests

from sandbox import servicetrade as st
from sandbox.launch import free_port
from tests.integrations.servicetrade.webhook_accounts import register_account

ACCOUNT = "outage"
SECRET = "outage-secret-" + "x" * 24


@pytest.fixture
def own_server(tmp_path):
    from etl import db, migrate
    from stack.embedded_pg import EmbeddedPostgres

    server = EmbeddedPostgres(tmp_path / "pg" / "data", free_port(), password=secrets.token_urlsafe(24))
    server.start(server_options=("-c fsync=off",))
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE integrations")
    with db.connect(server.url("integrations"), autocommit=True) as conn:
        migrate.migrate(conn)
        register_account(conn, ACCOUNT, SECRET)
    yield server
    server.stop()


def test_a_database_stopped_10s_answers_503_and_loses_nothing_after_the_retries(own_server, serve_receiver,
                                                                                 sandbox):
    url = own_server.url("integrations")
    base = serve_receiver(conninfo=url)
    api = f"{sandbox.url}/servicetrade/api"
    token = requests.post(f"{api}/auth", json={"username": st.USERNAME, "password": st.PASSWORD},
                          timeout=10).json()["data"]["authToken"]
    requests.post(f"{api}/webhook", json={"hookUrl": f"{base}/{ACCOUNT}/{SECRET}"}, cookies={"PHPSESSID": token},
                  timeout=10).raise_for_status()
    jobs = range(10_000, 10_040)   # jobs the sandbox generates
    # 40 jobs edited every 0.5 s for 20 s: about 1,600 notifications in messages of up to 20, every 0.2 s.
    sandbox.control("servicetrade", webhooks={"duplicate_rate": 0.0},
                    notify=[{"entity": "job", "id": job, "times": 40, "every_seconds": 0.5} for job in jobs])
    time.sleep(4)
    own_server.stop()
    stopped = time.monotonic()
    restart = threading.Timer(10, own_server.start, kwargs={"server_options": ("-c fsync=off",)})
    restart.start()
    restart.join()
    outage = time.monotonic() - stopped
    deadline = time.monotonic() + 120          # the last retries come 5 and 15 s after their first attempt
    summary = sandbox.control("servicetrade", flush={"timeout": 5})
    while not summary["flushed"] and time.monotonic() < deadline:
        summary = sandbox.control("servicetrade", flush={"timeout": 5})
    assert summary["flushed"], summary["webhooks"]
    delivered = summary["webhooks"]
    answers = [a["status"] for a in delivered["attempts"]]
    assert 503 in answers, "the receiver never answered 503 while its database was stopped"
    assert delivered["dropped"] == 0 and delivered["messages"] == delivered["delivered"] > 0, delivered
    with psycopg.connect(url) as conn:
        stored, distinct = conn.execute("SELECT count(*), count(DISTINCT message_id) FROM "
                                        "servicetrade.webhook_inbox").fetchone()
        notifications = conn.execute("SELECT sum(notifications) FROM servicetrade.webhook_inbox").fetchone()[0]
    assert stored == distinct == delivered["messages"], (stored, distinct, delivered["messages"])
    assert notifications == delivered["notifications_sent"]
    print(f"database stopped {outage:.1f} s: {answers.count(503)} answers 503, then {stored} messages stored "
          f"of {delivered['messages']} sent, 0 lost")
