"""ServiceTrade: session-per-transaction auth, paged lists, and the job list's status default.

Connection `servicetrade_default` (type `servicetrade`; one connection per customer account):
  host      API base URL, e.g. https://api.servicetrade.com/api
  login     API user name
  password  its password

ServiceTrade keeps a few sessions per user and silently evicts the oldest, so every unit of work
opens its own session and always closes it (`with hook.transaction():`), and a 401 in the
middle (our session was evicted by another login of the same user) re-authenticates once.
The job list answers only `scheduled` jobs unless its `status` parameter names others: a job read
must name every status it wants, canceled included (`all` leaves canceled jobs out).
"""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hooks.paging import Page, PageNumbers
from hooks.vendor_http import VendorApiError, VendorHttpHook, register_secret

log = logging.getLogger(__name__)

PLURAL = {"job": "jobs", "invoice": "invoices", "location": "locations", "company": "companies",
          "jobitem": "jobItems"}
PAGE_LIMIT = {"job": 1000, "invoice": 1000, "location": 1000, "company": 500, "jobitem": 1000}
# Every job status ServiceTrade documents: the job list must name them all (its default is `scheduled`).
JOB_STATUSES = ("new", "canceled", "bidding", "scheduled", "completed", "pending_invoice", "sending_invoice",
                "invoiced", "closed")


def unix_seconds(moment: dt.datetime | int) -> int:
    if isinstance(moment, dt.datetime):
        if moment.tzinfo is None:
            raise ValueError("updated_after needs a timezone-aware datetime")
        return int(moment.timestamp())
    return int(moment)


class ServiceTradeHook(VendorHttpHook):
    vendor = "ServiceTrade"
    conn_name_attr = "servicetrade_conn_id"
    default_conn_name = "servicetrade_default"
    conn_type = "servicetrade"
    hook_name = "ServiceTrade"

    def __init__(self, conn_id: str | None = None, **kwargs):
        super().__init__(conn_id, **kwargs)
        self._token: str | None = None


    # ---- the session transaction ------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[ServiceTradeHook]:
        """Open a session, yield, and end the session whatever happened inside."""
        self._login()
        try:
            yield self
        finally:
            self._logout()

    def _login(self) -> None:
        conn = self.connection
        if not conn.login or not self.password:
            raise ValueError(f"connection {self.conn_id!r} needs login and password")
        # Not repeated after a timeout or a cut-off answer: each try could open a session we never end.
        answer = self.request_json("POST", "/auth", json={"username": conn.login.strip(), "password": self.password})
        token = (answer.get("data") or {}).get("authToken")
        if not token:
            raise VendorApiError(self.vendor, "POST", "/auth", 200, "no authToken in the answer")
        register_secret(token)
        self.session.cookies.clear()  # the session cookie travels explicitly, per call
        self._token = token

    def _logout(self) -> None:
        token, self._token = self._token, None
        if token is None:
            return
        try:
            self.request("DELETE", "/auth", cookies={"PHPSESSID": token})
        except VendorApiError as exc:
            # An evicted session answers 403 here; either way ours is gone. Never mask the real error.
            log.warning("ending the ServiceTrade session failed (%s); it expires on ServiceTrade's side", exc)

    def call(self, method: str, path: str, **kwargs: Any) -> dict:
        """One call inside `transaction()`; a 401 (session evicted) re-authenticates once and retries."""
        if self._token is None:
            raise RuntimeError("ServiceTrade calls run inside `with hook.transaction():`")
        try:
            return self.request_json(method, path, cookies={"PHPSESSID": self._token}, **kwargs)
        except VendorApiError as exc:
            if exc.status != 401:
                raise
            log.warning("ServiceTrade session evicted (another login of this user); authenticating again")
            self._login()
            return self.request_json(method, path, cookies={"PHPSESSID": self._token}, **kwargs)

    # ---- lists --------------------------------------------------------------------------------

    def paginate(self, entity: str, params: dict[str, Any]) -> Iterator[dict]:
        """Every record of a list, one page in memory at a time (page numbers, `totalPages` in the body)."""
        def page(number: int, size: int) -> Page:
            data = self.call("GET", f"/{entity}", params={**params, "page": number, "limit": size})
            data = data.get("data") or {}
            if PLURAL[entity] not in data or "totalPages" not in data:
                raise VendorApiError(self.vendor, "GET", f"/{entity}", 200,
                                     f"list answer without {PLURAL[entity]!r}/totalPages: {sorted(data)}",
                                     hint="unexpected response shape; nothing was loaded")
            return Page(data[PLURAL[entity]], total_pages=int(data["totalPages"]))

        return PageNumbers(PAGE_LIMIT[entity]).walk(page)

    def list_invoices(self, updated_after: dt.datetime | int,
                      updated_before: dt.datetime | int | None = None) -> Iterator[dict]:
        """Invoices of every type and status updated in [updated_after, updated_before]: both bounds are
        inclusive ("updated on or before this timestamp"), in the order ServiceTrade sorts them (by name)."""
        params = {"updatedAfter": unix_seconds(updated_after)}
        if updated_before is not None:
            params["updatedBefore"] = unix_seconds(updated_before)
        return self.paginate("invoice", params)

    def list_jobs(self, updated_after: dt.datetime | int) -> Iterator[dict]:
        """Jobs of every status, canceled included, updated on or after `updated_after`."""
        return self.paginate("job", {"updatedAfter": unix_seconds(updated_after), "status": ",".join(JOB_STATUSES)})

    def get(self, entity: str, record_id: int) -> dict | None:
        """One entity's current state; None when ServiceTrade answers 404 (deleted, or never existed)."""
        try:
            answer = self.call("GET", f"/{entity}/{int(record_id)}")
        except VendorApiError as exc:
            if exc.status == 404:
                return None
            raise
        data = answer.get("data")
        if not isinstance(data, dict) or data.get("id") is None:
            raise VendorApiError(self.vendor, "GET", f"/{entity}/{int(record_id)}", 200,
                                 "answer without data.id", hint="unexpected response shape; nothing was loaded")
        return data

    # ---- webhook subscriptions (hookUrl carries our secret: never logged, registered as one) ---

    def webhooks(self) -> list[dict]:
        """The account's webhook subscriptions."""
        data = self.call("GET", "/webhook").get("data") or {}
        return list(data.get("webhooks") or [])

    def create_webhook(self, hook_url: str) -> dict:
        """Subscribe `hook_url` to the account's firehose (we filter on our side; no changesets: we fetch current
        state). Sent once: a repeat after a lost answer could subscribe twice (the subscription DAG lists first)."""
        answer = self.call("POST", "/webhook", idempotent=False, json={"hookUrl": hook_url, "includeChangesets": False})
        return answer.get("data") or {}

    def enable_webhook(self, webhook_id: int) -> None:
        """Switch a disabled subscription back on (hookUrl stays: ServiceTrade does not change it in place)."""
        self.call("PUT", f"/webhook/{int(webhook_id)}", json={"enabled": True})

    def delete_webhook(self, webhook_id: int) -> None:
        try:
            self.call("DELETE", f"/webhook/{int(webhook_id)}")
        except VendorApiError as exc:
            if exc.status != 404:   # already gone is what we wanted
                raise

    def check_credentials(self) -> None:
        with self.transaction():
            pass
