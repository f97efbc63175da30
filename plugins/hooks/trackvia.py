"""TrackVia REST API ("openapi", vendors.md §1), the platform OMS-Pro runs on: apps and views by name,
records of a view paged with start/max and `totalCount`, create in batch, update one record per call.

Connection `trackvia_default` (type `trackvia`):
  host      the account's base URL, e.g. https://go.trackvia.com (a private environment: its own
            subdomain); the hook appends `/openapi`
  password  the API user's auth token (created by a Super Admin, expires at the date they set, no refresh)
  extra     {"api_key": "..."}: the account's API key, sent as `?user_key=` on every call (named as TrackVia
            names it, and so that Airflow masks it wherever it shows the extra); optional
            "hourly_limit" (default 5000: TrackVia publishes no number, vendors.md §1.6, so this is our
            guess until the account's contract says otherwise) and "budget_headroom" (default 50)

API users must never delete records in OMS-Pro: this hook has no delete call of any kind, on purpose.

Every request, retries included, is first reserved from the shared budget in PostgreSQL
(`etl.request_budget`, vendor "trackvia", credential = the account's host). TrackVia sends no limit
headers, so the budget keeps our own count; a 429 is never retried: the window is recorded as spent for
every worker and `BudgetSpent` raised.

Writes are sent once. A POST creates records: repeating it after a 5xx could create them twice. A PUT
sets the same values again, so the record would end the same, but each save runs the app's own App
Scripts and notification rules, which a replayed save fires twice; the pipelines re-read and redo only
what differs on their next run, which is the safe retry.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import requests

from etl.request_budget import BudgetSpent
from hooks.budgeted_http import BudgetedHttpHook
from hooks.paging import Offsets, Page
from hooks.vendor_http import REDACTOR, VendorApiError

BUDGET_VENDOR = "trackvia"
_VIEW_IN_PATH = re.compile(r"/views/(\d+)")
_RECORD_IN_PATH = re.compile(r"/records/(\d+)")
_FIELD_IN_MESSAGE = re.compile(r"\bfield\b", re.IGNORECASE)


class ViewNotFound(VendorApiError):
    """No view (or several) of that exact name: `views` lists the names there are, for the error to show."""

    def __init__(self, name: str, where: str, views: list[str], found: int):
        self.name, self.views = name, views
        super().__init__("TrackVia", "GET", "/views", 200,
                         f"{found} views named {name!r} in {where} (views: {', '.join(map(repr, views)) or 'none'})",
                         hint="rename the view in the config or in TrackVia, or give the API user access to it")


class TrackViaHook(BudgetedHttpHook):
    vendor = "TrackVia"
    budget_vendor = BUDGET_VENDOR
    conn_name_attr = "trackvia_conn_id"
    default_conn_name = "trackvia_default"
    conn_type = "trackvia"
    hook_name = "TrackVia"

    request_limit: ClassVar[int] = 5000      # per hour; a guess: TrackVia publishes no number
    budget_headroom: ClassVar[int] = 50      # kept back for the account's other API users
    max_page_size: ClassVar[int] = 100_000   # "more than 100,000 records will result in an error"

    # ---- connection, auth and secrets ---------------------------------------------------------

    def secrets_of(self, conn) -> Iterable[str | None]:
        key = str((conn.extra_dejson or {}).get("api_key") or "").strip()
        token = (conn.password or "").strip()
        # urllib3 logs the query as sent, percent-encoded: the key's encoded form is a secret too.
        return [conn.password, token, key, quote(key, safe="")]

    @property
    def user_key(self) -> str:
        key = str((self.connection.extra_dejson or {}).get("api_key") or "").strip()
        if not key:
            raise ValueError(f"connection {self.conn_id!r} has no api_key in its extra: set the account's API key")
        return key

    @property
    def base_url(self) -> str:
        base = super().base_url
        return base if base.endswith("/openapi") else f"{base}/openapi"

    def authenticate(self, session: requests.Session) -> None:
        if not self.password:
            raise ValueError(f"connection {self.conn_id!r} has no password: set the API user's auth token")
        session.params = {"user_key": self.user_key}
        session.headers["Authorization"] = f"Bearer {self.password}"

    # ---- errors -------------------------------------------------------------------------------

    def error_for(self, method: str, url: str, response: requests.Response) -> VendorApiError:
        """Type 1 `{"name", "message"}`, Type 2 OAuth `{"error", "error_description"}`, 3scale's plain text."""
        error = super().error_for(method, url, response)
        body, status = error.body, response.status_code
        if isinstance(body, dict) and isinstance(body.get("message"), str) and body.get("name"):
            name, message = str(body["name"]), body["message"]
            return self._error(method, url, status, f"{name}: {message}", self._api_hint(name, message, url),
                               {"name": name, "message": REDACTOR.redact(message)}, error.retry_after)
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            description = str(body.get("error_description") or "")
            detail = f"{body['error']}: {description}" if description else body["error"]
            return self._error(method, url, status, detail, self._token_hint(description),
                               {"error": body["error"], "error_description": REDACTOR.redact(description)},
                               error.retry_after)
        error.body = None                 # an unknown shape is not kept: it could quote a credential
        if status == 403 and "authentication failed" in response.text.lower():
            return VendorApiError(self.vendor, method, url, status, response.text,
                                  hint=f"the user_key (the account's API key, extra api_key) of connection "
                                       f"{self.conn_id!r} is wrong: copy it again from TrackVia's API Access page")
        return error

    def _error(self, method: str, url: str, status: int, detail: str, hint: str, body: dict,
               retry_after: float | None) -> VendorApiError:
        return VendorApiError(self.vendor, method, url, status, detail, hint=hint or self.hint_for(status),
                              retry_after=retry_after, body=body)

    def _api_hint(self, name: str, message: str, url: str) -> str:
        if name != "accessDenied":
            return ""
        path = urlsplit(url).path
        view = _VIEW_IN_PATH.search(path)
        where = f"view {view.group(1)}" if view else "the view"
        if _FIELD_IN_MESSAGE.search(message):
            thing = f"that field of {where}"
        elif _RECORD_IN_PATH.search(path) and "record" in message.lower():
            thing = f"record {_RECORD_IN_PATH.search(path).group(1)} of {where}"
        else:
            thing = where
        return (f"{thing} does not exist or the API user of connection {self.conn_id!r} has no access to it "
                "(TrackVia answers a missing view, record or field with 401 accessDenied)")

    def _token_hint(self, description: str) -> str:
        if "expired" in description.lower():
            return (f"the auth token of connection {self.conn_id!r} expired (TrackVia tokens expire at the date "
                    "the Super Admin set, there is no refresh): create a new one for the API user and put it in "
                    "the connection's password")
        return f"the auth token (password) of connection {self.conn_id!r} is not valid; check it or create a new one"

    # ---- apps and views -----------------------------------------------------------------------

    def app_id(self, name: str) -> int:
        """The id of the app named exactly `name`."""
        apps = self._list_of(self.request_json("GET", "/apps", params={"name": name}), "GET", "/apps")
        found = [a for a in apps if a.get("name") == name]
        if len(found) != 1:
            raise VendorApiError(self.vendor, "GET", "/apps", 200, f"{len(found)} apps named {name!r}",
                                 hint="check the app's name (exact, case-sensitive) and the API user's access")
        return int(found[0]["id"])

    def view(self, name: str, *, app: str | None = None) -> tuple[int, list[dict]]:
        """The id and field structure of the view named exactly `name` (in `app`, when given)."""
        views = self._list_of(self.request_json("GET", "/views"), "GET", "/views")
        if app is not None:
            views = [v for v in views if v.get("applicationName") == app]
        found = [v for v in views if v.get("name") == name]
        if len(found) != 1:
            raise ViewNotFound(name, f"app {app!r}" if app else "the account",
                               sorted(str(v.get("name")) for v in views), len(found))
        view_id = int(found[0]["id"])
        body = self._envelope(f"/views/{view_id}", self.request_json(
            "GET", f"/views/{view_id}", params={"start": 0, "max": 1}), list)
        return view_id, body["structure"]

    # ---- records ------------------------------------------------------------------------------

    def records(self, view_id: int, *, page_size: int = 1000, start: int = 0) -> Iterator[dict]:
        """Every record of a view from `start`, one page in memory at a time."""
        if not 1 <= page_size <= self.max_page_size:
            raise ValueError(f"page_size {page_size}: TrackVia answers 1 to {self.max_page_size} records a page")
        path = f"/views/{int(view_id)}"

        def page(offset: int, size: int) -> Page:
            body = self._envelope(path, self.request_json("GET", path, params={"start": offset, "max": size}), list)
            total = body.get("totalCount")
            if isinstance(total, str) and total.isdigit():
                total = int(total)
            if not isinstance(total, int):
                raise VendorApiError(self.vendor, "GET", path, 200, f"a page without a usable totalCount ({total!r})",
                                     hint="unexpected response shape; nothing was loaded from it")
            # totalCount counts the whole view; Offsets counts from where this walk began.
            return Page(body["data"], total_count=max(0, total - start))

        return Offsets(page_size, first=start).walk(page)

    def count(self, view_id: int) -> int:
        """The view's totalCount, from a one-record page."""
        path = f"/views/{int(view_id)}"
        body = self._envelope(path, self.request_json("GET", path, params={"start": 0, "max": 1}), list)
        total = body.get("totalCount")
        if isinstance(total, str) and total.isdigit():
            total = int(total)
        if not isinstance(total, int):
            raise VendorApiError(self.vendor, "GET", path, 200, f"no usable totalCount ({total!r})",
                                 hint="unexpected response shape; nothing was changed")
        return total

    def record(self, view_id: int, record_id: int) -> dict:
        path = f"/views/{int(view_id)}/records/{int(record_id)}"
        return self._envelope(path, self.request_json("GET", path), dict)["data"]

    def create_records(self, view_id: int, rows: Sequence[dict], batch: int = 100) -> list[dict]:
        """Create `rows` in batches of `batch` (TrackVia suggests 100 to 500); the created records, in order.
        Each POST is sent once: after a failed one, whether its records exist is unknown."""
        if batch < 1:
            raise ValueError(f"batch {batch}: must be at least 1")
        path = f"/views/{int(view_id)}/records"
        created: list[dict] = []
        for first in range(0, len(rows), batch):
            chunk = list(rows[first:first + batch])
            body = self._envelope(path, self.request_json("POST", path, json={"data": chunk}), list, method="POST")
            if len(body["data"]) != len(chunk):
                raise VendorApiError(self.vendor, "POST", path, 200,
                                     f"sent {len(chunk)} records, {len(body['data'])} came back",
                                     hint="which records were created is unknown: look them up before sending again")
            created.extend(body["data"])
        return created

    def update_record(self, view_id: int, record_id: int, fields: dict) -> dict:
        """Set `fields` on one record (TrackVia has no batch update); the updated record. Sent once (see above)."""
        path = f"/views/{int(view_id)}/records/{int(record_id)}"
        body = self._envelope(path, self.request_json("PUT", path, json={"data": [fields]}, idempotent=False),
                              list, method="PUT")
        if len(body["data"]) != 1:
            raise VendorApiError(self.vendor, "PUT", path, 200, f"{len(body['data'])} records came back, not 1",
                                 hint="unexpected response shape; read the record to see its state")
        return body["data"][0]

    def check_credentials(self) -> None:
        """The cheapest authenticated call: the apps the API user sees."""
        self._list_of(self.request_json("GET", "/apps"), "GET", "/apps")

    def test_connection(self) -> tuple[bool, str]:
        """One request, no retries: a person is waiting for the answer."""
        self.max_attempts = 1
        try:
            return super().test_connection()
        except BudgetSpent as exc:
            return False, str(exc)

    # ---- answers ------------------------------------------------------------------------------

    def _list_of(self, body: Any, method: str, path: str) -> list[dict]:
        if not isinstance(body, list) or not all(isinstance(item, dict) for item in body):
            raise VendorApiError(self.vendor, method, path, 200, f"expected a list, got {type(body).__name__}",
                                 hint="unexpected response shape; nothing was read from it")
        return body

    def _envelope(self, path: str, body: Any, data_type: type, *, method: str = "GET") -> dict:
        """`{"structure": [...], "data": ...}`; a 200 without it is an error, never "no records"."""
        if (not isinstance(body, dict) or not isinstance(body.get("structure"), list)
                or not isinstance(body.get("data"), data_type)):
            found = sorted(body) if isinstance(body, dict) else type(body).__name__
            raise VendorApiError(self.vendor, method, path, 200, f"answer without structure and data: {found}",
                                 hint="unexpected response shape; nothing was loaded from it")
        return body
