"""Routes of the QuickBooks consent: TrustFile sends a user to /connections/{id}/authentication, we send
the browser on to Intuit, and Intuit brings it back to the callback, which takes no bearer token and
trusts only its sealed `state` (consent_state), once, for its own connection; and the company only
once the new token has read it (the redirect's `realmId` alone could name any company)."""
from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import psycopg
from airflow.sdk.exceptions import AirflowNotFoundException
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from etl.encryption import EncryptionError
from hooks.vendor_http import VendorApiError
from integrations.trustfile import connections as store
from integrations.trustfile import consent
from integrations.trustfile.api import consent_state, health_checks
from integrations.trustfile.api.common import AUTHORIZED, NO_STORE, ApiError, Conn, ConnectionId, database, redirect
from integrations.trustfile.api.connections import existing

log = logging.getLogger(__name__)

PUBLIC_URL_ENV = "EXTRACTOR_PUBLIC_URL"
_OAUTH_ERROR = re.compile(r"^[a-z_]{1,40}$")
_REALM = re.compile(r"^[0-9A-Za-z]{1,40}$")
INVALID_STATE = "This authorization link is invalid or has expired: start the authorization again from TrustFile."
USED_STATE = "This authorization link was already used: start the authorization again from TrustFile."
T = TypeVar("T")

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


# The browser waits while the callback calls Intuit: one attempt each, with short timeouts. A throttled
# (429) or silent Intuit is answered at once (the user authorizes again), never waited out inside the
# browser's request (QuickBooks' throttling is per minute: its retry would wait 61 s).
CALLBACK_CONNECT_SECONDS, CALLBACK_READ_SECONDS = 5.0, 15.0


@dataclass(frozen=True)
class _Callback:
    """A callback whose sealed state opened: its connection, TrustFile's redirectUri, the state's nonce,
    and the database connection its checks and writes use."""

    conn: psycopg.Connection
    connection_id: str
    back: str
    nonce: str


class _Refusal(Exception):
    """The consent ends without tokens: `kind` goes back to TrustFile, `outcome` onto the connection."""

    def __init__(self, kind: str, outcome: str):
        super().__init__(outcome)
        self.kind, self.outcome = kind, outcome


@router.get(consent_state.CALLBACK_PATH)
def finish_consent(request: Request, state: str | None = None, code: str | None = None,
                   realmId: str | None = None, error: str | None = None):  # noqa: N803 - Intuit's name
    """Intuit's redirect: check state, exchange the code, check the company, store it, send the browser back.

    Anyone can call it, so the sealed state is opened first, with no database connection and nothing
    registered with the secret maskers: a forged, altered or expired state costs us a decryption, not a
    PostgreSQL connection nor a masker pattern (each one recompiles the maskers' regex, and stays). The
    code is masked as soon as the state proves ours, before anything can log it. The state is checked
    before the code is spent and consumed with whatever the callback writes, so a replay (even with a
    fresh code) or a racing twin changes nothing; the company is the one the new access token can read,
    never merely the one the query names.
    """
    sealed = consent_state.open_state(state)
    if sealed is None:
        log.warning("QuickBooks consent callback with a missing, forged or expired state: nothing done")
        raise ApiError(400, INVALID_STATE)
    consent_state.mask(code)
    with database(request) as conn:
        callback = _Callback(conn, sealed["connection_id"], sealed["redirect_uri"], sealed["nonce"])
        if store.get(conn, callback.connection_id) is None:
            return redirect(callback.back, error="unknown_connection")
        _check_open(callback)
        try:
            if error or not code:
                kind = error if error and _OAUTH_ERROR.match(error) else "invalid_request"
                raise _Refusal(kind, "denied" if kind == "access_denied" else f"failed ({kind})")
            if not realmId or not _REALM.match(realmId):
                raise _Refusal("invalid_request", "failed: Intuit sent no company id")
            return _link(request, callback, code, realmId)
        except _Refusal as refusal:
            return _refused(callback, refusal.kind, refusal.outcome)


