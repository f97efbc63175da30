"""The ItsPerfect order export against the sandbox and a real PostgreSQL: each order created there exactly
once, whatever instant a worker dies at; a refusal recorded and alerted once; a spent request budget resumed
after the reset without a duplicate."""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from etl import watermarks
from etl.request_budget import BudgetSpent
from hooks.itsperfect import ItsPerfectHook
from hooks.vendor_http import VendorApiError
from integrations.itsperfect import orders
from integrations.itsperfect.orders import PIPELINE, ExportError, accounts_to_export, export_orders
from sandbox import itsperfect as itsp
from tests.kill_points import Locker, until, waiting

ROOT = Path(__file__).resolve().parents[3]
ACCOUNT, CONNECTOR, WAREHOUSE = "acme", "itsperfect_default", 2
UNKNOWN_BARCODE = "8710000000001"          # a valid EAN-13 the tenant's catalogue does not hold
ATTRIBUTES = {"orderType": "4", "sellingPointId": "12"}   # one replaces a standard key, one is new


def barcode(n: int) -> str:
    return itsp.ean13("871819", n)


def scalar(conn, query: str, *params):
    conn.rollback()
    value = conn.execute(query, params).fetchone()[0]
    conn.rollback()
    return value


@pytest.fixture
def sandbox_hour(sandbox):
    """The sandbox's clock 10 minutes into the next hour (no hour ends mid-test), the vendor's own calls a
    burst of 40 now. Returns the hour's reset moment."""
    start = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1,
                                                                                                       minutes=10)
    sandbox.control("itsperfect", set_clock=start.isoformat(), server_calls_per_hour=0, server_calls_now=40)
    return start.replace(minute=0) + dt.timedelta(hours=1)


