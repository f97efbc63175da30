"""QuickBooks Online: OAuth with rotating refresh tokens, query paging, CDC, and Intuit's odd errors.

Connection `qbo_default` (type `qbo`; one per company):
  host      API base URL, https://quickbooks.api.intuit.com (sandbox: https://sandbox-quickbooks.api.intuit.com)
  login     OAuth client id          password  OAuth client secret
  extra     {"realm_id": "...", "refresh_token": "<initial, from the consent>",
             "oauth_endpoint_url": "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer", "minorversion": 75,
             "authorize_url": "https://appcenter.intuit.com/connect/oauth2"}

The TrustFile extractor uses this connection as its OAuth app only: each company's realm and
refresh token come from its consent (trustfile.connections) through `realm_id=`/`refresh_token=`.

Tokens live in etl.oauth_tokens (encrypted), shared by every worker: the refresh token rotates on
each refresh and only the newest is sure to work, so refreshing happens under that row's lock and the
new token is committed before anything else uses it. A 401 refreshes once and retries. A refresh that
got no usable answer (none, cut off, 5xx, 429) is retried with the same, previous refresh token: the
new one never reached us, and Intuit documents no immediate death of the old one. Only `invalid_grant`
means the consent is gone (`RefreshTokenRefused`). Those retries stop within `refresh_budget_seconds`
(90 s): every other worker of the company waits for the token row meanwhile. Intuit answers throttling
with an XML body even to JSON requests, and without Retry-After: it is parsed and retried with backoff
like any 429.
"""
from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_before_delay

from etl import db, oauth_tokens
from hooks.paging import Keyset, Offsets, Page
from hooks.vendor_http import VendorApiError, VendorHttpHook, register_secret

DEFAULT_TOKEN_URL = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"
DEFAULT_AUTHORIZE_URL = "https://appcenter.intuit.com/connect/oauth2"
ACCOUNTING_SCOPE = "com.intuit.quickbooks.accounting"
DEFAULT_MINOR_VERSION = 75
PAGE_SIZE = 1000
CDC_LIMIT = 1000
_XML_MESSAGE = re.compile(r"<Message>(.*?)</Message>", re.S)
_XML_DETAIL = re.compile(r"<Detail>(.*?)</Detail>", re.S)


