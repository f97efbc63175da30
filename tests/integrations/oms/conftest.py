"""The OMS-Pro tests' TrackVia connection: `trackvia_default` on the sandbox, as an environment connection."""
from __future__ import annotations

import json

import pytest

from sandbox import trackvia as tv


@pytest.fixture
def trackvia_connection(sandbox, monkeypatch):
    """Call it to (re)write trackvia_default, with extra fields such as hourly_limit."""
    def write(**extra) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_TRACKVIA_DEFAULT", json.dumps(tv.airflow_connection(sandbox.url, **extra)))

    return write