@pytest.fixture
def shop(conn, sandbox, sandbox_hour, monkeypatch):
    """Account `acme` mapped to warehouse 2 of connector itsperfect_default (the sandbox), with the connector's
    extension attributes; no orders, outbox rows, watermarks, budgets or ledger rows left by another test."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONNECTOR.upper()}", json.dumps(
        itsp.airflow_connection(sandbox.url)))
    monkeypatch.setattr(ItsPerfectHook, "backoff_initial", 0.01)
    monkeypatch.setattr(ItsPerfectHook, "backoff_max", 0.05)
    conn.execute("TRUNCATE commerce.accounts, itsperfect.connectors, etl.watermarks, etl.watermark_history, "
                 "etl.request_budgets, etl.run_ledger CASCADE")
    conn.execute("INSERT INTO commerce.accounts (account_id, name) VALUES (%s, 'Acme Fashion')", (ACCOUNT,))
    conn.execute("INSERT INTO itsperfect.connectors (connector) VALUES (%s)", (CONNECTOR,))
    for wid, name, _, active in itsp.WAREHOUSES:
        conn.execute("INSERT INTO itsperfect.warehouses (connector, warehouse_id, name, active) "
                     "VALUES (%s, %s, %s, %s)", (CONNECTOR, wid, name, bool(active)))
    conn.execute("INSERT INTO itsperfect.account_connectors (account_id, connector, warehouse_id) "
                 "VALUES (%s, %s, %s)", (ACCOUNT, CONNECTOR, WAREHOUSE))
    for name, value in ATTRIBUTES.items():
        conn.execute("INSERT INTO itsperfect.extension_attributes (connector, name, value) VALUES (%s, %s, %s)",
                     (CONNECTOR, name, value))
    conn.commit()
    return Shop(conn)


class Shop:
    def __init__(self, conn):
        self.conn = conn

    def order(self, n: int, *, lines: list[tuple[str, int, str]] | None = None,
              created_at: dt.datetime | None = None) -> str:
        """Order o-<n> with both addresses and `lines` (barcode, quantity, price), committed; its reference."""
        order_id, reference = f"o-{n}", f"ACME-{1000 + n}"
        self.conn.execute(
            "INSERT INTO commerce.orders (order_id, account_id, reference, order_number, customer_id, ordered_at, "
            "currency, shipping_costs, comment, channel_order_number, channel_order_id, created_at) "
            "VALUES (%s, %s, %s, %s, 'C-77', %s, 'EUR', 4.95, 'Leave at the door', %s, %s, "
            "coalesce(%s, clock_timestamp()))",
            (order_id, ACCOUNT, reference, f"WEB-{n}", dt.datetime(2026, 3, 2, 9, 15, n, tzinfo=dt.timezone.utc),
             f"BOL-{n}", f"bol-{n}-x", created_at))
        for kind, street in (("shipping", "Keizersgracht"), ("invoice", "Herengracht")):
            self.conn.execute(
                "INSERT INTO commerce.order_addresses (order_id, kind, name, street, housenumber, postal_code, city, "
                "country_id, email) VALUES (%s, %s, 'Test customer', %s, '12', '1015 CX', 'Amsterdam', '1', "
                "'klant@example.nl')", (order_id, kind, street))
        for line_no, (code, quantity, price) in enumerate(lines if lines is not None else [(barcode(n), n, "19.95")],
                                                          start=1):
            self.conn.execute("INSERT INTO commerce.order_lines (order_id, line_no, barcode, quantity, price) "
                              "VALUES (%s, %s, %s, %s, %s)", (order_id, line_no, code, quantity, price))
        self.conn.commit()
        return reference

    def exports(self) -> dict[str, tuple]:
        """order id -> (state, itsperfect_id, itsperfect_number, attempts, error, alerted)"""
        self.conn.rollback()
        rows = self.conn.execute("SELECT order_id, state, itsperfect_id, itsperfect_number, attempts, error, "
                                 "alerted_at IS NOT NULL FROM itsperfect.order_exports ORDER BY order_id").fetchall()
        self.conn.rollback()
        return {row[0]: tuple(row[1:]) for row in rows}

    def created_at(self, order_id: str) -> dt.datetime:
        return scalar(self.conn, "SELECT created_at FROM commerce.orders WHERE order_id = %s", order_id)

    def watermark(self) -> dt.datetime | None:
        return scalar(self.conn, "SELECT max(ts_value) FROM etl.watermarks WHERE pipeline = %s AND scope = %s",
                      PIPELINE, ACCOUNT)

    def ledger(self) -> list[tuple]:
        self.conn.rollback()
        rows = self.conn.execute("SELECT status, rows_read, rows_inserted, rows_updated, rows_unchanged, "
                                 "rows_quarantined FROM etl.run_ledger WHERE pipeline = %s AND scope = %s ORDER BY id",
                                 (PIPELINE, ACCOUNT)).fetchall()
        self.conn.rollback()
        return rows


def hook(db_url: str, **kwargs) -> ItsPerfectHook:
    return ItsPerfectHook(CONNECTOR, conninfo=db_url, **kwargs)


def export(db_url: str, **kwargs):
    from etl.db import connect

    with connect(db_url) as conn:
        return export_orders(conn, hook(db_url, **kwargs), ACCOUNT, run_id="test")


def received(sandbox) -> list[dict]:
    return sandbox.state("itsperfect")["orders"]


def posts(sandbox) -> int:
    return sum(1 for r in sandbox.requests("itsperfect") if r["method"] == "POST" and r["path"].endswith("/orders"))


def report(**counts) -> dict:
    return {"sent": 0, "settled_by_reference": 0, "resent": 0, "refused": 0, "skipped": 0, **counts}


@pytest.fixture
def webhook(monkeypatch):
    """The on-call webhook as a local server; the texts it was sent."""
    texts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            texts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"])))["text"])
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("ALERT_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/alerts")
    yield texts
    server.shutdown()
    thread.join(timeout=5)


def test_three_orders_are_created_once_with_the_connectors_attributes_and_a_rerun_sends_nothing(shop, sandbox,
                                                                                                db_url):
    references = [shop.order(n) for n in (1, 2, 3)]
    assert accounts_to_export(shop.conn) == [(ACCOUNT, CONNECTOR)]

    assert export(db_url).as_dict() == report(sent=3)
    orders = received(sandbox)
    assert [o["reference"] for o in orders] == references
    assert orders[0]["payload"] == {
        "orderType": "4",                       # the connector's attribute replaced the standard "2"
        "sellingPointId": "12",                 # and added a key of its own
        "date": "2026-03-02 10:15:01",          # 09:15:01 UTC in Amsterdam (winter time)
        "reference": "ACME-1001", "orderNumber": "WEB-1", "customerId": "C-77", "currency": "EUR",
        "warehouseId": "2", "shippingCosts": "4.95", "comment": "Leave at the door", "internalComment": "",
        "channel": {"orderNumber": "BOL-1", "orderId": "bol-1-x"},
        "shippingAddress": {"addressId": "", "name": "Test customer", "street": "Keizersgracht", "housenumber": "12",
                            "housenumberExtension": "", "postalCode": "1015 CX", "city": "Amsterdam",
                            "countryId": "1", "email": "klant@example.nl", "phone": ""},
        "invoiceAddress": {"addressId": "", "name": "Test customer", "street": "Herengracht", "housenumber": "12",
                           "housenumberExtension": "", "postalCode": "1015 CX", "city": "Amsterdam",
                           "countryId": "1", "email": "klant@example.nl", "phone": ""},
        "items": [{"barcode": barcode(1), "quantity": 1, "price": "19.95"}],
    }
    assert shop.exports() == {f"o-{n}": ("sent", o["id"], f"WEB-{n}", 1, None, False)
                              for n, o in zip((1, 2, 3), orders, strict=True)}
    assert shop.watermark() == shop.created_at("o-3")

    requests_before = len(sandbox.requests("itsperfect"))
    assert export(db_url).as_dict() == report(skipped=3)
    assert len(sandbox.requests("itsperfect")) == requests_before      # not a GET, not a POST
    assert len(received(sandbox)) == 3
    assert shop.ledger() == [("success", 3, 3, 0, 0, 0), ("success", 3, 0, 0, 3, 0)]


def test_a_refused_order_is_kept_with_the_vendors_error_and_alerted_once_and_the_others_are_sent(shop, sandbox,
                                                                                                 db_url, webhook):
    shop.order(1)
    shop.order(2, lines=[(barcode(2), 1, "10.00"), (UNKNOWN_BARCODE, 1, "5.00")])
    shop.order(3, lines=[])                     # nothing to send: refused by us, never POSTed
    shop.order(4)

    assert export(db_url).as_dict() == report(sent=2, refused=2)
    assert [o["reference"] for o in received(sandbox)] == ["ACME-1001", "ACME-1004"]
    assert posts(sandbox) == 3
    exports = shop.exports()
    assert exports["o-2"] == ("refused", None, None, 1, f"Barcode {UNKNOWN_BARCODE} not found (items[1])", True)
    assert exports["o-3"] == ("refused", None, None, 0, "order o-3 (reference ACME-1003) cannot be exported to "
                              "ItsPerfect: it has no order lines", True)
    assert [exports[o][0] for o in ("o-1", "o-4")] == ["sent", "sent"]

    assert export(db_url).as_dict() == report(skipped=4)
    assert posts(sandbox) == 3
    assert len(webhook) == 2                    # one alert per refused order across both runs
    vendor_alert, our_alert = sorted(webhook)
    assert vendor_alert.startswith(f"ItsPerfect refused order o-2 (reference ACME-1002) of account acme: Barcode "
                                   f"{UNKNOWN_BARCODE} not found (items[1]).")
    assert our_alert.startswith("order o-3 (reference ACME-1003) cannot be exported to ItsPerfect: it has no order "
                                "lines (account acme).")
    assert shop.ledger() == [("success", 4, 2, 0, 0, 2), ("success", 4, 0, 0, 4, 0)]


def test_an_order_committed_late_is_found_in_the_overlap_and_the_watermark_never_moves_back(shop, sandbox, db_url):
    shop.order(1)
    shop.order(2)
    assert export(db_url).as_dict() == report(sent=2)
    mark = shop.watermark()
    assert mark == shop.created_at("o-2")
    # Inserted 4 minutes before o-2 by a transaction that committed only after o-2 was exported.
    shop.order(3, created_at=mark - dt.timedelta(minutes=4))
    assert export(db_url).as_dict() == report(sent=1, skipped=2)
    assert [o["reference"] for o in received(sandbox)] == ["ACME-1001", "ACME-1002", "ACME-1003"]
    assert shop.watermark() == mark


@pytest.mark.parametrize(("fault", "created", "next_run"), [
    ({"burst_5xx": 1}, [], report(resent=1, skipped=1)),                              # refused before creating
    ({"drop_next": 1}, ["ACME-1001"], report(settled_by_reference=1, skipped=1)),     # created, answer cut
])
def test_a_post_without_a_usable_answer_fails_the_run_and_the_next_run_settles_it_by_reference(
        shop, sandbox, db_url, fault, created, next_run):
    shop.order(1)
    sandbox.faults("itsperfect", only_path="/orders", **fault)
    with pytest.raises(VendorApiError):
        export(db_url)
    assert [o["reference"] for o in received(sandbox)] == created
    assert {k: v[:2] for k, v in shop.exports().items()} == {"o-1": ("sending", None)}
    assert shop.ledger()[-1][0] == "failed"

    sandbox.faults("itsperfect")
    assert export(db_url).as_dict() == next_run
    assert [o["reference"] for o in received(sandbox)] == ["ACME-1001"]
    assert shop.exports()["o-1"][:2] == ("sent", received(sandbox)[0]["id"])


def test_an_order_the_vendor_fails_on_every_time_is_given_up_after_five_posts_alerted_once(shop, sandbox, db_url,
                                                                                          webhook):
    shop.order(1)
    sandbox.faults("itsperfect", only_path="/orders", only_method="POST", error_rate=1.0)
    for _ in range(orders.MAX_ATTEMPTS):                # each run: looked up (absent), POSTed, failed
        with pytest.raises(VendorApiError, match="HTTP 503"):
            export(db_url)
    assert posts(sandbox) == orders.MAX_ATTEMPTS and webhook == []

    assert export(db_url).as_dict() == report(refused=1, skipped=1)   # given up on: the run succeeds, sends nothing
    assert posts(sandbox) == orders.MAX_ATTEMPTS and received(sandbox) == []
    state, error = shop.exports()["o-1"][0], shop.exports()["o-1"][4]
    assert state == "refused" and "not created after 5 attempts" in error and "HTTP 503" in error
    assert len(webhook) == 1 and "o-1" in webhook[0]
    export(db_url)
    assert len(webhook) == 1


def test_an_account_that_cannot_export_or_is_busy_sends_nothing(shop, sandbox, db_url):
    from etl.db import connect

    shop.order(1)
    with connect(db_url) as other, watermarks.claimed(other, PIPELINE, ACCOUNT):
        with pytest.raises(watermarks.WatermarkBusy):
            export(db_url)
    shop.conn.execute("UPDATE itsperfect.account_connectors SET warehouse_id = 4")      # inactive at the tenant
    shop.conn.commit()
    with pytest.raises(ExportError, match="warehouse 4 of ItsPerfect connector itsperfect_default, which "
                                          "ItsPerfect lists as inactive"):
        export(db_url)
    shop.conn.execute("DELETE FROM itsperfect.account_connectors")
    shop.conn.commit()
    assert accounts_to_export(shop.conn) == []
    with pytest.raises(ExportError, match="account acme has no ItsPerfect connector"):
        export(db_url)
    assert sandbox.requests("itsperfect") == [] and shop.exports() == {}
    assert [row[0] for row in shop.ledger()] == ["failed", "failed"]


# ---- a worker killed at each step ------------------------------------------------------------------------

KILLABLE_EXPORT = """
import sys
from etl import db
from hooks.itsperfect import ItsPerfectHook
from integrations.itsperfect.orders import export_orders
with db.connect(sys.argv[1]) as conn:
    export_orders(conn, ItsPerfectHook("itsperfect_default", conninfo=sys.argv[1]), "acme", run_id="killed")
