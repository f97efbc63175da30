"""Stratocore PPMS's PUMAPI (vendors.md §4): form POSTs with the API key, answers read by `hooks.pumapi_format`.

Connection `ppms_default` (type `ppms`; one connection per PPMS instance / core facility key):
  host      the PUMAPI URL, e.g. https://ppms.example.org/pumapi/ (posted to exactly, with its trailing slash:
            PPMS redirects the bare path, and a redirected POST arrives as a GET without the form)
  password  the API key (`apikey`): in the form body of every call, never in a URL; registered as a secret

PUMAPI answers HTTP 200 even when it refuses: the body is read per action (`pumapi_format.parse`), and a
refusal raises `PumapiRefused` with the action named and PPMS's text (which never holds the key). Reads are
retried on 5xx and dropped answers; `createorder` is sent once (a repeated call creates a second order: the
caller's outbox settles an unanswered one). PUMAPI documents no rate limit, so there is no request budget.
"""
from __future__ import annotations

import logging
from typing import Any

from hooks.pumapi_format import PumapiError, PumapiFormatError, parse
from hooks.vendor_http import VendorApiError, VendorHttpHook

log = logging.getLogger(__name__)

# Actions that change something at PPMS: sent once, never retried.
WRITES = frozenset({"createorder", "setright"})


class PumapiRefused(VendorApiError):
    """PPMS answered the action with an error text (`error: ...`, `request not authorized`)."""

    def __init__(self, hook: PumapiHook, action: str, text: str):
        self.action, self.text = action, text
        unauthorized = "not authorized" in text.lower()
        hint = (f"the API key (password) of connection {hook.conn_id!r} is wrong, expired, or not allowed this "
                "action (PPMS keys can be scoped to user management or to one core facility)"
                if unauthorized else "PPMS refused the request as given; it is not retried")
        super().__init__(hook.vendor, "POST", hook.endpoint, 200, f"{action}: {text}", hint=hint)


class PumapiUnreadable(VendorApiError):
    """The answer does not have the shape the action declares (`pumapi_format.SHAPES`)."""


class PumapiHook(VendorHttpHook):
    vendor = "Stratocore PPMS"
    conn_name_attr = "ppms_conn_id"
    default_conn_name = "ppms_default"
    conn_type = "ppms"
    hook_name = "Stratocore PPMS (PUMAPI)"

    @property
    def endpoint(self) -> str:
        """The PUMAPI URL with its trailing slash."""
        return f"{self.base_url}/"

    @property
    def api_key(self) -> str:
        key = self.password
        if not key:
            raise ValueError(f"connection {self.conn_id!r} has no API key: put PPMS's PUMAPI key in its password")
        return key

    def call(self, action: str, **params: Any) -> Any:
        """POST `action` with `params` (None values left out, booleans as PUMAPI's `true`), the answer parsed."""
        form = {name: _form_value(value) for name, value in params.items() if value is not None}
        response = self.request("POST", self.endpoint, data={"apikey": self.api_key, "action": action, **form},
                                idempotent=action not in WRITES, allow_redirects=False)
        if response.is_redirect:
            raise VendorApiError(self.vendor, "POST", self.endpoint, response.status_code, "redirected",
                                 hint=f"the host of connection {self.conn_id!r} must be the PUMAPI URL itself, "
                                      "with its trailing slash (e.g. https://ppms.example.org/pumapi/)")
        response.encoding = response.encoding or "utf-8"
        try:
            return parse(action, response.text, params=form)
        except PumapiError as exc:
            raise PumapiRefused(self, action, exc.text) from None
        except PumapiFormatError as exc:
            raise PumapiUnreadable(self.vendor, "POST", self.endpoint, 200, str(exc),
                                   hint="unexpected answer shape; nothing was loaded from it") from None

    # ---- the actions the sync and the order export use -----------------------------------------

    def orders(self) -> list[dict[str, str]]:
        return self.call("getorders")

    def order_lines(self, order_ref: str) -> list[dict[str, str]]:
        return self.call("getorderlines", orderref=order_ref)

    def invoice_ids(self) -> list[str]:
        return self.call("getinvoicelist")

    def invoice(self, invoice_id: str) -> list[dict[str, str]]:
        return self.call("getinvoice", invoiceid=invoice_id)

    def invoice_details(self, invoice_id: str) -> list[dict[str, str]]:
        return self.call("getinvoicedetails", invoiceid=invoice_id)

    def create_order(self, *, service_id: int | str, login: str, quantity: Any, project_id: int | str | None = None,
                     accepted: bool = False, completed: bool = False, completed_date: str | None = None,
                     comments: str | None = None) -> str:
        """One order of one line; its order ref. Sent once: on no answer, whether it exists is unknown."""
        if completed and not accepted:
            raise ValueError("an order can be completed at creation only if it is accepted too")
        ref = self.call("createorder", serviceid=service_id, login=login, quantity=quantity, projectid=project_id,
                        accepted=accepted or None, completed=completed or None, completeddate=completed_date,
                        comments=comments)
        if not str(ref).strip().isdigit():
            raise PumapiUnreadable(self.vendor, "POST", self.endpoint, 200,
                                   f"createorder answered {str(ref)[:60]!r}, not an order ref",
                                   hint="whether the order was created is unknown: look for it before sending again")
        return str(ref).strip()

    def check_credentials(self) -> None:
        """`auth`: an empty answer when the key is good."""
        self.call("auth")


def _form_value(value: Any) -> str:
    """PUMAPI compares strings: a flag is `true`, never Python's `True`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
