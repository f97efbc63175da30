"""What every extractor route shares: the error answer, TrustFile's bearer check, a database
connection per request, and the contract's date and timestamp formats.

Dates are `yyyy-mm-dd`, timestamps ISO 8601 in UTC (`2015-07-06T22:26:28+00:00`). Bad input gets
400 with `{"message": ...}`, unknown connections 404, a wrong or missing token 401
`{"message": "You are not authorized"}`; never a stack trace.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
from typing import Annotated

import psycopg
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse

from etl import db
from integrations.trustfile.api import consent_state

log = logging.getLogger(__name__)

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


class ApiError(Exception):
    """Answered as `{"message": message}` with `status`."""

    def __init__(self, status: int, message: str):
        self.status, self.message = status, message


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


def _connection(request: Request):
    # Autocommit: each store write commits at the end of its own transaction block, before the response
    # leaves. Otherwise a read first opens a transaction, the block becomes a savepoint, and the commit
    # waits for this teardown, which FastAPI runs after the response is sent (the caller could read stale).
    with db.connect(request.app.state.database, autocommit=True) as conn:
        yield conn


Conn = Annotated[psycopg.Connection, Depends(_connection)]


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def authorized(request: Request) -> None:
    """TrustFile's bearer token (app.state.token), compared in constant time."""
    expected = request.app.state.token
    header = request.headers.get("authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else ""
    # compare_digest on equal-length digests: no early exit, no length leak.
    if not expected or not hmac.compare_digest(_digest(given), _digest(expected)):
        raise ApiError(401, "You are not authorized")


AUTHORIZED = [Depends(authorized)]


async def _api_error(request: Request, exc: ApiError):
    return JSONResponse({"message": exc.message}, status_code=exc.status)


async def _bad_input(request: Request, exc: RequestValidationError):
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


async def _database_down(request: Request, exc: psycopg.OperationalError):
    log.error("extractor API %s %s: the integrations database is unreachable: %s", request.method,
              request.url.path, exc)
    return JSONResponse({"message": "the extractor's database is unavailable; try again later"}, status_code=503)


async def _unexpected(request: Request, exc: Exception):
    log.exception("extractor API %s %s failed", request.method, request.url.path)
    return JSONResponse({"message": "internal error; the extractor's log has the details"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _bad_input)
    app.add_exception_handler(psycopg.OperationalError, _database_down)
    app.add_exception_handler(Exception, _unexpected)
