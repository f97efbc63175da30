"""TrackVia's openapi (vendors.md §1) with the OMS-Pro app seeded: what our hook must survive.

- Every call needs `?user_key=` (the 3scale gateway answers 403 plain text `Authentication
  failed` without it) and the API user's token, as `Authorization: Bearer` or `?access_token=`; a missing
  or wrong token 401 `{"error": "invalid_token", ...}`, an expired one `Access token expired: ...`.
- Apps and views by exact name; a view's records paged with `start` (0-based) and `max` (1000 by default,
  over 100000 refused) in `{"structure", "data", "totalCount"}`; `find?q=` a substring search; one record;
  batch create (POST an array); update one record per PUT; DELETE answered as the vendor does, and counted.
- Type 1 errors `{"errors": [], "message", "name", "code"}`: a missing view or record, or a field the
  view does not have, is 401 accessDenied; a value that does not convert is 400 invalidRequest.
- Values as the vendor returns them: numbers and currency as strings, dates `YYYY-MM-DD`, datetimes ISO-8601
  in UTC, drop-downs strings from their `choices`, a relationship as its parent's Record ID with the parent's
  id under `<field>(id)` (set with the parent's id).
- The gateway's hourly limit (5000 by default, clock hours of a movable clock): past it 429 plain text
  `Usage limit exceeded` and no limit headers (none are documented). It counts every request with the
  right user_key, whatever its token.
"""
from __future__ import annotations

import datetime as dt
import hmac
import random
import time
from decimal import Decimal, InvalidOperation

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from sandbox.core import SandboxState, install_faults

NAME = "trackvia"
USER_KEY = "sandbox-tv-user-key-7c1e"
TOKEN = "sandbox-tv-api-token-51d0"
EXPIRED_TOKEN = "sandbox-tv-expired-token-0000"
APP = "OMS-Pro"
APP_ID = 12
HOURLY_LIMIT = 5000
DEFAULT_MAX, ABSOLUTE_MAX = 1000, 100_000
API_USER = ("OMS-Pro API", 9001)
PEOPLE = (("Dana Ortiz", 5001), ("Luis Romero", 5002), ("Kim Nguyen", 5003))
SEED_END = 1_764_547_200        # 2025-12-01T00:00:00Z: every seeded record was last updated before it
TICKET_STATUSES = ("Open", "Scheduled", "In Progress", "Completed", "Cancelled")
VISIT_STATUSES = ("Scheduled", "In Progress", "Completed", "Cancelled")
TECHNICIANS = ("Ari Patel", "Bea Lindqvist", "Carlos Mendes", "Dee Okafor", "Eli Moss", "Fay Chen")
CUSTOMER_WORDS = ("Acme", "Bayside", "Cedar", "Delta", "Evergreen", "Foothill", "Granite", "Harbor")
CUSTOMER_KINDS = ("Fire Protection", "Property Group", "Medical Center", "School District", "Logistics")
# QBO sandbox invoices are DocNumber IN-141 .. IN-180 (40 per company): tickets 1..36 carry IN-141 .. IN-176,
# the last four invoices have no ticket (a payment on them is unmatched)
INVOICED_TICKETS = 36
SEEDED = {"Customers": 40, "Tickets": 250, "Site Visits": 400}

# table -> (identifier field, its prefix for generated values, [(field, type, choices or parent table)])
TABLES: dict[str, tuple[str, str, list[tuple[str, str, object]]]] = {
    "Customers": ("Customer Name", "", [("Customer Name", "shortAnswer", None),
                                        ("QBO Customer Id", "shortAnswer", None)]),
    "Tickets": ("Ticket Number", "T-", [
        ("Ticket Number", "identifier", None), ("Customer", "relationship", "Customers"),
        ("Status", "dropDown", TICKET_STATUSES), ("Status Changed", "datetime", None),
        ("Completed Date", "date", None), ("QBO Invoice Number", "shortAnswer", None),
        ("Invoice Total", "currency", None), ("Amount Paid", "currency", None), ("Payment Date", "date", None),
        ("QBO Payment IDs", "paragraph", None), ("Paid", "dropDown", ("Yes", "No")),
        ("Priority", "dropDown", ("Low", "Normal", "High")),
        ("Region", "dropDown", ("North", "South", "East", "West"))]),
    "Site Visits": ("Visit Number", "SV-", [
        ("Visit Number", "identifier", None), ("Ticket", "relationship", "Tickets"),
        ("Status", "dropDown", VISIT_STATUSES), ("Status Changed", "datetime", None),
        ("Completed Date", "date", None), ("Technician", "shortAnswer", None)]),
}
SYSTEM_FIELDS = (("Record ID", "identifier"), ("Created", "datetime"), ("Updated", "datetime"),
                 ("Created By User", "user"), ("Last User", "user"))
