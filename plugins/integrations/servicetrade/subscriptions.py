"""An account's ServiceTrade webhook subscription: created, verified, re-enabled or replaced, its secret kept safe.

ServiceTrade signs nothing, so the subscription's hookUrl carries a per-account secret as its last path segment:
`<receiver_url>/<account>/<secret>`. Only its SHA-256 is kept (servicetrade.webhook_accounts.secret_sha256), and
the secret itself is never logged, returned or stored: a URL is shown with the secret replaced by `***`.

Ours, among the account's subscriptions: a hookUrl under `<receiver_url>/<account>/`, or any hookUrl whose last
segment hashes to our current or previous secret (one left behind by an earlier receiver_url).

    the one of ours under the receiver URL, with our current secret, enabled ------> verified (verified_at)
    ... disabled (ServiceTrade disables a hook that keeps failing) ----------------> PUT enabled: re-enabled
    ... others of ours beside it (an earlier switch stopped half-way) -------------> those deleted, then as above
    none; several; a wrong secret; a new receiver_url; rotate_secret --------------> replaced:
        a new secret; its hash stored with the old one kept as previous_sha256, COMMITTED before the POST (the
        first delivery, which may come before the answer, is accepted; a POST whose answer is lost is found by
        the next run's listing, under the new secret); POST /api/webhook (never repeated); every other
        subscription of ours deleted; previous_sha256 cleared, subscription_id, hook_url_base, subscribed_at set.

Runs for one account are serialised by a session advisory lock.
"""
from __future__ import annotations

import hmac
import logging
import secrets
from dataclasses import asdict, dataclass, field

import psycopg

from etl.db import session_lock
from hooks.servicetrade import ServiceTradeHook
from hooks.vendor_http import VendorApiError, register_secret
from integrations.servicetrade.inbox import secret_digest

log = logging.getLogger(__name__)


@dataclass
class EnsureResult:
    account: str
    action: str                         # verified | re-enabled | subscribed
    subscription_id: int
    hook_url_base: str                  # the hookUrl without its secret
    reason: str                         # why: what the listing showed
    deleted: list[int] = field(default_factory=list)   # our other subscriptions deleted

    def as_dict(self) -> dict:
        return asdict(self)


def hook_url_base(receiver_url: str, account: str) -> str:
    return f"{receiver_url.rstrip('/')}/{account}/"


def shown(url: str) -> str:
    """A hookUrl as it may be logged: its last segment (the secret) replaced."""
    head, _, _ = str(url).rpartition("/")
    return f"{head}/***"


def _secret_of(url: str) -> str:
    return str(url).rpartition("/")[2]


def _matches(url: str, digest: bytes | None) -> bool:
    return digest is not None and hmac.compare_digest(secret_digest(_secret_of(url)), bytes(digest))


def ensure(conn: psycopg.Connection, hook: ServiceTradeHook, account: str, receiver_url: str, *,
           rotate_secret: bool = False) -> EnsureResult:
    """Make `account` subscribed to `receiver_url` exactly once, with a secret only we know (the connection `conn`
    must not be inside a transaction)."""
    base = hook_url_base(receiver_url, account)
    with session_lock(conn, f"servicetrade_webhook_subscription:{account}"):
        with conn.transaction():
            row = conn.execute("SELECT secret_sha256, previous_sha256 FROM servicetrade.webhook_accounts "
                               "WHERE account = %s", (account,)).fetchone()
        current, previous = (bytes(row[0]), bytes(row[1]) if row[1] is not None else None) if row else (None, None)
        with hook.transaction():
            listed = hook.webhooks()
            ours = [w for w in listed if str(w.get("hookUrl", "")).startswith(base)
                    or _matches(w.get("hookUrl", ""), current) or _matches(w.get("hookUrl", ""), previous)]
            keep = [w for w in ours if str(w["hookUrl"]).startswith(base) and "/" not in w["hookUrl"][len(base):]
                    and _matches(w["hookUrl"], current)]
            if len(keep) == 1 and not rotate_secret:
                return _keep(conn, hook, account, base, keep[0], [w for w in ours if w is not keep[0]])
            reason = _why(ours, keep, base, rotate_secret)
            return _replace(conn, hook, account, base, current, ours, reason)


