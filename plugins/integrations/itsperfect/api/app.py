"""The ItsPerfect admin app: its database on `app.state`, the body limit and error answers, the routers.

No OpenAPI document or docs page: FastAPI serves those without any dependency, so they would be the only
routes open to anonymous callers; docs/integrations/itsperfect-admin-api.md describes the API.
"""
from __future__ import annotations

import os

from fastapi import FastAPI

from integrations.itsperfect.api import attributes, common, connectors, exports, mappings

DATABASE_ENV = "INTEGRATIONS_DATABASE_URL"


def create_app(conninfo: str | None = None) -> FastAPI:
    """`conninfo`: our database (default: INTEGRATIONS_DATABASE_URL, else the integrations_db connection)."""
    app = FastAPI(title="ItsPerfect admin API", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.database = conninfo or os.environ.get(DATABASE_ENV)
    common.install(app)
    for router in (connectors.router, attributes.router, mappings.router, exports.router):
        app.include_router(router)
    return app
