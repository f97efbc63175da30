"""RipeEventsTrigger run with asyncio against the test database, as the triggerer runs an AssetWatcher's trigger."""
from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from integrations.servicetrade import inbox, webhook_config
from integrations.servicetrade.trigger import RipeEventsTrigger

RULES = webhook_config.load().defaults


def store(conn, entity_id: int, *, ripe: bool) -> None:
    body = json.dumps({"messageId": str(uuid.uuid4()), "timestamp": "1", "data": [
        {"action": "updated", "timestamp": 1, "entity": {"type": "job", "id": entity_id}}]}).encode()
    inbox.store(conn, "st_trigger", body, RULES)
    if ripe:
        conn.execute("UPDATE servicetrade.webhook_events SET first_seen = first_seen - interval '1 hour', "
                     "last_seen = last_seen - interval '1 hour' WHERE entity_id = %s", (entity_id,))
        conn.commit()


@pytest.fixture
def events_table(conn, db_url, monkeypatch):
    monkeypatch.setenv("INTEGRATIONS_DATABASE_URL", db_url)
    monkeypatch.delenv("SERVICETRADE_WEBHOOKS_CONFIG", raising=False)
    conn.execute("TRUNCATE servicetrade.webhook_events, servicetrade.webhook_inbox")
    conn.commit()
    return conn


async def watch(trigger: RipeEventsTrigger, seconds: float, during=None) -> list[tuple[float, dict]]:
    """The events the trigger yields within `seconds` (monotonic offset, payload); `during(offset)` is called
    every 0.05 s meanwhile (in a thread: it may block)."""
    fired: list[tuple[float, dict]] = []
    start = time.monotonic()

    async def consume():
        async for event in trigger.run():
            fired.append((time.monotonic() - start, event.payload))

    task = asyncio.create_task(consume())
    while time.monotonic() - start < seconds:
        if during is not None:
            await asyncio.to_thread(during, time.monotonic() - start)
        await asyncio.sleep(0.05)
        assert not task.done(), task.exception()
    task.cancel()
    return fired


def test_serializes_to_its_classpath_and_kwargs():
    assert RipeEventsTrigger(poll_seconds=2, refire_seconds=30).serialize() == (
        "integrations.servicetrade.trigger.RipeEventsTrigger", {"poll_seconds": 2.0, "refire_seconds": 30.0})
    assert RipeEventsTrigger().serialize()[1] == {"poll_seconds": 5.0, "refire_seconds": 60.0}


def test_nothing_ripe_fires_nothing_and_a_ripe_event_fires_at_once(events_table):
    store(events_table, 1, ripe=False)                 # pending, but inside its quiet window
    trigger = RipeEventsTrigger(poll_seconds=0.1, refire_seconds=60)
    assert asyncio.run(watch(trigger, 0.6)) == []

    done = set()

    def ripen(offset):
        if offset > 0.3 and "ripe" not in done:
            done.add("ripe")
            store(events_table, 2, ripe=True)
    fired = asyncio.run(watch(RipeEventsTrigger(poll_seconds=0.1, refire_seconds=60), 1.2, ripen))
    assert len(fired) == 1 and fired[0][0] < 0.8 and fired[0][1]["ripe"] == 1


def test_fires_again_while_events_stay_ripe_and_at_once_when_newer_ones_ripen(events_table):
    store(events_table, 1, ripe=True)
    done = set()

    def newer(offset):
        if offset > 0.5 and "newer" not in done:
            done.add("newer")
            store(events_table, 2, ripe=False)
            events_table.execute("UPDATE servicetrade.webhook_events SET last_seen = now() - interval '31 seconds', "
                                 "first_seen = now() - interval '31 seconds' WHERE entity_id = 2")
            events_table.commit()
    fired = asyncio.run(watch(RipeEventsTrigger(poll_seconds=0.1, refire_seconds=1.5), 2.9, newer))
    offsets = [round(at, 1) for at, _ in fired]
    assert [payload["ripe"] for _, payload in fired] == [1, 2, 2], offsets
    assert offsets[0] < 0.3                      # at once
    assert 0.5 <= offsets[1] < 0.9               # the newer one ripened: at once, not after refire_seconds
    assert offsets[2] - offsets[1] >= 1.5        # the same set again, after refire_seconds


def test_a_database_error_is_logged_without_the_password_and_retried(events_table, db_url, monkeypatch, caplog):
    store(events_table, 1, ripe=True)
    bad = "postgresql://someone:very-secret-pw@127.0.0.1:1/nowhere?connect_timeout=1"
    monkeypatch.setenv("INTEGRATIONS_DATABASE_URL", bad)
    done = set()

    def heal(offset):
        if offset > 0.6 and "healed" not in done:
            done.add("healed")
            monkeypatch.setenv("INTEGRATIONS_DATABASE_URL", db_url)
    with caplog.at_level("WARNING"):
        fired = asyncio.run(watch(RipeEventsTrigger(poll_seconds=0.1, refire_seconds=60), 1.5, heal))
    failures = [r.getMessage() for r in caplog.records if "counting ripe" in r.getMessage()]
    assert len(failures) >= 2                    # polled again after each failure: the trigger lived on
    assert not any("very-secret-pw" in message for message in failures)
    assert len(fired) == 1 and fired[0][0] >= 0.6