def _why(ours: list[dict], keep: list[dict], base: str, rotate_secret: bool) -> str:
    if rotate_secret:
        return "secret rotation asked"
    if not ours:
        return "no subscription of ours"
    if len(keep) > 1:
        return f"{len(keep)} subscriptions with our secret"
    if not any(str(w["hookUrl"]).startswith(base) for w in ours):
        return "receiver URL changed"
    return "no subscription with our current secret under the receiver URL"


def _keep(conn, hook: ServiceTradeHook, account: str, base: str, kept: dict, others: list[dict]) -> EnsureResult:
    deleted = []
    for other in others:
        log.info("ServiceTrade account %s: deleting subscription %s (%s), left by an earlier switch",
                 account, other["id"], shown(other["hookUrl"]))
        hook.delete_webhook(other["id"])
        deleted.append(int(other["id"]))
    action = "verified"
    if not kept.get("enabled", False):
        log.warning("ServiceTrade account %s: subscription %s (%s) was disabled; enabling it", account, kept["id"],
                    shown(kept["hookUrl"]))
        hook.enable_webhook(kept["id"])
        action = "re-enabled"
    with conn.transaction():
        conn.execute("UPDATE servicetrade.webhook_accounts SET previous_sha256 = NULL, subscription_id = %s, "
                     "hook_url_base = %s, verified_at = now() WHERE account = %s", (int(kept["id"]), base, account))
    log.info("ServiceTrade account %s: subscription %s (%s) %s", account, kept["id"], shown(kept["hookUrl"]), action)
    return EnsureResult(account, action, int(kept["id"]), base, "one subscription of ours, with our secret", deleted)


def _replace(conn, hook: ServiceTradeHook, account: str, base: str, current: bytes | None, ours: list[dict],
             reason: str) -> EnsureResult:
    secret = secrets.token_urlsafe(32)
    register_secret(secret)
    hook_url = base + secret
    with conn.transaction():        # committed before the POST: the first delivery may come before its answer
        conn.execute(
            """
            INSERT INTO servicetrade.webhook_accounts (account, secret_sha256, previous_sha256)
            VALUES (%(account)s, %(new)s, %(old)s)
            ON CONFLICT (account) DO UPDATE SET secret_sha256 = excluded.secret_sha256,
                previous_sha256 = coalesce(excluded.previous_sha256, webhook_accounts.previous_sha256)
            """, {"account": account, "new": secret_digest(secret), "old": current})
    log.info("ServiceTrade account %s: subscribing %s (%s)", account, shown(hook_url), reason)
    created = hook.create_webhook(hook_url)
    if created.get("id") is None:
        raise VendorApiError(hook.vendor, "POST", "/webhook", 200, "answer without data.id",
                             hint="the subscription may exist: run the DAG again, its listing finds it")
    new_id = int(created["id"])
    deleted = []
    for other in ours:
        if int(other["id"]) == new_id:
            continue
        log.info("ServiceTrade account %s: deleting the replaced subscription %s (%s)", account, other["id"],
                 shown(other["hookUrl"]))
        hook.delete_webhook(other["id"])
        deleted.append(int(other["id"]))
    with conn.transaction():
        conn.execute("UPDATE servicetrade.webhook_accounts SET previous_sha256 = NULL, subscription_id = %s, "
                     "hook_url_base = %s, subscribed_at = now(), verified_at = now() WHERE account = %s",
                     (new_id, base, account))
    log.info("ServiceTrade account %s: subscribed as %s (%s)", account, new_id, shown(hook_url))
    return EnsureResult(account, "subscribed", new_id, base, reason, deleted)