"""


def state_of(conn, order_id: str) -> str | None:
    return scalar(conn, "SELECT max(state) FROM itsperfect.order_exports WHERE order_id = %s", order_id)


@pytest.mark.parametrize("moment", ["row committed, POST not sent", "order created, row not completed",
                                    "row completed, next order not recorded"])
def test_a_worker_killed_at_any_step_leaves_each_order_created_exactly_once(shop, sandbox, db_url, moment):
    references = [shop.order(n) for n in (1, 2, 3)]
    conn, held, completion = shop.conn, Locker(db_url), Locker(db_url)
    hook(db_url).check_credentials()            # the budget row exists, so a reservation can be held up
    if moment == "row completed, next order not recorded":
        held.lock("SELECT 1 FROM commerce.orders WHERE order_id = 'o-2'")   # its outbox row's key check waits
    else:
        held.lock("SELECT 1 FROM etl.request_budgets")                      # the POST's reservation waits
    worker = subprocess.Popen([sys.executable, "-c", KILLABLE_EXPORT, db_url],
                              env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)])})
    try:
        if moment == "row committed, POST not sent":
            until(lambda: state_of(conn, "o-1") == "sending" and waiting(conn), "o-1 waits to be POSTed", worker)
        elif moment == "order created, row not completed":
            until(lambda: state_of(conn, "o-1") == "sending" and waiting(conn), "o-1 waits to be POSTed", worker)
            completion.lock("SELECT 1 FROM itsperfect.order_exports WHERE order_id = 'o-1'")
            held.release()
            until(lambda: len(received(sandbox)) == 1 and waiting(conn), "o-1 is created and waits to be completed",
                  worker)
        else:
            until(lambda: state_of(conn, "o-1") == "sent" and waiting(conn), "o-2 waits to be recorded", worker)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
        held.close()
        completion.close()
    until(lambda: scalar(conn, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0,
          "the killed worker's claim is dropped")

    killed = {"row committed, POST not sent": ([], {"o-1": "sending"}),
              "order created, row not completed": (["ACME-1001"], {"o-1": "sending"}),
              "row completed, next order not recorded": (["ACME-1001"], {"o-1": "sent"})}[moment]
    assert ([o["reference"] for o in received(sandbox)], {k: v[0] for k, v in shop.exports().items()}) == killed
    assert shop.watermark() == shop.created_at("o-1")     # moved with o-1's outbox row, not with o-2's

    again = export(db_url).as_dict()
    assert again == {"row committed, POST not sent": report(resent=1, sent=2, skipped=1),
                     "order created, row not completed": report(settled_by_reference=1, sent=2, skipped=1),
                     "row completed, next order not recorded": report(skipped=1, sent=2)}[moment]
    orders = received(sandbox)
    assert sorted(o["reference"] for o in orders) == references          # each exactly once
    ids = {o["reference"]: o["id"] for o in orders}
    assert {k: v[:2] for k, v in shop.exports().items()} == {f"o-{n}": ("sent", ids[f"ACME-{1000 + n}"])
                                                             for n in (1, 2, 3)}


def test_a_spent_budget_keeps_what_was_sent_and_the_rest_goes_on_after_the_reset(shop, sandbox, db_url,
                                                                                 sandbox_hour):
    references = [shop.order(n) for n in range(1, 6)]

    def sandbox_clock() -> dt.datetime:
        offset = sandbox.state("itsperfect")["settings"]["clock_offset"]
        return dt.datetime.fromtimestamp(time.time() + offset, dt.timezone.utc)

    # 750 less this headroom leaves 42 requests in the hour: the vendor's 40 and two of ours.
    with pytest.raises(BudgetSpent) as raised:
        export(db_url, headroom=708, clock=sandbox_clock)
    assert raised.value.resets_at == sandbox_hour
    assert [o["reference"] for o in received(sandbox)] == references[:2]
    assert {k: v[0] for k, v in shop.exports().items()} == {"o-1": "sent", "o-2": "sent", "o-3": "sending"}
    assert shop.ledger() == [("success", 3, 2, 0, 0, 0)]

    sandbox.control("itsperfect", advance_clock_seconds=3600)
    assert export(db_url, headroom=708, clock=sandbox_clock).as_dict() == report(resent=1, sent=2, skipped=3)
    assert sorted(o["reference"] for o in received(sandbox)) == references
    assert {k: v[0] for k, v in shop.exports().items()} == dict.fromkeys(("o-1", "o-2", "o-3", "o-4", "o-5"), "sent")
