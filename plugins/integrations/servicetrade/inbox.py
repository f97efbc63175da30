"""The webhook inbox: a delivery parsed, filtered by the account's rules and stored with its events in one statement.

ServiceTrade retries a delivery it got no 2xx-4xx for, so the receiver answers 200 only once this statement has
committed: the message row (idempotent by messageId: a repeat stores nothing and folds nothing) and, for each
entity the account's rules keep, its pending event created or refreshed. Events are folded in key order, so two
deliveries naming the same entities never deadlock; an entity named twice in one message is folded once.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from integrations.servicetrade.webhook_config import AccountRules


class Malformed(ValueError):
    """The body is not a ServiceTrade notification message; kept in the inbox, answered 400."""


@dataclass(frozen=True)
class Message:
    message_id: str
    notifications: int                         # entity notifications in the message
    kept: tuple[tuple[str, int, str], ...]     # (entity type, id, last action) the rules keep, sorted, one each


def secret_digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def parse(body: bytes, rules: AccountRules) -> Message:
    """A delivery body as ServiceTrade documents it: {messageId, timestamp, data: [{action, entity: {type, id}}]}."""
    try:
        tree = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Malformed(f"not JSON: {exc}") from None
    if not isinstance(tree, dict):
        raise Malformed("not a JSON object")
    message_id = tree.get("messageId")
    if not isinstance(message_id, str) or not message_id.strip() or len(message_id) > 200:
        raise Malformed("no messageId")
    data = tree.get("data")
    if not isinstance(data, list):
        raise Malformed("data is not a list")
    kept: dict[tuple[str, int], str] = {}
    for n, item in enumerate(data):
        entity = item.get("entity") if isinstance(item, dict) else None
        action = item.get("action") if isinstance(item, dict) else None
        if not isinstance(entity, dict) or not isinstance(action, str):
            raise Malformed(f"data[{n}] has no entity or action")
        entity_type, entity_id = entity.get("type"), entity.get("id")
        if not isinstance(entity_type, str) or isinstance(entity_id, bool):
            raise Malformed(f"data[{n}].entity has no type or id")
        try:
            entity_id = int(entity_id)
        except (TypeError, ValueError):
            raise Malformed(f"data[{n}].entity.id {entity_id!r} is not a number") from None
        entity_type = entity_type.lower()      # ServiceTrade's spelling of job items is not documented
        if rules.keeps(entity_type, action):
            kept[(entity_type, entity_id)] = action
    return Message(message_id.strip(), len(data),
                   tuple((t, i, kept[(t, i)]) for t, i in sorted(kept)))


# One round trip, one transaction: the message row, then (only if it was new) its events.
STORE = """
WITH message AS (
    INSERT INTO servicetrade.webhook_inbox (account, message_id, remote_addr, body, notifications, interesting)
    VALUES (%(account)s, %(message_id)s, %(remote_addr)s, %(body)s, %(notifications)s, %(interesting)s)
    ON CONFLICT (account, message_id) WHERE message_id IS NOT NULL DO NOTHING
    RETURNING received_at
), folded AS (
    INSERT INTO servicetrade.webhook_events AS e
           (account, entity_type, entity_id, pending, first_seen, last_seen, notifications, last_action)
    SELECT %(account)s, k.entity_type, k.entity_id, true, m.received_at, m.received_at, 1, k.action
      FROM message m
     CROSS JOIN unnest(%(types)s::text[], %(ids)s::bigint[], %(actions)s::text[]) WITH ORDINALITY
           AS k(entity_type, entity_id, action, n)
     ORDER BY k.n
    ON CONFLICT (account, entity_type, entity_id) DO UPDATE SET
        pending = true,
        first_seen = CASE WHEN e.pending THEN e.first_seen ELSE excluded.first_seen END,
        last_seen = greatest(e.last_seen, excluded.last_seen),
        version = e.version + 1,
        notifications = CASE WHEN e.pending THEN e.notifications + 1 ELSE 1 END,
        last_action = excluded.last_action
    RETURNING 1
)
SELECT (SELECT count(*) FROM message) AS stored, (SELECT count(*) FROM folded) AS events
"""

STORE_MALFORMED = """
INSERT INTO servicetrade.webhook_inbox (account, remote_addr, body, malformed)
VALUES (%(account)s, %(remote_addr)s, %(body)s, %(malformed)s)
"""

ACCOUNTS = "SELECT account, secret_sha256, previous_sha256 FROM servicetrade.webhook_accounts"


def store_params(account: str, remote_addr: str | None, body: bytes, message: Message) -> dict:
    return {"account": account, "message_id": message.message_id, "remote_addr": remote_addr, "body": body,
            "notifications": message.notifications, "interesting": len(message.kept),
            "types": [t for t, _, _ in message.kept], "ids": [i for _, i, _ in message.kept],
            "actions": [a for _, _, a in message.kept]}


def store(conn, account: str, body: bytes, rules: AccountRules, remote_addr: str | None = None) -> tuple[int, int]:
    """Synchronous store for tools and tests: (messages stored: 0 for a repeat, events folded). Raises Malformed
    after keeping a malformed body."""
    try:
        message = parse(body, rules)
    except Malformed as exc:
        conn.execute(STORE_MALFORMED, {"account": account, "remote_addr": remote_addr, "body": body,
                                       "malformed": str(exc)})
        conn.commit()
        raise
    stored, events = conn.execute(STORE, store_params(account, remote_addr, body, message)).fetchone()
    conn.commit()
    return stored, events
