"""ServiceTrade's session API (docs/integrations/servicetrade.md): what our hook must survive.

- `POST /api/auth` opens a session (`authToken`, also set as the PHPSESSID cookie); a user keeps at
  most `max_sessions` of them and the oldest is evicted silently: its next call answers 401.
- `DELETE /api/auth` ends the session.
- lists are `{"data": {"totalPages", "page", "<plural>": [...]}}`, `page` 1-based, `limit` capped,
  `updatedAfter` and `updatedBefore` in unix seconds and both inclusive ("on or after", "on or
  before"); jobs default to `status=scheduled` unless a status is given (`all` = every status but
  canceled; a comma list selects those). Invoices are sorted by name, ServiceTrade's default sort.
- `PUT /api/invoice/{id}` takes the documented writable fields and stamps `updated` with the
  current time, as any edit in ServiceTrade does; so do `PUT /api/job/{id}`, `POST`/`PUT`/`DELETE
  /api/jobitem[/{id}]` and `DELETE /api/location/{id}` (a deleted record answers 404 afterwards).
- Job items (`/api/jobitem`, list key `jobItems`, `jobId` filter) are 1-4 per job, generated from
  their own random stream (`seed + 1`) so the jobs, invoices and locations stay what they were.
- Webhooks (vendors.md §2.4, `sandbox/servicetrade_webhooks.py`): `POST/GET/PUT/DELETE /api/webhook`
  subscriptions; every write above queues notifications (a job item edit: the item, then its job twice,
  as ServiceTrade fires several for one edit), delivered in batches, retried, duplicated and reordered.
  Entity `uri`s are built on the base URL the last subscription was created through (e.g.
  `http://127.0.0.1:8090/servicetrade/api/job/10003`), so a receiver can follow them to this sandbox.
- Control (`PUT /_sandbox/control/servicetrade`): `webhooks` (delivery settings), `drop_notifications`,
  `notify` (a person editing, possibly repeatedly), `flush` (wait for deliveries); `inspect()` adds
  `webhooks` with the delivery counters and the last 1000 attempts. See `control()`.

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
from sandbox.servicetrade_webhooks import ACTIONS, ENTITY_TYPES, WebhookDeliveries, WebhookError, check_settings

NAME = "servicetrade"
USERNAME, PASSWORD = "sandbox-user", "sandbox-password-st"
JOB_STATUSES = ("new", "canceled", "bidding", "scheduled", "completed", "pending_invoice", "sending_invoice", "closed")
# jobitem's limits are not documented: a default page smaller than what callers ask for keeps paging honest
LIST_LIMITS = {"job": 2000, "invoice": 2000, "location": 5000, "company": 2000, "jobitem": 1000}
DEFAULT_LIMITS = {"job": 2000, "invoice": 2000, "location": 10, "company": 100, "jobitem": 100}
PLURAL = {"job": "jobs", "invoice": "invoices", "location": "locations", "company": "companies",
          "jobitem": "jobItems"}
JOB_TYPES = ("unknown", "repair", "construction", "upgrade", "service_call", "urgent_service_call",
             "priority_service_call", "emergency_service_call", "cleaning", "inspection", "priority_inspection",
             "reinspection", "survey", "preventative_maintenance", "quality_assurance", "inspection_repair",
             "delivery", "pickup", "exchange", "sales", "installation", "warranty", "training", "testing",
             "administrative", "replacement", "design", "hookup")
JOB_WRITABLE = {"status", "description", "customerPo", "type"}
JOBITEM_WRITABLE = {"name", "quantity", "price"}
FIRST_JOBITEM_ID = 60_000
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


def _invalid(*messages: str) -> JSONResponse:
    return JSONResponse({"messages": {"validation": list(messages)}}, status_code=400)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _now() -> int:
    return int(time.time())


async def _json_object(request: Request) -> dict | JSONResponse:
    """The request's JSON object body, or the answer refusing it."""
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "Request body must be JSON")
    if not isinstance(body, dict):
        return _error(400, "Request body must be a JSON object")
    return body


