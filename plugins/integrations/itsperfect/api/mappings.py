"""Which connector and warehouse an account's orders go to, and which warehouse's stock a location holds: one
mapping per account and per location (their primary keys), so a PUT replaces it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import psycopg
from fastapi import APIRouter, HTTPException, Response
from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from integrations.itsperfect.api.common import EDIT, READ, REMOVE, Conn, ConnectorId, RecordId, named, registered

router = APIRouter(tags=["mappings"])


@dataclass(frozen=True)
class Owner:
    """What is mapped: its noun, its table in `commerce`, its mapping table in `itsperfect`, its key column."""

    noun: str
    table: str
    mapping: str
    key: str

    def sql(self, template: str) -> sql.Composed:
        return sql.SQL(template).format(ours=sql.Identifier("commerce", self.table), key=sql.Identifier(self.key),
                                        mapping=sql.Identifier("itsperfect", self.mapping))


ACCOUNTS = Owner("account", "accounts", "account_connectors", "account_id")
LOCATIONS = Owner("location", "locations", "connector_locations", "location_id")


class Mapping(BaseModel):
    """Body of PUT: a registered connector and one of its active warehouses."""

    model_config = ConfigDict(extra="forbid")
    connector: ConnectorId
    warehouse_id: Annotated[StrictInt, Field(ge=1, le=2**31 - 1)]


def _exists(conn: psycopg.Connection, owner: Owner, owner_id: str) -> None:
    """404 for an unknown account or location; KEY SHARE keeps it from being deleted while it is mapped."""
    if conn.execute(owner.sql("SELECT 1 FROM {ours} WHERE {key} = %s FOR KEY SHARE"), (owner_id,)).fetchone() is None:
        raise HTTPException(404, f"unknown {owner.noun} {owner_id!r}: commerce.{owner.table} has no such row")


def _usable(conn: psycopg.Connection, connector: str, warehouse_id: int) -> None:
    """422 unless the warehouse is one of the connector's and active; SHARE keeps it so until the commit."""
    rows = conn.execute("SELECT warehouse_id, name, active FROM itsperfect.warehouses WHERE connector = %s "
                        "ORDER BY warehouse_id FOR SHARE", (connector,)).fetchall()
    active = named(f"{number} ({name})" for number, name, is_active in rows if is_active)
    found = next((row for row in rows if row[0] == warehouse_id), None)
    if found is None:
        hint = "" if rows else " (none yet: the stock DAG lists them from the tenant)"
        raise HTTPException(422, f"warehouse {warehouse_id} is not a warehouse of connector {connector!r}; its active "
                                 f"warehouses: {active}{hint}")
    if not found[2]:
        raise HTTPException(422, f"warehouse {warehouse_id} ({found[1]}) of connector {connector!r} is inactive in "
                                 f"ItsPerfect; its active warehouses: {active}")


def read(conn: psycopg.Connection, owner: Owner, owner_id: str) -> dict:
    _exists(conn, owner, owner_id)
    row = conn.execute(owner.sql("SELECT m.connector, m.warehouse_id, w.name, w.active FROM {mapping} AS m "
                                 "JOIN itsperfect.warehouses AS w USING (connector, warehouse_id) WHERE m.{key} = %s"),
                       (owner_id,)).fetchone()
    if row is None:
        raise HTTPException(404, f"{owner.noun} {owner_id!r} has no connector: PUT /{owner.table}/{owner_id}/connector "
                                 "maps it")
    connector, warehouse_id, name, active = row
    return {owner.key: owner_id, "connector": connector, "warehouse_id": warehouse_id, "warehouse_name": name,
            "warehouse_active": active}


def write(conn: psycopg.Connection, owner: Owner, owner_id: str, body: Mapping) -> dict:
    with conn.transaction():
        _exists(conn, owner, owner_id)
        registered(conn, body.connector, 422)
        _usable(conn, body.connector, body.warehouse_id)
        conn.execute(owner.sql("INSERT INTO {mapping} ({key}, connector, warehouse_id) VALUES (%s, %s, %s) "
                               "ON CONFLICT ({key}) DO UPDATE SET connector = EXCLUDED.connector, "
                               "warehouse_id = EXCLUDED.warehouse_id"), (owner_id, body.connector, body.warehouse_id))
    return read(conn, owner, owner_id)


def remove(conn: psycopg.Connection, owner: Owner, owner_id: str) -> Response:
    _exists(conn, owner, owner_id)
    if conn.execute(owner.sql("DELETE FROM {mapping} WHERE {key} = %s"), (owner_id,)).rowcount == 0:
        raise HTTPException(404, f"{owner.noun} {owner_id!r} has no connector")
    return Response(status_code=204)


@router.get("/accounts/{account_id}/connector", dependencies=READ)
def account_connector(account_id: RecordId, conn: Conn) -> dict:
    return read(conn, ACCOUNTS, account_id)


@router.put("/accounts/{account_id}/connector", dependencies=EDIT)
def map_account(account_id: RecordId, body: Mapping, conn: Conn) -> dict:
    return write(conn, ACCOUNTS, account_id, body)


@router.delete("/accounts/{account_id}/connector", dependencies=REMOVE, status_code=204)
def unmap_account(account_id: RecordId, conn: Conn) -> Response:
    return remove(conn, ACCOUNTS, account_id)


@router.get("/locations/{location_id}/connector", dependencies=READ)
def location_connector(location_id: RecordId, conn: Conn) -> dict:
    return read(conn, LOCATIONS, location_id)


@router.put("/locations/{location_id}/connector", dependencies=EDIT)
def map_location(location_id: RecordId, body: Mapping, conn: Conn) -> dict:
    return write(conn, LOCATIONS, location_id, body)


@router.delete("/locations/{location_id}/connector", dependencies=REMOVE, status_code=204)
def unmap_location(location_id: RecordId, conn: Conn) -> Response:
    return remove(conn, LOCATIONS, location_id)
