"""The inbox statement: a message stored once by messageId, its kept entities folded into pending events."""
from __future__ import annotations

import json

import pytest

from integrations.servicetrade import inbox
from integrations.servicetrade.webhook_config import load

RULES = load().defaults


def _body(message_id: str, *entities: tuple[str, int, str]) -> bytes:
    return json.dumps({"messageId": message_id, "timestamp": "1401833057",
                       "data": [{"action": action, "timestamp": 1401833052, "userId": 1,
                                 "entity": {"type": kind, "id": entity_id, "uri": f"https://x/api/{kind}/{entity_id}"}}
                                for kind, entity_id, action in entities]}).encode()


def _events(conn) -> list[tuple]:
    return conn.execute("SELECT entity_type, entity_id, pending, version, notifications, last_action "
                        "FROM servicetrade.webhook_events ORDER BY 1, 2").fetchall()


def test_a_message_folds_its_kept_entities_once_and_a_repeat_stores_nothing(conn):
    body = _body("m-1", ("job", 5, "updated"), ("jobItem", 9, "created"), ("job", 5, "updated"),
                 ("appointment", 3, "updated"))
    assert inbox.store(conn, "acct", body, RULES) == (1, 2)
    assert inbox.store(conn, "acct", body, RULES) == (0, 0)           # ServiceTrade's repeat
    assert _events(conn) == [("job", 5, True, 1, 1, "updated"), ("jobitem", 9, True, 1, 1, "created")]
    assert conn.execute("SELECT count(*), sum(notifications), sum(interesting) FROM servicetrade.webhook_inbox "
                        "WHERE account = 'acct'").fetchone() == (1, 4, 2)
    inbox.store(conn, "acct", _body("m-2", ("job", 5, "deleted")), RULES)
    assert _events(conn)[0] == ("job", 5, True, 2, 2, "deleted")
    inbox.store(conn, "other", body, RULES)   # another account's message with the same id is its own
    assert conn.execute("SELECT count(*) FROM servicetrade.webhook_events WHERE account = 'other'").fetchone() == (2,)


@pytest.mark.parametrize(("body", "why"), [
    (b"{not json", "not JSON"), (b"[]", "not a JSON object"), (b'{"data": []}', "no messageId"),
    (b'{"messageId": "x", "data": {}}', "data is not a list"),
    (b'{"messageId": "x", "data": [{"action": "updated", "entity": {"type": "job", "id": "abc"}}]}',
     "is not a number"),
    (b"\xff\xfe", "not JSON"),
])
def test_a_malformed_body_is_kept_as_received(conn, body, why):
    with pytest.raises(inbox.Malformed, match=why):
        inbox.store(conn, "acct-malformed", body, RULES)
    kept = conn.execute("SELECT body, malformed, message_id FROM servicetrade.webhook_inbox "
                        "WHERE account = 'acct-malformed' ORDER BY id DESC LIMIT 1").fetchone()
    assert bytes(kept[0]) == body and why in kept[1] and kept[2] is None
