"""What TrustFile sees of our syncs: a connection's lastSyncAt/nextSyncAt/statusMessage, its activities,
and the errors listed by GET /errors."""
from __future__ import annotations

import datetime as dt
import json

import psycopg

from etl.encryption import decrypt
from etl.ledger import redact_text
from etl.oauth_tokens import fingerprint
from integrations.trustfile.connections import record_activity
from integrations.trustfile.reports import ErrorType

MESSAGE_LIMIT = 1000
HOST_NAMES = {"qbo": "QuickBooks", "servicetrade": "ServiceTrade"}


def display_name(company_name: str | None, host_system: str, host_identifier: str | None) -> str:
    """How people name a connection (alerts, mapped task names): the company name we signed up, else its
    host system and that system's company id (a connection TrustFile made has no name of ours)."""
    if company_name:
        return company_name
    host = HOST_NAMES.get(host_system, host_system)
    return f"{host} company {host_identifier}" if host_identifier else f"{host} company, not authorized yet"


def names(conn: psycopg.Connection, connection_ids: list[str] | None = None) -> dict[str, str]:
    """The display name of each connection asked for (all of them when None), ordered by name."""
    rows = conn.execute(
        "SELECT connection_id, company_name, host_system, host_identifier FROM trustfile.connections "
        "WHERE %s::text[] IS NULL OR connection_id = ANY(%s)", (connection_ids, connection_ids)).fetchall()
    return dict(sorted(((r[0], display_name(*r[1:])) for r in rows), key=lambda item: (item[1].lower(), item[0])))


def due(conn: psycopg.Connection, today: dt.date) -> tuple[list[str], list[str]]:
    """(connections to sync now, enabled connections still waiting for their host's first authorization).

    Nothing is due while the connector is switched off (PUT /connector {"enabled": false}). A connection
    whose consent the host stopped accepting is neither: its status says it needs re-consent.
    """
    if not conn.execute("SELECT enabled FROM trustfile.connector").fetchone()[0]:
        return [], []
    rows = conn.execute(
        "SELECT connection_id, host_credentials IS NOT NULL, consent_lost_at IS NOT NULL FROM trustfile.connections "
        "WHERE enabled AND start_date <= %s AND provisioning_state IN ('external', 'provisioned') "
        "ORDER BY connection_id", (today,)).fetchall()
    return [r[0] for r in rows if r[1]], [r[0] for r in rows if not r[1] and not r[2]]


def synced_within(conn: psycopg.Connection, host_system: str, within: dt.timedelta) -> bool:
    """Whether an enabled, authorized connection of the host system synced successfully that recently."""
    return conn.execute(
        "SELECT EXISTS (SELECT 1 FROM trustfile.connections WHERE host_system = %s AND enabled "
        "AND host_credentials IS NOT NULL AND last_sync_at > now() - %s)", (host_system, within)).fetchone()[0]


def consent_lost(conn: psycopg.Connection, host_system: str) -> list[str]:
    """Enabled connections whose host no longer accepts their consent: they wait for a new one."""
    return [r[0] for r in conn.execute(
        "SELECT connection_id FROM trustfile.connections WHERE host_system = %s AND enabled "
        "AND consent_lost_at IS NOT NULL ORDER BY connection_id", (host_system,))]


def mark_waiting(conn: psycopg.Connection, connection_ids: list[str], message: str) -> None:
    with conn.transaction():
        conn.execute("UPDATE trustfile.connections SET status_message = %s WHERE connection_id = ANY(%s) "
                     "AND status_message IS DISTINCT FROM %s", (message, connection_ids, message))


def record_sync(conn: psycopg.Connection, connection_id: str, *, message: str, activity: str,
                next_sync_at: dt.datetime) -> None:
    """A connection TrustFile deleted meanwhile has nothing left to tell: then nothing is written."""
    with conn.transaction():
        if conn.execute("UPDATE trustfile.connections SET last_sync_at = now(), next_sync_at = %s, "
                        "status_message = %s WHERE connection_id = %s",
                        (next_sync_at, message[:MESSAGE_LIMIT], connection_id)).rowcount:
            record_activity(conn, connection_id, activity)


def record_failure(conn: psycopg.Connection, connection_id: str, error_type: ErrorType, error: str,
                   next_sync_at: dt.datetime) -> None:
    """The connection says the sync failed and why; GET /errors lists it. Secrets are redacted."""
    text = redact_text(error)[:MESSAGE_LIMIT]
    with conn.transaction():
        if conn.execute("UPDATE trustfile.connections SET next_sync_at = %s, status_message = %s "
                        "WHERE connection_id = %s",
                        (next_sync_at, f"sync failed: {text}"[:MESSAGE_LIMIT], connection_id)).rowcount:
            record_activity(conn, connection_id, "Sync failed")
        record_error(conn, error_type, connection_id, text)


def record_backfill(conn: psycopg.Connection, connection_id: str, activity: str) -> None:
    """A backfill is ours, not the sync TrustFile watches: an activity, and the status left alone."""
    with conn.transaction():
        if conn.execute("SELECT 1 FROM trustfile.connections WHERE connection_id = %s FOR KEY SHARE",
                        (connection_id,)).fetchone():
            record_activity(conn, connection_id, activity[:MESSAGE_LIMIT])


def record_consent_lost(conn: psycopg.Connection, connection_id: str, consent_fingerprint: str | None,
                        message: str) -> bool:
    """The host refused the consent's token for good: the credentials go (the connection reads not
    authorized), it waits for a new consent instead of failing every hour, and GET /errors lists it.
    False, and nothing written, when the connection now holds another consent than the refused one."""
    with conn.transaction():
        row = conn.execute("SELECT host_credentials FROM trustfile.connections WHERE connection_id = %s FOR UPDATE",
                           (connection_id,)).fetchone()
        if row is None or row[0] is None or consent_fingerprint is None:
            return False
        if fingerprint(json.loads(decrypt(row[0])).get("refresh_token") or "") != consent_fingerprint:
            return False
        conn.execute("UPDATE trustfile.connections SET host_credentials = NULL, consent_lost_at = now(), "
                     "next_sync_at = NULL, status_message = %s, status_changed_at = now() WHERE connection_id = %s",
                     (redact_text(message)[:MESSAGE_LIMIT], connection_id))
        record_activity(conn, connection_id, "Needs re-consent: the host system refuses the authorization")
        record_error(conn, "CONNECTION", connection_id, message)
    return True


def record_error(conn: psycopg.Connection, error_type: ErrorType, connection_id: str | None, message: str) -> None:
    conn.execute("INSERT INTO trustfile.errors (type, connection_id, message) VALUES (%s, %s, %s)",
                 (error_type, connection_id, redact_text(message)[:MESSAGE_LIMIT]))
