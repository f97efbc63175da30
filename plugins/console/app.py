"""The Integrations page app, mounted by plugins/airflow_plugin.py at /integrations in Airflow's API server.

    GET /               the page: every integration and scope (console.scopes, console.page)
    GET /docs/          the docs index;  GET /docs/<path>: docs/<path>, a page rendered or an image

Airflow authenticates no plugin app, so every route depends on Airflow's own auth manager:
`requires_access_view(AccessView.PLUGINS)`, whose user comes from the UI's JWT cookie (`_token`) or a bearer
token. No user: 401, and a browser is sent to Airflow's login page and back. A user the auth manager does not
allow to see plugin views (or a token Airflow did not sign): 403.

The docs are behind the same login. They are written for the people who run the platform (the runbook, the
architecture, the extractor's token handling, where credentials live), the alert links that lead there are
followed by people who are logged in to this Airflow already (the cookie goes with the click), and whoever
wants them public can serve docs/ elsewhere and set INTEGRATIONS_DOCS_URL.

Airflow's plugin manager imports plugins/airflow_plugin.py in every Airflow process, each task included, so
`OnFirstRequest` builds this app (and imports Airflow's API security modules) only when the API server first
routes a request to it.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import psycopg
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from console import docs, page, scopes
from etl import db

log = logging.getLogger(__name__)

DATABASE_ENV = "INTEGRATIONS_DATABASE_URL"
STATEMENT_TIMEOUT = "10s"
# Server-rendered, no script: nothing but our own styles and images may load, and only Airflow may frame us.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
                               "frame-ancestors 'self'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def create_app(conninfo: str | None = None, docs_root: Path = docs.DOCS_ROOT) -> FastAPI:
    """`conninfo`: our database (default: INTEGRATIONS_DATABASE_URL, else the integrations_db connection);
    `docs_root`: the folder served under /docs."""
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import requires_access_view

    app = FastAPI(title="Integrations page", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.database = conninfo or os.environ.get(DATABASE_ENV)
    app.state.docs_root = docs_root
    signed_in = [Depends(requires_access_view(AccessView.PLUGINS))]
    app.add_api_route("/", overview_page, methods=["GET"], dependencies=signed_in, response_class=HTMLResponse)
    app.add_api_route("/docs/", docs_index, methods=["GET"], dependencies=signed_in, response_class=HTMLResponse)
    app.add_api_route("/docs/{path:path}", docs_file, methods=["GET"], dependencies=signed_in)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(psycopg.Error, _database_error)
    return app


def overview_page(request: Request) -> HTMLResponse:
    with db.connect(request.app.state.database) as conn:
        conn.read_only = True
        conn.execute("SELECT set_config('statement_timeout', %s, true)", (STATEMENT_TIMEOUT,))
        overview = scopes.overview(conn)
    return HTMLResponse(page.render(overview), headers=HEADERS)


def docs_index(request: Request) -> HTMLResponse:
    document = docs.render_index(request.app.state.docs_root)
    return HTMLResponse(page.render_document(document.title, document.html, depth=0), headers=HEADERS)


def docs_file(request: Request, path: str) -> Response:
    root = request.app.state.docs_root
    found = docs.find(root, path)
    if found is None:
        raise HTTPException(404, "no such page or image under docs/")
    file, media_type = found
    if media_type != "text/markdown":
        return FileResponse(file, media_type=media_type, headers=HEADERS)
    document = docs.render_page(root, path)
    return HTMLResponse(page.render_document(document.title, document.html, depth=path.count("/")),
                        headers=HEADERS)


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """No session: a browser goes to Airflow's login page, which brings it back here."""
    if exc.status_code == 401 and _wants_html(request):
        from airflow.api_fastapi.app import get_auth_manager

        return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), status_code=307)
    return await http_exception_handler(request, exc)


async def _database_error(request: Request, exc: psycopg.Error) -> Response:
    log.error("the Integrations page cannot read the integrations database: %s", type(exc).__name__)
    return HTMLResponse("<h1>Integrations</h1><p>The integrations database does not answer; try again in a minute. "
                        "The runbook's <code>make up</code> section and the <code>integrations_db</code> connection "
                        "say where it is.</p>", status_code=503, headers=HEADERS)


class OnFirstRequest:
    """An ASGI app that builds the real one on the first request routed to it."""

    def __init__(self, factory: Callable[[], ASGIApp]):
        self.factory = factory
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.app is None:
            self.app = self.factory()
        await self.app(scope, receive, send)
