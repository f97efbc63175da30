"""Stratocore PPMS's PUMAPI (vendors.md §4) with one core facility seeded: what our hook must survive.

Transport, as the vendor's PHP endpoint behaves:
- One URL, `<sandbox>/ppms/pumapi/`. Every call is a POST, form-encoded (multipart is read too), with `apikey`
  and `action` in the BODY: parameters in the query string are not read (PHP's `$_POST`), so a GET, a JSON
  body or a key in the URL is a request without a key. `/ppms/pumapi` without the slash answers 301 to the
  slash form, as Apache's mod_dir does (a client that follows it with a GET is then not authorized).
- The HTTP status is ALWAYS 200 (faults aside): a missing or wrong key answers `error: request not
  authorized` (compared in constant time), an unknown action `error: invalid action <name>`, a missing
  mandatory parameter `error: missing parameter <name>`. Bodies are `text/html; charset=UTF-8` (PHP's
  default, JSON too): parse by what was asked, not by the content type. Every line ends in CRLF, the last
  one included, as in the recorded responses (../shared/fixtures/pumapi/); an empty body means "not found"
  (getuser, getorderlines, getinvoice, getinvoicedetails of an unknown id) or "done" (auth).
- CSV as PPMS writes it: strings double-quoted, numbers, booleans and amounts bare; empty fields of the
  invoice details' unused columns bare and empty; booleans `True`/`False` in listings (getorders,
  getorderlines, getsystems, getprojects, invoice details) and `true`/`false` in getuser; dates
  `YYYY/MM/DD` (as getgroup's creationdate), quoted, `""` when unset; amounts with two decimals.
- `noheaders=true` (exactly `true`: PHP compares strings, so `True` is false) drops the title and header
  lines. `format=json` only for getprojects (an array of objects keyed by the CSV header); every other
  action ignores it and answers CSV.

Actions (every format stated here, on the vendor's side, apart from our parser's declarations, so a parser
that only agrees with itself still fails the hook tests):
  auth                      empty body.
  getusers [active]         one login a line, no header; `active=true|false` filters.
  getuser login*            header + one row (11 columns); empty body for an unknown login.
  getgroups / getgroup unitlogin*   one unitlogin a line / header + one row carrying one more trailing
                            field than its header (as recorded); empty for an unknown group.
  getsystems                header + rows (the recorded header).
  getprojects [format]      header + rows, or JSON.
  getorders                 ORDERS_TITLE_LINES title line(s), header (", "-separated, the spacing quirk of
                            getrunningsheet), one row per order, by order ref.
  getorderlines orderref*   title line(s), header (","), one row per line; empty body for an unknown ref.
  getinvoicelist            one invoice id a line (ids like `2-2025-0007`: strings, not numbers).
  getinvoice invoiceid*     header, then one row per account number: `"bcode",amount`.
  getinvoicedetails invoiceid*   2 title lines + header (3 preamble lines), then 26-column rows of the kinds
                            the vendor documents: sessions, trainings, services, subsidies.
  createorder serviceid* login* quantity* [projectid accepted completed completeddate comments scomments
                            bcode]: ONE order of ONE line; the body is the new order ref (`1151\r\n`).
                            Refusals create nothing: `error: invalid service id 99`, `error: invalid user x`
                            (unknown or deactivated), `error: invalid quantity` (not a number > 0),
                            `error: invalid project id 7`, `error: invalid completeddate` (not
                            `YYYY-MM-DD hh:mm:ss`), `error: completed requires accepted`. A repeat makes a
                            second order: PUMAPI has no idempotency key.
  There is no documented `getservices`: the seeded services are the module's SERVICES (ids 101-108),
  visible in `state` and as the service id of every order line; `getservices` answers `invalid action`.

Orders: status `Quoted` (created, quoted date set), `Ordered` (accepted: ordered date), `Completed`
(completed date), `Cancelled` (an upstream cancellation: PPMS never deletes orders through the API).
A line repeats its order's user, group, project, dates, status and invoiced flag. getorders carries no
quantity: a line's quantity changed upstream does NOT change the order's summary row (`update_lines`).

Control `empty_lines_for: [orderref, ...]` (replaces the list; `[]` clears it): getorderlines answers an empty
body for those orders while getorders still lists them: a PPMS that answers nothing for an order it lists.

Control `corrupt: [...]` (replaces the list; `[]` clears it): records as a broken PPMS might send them, applied
when rendering (the data itself is untouched, so clearing the list restores the answers):
  {"orderref": N, "column": C, "value": V}               getorders' row of order N carries the text V in column
                                                         C (an ORDER_COLUMNS name), e.g. `"31/02/2026"`
  {"orderref": N, "orderid": L, "column": C, "value": V} the same for line L of order N in getorderlines
                                                         (an ORDER_LINE_COLUMNS name)
  {"orderref": N, "duplicate": true [, "column", "value"]}   getorders lists order N a second time, right after
                                                         the first, identical or with column C set to V
  {"invoiceid": X}                                       getinvoice and getinvoicedetails answer an empty body
                                                         for invoice X, which getinvoicelist still lists
V is written quoted, as PPMS writes text. Entries are applied in the order given.
"""
from __future__ import annotations

