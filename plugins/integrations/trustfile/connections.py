"""TrustFile connections as the extractor keeps them: the companies to sync, their activities, the connector switch."""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import psycopg

from etl.encryption import decrypt
from integrations.trustfile.sync import PIPELINE

FIELDS = ("connection_id", "enabled", "start_date", "host_system", "host_identifier", "host_credentials",
          "status_changed_at", "last_sync_at", "next_sync_at", "status_message")


@dataclass(frozen=True)
class Connection:
    connection_id: str
    enabled: bool
    start_date: dt.date | None
    host_system: str
    host_identifier: str | None
    authorized: bool
    status_changed_at: dt.datetime
    last_sync_at: dt.datetime | None
    next_sync_at: dt.datetime | None
    status_message: str


def _row(row) -> Connection:
    values = dict(zip(FIELDS, row, strict=True))
    credentials = values.pop("host_credentials")
    return Connection(**values, authorized=credentials is not None)


def list_ids(conn: psycopg.Connection, enabled: bool | None) -> list[str]:
    if enabled is None:
        rows = conn.execute("SELECT connection_id FROM trustfile.connections ORDER BY connection_id")
    else:
        rows = conn.execute("SELECT connection_id FROM trustfile.connections WHERE enabled = %s "
                            "ORDER BY connection_id", (enabled,))
    return [r[0] for r in rows]


def get(conn: psycopg.Connection, connection_id: str, *, for_update: bool = False) -> Connection | None:
    """The connection; `for_update` locks its row to the end of the caller's transaction."""
    row = conn.execute(f"SELECT {', '.join(FIELDS)} FROM trustfile.connections WHERE connection_id = %s"
                       + (" FOR UPDATE" if for_update else ""), (connection_id,)).fetchone()
    return _row(row) if row else None


def create(conn: psycopg.Connection, connection_id: str, start_date: dt.date | None) -> Connection | None:
    """Insert a disabled connection; None when it already exists."""
    with conn.transaction():
        row = conn.execute(
            f"INSERT INTO trustfile.connections (connection_id, start_date) VALUES (%s, %s) "
            f"ON CONFLICT (connection_id) DO NOTHING RETURNING {', '.join(FIELDS)}",
            (connection_id, start_date)).fetchone()
        if row:
            record_activity(conn, connection_id, "Connection created")
    return _row(row) if row else None


def update(conn: psycopg.Connection, connection_id: str, *, enabled: bool | None, start_date: dt.date | None,
           start_date_given: bool) -> Connection | None:
    """None when the connection does not exist, or was deleted while this waited for its row lock (the
    lock, not a plain read: a delete between the read and the writes would fail the activity's insert)."""
    with conn.transaction():
        current = get(conn, connection_id, for_update=True)
        if current is None:
            return None
        new_enabled = current.enabled if enabled is None else enabled
        new_start = start_date if start_date_given else current.start_date
        changed = new_enabled != current.enabled
        conn.execute(
            "UPDATE trustfile.connections SET enabled = %s, start_date = %s, "
            "status_changed_at = CASE WHEN %s THEN now() ELSE status_changed_at END, "
            # A connection whose consent was lost keeps saying so (switching it does not make it sync);
            # the switch is in its activities.
            "status_message = CASE WHEN %s AND consent_lost_at IS NULL "
            "THEN (CASE WHEN %s THEN 'enabled' ELSE 'disabled by TrustFile' END) "
            "ELSE status_message END WHERE connection_id = %s",
            (new_enabled, new_start, changed, changed, new_enabled, connection_id))
        if changed:
            record_activity(conn, connection_id, "Enabled" if new_enabled else "Disabled")
        if start_date_given and new_start != current.start_date:
            record_activity(conn, connection_id, f"Start date set to {new_start.isoformat() if new_start else 'none'}")
        _pause_idle_watermarks(conn)
    return get(conn, connection_id)


