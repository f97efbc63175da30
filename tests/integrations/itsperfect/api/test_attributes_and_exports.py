"""Extension attributes of a connector, and the order outbox: its filter and the retry of a refused export."""
from __future__ import annotations

import datetime as dt

import pytest

from integrations.itsperfect.orders import PIPELINE


@pytest.fixture
def shop(rows):
    rows.conn.execute("INSERT INTO itsperfect.connectors (connector) VALUES ('shop_eu'), ('shop_us')")
    rows.conn.commit()
    return rows


def test_an_attribute_is_set_replaced_read_and_deleted(admin, shop):
    assert admin.put("/connectors/shop_eu/attributes/channel", json={"value": "web"}).status_code == 200
    replaced = admin.put("/connectors/shop_eu/attributes/channel", json={"value": "retail"})
    admin.put("/connectors/shop_eu/attributes/deliveryTerms", json={"value": ""})

    assert replaced.json() == {"name": "channel", "value": "retail"}
    assert admin.get("/connectors/shop_eu/attributes/channel").json() == {"name": "channel", "value": "retail"}
    assert admin.get("/connectors/shop_eu/attributes").json() == {"attributes": [
        {"name": "channel", "value": "retail"}, {"name": "deliveryTerms", "value": ""}]}
    assert admin.get("/connectors/shop_us/attributes").json() == {"attributes": []}
    assert admin.delete("/connectors/shop_eu/attributes/channel").status_code == 204
    gone = admin.get("/connectors/shop_eu/attributes/channel")
    assert (gone.status_code, gone.json()) == (404, {
        "detail": "connector 'shop_eu' has no attribute 'channel'; its attributes: deliveryTerms"})
    assert admin.delete("/connectors/shop_eu/attributes/channel").status_code == 404


@pytest.mark.parametrize(("path", "body", "status", "detail"), [
    ("/connectors/shop_eu/attributes/1st", {"value": "x"}, 422,
     "name: an attribute name is a letter followed by up to 63 letters, digits or '_' (got '1st')"),
    ("/connectors/shop_eu/attributes/sales-channel", {"value": "x"}, 422, "name: an attribute name is a letter"),
    ("/connectors/shop_eu/attributes/" + "a" * 65, {"value": "x"}, 422, "name: an attribute name is a letter"),
    ("/connectors/shop_eu/attributes/channel", {"value": 5}, 422, "value: Input should be a valid string (got 5)"),
    ("/connectors/shop_eu/attributes/channel", {"value": "a\x00b"}, 422,
     "value: value must not contain a NUL character"),
    ("/connectors/shop_eu/attributes/channel", {"value": "x" * 1001}, 422,
     "value: String should have at most 1000 characters"),
    ("/connectors/shop_eu/attributes/channel", {}, 422, "value: Field required"),
    ("/connectors/shop_xx/attributes/channel", {"value": "x"}, 404,
     "connector 'shop_xx' is not registered; registered connectors: shop_eu, shop_us"),
])
def test_a_bad_attribute_is_refused_with_its_reason(admin, shop, path, body, status, detail):
    answer = admin.put(path, json=body)

    assert answer.status_code == status, answer.text
    assert answer.json()["detail"].startswith(detail)
    assert shop.count("itsperfect.extension_attributes") == 0


@pytest.fixture
def outbox(shop):
    shop.account("A1")
    shop.export("O-sent", "A1", "shop_eu", "sent")
    shop.export("O-sending", "A1", "shop_eu", "sending")
    shop.export("O-refused", "A1", "shop_us", "refused", error="barcode 8712345678906 is unknown")
    shop.conn.commit()
    return shop


