"""The extractor app: its settings on `app.state`, the error handlers and the routers, nothing else.

Two routes take no bearer token: `/health`, and the QuickBooks consent callback, which Intuit's
browser redirect reaches without one and which trusts only its sealed `state` (consent_state).
"""
from __future__ import annotations

import os
from collections.abc import Callable

from fastapi import FastAPI

from hooks.qbo import QboHook
from hooks.trustfile import TrustFileHook
from integrations.trustfile.api import connections, consent, consent_state, health, health_checks, reports
from integrations.trustfile.api.common import install_error_handlers

TOKEN_ENV = "AVALARA_TO_EXTRACTOR_TOKEN"


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
    install_error_handlers(app)
    for module in (health, connections, consent, reports):
        app.include_router(module.router)
    return app
