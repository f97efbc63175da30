"""Avalara TrustFile: the Items API we push sales and refunds to, and the v4 signup.

Connection `trustfile_default` (type `trustfile`):
  host      Items API base URL, e.g. https://api.trustfile.avalara.com (test: https://stable-api.trustfile.avalara.com)
  password  the extractor_to_avalara_token (sent as `Authorization: Bearer …`)
  extra     {"provisioning_url": "https://app.trustfile.avalara.com"} (test: https://stable.trustfile.avalara.com)

TrustFile's quirks, kept here: at most 1000 items a call, and a batch is all or nothing — one
invalid item and nothing is processed, with one error per fault naming `.items[i]` (ajv 6's
`dataPath`; ajv 8 says `/items/i` in `instancePath`). `push_items` therefore reports rejected items
one by one and pushes the rest of their batch again. A 400 whose errors name no item is narrowed
down by halving the batch until the item that fails alone is found. Some answers are undocumented or
documented without a body (an unknown connection's 404, the email lookup of an unknown email): every
plausible form is read.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice

from hooks.vendor_http import VendorApiError, VendorHttpHook

log = logging.getLogger(__name__)

MAX_ITEMS_PER_CALL = 1000
NO_BODY = "(no body)"
_ITEM_PATH = re.compile(r"^(?:\.items\[(\d+)\]|/items/(\d+))")


@dataclass
class PushReport:
    calls: int = 0
    processed: int = 0
    rejected: dict[str, list[str]] = field(default_factory=dict)   # itemId -> TrustFile's messages


def _errors_of(exc: VendorApiError) -> list[dict]:
    """TrustFile's `errors` list from a refused call's JSON body; empty when there is none."""
    errors = exc.body.get("errors") if isinstance(exc.body, dict) else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _batches(items: Iterable[dict], size: int) -> Iterator[list[dict]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


class TrustFileHook(VendorHttpHook):
    vendor = "TrustFile"
    conn_name_attr = "trustfile_conn_id"
    default_conn_name = "trustfile_default"
    conn_type = "trustfile"
    hook_name = "Avalara TrustFile"


    def authenticate(self, session) -> None:
        if not self.password:
            raise ValueError(f"connection {self.conn_id!r} has no password (the extractor_to_avalara token)")
        session.headers["Authorization"] = f"Bearer {self.password}"

    def error_for(self, method, url, response) -> VendorApiError:
        """Say "(no body)" for an empty error answer (the spec's 404 for an unknown connection), not the
        HTTP reason phrase, which any web server's error page shows too."""
        error = super().error_for(method, url, response)
        if response.content.strip():
            return error
        return VendorApiError(self.vendor, method, url, error.status, NO_BODY, hint=error.hint,
                              retry_after=error.retry_after)

    @property
    def provisioning_url(self) -> str:
        url = (self.connection.extra_dejson or {}).get("provisioning_url")
        if not url:
            raise ValueError(f"connection {self.conn_id!r} has no extra provisioning_url")
        return url.rstrip("/")

    # ---- Items API --------------------------------------------------------------------------

    def push_items(self, connection_id: str, items: Iterable[dict]) -> PushReport:
        """Upsert items in calls of at most 1000; reject invalid items individually, push the rest."""
        report = PushReport()
        for batch in _batches(items, MAX_ITEMS_PER_CALL):
            unexplained: list[VendorApiError] = []
            self._push_batch(connection_id, batch, report, unexplained)
            if len(unexplained) == len(batch) > 1:
                # Every item refused alone, none of them named: not the items, the request. Say so.
                for entry in batch:
                    report.rejected.pop(str(entry.get("itemId")), None)
                raise unexplained[0]
        return report

    def _push_batch(self, connection_id: str, batch: list[dict], report: PushReport,
                    unexplained: list[VendorApiError]) -> None:
        """Push one batch; while TrustFile names bad items, set them aside and push what is left.

        TrustFile may name every bad item at once or only the first (ajv's default); either way each
        round removes at least one item, so this ends. Errors naming no item halve the batch.
        """
        path = f"/v3/connections/{connection_id}/items"
        while batch:
            report.calls += 1
            try:
                # Items are upserted by itemId, so repeating a push after a timeout is harmless.
                answer = self.request_json("POST", path, json={"items": batch}, idempotent=True)
            except VendorApiError as exc:
                if exc.status != 400:
                    raise
                bad = self._rejected_items(exc, batch)
                if not bad and len(batch) > 1:
                    middle = len(batch) // 2
                    self._push_batch(connection_id, batch[:middle], report, unexplained)
                    self._push_batch(connection_id, batch[middle:], report, unexplained)
                    return
                if not bad:
                    unexplained.append(exc)
                    errors = _errors_of(exc)
                    bad = {0: [str(e.get("message")) for e in errors if e.get("message")] or [exc.detail]}
                for index, messages in bad.items():
                    report.rejected.setdefault(str(batch[index].get("itemId")), []).extend(messages)
                batch = [item for index, item in enumerate(batch) if index not in bad]
                continue
            report.processed += int(answer.get("processed", 0))
            return

    @staticmethod
    def _rejected_items(exc: VendorApiError, batch: list[dict]) -> dict[int, list[str]]:
        """Map TrustFile's per-item errors to batch positions; empty when an error names no item."""
        errors = _errors_of(exc)
        bad: dict[int, list[str]] = {}
        for error in errors:
            where = str(error.get("dataPath") or error.get("instancePath") or "")
            match = _ITEM_PATH.match(where)
            index = int(match.group(1) or match.group(2)) if match else None
            if index is None or index >= len(batch):
                return {}
            field_path = where[match.end():].lstrip("./").replace("/", ".")
            prefix = f"{field_path}: " if field_path else ""
            bad.setdefault(index, []).append(f"{prefix}{error.get('message', 'rejected')}")
        return bad

    def get_company(self, connection_id: str) -> dict:
        return self.request_json("GET", f"/v3/connections/{connection_id}")["company"]

    # ---- provisioning -----------------------------------------------------------------------

    def signup(self, *, email: str, company_name: str, **fields) -> str:
        """Create the TrustFile account; return its company token (the connection id we push to)."""
        body = {"email": email, "companyName": company_name, **fields}
        try:
            payload = self.request_json("POST", f"{self.provisioning_url}/v4/company/signup", json=body)
        except VendorApiError as exc:
            if self.user_exists(email):
                raise VendorApiError(self.vendor, "POST", "/v4/company/signup", exc.status,
                                     f"signup failed ({exc.detail}) but TrustFile knows {email} now",
                                     hint="the account may have been created without us receiving its company "
                                          "token: find it in TrustFile before provisioning again") from None
            raise
        if payload.get("status") != "Success" or not payload.get("companyToken"):
            message = (payload.get("notification") or {}).get("message", "no companyToken in the answer")
            raise VendorApiError(self.vendor, "POST", "/v4/company/signup", 200, message,
                                 hint="the account was not created; retry the provisioning run")
        return payload["companyToken"]

    def user_exists(self, email: str) -> bool | None:
        """Whether TrustFile has a user with this email (v4 `GET /company?email=`); None when it cannot say.

        The answer for an unknown email is undocumented: 200 with `success: "false"` and a 4xx (404, 400)
        both mean "no such user". A refused token, throttling, a server error or an answer of another shape
        is None, never an exception: the lookup only guards the signup, which TrustFile refuses for a known
        email anyway, so it must not fail a provisioning alone.
        """
        try:
            answer = self.request_json("GET", f"{self.provisioning_url}/v4/company", params={"email": email})
        except VendorApiError as exc:
            if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (401, 403, 429):
                return False
            log.warning("TrustFile's email lookup could not say whether the user exists: %s", exc)
            return None
        success = str(answer.get("success")).lower() if isinstance(answer, dict) else None
        if success not in ("true", "false"):
            log.warning("TrustFile's email lookup answered in an unknown shape (keys %s)",
                        sorted(answer) if isinstance(answer, dict) else type(answer).__name__)
            return None
        return success == "true"

    def check_credentials(self) -> None:
        """Ask for a connection that does not exist: a valid token gets TrustFile's 404, an invalid one 401.

        The public spec documents that 404 with no body; the service may also say "Connection not found".
        Any other 404 (a web server's page, another API's JSON) means the host is not the Items API.
        """
        try:
            self.request("GET", "/v3/connections/credential-check")
        except VendorApiError as exc:
            if exc.status == 404 and (exc.detail == NO_BODY or "Connection not found" in exc.detail):
                return
            raise
        raise VendorApiError(self.vendor, "GET", "/v3/connections/credential-check", 200,
                             "an unknown connection was found", hint="is the host really the TrustFile Items API?")
