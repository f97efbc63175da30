"""ItsPerfect ERP API v2 (vendors.md §3): token in every URL, basic auth, Yii2 paging headers, and a
hard limit of 750 requests an hour that counts the vendor's own server-side calls.

Connection `itsperfect_default` (type `itsperfect`; one connection per connector / tenant):
  host      the tenant's API URL, e.g. https://<tenant>.itsperfect.it/api/v2
  password  HTTP basic auth password
  extra     {"api_token": "...", "username": "..."}: the API token, sent as `?token=` on every call, and
            the basic auth user name (in the extra, which Airflow encrypts: its `login` field it does not);
            optional "hourly_limit" (the tenant's contract, default 750) and "budget_headroom" (default 30:
            requests a task never takes, kept for the vendor's own server-side calls to come in the hour);
            the connector's switches (integrations.itsperfect.connectors) are not the hook's business

The token travels in every URL, so it is registered as a secret (with the user name and password)
before the session exists, and the vendor's 401 body, which echoes the token it got, is redacted.

Every request, retries included, is first reserved from the shared budget in PostgreSQL
(`etl.request_budget`, vendor "itsperfect", credential = the tenant's API URL, limit 750 less
`budget_headroom`): the vendor counts per tenant, so two connections to one tenant (one that pulls
stock, one that sends orders) share one budget. Every answer, errors and 429 included, is reconciled
with the vendor's `X-Request-Limit-Remaining` / `X-Request-Limit-Date`. A spent budget raises `BudgetSpent` (with the
reset time) before anything is sent; a 429 is never retried here (each try would count): the window
is recorded as spent, for every worker, and `BudgetSpent` raised with the vendor's reset moment.
"""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar
from urllib.parse import quote

import requests

from etl.request_budget import BudgetSpent, reconcile
from hooks.budgeted_http import BudgetedHttpHook
from hooks.paging import Page, PageNumbers, header_count
from hooks.vendor_http import REDACTOR, VendorApiError

log = logging.getLogger(__name__)

BUDGET_VENDOR = "itsperfect"
PAGE_COUNT = "X-Pagination-Page-Count"
REMAINING, RESETS_AT = "X-Request-Limit-Remaining", "X-Request-Limit-Date"
# What the vendor answers past its limit is undocumented (vendors.md §3.4): these, with nothing remaining.
PAST_LIMIT = (401, 403, 503)


