"""QBO's keyset paging against the sandbox, page size 1000: every document once, whatever the
distribution of equal LastUpdatedTime values (a bulk import stamps thousands with one second)."""
from __future__ import annotations

import datetime as dt
import json
import random

import pytest
from cryptography.fernet import Fernet

from hooks.qbo import QboHook
from sandbox import qbo as qbo_sandbox

REALM = qbo_sandbox.REALMS[1]
DOCUMENTS = 2500
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def invoices(sandbox, conn, monkeypatch):
    conn.execute("TRUNCATE etl.oauth_tokens")
    conn.commit()
    monkeypatch.setenv("INTEGRATIONS_FERNET_KEY", Fernet.generate_key().decode())
    monkeypatch.setenv("AIRFLOW_CONN_QBO_DEFAULT", json.dumps(
        {"conn_type": "qbo", "host": f"{sandbox.url}/qbo", "login": qbo_sandbox.CLIENT_ID,
         "password": qbo_sandbox.CLIENT_SECRET,
         "extra": {"realm_id": REALM, "refresh_token": qbo_sandbox.INITIAL_REFRESH_TOKENS[REALM],
                   "token_url": f"{sandbox.url}/qbo/oauth2/v1/tokens/bearer"}}))
    sandbox.control("qbo", per_entity=DOCUMENTS, rate_per_minute=100_000)
    sandbox.control("qbo", generate=[REALM])
    ids = [r["Id"] for r in QboHook().query("Invoice")]
    assert len(ids) == DOCUMENTS

    def restamp(seconds: list[int]) -> list[str]:
        """Give the invoices these LastUpdatedTime offsets from T0 (in id order); the ids in time order."""
        stamps = {i: (T0 + dt.timedelta(seconds=s)).isoformat() for i, s in zip(ids, seconds, strict=True)}
        sandbox.control("qbo", restamp=[{"realm": REALM, "entity": "Invoice", "at": stamps}])
        return ids

    return restamp


def read_all(sandbox) -> tuple[list[str], int]:
    before = len([r for r in sandbox.requests("qbo") if r["path"].endswith("/query")])
    rows = list(QboHook().changed_since("Invoice", T0, T0 + dt.timedelta(days=1)))
    calls = len([r for r in sandbox.requests("qbo") if r["path"].endswith("/query")]) - before
    return [r["Id"] for r in rows], calls


def test_a_bulk_import_over_two_seconds_is_read_in_full(invoices, sandbox):
    ids = invoices([0] * 1000 + [1] * 1500)
    read, calls = read_all(sandbox)
    assert sorted(read) == sorted(ids) and len(read) == DOCUMENTS
    assert calls == 3


@pytest.mark.parametrize("seed", range(10))
def test_any_distribution_of_equal_timestamps_reads_every_document_once(invoices, sandbox, seed):
    """Bursts of a few, of about a page, and of exactly a page (the shape that once lost documents)."""
    rng = random.Random(seed)
    seconds: list[int] = []
    second = 0
    while len(seconds) < DOCUMENTS:
        second += rng.randint(1, 3)
        seconds += [second] * rng.choice([1000, 1000, rng.randint(1, 9), rng.randint(990, 1600)])
    seconds = seconds[:DOCUMENTS]
    rng.shuffle(seconds)     # which invoice gets which second
    ids = invoices(seconds)
    read, calls = read_all(sandbox)
    assert len(read) == len(set(read)) == DOCUMENTS and set(read) == set(ids)
    assert calls <= 2 * (DOCUMENTS // 1000 + 1) + 2
