"""The ServiceTrade webhook receiver, mounted by plugins/airflow_plugin.py at /servicetrade-webhooks in Airflow's API
server:  POST /servicetrade-webhooks/<account>/<secret>

ServiceTrade signs nothing, so the subscription's URL carries a per-account secret (servicetrade_webhook_subscription
makes it; we keep its SHA-256). Order of checks, cheapest and safest first, nothing read from the body before the
caller is known: the allowed networks (403), the account and secret compared in constant time (404 for either,
no database write), the declared and then the actual body size (413), JSON shape (the body kept, 400: ServiceTrade
counts any 2xx-4xx as delivered and will not send it again). A well-formed message is answered 200 only after its
inbox row and events committed (integrations.servicetrade.inbox); if that fails, 503 within ServiceTrade's 5 s, so
it delivers again (3 attempts in all).

Airflow's access log prints each request's path: the secret is replaced by *** in the path it logs.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import os
import time
from collections.abc import AsyncIterator

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from integrations.servicetrade import inbox
from integrations.servicetrade.webhook_config import WebhookConfig, load

log = logging.getLogger(__name__)

DATABASE_ENV = "INTEGRATIONS_DATABASE_URL"
POOL_SIZE = 8                  # connections per API server worker
CONNECT_TIMEOUT_SECONDS = 2
ANSWER_WITHIN_SECONDS = 4.0    # ServiceTrade waits 5 s; a store that has not committed by then answers 503
ACCOUNTS_FRESH_SECONDS = 30.0  # how long the accounts' secret digests are trusted before they are read again
_NO_SECRET = bytes(32)


class Unavailable(RuntimeError):
    """The integrations database does not answer: ServiceTrade must deliver again."""


class ConnectionPool:
    """A few autocommit connections per worker. A connection that saw any error is closed, never reused, so a
    database restart costs the requests of that moment, not every later one."""

    def __init__(self, conninfo: str, size: int = POOL_SIZE):
        self.conninfo = conninfo
        self.idle: list[psycopg.AsyncConnection] = []
        self.slots = asyncio.Semaphore(size)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        async with self.slots:
            conn = self.idle.pop() if self.idle else await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS,
                application_name="servicetrade-webhooks", options="-c statement_timeout=3000")
            try:
                yield conn
            except BaseException:
                await conn.close()
                raise
            self.idle.append(conn)


class Accounts:
    """account -> digests of the secrets its subscriptions carry, read from servicetrade.webhook_accounts.

    A secret that matches nothing read so far is checked once more against digests read after the request came:
    a subscription made or rotated a moment ago (its digest committed before ServiceTrade's first delivery) is
    accepted at once, never answered 404 (which ServiceTrade counts as delivered). Those rereads run one at a time
    and one serves every request that arrived before it started, so a flood of wrong secrets costs one small query
    at a time, never a write."""

    def __init__(self, pool: ConnectionPool):
        self.pool = pool
        self.digests: dict[str, tuple[bytes, ...]] | None = None
        self.read_at = 0.0          # monotonic time the read in self.digests started
        self.lock = asyncio.Lock()

    async def digests_of(self, account: str, *, read_after: float | None = None) -> tuple[bytes, ...]:
        """The account's digests; with `read_after`, from a read started after that monotonic time."""
        age = time.monotonic() - self.read_at
        if self.digests is None or age > ACCOUNTS_FRESH_SECONDS or (
                read_after is not None and self.read_at <= read_after):
            await self._reload(read_after)
        return self.digests.get(account, ())

    async def _reload(self, read_after: float | None) -> None:
        async with self.lock:
            if self.digests is not None and (self.read_at > read_after if read_after is not None
                                             else time.monotonic() - self.read_at <= ACCOUNTS_FRESH_SECONDS):
                return   # another request just read them
            started = time.monotonic()
            try:
                async with self.pool.connection() as conn:
                    rows = await (await conn.execute(inbox.ACCOUNTS)).fetchall()
            except psycopg.Error as exc:
                if self.digests is None or read_after is not None:
                    raise Unavailable(type(exc).__name__) from None
                log.warning("webhook accounts not reread (%s); the ones read before still apply", type(exc).__name__)
                self.read_at = started
                return
            self.digests = {account: tuple(bytes(d) for d in (current, previous) if d is not None)
                            for account, current, previous in rows}
            self.read_at = started


def _matches(secret: str, digests: tuple[bytes, ...]) -> bool:
    """Constant time in the secret: every stored digest compared, an unknown account against a dummy."""
    given = inbox.secret_digest(secret)
    found = False
    for digest in digests or (_NO_SECRET,):
        found |= hmac.compare_digest(given, digest)
    return found and bool(digests)


def _address(request: Request) -> str | None:
    """The caller's IP address, None when the server reports something else (a unix socket, a test client)."""
    try:
        return str(ipaddress.ip_address(request.client.host)) if request.client else None
    except ValueError:
        return None


def _answer(status: int, message: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status)


async def deliver(account: str, secret: str, request: Request) -> JSONResponse:
    app = request.app
    config: WebhookConfig = app.state.config
    remote = _address(request)
    if not config.allows(remote):
        return _answer(403, "address not allowed")
    arrived = time.monotonic()
    try:
        async with asyncio.timeout(ANSWER_WITHIN_SECONDS):
            known = _matches(secret, await app.state.accounts.digests_of(account))
            if not known:
                known = _matches(secret, await app.state.accounts.digests_of(account, read_after=arrived))
    except (Unavailable, TimeoutError) as exc:
        log.warning("the webhook accounts cannot be read (%s): a delivery for %s answered 503, ServiceTrade delivers "
                    "again", type(exc).__name__, account)
        return _answer(503, "temporarily unavailable; deliver again")
    if not known:
        return _answer(404, "not found")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > config.max_body_bytes):
        return _answer(413, f"body larger than {config.max_body_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > config.max_body_bytes:
            return _answer(413, f"body larger than {config.max_body_bytes} bytes")
    body = bytes(body)
    try:
        message = inbox.parse(body, config.rules(account))
    except inbox.Malformed as exc:
        statement = inbox.STORE_MALFORMED
        params = {"account": account, "remote_addr": remote, "body": body, "malformed": str(exc)}
        answer = _answer(400, f"malformed notification: {exc}")
    else:
        statement = inbox.STORE
        params = inbox.store_params(account, remote, body, message)
        answer = None
    try:
        async with asyncio.timeout(ANSWER_WITHIN_SECONDS), app.state.pool.connection() as conn:
            cursor = await conn.execute(statement, params)
            stored = (await cursor.fetchone())[0] if answer is None else 0
    except (psycopg.Error, OSError, TimeoutError) as exc:
        log.warning("a ServiceTrade delivery for %s was not stored (%s): answered 503, ServiceTrade delivers again",
                    account, type(exc).__name__)
        return _answer(503, "not stored; deliver again")
    return answer or JSONResponse({"stored": bool(stored)})


class SecretOutOfPath:
    """Airflow's access log prints the request's path once the app returned: put *** where the secret was."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "http":
                head, _, tail = scope["path"].rstrip("/").rpartition("/")
                if head and tail:
                    scope["path"] = f"{head}/***"
                    scope["raw_path"] = scope["path"].encode()


def create_app(conninfo: str | None = None, config: WebhookConfig | None = None) -> ASGIApp:
    """`conninfo`: our database (default: INTEGRATIONS_DATABASE_URL, else the integrations_db connection);
    `config`: include/servicetrade_webhooks.yaml (or $SERVICETRADE_WEBHOOKS_CONFIG)."""
    if conninfo is None:
        conninfo = os.environ.get(DATABASE_ENV)
    if conninfo is None:
        from etl.db import conninfo_from_airflow

        conninfo = conninfo_from_airflow()
    app = FastAPI(title="ServiceTrade webhooks", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.config = config or load()
    app.state.pool = ConnectionPool(conninfo)
    app.state.accounts = Accounts(app.state.pool)
    app.add_api_route("/{account}/{secret}", deliver, methods=["POST"])
    return SecretOutOfPath(app)
