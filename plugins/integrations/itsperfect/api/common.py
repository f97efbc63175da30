"""What every admin route shares: Airflow's auth manager in front, the id rules of migration 0011, a database
connection per request, a body limit, and the error answers, always `{"detail": "<reason>"}`.

Bad input is 422 and names the field and the value; a value our database refuses is 422 too; a change that
lost a race with another one (a foreign key or a uniqueness rule) 409; the database unreachable or too busy
503. Never a stack trace, never SQL.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from typing import Annotated

import psycopg
from airflow.api_fastapi.core_api.security import requires_access_connection
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, WithJsonSchema
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from etl import db

log = logging.getLogger(__name__)

STATEMENT_TIMEOUT = "10s"   # a person waits for the answer: a lock held by a pipeline must not hang the request
MAX_BODY_BYTES = 16 * 1024  # the largest body is an attribute value (1000 characters)
NAMED = 20                  # valid values an error names, at most


def allowed(method: str) -> list:
    """A connector is an Airflow connection: the caller needs the auth manager's right to `method` connections.
    A path parameter named `connection_id` lets the auth manager judge that one connection."""
    return [Depends(requires_access_connection(method))]


READ, EDIT, CREATE, REMOVE = allowed("GET"), allowed("PUT"), allowed("POST"), allowed("DELETE")


def _rule(pattern: str, rule: str):
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):   # fullmatch: `$` would let a trailing newline through
            raise ValueError(rule)
        return value

    return Annotated[str, AfterValidator(check),
                     WithJsonSchema({"type": "string", "pattern": f"^{pattern}$", "description": rule})]


# The CHECKs of migration 0011, checked before the database sees the value.
ConnectorId = _rule(r"[A-Za-z0-9_.-]{1,200}", "a connector is an Airflow connection id: 1 to 200 letters, digits, "
                                              "'.', '_' or '-'")
RecordId = _rule(r"[A-Za-z0-9_.-]{1,64}", "an id is 1 to 64 letters, digits, '.', '_' or '-'")
AttributeName = _rule(r"[A-Za-z][A-Za-z0-9_]{0,63}", "an attribute name is a letter followed by up to 63 letters, "
                                                     "digits or '_'")


def named(values: Iterable[object]) -> str:
    """Valid values for an error message, the first NAMED of them."""
    values = [str(value) for value in values]
    if not values:
        return "none"
    more = f" and {len(values) - NAMED} more" if len(values) > NAMED else ""
    return ", ".join(values[:NAMED]) + more


def registered(conn: psycopg.Connection, connector: str, status: int) -> None:
    """`status` (404 for a path, 422 for a body or a filter) unless `connector` is registered."""
    ids = [row[0] for row in conn.execute("SELECT connector FROM itsperfect.connectors ORDER BY connector")]
    if connector not in ids:
        raise HTTPException(status, f"connector {connector!r} is not registered; registered connectors: "
                                    f"{named(ids)} (PUT /connectors/<connection id> registers one)")


def _connection(request: Request) -> Iterator[psycopg.Connection]:
    """Autocommit: a route that changes rows does it in its own `conn.transaction()`, committed before it answers."""
    with db.connect(request.app.state.database, autocommit=True) as conn:
        conn.execute("SELECT set_config('statement_timeout', %s, false)", (STATEMENT_TIMEOUT,))
        yield conn


Conn = Annotated[psycopg.Connection, Depends(_connection)]


class BodyLimit:
    """Pure ASGI: FastAPI reads a body before any dependency runs, Airflow's auth included, so an anonymous caller
    could make us hold any body; refused here by its Content-Length, or once it streams past `max_body`."""

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY_BYTES):
        self.app, self.max_body = app, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "0")
        if not (declared.isascii() and declared.isdigit()) or int(declared) > self.max_body:
            await JSONResponse({"detail": self.too_large}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise HTTPException(413, self.too_large)   # FastAPI's body reader re-raises it as is
            return message

        await self.app(scope, counted, send)

    @property
    def too_large(self) -> str:
        return f"the body must be a number of bytes up to {self.max_body}"


async def _bad_input(request: Request, exc: RequestValidationError) -> JSONResponse:
    reasons = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            reasons.append("the body is not valid JSON")
            continue
        where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path"))
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        given = "" if error.get("type") == "missing" else f" (got {error.get('input')!r:.80})"
        reasons.append(f"{where or 'body'}: {message}{given}")
    return JSONResponse({"detail": "; ".join(reasons) or "invalid request"}, status_code=422)


async def _database_error(request: Request, exc: psycopg.Error) -> JSONResponse:
    where, state = f"{request.method} {request.url.path}", exc.sqlstate or ""
    diag = exc.diag
    if isinstance(exc, (psycopg.errors.CheckViolation, psycopg.DataError)) or state.startswith("54"):
        log.warning("ItsPerfect admin API %s: the database refused a value: %s", where, exc)
        rule = f" (rule {diag.constraint_name})" if diag.constraint_name else ""
        return JSONResponse({"detail": f"a value is one the database cannot store{rule}: too long, a NUL character "
                                       "or outside the column's rule"}, status_code=422)
    if isinstance(exc, psycopg.IntegrityError):
        log.warning("ItsPerfect admin API %s: %s", where, exc)
        return JSONResponse({"detail": f"the change conflicts with rule {diag.constraint_name} of "
                                       f"{diag.schema_name}.{diag.table_name}: another change came first; "
                                       "read the current state and try again"}, status_code=409)
    if isinstance(exc, psycopg.OperationalError):
        log.error("ItsPerfect admin API %s: the integrations database is unavailable or busy: %s", where, exc)
        return JSONResponse({"detail": "the integrations database is unavailable or busy; try again in a minute"},
                            status_code=503, headers={"Retry-After": "60"})
    log.exception("ItsPerfect admin API %s failed", where)
    return JSONResponse({"detail": "internal error; the API server's log has the details"}, status_code=500)


def install(app: FastAPI) -> None:
    app.add_middleware(BodyLimit)
    app.add_exception_handler(RequestValidationError, _bad_input)
    app.add_exception_handler(psycopg.Error, _database_error)
