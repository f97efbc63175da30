"""Routes of the QuickBooks consent: TrustFile sends a user to /connections/{id}/authentication, we send
the browser on to Intuit, and Intuit brings it back to the callback, which takes no bearer token and
trusts only its sealed `state` (consent_state), once, for its own connection; and the company only
once the new token has read it (the redirect's `realmId` alone could name any company)."""
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
from integrations.trustfile.api.common import AUTHORIZED, NO_STORE, ApiError, Conn, ConnectionId, redirect
from integrations.trustfile.api.connections import existing

log = logging.getLogger(__name__)

PUBLIC_URL_ENV = "EXTRACTOR_PUBLIC_URL"
_OAUTH_ERROR = re.compile(r"^[a-z_]{1,40}$")
_REALM = re.compile(r"^[0-9A-Za-z]{1,40}$")
INVALID_STATE = "This authorization link is invalid or has expired: start the authorization again from TrustFile."
USED_STATE = "This authorization link was already used: start the authorization again from TrustFile."

router = APIRouter()


def _callback(request: Request) -> str:
    if request.app.state.callback_url is None:
        raise ApiError(500, f"{PUBLIC_URL_ENV} is not set: the consent has no callback address")
    return request.app.state.callback_url


@router.get("/connections/{connection_id}/authentication", dependencies=AUTHORIZED)
def start_consent(connection_id: ConnectionId, request: Request, conn: Conn, redirectUri: str | None = None):  # noqa: N803 - the contract's name
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
        sealed = consent_state.seal_state(connection_id, target)
        url = client.authorization_url(sealed.value, _callback(request))
    except (ValueError, AirflowNotFoundException) as exc:
        log.error("consent for connection %s: the QuickBooks OAuth client is unusable: %s", connection_id, exc)
        raise ApiError(500, f"the QuickBooks OAuth client (Airflow connection {client.conn_id}) is not "
                            "configured") from None
    except EncryptionError as exc:
        raise ApiError(500, str(exc)) from None
    consent.issue_state(conn, connection_id, sealed.nonce, sealed.expires_at)
    return RedirectResponse(url, status_code=302, headers=NO_STORE)


@router.get(consent_state.CALLBACK_PATH)
def finish_consent(request: Request, conn: Conn, state: str | None = None, code: str | None = None,
                   realmId: str | None = None, error: str | None = None):  # noqa: N803 - Intuit's name
    """Intuit's redirect: check state, exchange the code, check the company, store it, send the browser back.

    The state is checked before the code is spent and consumed with whatever the callback writes, so a
    replay (even with a fresh code) or a racing twin changes nothing; the company is the one the new
    access token can read, never merely the one the query names.
    """
    consent_state.mask(code)
    sealed = consent_state.open_state(state)
    if sealed is None:
        log.warning("QuickBooks consent callback with a missing, forged or expired state: nothing done")
        raise ApiError(400, INVALID_STATE)
    connection_id, back, nonce = sealed["connection_id"], sealed["redirect_uri"], sealed["nonce"]
    if store.get(conn, connection_id) is None:
        return redirect(back, error="unknown_connection")
    status = consent.state_status(conn, connection_id, nonce)
    if status != "open":
        log.warning("QuickBooks consent callback for connection %s with a state %s: nothing done", connection_id,
                    "already used" if status == "used" else "not issued for it")
        raise ApiError(400, USED_STATE if status == "used" else INVALID_STATE)
    if error or not code:
        kind = error if error and _OAUTH_ERROR.match(error) else "invalid_request"
        return _refused(conn, connection_id, nonce, back, kind,
                        "denied" if kind == "access_denied" else f"failed ({kind})")
    if not realmId or not _REALM.match(realmId):
        return _refused(conn, connection_id, nonce, back, "invalid_request", "failed: Intuit sent no company id")
    client = request.app.state.qbo_hook_factory()
    try:
        grant = client.exchange_code(code, _callback(request))
    except VendorApiError as exc:
        log.warning("consent for connection %s: %s", connection_id, exc)
        if "invalid_grant" in exc.detail:
            return _refused(conn, connection_id, nonce, back, "invalid_grant",
                            "failed: Intuit refused the code (invalid_grant)")
        return _refused(conn, connection_id, nonce, back, "server_error",
                        f"failed: the code exchange with Intuit failed ({health_checks.reason(exc)})")
    except (ValueError, AirflowNotFoundException) as exc:
        log.error("consent for connection %s: the QuickBooks OAuth client is unusable: %s", connection_id, exc)
        return _refused(conn, connection_id, nonce, back, "server_error",
                        f"failed: the QuickBooks OAuth client ({client.conn_id}) is not configured")
    try:
        granted = client.token_grants_realm(grant.access_token, realmId)
    except VendorApiError as exc:
        log.warning("consent for connection %s: %s", connection_id, exc)
        return _refused(conn, connection_id, nonce, back, "server_error",
                        f"failed: QuickBooks did not confirm the company ({health_checks.reason(exc)})")
    if not granted:
        log.warning("consent for connection %s: the token Intuit issued cannot read company %s, which the "
                    "redirect named: refused", connection_id, realmId)
        return _refused(conn, connection_id, nonce, back, "company_mismatch",
                        "failed: the consent is not for the company Intuit's redirect named")
    try:
        consent.authorize_qbo(conn, connection_id, realmId, grant.refresh_token, state_nonce=nonce)
    except consent.ConsentRefused as refusal:
        log.warning("consent for connection %s refused: %s", connection_id, refusal)
        return redirect(back, error=refusal.kind)
    except consent.ConsentStateUsed:
        log.warning("QuickBooks consent callback for connection %s lost the race for its state: nothing done",
                    connection_id)
        raise ApiError(400, USED_STATE) from None
    log.info("connection %s authorized QuickBooks company %s", connection_id, realmId)
    return redirect(back, success="true")


def _refused(conn, connection_id: str, nonce: str, back: str, kind: str, outcome: str) -> RedirectResponse:
    """A consent that ended without tokens: on the connection (activity, status), then back to TrustFile."""
    log.info("connection %s: QuickBooks authorization %s", connection_id, outcome)
    try:
        consent.record_consent_failure(conn, connection_id, f"QuickBooks authorization {outcome}",
                                       f"QuickBooks authorization {outcome}; authorize again from TrustFile",
                                       state_nonce=nonce)
    except consent.ConsentStateUsed:
        raise ApiError(400, USED_STATE) from None
    return redirect(back, error=kind)