class RefreshTokenRefused(VendorApiError):
    """Intuit answered `invalid_grant` to a refresh: the company's consent no longer holds (revoked,
    unused for 100 days, or rotated without the answer reaching us). Retrying cannot help; only a new
    consent can. `lost_answer`: an earlier answer to this refresh never arrived whole (the likely cause);
    `consent_fingerprint`: which consent's token was refused (etl.oauth_tokens.fingerprint), so a
    consent renewed meanwhile is not mistaken for the lost one."""

    def __init__(self, *args, lost_answer: bool, consent_fingerprint: str | None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lost_answer, self.consent_fingerprint = lost_answer, consent_fingerprint


@dataclass(frozen=True)
class CdcAnswer:
    changes: dict[str, list[dict]]
    time: str | None
    capped: bool


def _last_updated(row: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(row["MetaData"]["LastUpdatedTime"])


def _token_endpoint_fault(exc: VendorApiError) -> str:
    if exc.status is None:
        return "the token endpoint gave no complete answer (connection dropped or timed out)"
    if exc.malformed:
        return "the token endpoint's answer was cut off or malformed"
    if exc.status == 429:
        return "the token endpoint throttled us (HTTP 429)"
    return f"the token endpoint answered a server error (HTTP {exc.status})"


def qbo_timestamp(moment: dt.datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("QBO timestamps need a timezone-aware datetime")
    return moment.isoformat(timespec="seconds")


class QboHook(VendorHttpHook):
    vendor = "QuickBooks Online"
    conn_name_attr = "qbo_conn_id"
    default_conn_name = "qbo_default"
    conn_type = "qbo"
    hook_name = "QuickBooks Online"

    # QBO's limits are per minute and it sends no Retry-After: wait for the next window.
    throttle_wait_seconds: float = 61.0
    # A refresh retries under the token row's lock, so every other worker of the company (and /health) waits
    # for it: its calls and waits end within this budget. 90 s leaves room for one wait for QuickBooks' next
    # minute (61 s) and a few quick retries of a lost answer; an outage longer than that is the task's own
    # retry's business (1 min, doubling), which comes back without holding the lock in between.
    refresh_budget_seconds: float = 90.0

    def __init__(self, conn_id: str | None = None, *, realm_id: str | None = None,
                 refresh_token: str | None = None, conninfo: str | None = None, **kwargs):
        """`realm_id`/`refresh_token` override the connection's extra: the TrustFile extractor keeps
        one OAuth app (this connection) and each company's consent in its own table. `conninfo`: the
        database of the token store (default the `integrations_db` connection); the extractor API run
        alone has only its INTEGRATIONS_DATABASE_URL."""
        super().__init__(conn_id, **kwargs)
        self._access_token: str | None = None
        self._realm_id, self._seed_refresh_token = realm_id, refresh_token
        self._conninfo = conninfo
        # How long to wait for a token row another worker holds (None: as long as it takes), then
        # etl.oauth_tokens.RefreshInProgress; a health probe sets it, so that it never queues behind a refresh.
        self.token_lock_timeout: float | None = None

    def secrets_of(self, conn):
        return [conn.password, (conn.extra_dejson or {}).get("refresh_token"), self._seed_refresh_token]

    @property
    def extra(self) -> dict:
        return self.connection.extra_dejson or {}

    @property
    def token_endpoint(self) -> str:
        """Intuit's token endpoint: extra `oauth_endpoint_url` (a name Airflow does not mask in the form, as it
        does any extra named like "token"), or `token_url`, which connections made before it carry."""
        return self.extra.get("oauth_endpoint_url") or self.extra.get("token_url") or DEFAULT_TOKEN_URL

    @property
    def realm_id(self) -> str:
        realm = self._realm_id or self.extra.get("realm_id")
        if not realm:
            raise ValueError(f"connection {self.conn_id!r} has no extra realm_id")
        return str(realm)

    # ---- OAuth --------------------------------------------------------------------------------

    def _refresh(self, refresh_token: str) -> oauth_tokens.TokenGrant:
        """Call the token endpoint (inside the token row's lock, see etl.oauth_tokens).

        No answer, a cut-off or malformed 200, a 5xx or a 429 is retried with backoff, with the same
        refresh token: an answer that never arrived may have rotated it at Intuit, but the new one is not
        ours, and where Intuit still accepts the previous one that is the only way on. Each failure says
        what really happened; only a 401 is about the client id and secret. The retries stop before a
        wait would pass `refresh_budget_seconds`, and no call's timeouts reach past it.
        """
        url = self.token_endpoint
        failures: list[VendorApiError] = []
        deadline = time.monotonic() + self.refresh_budget_seconds
        retrying = Retrying(retry=retry_if_exception(lambda exc: isinstance(exc, VendorApiError) and exc.transient),
                            stop=stop_after_attempt(self.max_attempts) | stop_before_delay(self.refresh_budget_seconds),
                            wait=self._wait, before_sleep=self._log_retry, reraise=True)
        try:
            return retrying(self._refresh_once, url, refresh_token, failures, deadline)
        except VendorApiError as exc:
            if not exc.transient:
                raise
            gave_up = (f"; gave up after {self.refresh_budget_seconds:g} s, which other workers spent waiting"
                       if len(failures) < self.max_attempts else "")
            raise VendorApiError(self.vendor, "POST", url, exc.status, exc.detail, malformed=exc.malformed,
                                 hint=f"{_token_endpoint_fault(exc)}, {len(failures)} time(s) in a row{gave_up}; "
                                      "the refresh token we hold is kept, and the next try (task retry, next run) "
                                      "sends it again") from None

    def _refresh_once(self, url: str, refresh_token: str, failures: list[VendorApiError],
                      deadline: float | None = None) -> oauth_tokens.TokenGrant:
        """One refresh call, its timeouts cut to what is left before `deadline`; `failures` collects what
        went wrong before (an earlier lost answer changes what an invalid_grant means)."""
        lost_before = any(f.status is None or f.malformed for f in failures)
        left = max(1.0, deadline - time.monotonic()) if deadline is not None else float("inf")
        try:
            response = self._send("POST", url, data={"grant_type": "refresh_token", "refresh_token": refresh_token},
                                  auth=((self.connection.login or "").strip(), self.password),
                                  timeout=(min(self.connect_timeout, left), min(self.read_timeout, left)))
            payload = response.json()
            grant = oauth_tokens.TokenGrant(payload["access_token"], int(payload.get("expires_in", 3600)),
                                            payload["refresh_token"], payload.get("x_refresh_token_expires_in"))
        except VendorApiError as exc:
            failures.append(self._refresh_error(url, exc, lost_before))
            raise failures[-1] from None
        except (ValueError, KeyError, TypeError):
            # Never quote the body: a cut-off answer can hold a token not yet registered as secret.
            failures.append(VendorApiError(self.vendor, "POST", url, 200, "the token answer is cut off or has no "
                                           "access and refresh token", malformed=True,
                                           hint="retried with the same refresh token"))
            raise failures[-1] from None
        register_secret(grant.access_token)
        register_secret(grant.refresh_token)
        return grant

    def _refresh_error(self, url: str, exc: VendorApiError, lost_before: bool) -> VendorApiError:
        """The token endpoint's refusal, with what it means for this company's consent."""
        if exc.transient:
            return exc
        if "invalid_grant" in exc.detail:
            reauthorize = ("the company must authorize again from TrustFile (the extractor's consent flow)"
                           if self._seed_refresh_token else
                           f"re-authorize the company and put the new refresh token in connection {self.conn_id!r} "
                           "(extra refresh_token)")
            why = ("an earlier answer to this refresh was lost in transit and QuickBooks no longer accepts the "
                   "previous refresh token" if lost_before else "the refresh token was revoked, expired or lost")
            seed = self._seed_refresh_token or self.extra.get("refresh_token")
            return RefreshTokenRefused(self.vendor, "POST", url, exc.status, exc.detail, hint=f"{why}: {reauthorize}",
                                       lost_answer=lost_before,
                                       consent_fingerprint=oauth_tokens.fingerprint(seed) if seed else None)
        if exc.status == 401 or "invalid_client" in exc.detail:
            return VendorApiError(self.vendor, "POST", url, exc.status, exc.detail,
                                  hint=f"check the client id/secret of connection {self.conn_id!r}")
        return VendorApiError(self.vendor, "POST", url, exc.status, exc.detail,
                              hint="the token endpoint refused the refresh; it is not retried")

    def authorization_url(self, state: str, redirect_uri: str) -> str:
        """Intuit's consent page for this OAuth client (extra `authorize_url`, default Intuit's): the
        company's admin signs in, picks the company, and Intuit sends the browser to `redirect_uri` with
        `code`, `state` and `realmId` (or `error=access_denied`)."""
        client_id = (self.connection.login or "").strip()
        if not client_id:
            raise ValueError(f"connection {self.conn_id!r} has no login (the OAuth client id)")
        base = self.extra.get("authorize_url") or DEFAULT_AUTHORIZE_URL
        return f"{base}?" + urlencode({"client_id": client_id, "response_type": "code", "scope": ACCOUNTING_SCOPE,
                                       "redirect_uri": redirect_uri, "state": state})

    def exchange_code(self, code: str, redirect_uri: str) -> oauth_tokens.TokenGrant:
        """Trade the consent's authorization code for the company's first token pair.

        A code works once, for minutes, and only with the redirect_uri it was issued for, so the call is
        repeated only after a 429 (which proves Intuit did not act on it).
        """
        register_secret(code)
        url = self.token_endpoint
        try:
            payload = self.request_json(
                "POST", url, data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri},
                auth=((self.connection.login or "").strip(), self.password), idempotent=False)
        except VendorApiError as exc:
            if exc.status != 400 or "invalid_grant" not in exc.detail:
                raise
            raise VendorApiError(self.vendor, "POST", url, 400, exc.detail,
                                 hint="the code expired, was already used, or was issued for another redirect "
                                      "URI: run the consent again") from None
        tokens = payload if isinstance(payload, dict) else {}
        for key in ("access_token", "refresh_token"):
            register_secret(tokens.get(key))
        if not tokens.get("access_token") or not tokens.get("refresh_token"):
            raise VendorApiError(self.vendor, "POST", url, 200, "the token answer has no access or refresh token",
                                 hint="nothing was stored; run the consent again")
        return oauth_tokens.TokenGrant(tokens["access_token"], int(tokens.get("expires_in", 3600)),
                                       tokens["refresh_token"], tokens.get("x_refresh_token_expires_in"))

    def token_grants_realm(self, access_token: str, realm_id: str) -> bool:
        """Whether `access_token` reads company `realm_id` (its CompanyInfo): QBO binds an access token to
        the company it was issued for, so a consent's new token proves which company was picked, whatever
        the redirect's `realmId` says. False when QBO refuses the token for that company (401/403)."""
        register_secret(access_token)
        path = f"/v3/company/{realm_id}/companyinfo/{realm_id}"
        try:
            payload = self.request_json("GET", path, headers={"Authorization": f"Bearer {access_token}"},
                                        params={"minorversion": self.extra.get("minorversion", DEFAULT_MINOR_VERSION)})
        except VendorApiError as exc:
            if exc.status in (401, 403):
                return False
            raise
        if not isinstance(payload, dict) or "CompanyInfo" not in payload:
            raise VendorApiError(self.vendor, "GET", path, 200, "no CompanyInfo in the answer",
                                 hint="unexpected response shape; nothing was stored")
        return True

    def _token(self, rejected: str | None = None) -> str:
        seed = self._seed_refresh_token or self.extra.get("refresh_token")
        if not seed:
            raise ValueError(f"connection {self.conn_id!r} has no extra refresh_token")
        token = oauth_tokens.access_token(lambda: db.connect(self._conninfo), "qbo", self.realm_id,
                                          seed_refresh_token=seed, refresh=self._refresh,
                                          rejected_access_token=rejected, lock_timeout=self.token_lock_timeout)
        register_secret(token)
        return token

    def api(self, method: str, path: str, *, idempotent: bool | None = None, **kwargs: Any) -> dict:
        """Call `/v3/company/{realm}/{path}` with a valid token and minorversion; a 401 refreshes once.

        Reads sent as POST (`query`) pass idempotent=True; creating calls should send QBO's
        `requestid` parameter so that a retry cannot create twice.
        """
        params = {**kwargs.pop("params", {}), "minorversion": self.extra.get("minorversion", DEFAULT_MINOR_VERSION)}
        url = f"/v3/company/{self.realm_id}/{path.lstrip('/')}"
        extra_headers = kwargs.pop("headers", {})
        if self._access_token is None:
            self._access_token = self._token()
        for attempt in (1, 2):
            headers = {**extra_headers, "Authorization": f"Bearer {self._access_token}"}
            try:
                payload = self.request_json(method, url, params=params, headers=headers, idempotent=idempotent,
                                            **kwargs)
            except VendorApiError as exc:
                if exc.status != 401 or attempt == 2:
                    raise
                self._access_token = self._token(rejected=self._access_token)
                continue
            if "Fault" in payload:  # Intuit can report a fault with HTTP 200
                raise self._fault_error(method, url, 200, payload["Fault"])
            return payload
        raise AssertionError("unreachable")

    # ---- reads --------------------------------------------------------------------------------

    def query(self, entity: str, where: str | None = None, order_by: str = "MetaData.LastUpdatedTime",
              page_size: int | None = None) -> Iterator[dict]:
        """Every row of `SELECT * FROM entity [WHERE …] ORDERBY …`, paged by STARTPOSITION, one page held.

        Positional paging: fine for a snapshot; for incremental reads use `changed_since`.
        """
        if not re.fullmatch(r"[A-Za-z]+", entity):
            raise ValueError(f"not a QBO entity name: {entity!r}")
        page_size = page_size or PAGE_SIZE
        if not 1 <= page_size <= PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{PAGE_SIZE}")
        base = f"SELECT * FROM {entity}" + (f" WHERE {where}" if where else "") + f" ORDERBY {order_by}"
        return Offsets(page_size, first=1).walk(lambda start, size: self._query_page(entity, base, start, size))

    def changed_since(self, entity: str, since: dt.datetime, until: dt.datetime | None = None) -> Iterator[dict]:
        """Rows of `entity` with since <= MetaData.LastUpdatedTime < until, oldest first, each once.

        Paged by key, not by position: a row updated during the scan moves past `until` (fixed when
        the scan starts, default now) instead of shifting the pages and hiding an unchanged row.
        QBO's grammar has no OR, so each page restarts at the last timestamp seen (see `Keyset`).
        """
        until = until or dt.datetime.now(dt.timezone.utc)

        def page(cursor: dt.datetime, offset: int, size: int) -> Page:
            query = (f"SELECT * FROM {entity} WHERE MetaData.LastUpdatedTime >= '{qbo_timestamp(cursor)}' "
                     f"AND MetaData.LastUpdatedTime < '{qbo_timestamp(until)}' ORDERBY MetaData.LastUpdatedTime")
            return self._query_page(entity, query, offset, size)

        return Keyset(PAGE_SIZE, key_of=_last_updated, id_of=lambda row: row["Id"]).walk(page, since)

    def _query_page(self, entity: str, query: str, start: int, size: int) -> Page:
        payload = self.api("POST", "query", data=f"{query} STARTPOSITION {start} MAXRESULTS {size}",
                           headers={"Content-Type": "application/text"}, idempotent=True)
        if "QueryResponse" not in payload:   # an empty page still has one: this would read as "no changes"
            raise VendorApiError(self.vendor, "POST", "query", 200, f"no QueryResponse in {sorted(payload)}",
                                 hint="unexpected response shape; nothing was loaded")
        return Page((payload.get("QueryResponse") or {}).get(entity, []))

    def cdc(self, entities: Sequence[str], changed_since: dt.datetime) -> CdcAnswer:
        """Change data capture (≤ 30 days back); deleted rows carry status Deleted.

        QBO answers at most 1000 objects: `capped` says the answer may be incomplete, and the
        caller must then narrow the window. `time` is QBO's own clock, the next `changed_since`.
        """
        payload = self.api("GET", "cdc", params={"entities": ",".join(entities),
                                                 "changedSince": qbo_timestamp(changed_since)})
        if "CDCResponse" not in payload:
            raise VendorApiError(self.vendor, "GET", "cdc", 200, f"no CDCResponse in {sorted(payload)}",
                                 hint="unexpected response shape: deletions would go unnoticed")
        changes: dict[str, list[dict]] = {entity: [] for entity in entities}
        for response in payload.get("CDCResponse", []):
            for block in response.get("QueryResponse", []):
                for entity in entities:
                    changes[entity].extend(block.get(entity, []))
        total = sum(len(rows) for rows in changes.values())
        return CdcAnswer(changes, payload.get("time"), capped=total >= CDC_LIMIT)

    def check_credentials(self) -> None:
        """With a company: one cheap query. The OAuth app alone (the TrustFile extractor's connection):
        a refresh with a token that cannot exist, which Intuit answers `invalid_grant` to a valid
        client and `invalid_client` (401) to a wrong id or secret."""
        if self._realm_id or self.extra.get("realm_id"):
            self.api("POST", "query", data="SELECT COUNT(*) FROM Payment",
                     headers={"Content-Type": "application/text"}, idempotent=True)
            return
        try:
            self._refresh("credential-check-not-a-refresh-token")
        except VendorApiError as exc:
            if exc.status == 400 and "invalid_grant" in exc.detail:
                return
            raise
        raise VendorApiError(self.vendor, "POST", self.token_endpoint, 200,
                             "a made-up refresh token was accepted", hint="is oauth_endpoint_url really Intuit's?")

    # ---- errors -------------------------------------------------------------------------------

    def error_for(self, method, url, response):
        text = response.text or ""
        if text.lstrip().startswith("<"):
            parts = [m.group(1).strip() for m in (_XML_MESSAGE.search(text), _XML_DETAIL.search(text)) if m]
            detail = " ".join(parts) or text
        else:
            try:
                body = response.json()
            except ValueError:
                body = {}
            fault = body.get("Fault") or body.get("fault")
            detail = self._fault_text(fault) if fault else text
        throttled = "ThrottleExceeded" in detail   # 429 today, 403 in older answers; never a Retry-After
        if not throttled:
            return VendorApiError(self.vendor, method, url, response.status_code, detail,
                                  hint=self.hint_for(response.status_code))
        return VendorApiError(self.vendor, method, url, 429, detail, retry_after=self.throttle_wait_seconds,
                              hint="QBO throttling (about 500 requests a minute per company); retried after "
                                   f"{self.throttle_wait_seconds:g} s")

    def _fault_error(self, method, url, status, fault) -> VendorApiError:
        return VendorApiError(self.vendor, method, url, status, self._fault_text(fault),
                              hint="QuickBooks refused the request")

    @staticmethod
    def _fault_text(fault: dict) -> str:
        errors = fault.get("Error") or fault.get("error") or []
        parts = [f"{e.get('code', '?')} {e.get('Message') or e.get('message', '')}: "
                 f"{e.get('Detail') or e.get('detail', '')}" for e in errors]
        return f"{fault.get('type', 'Fault')}: " + "; ".join(parts)