# view id -> (name, table, sorted by, the table's default view)
VIEWS = {101: ("All Customers", "Customers", "Record ID", True),
         201: ("All Tickets", "Tickets", "Record ID", True),
         202: ("Tickets by Updated", "Tickets", "Updated", False),
         301: ("All Site Visits", "Site Visits", "Record ID", True),
         302: ("Site Visits by Updated", "Site Visits", "Updated", False)}


class ApiError(Exception):
    """A Type 1 error body, raised where the request is found wanting."""

    def __init__(self, status: int, name: str, message: str) -> None:
        super().__init__(message)
        self.status, self.name, self.message = status, name, message

    def response(self) -> JSONResponse:
        return JSONResponse({"errors": [], "message": self.message, "name": self.name, "code": str(self.status)},
                            status_code=self.status)


def _denied(what: str) -> ApiError:
    return ApiError(401, "accessDenied", f"DENIED!!! - {what} either does not exist or you do not have access to it.")


def _invalid(detail: str) -> ApiError:
    return ApiError(400, "invalidRequest", f"Invalid request submitted. {detail}")



def airflow_connection(sandbox_url: str, *, token: str = TOKEN, user_key: str = USER_KEY, **extra) -> dict:
    """The seeded app's account as an Airflow connection of type `trackvia`, as `make up`, the tests and the
    benchmarks write it (`extra`: hourly_limit, budget_headroom)."""
    return {"conn_type": "trackvia", "host": f"{sandbox_url}/trackvia", "password": token,
            "extra": {"api_key": user_key, **extra}}

def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(int(epoch), dt.timezone.utc).isoformat()


def _structure(table: str) -> list[dict]:
    """The view's field metadata: the table's fields, then the system ones (read only)."""
    base = 100 * (list(TABLES).index(table) + 1)
    fields = [(name, kind, spec, True) for name, kind, spec in TABLES[table][2]]
    fields += [(name, kind, None, False) for name, kind in SYSTEM_FIELDS]
    out = []
    for n, (name, kind, spec, writable) in enumerate(fields):
        writable = writable and kind != "identifier"
        entry = {"name": name, "type": kind, "required": False, "unique": kind == "identifier", "canRead": True,
                 "canUpdate": writable, "canCreate": writable, "fieldMetaId": base + n}
        if kind == "dropDown":
            entry["choices"] = list(spec)
        out.append(entry)
    return out


STRUCTURES = {table: _structure(table) for table in TABLES}