class ServiceTradeSandbox:
    name = NAME

    def __init__(self, state: SandboxState, *, jobs: int = 240, max_sessions: int = 3) -> None:
        self.state = state
        self.job_count = jobs
        self.max_sessions = max_sessions
        self.app = FastAPI(title="ServiceTrade sandbox")
        install_faults(self.app, NAME, state, lambda: _error(429, "Too Many Requests"))
        self.webhooks = WebhookDeliveries(state.seed)
        self.reset()
        self._routes()

    def reset(self) -> None:
        self.sessions: OrderedDict[str, str] = OrderedDict()   # token -> username, oldest first
        self.sessions_opened = 0
        self.records = self._generate()
        self.next_jobitem_id = max(i["id"] for i in self.records["jobitem"]) + 1
        self.webhooks.reset()

    def dump(self) -> dict:
        """Records (edits and deletions included), open sessions, oldest first, and webhook subscriptions
        (caller holds the state lock). Queued and in-flight notifications are not kept."""
        return {"sessions": list(self.sessions.items()), "sessions_opened": self.sessions_opened,
                "records": self.records, "next_jobitem_id": self.next_jobitem_id, "webhooks": self.webhooks.dump()}

    def load(self, saved: dict) -> None:
        self.reset()
        self.sessions = OrderedDict((token, user) for token, user in saved["sessions"])
        self.sessions_opened = int(saved["sessions_opened"])
        # a file saved before job items existed keeps the generated ones
        self.records.update({entity: list(rows) for entity, rows in saved["records"].items()})
        self.next_jobitem_id = int(saved.get("next_jobitem_id", self.next_jobitem_id))
        if "webhooks" in saved:
            self.webhooks.load(saved["webhooks"])

    def inspect(self) -> dict:
        return {"open_sessions": len(self.sessions), "sessions_opened": self.sessions_opened,
                "records": {entity: len(rows) for entity, rows in self.records.items()},
                "webhooks": self.webhooks.summary()}

    # ---- control: what a person or ServiceTrade itself does, for the tests ----------------------------

    def control(self, payload: dict) -> dict | JSONResponse:
        """`webhooks`: delivery settings; `drop_notifications`: N; `notify`: [{entity, id, action, times,
        every_seconds, userId}]; `flush`: {timeout}. Checked whole first: a bad call answers 400 and changes
        nothing. Answers `inspect()`, plus `flushed` (true: everything delivered or dropped) after a flush."""
        try:
            plan = self._control_plan(payload)
        except WebhookError as exc:
            return JSONResponse({"message": f"servicetrade control refused: {exc}"}, status_code=400)
        if "webhooks" in plan:
            self.webhooks.configure(plan["webhooks"])
        if "drop_notifications" in plan:
            self.webhooks.drop_notifications(plan["drop_notifications"])
        for step in plan.get("notify", []):
            edit = self._edit_action(step)
            edit()                       # the first edit now; the others on a thread, so this call returns
            if step["times"] > 1:
                self.webhooks.script([(step["every_seconds"], edit)] * (step["times"] - 1))
        flushed = self.webhooks.flush(plan["flush"]) if "flush" in plan else None
        answer = self.inspect()
        if flushed is not None:
            answer["flushed"] = flushed
        return answer

    def _control_plan(self, payload: dict) -> dict:
        if not isinstance(payload, dict):
            raise WebhookError("the payload must be an object")
        unknown = sorted(set(payload) - {"webhooks", "drop_notifications", "notify", "flush"})
        if unknown:
            raise WebhookError(f"unknown key(s) {unknown}; known: drop_notifications, flush, notify, webhooks")
        plan: dict = {}
        if "webhooks" in payload:
            plan["webhooks"] = check_settings(payload["webhooks"])
        if "drop_notifications" in payload:
            count = payload["drop_notifications"]
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise WebhookError("drop_notifications must be an integer >= 0")
            plan["drop_notifications"] = count
        if "notify" in payload:
            if not isinstance(payload["notify"], list):
                raise WebhookError("notify must be a list")
            plan["notify"] = [self._notify_step(step) for step in payload["notify"]]
        if "flush" in payload:
            flush = payload["flush"] if isinstance(payload["flush"], dict) else {}
            if not isinstance(payload["flush"], dict) or set(flush) - {"timeout"}:
                raise WebhookError("flush must be {\"timeout\": seconds}")
            timeout = flush.get("timeout", 30)
            if not _number(timeout) or not 0 <= timeout <= 600:
                raise WebhookError("flush timeout must be seconds between 0 and 600")
            plan["flush"] = float(timeout)
        return plan

    def _notify_step(self, step: object) -> dict:
        if not isinstance(step, dict):
            raise WebhookError("each notify entry must be an object")
        unknown = sorted(set(step) - {"entity", "id", "action", "times", "every_seconds", "userId"})
        if unknown:
            raise WebhookError(f"unknown notify key(s) {unknown}")
        checked = {"entity": step.get("entity"), "id": step.get("id"), "action": step.get("action", "updated"),
                   "times": step.get("times", 1), "every_seconds": step.get("every_seconds", 0),
                   "userId": step.get("userId", 1)}
        if checked["entity"] not in ENTITY_TYPES:
            raise WebhookError(f"notify entity must be one of {list(ENTITY_TYPES)}")
        if checked["action"] not in ACTIONS:
            raise WebhookError(f"notify action must be one of {list(ACTIONS)}")
        if isinstance(checked["id"], bool) or not isinstance(checked["id"], int):
            raise WebhookError("notify id must be an integer")
        with self.state.lock:
            if self._find(checked["entity"], checked["id"]) is None:
                raise WebhookError(f"no {checked['entity']} {checked['id']}")
        times = checked["times"]
        if isinstance(times, bool) or not isinstance(times, int) or not 1 <= times <= 10_000:
            raise WebhookError("notify times must be an integer from 1 to 10000")
        if not _number(checked["every_seconds"]) or not 0 <= checked["every_seconds"] <= 3600:
            raise WebhookError("notify every_seconds must be between 0 and 3600")
        if checked["userId"] is not None and (isinstance(checked["userId"], bool)
                                              or not isinstance(checked["userId"], int)):
            raise WebhookError("notify userId must be an integer or null")
        return checked

    def _edit_action(self, step: dict):
        """One edit by a person: `updated`/`created` stamp the record now, `deleted` removes it; each queues its
        notification (exactly that one: a job item's job is not notified here)."""
        def edit() -> None:
            with self.state.lock:
                if step["action"] == "deleted":
                    self._remove(step["entity"], step["id"])
                else:
                    record = self._find(step["entity"], step["id"])
                    if record is not None:
                        record["updated"] = _now()
                self.webhooks.notify(step["entity"], step["id"], step["action"], step["userId"])
        return edit

    # ---- records -----------------------------------------------------------------------------------

    def _find(self, entity: str, record_id: int) -> dict | None:
        for record in self.records.get(entity, []):
            if record["id"] == record_id:
                return record
        return None

    def _remove(self, entity: str, record_id: int) -> dict | None:
        rows = self.records.get(entity, [])
        for index, record in enumerate(rows):
            if record["id"] == record_id:
                return rows.pop(index)
        return None

    def _job_changed(self, job_id: int) -> None:
        """(state lock held) A job item's edit changes its job, and ServiceTrade says so twice: the edit
        (by the user), then the job's recomputed total (by the system)."""
        job = self._find("job", job_id)
        if job is not None:
            job["updated"] = _now()
        self.webhooks.notify("job", job_id, "updated", 1)
        self.webhooks.notify("job", job_id, "updated", None)

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
        return {"job": jobs, "invoice": invoices, "location": locations, "company": companies,
                "jobitem": self._job_items(jobs)}

    def _job_items(self, jobs: list[dict]) -> list[dict]:
        """1-4 items per job, from a random stream of their own: the one above must stay untouched."""
        rng = random.Random(self.state.seed + 1)
        items: list[dict] = []
        for job in jobs:
            for k in range(rng.randrange(1, 5)):
                if k == 0:
                    name, quantity, price = "Labor", rng.randrange(1, 13) / 2, 95.0
                else:
                    part = rng.choice(PARTS + [TRIP])
                    name, quantity = part["name"], float(rng.randrange(1, 5))
                    price = 49.0 if part is TRIP else rng.randrange(500, 40_000) / 100
                items.append({"id": FIRST_JOBITEM_ID + len(items), "job": {"id": job["id"]}, "name": name,
                              "quantity": quantity, "price": price, "updated": job["updated"] + 5 * (k + 1),
                              "created": job["created"]})
        return items

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

    async def _signed_in_body(self, request: Request) -> dict | JSONResponse:
        """A write's JSON object body, or the answer refusing it: 401 without a session, 400 without an object."""
        if self._session(request) is None:
            return _error(401, "Authentication required")
        return await _json_object(request)

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

        self._webhook_routes()
        self._write_routes()

        @app.get("/api/{entity}")
        def list_entity(entity: str, request: Request, page: int = 1, limit: int | None = None,
                        updatedAfter: int | None = None, updatedBefore: int | None = None,  # noqa: N803
                        status: str | None = None, jobId: int | None = None):  # noqa: N803
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
            if entity == "jobitem" and jobId is not None:
                rows = [r for r in rows if r["job"]["id"] == jobId]
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
            body = await self._signed_in_body(request)
            if isinstance(body, JSONResponse):
                return body
            unknown = sorted(set(body) - INVOICE_WRITABLE)
            if unknown:
                return JSONResponse({"messages": {"validation": [f"{field} cannot be set" for field in unknown]}},
                                    status_code=400)
            with self.state.lock:
                for record in self.records["invoice"]:
                    if record["id"] == record_id:
                        record.update(body, updated=_now())
                        self.records["invoice"].sort(key=lambda i: (i["name"], i["id"]))
                        self.webhooks.notify("invoice", record_id, "updated")
                        return {"data": record}
            return _error(404, f"invoice {record_id} not found")

    def _webhook_routes(self) -> None:
        """`/api/webhook`: the account's subscriptions (registered before the generic list and get)."""
        app = self.app

        @app.post("/api/webhook")
        async def create_webhook(request: Request):
            body = await self._signed_in_body(request)
            if isinstance(body, JSONResponse):
                return body
            try:
                # the sandbox's own base (".../servicetrade", the mount included) for the entities' uri
                base = str(request.url.replace(query="")).rstrip("/").removesuffix("/api/webhook")
                created = self.webhooks.subscribe(body, base)
            except WebhookError as exc:
                return _invalid(str(exc))
            return {"data": created}

        @app.get("/api/webhook")
        def list_webhooks(request: Request):
            if self._session(request) is None:
                return _error(401, "Authentication required")
            return {"data": {"webhooks": self.webhooks.subscriptions_list()}}

        @app.get("/api/webhook/{webhook_id}")
        def get_webhook(webhook_id: int, request: Request):
            if self._session(request) is None:
                return _error(401, "Authentication required")
            found = self.webhooks.subscription(webhook_id)
            return _error(404, f"webhook {webhook_id} not found") if found is None else {"data": found}

        @app.put("/api/webhook/{webhook_id}")
        async def update_webhook(webhook_id: int, request: Request):
            body = await self._signed_in_body(request)
            if isinstance(body, JSONResponse):
                return body
            try:
                updated = self.webhooks.update(webhook_id, body)
            except WebhookError as exc:
                return _invalid(str(exc))
            return _error(404, f"webhook {webhook_id} not found") if updated is None else {"data": updated}

        @app.delete("/api/webhook/{webhook_id}")
        def delete_webhook(webhook_id: int, request: Request):
            if self._session(request) is None:
                return _error(401, "Authentication required")
            if not self.webhooks.unsubscribe(webhook_id):
                return _error(404, f"webhook {webhook_id} not found")
            return {"messages": {"success": [f"webhook {webhook_id} deleted"]}}

    def _write_routes(self) -> None:
        """Job, job item and location writes: each stamps `updated` and queues its notifications."""
        app = self.app

        @app.put("/api/job/{record_id}")
        async def update_job(record_id: int, request: Request):
            body = await self._signed_in_body(request)
            if isinstance(body, JSONResponse):
                return body
            problems = [f"{field} cannot be set" for field in sorted(set(body) - JOB_WRITABLE)]
            if "status" in body and body["status"] not in JOB_STATUSES:
                problems.append(f"status must be one of {', '.join(JOB_STATUSES)}")
            if "type" in body and body["type"] not in JOB_TYPES:
                problems.append("type is not a job type")
            if "customerPo" in body and (not isinstance(body["customerPo"], str) or len(body["customerPo"]) > 40):
                problems.append("customerPo must be a string of at most 40 characters")
            if "description" in body and not isinstance(body["description"], str):
                problems.append("description must be a string")
            if problems:
                return _invalid(*problems)
            with self.state.lock:
                record = self._find("job", record_id)
                if record is None:
                    return _error(404, f"job {record_id} not found")
                record.update(body, updated=_now())
                self.webhooks.notify("job", record_id, "updated")
                return {"data": record}

        def item_problems(body: dict, creating: bool) -> list[str]:
            writable = JOBITEM_WRITABLE | ({"jobId"} if creating else set())
            problems = [f"{field} cannot be set" for field in sorted(set(body) - writable)]
            if (creating or "name" in body) and (not isinstance(body.get("name"), str) or not body["name"].strip()):
                problems.append("name is required")
            for field in ("quantity", "price"):
                if field in body and not _number(body[field]):
                    problems.append(f"{field} must be a number")
            if creating:
                job_id = body.get("jobId")
                if isinstance(job_id, bool) or not isinstance(job_id, int):
                    problems.append("jobId is required")
                elif self._find("job", job_id) is None:
                    problems.append(f"jobId {job_id} does not exist")
            return problems

        @app.post("/api/jobitem")
        async def create_job_item(request: Request):
            body = await self._signed_in_body(request)
            if isinstance(body, JSONResponse):
                return body
            with self.state.lock:
                problems = item_problems(body, creating=True)
                if problems:
                    return _invalid(*problems)
                now = _now()
                record = {"id": self.next_jobitem_id, "job": {"id": body["jobId"]}, "name": body["name"],
                          "quantity": float(body.get("quantity", 1)), "price": float(body.get("price", 0)),
                          "updated": now, "created": now}
                self.next_jobitem_id += 1
                self.records["jobitem"].append(record)
                self.webhooks.notify("jobitem", record["id"], "created")
                self._job_changed(body["jobId"])
                return {"data": record}

        @app.put("/api/jobitem/{record_id}")
        async def update_job_item(record_id: int, request: Request):
            body = await self._signed_in_body(request)
            if isinstance(body, JSONResponse):
                return body
            problems = item_problems(body, creating=False)
            if problems:
                return _invalid(*problems)
            with self.state.lock:
                record = self._find("jobitem", record_id)
                if record is None:
                    return _error(404, f"jobitem {record_id} not found")
                record.update({k: float(v) if k != "name" else v for k, v in body.items()}, updated=_now())
                self.webhooks.notify("jobitem", record_id, "updated")
                self._job_changed(record["job"]["id"])
                return {"data": record}

        @app.delete("/api/jobitem/{record_id}")
        def delete_job_item(record_id: int, request: Request):
            if self._session(request) is None:
                return _error(401, "Authentication required")
            with self.state.lock:
                record = self._remove("jobitem", record_id)
                if record is None:
                    return _error(404, f"jobitem {record_id} not found")
                self.webhooks.notify("jobitem", record_id, "deleted")
                self._job_changed(record["job"]["id"])
            return {"messages": {"success": [f"jobitem {record_id} deleted"]}}

        @app.delete("/api/location/{record_id}")
        def delete_location(record_id: int, request: Request):
            if self._session(request) is None:
                return _error(401, "Authentication required")
            with self.state.lock:
                if self._remove("location", record_id) is None:
                    return _error(404, f"location {record_id} not found")
                self.webhooks.notify("location", record_id, "deleted")
            return {"messages": {"success": [f"location {record_id} deleted"]}}
