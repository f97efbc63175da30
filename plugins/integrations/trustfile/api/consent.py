"""Routes of the QuickBooks consent: TrustFile sends a user to /connections/{id}/authentication, we send
the browser on to Intuit, and Intuit brings it back to the callback, which takes no bearer token and
trusts only its sealed `state` (consent_state)."""
from __future__ import annotations

import logging
import re

from airflow.sdk.exceptions import AirflowNotFoundException
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from etl.encryption import EncryptionError
from hooks.vendor_http import VendorApiError
from integrations.trustfile import connections as store
from integrations.trustfile import consent
from integrations.trustfile.api import consent_state, health_checks
from integrations.trustfile.api.common import AUTHORIZED, NO_STORE, ApiError, Conn, redirect
from integrations.trustfile.api.connections import existing

log = logging.getLogger(__name__)

PUBLIC_URL_ENV = "EXTRACTOR_PUBLIC_URL"
_OAUTH_ERROR = re.compile(r"^[a-z_]{1,40}$")
_REALM = re.compile(r"^[0-9A-Za-z]{1,40}$")

router = APIRouter()


def _callback(request: Request) -> str:
    if request.app.state.callback_url is None:
        raise ApiError(500, f"{PUBLIC_URL_ENV} is not set: the consent has no callback address")
    return request.app.state.callback_url


@router.get("/connections/{connection_id}/authentication", dependencies=AUTHORIZED)
def start_consent(connection_id: str, request: Request, conn: Conn, redirectUri: str | None = None):  # noqa: N803 - the contract's name
    """302 to the host system's consent page; Intuit comes back to the callback below."""
    try:
        target = consent_state.redirect_target(redirectUri)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    connection = existing(conn, connection_id)
    if connection.host_system != "qbo":
        raise ApiError(400, f"connection {connection_id} reads {connection.host_system}, which has no OAuth "
                            "consent: its credentials are set by the integrations team")
    client = request.app.state.qbo_hook_factory()
    try:
        url = client.authorization_url(consent_state.seal_state(connection_id, target), _callback(request))
    except (ValueError, AirflowNotFoundException) as exc:
        log.error("consent for connection %s: the QuickBooks OAuth client is unusable: %s", connection_id, exc)
        raise ApiError(500, f"the QuickBooks OAuth client (Airflow connection {client.conn_id}) is not "
                            "configured") from None
    except EncryptionError as exc:
        raise ApiError(500, str(exc)) from None
    return RedirectResponse(url, status_code=302, headers=NO_STORE)


@router.get(consent_state.CALLBACK_PATH)
def finish_consent(request: Request, conn: Conn, state: str | None = None, code: str | None = None,
                   realmId: str | None = None, error: str | None = None):  # noqa: N803 - Intuit's name
    """Intuit's redirect: check state, exchange the code, store the company, send the browser back."""
    consent_state.mask(code)
    sealed = consent_state.open_state(state)
    if sealed is None:
        log.warning("QuickBooks consent callback with a missing, forged or expired state: nothing done")
        raise ApiError(400, "This authorization link is invalid or has expired: start the authorization "
                            "again from TrustFile.")
    connection_id, back = sealed["connection_id"], sealed["redirect_uri"]
    if store.get(conn, connection_id) is None:
        return redirect(back, error="unknown_connection")
    if error or not code:
        kind = error if error and _OAUTH_ERROR.match(error) else "invalid_request"
        return _refused(conn, connection_id, back, kind, "denied" if kind == "access_denied" else f"failed ({kind})")
    if not realmId or not _REALM.match(realmId):
        return _refused(conn, connection_id, back, "invalid_request", "failed: Intuit sent no company id")
    client = request.app.state.qbo_hook_factory()
    try:
        grant = client.exchange_code(code, _callback(request))
    except VendorApiError as exc:
        log.warning("consent for connection %s: %s", connection_id, exc)
        if "invalid_grant" in exc.detail:
            return _refused(conn, connection_id, back, "invalid_grant",
                            "failed: Intuit refused the code (invalid_grant)")
        return _refused(conn, connection_id, back, "server_error",
                        f"failed: the code exchange with Intuit failed ({health_checks.reason(exc)})")
    except (ValueError, AirflowNotFoundException) as exc:
        log.error("consent for connection %s: the QuickBooks OAuth client is unusable: %s", connection_id, exc)
        return _refused(conn, connection_id, back, "server_error",
                        f"failed: the QuickBooks OAuth client ({client.conn_id}) is not configured")
    try:
        consent.authorize_qbo(conn, connection_id, realmId, grant.refresh_token)
    except consent.ConsentRefused as refusal:
        log.warning("consent for connection %s refused: %s", connection_id, refusal)
        return redirect(back, error=refusal.kind)
    log.info("connection %s authorized QuickBooks company %s", connection_id, realmId)
    return redirect(back, success="true")


def _refused(conn, connection_id: str, back: str, kind: str, outcome: str) -> RedirectResponse:
    """A consent that ended without tokens: on the connection (activity, status), then back to TrustFile."""
    log.info("connection %s: QuickBooks authorization %s", connection_id, outcome)
    consent.record_consent_failure(conn, connection_id, f"QuickBooks authorization {outcome}",
                                 f"QuickBooks authorization {outcome}; authorize again from TrustFile")
    return redirect(back, error=kind)
