"""The pieces of the host-system consent that are not routes: the `state` we hand to Intuit, the
redirect target TrustFile gives us, and keeping the secrets that travel in URLs out of every log.

Intuit sends the browser back to our callback without TrustFile's bearer token, so the callback
trusts only what `state` carries: a Fernet token (etl.encryption; authenticated, so it cannot be
forged or edited) holding the connection id, TrustFile's redirectUri, a nonce and an expiry. The
nonce is also recorded for its connection when the consent starts (integrations.trustfile.consent)
and consumed by the callback's outcome, so a state works once, and only while its connection lives.
"""
from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# The core masker redacts the API server's access log (query strings included); the task SDK's masker,
# which hooks.vendor_http registers with, is a separate instance in the API server process.
from airflow._shared.secrets_masker import mask_secret as mask_in_api_server_logs

from etl import encryption
from hooks.vendor_http import register_secret

STATE_TTL_SECONDS = 15 * 60
CALLBACK_PATH = "/oauth/qbo/callback"
_PURPOSE = "trustfile-qbo-consent"
_HOST_FIRST = re.compile(r"^[A-Za-z0-9.-]+(:\d+)?([/?#]|$)")


def mask(secret: str | None) -> None:
    """Keep `secret` out of our logs, the hooks' HTTP debug lines and the API server's access log."""
    if secret:
        register_secret(secret)
        mask_in_api_server_logs(secret)


@dataclass(frozen=True)
class SealedState:
    """The `state` handed to Intuit, and what the consent records of it (its nonce and expiry)."""

    value: str
    nonce: str
    expires_at: dt.datetime


def seal_state(connection_id: str, redirect_uri: str) -> SealedState:
    nonce, expires_at = secrets.token_urlsafe(16), int(time.time()) + STATE_TTL_SECONDS
    payload = {"purpose": _PURPOSE, "connection_id": connection_id, "redirect_uri": redirect_uri,
               "nonce": nonce, "expires_at": expires_at}
    return SealedState(encryption.encrypt(json.dumps(payload)).decode(), nonce,
                       dt.datetime.fromtimestamp(expires_at, dt.timezone.utc))


def open_state(state: str | None) -> dict | None:
    """The sealed payload, or None when `state` is missing, forged, altered, expired, or sealed for
    another purpose (other values we encrypt with the same key)."""
    if not state:
        return None
    try:
        payload = json.loads(encryption.decrypt(state.encode()))
    except (encryption.EncryptionError, ValueError, UnicodeError):
        return None
    if not isinstance(payload, dict) or payload.get("purpose") != _PURPOSE:
        return None
    if not isinstance(payload.get("expires_at"), int) or payload["expires_at"] < time.time():
        return None
    if not all(isinstance(payload.get(key), str) for key in ("connection_id", "redirect_uri", "nonce")):
        return None
    return payload


def redirect_target(value: str | None) -> str:
    """TrustFile's redirectUri as an absolute http(s) URL; its contract's example has no scheme
    (`app.trustfile.avalara.com/connectors/success?id=…`), which a browser would read as a relative path."""
    if not value or not value.strip():
        raise ValueError("Missing redirectUri")
    value = value.strip()
    if not re.match(r"^https?://", value, re.IGNORECASE):
        if not _HOST_FIRST.match(value):
            raise ValueError("redirectUri must be an http(s) URL")
        value = "https://" + value
    parts = urlsplit(value)
    try:
        _ = parts.port   # raises for a port out of range
    except ValueError:
        raise ValueError("redirectUri must be an http(s) URL") from None
    if not parts.hostname or len(value) > 2000 or any(ord(c) <= 32 or c == "\\" for c in value):
        raise ValueError("redirectUri must be an http(s) URL")
    return value


def with_params(url: str, **params: str) -> str:
    """`url` with `params` added to its query; what it already carries is kept."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))
