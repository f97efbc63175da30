"""A vendor client whose every request comes out of the engine's request budget (etl.request_budget).

Each attempt, retries included, is reserved before it is sent, from the budget of (`budget_vendor`, the
account's host): every task, DAG and worker of the platform draws from the same count, and connections that
spell the URL differently still share it. The limit and the headroom kept back are the class's, or the
connection's extras `hourly_limit` and `budget_headroom`. A refusal for the limit (a 429, or what
`past_limit` says) is never retried: the window is spent for every worker (until the reset the vendor
reported, if it did) and `BudgetSpent` raised, for the caller to defer until then. Redirects are not
followed: one would be a second request, carrying the credentials elsewhere.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import urlsplit

from etl import db
from etl.request_budget import BudgetSpent, exhaust, reserve
from hooks.vendor_http import VendorApiError, VendorHttpHook


class BudgetedHttpHook(VendorHttpHook):
    budget_vendor: ClassVar[str]
    request_limit: ClassVar[int]             # per hour, unless the connection's `hourly_limit` says
    budget_headroom: ClassVar[int]           # kept back, unless the connection's `budget_headroom` says

    def __init__(self, conn_id: str | None = None, *, conninfo: str | None = None, headroom: int | None = None,
                 clock: Callable[[], dt.datetime] | None = None, **kwargs):
        """`conninfo`: the integrations database holding the budget (default: `integrations_db`); `headroom`:
        overrides the connection's; `clock`: the budget's clock (default: the database's; a simulation
        passes the sandbox's)."""
        super().__init__(conn_id, **kwargs)
        self._conninfo = conninfo
        self._clock = clock
        self._headroom = headroom
        self._last_reset: dt.datetime | None = None     # the vendor's reset moment, when its answer says

    def _db(self):
        return db.connect(self._conninfo)

    def _now(self) -> dt.datetime | None:
        return self._clock() if self._clock else None

    @property
    def limit(self) -> int:
        """Requests per hour: the connection's `hourly_limit`, else the vendor's."""
        return self._whole("hourly_limit", self.request_limit)

    @property
    def headroom(self) -> int:
        """Requests of each hour kept back (the vendor's own calls, other clients): the argument, the
        connection's `budget_headroom`, else the class default."""
        headroom = self._headroom if self._headroom is not None else self._whole("budget_headroom",
                                                                                  self.budget_headroom)
        if headroom >= self.limit:
            raise ValueError(f"connection {self.conn_id!r}: budget_headroom {headroom} leaves nothing of hourly_limit "
                             f"{self.limit}; keep it below the limit")
        return headroom

    def _whole(self, name: str, default: int) -> int:
        value = (self.connection.extra_dejson or {}).get(name, default)
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"connection {self.conn_id!r}: extra {name} must be a whole number, not {value!r}")
        return value

    @property
    def budget_key(self) -> str:
        """The budget's credential: the account's host (and port when one is given); nothing else pasted into
        the URL is ever stored."""
        url = urlsplit(self.base_url)
        if not url.hostname:
            raise ValueError(f"connection {self.conn_id!r}: {self.base_url!r} names no host")
        return url.hostname.lower() + (f":{url.port}" if url.port else "")

    def past_limit(self, error: VendorApiError) -> bool:
        """Whether the vendor refused the request for its limit."""
        return error.status == 429

    def _send(self, method: str, url: str, _parse_json: bool = False, **kwargs: Any) -> Any:
        """One attempt: reserved from the budget, then sent."""
        _ = self.session                  # credentials checked and registered before the reservation
        reserve(self._db, self.budget_vendor, self.budget_key, limit=self.limit, headroom=self.headroom,
                now=self._now())
        self._last_reset = None
        kwargs.setdefault("allow_redirects", False)
        try:
            return super()._send(method, url, _parse_json, **kwargs)
        except VendorApiError as exc:
            if not self.past_limit(exc):
                raise
            spent = exhaust(self._db, self.budget_vendor, self.budget_key, reported_reset=self._last_reset,
                            now=self._now())
            raise BudgetSpent(spent, 1) from None