class ItsPerfectHook(BudgetedHttpHook):
    vendor = "ItsPerfect"
    budget_vendor = BUDGET_VENDOR
    conn_name_attr = "itsperfect_conn_id"
    default_conn_name = "itsperfect_default"
    conn_type = "itsperfect"
    hook_name = "ItsPerfect"

    request_limit: ClassVar[int] = 750       # per hour, the vendor's own server-side calls included
    budget_headroom: ClassVar[int] = 30      # kept back for the vendor's calls still to come in the hour
    page_size: ClassVar[int] = 100           # the vendor silently caps `limit` at 100
    # The collection key of a resource when it is not the resource's own name (vendors.md §3.2).
    envelopes: ClassVar[dict[str, str]] = {"purchaseOrders": "purchaseorders"}

    def __init__(self, conn_id: str | None = None, **kwargs):
        super().__init__(conn_id, **kwargs)
        self._last_remaining: int | None = None

    # ---- connection, auth and secrets ---------------------------------------------------------

    def secrets_of(self, conn) -> Iterable[str | None]:
        extra = conn.extra_dejson or {}
        token = str(extra.get("api_token") or "")
        # urllib3 logs the query as sent, percent-encoded: the token's encoded form is a secret too.
        return [conn.password, conn.login, token, quote(token, safe=""), extra.get("username")]

    @property
    def token(self) -> str:
        token = str((self.connection.extra_dejson or {}).get("api_token") or "").strip()
        if not token:
            raise ValueError(f"connection {self.conn_id!r} has no api_token in its extra: set the tenant's API token")
        return token

    def authenticate(self, session: requests.Session) -> None:
        conn = self.connection            # registers token, user name and password before any request
        if conn.login:
            raise ValueError(f"connection {self.conn_id!r} has its user name in `login`, which Airflow stores "
                             "unencrypted: move it to the Username field (extra `username`) and clear `login`")
        username = str((conn.extra_dejson or {}).get("username") or "").strip()
        if not username or not self.password:
            raise ValueError(f"connection {self.conn_id!r} needs the basic auth username (extra) and password")
        session.params = {"token": self.token}
        session.auth = (username, self.password)
        session.hooks["response"].append(self._on_answer)

    # ---- the request budget -------------------------------------------------------------------

    def past_limit(self, error: VendorApiError) -> bool:
        """A 429, or what else it may answer with nothing remaining (vendors.md §3.4 does not say)."""
        return error.status == 429 or (error.status in PAST_LIMIT and self._last_remaining == 0)

    def _send(self, method: str, url: str, _parse_json: bool = False, _envelope: str | None = None,
              **kwargs: Any) -> Any:
        """One attempt, from the budget; the envelope checked when one is named."""
        self._last_remaining = None
        response = super()._send(method, url, _parse_json and _envelope is None, **kwargs)
        return response if _envelope is None else self._records(method, url, response, _envelope)

    def _on_answer(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """Every answer, error or not: take in the vendor's count of this window."""
        remaining, resets_at = _limit_headers(response)
        if remaining is None or resets_at is None:
            log.warning("ItsPerfect answered HTTP %s without usable %s / %s headers; the budget keeps our own "
                        "count only", response.status_code, REMAINING, RESETS_AT)
            return
        if response.status_code == 429:
            remaining = 0                 # a refusal: the window is spent, whatever else the header says
        self._last_remaining, self._last_reset = remaining, resets_at
        reconcile(self._db, self.budget_vendor, self.budget_key, remaining=remaining, resets_at=resets_at,
                  now=self._now())

    # ---- answers ------------------------------------------------------------------------------

    def _records(self, method: str, url: str, response: requests.Response, key: str) -> tuple[list, Any]:
        """The `{"<resource>": [...]}` list and the headers; a 200 without it is an error, never "no records"."""
        body = self.json_of(method, url, response)
        if not isinstance(body, dict) or not isinstance(body.get(key), list):
            found = sorted(body) if isinstance(body, dict) else type(body).__name__
            raise VendorApiError(self.vendor, method, url, response.status_code,
                                 f"answer without its {key!r} list: {found}",
                                 hint="unexpected response shape; nothing was loaded from it")
        return body[key], response.headers

    def error_for(self, method: str, url: str, response: requests.Response) -> VendorApiError:
        """`{"error": "..."}` bodies; the 401 one echoes the token it got, so the body kept is redacted."""
        error = super().error_for(method, url, response)
        message = error.body.get("error") if isinstance(error.body, dict) else None
        if isinstance(message, str):
            error = VendorApiError(self.vendor, method, url, response.status_code, message,
                                   hint=self._hint(response.status_code, message), retry_after=error.retry_after,
                                   body={"error": REDACTOR.redact(message)})
        elif error.body is not None:
            error.body = None             # unknown shape: not kept, it could quote a credential
        return error

    def _hint(self, status: int, message: str) -> str:
        if status == 401 and "token" in message.lower():
            return f"the API token (extra api_token) of connection {self.conn_id!r} is wrong or revoked"
        if status == 401:
            return f"check the username and password (basic auth) of connection {self.conn_id!r}"
        return self.hint_for(status)

    # ---- resources ----------------------------------------------------------------------------

    def _list(self, resource: str, params: dict[str, Any] | None = None) -> Iterator[dict]:
        """Every record of a collection, one page in memory at a time (page count from the header)."""
        key = self.envelopes.get(resource, resource)

        def page(number: int, size: int) -> Page:
            records, headers = self.request("GET", f"/{resource}", params={**(params or {}), "page": number,
                                                                            "limit": size}, _envelope=key)
            try:
                total = header_count(headers, PAGE_COUNT)
            except ValueError as exc:
                raise VendorApiError(self.vendor, "GET", f"/{resource}", 200, str(exc),
                                     hint="unexpected response shape; nothing was loaded from it") from None
            current = headers.get("X-Pagination-Current-Page")
            if total and current is not None and current.strip() != str(number):
                # Yii2 answers the last page for a page past it: the list shrank while we read it.
                raise VendorApiError(self.vendor, "GET", f"/{resource}", 200,
                                     f"asked for page {number}, got page {current} of {total}",
                                     hint="the list changed while it was read; run the pull again")
            return Page(records, total_pages=total)

        return PageNumbers(self.page_size).walk(page)

    def warehouses(self) -> Iterator[dict]:
        """Every warehouse, active or not (`active` is 1 or 0)."""
        return self._list("warehouses")

    def stock(self, warehouse_id: int) -> Iterator[dict]:
        """The full stock of one warehouse: item -> warehouses -> colors -> sizes (`stock` a string,
        `availableStock` a number, `barcode` the EAN-13), one page in memory at a time."""
        return self._list("stock", {"warehouseId": int(warehouse_id)})

    def create_order(self, payload: dict) -> dict:
        """POST one order; the vendor's order (`id`, `orderNumber`, `reference`). Not idempotent: sent once,
        retried only after a refusal that proves nothing was created (never a 429: that spends the budget)."""
        records, _ = self.request("POST", "/orders", json=payload, _envelope="orders")
        if not records:
            raise VendorApiError(self.vendor, "POST", "/orders", 200, "an empty 'orders' list",
                                 hint="whether the order was created is unknown: look it up by its reference")
        return records[0]

    def orders_by_reference(self, reference: str) -> list[dict]:
        """The vendor's orders carrying exactly `reference`: how an export whose answer was lost is found again.

        One page, one request. The vendor's docs name no filter by reference (vendors.md §3.3: `filter=` with an
        undocumented syntax); a tenant that ignores the parameter would answer its whole order list, and taking
        any of those for ours would mark an order sent that never was: an answer holding another reference is
        an error, for a person to look at, never "not found" (which would send the order again)."""
        records, _ = self.request("GET", "/orders", params={"reference": reference, "page": 1,
                                                             "limit": self.page_size}, _envelope="orders")
        others = sorted({str(r.get("reference")) for r in records if r.get("reference") != reference})
        if others:
            raise VendorApiError(self.vendor, "GET", "/orders", 200,
                                 f"asked for the orders with reference {reference!r}, got others too "
                                 f"({', '.join(others[:3])}{', ...' if len(others) > 3 else ''})",
                                 hint="this tenant does not filter orders by reference: whether the order was "
                                      "created is unknown; look it up in ItsPerfect before anything is sent again")
        missing = [r for r in records if not isinstance(r.get("id"), int)]
        if missing:
            raise VendorApiError(self.vendor, "GET", "/orders", 200, f"an order with reference {reference!r} "
                                 "without a numeric id", hint="unexpected response shape; nothing was recorded")
        return records

    def test_connection(self) -> tuple[bool, str]:
        """One request, no retries: a person is waiting for the answer."""
        self.max_attempts = 1
        try:
            return super().test_connection()
        except BudgetSpent as exc:        # the form's test must not fail with a traceback in the budget's hour
            return False, str(exc)

    def check_credentials(self) -> None:
        """The cheapest authenticated call: one warehouse."""
        self.request("GET", "/warehouses", params={"limit": 1}, _envelope="warehouses")


def _limit_headers(response: requests.Response) -> tuple[int | None, dt.datetime | None]:
    remaining, date = response.headers.get(REMAINING, ""), response.headers.get(RESETS_AT, "")
    try:
        resets_at = dt.datetime.fromisoformat(date.strip())
    except ValueError:
        return None, None
    if resets_at.tzinfo is None or not remaining.strip().isdigit():
        return None, None             # a reset moment without its offset cannot be placed in time
    return int(remaining), resets_at
