"""The host-system consent as the extractor keeps it: a QuickBooks company linked to a connection
(the extractor API's OAuth callback), or the refusal recorded on the connection."""
from __future__ import annotations

import json

import psycopg

from etl.encryption import encrypt
from integrations.trustfile.connections import record_activity


class ConsentRefused(Exception):
    """The consent is valid but cannot be applied to this connection; `kind` goes back to TrustFile."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def authorize_qbo(conn: psycopg.Connection, connection_id: str, realm_id: str, refresh_token: str) -> None:
    """Link the connection to its QuickBooks company and keep the consent's refresh token, encrypted.

    The token seeds etl.oauth_tokens when the sync first builds a QboHook from it; a later consent's
    token has another fingerprint and replaces the stored one. Raises ConsentRefused (changing
    nothing but the status) when another connection is linked to that company (its sales would be
    filed twice, and the two refresh tokens would keep replacing each other in the shared token row),
    or when this connection already holds another company's transactions (item ids do not name the
    company: the two would mix in TrustFile).
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"trustfile qbo realm {realm_id}",))
        refusal = _consent_refusal(conn, connection_id, realm_id)
        if refusal is None:
            credentials = encrypt(json.dumps({"realm_id": realm_id, "refresh_token": refresh_token}))
            conn.execute("UPDATE trustfile.connections SET host_identifier = %s, host_credentials = %s "
                         "WHERE connection_id = %s", (realm_id, credentials, connection_id))
            _consent_outcome(conn, connection_id, f"Authorized QuickBooks company {realm_id}",
                             f"authorized QuickBooks company {realm_id}")
            return
    with conn.transaction():
        _consent_outcome(conn, connection_id, f"QuickBooks authorization refused: {refusal}", str(refusal))
    raise refusal


def _consent_refusal(conn: psycopg.Connection, connection_id: str, realm_id: str) -> ConsentRefused | None:
    other = conn.execute(
        "SELECT connection_id FROM trustfile.connections WHERE host_system = 'qbo' AND host_identifier = %s "
        "AND host_credentials IS NOT NULL AND connection_id <> %s", (realm_id, connection_id)).fetchone()
    if other:
        return ConsentRefused("company_already_linked",
                              f"QuickBooks company {realm_id} is already linked to connection {other[0]}")
    current = conn.execute("SELECT host_identifier FROM trustfile.connections WHERE connection_id = %s",
                           (connection_id,)).fetchone()
    if current and current[0] not in (None, realm_id) and conn.execute(
            "SELECT 1 FROM trustfile.transactions WHERE connection_id = %s LIMIT 1", (connection_id,)).fetchone():
        return ConsentRefused("company_changed",
                              f"this connection already holds QuickBooks company {current[0]}'s transactions; to "
                              f"switch to company {realm_id}, delete the connection and create it again")
    return None


def record_consent_failure(conn: psycopg.Connection, connection_id: str, action: str, status_message: str) -> None:
    """A consent that ended without tokens: say so on the connection; its credentials, if any, stay."""
    with conn.transaction():
        _consent_outcome(conn, connection_id, action, status_message)


def _consent_outcome(conn: psycopg.Connection, connection_id: str, action: str, status_message: str) -> None:
    conn.execute("UPDATE trustfile.connections SET status_message = %s, status_changed_at = now() "
                 "WHERE connection_id = %s", (status_message[:1000], connection_id))
    record_activity(conn, connection_id, action)
