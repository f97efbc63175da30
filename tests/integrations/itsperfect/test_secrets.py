"""The connector's three secrets (API token, basic auth user name and password) at DEBUG and at rest: in no
log line of a stock pull and an order export (a refused token and a refused order included), in none of our
tables, and not in the bytes Airflow stores for the connection."""
from __future__ import annotations

import json
import logging
import os

import psycopg
import pytest

from etl import db
from hooks.itsperfect import ItsPerfectHook
from hooks.vendor_http import VendorApiError
from integrations.itsperfect import orders, stock
from sandbox import itsperfect as itsp
from tests.integrations.itsperfect.seeding import Shop

CONNECTOR = "itsperfect_default"
SECRETS = (itsp.TOKEN, itsp.PASSWORD, itsp.USERNAME)


@pytest.fixture
def shop(conn, sandbox, monkeypatch):
    conn.execute("TRUNCATE etl.request_budgets, etl.watermarks, etl.run_ledger, commerce.products, "
                 "commerce.accounts, itsperfect.connectors CASCADE")
    shop = Shop(conn, sandbox)
    shop.catalogue(leave_out=(sorted(shop.twin.stock[1])[0],))
    shop.connector(CONNECTOR, warehouses=(1, 2, 3, 4))
    shop.account("brand", connector=CONNECTOR, warehouse_id=1, orders=2)
    shop.order("brand", "bad-1", lines=[("0000000000000", 1, 5.0)])       # ItsPerfect refuses the barcode
    shop.location("store", account="brand", connector=CONNECTOR, warehouse_id=1)
    conn.commit()
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONNECTOR.upper()}", json.dumps(itsp.airflow_connection(sandbox.url)))
    monkeypatch.setenv("AIRFLOW_CONN_ITSPERFECT_REVOKED", json.dumps(
        itsp.airflow_connection(sandbox.url, token="revoked-" + itsp.TOKEN)))
    return shop


def test_no_secret_in_any_log_line_at_debug_nor_in_our_tables(shop, db_url, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    with db.connect(db_url) as conn:
        stock.pull_stock(conn, ItsPerfectHook(CONNECTOR, conninfo=db_url), CONNECTOR, run_id="secrets")
        report = orders.export_orders(conn, ItsPerfectHook(CONNECTOR, conninfo=db_url), "brand", run_id="secrets")
        with pytest.raises(VendorApiError) as refused:
            stock.pull_stock(conn, ItsPerfectHook("itsperfect_revoked", conninfo=db_url), CONNECTOR, run_id="s2")
    assert report.sent == 2 and report.refused == 1
    assert "HTTP 401" in str(refused.value)

    captured = capfd.readouterr()
    logged = "\n".join([caplog.text, captured.out, captured.err, str(refused.value)])
    assert "ItsPerfect" in logged and "GET" in logged          # the pull and the export did log, at DEBUG too
    for secret in (*SECRETS, "revoked-" + itsp.TOKEN):
        assert secret not in logged
    with psycopg.connect(db_url) as conn:
        for table in ("etl.run_ledger", "etl.quarantine", "etl.request_budgets", "itsperfect.order_exports",
                      "itsperfect.warehouses", "itsperfect.connectors"):
            text = json.dumps(conn.execute(f"SELECT * FROM {table}").fetchall(), default=str)
            assert not any(secret in text for secret in SECRETS), table


def test_airflow_stores_the_connection_encrypted(airflow_db, sandbox):
    from airflow.models import Connection
    from airflow.utils.session import create_session

    tenant = itsp.airflow_connection(sandbox.url, active=True)
    with create_session() as session:
        session.query(Connection).filter(Connection.conn_id == "itsperfect_at_rest").delete()
        session.add(Connection(conn_id="itsperfect_at_rest", conn_type="itsperfect", host=tenant["host"],
                               password=tenant["password"], extra=json.dumps(tenant["extra"])))
    metadata = os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("+psycopg2", "")
    with psycopg.connect(metadata) as conn:
        row = conn.execute("SELECT * FROM connection WHERE conn_id = 'itsperfect_at_rest'").fetchone()
    stored = json.dumps(row, default=str)
    assert tenant["host"] in stored                            # the row is there, readable where it is not secret
    for secret in SECRETS:
        assert secret not in stored
    with create_session() as session:
        found = session.query(Connection).filter(Connection.conn_id == "itsperfect_at_rest").one()
        assert (found.password, found.extra_dejson["username"]) == (itsp.PASSWORD, itsp.USERNAME)
        session.delete(found)
