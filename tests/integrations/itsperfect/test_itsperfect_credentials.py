"""What ItsPerfect declares to the credential registry, checked for real against the sandbox: one credential
per registered connector, checked once a day with one request, a refused token failing by name, and a spent
request budget leaving the credential's last outcome standing instead of failing it."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from etl import credentials
from integrations.itsperfect.credentials import USED_BY, declare
from sandbox import itsperfect as itsp

ROOT = Path(__file__).resolve().parents[3]
UTC = dt.timezone.utc


@pytest.fixture
def registry(conn, sandbox, monkeypatch):
    conn.execute("TRUNCATE etl.credentials, etl.request_budgets, itsperfect.connectors CASCADE")
    conn.execute("INSERT INTO itsperfect.connectors (connector) VALUES ('itsperfect_eu'), ('itsperfect_us')")
    conn.commit()
    monkeypatch.setenv("AIRFLOW_CONN_ITSPERFECT_EU", json.dumps(
        itsp.airflow_connection(sandbox.url, owner="brand-ops", expires_at="2027-03-31")))
    monkeypatch.setenv("AIRFLOW_CONN_ITSPERFECT_US", json.dumps(
        itsp.airflow_connection(sandbox.url, token="revoked-token")))
    return conn


def test_each_registered_connector_is_a_credential_checked_with_one_request(registry, sandbox):
    found = {c.credential_id: c for c in declare(registry)}
    assert set(found) == {"airflow:itsperfect_eu", "airflow:itsperfect_us"}
    eu = found["airflow:itsperfect_eu"]
    assert (eu.integration, eu.scope, eu.owner, eu.expires_at, eu.used_by, eu.once_a_day) == (
        "itsperfect", "itsperfect_eu", "brand-ops", dt.datetime(2027, 3, 31, tzinfo=UTC), USED_BY, True)

    now = dt.datetime.now(UTC)
    credentials.register(registry, found.values())
    checked = {c.credential_id: c for c in credentials.verify(registry, found.values(), now)}

    assert checked["airflow:itsperfect_eu"].ok
    us = checked["airflow:itsperfect_us"]
    assert not us.ok and "itsperfect_us" in us.error and "HTTP 401" in us.error and "revoked-token" not in us.error
    assert len(sandbox.requests("itsperfect")) == 2            # one request each, no retries
    again = credentials.verify(registry, found.values(), now)
    assert all(c.skipped for c in again) and len(sandbox.requests("itsperfect")) == 2


def test_a_spent_budget_leaves_the_last_outcome_standing(registry, sandbox):
    found = {c.credential_id: c for c in declare(registry)}
    credentials.register(registry, found.values())
    yesterday = dt.datetime.now(UTC) - dt.timedelta(days=1)
    credentials.verify(registry, found.values(), yesterday)
    sandbox.control("itsperfect", server_calls_now=itsp.HOURLY_LIMIT)   # the tenant's own calls fill its hour
    checked = {c.credential_id: c for c in credentials.verify(registry, found.values(), dt.datetime.now(UTC))}

    assert checked["airflow:itsperfect_eu"].skipped and checked["airflow:itsperfect_eu"].ok
    assert checked["airflow:itsperfect_us"].skipped and not checked["airflow:itsperfect_us"].ok


def test_the_users_declared_are_the_dags_that_run_the_integration():
    dags = {path.stem for path in (ROOT / "dags").glob("itsperfect_*.py")}
    assert {user for user in USED_BY if user.startswith("itsperfect_")} == dags
