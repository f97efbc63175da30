"""A connection's signup to TrustFile as the trustfile_provision DAG records it: registered by email,
then signed up (the company token stored, encrypted) or failed with the reason."""
from __future__ import annotations

import json

import psycopg

from etl.encryption import encrypt
from integrations.trustfile.connections import record_activity


def register_signup(conn: psycopg.Connection, connection_id: str, email: str, company_name: str,
                    host_system: str, host_connection_id: str | None = None) -> tuple[str, str]:
    """Create (or find again) the disabled, start-date-less connection a signup is for.

    Keyed by the email, so a retried or re-triggered run finds its row instead of making another.
    A ServiceTrade company has no OAuth consent: its credentials are an Airflow connection (login
    and password, encrypted by Airflow), named here and kept as the connection's host credentials.
    Returns (connection_id, provisioning_state).
    """
    credentials = identifier = None
    if host_system == "servicetrade":
        identifier = host_connection_id or "servicetrade_default"
        credentials = encrypt(json.dumps({"airflow_conn_id": identifier}))
    with conn.transaction():
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


def record_signup(conn: psycopg.Connection, connection_id: str, company_token_encrypted: bytes) -> None:
    with conn.transaction():
        conn.execute(
            "UPDATE trustfile.connections SET company_token = %s, provisioning_state = 'provisioned', "
            "status_message = 'signed up; waiting for TrustFile to enable it', status_changed_at = now() "
            "WHERE connection_id = %s", (company_token_encrypted, connection_id))
        record_activity(conn, connection_id, "Signed up to TrustFile")


def record_signup_failure(conn: psycopg.Connection, connection_id: str, message: str) -> None:
    with conn.transaction():
        conn.execute(
            "UPDATE trustfile.connections SET provisioning_state = 'signup_failed', status_message = %s, "
            "status_changed_at = now() WHERE connection_id = %s", (f"signup failed: {message}"[:1000], connection_id))
        record_activity(conn, connection_id, "Signup to TrustFile failed")
