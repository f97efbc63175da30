"""The OMS-Pro tests' TrackVia connection: `trackvia_default` on the sandbox, as an environment connection."""
from __future__ import annotations

import json

import pytest

from hooks.trackvia import TrackViaHook
from sandbox import trackvia as tv


@pytest.fixture
def trackvia_connection(sandbox, monkeypatch):
    """Call it to (re)write trackvia_default, with extra fields such as hourly_limit."""
    def write(**extra) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_TRACKVIA_DEFAULT", json.dumps(tv.airflow_connection(sandbox.url, **extra)))

    return write


@pytest.fixture
def trackvia_hook(trackvia_connection, db_url, conn) -> TrackViaHook:
    """A TrackViaHook on the sandbox, with no request budget used and no watermark."""
    conn.execute("TRUNCATE etl.request_budgets, etl.watermarks")
    conn.commit()
    trackvia_connection()
    return TrackViaHook(conninfo=db_url)
