"""The webhook receiver served for real (uvicorn on 127.0.0.1, mounted as the Airflow plugin mounts it) and the
accounts whose deliveries it accepts."""
from __future__ import annotations

import pytest

from tests.loopback import LoopbackServers

PREFIX = "/servicetrade-webhooks"


@pytest.fixture
def serve_receiver(db_url):
    """`serve_receiver(**create_app_options) -> base URL` (…/servicetrade-webhooks); stopped after the test."""
    from fastapi import FastAPI

    from integrations.servicetrade.receiver import create_app

    servers = LoopbackServers()

    def start(**options) -> str:
        root = FastAPI()
        root.mount(PREFIX, create_app(**{"conninfo": db_url, **options}))
        return f"http://127.0.0.1:{servers.start(root, 'the webhook receiver')}{PREFIX}"

    yield start
    servers.stop()


@pytest.fixture
def webhook_tables(conn):
    """No inbox rows, events, accounts or entities left by another test of the module."""
    conn.execute("TRUNCATE servicetrade.webhook_inbox, servicetrade.webhook_events, servicetrade.webhook_accounts, "
                 "servicetrade.jobs, servicetrade.job_items, servicetrade.invoices, servicetrade.locations")
    conn.commit()
    return conn
