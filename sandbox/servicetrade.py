"""ServiceTrade's session API (docs/integrations/servicetrade.md): what our hook must survive.

- `POST /api/auth` opens a session (`authToken`, also set as the PHPSESSID cookie); a user keeps at
  most `max_sessions` of them and the oldest is evicted silently: its next call answers 401.
- `DELETE /api/auth` ends the session.
- lists are `{"data": {"totalPages", "page", "<plural>": [...]}}`, `page` 1-based, `limit` capped,
  `updatedAfter` and `updatedBefore` in unix seconds and both inclusive ("on or after", "on or
  before"); jobs default to `status=scheduled` unless a status is given (`all` = every status but
  canceled; a comma list selects those). Invoices are sorted by name, ServiceTrade's default sort.
- `PUT /api/invoice/{id}` takes the documented writable fields and stamps `updated` with the
  current time, as any edit in ServiceTrade does.

Invoices carry what the TrustFile extractor reads, shaped as we understand ServiceTrade's invoice
resource (docs/integrations/servicetrade.md lists what is documented and what is assumed): type
(`invoice`, and a few `vendorbill`s: bills from subcontractors, i.e. purchases), status (`void` on
some), `transactionDate`, `customer`, `location` with its embedded address, `items` (quantity,
price, totalPrice, taxable, libItem), `subtotal`, `taxAmount` and `totalPrice`. Real data is
messy, and so is this: some locations lack a state or a postal code, some invoices are credits
with negative totals, a bulk edit stamps several invoices with the same second, and one invoice
was hand-edited so that its totalPrice is a cent off its items and tax.
"""
from __future__ import annotations

import hmac
import random
import time
from collections import OrderedDict
from decimal import ROUND_HALF_UP, Decimal

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
CENT = Decimal("0.01")
# (state, city, postal code, sales tax rate): destination-based, as ServiceTrade suggests it
PLACES = (("CA", "Fresno", "93722", Decimal("0.0825")), ("NV", "Reno", "89502", Decimal("0.08265")),
          ("AZ", "Phoenix", "85004", Decimal("0.086")), ("OR", "Portland", "97205", Decimal("0")))
