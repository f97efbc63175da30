"""RipeEventsTrigger: the triggerer watches servicetrade.webhook_events and fires while events are ripe.

An AssetWatcher runs it in the triggerer for as long as the asset is watched: `run()` never returns. Every
`poll_seconds` it counts the ripe events (the thresholds of `events.ripe`, in one statement) over an async
psycopg connection to the integrations database (INTEGRATIONS_DATABASE_URL, else the Airflow connection
`integrations_db`). It yields a TriggerEvent (the asset event that schedules servicetrade_webhook_events):
  - at once when an event ripened since the last one it fired for (the latest `ripe_at` is newer), and
  - again while ripe events stay unprocessed (a run failed, or one is still running), at most every
    `refire_seconds`.
A database error is logged (its text redacted, never the conninfo) and the next poll reconnects: the trigger
never dies of it.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

log = logging.getLogger(__name__)

CONNINFO_ENV = "INTEGRATIONS_DATABASE_URL"


def _conninfo() -> str:
    from etl.db import conninfo_from_airflow

    return os.environ.get(CONNINFO_ENV) or conninfo_from_airflow()


class RipeEventsTrigger(BaseEventTrigger):
    def __init__(self, poll_seconds: float = 5.0, refire_seconds: float = 60.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.poll_seconds = float(poll_seconds)
        self.refire_seconds = float(refire_seconds)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"poll_seconds": self.poll_seconds, "refire_seconds": self.refire_seconds})

    async def _connect(self):
        import psycopg
        from asgiref.sync import sync_to_async

        from etl.db import APPLICATION_NAME

        conninfo = await sync_to_async(_conninfo, thread_sensitive=False)()
        return await psycopg.AsyncConnection.connect(conninfo, autocommit=True,
                                                     application_name=f"{APPLICATION_NAME}-trigger")

    async def _count(self, conn, params: dict) -> tuple[int, dt.datetime | None]:
        from integrations.servicetrade.events import COUNT_RIPE

        cursor = await conn.execute(COUNT_RIPE, params)
        count, latest = await cursor.fetchone()
        return int(count), latest

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from asgiref.sync import sync_to_async

        from etl.ledger import redact_text
        from integrations.servicetrade import events, webhook_config

        conn = None
        params: dict | None = None
        fired_for: dt.datetime | None = None     # latest ripe_at of the last event fired
        fired_at = float("-inf")                 # monotonic time of the last event fired
        while True:
            try:
                if params is None:
                    config = await sync_to_async(webhook_config.load, thread_sensitive=False)()
                    params = events.ripe_params(config)
                if conn is None or conn.closed:
                    conn = await self._connect()
                count, latest = await self._count(conn, params)
            except Exception as exc:  # noqa: BLE001 - logged, retried at the next poll; the watcher lives on
                log.warning("counting ripe ServiceTrade webhook events failed (%s: %s); trying again in %.0f s",
                            type(exc).__name__, redact_text(str(exc)).split("\n")[0][:300], self.poll_seconds)
                if conn is not None:
                    try:
                        await conn.close()
                    except Exception:  # noqa: BLE001 - the connection is gone either way
                        pass
                    conn = None
                await asyncio.sleep(self.poll_seconds)
                continue
            now = time.monotonic()
            if count and (fired_for is None or (latest and latest > fired_for)
                          or now - fired_at >= self.refire_seconds):
                fired_for, fired_at = latest, now
                log.info("%d ServiceTrade webhook event(s) ripe (latest ripened %s)", count, latest)
                yield TriggerEvent({"ripe": count, "latest_ripe_at": latest.isoformat() if latest else None})
            await asyncio.sleep(self.poll_seconds)