class TrackViaSandbox:
    name = NAME

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.app = FastAPI(title="TrackVia sandbox")
        self._gateway_middleware()
        install_faults(self.app, NAME, state, lambda: PlainTextResponse("Usage limit exceeded", status_code=429))
        self._handlers()
        self.reset()
        self._routes()

    # ---- state --------------------------------------------------------------------------------------

    SETTINGS = ("clock_offset", "frozen_at", "hourly_limit", "delete_requests", "put_requests", "post_requests")

    def reset(self) -> None:
        self.clock_offset = 0.0
        self.frozen_at: float | None = None             # the clock stopped there: edits stamped in one second
        self.hourly_limit = HOURLY_LIMIT
        self.delete_requests = self.put_requests = self.post_requests = 0
        self.updates: dict[str, dict[int, int]] = {table: {} for table in TABLES}   # API PUTs landed per record
        self.windows: dict[int, dict] = {}              # clock-hour start -> {"calls", "refused"}
        self.ranges = {table: [[1, count]] for table, count in SEEDED.items()}   # generated ids
        self.changes: dict[str, dict[int, dict | None]] = {table: {} for table in TABLES}  # None: deleted
        self._build()

    def dump(self) -> dict:
        """Settings, counters, hours, generated ranges and every changed record (caller holds the lock);
        the generated records themselves are remade from the seed."""
        return {**{name: getattr(self, name) for name in self.SETTINGS},
                "windows": [[start, counts] for start, counts in self.windows.items()], "ranges": self.ranges,
                "changes": {table: [[rid, rec] for rid, rec in rows.items()] for table, rows in self.changes.items()},
                "updates": {table: [[rid, n] for rid, n in rows.items()] for table, rows in self.updates.items()}}

    def load(self, saved: dict) -> None:
        self.reset()
        for name in self.SETTINGS:
            setattr(self, name, saved.get(name, getattr(self, name)))
        self.windows = {int(start): dict(counts) for start, counts in saved["windows"]}
        self.ranges = {table: [list(r) for r in ranges] for table, ranges in saved["ranges"].items()}
        self.changes = {table: {int(rid): rec for rid, rec in saved["changes"].get(table, [])} for table in TABLES}
        self.updates = {table: {int(rid): n for rid, n in saved.get("updates", {}).get(table, [])} for table in TABLES}
        self._build()

    def _build(self) -> None:
        self.records: dict[str, dict[int, dict]] = {table: {} for table in TABLES}
        for table, ranges in self.ranges.items():
            for first, last in ranges:
                for rid in range(first, last + 1):
                    self.records[table][rid] = self._generate(table, rid)
        for table, rows in self.changes.items():
            for rid, rec in rows.items():
                if rec is None:
                    self.records[table].pop(rid, None)
                else:
                    self.records[table][rid] = rec

    def _generate(self, table: str, rid: int) -> dict:
        """Record `rid` of a table, the same for a seed whatever else exists."""
        rng = random.Random(f"{self.state.seed}-{table}-{rid}")
        created = SEED_END - rng.randrange(40 * 86400, 400 * 86400)
        updated = min(SEED_END - 60, created + rng.randrange(0, 30 * 86400))
        person = PEOPLE[rid % len(PEOPLE)]
        rec = {"id": rid, "Created": _iso(created), "Updated": _iso(updated), "Created By User": person[0],
               "Created By User(id)": person[1], "Last User": PEOPLE[(rid + 1) % len(PEOPLE)][0],
               "Last User(id)": PEOPLE[(rid + 1) % len(PEOPLE)][1]}
        if table == "Customers":
            word, kind = CUSTOMER_WORDS[(rid - 1) % 8], CUSTOMER_KINDS[(rid - 1) // 8 % 5]
            return rec | {"Customer Name": f"{word} {kind}", "QBO Customer Id": str(rid)}
        statuses = TICKET_STATUSES if table == "Tickets" else VISIT_STATUSES
        status = rng.choices(statuses, weights=(2, 2, 1, 4, 1)[-len(statuses):])[0]
        changed = rng.randrange(created, updated + 1) if status != statuses[0] else created
        completed = (_iso(changed)[:10] if status == "Completed" and rng.random() > 0.2 else None)
        rec |= {"Status": status, "Status Changed": _iso(changed), "Completed Date": completed}
        if table == "Site Visits":
            return rec | {"Visit Number": f"SV-{rid:05d}", "Ticket(id)": rng.randrange(1, SEEDED["Tickets"] + 1),
                          "Technician": rng.choice(TECHNICIANS)}
        invoiced = rid <= INVOICED_TICKETS
        return rec | {"Ticket Number": f"T-{rid:05d}", "Customer(id)": rng.randrange(1, SEEDED["Customers"] + 1),
                      "QBO Invoice Number": f"IN-{140 + rid}" if invoiced else None,
                      "Invoice Total": f"{Decimal(rng.randrange(15000, 480000)) / 100:.2f}" if invoiced else None,
                      "Amount Paid": None, "Payment Date": None, "QBO Payment IDs": None,
                      "Paid": "No" if invoiced else None, "Priority": rng.choice(("Low", "Normal", "Normal", "High")),
                      "Region": rng.choice(("North", "South", "East", "West"))}

    def now(self) -> float:
        return self.frozen_at if self.frozen_at is not None else time.time() + self.clock_offset

    # ---- reading ------------------------------------------------------------------------------------

    def _render(self, table: str, rec: dict) -> dict:
        """A record as the API shows it: Record ID and relationship display values from their sources."""
        out = dict(rec, **{"Record ID": rec[TABLES[table][0]]})
        for name, kind, parent in TABLES[table][2]:
            if kind == "relationship":
                linked = self.records[parent].get(rec.get(f"{name}(id)"))
                out[name] = linked[TABLES[parent][0]] if linked else None
        return out

    @staticmethod
    def _table(view_id: int) -> str:
        if view_id not in VIEWS:
            raise _denied(f"View: {view_id}")
        return VIEWS[view_id][1]

    def _rows(self, view_id: int) -> tuple[str, list[dict]]:
        table, order = self._table(view_id), VIEWS[view_id][2]
        rows = [self._render(table, rec) for rec in self.records[table].values()]
        rows.sort(key=lambda r: (r[order] or "", r["id"]))
        return table, rows

    def _record(self, view_id: int, record_id: str) -> tuple[str, dict]:
        table = self._table(view_id)
        rec = self.records[table].get(int(record_id)) if record_id.isdigit() else None
        if rec is None:
            raise _denied(f"Record: {record_id}")
        return table, rec

    @staticmethod
    def _page(rows: list, start: int, size: int) -> list:
        if start < 0 or size < 0:
            raise _invalid("start and max must not be negative.")
        if size > ABSOLUTE_MAX:
            raise _invalid(f"Attempting to request more than {ABSOLUTE_MAX} records.")
        return rows[start:start + size]

    # ---- writing ------------------------------------------------------------------------------------

    def _convert(self, table: str, fields: object) -> dict:
        """Display-name values as sent, checked and stored as the vendor would; raises ApiError."""
        if not isinstance(fields, dict):
            raise _invalid("Each record must be an object of field values.")
        kinds = {name: (kind, spec) for name, kind, spec in TABLES[table][2] if kind != "identifier"}
        out = {}
        for name, value in fields.items():
            if name not in kinds:
                raise _denied(f'field "{name}"')
            kind, spec = kinds[name]
            if value is None:
                out[name if kind != "relationship" else f"{name}(id)"] = None
            elif kind == "relationship":
                if not str(value).isdigit():
                    raise _invalid(f'One or more value conversions failed: Could not convert "{value}" to Long')
                if int(value) not in self.records[spec]:
                    raise _denied(f"Record: {value}")
                out[f"{name}(id)"] = int(value)
            elif kind == "currency":
                try:
                    amount = Decimal(str(value))
                except InvalidOperation:
                    amount = Decimal("NaN")
                if not amount.is_finite():
                    raise _invalid(f'One or more value conversions failed: Could not convert "{value}" to Double')
                out[name] = f"{amount:.2f}"
            elif kind in ("date", "datetime"):
                out[name] = self._when(name, kind, value)
            elif kind == "dropDown":
                if value not in spec:
                    raise _invalid(f'The value "{value}" is not a valid choice for field "{name}".')
                out[name] = value
            else:
                out[name] = str(value)
        return out

    @staticmethod
    def _when(name: str, kind: str, value: object) -> str:
        try:
            moment = dt.datetime.fromisoformat(str(value))
        except ValueError:
            raise _invalid(f'The value "{value}" is not a valid {kind.upper()} for field "{name}".') from None
        if kind == "date":
            return moment.date().isoformat()
        moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)
        return _iso(moment.timestamp())

    def _next_id(self, table: str) -> int:
        """Ids are never reused: past every record and every generated range, deleted or not."""
        return max([*self.records[table], *self.changes[table], *(last for _, last in self.ranges[table])]) + 1

    def _create(self, table: str, fields: object, user: tuple[str, int]) -> dict:
        values = self._convert(table, fields)
        rid = self._next_id(table)
        ident, prefix, spec = TABLES[table]
        stamp = _iso(self.now())
        rec = {"id": rid, "Created": stamp, "Updated": stamp, "Created By User": user[0],
               "Created By User(id)": user[1], "Last User": user[0], "Last User(id)": user[1]}
        for name, kind, _ in spec:
            rec[f"{name}(id)" if kind == "relationship" else name] = None
        if prefix:
            rec[ident] = f"{prefix}{rid:05d}"
        if "Status" in values and "Status Changed" not in values and "Status Changed" in rec:
            rec["Status Changed"] = stamp
        rec.update(values)
        self.records[table][rid] = self.changes[table][rid] = rec
        return rec

    def _update(self, table: str, rec: dict, fields: object, user: tuple[str, int]) -> dict:
        values = self._convert(table, fields)
        stamp = _iso(self.now())
        if "Status" in values and values["Status"] != rec.get("Status") and "Status Changed" not in values:
            values["Status Changed"] = stamp
        rec = rec | values | {"Updated": stamp, "Last User": user[0], "Last User(id)": user[1]}
        self.records[table][rec["id"]] = self.changes[table][rec["id"]] = rec
        return rec

    # ---- the gateway: user_key, hourly limit, token -------------------------------------------------

    def _window(self) -> tuple[int, dict]:
        start = int(self.now() // 3600 * 3600)
        return start, self.windows.setdefault(start, {"calls": 0, "refused": 0})

    def _admit(self, request: Request) -> Response | None:
        """None when the request may proceed; the gateway's or the OAuth layer's refusal otherwise."""
        with self.state.lock:
            counter = {"DELETE": "delete_requests", "PUT": "put_requests", "POST": "post_requests"}.get(request.method)
            if counter:
                setattr(self, counter, getattr(self, counter) + 1)
            if not hmac.compare_digest(request.query_params.get("user_key", "").encode(), USER_KEY.encode()):
                return PlainTextResponse("Authentication failed", status_code=403)
            _, counts = self._window()
            if counts["calls"] >= self.hourly_limit:
                counts["refused"] += 1
                return PlainTextResponse("Usage limit exceeded", status_code=429)
            counts["calls"] += 1
        scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
        token = bearer if scheme.lower() == "bearer" else request.query_params.get("access_token", "")
        if hmac.compare_digest(token.encode(), TOKEN.encode()):
            return None
        expired = hmac.compare_digest(token.encode(), EXPIRED_TOKEN.encode())
        text = "Access token expired: <redacted>" if expired else "Invalid access token: <redacted>"
        return JSONResponse({"error": "invalid_token", "error_description": text}, status_code=401)

    def _gateway_middleware(self) -> None:
        @self.app.middleware("http")
        async def gateway(request: Request, call_next):
            return self._admit(request) or await call_next(request)

    def _handlers(self) -> None:
        @self.app.exception_handler(ApiError)
        async def api_error(request: Request, exc: ApiError):
            return exc.response()

        @self.app.exception_handler(StarletteHTTPException)
        async def http_error(request: Request, exc: StarletteHTTPException):
            if exc.status_code == 404:
                return ApiError(404, "notFound", "The resource you requested could not be found.").response()
            return ApiError(exc.status_code, "invalidRequest", str(exc.detail)).response()

        @self.app.exception_handler(RequestValidationError)
        async def bad_parameter(request: Request, exc: RequestValidationError):
            problem = exc.errors()[0]
            return _invalid(f"Parameter {problem['loc'][-1]}: {problem['msg']}.").response()

    # ---- control and inspection ---------------------------------------------------------------------

    def control(self, payload: dict) -> dict | JSONResponse:
        """Clock (set, advance, freeze) and limit; upstream edits and creates by a person; a large Tickets table
        for benchmarks."""
        with self.state.lock:
            if "set_clock" in payload:     # an ISO time with its offset: the sandbox's clock reads it now
                self.clock_offset = dt.datetime.fromisoformat(payload["set_clock"]).timestamp() - time.time()
            self.clock_offset += float(payload.get("advance_clock_seconds", 0))
            if "freeze_clock" in payload:  # true: every stamp from now on is this second (ties a test can make)
                self.frozen_at = None
                self.frozen_at = self.now() if payload["freeze_clock"] else None
            self.hourly_limit = int(payload.get("hourly_limit", self.hourly_limit))
            try:
                if "generate_tickets" in payload:
                    self._generate_tickets(int(payload["generate_tickets"]))
                person = PEOPLE[0]
                for change in payload.get("edit", []):      # {"table", "id", "fields"}
                    table = change["table"]
                    rec = self.records[table].get(int(change["id"]))
                    if rec is None:
                        raise _denied(f"Record: {change['id']}")
                    self._update(table, rec, change["fields"], person)
                for change in payload.get("create", []):    # {"table", "fields"}
                    self._create(change["table"], change.get("fields", {}), person)
            except ApiError as exc:
                return JSONResponse({"message": exc.message}, status_code=400)
        return self.inspect()

    def _generate_tickets(self, count: int) -> None:
        """Tickets grows to `count` records by generating the next ids (a larger table is refused)."""
        held = len(self.records["Tickets"])
        if count < held:
            raise _invalid(f"Tickets already holds {held} records.")
        if count > held:
            first = self._next_id("Tickets")
            self.ranges["Tickets"].append([first, first + count - held - 1])
            for rid in range(first, first + count - held):
                self.records["Tickets"][rid] = self._generate("Tickets", rid)

    def inspect(self) -> dict:
        with self.state.lock:
            start, counts = self._window()
            return {"limit": self.hourly_limit, "hour_start": _iso(start), "calls_this_hour": counts["calls"],
                    "refused_this_hour": counts["refused"], "now": _iso(self.now()),
                    "delete_requests": self.delete_requests, "put_requests": self.put_requests,
                    "post_requests": self.post_requests,
                    # how many API PUTs landed on each record (a sweep resumed after a kill redoes none)
                    "updates": {table: {str(rid): n for rid, n in rows.items()}
                                for table, rows in self.updates.items()},
                    "counts": {table: len(rows) for table, rows in self.records.items()},
                    # a table's records when small enough to read here (the 10,000-ticket benchmark is not)
                    "records": {table: [self._render(table, rows[rid]) for rid in sorted(rows)]
                                for table, rows in self.records.items() if len(rows) < 1000}}

    # ---- the API ------------------------------------------------------------------------------------

    def _routes(self) -> None:
        app = self.app

        @app.get("/openapi/apps")
        def apps(name: str | None = None):
            return [{"id": APP_ID, "name": APP}] if name in (None, APP) else []

        @app.get("/openapi/views")
        def views(name: str | None = None):
            return [{"id": vid, "name": vname, "applicationName": APP, "default": default}
                    for vid, (vname, _, _, default) in VIEWS.items() if name is None or name == vname]

        @app.get("/openapi/views/{view_id}")
        def view(view_id: int, start: int = 0, max: int = DEFAULT_MAX):
            with self.state.lock:
                table, rows = self._rows(view_id)
                return {"structure": STRUCTURES[table], "data": self._page(rows, start, max), "totalCount": len(rows)}

        @app.get("/openapi/views/{view_id}/find")
        def find(view_id: int, q: str = "", start: int = 0, max: int = DEFAULT_MAX):
            with self.state.lock:
                table, rows = self._rows(view_id)
                names = [name for name, _, _ in TABLES[table][2]]
                found = [r for r in rows if any(q.lower() in str(r[n]).lower() for n in names if r[n] is not None)]
                return {"structure": STRUCTURES[table], "data": self._page(found, start, max),
                        "totalCount": len(found)}

        @app.get("/openapi/views/{view_id}/records/{record_id}")
        def one(view_id: int, record_id: str):
            with self.state.lock:
                table, rec = self._record(view_id, record_id)
                return {"structure": STRUCTURES[table], "data": self._render(table, rec)}

        @app.post("/openapi/views/{view_id}/records")
        async def create(view_id: int, request: Request):
            body = await self._body(request)
            with self.state.lock:
                table = self._table(view_id)
                for fields in body:        # all or nothing: every record checked before any is made
                    self._convert(table, fields)
                made = [self._render(table, self._create(table, fields, API_USER)) for fields in body]
                return {"structure": STRUCTURES[table], "data": made, "totalCount": len(made)}

        @app.put("/openapi/views/{view_id}/records/{record_id}")
        async def update(view_id: int, record_id: str, request: Request):
            body = await self._body(request)
            with self.state.lock:
                table, rec = self._record(view_id, record_id)
                rec = self._update(table, rec, body[0] if body else {}, API_USER)
                self.updates[table][rec["id"]] = self.updates[table].get(rec["id"], 0) + 1
                return {"structure": STRUCTURES[table], "data": [self._render(table, rec)], "totalCount": 1}

        @app.delete("/openapi/views/{view_id}/records/all")
        def delete_all(view_id: int):
            with self.state.lock:
                table, rows = self._rows(view_id)
                for row in rows:
                    self.records[table].pop(row["id"])
                    self.changes[table][row["id"]] = None
            return Response(status_code=204)

        @app.delete("/openapi/views/{view_id}/records/{record_id}")
        def delete(view_id: int, record_id: str):
            with self.state.lock:
                table, rec = self._record(view_id, record_id)
                self.records[table].pop(rec["id"])
                self.changes[table][rec["id"]] = None
            return Response(status_code=204)

    @staticmethod
    async def _body(request: Request) -> list:
        try:
            body = await request.json()
        except ValueError:
            raise _invalid("The request body is not valid JSON.") from None
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise _invalid('The request body must be {"data": [...]}.')
        return body["data"]