def _check_open(callback: _Callback) -> None:
    """400 unless the state was issued for its connection and not used yet."""
    status = consent.state_status(callback.conn, callback.connection_id, callback.nonce)
    if status != "open":
        log.warning("QuickBooks consent callback for connection %s with a state %s: nothing done",
                    callback.connection_id, "already used" if status == "used" else "not issued for it")
        raise ApiError(400, USED_STATE if status == "used" else INVALID_STATE)


def _link(request: Request, callback: _Callback, code: str, realm_id: str) -> RedirectResponse:
    """The code for tokens, the company checked with them, the link stored; _Refusal when that fails."""
    client = request.app.state.qbo_hook_factory()
    client.max_attempts = 1
    client.connect_timeout, client.read_timeout = CALLBACK_CONNECT_SECONDS, CALLBACK_READ_SECONDS
    grant = _vendor_step(callback, client, "the code exchange with Intuit failed",
                         lambda: client.exchange_code(code, _callback(request)))
    if not _vendor_step(callback, client, "QuickBooks did not confirm the company",
                        lambda: client.token_grants_realm(grant.access_token, realm_id)):
        log.warning("consent for connection %s: the token Intuit issued cannot read company %s, which the "
                    "redirect named: refused", callback.connection_id, realm_id)
        raise _Refusal("company_mismatch", "failed: the consent is not for the company Intuit's redirect named")
    try:
        consent.authorize_qbo(callback.conn, callback.connection_id, realm_id, grant.refresh_token,
                              state_nonce=callback.nonce)
    except consent.ConsentRefused as refusal:
        log.warning("consent for connection %s refused: %s", callback.connection_id, refusal)
        return redirect(callback.back, error=refusal.kind)
    except consent.ConsentStateUsed:
        log.warning("QuickBooks consent callback for connection %s lost the race for its state: nothing done",
                    callback.connection_id)
        raise ApiError(400, USED_STATE) from None
    log.info("connection %s authorized QuickBooks company %s", callback.connection_id, realm_id)
    return redirect(callback.back, success="true")


def _vendor_step(callback: _Callback, client, failed: str, call: Callable[[], T]) -> T:
    """`call` (a QuickBooks call of the callback), its failures as _Refusal: an invalid_grant, Intuit failing,
    or the OAuth client (`qbo_default`) incomplete: no host, no client id."""
    try:
        return call()
    except VendorApiError as exc:
        log.warning("consent for connection %s: %s", callback.connection_id, exc)
        if "invalid_grant" in exc.detail:
            raise _Refusal("invalid_grant", "failed: Intuit refused the code (invalid_grant)") from None
        raise _Refusal("server_error", f"failed: {failed} ({health_checks.reason(exc)})") from None
    except (ValueError, AirflowNotFoundException) as exc:
        log.error("consent for connection %s: the QuickBooks OAuth client is unusable: %s", callback.connection_id,
                  exc)
        raise _Refusal("server_error", f"failed: the QuickBooks OAuth client ({client.conn_id}) is not "
                                       "configured") from None


def _refused(callback: _Callback, kind: str, outcome: str) -> RedirectResponse:
    """A consent that ended without tokens: on the connection (activity, status), then back to TrustFile."""
    log.info("connection %s: QuickBooks authorization %s", callback.connection_id, outcome)
    try:
        consent.record_consent_failure(callback.conn, callback.connection_id, f"QuickBooks authorization {outcome}",
                                       f"QuickBooks authorization {outcome}; authorize again from TrustFile",
                                       state_nonce=callback.nonce)
    except consent.ConsentStateUsed:
        raise ApiError(400, USED_STATE) from None
    except consent.ConsentRefused as refusal:       # the connection was deleted meanwhile
        log.warning("consent for connection %s: %s", callback.connection_id, refusal)
        return redirect(callback.back, error=refusal.kind)
    return redirect(callback.back, error=kind)
