"""The extractor app: its settings on `app.state`, the Guard in front, the error handlers, the routers and
an OpenAPI document that lists the answers the app really gives, nothing else.

Two paths take no bearer token: `/health`, and the QuickBooks consent callback, which Intuit's browser
redirect reaches without one and which trusts only its sealed `state` (consent_state). Everything else
needs TrustFile's token, `/openapi.json` and unknown paths included: TrustFile works from its own
published contract and never reads our document, which lists our routes, rules and limits for nobody
else's benefit; the integrations team has the token (and docs/integrations/trustfile.md).
"""
from __future__ import annotations

import os
from collections.abc import Callable

from fastapi import FastAPI

from hooks.qbo import QboHook
from hooks.trustfile import TrustFileHook
from integrations.trustfile.api import connections, consent, consent_state, health, health_checks, reports
from integrations.trustfile.api.common import Guard, Problem, install_error_handlers

TOKEN_ENV = "AVALARA_TO_EXTRACTOR_TOKEN"
OPEN_PATHS = frozenset({"/health", consent_state.CALLBACK_PATH})
# The contract's bodies are a few hundred bytes at most ({"connectionId", "startDate", "enabled"}, an id
# of 100 characters at most): 16 KiB leaves room for pretty-printing and a field or two more, while a
# caller that sends more costs us at most that much per connection.
MAX_BODY_BYTES = 16 * 1024


def _problems(described: dict[int, str]) -> dict:
    return {status: {"model": Problem, "description": text} for status, text in described.items()}


def create_app(conninfo: str | None = None, token: str | None = None,
               health_overrides: dict[str, health_checks.Check] | None = None, *, public_url: str | None = None,
               qbo_hook_factory: Callable[..., QboHook] = QboHook,
               trustfile_hook_factory: Callable[[], TrustFileHook] = TrustFileHook) -> FastAPI:
    """The extractor app. `conninfo`: our database (default: INTEGRATIONS_DATABASE_URL, else the
    integrations_db connection); `token`: TrustFile's bearer token (default: AVALARA_TO_EXTRACTOR_TOKEN);
    `public_url`: where browsers reach this app (default: EXTRACTOR_PUBLIC_URL), for the consent
    callback; the hook factories build the QuickBooks OAuth client (`qbo_default`) and the TrustFile
    client; `health_overrides` replace or add /health checks by type."""
    app = FastAPI(title="TrustFile extractor", openapi_url="/openapi.json", docs_url=None, redoc_url=None)
    state = app.state
    state.database = conninfo or os.environ.get("INTEGRATIONS_DATABASE_URL")
    state.token = (token or os.environ.get(TOKEN_ENV) or "").strip()
    consent_state.mask(state.token)   # TrustFile puts it in the redirectUri it gives us (`?id=<token>`)
    public = (public_url or os.environ.get(consent.PUBLIC_URL_ENV) or "").strip().rstrip("/")
    state.callback_url = public + consent_state.CALLBACK_PATH if public else None
    state.qbo_hook_factory = qbo_hook_factory
    state.health = health_checks.standard(state.database, qbo_hook_factory, trustfile_hook_factory,
                                          overrides=health_overrides)
    app.add_middleware(Guard, open_paths=OPEN_PATHS, max_body=MAX_BODY_BYTES)
    install_error_handlers(app)
    unavailable = "our database is unavailable; try again later"
    app.include_router(health.router)
    app.include_router(connections.router, responses=_problems({503: unavailable}))
    app.include_router(consent.router, responses={
        302: {"description": "the browser sent on, to Intuit's consent page or back to TrustFile"},
        **_problems({503: unavailable, 500: "the QuickBooks OAuth client or EXTRACTOR_PUBLIC_URL is not configured"})})
    app.include_router(reports.router, responses=_problems({503: unavailable}))
    app.openapi = lambda: _document(app)
    return app


def _document(app: FastAPI) -> dict:
    """FastAPI's OpenAPI document with the answers it cannot see: bad input is our 400, not its 422; an
    unknown connection (or an id that makes the path unroutable) 404; the Guard's 401 on every route that
    declares the token and its 413 on every route."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = FastAPI.openapi(app)
    problem = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    for operations in document["paths"].values():
        for operation in operations.values():
            answers = operation["responses"]
            if answers.pop("422", None) is not None:
                answers["400"] = {"description": "bad input: the message names the rule", **problem}
            if any(parameter["in"] == "path" for parameter in operation.get("parameters", ())):
                answers["404"] = {"description": "unknown connection", **problem}
            if operation.get("security"):
                answers["401"] = {"description": "a missing or wrong token", **problem}
            answers["413"] = {"description": f"a body over {MAX_BODY_BYTES} bytes", **problem}
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas["Problem"] = Problem.model_json_schema()
    return document