def test_the_outbox_is_listed_and_filtered_by_state_and_connector(admin, outbox):
    everything = admin.get("/order-exports").json()["order_exports"]
    [refused] = admin.get("/order-exports", params={"state": "refused"}).json()["order_exports"]
    on_eu = admin.get("/order-exports", params={"connector": "shop_eu"}).json()["order_exports"]

    assert sorted(e["order_id"] for e in everything) == ["O-refused", "O-sending", "O-sent"]
    assert {key: refused[key] for key in ("order_id", "connector", "reference", "state", "error", "attempts")} == {
        "order_id": "O-refused", "connector": "shop_us", "reference": "REF-O-refused", "state": "refused",
        "error": "barcode 8712345678906 is unknown", "attempts": 1}
    assert sorted(e["order_id"] for e in on_eu) == ["O-sending", "O-sent"]
    assert len(admin.get("/order-exports", params={"limit": 1}).json()["order_exports"]) == 1


@pytest.mark.parametrize(("params", "detail"), [
    ({"state": "failed"}, "state: Input should be 'refused', 'sending' or 'sent' (got 'failed')"),
    ({"connector": "shop_xx"}, "connector 'shop_xx' is not registered; registered connectors: shop_eu, shop_us"),
    ({"limit": 0}, "limit: Input should be greater than or equal to 1 (got '0')"),
])
def test_a_bad_filter_is_refused_with_its_reason(admin, outbox, params, detail):
    answer = admin.get("/order-exports", params=params)

    assert answer.status_code == 422
    assert answer.json()["detail"].startswith(detail)


def test_a_refused_export_is_retried_by_deleting_it(admin, outbox):
    answer = admin.post("/order-exports/O-refused/retry")

    assert answer.status_code == 200, answer.text
    assert (answer.json()["refused_with"], answer.json()["watermark_rewound_to"]) == (
        "barcode 8712345678906 is unknown", None)   # the account's export never ran: it reads every order
    assert [row[0] for row in outbox.conn.execute("SELECT order_id FROM itsperfect.order_exports ORDER BY 1")] == [
        "O-sending", "O-sent"]
    assert admin.post("/order-exports/O-refused/retry").status_code == 404


def test_a_retry_moves_back_a_watermark_already_past_the_order(admin, outbox):
    from etl import watermarks

    [created_at] = outbox.conn.execute("SELECT created_at FROM commerce.orders WHERE order_id = 'O-refused'").fetchone()
    watermarks.advance(outbox.conn, PIPELINE, "A1", "timestamp", created_at + dt.timedelta(hours=1), run_id="run-1")
    outbox.conn.commit()

    answer = admin.post("/order-exports/O-refused/retry")

    before = created_at - dt.timedelta(microseconds=1)
    assert answer.status_code == 200, answer.text
    assert dt.datetime.fromisoformat(answer.json()["watermark_rewound_to"]) == before
    assert watermarks.read(outbox.conn, PIPELINE, "A1").value == before
    [(reason,)] = outbox.conn.execute("SELECT reason FROM etl.watermark_history WHERE action = 'reset'").fetchall()
    assert reason == "order O-refused retried by admin through the ItsPerfect admin API"


def test_a_retry_while_the_accounts_export_runs_is_refused_and_changes_nothing(admin, outbox, db_url):
    from etl import db, watermarks

    with db.connect(db_url, autocommit=True) as running, watermarks.claimed(running, PIPELINE, "A1"):
        answer = admin.post("/order-exports/O-refused/retry")

    assert answer.status_code == 409
    assert answer.json() == {"detail": "the order export of account 'A1' is running; retry when it has ended"}
    assert outbox.count("itsperfect.order_exports") == 3


@pytest.mark.parametrize("order_id", ["O-sent", "O-sending"])
def test_only_a_refused_export_can_be_retried(admin, outbox, order_id):
    answer = admin.post(f"/order-exports/{order_id}/retry")

    assert answer.status_code == 409
    assert answer.json()["detail"].startswith(f"the export of order '{order_id}' is '{order_id[2:]}'; "
                                              "only a 'refused' export can be retried")
    assert outbox.count("itsperfect.order_exports") == 3


def test_retrying_an_order_without_export_is_404(admin, outbox):
    answer = admin.post("/order-exports/O-none/retry")

    assert (answer.status_code, answer.json()) == (404, {"detail": "order 'O-none' has no export in the outbox"})
