"""The webhook receiver served for real (uvicorn on 127.0.0.1, mounted as the Airflow plugin mounts it) and the
accounts whose deliveries it accepts."""
from __future__ import annotations

import threading
import time

import pytest

from sandbox.launch import free_port

PREFIX = "/servicetrade-webhooks"


def register_account(conn, account: str, secret: str) -> None:
    from integrations.servicetrade.inbox import secret_digest

    conn.execute("INSERT INTO servicetrade.webhook_accounts (account, secret_sha256) VALUES (%s, %s) "
                 "ON CONFLICT (account) DO UPDATE SET secret_sha256 = excluded.secret_sha256",
                 (account, secret_digest(secret)))
    conn.commit()


@pytest.fixture
def serve_receiver(db_url):
    """`serve_receiver(**create_app_options) -> base URL` (…/servicetrade-webhooks); stopped after the test."""
    import uvicorn
    from fastapi import FastAPI

    from integrations.servicetrade.receiver import create_app

    servers = []

    def start(**options) -> str:
        port = free_port()
        root = FastAPI()
        root.mount(PREFIX, create_app(**{"conninfo": db_url, **options}))
        server = uvicorn.Server(uvicorn.Config(root, host="127.0.0.1", port=port, log_level="warning",
                                               lifespan="off"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the webhook receiver did not start")
            time.sleep(0.01)
        servers.append((server, thread))
        return f"http://127.0.0.1:{port}{PREFIX}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def webhook_tables(conn):
    """No inbox rows, events, accounts or entities left by another test of the module."""
    conn.execute("TRUNCATE servicetrade.webhook_inbox, servicetrade.webhook_events, servicetrade.webhook_accounts, "
                 "servicetrade.jobs, servicetrade.job_items, servicetrade.invoices, servicetrade.locations")
    conn.commit()
    return conn
