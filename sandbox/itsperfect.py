"""ItsPerfect ERP API v2 (vendors.md §3): what our hook must survive.

- Every call carries `?token=` and HTTP Basic auth (username/password): a missing or wrong token answers
  401 `{"error": "The authentication token (<token>) is not valid"}` (the vendor echoes what it got), a
  missing or wrong basic auth 401 `{"error": "Invalid username or password"}`.
- Collections under their resource key (`{"warehouses": [...]}`, `{"stock": [...]}`, `{"items": [...]}`,
  `{"orders": [...]}`), `page` (1-based) and `limit`, answered with `X-Pagination-Current-Page`,
  `X-Pagination-Page-Count` and `X-Pagination-Total-Count`. Paging behaves as the Yii2 framework these
  headers come from (an inference, not documented): 20 per page by default, `limit` silently capped
  (`max_limit`, 100), a page past the last answers the last page (its number in the header), an empty
  collection has page count 0 and current page 1.
- 750 requests an hour per tenant, counting the vendor's own server-side calls (simulated at
  `server_calls_per_hour`, spread evenly over the hour), in clock hours of the sandbox's movable clock.
  Every answer carries `X-Request-Limit-Remaining` and `X-Request-Limit-Date` (the reset moment, ISO-8601).
  Past the limit: `past_limit_status` (429 by default) with `{"error": "Request limit reached"}`. A request
  with the tenant's token counts (even if its basic auth is wrong); one without it cannot be attributed.
- `GET /api/v2/stock?warehouseId=` nests item → warehouses → colors → sizes; `stock` is a string,
  `availableStock` a number, `barcode` the EAN-13.
- `POST /api/v2/orders` validates (400 `{"error": "..."}`, first problem only) and answers
  `{"orders": [{"id", "orderNumber", "reference", ...}]}`; a repeated reference makes a second order, as
  nothing documented says it would not. Order lines: `items: [{"barcode", "quantity", "price"}]` (the
  line field names are not in the stored vendor docs: an assumption).
"""
from __future__ import annotations

import base64
import datetime as dt
import hmac
import math
import random
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from sandbox.core import SandboxState, install_faults

NAME = "itsperfect"
TOKEN = "sandbox-itsp-token-3f9a"
USERNAME, PASSWORD = "sandbox-itsp-user", "sandbox-itsp-password"
HOURLY_LIMIT = 750
DEFAULT_PAGE_SIZE, MAX_LIMIT = 20, 100
PAST_LIMIT_STATUSES = (429, 401, 403, 503)
COLOURS = (("35", "Marine Blue"), ("10", "Black"), ("01", "White"), ("52", "Olive"), ("71", "Sand"),
           ("44", "Bordeaux"), ("23", "Stone Grey"), ("88", "Ochre"))
SIZE_RUNS = (("XS", "S", "M", "L", "XL", "XXL"), ("28", "29", "30", "31", "32", "33", "34", "36"),
             ("36", "37", "38", "39", "40", "41", "42"), ("ONE",))
WAREHOUSES = ((1, "Bleckmann Amsterdam", "Amsterdam", 1), (2, "Warehow Tilburg", "Tilburg", 1),
              (3, "Store Utrecht", "Utrecht", 1), (4, "Old DC Rotterdam", "Rotterdam", 0))
ORDER_REQUIRED = ("orderType", "date", "reference", "customerId", "currency", "warehouseId",
                  "shippingAddress", "invoiceAddress", "items")
ADDRESS_REQUIRED = ("name", "street", "housenumber", "postalCode", "city", "countryId")
SEEDED_ITEMS = 60


def airflow_connection(sandbox_url: str, *, token: str = TOKEN, password: str = PASSWORD, **extra) -> dict:
    """This tenant as an Airflow connection of type `itsperfect`, as `make up`, the tests and the benchmarks
    write it (the user name in the encrypted extra, as the hook reads it)."""
    return {"conn_type": "itsperfect", "host": f"{sandbox_url}/itsperfect/api/v2", "password": password,
            "extra": {"api_token": token, "username": USERNAME, **extra}}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat()


def ean13(prefix: str, serial: int) -> str:
    body = f"{prefix}{serial:0{12 - len(prefix)}d}"
    check = (10 - sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body)) % 10) % 10
    return body + str(check)