def delete(conn: psycopg.Connection, connection_id: str) -> bool:
    """The connection, its transactions and ledgers (cascade) and its sync watermark: a connection
    created again under the same id syncs from its start date, not from where this one stopped."""
    with conn.transaction():
        conn.execute("DELETE FROM etl.watermarks WHERE pipeline = %s AND scope = %s", (PIPELINE, connection_id))
        return conn.execute("DELETE FROM trustfile.connections WHERE connection_id = %s",
                            (connection_id,)).rowcount == 1


def record_activity(conn: psycopg.Connection, connection_id: str, action: str) -> None:
    conn.execute("INSERT INTO trustfile.activities (connection_id, action) VALUES (%s, %s)", (connection_id, action))


def activities(conn: psycopg.Connection, connection_id: str, days: int, limit: int) -> list[tuple[dt.datetime, str]]:
    return conn.execute(
        "SELECT at, action FROM trustfile.activities WHERE connection_id = %s "
        "AND at > now() - make_interval(days => %s) ORDER BY at DESC, id DESC LIMIT %s",
        (connection_id, days, limit)).fetchall()


def connector(conn: psycopg.Connection) -> tuple[bool, int]:
    enabled = conn.execute("SELECT enabled FROM trustfile.connector").fetchone()[0]
    users = conn.execute("SELECT count(*) FROM trustfile.connections WHERE enabled").fetchone()[0]
    return enabled, users


def set_connector(conn: psycopg.Connection, enabled: bool) -> None:
    with conn.transaction():
        conn.execute("UPDATE trustfile.connector SET enabled = %s, changed_at = now()", (enabled,))
        _pause_idle_watermarks(conn)


def _pause_idle_watermarks(conn: psycopg.Connection) -> None:
    """A connection TrustFile switched off is not lagging: its watermark says why it waits, and the
    maintenance DAG's lag report does not alert on it."""
    conn.execute(
        """
        UPDATE etl.watermarks w SET paused_reason = r.reason
          FROM (SELECT c.connection_id,
                       CASE WHEN NOT (SELECT enabled FROM trustfile.connector) THEN 'TrustFile connector switched off'
                            WHEN NOT c.enabled THEN 'connection disabled by TrustFile' END AS reason
                  FROM trustfile.connections c) r
         WHERE w.pipeline = %s AND w.scope = r.connection_id AND w.paused_reason IS DISTINCT FROM r.reason
        """, (PIPELINE,))



@dataclass(frozen=True)
class SyncSettings:
    """What the sync needs of a connection, its secrets decrypted."""

    start_date: dt.date | None
    host_system: str
    host_identifier: str | None
    credentials: dict | None          # QBO: realm_id, refresh_token; ServiceTrade: airflow_conn_id
    company_token: str | None         # from our signup; None for a connection TrustFile created
    synced_from: dt.date | None


def sync_settings(conn: psycopg.Connection, connection_id: str) -> SyncSettings | None:
    row = conn.execute(
        "SELECT start_date, host_system, host_identifier, host_credentials, company_token, synced_from "
        "FROM trustfile.connections WHERE connection_id = %s", (connection_id,)).fetchone()
    if row is None:
        return None
    start_date, host_system, host_identifier, sealed_credentials, sealed_token, synced_from = row
    return SyncSettings(start_date, host_system, host_identifier,
                        json.loads(decrypt(sealed_credentials)) if sealed_credentials is not None else None,
                        decrypt(sealed_token) if sealed_token is not None else None, synced_from)


def host_credentials(conn: psycopg.Connection, connection_id: str) -> dict | None:
    """The credentials the consent stored, decrypted; None when not authorized."""
    settings = sync_settings(conn, connection_id)
    return settings.credentials if settings else None


def latest_authorized(conn: psycopg.Connection, host_system: str) -> str | None:
    """The enabled, authorized connection of a host system whose status changed last (health's probe)."""
    row = conn.execute(
        "SELECT connection_id FROM trustfile.connections WHERE host_system = %s AND enabled "
        "AND host_credentials IS NOT NULL ORDER BY status_changed_at DESC, connection_id LIMIT 1",
        (host_system,)).fetchone()
    return row[0] if row else None
