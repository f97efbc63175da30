"""OAuth tokens kept in the database so every worker shares one access token and one refresh token.

Refresh tokens rotate (QuickBooks Online issues a new one on each refresh and may invalidate the
old one at once), so the refresh happens under the token row's lock and the new pair is committed
in that same transaction: a second worker waiting on the lock then finds a fresh access token and
does not refresh at all, and a worker killed after the commit leaves the newest token behind.

The connection's initial refresh token seeds the row; when an operator re-authorizes and puts a
new one in the connection, its fingerprint differs and it replaces the stored one.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from etl.encryption import decrypt, encrypt

log = logging.getLogger(__name__)

EXPIRY_MARGIN = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class TokenGrant:
    """What a token endpoint answered to a refresh."""

    access_token: str
    access_expires_in: int
    refresh_token: str
    refresh_expires_in: int | None = None


class RefreshRejected(RuntimeError):
    """The vendor refused the refresh token (expired, revoked, or rotated and lost)."""


def _fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def access_token(
    conn: psycopg.Connection,
    vendor: str,
    scope: str,
    *,
    seed_refresh_token: str,
    refresh: Callable[[str], TokenGrant],
    rejected_access_token: str | None = None,
) -> str:
    """A valid access token for (vendor, scope), refreshing (and rotating) only when needed.

    `rejected_access_token`: the vendor just answered 401 to this token, so it is refreshed even if
    not yet expired, unless another worker has already replaced it. `conn` is used in autocommit
    style: this function commits its own transaction.
    """
    now = dt.datetime.now(dt.timezone.utc)
    seed = _fingerprint(seed_refresh_token)
    with conn.transaction():
        conn.execute(
            "INSERT INTO etl.oauth_tokens (vendor, scope, refresh_token, seed_fingerprint) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (vendor, scope) DO NOTHING",
            (vendor, scope, encrypt(seed_refresh_token), seed),
        )
        row = conn.execute(
            "SELECT refresh_token, access_token, access_expires_at, seed_fingerprint FROM etl.oauth_tokens "
            "WHERE vendor = %s AND scope = %s FOR UPDATE",
            (vendor, scope),
        ).fetchone()
        stored_refresh, stored_access, access_expires_at, stored_seed = row
        if stored_seed != seed:
            log.warning("%s/%s: the connection carries a new refresh token (re-authorized); using it", vendor, scope)
            stored_refresh, stored_access = encrypt(seed_refresh_token), None
        if stored_access is not None and access_expires_at and access_expires_at - EXPIRY_MARGIN > now:
            current = decrypt(stored_access)
            if current != rejected_access_token:
                return current
        grant = refresh(decrypt(stored_refresh))   # under the row lock: no other worker refreshes now
        conn.execute(
            """
            UPDATE etl.oauth_tokens SET refresh_token = %s, refresh_expires_at = %s, access_token = %s,
                   access_expires_at = %s, seed_fingerprint = %s, rotated_at = now(), rotations = rotations + 1
             WHERE vendor = %s AND scope = %s
            """,
            (encrypt(grant.refresh_token),
             now + dt.timedelta(seconds=grant.refresh_expires_in) if grant.refresh_expires_in else None,
             encrypt(grant.access_token), now + dt.timedelta(seconds=grant.access_expires_in), seed, vendor, scope),
        )
    log.info("%s/%s: access token refreshed; refresh token %s", vendor, scope,
             "rotated" if grant.refresh_token != decrypt(stored_refresh) else "unchanged")
    return grant.access_token
