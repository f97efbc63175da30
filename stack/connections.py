"""The Airflow connections `make up` writes: the integrations database, then one per sandboxed vendor."""
from __future__ import annotations

from urllib.parse import unquote, urlsplit


def integrations_db_connection(url: str) -> dict:
    """Airflow's JSON connection form of a postgresql:// URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("INTEGRATIONS_DATABASE_URL must be a postgresql:// URL")
    return {
        "conn_type": "postgres",
        "description": "Integrations database: watermarks, run ledger, quarantine and every pipeline's tables.",
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 5432,
        "schema": (parts.path or "/integrations").lstrip("/") or "integrations",
        "login": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
    }


def platform_connections(integrations_url: str) -> dict[str, dict]:
    return {"integrations_db": integrations_db_connection(integrations_url)}
