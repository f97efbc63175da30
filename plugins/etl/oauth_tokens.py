"""OAuth tokens kept in the database so every worker shares one access token and one refresh token.

Refresh tokens rotate (QuickBooks Online issues a new one on each refresh and may invalidate the
old one at once), so the refresh happens under the token row's lock and the new pair is committed
in that same transaction: a second worker waiting on the lock then finds a fresh access token and
does not refresh at all, and a worker killed after the commit leaves the newest token behind. The
`refresh` callable retries what got no usable answer itself, with the token it was given, still
under the lock; whatever it raises leaves the stored token as it was.

The connection's initial refresh token seeds the row; when an operator re-authorizes and puts a
new one in the connection, its fingerprint differs and it replaces the stored one.

A caller that must not wait behind a refresh (a health probe) passes `lock_timeout`: when another
worker holds the row longer than that, it gets `RefreshInProgress` instead of a token.
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


class RefreshInProgress(Exception):
    """Another worker held the token row (it is refreshing) longer than the caller would wait."""


def fingerprint(token: str) -> str:
    """What identifies a refresh token without holding it (the consent's token seeds the row)."""
    return hashlib.sha256(token.encode()).hexdigest()


def access_token(
    connect: Callable[[], psycopg.Connection],
    vendor: str,
    scope: str,
    *,
    seed_refresh_token: str,
    refresh: Callable[[str], TokenGrant],
    rejected_access_token: str | None = None,
    lock_timeout: float | None = None,
) -> str:
    """A valid access token for (vendor, scope), refreshing (and rotating) only when needed.

    `rejected_access_token`: the vendor just answered 401 to this token, so it is refreshed even if
    not yet expired, unless another worker has already replaced it. `connect` opens a new database
    connection; the refresh happens under the row's lock and its result is committed at once.
    `lock_timeout`: seconds to wait for a row another worker holds (default: as long as it takes),
    then RefreshInProgress.
    """
    now = dt.datetime.now(dt.timezone.utc)
    seed = fingerprint(seed_refresh_token)
    grant: TokenGrant | None = None
    try:
        with connect() as conn, conn.transaction():
            row = _locked_row(conn, vendor, scope, seed_refresh_token, seed, lock_timeout)
            stored_refresh, stored_access, access_expires_at, stored_seed = row
            if stored_seed != seed:
                log.warning("%s/%s: the connection carries a new refresh token (re-authorized); using it",
                            vendor, scope)
                stored_refresh, stored_access = encrypt(seed_refresh_token), None
            if stored_access is not None and access_expires_at and access_expires_at - EXPIRY_MARGIN > now:
                current = decrypt(stored_access)
                if current != rejected_access_token:
                    return current
            grant = refresh(decrypt(stored_refresh))   # under the row lock: no other worker refreshes now
            _save(conn, vendor, scope, grant, seed, now)
    except psycopg.errors.LockNotAvailable:            # before any refresh: nothing to keep
        waited = f" for more than {lock_timeout:g} s" if lock_timeout is not None else ""
        raise RefreshInProgress(f"{vendor}/{scope}: another worker is refreshing the token (its row stayed locked"
                                f"{waited}); ask again shortly") from None
    except BaseException:
        # The vendor may already have rotated the refresh token: if its answer is in hand but the
        # commit did not happen (an error or a timeout in between), save it on a fresh connection
        # now that the rollback released the lock. Only a kill in that instant can still lose it.
        if grant is not None and not _saved(connect, vendor, scope, grant):
            with connect() as conn, conn.transaction():
                _save(conn, vendor, scope, grant, seed, now)
            log.warning("%s/%s: saved the rotated token after the refresh step failed", vendor, scope)
        raise
    log.info("%s/%s: access token refreshed", vendor, scope)
    return grant.access_token


def _locked_row(conn: psycopg.Connection, vendor: str, scope: str, seed_refresh_token: str, seed: str,
                lock_timeout: float | None) -> tuple:
    """The token row, seeded if new, locked for this transaction (waiting `lock_timeout` at most)."""
    if lock_timeout is not None:
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{max(1, round(lock_timeout * 1000))}ms",))
    conn.execute(
        "INSERT INTO etl.oauth_tokens (vendor, scope, refresh_token, seed_fingerprint) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT (vendor, scope) DO NOTHING",
        (vendor, scope, encrypt(seed_refresh_token), seed),
    )
    return conn.execute(
        "SELECT refresh_token, access_token, access_expires_at, seed_fingerprint FROM etl.oauth_tokens "
        "WHERE vendor = %s AND scope = %s FOR UPDATE",
        (vendor, scope),
    ).fetchone()


def _save(conn: psycopg.Connection, vendor: str, scope: str, grant: TokenGrant, seed: str, now: dt.datetime) -> None:
    # An upsert: after a failed first refresh the seeded row itself was rolled back.
    conn.execute(
        """
        INSERT INTO etl.oauth_tokens AS o (vendor, scope, refresh_token, refresh_expires_at, access_token,
                                           access_expires_at, seed_fingerprint, rotations)
        VALUES (%(vendor)s, %(scope)s, %(refresh)s, %(refresh_until)s, %(access)s, %(access_until)s, %(seed)s, 1)
        ON CONFLICT (vendor, scope) DO UPDATE SET
            refresh_token = EXCLUDED.refresh_token, refresh_expires_at = EXCLUDED.refresh_expires_at,
            access_token = EXCLUDED.access_token, access_expires_at = EXCLUDED.access_expires_at,
            seed_fingerprint = EXCLUDED.seed_fingerprint, rotated_at = now(), rotations = o.rotations + 1
        """,
        {"vendor": vendor, "scope": scope, "refresh": encrypt(grant.refresh_token),
         "refresh_until": now + dt.timedelta(seconds=grant.refresh_expires_in) if grant.refresh_expires_in else None,
         "access": encrypt(grant.access_token), "access_until": now + dt.timedelta(seconds=grant.access_expires_in),
         "seed": seed},
    )


def _saved(connect: Callable[[], psycopg.Connection], vendor: str, scope: str, grant: TokenGrant) -> bool:
    with connect() as conn:
        row = conn.execute("SELECT refresh_token FROM etl.oauth_tokens WHERE vendor = %s AND scope = %s",
                           (vendor, scope)).fetchone()
    return row is not None and decrypt(row[0]) == grant.refresh_token
