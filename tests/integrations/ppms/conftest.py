"""The PPMS tests' connection: `ppms_default` on the sandbox, with a fast backoff for the retried reads."""
from __future__ import annotations

import json

import pytest

from hooks.pumapi import PumapiHook
from sandbox import ppms as ppms_sandbox


@pytest.fixture
def ppms_connection(sandbox, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_PPMS_DEFAULT", json.dumps(ppms_sandbox.airflow_connection(sandbox.url)))
    monkeypatch.setattr(PumapiHook, "backoff_initial", 0.01)
    monkeypatch.setattr(PumapiHook, "backoff_max", 0.05)
    return sandbox
