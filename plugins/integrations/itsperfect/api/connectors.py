"""Connectors: which Airflow connections of type `itsperfect` are registered, their switches and warehouses.

The switches live in the connection's form (the DAGs read them at run time), the warehouses come from the
tenant (the stock DAG refreshes them every hour): both are read-only here. Registering checks the connection
exists and is an ItsPerfect one, then asks the tenant for its warehouses at once (one request from its
budget), so that locations and accounts can be mapped right away; a tenant that does not answer leaves the
connector registered, with the reason in `warehouses_error`. The connection itself is created and edited
in Airflow (Admin > Connections).
"""
from __future__ import annotations

import datetime as dt

import psycopg
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException
from fastapi import APIRouter, HTTPException, Request, Response

from etl.request_budget import BudgetSpent
from hooks.itsperfect import ItsPerfectHook
from hooks.vendor_http import VendorApiError
from integrations.itsperfect import connectors, stock
from integrations.itsperfect.api.common import EDIT, READ, REMOVE, Conn, ConnectorId, named, registered

router = APIRouter(prefix="/connectors", tags=["connectors"])


def warehouses(conn: psycopg.Connection, connector: str | None = None) -> dict[str, list[dict]]:
    """Warehouses by connector, of one connector or of all."""
    rows = conn.execute("SELECT connector, warehouse_id, name, active, refreshed_at FROM itsperfect.warehouses "
                        "WHERE %(connector)s::text IS NULL OR connector = %(connector)s "
                        "ORDER BY connector, warehouse_id", {"connector": connector})
    found: dict[str, list[dict]] = {}
    for connector_id, warehouse_id, name, active, refreshed_at in rows:
        found.setdefault(connector_id, []).append({"warehouse_id": warehouse_id, "name": name, "active": active,
                                                   "refreshed_at": refreshed_at.isoformat()})
    return found


def describe(connector: str, registered_at: dt.datetime, its_warehouses: list[dict]) -> dict:
    """A registered connector; a connection gone or of another type is an `error`, its switches unknown (None)."""
    try:
        switches, error = connectors.connector(connector), None
    except connectors.ConnectorError as exc:
        switches, error = None, str(exc)
    return {"connector": connector, "registered_at": registered_at.isoformat(),
            **{name: getattr(switches, name) if switches else None for name in connectors.SWITCHES},
            "error": error, "warehouses": its_warehouses}


def _one(conn: psycopg.Connection, connector: str) -> dict:
    registered(conn, connector, 404)
    [registered_at] = conn.execute("SELECT registered_at FROM itsperfect.connectors WHERE connector = %s",
                                   (connector,)).fetchone()
    return describe(connector, registered_at, warehouses(conn, connector).get(connector, []))


@router.get("", dependencies=READ)
def list_connectors(conn: Conn) -> dict:
    rows = conn.execute("SELECT connector, registered_at FROM itsperfect.connectors ORDER BY connector").fetchall()
    by_connector = warehouses(conn)
    return {"connectors": [describe(connector, at, by_connector.get(connector, [])) for connector, at in rows]}


@router.get("/{connection_id}", dependencies=READ)
def get_connector(connection_id: ConnectorId, conn: Conn) -> dict:
    return _one(conn, connection_id)


@router.put("/{connection_id}", dependencies=EDIT)
def register_connector(connection_id: ConnectorId, conn: Conn, request: Request) -> dict:
    """Registers an existing Airflow connection of type `itsperfect` and refreshes its warehouses; registering it
    again changes nothing but the warehouses."""
    try:
        connection = BaseHook.get_connection(connection_id)
    except AirflowNotFoundException:
        raise HTTPException(404, f"Airflow has no connection {connection_id!r}: create it (Admin > Connections, "
                                 f"type {connectors.CONN_TYPE!r}), then register it") from None
    if connection.conn_type != connectors.CONN_TYPE:
        raise HTTPException(422, f"Airflow connection {connection_id!r} is of type {connection.conn_type!r}; "
                                 f"a connector is a connection of type {connectors.CONN_TYPE!r}")
    conn.execute("INSERT INTO itsperfect.connectors (connector) VALUES (%s) ON CONFLICT (connector) DO NOTHING",
                 (connection_id,))
    problem = None
    hook = ItsPerfectHook(connection_id, conninfo=request.app.state.database)
    hook.max_attempts = 1             # a person is waiting for the answer: no retries with backoff
    try:
        stock.refresh_warehouses(conn, hook, connection_id)
    except (VendorApiError, BudgetSpent, ValueError) as exc:   # ValueError: a field of the connection is missing
        problem = f"the warehouses could not be read now ({exc}); the stock DAG reads them every hour"
    return {**_one(conn, connection_id), "warehouses_error": problem}


@router.delete("/{connection_id}", dependencies=REMOVE, status_code=204)
def unregister_connector(connection_id: ConnectorId, conn: Conn) -> Response:
    """Unregisters a connector nothing names any more; its warehouses and attributes go with it. The Airflow
    connection stays."""
    with conn.transaction():
        registered(conn, connection_id, 404)
        accounts = _ids(conn, "SELECT account_id FROM itsperfect.account_connectors WHERE connector = %s "
                              "ORDER BY account_id", connection_id)
        locations = _ids(conn, "SELECT location_id FROM itsperfect.connector_locations WHERE connector = %s "
                               "ORDER BY location_id", connection_id)
        if accounts or locations:
            raise HTTPException(409, f"connector {connection_id!r} is still mapped: accounts {named(accounts)}; "
                                     f"locations {named(locations)}. DELETE /accounts/<id>/connector and "
                                     "/locations/<id>/connector first")
        [exports] = conn.execute("SELECT count(*) FROM itsperfect.order_exports WHERE connector = %s",
                                 (connection_id,)).fetchone()
        if exports:
            raise HTTPException(409, f"connector {connection_id!r} has {exports} order export(s) in the outbox, "
                                     "the record of what was sent to it: it stays registered (switch it off in "
                                     "its Airflow connection instead)")
        conn.execute("DELETE FROM itsperfect.connectors WHERE connector = %s", (connection_id,))
    return Response(status_code=204)


def _ids(conn: psycopg.Connection, query: str, connector: str) -> list[str]:
    return [row[0] for row in conn.execute(query, (connector,))]


@router.get("/{connection_id}/warehouses", dependencies=READ)
def list_warehouses(connection_id: ConnectorId, conn: Conn) -> dict:
    registered(conn, connection_id, 404)
    return {"warehouses": warehouses(conn, connection_id).get(connection_id, [])}
