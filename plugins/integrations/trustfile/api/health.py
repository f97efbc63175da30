"""GET /health: no bearer token, answered by the app's HealthChecks (health_checks)."""
from __future__ import annotations

from fastapi import APIRouter, Request

router = APIRouter()


@router.get("/health")
def get_health(request: Request):
    return {"statuses": request.app.state.health.statuses()}