import datetime as dt
import hmac
import json
import random
import time
from decimal import Decimal, InvalidOperation

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from sandbox.core import SandboxState, install_faults

NAME = "ppms"

# The vendor's formats, stated here on the vendor's side of the wire. Our parser (plugins/hooks/pumapi_format.py)
# declares what it expects on its own: the two are kept apart on purpose, so that a wrong column name or title
# line in the parser fails the hook tests against this sandbox instead of being mirrored by it (and the
# sandbox runs without the platform's code on its path).
ORDERS_TITLE_LINES = ORDER_LINES_TITLE_LINES = 1
INVOICE_TITLE_LINES, INVOICE_DETAILS_TITLE_LINES = 0, 2
ORDER_COLUMNS = ("Core facility ref.", "Order ref.", "User", "Group", "Project ref", "Quoted date", "Ordered date",
                 "Completed date", "Status", "Invoiced")
ORDER_LINE_COLUMNS = ("Core facility ref.", "Order ref.", "Order id", "Service id", "Quantity", "User", "Group",
                      "Project ref", "Quoted date", "Ordered date", "Completed date", "Status", "Invoiced")
INVOICE_COLUMNS = ("Account number", "Amount")
INVOICE_DETAIL_COLUMNS = (
    "Reference", "User", "Group", "Project", "Affiliation", "Session type", "System type", "System", "Date",
    "Start time", "Duration (booked)", "Duration (used)", "Used by others", "Booked by others", "Cancelled",
    "Cancelled date", "Special env. 1", "Special env. 2", "User comments", "Notes", "Account number",
    "Account number (subsidy)", "Rebate", "Fee", "Subsidy", "Final amount")
USER_COLUMNS = ("login", "lname", "fname", "email", "phone", "bcode", "affiliation", "unitlogin", "mustchpwd",
                "mustchbcode", "active")
GROUP_COLUMNS = ("unitlogin", "unitname", "headname", "heademail", "unitbcode", "department", "institution",
                 "address", "affiliation", "ext", "active", "admname", "admemail", "creationdate")
SYSTEM_COLUMNS = ("Core facility ref", "System id", "Type", "Name", "Localisation", "Active", "Schedules", "Stats",
                  "Bookable", "Autonomy Required", "Autonomy Required After Hours")
PROJECT_COLUMNS = ("Core facility ref.", "Project name", "Phase", "Active", "Bcode", "Project ref.", "Affiliation",
                   "Project Type", "Project Group", "Descr")
API_KEY = "sandbox-ppms-apikey-6d2b"
CORE_FACILITY = 2
FACILITY_NAME = "Sandbox Imaging Core"
CRLF = "\r\n"
CONTENT_TYPE = "text/html; charset=UTF-8"
STATUSES = ("Quoted", "Ordered", "Completed", "Cancelled")
SEED_START = dt.date(2025, 1, 6)
SEED_END = dt.date(2025, 11, 28)         # every seeded order was quoted before it
INVOICED_BEFORE = dt.date(2025, 9, 1)   # seeded invoices cover completed orders of earlier months
SEEDED_ORDERS, SEEDED_INVOICES, FIRST_ORDER_REF, FIRST_LINE_ID = 150, 25, 1001, 5001
SMALL = 1000                            # `state` lists the orders while fewer than this

# (service id, name, unit price): what createorder's `serviceid` may name
SERVICES = ((101, "Confocal imaging, assisted (per hour)", "65.00"), (102, "Sample preparation", "12.50"),
            (103, "Cryo-EM grid preparation", "45.00"), (104, "Image analysis consultation (per hour)", "80.00"),
            (105, "Slide scanning, brightfield", "8.75"), (106, "Antibody staining kit", "120.00"),
            (107, "Data storage, 1 TB-month", "15.00"), (108, "Training course, 2 h", "150.00"))
SERVICE_PRICE = {sid: Decimal(price) for sid, _, price in SERVICES}
HOURLY_SERVICES = (101, 104)
# (unitlogin, unitname, head, department, institution)
GROUPS = (("ng_lab", "Ng Lab, Structural Biology", "Hana Ng", "Structural Biology", "Sandbox University"),
          ("okafor_lab", "Okafor Lab", "Dee Okafor", "Neuroscience", "Sandbox University"),
          ("lindqvist_grp", "Lindqvist Group, Cell Imaging", "Bea Lindqvist", "Cell Biology", "Sandbox University"),
          ("mendes_lab", "Mendes Lab", "Carlos Mendes", "Immunology", "Sandbox Institute"),
          ("chen_lab", "Chen Lab", "Fay Chen", "Genetics", "Sandbox Institute"),
          ("acme_biotech", "Acme Biotech, Inc.", "Ari Patel", "R&D", "Acme Biotech"))
FIRST_NAMES = ("Ana", "Ben", "Chloé", "David", "Elif", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kaito", "Lena",
               "Mateo", "Nora", "Omar", "Priya", "Quentin", "Rosa", "Sven", "Tara")