INVOICE_STATUSES = ("ok", "sent", "paid", "processed", "pending_accounting", "internal_review", "failed")
INVOICE_WRITABLE = {"name", "invoiceNumber", "notes", "partial", "assignedUserId", "contractId", "transactionDate"}
LABOR = {"id": 301, "name": "Labor", "type": "labor"}
TRIP = {"id": 302, "name": "Trip Charge", "type": "travel"}
PARTS = [{"id": 310 + n, "name": name, "type": "part"} for n, name in enumerate(
    ("Sprinkler Head", "Smoke Detector", "Backflow Valve Kit", "Extinguisher 10 lb", "Pull Station"))]


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

    def dump(self) -> dict:
        """Records (edits included) and open sessions, oldest first (caller holds the state lock)."""
        return {"sessions": list(self.sessions.items()), "sessions_opened": self.sessions_opened,
                "records": self.records}

    def load(self, saved: dict) -> None:
        self.reset()
        self.sessions = OrderedDict((token, user) for token, user in saved["sessions"])
        self.sessions_opened = int(saved["sessions_opened"])
        self.records = {entity: list(rows) for entity, rows in saved["records"].items()}

    def inspect(self) -> dict:
        return {"open_sessions": len(self.sessions), "sessions_opened": self.sessions_opened,
                "records": {entity: len(rows) for entity, rows in self.records.items()}}

    def _generate(self) -> dict[str, list[dict]]:
        rng = random.Random(self.state.seed)
        companies = [{"id": 5000 + n, "name": f"Customer {n}", "status": "active",
                      "updated": T0 + n * 60, "created": T0} for n in range(30)]
        locations = [self._location(n, companies[n % 30]) for n in range(60)]
        jobs, invoices = [], []
        for n in range(self.job_count):
            status = JOB_STATUSES[rng.randrange(len(JOB_STATUSES))]
            jobs.append({"id": 10_000 + n, "number": f"J-{n:05d}", "status": status, "type": "repair",
                         "location": {"id": locations[n % 60]["id"]}, "customer": {"id": companies[n % 30]["id"]},
                         "completedOn": T0 + n * 3600 if status in ("completed", "closed") else None,
                         "updated": T0 + n * 600, "created": T0})
            if status in ("completed", "closed"):
                invoices.append(self._invoice(rng, n, len(invoices), jobs[-1], companies[n % 30], locations[n % 60]))
                if len(invoices) % 20 == 1:
                    invoices.append(self._vendor_bill(rng, n, jobs[-1], locations[n % 60]))
        for invoice in invoices[20:24]:  # one bulk "mark as sent": the same second on every one
            invoice["updated"] = invoices[20]["updated"]
        invoices.sort(key=lambda i: (i["name"], i["id"]))
        return {"job": jobs, "invoice": invoices, "location": locations, "company": companies}

    @staticmethod
    def _location(n: int, company: dict) -> dict:
        state, city, postal_code, _ = PLACES[n % len(PLACES)]
        address = {"street": f"{n} Depot Rd", "city": city, "state": state, "postalCode": postal_code}
        if n % 13 == 5:
            address["state"] = None
        if n % 17 == 3:
            address["postalCode"] = ""
        return {"id": 7000 + n, "name": f"Site {n}", "company": {"id": company["id"], "name": company["name"]},
                "address": address, "taxable": n % 11 != 4, "status": "active",
                "updated": T0 + n * 90, "created": T0}

    @staticmethod
    def _items(rng: random.Random, first_id: int, credit: bool) -> list[dict]:
        if credit:
            lines = [("Credit: warranty rework", rng.choice(PARTS), Decimal(1),
                      -Decimal(rng.randrange(2_000, 40_000)) / 100, True)]
        else:
            lines = [("Labor", LABOR, Decimal(rng.randrange(2, 13)) / 2, Decimal("95.00"), False)]
            for _ in range(rng.randrange(3)):
                part = rng.choice(PARTS)
                lines.append((part["name"], part, Decimal(rng.randrange(1, 5)),
                              Decimal(rng.randrange(500, 40_000)) / 100, True))
            if rng.random() < 0.5:
                lines.append(("Trip charge", TRIP, Decimal(1), Decimal("49.00"), False))
        return [{"id": first_id + k, "description": description, "libItem": lib_item, "quantity": float(quantity),
                 "price": float(price), "totalPrice": float((quantity * price).quantize(CENT)), "taxable": taxable}
                for k, (description, lib_item, quantity, price, taxable) in enumerate(lines)]

    def _invoice(self, rng: random.Random, n: int, index: int, job: dict, company: dict, location: dict) -> dict:
        items = self._items(rng, 40_000 + n * 10, credit=index % 15 == 7)
        subtotal = sum((Decimal(str(i["totalPrice"])) for i in items), Decimal("0.00"))
        taxable = sum((Decimal(str(i["totalPrice"])) for i in items if i["taxable"]), Decimal("0.00"))
        rate = PLACES[(location["id"] - 7000) % len(PLACES)][3] if location["taxable"] else Decimal(0)
        tax = (taxable * rate).quantize(CENT, ROUND_HALF_UP)
        total = subtotal + tax + (CENT if index == 9 else 0)   # the hand-edited total
        status = "void" if index % 11 == 3 else INVOICE_STATUSES[rng.randrange(len(INVOICE_STATUSES))]
        return {"id": 20_000 + n, "invoiceNumber": f"INV-{n:05d}", "name": f"{location['name']} {job['number']}",
                "type": "invoice", "status": status, "partial": False,
                "transactionDate": T0 + n * 3600, "job": {"id": job["id"], "number": job["number"]},
                "customer": {"id": company["id"], "name": company["name"]},
                "location": {"id": location["id"], "name": location["name"], "address": dict(location["address"])},
                "items": items, "subtotal": float(subtotal), "taxAmount": float(tax), "totalPrice": float(total),
                "updated": T0 + n * 600 + (900 if status == "void" else 30), "created": T0 + n * 600}

    def _vendor_bill(self, rng: random.Random, n: int, job: dict, location: dict) -> dict:
        items = self._items(rng, 50_000 + n * 10, credit=False)
        subtotal = sum((Decimal(str(i["totalPrice"])) for i in items), Decimal("0.00"))
        return {"id": 30_000 + n, "invoiceNumber": f"VB-{n:05d}", "name": f"Subcontract {job['number']}",
                "type": "vendorbill", "status": "ok", "partial": False, "transactionDate": T0 + n * 3600,
                "job": {"id": job["id"], "number": job["number"]}, "vendor": {"id": 9100, "name": "Ace Subcontracting"},
                "location": {"id": location["id"], "name": location["name"], "address": dict(location["address"])},
                "items": items, "subtotal": float(subtotal), "taxAmount": 0.0, "totalPrice": float(subtotal),
                "updated": T0 + n * 600 + 45, "created": T0 + n * 600}

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
                token = f"{self.state.random.getrandbits(128):032x}"
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
                        updatedAfter: int | None = None, updatedBefore: int | None = None,  # noqa: N803
                        status: str | None = None):
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
            if updatedBefore is not None:
                rows = [r for r in rows if r["updated"] <= updatedBefore]
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

        @app.put("/api/invoice/{record_id}")
        async def update_invoice(record_id: int, request: Request):
            if self._session(request) is None:
                return _error(401, "Authentication required")
            try:
                body = await request.json()
            except ValueError:
                return _error(400, "Request body must be JSON")
            unknown = sorted(set(body) - INVOICE_WRITABLE)
            if unknown:
                return JSONResponse({"messages": {"validation": [f"{field} cannot be set" for field in unknown]}},
                                    status_code=400)
            with self.state.lock:
                for record in self.records["invoice"]:
                    if record["id"] == record_id:
                        record.update(body, updated=int(time.time()))
                        self.records["invoice"].sort(key=lambda i: (i["name"], i["id"]))
                        return {"data": record}
            return _error(404, f"invoice {record_id} not found")
