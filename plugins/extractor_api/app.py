"""Routes of the connector-microservice contract (vendors.md §5.4) that TrustFile calls on us.

Dates are `yyyy-mm-dd`, timestamps ISO 8601 in UTC (`2015-07-06T22:26:28+00:00`). Bad input gets
400 with `{"message": ...}`, unknown connections 404, a wrong or missing token 401
`{"message": "You are not authorized"}`; never a stack trace.
"""
from __future__ import annotations

import datetime as dt
import hmac
import logging
import os
import re
from collections.abc import Callable
from typing import Annotated

import psycopg
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, field_validator

from etl import db
from etl.trustfile import connections as store

log = logging.getLogger(__name__)

TOKEN_ENV = "AVALARA_TO_EXTRACTOR_TOKEN"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        self.status, self.message = status, message


def _date(value: str | None, field: str) -> dt.date | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _DATE.match(value):
        raise ValueError(f"{field} must be a date as yyyy-mm-dd")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{field} {value!r} is not a calendar date") from None


def timestamp(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="seconds") if moment else None


class NewConnection(BaseModel):
    """Body of POST /connections; PUT /connections/{id} adds `enabled`. Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")
    connectionId: str | None = None  # noqa: N815 - the contract's field names
    startDate: str | None = None  # noqa: N815

    @field_validator("startDate")
    @classmethod
    def _start(cls, value):
        _date(value, "startDate")
        return value


class ConnectionChange(NewConnection):
    enabled: bool | None = None


class ConnectorChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool


def _describe(connection: store.Connection) -> dict:
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


def create_app(conninfo: str | None = None, token: str | None = None,
               health_checks: dict[str, Callable[[], tuple[str, str]]] | None = None) -> FastAPI:
    """The extractor app. `conninfo`: our database (default: INTEGRATIONS_DATABASE_URL, else the
    integrations_db connection); `token`: TrustFile's bearer token (default: AVALARA_TO_EXTRACTOR_TOKEN)."""
    app = FastAPI(title="TrustFile extractor", openapi_url="/openapi.json", docs_url=None, redoc_url=None)
    database = conninfo or os.environ.get("INTEGRATIONS_DATABASE_URL")
    app.state.database = database
    app.state.token = (token or os.environ.get(TOKEN_ENV) or "").strip()
    auth = [Depends(_authorized)]

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return JSONResponse({"message": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def bad_input(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
        reason = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
        if first.get("type") == "extra_forbidden":
            reason = f"unknown field {where!r}"
        elif first.get("type") == "json_invalid":
            reason = "the body is not valid JSON"
        elif where and first.get("type") != "value_error":   # our own messages already name the field
            reason = f"{where}: {reason}"
        return JSONResponse({"message": reason}, status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("extractor API %s %s failed", request.method, request.url.path)
        return JSONResponse({"message": "internal error; the extractor's log has the details"}, status_code=500)

    @app.get("/health")
    def health():
        statuses = []
        for kind, check in {"connector": lambda: _database_status(database), **(health_checks or {})}.items():
            try:
                status, description = check()
            except Exception as exc:  # a health check reports, it does not fail
                status, description = "FAIL", type(exc).__name__
            statuses.append({"type": kind, "status": status, "description": description})
        return {"statuses": statuses}

    @app.get("/connections", dependencies=auth)
    def list_connections(conn: Conn, enabled: str | None = None):
        flag = {"true": True, "false": False, None: None}.get(enabled, "bad")
        if flag == "bad":
            raise ApiError(400, "enabled must be true or false")
        return {"connections": store.list_ids(conn, flag)}

    @app.post("/connections", dependencies=auth)
    def create_connection(body: NewConnection, conn: Conn):
        if not body.connectionId or not body.connectionId.strip():
            raise ApiError(400, "Missing connectionId")
        created = store.create(conn, body.connectionId.strip(), _date(body.startDate, "startDate"))
        if created is None:
            raise ApiError(500, "User already exists")   # the contract's answer for a duplicate
        return {"connectionId": created.connection_id,
                "startDate": created.start_date.isoformat() if created.start_date else None,
                "enabled": created.enabled}

    def existing(conn, connection_id: str) -> store.Connection:
        found = store.get(conn, connection_id)
        if found is None:
            raise ApiError(404, f"Unknown connection {connection_id}")
        return found

    @app.head("/connections/{connection_id}", dependencies=auth)
    def connection_exists(connection_id: str, conn: Conn):
        existing(conn, connection_id)
        return Response(status_code=200)

    @app.get("/connections/{connection_id}", dependencies=auth)
    def get_connection(connection_id: str, conn: Conn):
        return _describe(existing(conn, connection_id))

    @app.put("/connections/{connection_id}", dependencies=auth)
    def change_connection(connection_id: str, body: ConnectionChange, conn: Conn):
        if body.connectionId is not None and body.connectionId != connection_id:
            raise ApiError(400, "connectionId in the body differs from the one in the path")
        changed = store.update(conn, connection_id, enabled=body.enabled,
                               start_date=_date(body.startDate, "startDate"),
                               start_date_given="startDate" in body.model_fields_set)
        if changed is None:
            raise ApiError(404, f"Unknown connection {connection_id}")
        return _describe(changed)

    @app.delete("/connections/{connection_id}", dependencies=auth)
    def delete_connection(connection_id: str, conn: Conn):
        if not store.delete(conn, connection_id):
            raise ApiError(404, f"Unknown connection {connection_id}")
        return {"success": True}

    @app.get("/connections/{connection_id}/activities", dependencies=auth)
    def connection_activities(connection_id: str, conn: Conn, days: Annotated[int, Query(ge=1, le=365)] = 14,
                              limit: Annotated[int, Query(ge=1, le=1000)] = 100):
        existing(conn, connection_id)
        return {"activities": [{"timestamp": timestamp(at), "action": action}
                               for at, action in store.activities(conn, connection_id, days, limit)]}

    @app.get("/connector", dependencies=auth)
    def get_connector(conn: Conn):
        enabled, users = store.connector(conn)
        return {"enabled": enabled, "userCount": users}

    @app.put("/connector", dependencies=auth)
    def put_connector(body: ConnectorChange, conn: Conn):
        store.set_connector(conn, body.enabled)
        enabled, users = store.connector(conn)
        return {"enabled": enabled, "userCount": users}

    return app


def _connection(request: Request):
    with db.connect(request.app.state.database) as conn:
        yield conn


def _authorized(request: Request) -> None:
    expected = request.app.state.token
    header = request.headers.get("authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else ""
    # compare_digest on equal-length digests: no early exit, no length leak.
    if not expected or not hmac.compare_digest(_digest(given), _digest(expected)):
        raise ApiError(401, "You are not authorized")


Conn = Annotated[psycopg.Connection, Depends(_connection)]


def _digest(value: str) -> bytes:
    import hashlib

    return hashlib.sha256(value.encode()).digest()


def _database_status(conninfo: str | None) -> tuple[str, str]:
    with db.connect(conninfo) as conn:
        conn.execute("SELECT 1 FROM trustfile.connector")
    return "OK", "NOMINAL"