LAST_NAMES = ("Alvarez", "Brandt", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Hoffmann", "Ivanova",
              "Jensen", "Kowalski", "Larsen", "Moreau", "Nakamura", "O'Brien", "Petrov", "Rossi", "Schmidt")
AFFILIATIONS = ("Academic (internal)", "Academic (external)", "Private sector")
# (system id, type, name, localisation, hourly rate)
SYSTEMS = ((31, "Confocal Microscope", "Zeiss LSM 980", "Room B2.14", "42.00"),
           (69, "Virtualized Workstation", "Python Development System", "VDI (Development)", "5.00"),
           (72, "Electron Microscope", "Krios G4, cryo", "Room C0.01", "210.00"),
           (75, "Slide Scanner", "Axioscan 7", "Room B2.10", "18.50"))
USERS, PROJECTS = 30, 10


def airflow_connection(sandbox_url: str, *, key: str = API_KEY, **extra) -> dict:
    """This core facility as an Airflow connection of type `ppms` (the PUMAPI URL and the key), as the tests
    and `make up` may write it; the hook owns the final shape."""
    return {"conn_type": "ppms", "host": f"{sandbox_url}/ppms/pumapi/", "password": key, "extra": dict(extra)}


class Bare(str):
    """A CSV value written as is (numbers, booleans, empty unused columns)."""


def _field(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, Bare | int | Decimal):
        return str(value)
    return '"' + str(value).replace('"', '""') + '"'


def _row(values) -> str:
    return ",".join(_field(v) for v in values)


def _text(lines: list[str]) -> Response:
    return Response("".join(line + CRLF for line in lines), media_type=CONTENT_TYPE)


def _error(message: str) -> Response:
    return _text([f"error: {message}"])


def _day(value: dt.date | None) -> str:
    return value.strftime("%Y/%m/%d") if value else ""


