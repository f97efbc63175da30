"""Extension attributes of a connector: merged into the main node of every order exported through it (a name
equal to a standard key replaces that key), so a tenant's custom fields need no code."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr

from integrations.itsperfect.api.common import EDIT, READ, REMOVE, AttributeName, Conn, ConnectorId, named, registered

router = APIRouter(prefix="/connectors/{connection_id}/attributes", tags=["attributes"])


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("value must not contain a NUL character")
    return value


class AttributeValue(BaseModel):
    """Body of PUT: the value, a string as ItsPerfect receives it."""

    model_config = ConfigDict(extra="forbid")
    value: Annotated[StrictStr, Field(max_length=1000), AfterValidator(_no_nul)]


def _missing(conn, connector: str, name: str) -> HTTPException:
    names = [row[0] for row in conn.execute("SELECT name FROM itsperfect.extension_attributes WHERE connector = %s "
                                            "ORDER BY name", (connector,))]
    return HTTPException(404, f"connector {connector!r} has no attribute {name!r}; its attributes: {named(names)}")


@router.get("", dependencies=READ)
def list_attributes(connection_id: ConnectorId, conn: Conn) -> dict:
    registered(conn, connection_id, 404)
    rows = conn.execute("SELECT name, value FROM itsperfect.extension_attributes WHERE connector = %s ORDER BY name",
                        (connection_id,))
    return {"attributes": [{"name": name, "value": value} for name, value in rows]}


@router.get("/{name}", dependencies=READ)
def get_attribute(connection_id: ConnectorId, name: AttributeName, conn: Conn) -> dict:
    registered(conn, connection_id, 404)
    row = conn.execute("SELECT value FROM itsperfect.extension_attributes WHERE connector = %s AND name = %s",
                       (connection_id, name)).fetchone()
    if row is None:
        raise _missing(conn, connection_id, name)
    return {"name": name, "value": row[0]}


@router.put("/{name}", dependencies=EDIT)
def put_attribute(connection_id: ConnectorId, name: AttributeName, body: AttributeValue, conn: Conn) -> dict:
    registered(conn, connection_id, 404)
    conn.execute("INSERT INTO itsperfect.extension_attributes (connector, name, value) VALUES (%s, %s, %s) "
                 "ON CONFLICT (connector, name) DO UPDATE SET value = EXCLUDED.value",
                 (connection_id, name, body.value))
    return {"name": name, "value": body.value}


@router.delete("/{name}", dependencies=REMOVE, status_code=204)
def delete_attribute(connection_id: ConnectorId, name: AttributeName, conn: Conn) -> Response:
    registered(conn, connection_id, 404)
    if conn.execute("DELETE FROM itsperfect.extension_attributes WHERE connector = %s AND name = %s",
                    (connection_id, name)).rowcount == 0:
        raise _missing(conn, connection_id, name)
    return Response(status_code=204)