def _warehouse(wid: int, name: str, city: str, active: int) -> dict:
    return {"id": wid, "active": active, "warehouse": name, "street": "", "housenumber": "",
            "housenumberExtension": "", "address2": "", "postalCode": "", "city": city,
            "country": {"id": 1, "iso": "NL", "country": "Netherlands"}, "phone": "", "email": "",
            "subsidiary": {"id": 1, "subsidiary": "Sandbox Fashion Group B.V."},
            "retail": 1 if wid == 3 else 0, "retailStock": 1, "retailTransit": 1, "retailDropshipment": 0}


class ItsPerfectSandbox:
    name = NAME

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.app = FastAPI(title="ItsPerfect sandbox")
        self._limits_middleware()
        install_faults(self.app, NAME, state, self._throttled)   # outermost: a fault answers before counting
        self._handlers()
        self.reset()
        self._routes()

    # ---- state --------------------------------------------------------------------------------------

    SETTINGS = ("clock_offset", "window_seconds", "hourly_limit", "server_calls_per_hour", "past_limit_status",
                "max_limit", "filters_orders_by_reference", "next_order_id", "warehouse_active", "generated",
                "stock_changes")

    def reset(self) -> None:
        self.clock_offset = 0.0
        self.window_seconds = 3600                 # the limit's window; shorter only for tests of a reset
        self.filters_orders_by_reference = True    # off: `reference` ignored, as a tenant may (vendors.md §3.3)
        self.hourly_limit = HOURLY_LIMIT
        self.server_calls_per_hour = 30
        self.past_limit_status = 429
        self.max_limit = MAX_LIMIT
        self.windows: dict[int, dict] = {}         # hour start (epoch) -> counts of that hour
        self.orders: list[dict] = []
        self.next_order_id = 5001
        self.warehouse_active: dict[str, int] = {}  # upstream (de)activations, by warehouse id
        self.generated: list[dict] = []             # large warehouses made by control
        self.stock_changes: list[dict] = []         # stock set by control, replayed after a load
        self._build()

    def dump(self) -> dict:
        """Settings, counters per hour, orders and the data changes (caller holds the state lock); the
        catalogue and stock are regenerated from the seed and those changes."""
        return {**{name: getattr(self, name) for name in self.SETTINGS},
                "windows": [[start, counts] for start, counts in self.windows.items()], "orders": self.orders}

    def load(self, saved: dict) -> None:
        self.reset()
        for name in self.SETTINGS:
            setattr(self, name, saved.get(name, getattr(self, name)))
        self.windows = {int(start): dict(counts) for start, counts in saved["windows"]}
        self.orders = list(saved["orders"])
        self._build()

    def _build(self) -> None:
        """Catalogue, warehouses and stock from the seed, then the generated warehouses and stock changes."""
        rng = random.Random(self.state.seed * 31 + 11)
        self.items: dict[int, dict] = {}
        self.barcodes: dict[str, tuple[int, int, int]] = {}     # barcode -> (item id, colour idx, size idx)
        self.warehouses = {wid: _warehouse(wid, name, city, active) for wid, name, city, active in WAREHOUSES}
        self.stock: dict[int, dict[str, list[int]]] = {wid: {} for wid in self.warehouses}
        for n in range(SEEDED_ITEMS):
            item = self._item(rng, 385 + n, f"38{248 + n}U", rng.randrange(2, 4), rng.choice(SIZE_RUNS), "871819")
            for wid, _, _, _ in WAREHOUSES:
                if (n * 7 + wid) % 5:
                    self._stock_item(rng, wid, item)
        for spec in self.generated:
            self._generate_warehouse(int(spec["id"]), int(spec["barcodes"]))
        for wid, active in self.warehouse_active.items():
            if int(wid) in self.warehouses:
                self.warehouses[int(wid)]["active"] = int(active)
        for change in self.stock_changes:
            self._set_stock(change)
        self._index()

    def _item(self, rng: random.Random, item_id: int, number: str, colours: int, sizes: tuple, prefix: str) -> dict:
        picked = rng.sample(range(len(COLOURS)), colours) if colours <= len(COLOURS) else range(colours)
        item = {"id": item_id, "itemNumber": number, "item": f"Sandbox style {number}", "colors": []}
        for c in picked:
            code, colour = COLOURS[c % len(COLOURS)]
            entry = {"colorId": 200 + c, "colorNumber": code if c < len(COLOURS) else f"{c:03d}",
                     "color": colour if c < len(COLOURS) else f"{colour} {c}", "sizes": []}
            for s, size in enumerate(sizes):
                barcode = ean13(prefix, len(self.barcodes))
                self.barcodes[barcode] = (item_id, len(item["colors"]), s)
                entry["sizes"].append({"sizeId": 60 + s, "size": size, "secondSize": "", "barcode": barcode})
            item["colors"].append(entry)
        self.items[item_id] = item
        return item

    def _stock_item(self, rng: random.Random, wid: int, item: dict) -> None:
        for colour in item["colors"]:
            for size in colour["sizes"]:
                on_hand = rng.choice((0, rng.randrange(1, 60)))
                self.stock[wid][size["barcode"]] = [on_hand, min(on_hand, rng.choice((0, 0, 1, 2)))]

    def _generate_warehouse(self, wid: int, barcodes: int) -> None:
        """A warehouse of `barcodes` barcodes (items of 5 colours x 10 sizes), for benchmarks."""
        rng = random.Random(self.state.seed * 7919 + wid)
        self.warehouses[wid] = _warehouse(wid, f"Benchmark DC {wid}", "Venlo", 1)
        self.stock[wid] = {}
        sizes = tuple(str(34 + 2 * s) for s in range(10))
        base = 1_000_000 + wid * 100_000
        for n in range(math.ceil(barcodes / 50)):
            count = min(50, barcodes - n * 50)
            item = self._item(rng, base + n, f"B{wid}-{n:06d}", 5, sizes, f"87{wid % 100:02d}")
            item["colors"] = [dict(c, sizes=c["sizes"][: max(0, count - 10 * k)]) for k, c in enumerate(item["colors"])]
            item["colors"] = [c for c in item["colors"] if c["sizes"]]
            self._stock_item(rng, wid, item)

    def _set_stock(self, change: dict) -> None:
        wid, barcode = int(change["warehouseId"]), str(change["barcode"])
        if change.get("stock") is None:
            self.stock.get(wid, {}).pop(barcode, None)
        else:
            on_hand = int(change["stock"])
            self.stock.setdefault(wid, {})[barcode] = [on_hand, min(on_hand, int(change.get("reserved", 0)))]

    def _index(self) -> None:
        """Items held per warehouse, in item id order: what a stock page walks."""
        self.held = {wid: sorted({self.barcodes[b][0] for b in stock if b in self.barcodes})
                     for wid, stock in self.stock.items()}

    # ---- the hourly limit ---------------------------------------------------------------------------

    def now(self) -> float:
        return time.time() + self.clock_offset

    def _window(self) -> tuple[int, dict]:
        start = int(self.now() // self.window_seconds * self.window_seconds)
        counts = self.windows.setdefault(start, {"client": 0, "refused": 0, "server_extra": 0,
                                                 "server_rate": self.server_calls_per_hour})
        return start, counts

    def _server_calls(self, start: int, counts: dict) -> int:
        elapsed = min(self.window_seconds, max(0.0, self.now() - start))
        return int(counts["server_rate"] * elapsed / self.window_seconds) + counts["server_extra"]

    def _used(self) -> tuple[int, int]:
        """(calls counted this hour, the hour's reset moment); caller holds the lock."""
        start, counts = self._window()
        return counts["client"] + self._server_calls(start, counts), start + self.window_seconds

    def _limit_headers(self) -> dict[str, str]:
        used, reset_at = self._used()
        return {"X-Request-Limit-Remaining": str(max(0, self.hourly_limit - used)),
                "X-Request-Limit-Date": _iso(reset_at)}

    def _throttled(self) -> Response:
        with_headers = _error(429, "Request limit reached")
        with_headers.headers.update(self._limit_headers())
        return with_headers

    def _basic_ok(self, request: Request) -> bool:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return (scheme.lower() == "basic" and hmac.compare_digest(user.encode(), USERNAME.encode())
                and hmac.compare_digest(password.encode(), PASSWORD.encode()))

    def _admit(self, request: Request) -> Response | None:
        """Token, hourly limit, basic auth, in that order; None when the request may proceed (counted)."""
        token = request.query_params.get("token", "")
        if not hmac.compare_digest(token.encode(), TOKEN.encode()):
            return _error(401, f"The authentication token ({token}) is not valid")
        with self.state.lock:
            used, _ = self._used()
            _, counts = self._window()
            if used >= self.hourly_limit:
                counts["refused"] += 1
                return _error(self.past_limit_status, "Request limit reached")
            counts["client"] += 1
        if not self._basic_ok(request):
            return _error(401, "Invalid username or password")
        return None

    def _limits_middleware(self) -> None:
        @self.app.middleware("http")
        async def limits(request: Request, call_next):
            response = self._admit(request) or await call_next(request)
            with self.state.lock:
                response.headers.update(self._limit_headers())
            return response

    def _handlers(self) -> None:
        @self.app.exception_handler(StarletteHTTPException)
        async def http_error(request: Request, exc: StarletteHTTPException):
            text = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, str(exc.detail))
            return _error(exc.status_code, text)

        @self.app.exception_handler(RequestValidationError)
        async def bad_parameter(request: Request, exc: RequestValidationError):
            problem = exc.errors()[0]
            return _error(400, f"Invalid parameter {problem['loc'][-1]}: {problem['msg']}")

    # ---- control and inspection ---------------------------------------------------------------------

    def control(self, payload: dict) -> dict | JSONResponse:
        """Clock, limit and answers; upstream changes to warehouses and stock; benchmark warehouses."""
        status = int(payload.get("past_limit_status", self.past_limit_status))
        if status not in PAST_LIMIT_STATUSES:
            return JSONResponse({"message": f"past_limit_status must be one of {PAST_LIMIT_STATUSES}"},
                                status_code=400)
        with self.state.lock:
            if "set_clock" in payload:     # an ISO time with its offset: the sandbox's clock reads it now
                self.clock_offset = dt.datetime.fromisoformat(payload["set_clock"]).timestamp() - time.time()
            self.clock_offset += float(payload.get("advance_clock_seconds", 0))
            self.hourly_limit = int(payload.get("hourly_limit", self.hourly_limit))
            self.window_seconds = int(payload.get("window_seconds", self.window_seconds))
            self.filters_orders_by_reference = bool(payload.get("filters_orders_by_reference",
                                                                self.filters_orders_by_reference))
            self.past_limit_status = status
            self.max_limit = int(payload.get("max_limit", self.max_limit))
            _, counts = self._window()
            if "server_calls_per_hour" in payload:
                self.server_calls_per_hour = counts["server_rate"] = int(payload["server_calls_per_hour"])
            counts["server_extra"] += int(payload.get("server_calls_now", 0))
            for wid in payload.get("deactivate_warehouses", []):
                self.warehouse_active[str(wid)] = 0
            for wid in payload.get("activate_warehouses", []):
                self.warehouse_active[str(wid)] = 1
            spec = payload.get("generate_warehouse")   # {"id": 900, "barcodes": 50000}
            if spec:
                self.generated = [g for g in self.generated if int(g["id"]) != int(spec["id"])]
                self.generated.append({"id": int(spec["id"]), "barcodes": int(spec["barcodes"])})
            self.stock_changes.extend(payload.get("set_stock", []))
            if spec or {"set_stock", "deactivate_warehouses", "activate_warehouses"} & set(payload):
                self._build()
        return self.inspect()

    def inspect(self) -> dict:
        with self.state.lock:
            start, counts = self._window()
            server = self._server_calls(start, counts)
            hours = [{"start": _iso(s), "client": c["client"],
                      "server": self._server_calls(s, c), "refused": c["refused"],
                      "total": c["client"] + self._server_calls(s, c)} for s, c in sorted(self.windows.items())]
            used = counts["client"] + server
            return {"limit": self.hourly_limit, "hour_start": _iso(start),
                    "client_calls": counts["client"], "server_calls": server, "calls_this_hour": used,
                    "refused_this_hour": counts["refused"], "remaining": max(0, self.hourly_limit - used),
                    "hours": hours, "orders_received": len(self.orders), "orders": self.orders,
                    "warehouses": {wid: {"active": w["active"], "barcodes": len(self.stock.get(wid, {})),
                                         "items": len(self.held.get(wid, []))} for wid, w in self.warehouses.items()},
                    "settings": {name: getattr(self, name) for name in
                                 ("clock_offset", "window_seconds", "server_calls_per_hour", "past_limit_status",
                                  "max_limit")}}

    # ---- the API ------------------------------------------------------------------------------------

    def _page(self, rows: list, page: int | None, limit: int | None) -> tuple[list, dict[str, str]]:
        """Yii2-style paging: limit capped, page clamped into range; the three documented headers."""
        size = min(max(1, limit if limit is not None else DEFAULT_PAGE_SIZE), self.max_limit)
        count = math.ceil(len(rows) / size)
        current = min(max(1, page or 1), max(1, count))
        headers = {"X-Pagination-Current-Page": str(current), "X-Pagination-Page-Count": str(count),
                   "X-Pagination-Total-Count": str(len(rows))}
        return rows[(current - 1) * size: current * size], headers

    def _stock_entry(self, item_id: int, wid: int) -> dict:
        item, held = self.items[item_id], self.stock[wid]
        colours = []
        for colour in item["colors"]:
            sizes = [{**size, "stock": str(on_hand), "virtualStockReservation": str(reserved),
                      "availableStock": on_hand - reserved}
                     for size in colour["sizes"] if size["barcode"] in held
                     for on_hand, reserved in [held[size["barcode"]]]]
            if sizes:
                colours.append({k: v for k, v in colour.items() if k != "sizes"} | {"sizes": sizes})
        return {"warehouseId": wid, "warehouse": self.warehouses[wid]["warehouse"], "colors": colours}

    def _stock_rows(self, warehouse_id: int | None) -> list[tuple[int, list[int]]]:
        wids = [warehouse_id] if warehouse_id is not None else sorted(self.warehouses)
        by_item: dict[int, list[int]] = {}
        for wid in wids:
            for item_id in self.held.get(wid, []):
                by_item.setdefault(item_id, []).append(wid)
        return sorted(by_item.items())

    def _routes(self) -> None:
        self._read_routes()
        self._order_routes()

    def _read_routes(self) -> None:
        app = self.app

        @app.get("/api/v2/warehouses")
        def warehouses(page: int | None = None, limit: int | None = None):
            rows, headers = self._page([self.warehouses[w] for w in sorted(self.warehouses)], page, limit)
            return JSONResponse({"warehouses": rows}, headers=headers)

        @app.get("/api/v2/items")
        def items(page: int | None = None, limit: int | None = None):
            rows, headers = self._page(sorted(self.items), page, limit)
            return JSONResponse({"items": [{k: v for k, v in self.items[i].items() if k != "colors"} for i in rows]},
                                headers=headers)

        @app.get("/api/v2/stock")
        def stock(warehouseId: int | None = None, page: int | None = None, limit: int | None = None):  # noqa: N803
            if warehouseId is not None and warehouseId not in self.warehouses:
                return _error(404, f"Warehouse {warehouseId} not found")
            rows, headers = self._page(self._stock_rows(warehouseId), page, limit)
            body = [{"itemId": item_id, "itemNumber": self.items[item_id]["itemNumber"],
                     "warehouses": [self._stock_entry(item_id, wid) for wid in wids]} for item_id, wids in rows]
            return JSONResponse({"stock": body}, headers=headers)

    def _order_problem(self, body: object) -> str | None:
        """The first thing wrong with an order, as the vendor's error text; None when it is acceptable."""
        if not isinstance(body, dict):
            return "Invalid JSON body"
        for key in ORDER_REQUIRED:
            if body.get(key) in (None, "", []):
                return f"The field {key} is required"
        for kind in ("shippingAddress", "invoiceAddress"):
            address = body[kind]
            missing = [k for k in ADDRESS_REQUIRED if not isinstance(address, dict) or address.get(k) in (None, "")]
            if missing:
                return f"The field {kind}.{missing[0]} is required"
        wid = int(body["warehouseId"]) if str(body["warehouseId"]).isdigit() else None
        if wid not in self.warehouses:
            return f"Warehouse {body['warehouseId']} not found"
        if not self.warehouses[wid]["active"]:
            return f"Warehouse {wid} is not active"
        for n, line in enumerate(body["items"] if isinstance(body["items"], list) else [None]):
            barcode = str(line.get("barcode") or "") if isinstance(line, dict) else ""
            if barcode not in self.barcodes:
                return f"Barcode {barcode} not found (items[{n}])"
            if not str(line.get("quantity", "")).isdigit() or int(line["quantity"]) < 1:
                return f"Invalid quantity for barcode {line['barcode']} (items[{n}])"
        return None

    def _order_routes(self) -> None:
        app = self.app

        @app.post("/api/v2/orders")
        async def create_order(request: Request):
            try:
                body = await request.json()
            except ValueError:
                return _error(400, "Invalid JSON body")
            problem = self._order_problem(body)
            if problem:
                return _error(400, problem)
            with self.state.lock:
                order = {"id": self.next_order_id, "orderNumber": str(body.get("orderNumber") or self.next_order_id),
                         "reference": body["reference"], "warehouseId": int(body["warehouseId"]),
                         "received": _iso(self.now()),
                         "payload": body}
                self.next_order_id += 1
                self.orders.append(order)
            return {"orders": [{k: v for k, v in order.items() if k != "payload"}]}

        @app.get("/api/v2/orders")
        def orders(reference: str | None = None, page: int | None = None, limit: int | None = None):
            found = [{k: v for k, v in o.items() if k != "payload"} for o in self.orders
                     if reference is None or not self.filters_orders_by_reference or o["reference"] == reference]
            rows, headers = self._page(found, page, limit)
            return JSONResponse({"orders": rows}, headers=headers)
