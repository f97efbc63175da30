"""ServiceTrade's session API (vendors.md §2): what our hook must survive.

- `POST /api/auth` opens a session (`authToken`, also set as the PHPSESSID cookie); a user keeps at
  most `max_sessions` of them and the oldest is evicted silently: its next call answers 401.
- `DELETE /api/auth` ends the session.
- lists are `{"data": {"totalPages", "page", "<plural>": [...]}}`, `page` 1-based, `limit` capped,
  `updatedAfter` in unix seconds and inclusive; jobs default to `status=scheduled` unless a status
  is given (`all` = every status but canceled; a comma list selects those).
"""
from __future__ import annotations

import hmac
import random
from collections import OrderedDict

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from sandbox.core import SandboxState, install_faults

NAME = "servicetrade"
USERNAME, PASSWORD = "sandbox-user", "sandbox-password-st"
JOB_STATUSES = ("new", "canceled", "bidding", "scheduled", "completed", "pending_invoice", "sending_invoice", "closed")
LIST_LIMITS = {"job": 2000, "invoice": 2000, "location": 5000, "company": 2000}
DEFAULT_LIMITS = {"job": 2000, "invoice": 2000, "location": 10, "company": 100}
PLURAL = {"job": "jobs", "invoice": "invoices", "location": "locations", "company": "companies"}
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"messages": {"error": [message]}}, status_code=status)


class ServiceTradeSandbox:
    name = NAME

    def __init__(self, state: SandboxState, *, jobs: int = 240, max_sessions: int = 3) -> None:
        self.state = state
        self.job_count = jobs
        self.max_sessions = max_sessions
        self.app = FastAPI(title="ServiceTrade sandbox")
        install_faults(self.app, NAME, state, lambda: _error(429, "Too Many Requests"))
        self.reset()
        self._routes()

    def reset(self) -> None:
        self.sessions: OrderedDict[str, str] = OrderedDict()   # token -> username, oldest first
        self.sessions_opened = 0
        self.records = self._generate()

    def inspect(self) -> dict:
        return {"open_sessions": len(self.sessions), "sessions_opened": self.sessions_opened,
                "records": {entity: len(rows) for entity, rows in self.records.items()}}

    def _generate(self) -> dict[str, list[dict]]:
        rng = random.Random(self.state.seed)
        companies = [{"id": 5000 + n, "name": f"Customer {n}", "status": "active",
                      "updated": T0 + n * 60, "created": T0} for n in range(30)]
        locations = [{"id": 7000 + n, "name": f"Site {n}", "company": {"id": companies[n % 30]["id"]},
                      "address": {"street": f"{n} Depot Rd", "city": "Fresno", "state": "CA", "postalCode": "93722"},
                      "updated": T0 + n * 90, "created": T0} for n in range(60)]
        jobs, invoices = [], []
        for n in range(self.job_count):
            status = JOB_STATUSES[rng.randrange(len(JOB_STATUSES))]
            jobs.append({"id": 10_000 + n, "number": f"J-{n:05d}", "status": status, "type": "repair",
                         "location": {"id": locations[n % 60]["id"]}, "customer": {"id": companies[n % 30]["id"]},
                         "completedOn": T0 + n * 3600 if status in ("completed", "closed") else None,
                         "updated": T0 + n * 600, "created": T0})
            if status in ("completed", "closed"):
                invoices.append({"id": 20_000 + n, "invoiceNumber": f"INV-{n:05d}", "status": "ok",
                                 "job": {"id": 10_000 + n}, "customer": {"id": companies[n % 30]["id"]},
                                 "location": {"id": locations[n % 60]["id"]},
                                 "totalPrice": round(100 + rng.random() * 900, 2), "transactionDate": T0 + n * 3600,
                                 "updated": T0 + n * 600 + 30, "created": T0 + n * 600})
        return {"job": jobs, "invoice": invoices, "location": locations, "company": companies}

    def _session(self, request: Request) -> str | None:
        token = request.cookies.get("PHPSESSID")
        if token and token in self.sessions:
            return token
        return None

    def _routes(self) -> None:
        app = self.app

        @app.post("/api/auth")
        async def login(request: Request):
            try:
                body = await request.json()
            except ValueError:
                return _error(400, "Request body must be JSON")
            ok = (hmac.compare_digest(str(body.get("username", "")).encode(), USERNAME.encode())
                  and hmac.compare_digest(str(body.get("password", "")).encode(), PASSWORD.encode()))
            if not ok:
                return _error(403, "Invalid username or password")
            with self.state.lock:
                token = "%032x" % self.state.random.getrandbits(128)
                self.sessions[token] = USERNAME
                self.sessions_opened += 1
                while len(self.sessions) > self.max_sessions:
                    self.sessions.popitem(last=False)  # the oldest session goes, silently
            response = JSONResponse({"data": {"authenticated": True, "authToken": token,
                                              "user": {"id": 1, "username": USERNAME}}})
            response.set_cookie("PHPSESSID", token, httponly=True)
            return response

        @app.delete("/api/auth")
        def logout(request: Request):
            token = self._session(request)
            if token is None:
                return _error(403, "Not authenticated")
            with self.state.lock:
                self.sessions.pop(token, None)
            return {"messages": {"success": ["Logged out"]}}

        @app.get("/api/{entity}")
        def list_entity(entity: str, request: Request, page: int = 1, limit: int | None = None,
                        updatedAfter: int | None = None, status: str | None = None):  # noqa: N803
            if self._session(request) is None:
                return _error(401, "Authentication required")
            if entity not in PLURAL:
                return _error(404, f"Unknown resource {entity}")
            size = min(limit or DEFAULT_LIMITS[entity], LIST_LIMITS[entity])
            if page < 1 or size < 1:
                return JSONResponse({"messages": {"validation": ["page and limit must be positive"]}}, status_code=400)
            rows = self.records[entity]
            if updatedAfter is not None:
                rows = [r for r in rows if r["updated"] >= updatedAfter]
            if entity == "job":
                wanted = {"scheduled"} if status is None else (
                    set(JOB_STATUSES) - {"canceled"} if status == "all" else set(status.split(",")))
                rows = [r for r in rows if r["status"] in wanted]
            total_pages = max(1, -(-len(rows) // size))
            chunk = rows[(page - 1) * size: page * size]
            return {"data": {"totalPages": total_pages, "page": page, PLURAL[entity]: chunk}}

        @app.get("/api/{entity}/{record_id}")
        def get_entity(entity: str, record_id: int, request: Request):
            if self._session(request) is None:
                return _error(401, "Authentication required")
            for record in self.records.get(entity, []):
                if record["id"] == record_id:
                    return {"data": record}
            return _error(404, f"{entity} {record_id} not found")
