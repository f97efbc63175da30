"""A connection's signup to TrustFile as the trustfile_provision DAG records it: registered by email,
then signed up (the company token stored, encrypted) or failed with the reason.

One email is provisioned by one run at a time (an advisory lock on the email, held across TrustFile's
calls), and its state only moves forward: `signing_up` → `signup_failed` (again, with a newer reason)
→ `provisioned`, which nothing leaves. A stored company token means `provisioned` (a check constraint,
migration 0007), so a company TrustFile knows is always one the sync takes.
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import psycopg

from etl.db import session_lock
from etl.encryption import encrypt
from integrations.trustfile.connections import record_activity

_NOT_YET_PROVISIONED = "provisioning_state IN ('signing_up', 'signup_failed') AND company_token IS NULL"


def _lock_key(email: str) -> str:
    return f"trustfile_signup:{email.strip().lower()}"


@contextlib.contextmanager
def signup_lock(conn: psycopg.Connection, email: str) -> Iterator[None]:
    """Hold the email's signup, waiting while another run holds it, so that run's company token is found
    instead of TrustFile being asked twice. Session-level: it spans the short transactions of the signup
    and the vendor calls between them, and PostgreSQL drops it if the worker dies."""
    with session_lock(conn, _lock_key(email)):
        yield


def register_signup(conn: psycopg.Connection, connection_id: str, email: str, company_name: str,
                    host_system: str, host_connection_id: str | None = None) -> tuple[str, str]:
    """Create (or find again) the disabled, start-date-less connection a signup is for.

    Keyed by the email (under its lock, so parallel runs find one row instead of racing to insert two),
    so a retried or re-triggered run finds its row instead of making another; an existing row keeps its
    state. A ServiceTrade company has no OAuth consent: its credentials are an Airflow connection (login
    and password, encrypted by Airflow), named here and kept as the connection's host credentials.
    Returns (connection_id, provisioning_state).
    """
    credentials = identifier = None
    if host_system == "servicetrade":
        identifier = host_connection_id or "servicetrade_default"
        credentials = encrypt(json.dumps({"airflow_conn_id": identifier}))
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (_lock_key(email),))
        row = conn.execute(
            "SELECT connection_id, provisioning_state FROM trustfile.connections WHERE lower(signup_email) = lower(%s)",
            (email,)).fetchone()
        if row:
            return row[0], row[1]
        conn.execute(
            "INSERT INTO trustfile.connections (connection_id, host_system, host_identifier, host_credentials, "
            "signup_email, company_name, provisioning_state, status_message) "
            "VALUES (%s, %s, %s, %s, %s, %s, 'signing_up', 'signing up to TrustFile')",
            (connection_id, host_system, identifier, credentials, email, company_name))
        record_activity(conn, connection_id, f"Signing up {company_name} to TrustFile")
    return connection_id, "signing_up"


def record_signup(conn: psycopg.Connection, connection_id: str, company_token_encrypted: bytes) -> bool:
    """Store the company token and move to `provisioned`; False (nothing written) when the connection is
    gone or already holds a token: a company token is never replaced."""
    with conn.transaction():
        updated = conn.execute(
            "UPDATE trustfile.connections SET company_token = %s, provisioning_state = 'provisioned', "
            "status_message = 'signed up; waiting for TrustFile to enable it', status_changed_at = now() "
            f"WHERE connection_id = %s AND {_NOT_YET_PROVISIONED}",
            (company_token_encrypted, connection_id)).rowcount
        if updated:
            record_activity(conn, connection_id, "Signed up to TrustFile")
    return bool(updated)


def record_signup_failure(conn: psycopg.Connection, connection_id: str, message: str) -> None:
    """Move to `signup_failed` with the reason, unless the connection is already provisioned: a failure
    never hides a stored company token."""
    with conn.transaction():
        updated = conn.execute(
            "UPDATE trustfile.connections SET provisioning_state = 'signup_failed', status_message = %s, "
            f"status_changed_at = now() WHERE connection_id = %s AND {_NOT_YET_PROVISIONED}",
            (f"signup failed: {message}"[:1000], connection_id)).rowcount
        if updated:
            record_activity(conn, connection_id, "Signup to TrustFile failed")
