"""What every extractor route shares: the guard in front of the app (TrustFile's bearer token and the body
size limit, both before a body is read), the id and date rules, a database connection per request, the
error answers, and the contract's date and timestamp formats.

Dates are `yyyy-mm-dd`, timestamps ISO 8601 in UTC (`2015-07-06T22:26:28+00:00`). Every answer that is not
a success is `{"message": ...}`: bad input 400 (a value our database refuses is bad input too), a wrong or
missing token 401 `{"message": "You are not authorized"}`, unknown connections and paths 404, a body over
the limit 413, our database unreachable, or a transaction it aborted to resolve a conflict (a deadlock, a
serialization failure), 503; never a stack trace.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import psycopg
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import AfterValidator, BaseModel, WithJsonSchema
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from etl import db
from integrations.trustfile.api import consent_state

log = logging.getLogger(__name__)

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
UNAUTHORIZED = "You are not authorized"

# TrustFile's connection ids are UUIDs in its examples, and ours are uuid5s (provisioning); the rule leaves
# room for short names and email-like ids, and keeps out what breaks a URL path segment ('/', '%', '?', '#',
# spaces: an id with '/' could be created but never addressed), what PostgreSQL refuses (NUL, lone
# surrogates) and ids past any btree row limit. Ids also go into TrustFile's own URLs, so never '.' or '..'.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")   # fullmatch: `$` would let a trailing newline through
ID_PATTERN = f"^{_ID.pattern}$"
ID_RULE = ("a connection id is 1 to 100 characters: letters, digits, '.', '_', '@' and '-', "
           "starting with a letter or a digit")


class ApiError(Exception):
    """Answered as `{"message": message}` with `status`."""

    def __init__(self, status: int, message: str):
        self.status, self.message = status, message


class Problem(BaseModel):
    """The body of every answer that is not a success."""

    message: str


def _connection_id(value: str) -> str:
    if not _ID.fullmatch(value):
        raise ValueError(ID_RULE)
    return value


# Checked by our validator (its message is the rule) and shown to OpenAPI readers as the same pattern.
ConnectionId = Annotated[str, AfterValidator(_connection_id),
                         WithJsonSchema({"type": "string", "pattern": ID_PATTERN, "description": ID_RULE})]
# A `yyyy-mm-dd` date, checked by parse_date where it is read (its messages name the field).
DateText = Annotated[str, WithJsonSchema({"type": "string", "format": "date"})]


def parse_date(value: str | None, field: str) -> dt.date | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _DATE.match(value):
        raise ValueError(f"{field} must be a date as yyyy-mm-dd")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{field} {value!r} is not a calendar date") from None


def required_day(value: str | None) -> dt.date:
    """The `date` query parameter of the report routes."""
    if not value:
        raise ApiError(400, "Missing date")
    try:
        return parse_date(value, "date")
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def timestamp(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="seconds") if moment else None


def redirect(url: str, **params: str) -> RedirectResponse:
    return RedirectResponse(consent_state.with_params(url, **params), status_code=302, headers=NO_STORE)


@contextmanager
def database(request: Request) -> Iterator[psycopg.Connection]:
    """A connection to our database for this request. For a route that must check something cheaper first
    (the consent callback, which anyone can call, checks its sealed state); the others take `Conn`."""
    # Autocommit: each store write commits at the end of its own transaction block, before the response
    # leaves. Otherwise a read first opens a transaction, the block becomes a savepoint, and the commit
    # waits for the teardown of `Conn`, which FastAPI runs after the response is sent (the caller could
    # read stale).
    with db.connect(request.app.state.database, autocommit=True) as conn:
        yield conn


def _connection(request: Request):
    with database(request) as conn:
        yield conn


Conn = Annotated[psycopg.Connection, Depends(_connection)]


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def _is_token(expected: str, given: str) -> bool:
    """Constant time: compare_digest on equal-length digests, no early exit, no length leak."""
    return bool(expected) and hmac.compare_digest(_digest(given), _digest(expected))


_BEARER = HTTPBearer(auto_error=False, scheme_name="TrustFile token",
                     description="AVALARA_TO_EXTRACTOR_TOKEN, which TrustFile sends on every call")


def authorized(request: Request,
               credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]) -> None:
    """A router's declaration that its routes take TrustFile's token, there for the OpenAPI document: the
    `_BEARER` dependency is what puts the bearer scheme on each of those routes (`security`, and the 401
    `app._document` adds). The Guard, which `create_app` always installs, has already refused a missing
    or wrong token before the route is reached, so the check below never refuses anything in that app;
    it is kept so that a router mounted without the Guard would still not be open."""
    if not _is_token(request.app.state.token, credentials.credentials if credentials else ""):
        raise ApiError(401, UNAUTHORIZED)


AUTHORIZED = [Depends(authorized)]


class Guard:
    """Pure ASGI, in front of the routes: TrustFile's token and the body limit are checked from the request
    line and headers, before a byte of the body is read (a route dependency would run after FastAPI has
    read and parsed it, so any caller could make us hold any body). `open_paths` take no token (their
    other methods get the router's 405, which reads no body); every other path, unknown ones included,
    needs it. A body, on every path, is refused by its Content-Length, or while it streams in once it
    passes `max_body` bytes."""

    def __init__(self, app: ASGIApp, *, open_paths: frozenset[str], max_body: int):
        self.app, self.open_paths, self.max_body = app, open_paths, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if _route_path(scope) not in self.open_paths:
            scheme, given = get_authorization_scheme_param(headers.get("authorization"))
            if not _is_token(scope["app"].state.token, given if scheme.lower() == "bearer" else ""):
                await JSONResponse({"message": UNAUTHORIZED}, status_code=401)(scope, receive, send)
                return
        declared = headers.get("content-length", "0")
        if not (declared.isascii() and declared.isdigit()):   # isdigit alone takes '²', which int() refuses
            await JSONResponse({"message": "Content-Length must be a number of bytes"}, 400)(scope, receive, send)
            return
        if int(declared) > self.max_body:
            await JSONResponse({"message": self.too_large}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise HTTPException(413, self.too_large)   # FastAPI's kind: its body reader re-raises it as is
            return message

        await self.app(scope, counted, send)

    @property
    def too_large(self) -> str:
        return f"the request body is over the limit of {self.max_body} bytes"


def _route_path(scope: Scope) -> str:
    """The path within this app: where it is mounted (Airflow's /extractor) the scope's path still has
    the mount's prefix, which `root_path` names."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


async def _api_error(request: Request, exc: ApiError):
    return JSONResponse({"message": exc.message}, status_code=exc.status)


async def _http_error(request: Request, exc: StarletteHTTPException):
    """Starlette's own answers (unknown path, wrong method, body too large) in the contract's shape. A 405's
    `Allow` lists every method of the path: FastAPI makes a route per method, and Starlette names only
    those of the first route whose path matched."""
    headers = exc.headers
    if exc.status_code == 405:
        allowed = {method for route in request.app.router.routes if isinstance(route, Route)
                   and route.matches(request.scope)[0] is not Match.NONE for method in route.methods or ()}
        headers = {**(headers or {}), "Allow": ", ".join(sorted(allowed))}
    return JSONResponse({"message": exc.detail}, status_code=exc.status_code, headers=headers)


async def _bad_input(request: Request, exc: RequestValidationError):
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
    reason = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    if first.get("type") == "extra_forbidden":
        reason = f"unknown field {where!r}"
    elif first.get("type") == "missing":
        reason = f"Missing {where}"
    elif first.get("type") == "json_invalid":
        reason = "the body is not valid JSON"
    elif where and first.get("type") != "value_error":   # our own messages already name the field
        reason = f"{where}: {reason}"
    return JSONResponse({"message": reason}, status_code=400)


# SQLSTATE classes of a database we cannot use right now: connection exception, insufficient resources,
# operator intervention (shutdown, cancelled statement). psycopg raises OperationalError for these, and
# also for values past a program limit (class 54: an index row too large), which are the caller's fault.
_OUTAGE = ("08", "53", "57")
# A transaction PostgreSQL aborted to let a conflicting one through (deadlock detected, serialization
# failure): the same request sent again works.
_CONFLICT = ("40P01", "40001")


async def _database_error(request: Request, exc: psycopg.Error):
    state = exc.sqlstate or ""
    if isinstance(exc, psycopg.DataError) or state.startswith("54"):
        log.warning("extractor API %s %s: the database refused a value of the request: %s", request.method,
                    request.url.path, exc)
        return JSONResponse({"message": "the request holds a value the extractor's database cannot take (too "
                                        "long, or a NUL character)"}, status_code=400)
    if state in _CONFLICT:
        log.warning("extractor API %s %s: the database aborted the request's transaction to resolve a conflict "
                    "with another (%s); the caller is told to try again: %s", request.method, request.url.path,
                    state, exc)
        return JSONResponse({"message": "the extractor's database stopped this request to resolve a conflict with "
                                        "another one; try again"}, status_code=503, headers={"Retry-After": "1"})
    if isinstance(exc, psycopg.OperationalError) and (not state or state[:2] in _OUTAGE):
        log.error("extractor API %s %s: the integrations database is unreachable: %s", request.method,
                  request.url.path, exc)
        return JSONResponse({"message": "the extractor's database is unavailable; try again later"},
                            status_code=503)
    return await _unexpected(request, exc)


async def _unexpected(request: Request, exc: Exception):
    log.exception("extractor API %s %s failed", request.method, request.url.path)
    return JSONResponse({"message": "internal error; the extractor's log has the details"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _bad_input)
    app.add_exception_handler(psycopg.Error, _database_error)
    app.add_exception_handler(Exception, _unexpected)
