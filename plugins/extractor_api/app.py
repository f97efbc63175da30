"""Routes of the connector-microservice contract (vendors.md §5.4) that TrustFile calls on us.

Dates are `yyyy-mm-dd`, timestamps ISO 8601 in UTC (`2015-07-06T22:26:28+00:00`). Bad input gets
400 with `{"message": ...}`, unknown connections 404, a wrong or missing token 401
`{"message": "You are not authorized"}`; never a stack trace.

Two routes take no bearer token: `/health`, and the QuickBooks consent callback, which Intuit's
browser redirect reaches without one and which trusts only its sealed `state` (extractor_api.consent).
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
from airflow.sdk.exceptions import AirflowNotFoundException
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, field_validator

from etl import db
from etl.encryption import EncryptionError
from etl.trustfile import connections as store
from etl.trustfile import reports
from extractor_api import consent, health
from hooks.qbo import QboHook
from hooks.trustfile import TrustFileHook
from hooks.vendor_http import VendorApiError

log = logging.getLogger(__name__)

TOKEN_ENV = "AVALARA_TO_EXTRACTOR_TOKEN"
PUBLIC_URL_ENV = "EXTRACTOR_PUBLIC_URL"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_OAUTH_ERROR = re.compile(r"^[a-z_]{1,40}$")
_REALM = re.compile(r"^[0-9A-Za-z]{1,40}$")
NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


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
               health_checks: dict[str, health.Check] | None = None, *, public_url: str | None = None,
               qbo_hook_factory: Callable[..., QboHook] = QboHook,
               trustfile_hook_factory: Callable[[], TrustFileHook] = TrustFileHook) -> FastAPI:
    """The extractor app. `conninfo`: our database (default: INTEGRATIONS_DATABASE_URL, else the
    integrations_db connection); `token`: TrustFile's bearer token (default: AVALARA_TO_EXTRACTOR_TOKEN);
    `public_url`: where browsers reach this app (default: EXTRACTOR_PUBLIC_URL), for the consent
    callback; the hook factories build the QuickBooks OAuth client (`qbo_default`) and the TrustFile
    client; `health_checks` replace or add /health checks by type."""
    app = FastAPI(title="TrustFile extractor", openapi_url="/openapi.json", docs_url=None, redoc_url=None)
    database = conninfo or os.environ.get("INTEGRATIONS_DATABASE_URL")
    app.state.database = database
    app.state.token = (token or os.environ.get(TOKEN_ENV) or "").strip()
    consent.mask(app.state.token)   # TrustFile puts it in the redirectUri it gives us (`?id=<token>`)
    public = (public_url or os.environ.get(PUBLIC_URL_ENV) or "").strip().rstrip("/")
    callback_url = public + consent.CALLBACK_PATH if public else None
    checks = health.HealthChecks(
        {"connector": lambda: health.connector(database),
         "hostSystem": lambda: health.host_system(database, qbo_hook_factory),
         "trustfile": lambda: health.trustfile(trustfile_hook_factory), **(health_checks or {})},
        cached={"hostSystem", "trustfile"})
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

    @app.exception_handler(psycopg.OperationalError)
    async def database_down(request: Request, exc: psycopg.OperationalError):
        log.error("extractor API %s %s: the integrations database is unreachable: %s", request.method,
                  request.url.path, exc)
        return JSONResponse({"message": "the extractor's database is unavailable; try again later"}, status_code=503)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("extractor API %s %s failed", request.method, request.url.path)
        return JSONResponse({"message": "internal error; the extractor's log has the details"}, status_code=500)

    @app.get("/health")
    def get_health():
        return {"statuses": checks.statuses()}

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

    @app.get("/connections/{connection_id}/authentication", dependencies=auth)
    def start_consent(connection_id: str, conn: Conn, redirectUri: str | None = None):  # noqa: N803
        """302 to the host system's consent page; Intuit comes back to the callback below."""
        try:
            target = consent.redirect_target(redirectUri)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        connection = existing(conn, connection_id)
        if connection.host_system != "qbo":
            raise ApiError(400, f"connection {connection_id} reads {connection.host_system}, which has no OAuth "
                                "consent: its credentials are set by the integrations team")
        client = qbo_hook_factory()
        try:
            url = client.authorization_url(consent.seal_state(connection_id, target), callback())
        except (ValueError, AirflowNotFoundException) as exc:
            log.error("consent for connection %s: the QuickBooks OAuth client is unusable: %s", connection_id, exc)
            raise ApiError(500, f"the QuickBooks OAuth client (Airflow connection {client.conn_id}) is not "
                                "configured") from None
        except EncryptionError as exc:
            raise ApiError(500, str(exc)) from None
        return RedirectResponse(url, status_code=302, headers=NO_STORE)

    @app.get(consent.CALLBACK_PATH)
    def finish_consent(conn: Conn, state: str | None = None, code: str | None = None,
                       realmId: str | None = None, error: str | None = None):  # noqa: N803
        """Intuit's redirect: check state, exchange the code, store the company, send the browser back."""
        consent.mask(code)
        sealed = consent.open_state(state)
        if sealed is None:
            log.warning("QuickBooks consent callback with a missing, forged or expired state: nothing done")
            raise ApiError(400, "This authorization link is invalid or has expired: start the authorization "
                                "again from TrustFile.")
        connection_id, back = sealed["connection_id"], sealed["redirect_uri"]
        if store.get(conn, connection_id) is None:
            return _redirect(back, error="unknown_connection")
        if error or not code:
            kind = error if error and _OAUTH_ERROR.match(error) else "invalid_request"
            return refused(conn, connection_id, back, kind, "denied" if kind == "access_denied" else f"failed ({kind})")
        if not realmId or not _REALM.match(realmId):
            return refused(conn, connection_id, back, "invalid_request", "failed: Intuit sent no company id")
        client = qbo_hook_factory()
        try:
            grant = client.exchange_code(code, callback())
        except VendorApiError as exc:
            log.warning("consent for connection %s: %s", connection_id, exc)
            if "invalid_grant" in exc.detail:
                return refused(conn, connection_id, back, "invalid_grant",
                               "failed: Intuit refused the code (invalid_grant)")
            return refused(conn, connection_id, back, "server_error",
                           f"failed: the code exchange with Intuit failed ({health.reason(exc)})")
        except (ValueError, AirflowNotFoundException) as exc:
            log.error("consent for connection %s: the QuickBooks OAuth client is unusable: %s", connection_id, exc)
            return refused(conn, connection_id, back, "server_error",
                           f"failed: the QuickBooks OAuth client ({client.conn_id}) is not configured")
        try:
            store.authorize_qbo(conn, connection_id, realmId, grant.refresh_token)
        except store.ConsentRefused as refusal:
            log.warning("consent for connection %s refused: %s", connection_id, refusal)
            return _redirect(back, error=refusal.kind)
        log.info("connection %s authorized QuickBooks company %s", connection_id, realmId)
        return _redirect(back, success="true")

    def callback() -> str:
        if callback_url is None:
            raise ApiError(500, f"{PUBLIC_URL_ENV} is not set: the consent has no callback address")
        return callback_url

    def refused(conn, connection_id: str, back: str, kind: str, outcome: str) -> RedirectResponse:
        """A consent that ended without tokens: on the connection (activity, status), then back to TrustFile."""
        log.info("connection %s: QuickBooks authorization %s", connection_id, outcome)
        store.record_consent_failure(conn, connection_id, f"QuickBooks authorization {outcome}",
                                     f"QuickBooks authorization {outcome}; authorize again from TrustFile")
        return _redirect(back, error=kind)

    @app.get("/errors", dependencies=auth)
    def get_errors(conn: Conn, date: str | None = None):
        found: dict[str, list[dict]] = {kind.lower(): [] for kind in reports.ERROR_TYPES}
        for entry in reports.errors_on(conn, _day(date)):
            found[entry.type.lower()].append({"type": entry.type, "timestamp": timestamp(entry.at),
                                              "connectionId": entry.connection_id, "message": entry.message})
        return {"errors": found}

    @app.get("/baditems", dependencies=auth)
    def get_bad_items(conn: Conn, date: str | None = None):
        return {"errors": [{"timestamp": timestamp(item.at), "message": item.message,
                            "connectionId": item.connection_id, "badItems": [item.payload],
                            "friendlyMessage": item.friendly_message}
                           for item in reports.bad_items_on(conn, _day(date))]}

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


def _day(value: str | None) -> dt.date:
    if not value:
        raise ApiError(400, "Missing date")
    try:
        return _date(value, "date")
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def _redirect(url: str, **params: str) -> RedirectResponse:
    return RedirectResponse(consent.with_params(url, **params), status_code=302, headers=NO_STORE)


def _connection(request: Request):
    # Autocommit: each store write commits at the end of its own transaction block, before the response
    # leaves. Otherwise a read first opens a transaction, the block becomes a savepoint, and the commit
    # waits for this teardown, which FastAPI runs after the response is sent (the caller could read stale).
    with db.connect(request.app.state.database, autocommit=True) as conn:
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

