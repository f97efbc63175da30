"""The host-system consent as the extractor keeps it: a QuickBooks company linked to a connection
(the extractor API's OAuth callback), or the refusal recorded on the connection; and the consent's
`state` values, each good for one callback of its own connection.

Lock order: a callback's outcome locks its connection's row first, then its state's, the order of a
`DELETE /connections/{id}` (the connection row, then, by cascade, its states): the other order
deadlocks with a DELETE of the connection."""
from __future__ import annotations

import datetime as dt
import json
from typing import Literal

import psycopg

from etl.encryption import encrypt
from integrations.trustfile.connections import record_activity


class ConsentRefused(Exception):
    """The consent is valid but cannot be applied to this connection; `kind` goes back to TrustFile."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class ConsentStateUsed(Exception):
    """The callback's `state` was consumed by another callback first: nothing was changed."""


def issue_state(conn: psycopg.Connection, connection_id: str, nonce: str, expires_at: dt.datetime) -> None:
    """Record a consent's `state` for its connection (states expired a day ago are pruned meanwhile)."""
    with conn.transaction():
        conn.execute("DELETE FROM trustfile.consent_states WHERE expires_at < now() - interval '1 day'")
        conn.execute("INSERT INTO trustfile.consent_states (nonce, connection_id, expires_at) VALUES (%s, %s, %s)",
                     (nonce, connection_id, expires_at))


def state_status(conn: psycopg.Connection, connection_id: str, nonce: str) -> Literal["open", "used", "unknown"]:
    """Whether a callback may go on with this state: `unknown` when it was not issued for this connection
    (or the connection was deleted since), `used` after its first callback."""
    row = conn.execute("SELECT consumed_at FROM trustfile.consent_states WHERE nonce = %s AND connection_id = %s",
                       (nonce, connection_id)).fetchone()
    if row is None:
        return "unknown"
    return "open" if row[0] is None else "used"


def _lock_connection(conn: psycopg.Connection, connection_id: str) -> None:
    """The connection's row, locked for the transaction before anything else (see the lock order above);
    ConsentRefused("unknown_connection") when it was deleted meanwhile (its states went with it)."""
    if conn.execute("SELECT 1 FROM trustfile.connections WHERE connection_id = %s FOR NO KEY UPDATE",
                    (connection_id,)).fetchone() is None:
        raise ConsentRefused("unknown_connection", f"connection {connection_id} was deleted during its consent")


def _consume_state(conn: psycopg.Connection, connection_id: str, nonce: str | None) -> None:
    """Inside the transaction that writes the callback's outcome: a second callback with the same state
    waits for this one's commit, then finds it consumed."""
    if nonce is None:
        return
    if conn.execute("UPDATE trustfile.consent_states SET consumed_at = now() WHERE nonce = %s AND connection_id = %s "
                    "AND consumed_at IS NULL", (nonce, connection_id)).rowcount != 1:
        raise ConsentStateUsed(f"the consent state of connection {connection_id} was already used")


def authorize_qbo(conn: psycopg.Connection, connection_id: str, realm_id: str, refresh_token: str, *,
                  state_nonce: str | None = None) -> None:
    """Link the connection to its QuickBooks company and keep the consent's refresh token, encrypted.

    The token seeds etl.oauth_tokens when the sync first builds a QboHook from it; a later consent's
    token has another fingerprint and replaces the stored one. Raises ConsentRefused (changing
    nothing but the status) when another connection is linked to that company (its sales would be
    filed twice, and the two refresh tokens would keep replacing each other in the shared token row),
    or when this connection already holds another company's transactions (item ids do not name the
    company: the two would mix in TrustFile), and ConsentRefused("unknown_connection"), writing nothing,
    when the connection is gone. `state_nonce`: the callback's state, consumed in the same transaction as
    either outcome (ConsentStateUsed, and nothing written, when it already was); None for a link made
    without a consent (tests, tools).
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"trustfile qbo realm {realm_id}",))
        _lock_connection(conn, connection_id)
        _consume_state(conn, connection_id, state_nonce)
        refusal = _consent_refusal(conn, connection_id, realm_id)
        if refusal is None:
            credentials = encrypt(json.dumps({"realm_id": realm_id, "refresh_token": refresh_token}))
            conn.execute("UPDATE trustfile.connections SET host_identifier = %s, host_credentials = %s, "
                         "consent_lost_at = NULL WHERE connection_id = %s", (realm_id, credentials, connection_id))
            _consent_outcome(conn, connection_id, f"Authorized QuickBooks company {realm_id}",
                             f"authorized QuickBooks company {realm_id}")
        else:
            _consent_outcome(conn, connection_id, f"QuickBooks authorization refused: {refusal}", str(refusal))
    if refusal is not None:
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


def record_consent_failure(conn: psycopg.Connection, connection_id: str, action: str, status_message: str, *,
                           state_nonce: str | None = None) -> None:
    """A consent that ended without tokens: say so on the connection; its credentials, if any, stay.
    The callback's state is consumed with it, as by `authorize_qbo` (and the same ConsentStateUsed or
    ConsentRefused("unknown_connection") when it cannot be)."""
    with conn.transaction():
        _lock_connection(conn, connection_id)
        _consume_state(conn, connection_id, state_nonce)
        _consent_outcome(conn, connection_id, action, status_message)


def _consent_outcome(conn: psycopg.Connection, connection_id: str, action: str, status_message: str) -> None:
    conn.execute("UPDATE trustfile.connections SET status_message = %s, status_changed_at = now() "
                 "WHERE connection_id = %s", (status_message[:1000], connection_id))
    record_activity(conn, connection_id, action)
