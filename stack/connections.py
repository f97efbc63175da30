"""The Airflow connections `make up` writes: the integrations database, then one per sandboxed vendor."""
from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlsplit

from sandbox import itsperfect, ppms, qbo, servicetrade, trackvia, trustfile

SANDBOX_REALMS = qbo.REALMS
# The sandbox company of qbo_oms_pro (oms_payment_linking): the last one, as the demo consents from the first.
OMS_PRO_REALM = qbo.REALMS[-1]

# libpq parameters a URL may carry that etl.db passes on from the connection's extra.
PASSED_PARAMETERS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout", "options")


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
        "extra": {k: v for k, v in parse_qsl(parts.query) if k in PASSED_PARAMETERS},
    }


def platform_connections(integrations_url: str) -> dict[str, dict]:
    return {"integrations_db": integrations_db_connection(integrations_url)}


SANDBOX_DESCRIPTION = ("Local vendor sandbox, written by make up. "
                       "Replace it with the vendor's real credentials (docs/integrations/).")


def sandbox_connections(sandbox_url: str) -> dict[str, dict]:
    """Vendor connections pointing at `python -m sandbox`, with the sandbox's own demo credentials.

    qbo_default is the OAuth app only: companies come from the TrustFile consent, and a company of
    its own would share (and fight over) the token row of the company consented first. qbo_oms_pro is the
    company whose payments land on OMS-Pro tickets (oms_payment_linking): the sandbox's last company, with its
    initial refresh token, which the demo's one QuickBooks tenant never consents (it takes the first free one)."""
    oauth_endpoint_url = f"{sandbox_url}/qbo/oauth2/v1/tokens/bearer"
    return {
        "qbo_default": {
            "conn_type": "qbo", "description": SANDBOX_DESCRIPTION, "host": f"{sandbox_url}/qbo",
            "login": qbo.CLIENT_ID, "password": qbo.CLIENT_SECRET,
            # oauth_endpoint_url, not token_url: the connection form masks any extra named like "token".
            "extra": {"oauth_endpoint_url": oauth_endpoint_url, "authorize_url": f"{sandbox_url}/qbo/connect/oauth2"},
        },
        "qbo_oms_pro": {"description": SANDBOX_DESCRIPTION, **qbo.company_connection(sandbox_url, OMS_PRO_REALM)},
        "trustfile_default": {
            "conn_type": "trustfile", "description": SANDBOX_DESCRIPTION, "host": f"{sandbox_url}/trustfile",
            "password": trustfile.TOKEN, "extra": {"provisioning_url": f"{sandbox_url}/trustfile"},
        },
        "servicetrade_default": {
            "conn_type": "servicetrade", "description": SANDBOX_DESCRIPTION, "host": f"{sandbox_url}/servicetrade/api",
            "login": servicetrade.USERNAME, "password": servicetrade.PASSWORD,
        },
        # The demo tenant's connector, switched on: `make up` registers it and maps the demo's locations.
        "trackvia_default": {"description": SANDBOX_DESCRIPTION, **trackvia.airflow_connection(sandbox_url)},
        "ppms_default": {"description": SANDBOX_DESCRIPTION, **ppms.airflow_connection(sandbox_url)},
        "itsperfect_default": {
            "description": SANDBOX_DESCRIPTION,
            **itsperfect.airflow_connection(sandbox_url, active=True, create_orders=True, get_stock=True),
        },
    }