def _money(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"))


def _quantity(value: Decimal) -> str:
    """`2`, `1.5`, `0.25`: as entered, without trailing zeros or an exponent."""
    return format(value.normalize(), "f")


def _true(value: str | None) -> bool:
    return value == "true"


class ControlError(Exception):
    pass


class PpmsSandbox:
    name = NAME

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.app = FastAPI(title="PPMS PUMAPI sandbox")
        install_faults(self.app, NAME, state, lambda: PlainTextResponse("Too Many Requests", status_code=429))
        self._handlers()
        self.reset()
        self._routes()

    # ---- state --------------------------------------------------------------------------------------

    SAVED = ("clock_offset", "calls", "created_orders", "orders", "invoices", "next_order_ref", "next_line_id",
             "next_invoice")

    def reset(self) -> None:
        self.clock_offset = 0.0
        self.calls: dict[str, int] = {}
        self.created_orders: list[dict] = []
        self.empty_lines_for: list[int] = []       # control `empty_lines_for`: getorderlines answers nothing
        self.corrupt: list[dict] = []               # control `corrupt`: records rendered as a broken PPMS would
        self._build()

    def dump(self) -> dict:
        """Everything that changes (caller holds the state lock); users, groups, projects and systems are
        remade from the seed."""
        return {**{name: getattr(self, name) for name in self.SAVED}, "empty_lines_for": self.empty_lines_for,
                "corrupt": self.corrupt}

    def load(self, saved: dict) -> None:
        self.reset()
        for name in self.SAVED:
            setattr(self, name, saved[name])
        self.empty_lines_for = list(saved.get("empty_lines_for", []))
        self.corrupt = [dict(entry) for entry in saved.get("corrupt", [])]
        self.orders = [dict(order) for order in self.orders]

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(time.time() + self.clock_offset, dt.timezone.utc)

    def _build(self) -> None:
        """The facility's people, groups, projects and systems, then orders and invoices, all from the seed."""
        rng = random.Random(f"{self.state.seed}-ppms")
        self.groups = {unit: {"unitlogin": unit, "unitname": name, "headname": head,
                              "heademail": f"{head.split()[0].lower()}@{unit.replace('_', '-')}.example",
                              "unitbcode": f"BC-{unit.upper()}", "department": dept, "institution": inst,
                              "affiliation": AFFILIATIONS[2 if unit == "acme_biotech" else n % 2],
                              "created": _day(dt.date(2019 + n, 1 + 2 * n, 5 + n))}
                       for n, (unit, name, head, dept, inst) in enumerate(GROUPS)}
        units = list(self.groups)
        self.users: dict[str, dict] = {}
        while len(self.users) < USERS:
            fname, lname = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            login = (fname[0] + lname).lower().replace("'", "").replace("é", "e")
            if login in self.users:
                login = f"{login}{len(self.users)}"
            unit = units[len(self.users) % len(units)]
            self.users[login] = {
                "login": login, "lname": lname, "fname": fname, "email": f"{login}@sandbox-university.example",
                "phone": f"+41 (21) 555 {rng.randrange(1000, 9999)}", "bcode": "",
                "affiliation": self.groups[unit]["affiliation"], "unitlogin": unit,
                "active": len(self.users) % 9 != 4}        # about one in nine deactivated
        self.projects: dict[int, dict] = {}
        for ref in range(1, PROJECTS + 1):
            unit = units[(ref - 1) % len(units)]
            self.projects[ref] = {"ref": ref, "name": f"{self.groups[unit]['department']}, project {ref}",
                                  "phase": ref % 3, "active": ref != PROJECTS, "bcode": f"PRJ-{ref:04d}",
                                  "affiliation": self.groups[unit]["affiliation"], "type": "Default",
                                  "group": unit, "descr": f"Sandbox project {ref} of {self.groups[unit]['unitname']}"}
        self.next_order_ref, self.next_line_id, self.next_invoice = FIRST_ORDER_REF, FIRST_LINE_ID, 1
        self.orders: list[dict] = []
        logins = sorted(self.users)
        span = (SEED_END - SEED_START).days
        for _ in range(SEEDED_ORDERS):
            user = self.users[rng.choice(logins)]
            quoted = SEED_START + dt.timedelta(days=rng.randrange(span))
            status = rng.choices(STATUSES, weights=(15, 20, 55, 10))[0]
            ordered = quoted + dt.timedelta(days=rng.randrange(0, 6)) if status in ("Ordered", "Completed") or (
                status == "Cancelled" and rng.random() < 0.5) else None
            completed = ordered + dt.timedelta(days=rng.randrange(0, 21)) if status == "Completed" else None
            own = [ref for ref, p in self.projects.items() if p["group"] == user["unitlogin"]]
            project = rng.choice(own) if own and rng.random() < 0.6 else None
            lines = []
            for _ in range(rng.randrange(1, 5)):
                service = rng.choice(SERVICES)[0]
                lines.append(self._line(service, self._random_quantity(rng, service)))
            self._add_order(user, project, quoted, ordered, completed, status, lines, "seed", "")
        self.invoices: list[dict] = []
        self._seed_invoices(rng)

    @staticmethod
    def _random_quantity(rng: random.Random, service: int) -> str:
        if service in HOURLY_SERVICES:
            return _quantity(Decimal(rng.randrange(2, 17)) / 4)      # quarter hours: 0.5, 1.25, ...
        return str(rng.randrange(1, 6))

    def _line(self, service: int, quantity: str) -> dict:
        line = {"orderid": self.next_line_id, "serviceid": service, "quantity": quantity}
        self.next_line_id += 1
        return line

    def _add_order(self, user: dict, project: int | None, quoted: dt.date, ordered: dt.date | None,
                   completed: dt.date | None, status: str, lines: list[dict], origin: str, comments: str) -> dict:
        order = {"orderref": self.next_order_ref, "user": user["login"], "group": user["unitlogin"],
                 "projectref": project, "quoted": _day(quoted), "ordered": _day(ordered),
                 "completed": _day(completed), "status": status, "invoiced": False, "origin": origin,
                 "comments": comments, "lines": lines}
        self.next_order_ref += 1
        self.orders.append(order)
        return order

    def _order(self, ref: object) -> dict | None:
        text = str(ref).strip()
        if not text.isdigit():
            return None
        return next((o for o in self.orders if o["orderref"] == int(text)), None)

    # ---- invoices -----------------------------------------------------------------------------------

    def _seed_invoices(self, rng: random.Random) -> None:
        """Completed orders of a group and a month before INVOICED_BEFORE, one invoice each, oldest first."""
        batches: dict[tuple[str, str], list[dict]] = {}
        for order in self.orders:
            if order["status"] == "Completed" and order["completed"] < _day(INVOICED_BEFORE):
                batches.setdefault((order["completed"][:7], order["group"]), []).append(order)
        for (month, _), orders in sorted(batches.items())[:SEEDED_INVOICES]:
            first = dt.date(int(month[:4]), int(month[5:7]), 1)
            self._invoice(orders, first, rng)

    def _invoice(self, orders: list[dict], period_start: dt.date, rng: random.Random) -> dict:
        """An invoice of these orders (one group's), with seeded sessions, trainings and subsidies around them."""
        unit = orders[0]["group"]
        period_end = (period_start + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
        invoice_id = f"{CORE_FACILITY}-{period_start.year}-{self.next_invoice:04d}"
        self.next_invoice += 1
        group = self.groups[unit]
        rows: list[list] = []
        members = sorted(login for login, u in self.users.items() if u["unitlogin"] == unit)
        for _ in range(rng.randrange(0, 4)):               # instrument sessions
            sid, stype, sname, _, rate = rng.choice(SYSTEMS)
            booked = Decimal(rng.randrange(2, 17)) / 4
            used = booked - Decimal(rng.randrange(0, 3)) / 4
            user = self.users[rng.choice(members)]
            account = group["unitbcode"]
            rows.append([rng.randrange(300000, 399999), self._full_name(user), unit, "", user["affiliation"],
                         "Autonomous", stype, sname, _day(period_start + dt.timedelta(days=rng.randrange(0, 27))),
                         f"{rng.randrange(8, 17):02d}:{rng.choice((0, 15, 30, 45)):02d}", Bare(f"{booked:.2f}"),
                         Bare(f"{used:.2f}"), Bare("0"), Bare("0"), False, "", "", "", "", "", account, "",
                         _money(Decimal(0)), _money(Decimal(0)), _money(Decimal(0)),
                         _money(booked * Decimal(rate))])
        if rng.random() < 0.2:                              # a training: no project, fewer columns
            sid, stype, sname, _, rate = rng.choice(SYSTEMS)
            user = self.users[rng.choice(members)]
            rows.append([rng.randrange(400000, 499999), self._full_name(user), unit, Bare(""), user["affiliation"],
                         "Training", stype, sname, _day(period_start + dt.timedelta(days=rng.randrange(0, 27))),
                         "10:00", Bare("2.00"), *[Bare("")] * 9, group["unitbcode"], "", Bare(""), Bare(""),
                         _money(Decimal(0)), _money(Decimal(2) * Decimal(rate))])
        for order in orders:                                # services: one row per order line
            user = self.users[order["user"]]
            project = self.projects.get(order["projectref"]) if order["projectref"] else None
            account = project["bcode"] if project else group["unitbcode"]
            for line in order["lines"]:
                amount = _money(Decimal(line["quantity"]) * SERVICE_PRICE[line["serviceid"]])
                rows.append([order["orderref"], self._full_name(user), unit, project["name"] if project else "",
                             user["affiliation"], "Service", Bare(""), Bare(""), order["completed"],
                             *[Bare("")] * 11, account, "", Bare(""), Bare(""), _money(Decimal(0)), amount])
            order["invoiced"] = True
        if rows and rng.random() < 0.3:                     # a subsidy: a share of the total back
            total = sum((Decimal(str(r[25])) for r in rows), Decimal(0))
            rows.append([f"SUB-{invoice_id}", *[Bare("")] * 4, "Subsidy", *[Bare("")] * 14, group["unitbcode"],
                         *[Bare("")] * 4, _money(-total / 10)])
        invoice = {"invoiceid": invoice_id, "group": unit, "period": [_day(period_start), _day(period_end)],
                   "issued": _day(period_end + dt.timedelta(days=3)),
                   "orders": [o["orderref"] for o in orders],
                   "rows": [[[type(v).__name__ if not isinstance(v, Bare) else "Bare", str(v) if v is not None else ""]
                             for v in row] for row in rows]}
        self.invoices.append(invoice)
        return invoice

    @staticmethod
    def _full_name(user: dict) -> str:
        return f"{user['lname']} {user['fname']}"

    @staticmethod
    def _cells(invoice: dict) -> list[list]:
        """An invoice's stored rows (kind, text pairs: JSON-safe) back to typed values."""
        kinds = {"Bare": Bare, "str": str, "int": int, "Decimal": Decimal, "bool": lambda s: s == "True"}
        return [[kinds[kind](text) for kind, text in row] for row in invoice["rows"]]

    def _charges(self, invoice: dict) -> list[tuple[str, Decimal]]:
        totals: dict[str, Decimal] = {}
        for row in self._cells(invoice):
            totals[row[20]] = totals.get(row[20], Decimal(0)) + Decimal(str(row[25]))
        return [(account, _money(amount)) for account, amount in totals.items()]

    # ---- the API ------------------------------------------------------------------------------------

    def _handlers(self) -> None:
        @self.app.exception_handler(StarletteHTTPException)
        async def http_error(request: Request, exc: StarletteHTTPException):
            text = {404: "Not Found", 405: "Method Not Allowed"}.get(exc.status_code, str(exc.detail))
            return Response(f"<html><body><h1>{exc.status_code} {text}</h1></body></html>",
                            status_code=exc.status_code, media_type=CONTENT_TYPE)

    def _routes(self) -> None:
        app = self.app

        @app.api_route("/pumapi", methods=["GET", "POST", "HEAD"])
        def without_slash(request: Request):
            return RedirectResponse(f"{request.scope.get('root_path', '')}/pumapi/", status_code=301)

        @app.api_route("/pumapi/", methods=["GET", "POST", "HEAD"])
        async def pumapi(request: Request):
            form = await request.form() if request.method == "POST" else None
            params = {key: str(value) for key, value in form.multi_items()} if form is not None else {}
            if not hmac.compare_digest(params.get("apikey", "").encode(), API_KEY.encode()):
                return _error("request not authorized")
            action = params.get("action", "")
            if not action:
                return _error("missing parameter action")
            with self.state.lock:
                self.calls[action] = self.calls.get(action, 0) + 1
                handler = getattr(self, f"_do_{action}", None) if action.isalnum() else None
                if handler is None:
                    return _error(f"invalid action {action}")
                return handler(params)

    @staticmethod
    def _missing(params: dict, *names: str) -> Response | None:
        for name in names:
            if not params.get(name, "").strip():
                return _error(f"missing parameter {name}")
        return None

    @staticmethod
    def _table(params: dict, titles: list[str], count: int, header: str, rows: list[str]) -> Response:
        if _true(params.get("noheaders")):
            return _text(rows)
        return _text([*titles[:count], header, *rows])

    def _do_auth(self, params: dict) -> Response:
        return _text([])

    def _do_getusers(self, params: dict) -> Response:
        active = params.get("active")
        logins = [login for login, user in sorted(self.users.items())
                  if active is None or user["active"] == _true(active)]
        return _text(logins)

    def _do_getuser(self, params: dict) -> Response:
        missing = self._missing(params, "login")
        if missing:
            return missing
        user = self.users.get(params["login"])
        if user is None:
            return _text([])
        header = ",".join(USER_COLUMNS)
        row = _row([user["login"], user["lname"], user["fname"], user["email"], user["phone"], user["bcode"],
                    user["affiliation"], user["unitlogin"], Bare("false"), Bare("false"),
                    Bare("true" if user["active"] else "false")])
        return self._table(params, [], 0, header, [row])

    def _do_getgroups(self, params: dict) -> Response:
        return _text(sorted(self.groups))

    def _do_getgroup(self, params: dict) -> Response:
        missing = self._missing(params, "unitlogin")
        if missing:
            return missing
        g = self.groups.get(params["unitlogin"])
        if g is None:
            return _text([])
        header = ",".join(GROUP_COLUMNS)
        row = _row([g["unitlogin"], g["unitname"], g["headname"], g["heademail"], g["unitbcode"], g["department"],
                    g["institution"], "", g["affiliation"], Bare("false"), Bare("true"), "", "", g["created"], ""])
        return self._table(params, [], 0, header, [row + ","])     # one more trailing field than the header

    def _do_getsystems(self, params: dict) -> Response:
        header = ",".join(SYSTEM_COLUMNS)
        rows = [_row([CORE_FACILITY, sid, stype, name, place, True, True, True, sid != 69, True, sid == 72])
                for sid, stype, name, place, _ in SYSTEMS]
        return self._table(params, [], 0, header, rows)

    def _do_getprojects(self, params: dict) -> Response:
        values = [[CORE_FACILITY, p["name"], p["phase"], p["active"], p["bcode"], ref, p["affiliation"], p["type"],
                   p["group"], p["descr"]] for ref, p in sorted(self.projects.items())]
        if params.get("format") == "json":
            body = json.dumps([dict(zip(PROJECT_COLUMNS, v, strict=True)) for v in values])
            return Response(body, media_type=CONTENT_TYPE)
        return self._table(params, [], 0, ",".join(PROJECT_COLUMNS), [_row(v) for v in values])

    def _summary(self, order: dict) -> list:
        return [CORE_FACILITY, order["orderref"], order["user"], order["group"], order["projectref"],
                order["quoted"], order["ordered"], order["completed"], order["status"], order["invoiced"]]

    def _do_getorders(self, params: dict) -> Response:
        now = self.now()
        titles = [f"Orders of core facility {CORE_FACILITY}, {FACILITY_NAME}, as of {now:%Y/%m/%d %H:%M}",
                  f"{len(self.orders)} orders", ""]
        rows = []
        for order in sorted(self.orders, key=lambda o: o["orderref"]):
            summary = self._summary(order)
            rows.append(_row(self._corrupted(summary, ORDER_COLUMNS, order["orderref"], None)))
            for entry in self.corrupt:
                if entry.get("duplicate") and entry.get("orderref") == order["orderref"]:
                    twin = list(summary)
                    if "column" in entry:
                        twin[ORDER_COLUMNS.index(entry["column"])] = str(entry["value"])
                    rows.append(_row(twin))
        return self._table(params, titles, ORDERS_TITLE_LINES, ", ".join(ORDER_COLUMNS), rows)

    def _do_getorderlines(self, params: dict) -> Response:
        missing = self._missing(params, "orderref")
        if missing:
            return missing
        order = self._order(params["orderref"])
        if order is None or order["orderref"] in self.empty_lines_for:
            return _text([])
        titles = [f"Order {order['orderref']}, core facility {CORE_FACILITY}", f"{len(order['lines'])} lines", ""]
        summary = self._summary(order)
        rows = [_row(self._corrupted([*summary[:2], line["orderid"], line["serviceid"], Bare(line["quantity"]),
                                      *summary[2:]], ORDER_LINE_COLUMNS, order["orderref"], line["orderid"]))
                for line in order["lines"]]
        return self._table(params, titles, ORDER_LINES_TITLE_LINES, ",".join(ORDER_LINE_COLUMNS), rows)

    def _do_getinvoicelist(self, params: dict) -> Response:
        return _text([invoice["invoiceid"] for invoice in self.invoices])

    def _corrupted(self, values: list, columns: tuple[str, ...], orderref: int, orderid: int | None) -> list:
        """`values` with the `corrupt` entries of this order (orderid None) or line applied."""
        for entry in self.corrupt:
            if (entry.get("orderref") == orderref and entry.get("orderid") == orderid and "column" in entry
                    and not entry.get("duplicate")):
                values = list(values)
                values[columns.index(entry["column"])] = str(entry["value"])
        return values

    def _invoice_of(self, params: dict) -> dict | None:
        if any(entry.get("invoiceid") == params["invoiceid"].strip() for entry in self.corrupt):
            return None
        return next((i for i in self.invoices if i["invoiceid"] == params["invoiceid"].strip()), None)

    def _do_getinvoice(self, params: dict) -> Response:
        missing = self._missing(params, "invoiceid")
        if missing:
            return missing
        invoice = self._invoice_of(params)
        if invoice is None:
            return _text([])
        rows = [_row([account, amount]) for account, amount in self._charges(invoice)]
        titles = [f"Invoice {invoice['invoiceid']}", "", ""]
        return self._table(params, titles, INVOICE_TITLE_LINES, ",".join(INVOICE_COLUMNS), rows)

    def _do_getinvoicedetails(self, params: dict) -> Response:
        missing = self._missing(params, "invoiceid")
        if missing:
            return missing
        invoice = self._invoice_of(params)
        if invoice is None:
            return _text([])
        group = self.groups[invoice["group"]]
        start, end = invoice["period"]
        titles = [f"Invoice {invoice['invoiceid']}",
                  f"{FACILITY_NAME}, {group['unitname']}, issued {invoice['issued']}, period {start} - {end}", ""]
        rows = [_row(row) for row in self._cells(invoice)]
        return self._table(params, titles, INVOICE_DETAILS_TITLE_LINES, ",".join(INVOICE_DETAIL_COLUMNS), rows)

    def _do_createorder(self, params: dict) -> Response:
        missing = self._missing(params, "serviceid", "login", "quantity")
        if missing:
            return missing
        problem, order_args = self._order_request(params)
        if problem:
            return _error(problem)
        order = self._add_order(**order_args, origin="createorder", comments=params.get("comments", ""))
        self.created_orders.append({"orderref": order["orderref"], "at": self.now().isoformat(),
                                    "params": {k: v for k, v in params.items() if k not in ("apikey", "action")}})
        return _text([str(order["orderref"])])

    def _order_request(self, params: dict) -> tuple[str | None, dict]:
        """The first problem with a createorder call (PUMAPI's error text), or the order to make."""
        service = params["serviceid"].strip()
        if not service.isdigit() or int(service) not in SERVICE_PRICE:
            return f"invalid service id {service}", {}
        user = self.users.get(params["login"])
        if user is None or not user["active"]:
            return f"invalid user {params['login']}", {}
        try:
            quantity = Decimal(params["quantity"].strip())
        except InvalidOperation:
            quantity = Decimal(0)
        if not quantity.is_finite() or quantity <= 0:
            return "invalid quantity", {}
        project = params.get("projectid", "").strip() or None
        if project is not None and (not project.isdigit() or int(project) not in self.projects):
            return f"invalid project id {project}", {}
        accepted, completed = _true(params.get("accepted")), _true(params.get("completed"))
        if completed and not accepted:
            return "completed requires accepted", {}
        today = self.now().date()
        done = None
        if completed:
            done = today
            if params.get("completeddate", "").strip():
                try:
                    done = dt.datetime.strptime(params["completeddate"].strip(), "%Y-%m-%d %H:%M:%S").date()
                except ValueError:
                    return "invalid completeddate", {}
        status = "Completed" if completed else "Ordered" if accepted else "Quoted"
        return None, {"user": user, "project": int(project) if project else None, "quoted": today,
                      "ordered": today if accepted else None, "completed": done, "status": status,
                      "lines": [self._line(int(service), _quantity(quantity))]}

    # ---- control and inspection ---------------------------------------------------------------------

    def control(self, payload: dict) -> dict | JSONResponse:
        """Clock; upstream changes made by people at PPMS: order summaries, line quantities, new orders,
        new invoices. All or nothing per call: a bad change answers 400 and changes nothing."""
        with self.state.lock:
            saved = json.dumps(self.dump())
            try:
                self._control(payload)
            except (ControlError, KeyError, ValueError, TypeError, InvalidOperation) as exc:
                self.load(json.loads(saved))
                return JSONResponse({"message": f"ppms control refused: {exc}"}, status_code=400)
        return self.inspect()

    def _control(self, payload: dict) -> None:
        if "set_clock" in payload:     # an ISO time with its offset: the sandbox's clock reads it now
            self.clock_offset = dt.datetime.fromisoformat(payload["set_clock"]).timestamp() - time.time()
        self.clock_offset += float(payload.get("advance_clock_seconds", 0))
        if "empty_lines_for" in payload:                   # [orderref, ...]: a PPMS answering nothing for them
            self.empty_lines_for = [int(ref) for ref in payload["empty_lines_for"]]
        if "corrupt" in payload:                           # [{...}, ...]: records as a broken PPMS sends them
            self.corrupt = [self._corruption(entry) for entry in payload["corrupt"]]
        for change in payload.get("update_orders", []):     # {"orderref", "status", "completed", "invoiced"}
            order = self._order(change["orderref"])
            if order is None:
                raise ControlError(f"no order {change['orderref']}")
            status = change.get("status", order["status"])
            if status not in STATUSES:
                raise ControlError(f"status must be one of {STATUSES}")
            today = _day(self.now().date())
            if status in ("Ordered", "Completed") and not order["ordered"]:
                order["ordered"] = today
            if status == "Completed" and not order["completed"] and "completed" not in change:
                order["completed"] = today
            order["status"] = status
            for name in ("completed", "ordered", "quoted"):    # a date `YYYY-MM-DD` or `YYYY/MM/DD`; "" clears
                if name in change:
                    value = str(change[name] or "")
                    order[name] = _day(dt.date.fromisoformat(value.replace("/", "-"))) if value else ""
            if "invoiced" in change:
                order["invoiced"] = bool(change["invoiced"])
        for change in payload.get("update_lines", []):      # {"orderref", "orderid", "quantity"}
            order = self._order(change["orderref"])
            line = next((ln for ln in order["lines"] if ln["orderid"] == int(change["orderid"])), None) if order \
                else None
            if line is None:
                raise ControlError(f"no line {change.get('orderid')} in order {change['orderref']}")
            quantity = Decimal(str(change["quantity"]))
            if quantity <= 0:
                raise ControlError("quantity must be > 0")
            line["quantity"] = _quantity(quantity)
        for spec in payload.get("add_orders", []):          # {"login", "lines": [{"serviceid", "quantity"}], ...}
            self._upstream_order(spec)
        for spec in payload.get("add_invoices", []):        # {"orderrefs": [...]}
            self._upstream_invoice(spec)

    def _corruption(self, entry: dict) -> dict:
        if "invoiceid" in entry:
            return {"invoiceid": str(entry["invoiceid"])}
        order = self._order(entry["orderref"])
        if order is None:
            raise ControlError(f"no order {entry['orderref']}")
        made = {"orderref": order["orderref"]}
        if entry.get("orderid") is not None:
            if entry.get("duplicate"):
                raise ControlError("a duplicate is of an order's getorders row, not of a line")
            if not any(line["orderid"] == int(entry["orderid"]) for line in order["lines"]):
                raise ControlError(f"no line {entry['orderid']} in order {order['orderref']}")
            made["orderid"] = int(entry["orderid"])
        columns = ORDER_LINE_COLUMNS if "orderid" in made else ORDER_COLUMNS
        if "column" in entry:
            if entry["column"] not in columns:
                raise ControlError(f"column must be one of {columns}")
            made.update(column=entry["column"], value=str(entry["value"]))
        elif not entry.get("duplicate"):
            raise ControlError("a corruption names a column and its value, or is a duplicate")
        if entry.get("duplicate"):
            made["duplicate"] = True
        return made

    def _upstream_order(self, spec: dict) -> None:
        """An order entered by a person in PPMS: any number of lines, any status."""
        user = self.users.get(spec["login"])
        if user is None:
            raise ControlError(f"no user {spec['login']}")
        status = spec.get("status", "Ordered")
        if status not in STATUSES:
            raise ControlError(f"status must be one of {STATUSES}")
        project = spec.get("projectref")
        if project is not None and int(project) not in self.projects:
            raise ControlError(f"no project {project}")
        lines = spec.get("lines") or [{"serviceid": spec.get("serviceid", SERVICES[0][0]),
                                      "quantity": spec.get("quantity", 1)}]
        made = []
        for line in lines:
            service, quantity = int(line["serviceid"]), Decimal(str(line["quantity"]))
            if service not in SERVICE_PRICE or quantity <= 0:
                raise ControlError(f"bad line {line}")
            made.append(self._line(service, _quantity(quantity)))
        today = self.now().date()
        self._add_order(user, int(project) if project is not None else None, today,
                        today if status in ("Ordered", "Completed") else None,
                        today if status == "Completed" else None, status, made, "upstream", spec.get("comments", ""))

    def _upstream_invoice(self, spec: dict) -> None:
        """An invoice of completed, uninvoiced orders of one group (the vendor's rule for invoicing)."""
        orders = [self._order(ref) for ref in spec["orderrefs"]]
        if not orders or any(o is None for o in orders):
            raise ControlError(f"unknown order among {spec['orderrefs']}")
        if any(o["status"] != "Completed" or o["invoiced"] for o in orders):
            raise ControlError("only completed orders not yet invoiced can be invoiced")
        if len({o["group"] for o in orders}) != 1:
            raise ControlError("an invoice is for one group")
        today = self.now().date()
        rng = random.Random(f"{self.state.seed}-ppms-invoice-{self.next_invoice}")
        self._invoice(orders, today.replace(day=1), rng)

    def inspect(self) -> dict:
        with self.state.lock:
            lines = sum(len(o["lines"]) for o in self.orders)
            return {
                "now": self.now().isoformat(), "calls": dict(self.calls), "created_orders": list(self.created_orders),
                "counts": {"users": len(self.users), "orders": len(self.orders), "lines": lines,
                           "invoices": len(self.invoices)},
                "services": [{"serviceid": sid, "name": name, "price": price} for sid, name, price in SERVICES],
                "orders": json.loads(json.dumps(self.orders)) if len(self.orders) < SMALL else None,
                "invoices": [{"invoiceid": i["invoiceid"], "group": i["group"], "orders": i["orders"],
                              "charges": [[account, str(amount)] for account, amount in self._charges(i)],
                              "detail_rows": len(i["rows"])} for i in self.invoices],
            }
