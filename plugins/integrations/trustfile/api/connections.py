"""Routes for TrustFile's connections and the connector switch (contract: /connections, /connector)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, StrictBool, WithJsonSchema, field_validator

from integrations.trustfile import connections as store
from integrations.trustfile.api.common import (
    AUTHORIZED,
    ApiError,
    Conn,
    ConnectionId,
    DateText,
    Problem,
    parse_date,
    timestamp,
)

router = APIRouter(dependencies=AUTHORIZED)
EnabledFilter = Annotated[str | None, WithJsonSchema({"type": "string", "enum": ["true", "false"]})]


class _WithStartDate(BaseModel):
    """A connection's body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")
    startDate: DateText | None = None  # noqa: N815 - the contract's field names

    @field_validator("startDate")
    @classmethod
    def _start(cls, value):
        parse_date(value, "startDate")
        return value


class NewConnection(_WithStartDate):
    """Body of POST /connections."""

    connectionId: ConnectionId  # noqa: N815 - the contract's field names


class ConnectionChange(_WithStartDate):
    """Body of PUT /connections/{id}: what is given changes; a connectionId must be the path's."""

    connectionId: ConnectionId | None = None  # noqa: N815 - the contract's field names
    enabled: StrictBool | None = None   # strict: `0` or "no" is not a boolean in the contract


class ConnectorChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: StrictBool


def describe(connection: store.Connection) -> dict:
    return {
        "enabled": connection.enabled,
        "authorized": connection.authorized,
        "hostSystemIdentifier": (f"{connection.host_system} {connection.host_identifier}"
                                 if connection.host_identifier else None),
        "startDate": connection.start_date.isoformat() if connection.start_date else None,
        "statusChangedAt": timestamp(connection.status_changed_at),
        "lastSyncAt": timestamp(connection.last_sync_at),
        "nextSyncAt": timestamp(connection.next_sync_at),
        "statusMessage": connection.status_message,
    }


def existing(conn, connection_id: str) -> store.Connection:
    found = store.get(conn, connection_id)
    if found is None:
        raise ApiError(404, f"Unknown connection {connection_id}")
    return found


@router.get("/connections")
def list_connections(conn: Conn, enabled: EnabledFilter = None):
    flag = {"true": True, "false": False, None: None}.get(enabled, "bad")
    if flag == "bad":
        raise ApiError(400, "enabled must be true or false")
    return {"connections": store.list_ids(conn, flag)}


@router.post("/connections", responses={500: {"model": Problem, "description": "User already exists: the "
                                                                             "contract's answer for a duplicate"}})
def create_connection(body: NewConnection, conn: Conn):
    created = store.create(conn, body.connectionId, parse_date(body.startDate, "startDate"))
    if created is None:
        raise ApiError(500, "User already exists")   # the contract's answer for a duplicate
    return {"connectionId": created.connection_id,
            "startDate": created.start_date.isoformat() if created.start_date else None,
            "enabled": created.enabled}


@router.head("/connections/{connection_id}")
def connection_exists(connection_id: ConnectionId, conn: Conn):
    existing(conn, connection_id)
    return Response(status_code=200)


@router.get("/connections/{connection_id}")
def get_connection(connection_id: ConnectionId, conn: Conn):
    return describe(existing(conn, connection_id))


@router.put("/connections/{connection_id}")
def change_connection(connection_id: ConnectionId, body: ConnectionChange, conn: Conn):
    if body.connectionId is not None and body.connectionId != connection_id:
        raise ApiError(400, "connectionId in the body differs from the one in the path")
    changed = store.update(conn, connection_id, enabled=body.enabled,
                           start_date=parse_date(body.startDate, "startDate"),
                           start_date_given="startDate" in body.model_fields_set)
    if changed is None:
        raise ApiError(404, f"Unknown connection {connection_id}")
    return describe(changed)


@router.delete("/connections/{connection_id}")
def delete_connection(connection_id: ConnectionId, conn: Conn):
    if not store.delete(conn, connection_id):
        raise ApiError(404, f"Unknown connection {connection_id}")
    return {"success": True}


@router.get("/connections/{connection_id}/activities")
def connection_activities(connection_id: ConnectionId, conn: Conn, days: Annotated[int, Query(ge=1, le=365)] = 14,
                          limit: Annotated[int, Query(ge=1, le=1000)] = 100):
    existing(conn, connection_id)
    return {"activities": [{"timestamp": timestamp(at), "action": action}
                           for at, action in store.activities(conn, connection_id, days, limit)]}


@router.get("/connector")
def get_connector(conn: Conn):
    enabled, users = store.connector(conn)
    return {"enabled": enabled, "userCount": users}


@router.put("/connector")
def put_connector(body: ConnectorChange, conn: Conn):
    store.set_connector(conn, body.enabled)
    enabled, users = store.connector(conn)
    return {"enabled": enabled, "userCount": users}
