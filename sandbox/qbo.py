"""QuickBooks Online, as our hook meets it (docs/integrations/quickbooks-online.md).

- OAuth token endpoint with real rotation: each refresh issues a new refresh token. What becomes of
  the old one is undocumented, so both readings are offered (`PUT /_sandbox/control/qbo`
  `{"old_refresh_token": ...}`): `dies_at_once` (the default, the harshest: after `refresh_grace_seconds`
  of the sandbox's clock, 0 by default), or `until_new_one_used` (it keeps working, and each retry with
  it issues another pair, until one of the tokens it produced is first presented; then it and its
  other offspring die). Access tokens live one hour on a clock tests can move, and read only the
  company they were issued for.
- The consent (authorization-code grant): `GET /connect/oauth2` consents without a human for the
  company `consent_realm` (or refuses with `error=access_denied` when `consent_denied`) and redirects
  with a code that is single-use, bound to its redirect_uri and dead after 10 minutes.
- `query` (GET with `query=` or POST with an application/text body) for the grammar subset we use:
  `SELECT * | COUNT(*) FROM <Entity> [WHERE MetaData.LastUpdatedTime >=|>|<|<= '<ts>' | Id IN ('<id>', …)
  [AND …]] [ORDERBY MetaData.LastUpdatedTime [ASC|DESC]] [STARTPOSITION n] [MAXRESULTS n]`, 1-based, at most 1000.
- An Invoice's `Balance` is its total less what payments apply to it (never below 0), kept current when a
  payment is touched, deleted, voided (`void_payment`: amounts 0, LinkedTxn kept, `PrivateNote` "Voided",
  as QBO voids) or added (`add_payment`); the invoice's LastUpdatedTime stays put.
- `cdc` with its 30-day look-back and 1000-object cap; `companyinfo/<realm>`, which a consent reads to
  prove its token is for the company in the redirect.
- `minorversion` required on every API call; Fault JSON bodies; 401 in the gateway's lowercase shape;
  past `rate_per_minute` requests per realm, 429 with the XML ThrottleExceeded body and no Retry-After.
"""
from __future__ import annotations

import base64
import bisect
import collections
import datetime as dt
import hmac
import random
import re
import time
from decimal import Decimal
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from sandbox.core import SandboxState, install_faults

NAME = "qbo"
CLIENT_ID, CLIENT_SECRET = "qbo-sandbox-client-id", "qbo-sandbox-client-secret"
REALMS = ("9130350000000001", "9130350000000002", "9130350000000003")
INITIAL_REFRESH_TOKENS = {realm: f"qbo-sandbox-initial-refresh-{n}" for n, realm in enumerate(REALMS, start=1)}
ENTITIES = ("SalesReceipt", "Invoice", "RefundReceipt", "CreditMemo", "Payment")
ACCESS_SECONDS, REFRESH_SECONDS = 3600, 8_726_400
CODE_SECONDS = 600   # RFC 6749 4.1.2: codes expire shortly after issue, 10 minutes at most
OLD_REFRESH_TOKEN = ("dies_at_once", "until_new_one_used")
ACCOUNTING_SCOPE = "com.intuit.quickbooks.accounting"
MAX_RESULTS, CDC_CAP = 1000, 1000
QUERIES_KEPT = 2000      # the last queries' text, for tests that assert what was asked (the request log has no bodies)
T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=-8)))

THROTTLE_XML = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<IntuitResponse time="{time}" xmlns="http://schema.intuit.com/finance/v3">'
    '<Fault type="SERVICE"><Error code="3001"><Message>message=ThrottleExceeded; errorCode=003001; statusCode=429'
    '</Message><Detail>The request limit was reached.  Try again later</Detail></Error></Fault></IntuitResponse>'
)
_QUERY = re.compile(
    r"^\s*SELECT\s+(?P<what>\*|COUNT\(\*\))\s+FROM\s+(?P<entity>\w+)"
    r"(?:\s+WHERE\s+(?P<where>.+?))?"
    r"(?:\s+ORDERBY\s+(?P<order>[\w.]+)(?:\s+(?P<dir>ASC|DESC))?)?"
    r"(?:\s+STARTPOSITION\s+(?P<start>\d+))?(?:\s+MAXRESULTS\s+(?P<max>\d+))?\s*$",
    re.IGNORECASE,
)
_CONDITION = re.compile(r"^\s*Meta[Dd]ata\.LastUpdatedTime\s*(>=|<=|>|<|=)\s*'([^']+)'\s*$")
_ID_IN = re.compile(r"^\s*Id\s+IN\s*\(\s*('[^']*'(?:\s*,\s*'[^']*')*)\s*\)\s*$", re.IGNORECASE)


def company_connection(sandbox_url: str, realm: str) -> dict:
    """One sandbox company as an Airflow connection of type `qbo` (the OAuth app, the realm and its initial
    refresh token), as `make up` and the tests write it."""
    return {"conn_type": "qbo", "host": f"{sandbox_url}/qbo", "login": CLIENT_ID, "password": CLIENT_SECRET,
            "extra": {"realm_id": realm, "refresh_token": INITIAL_REFRESH_TOKENS[realm],
                      "oauth_endpoint_url": f"{sandbox_url}/qbo/oauth2/v1/tokens/bearer"}}


def _stamp(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _fault(status: int, code: str, message: str, detail: str, kind: str = "ValidationFault") -> JSONResponse:
    return JSONResponse({"Fault": {"Error": [{"Message": message, "Detail": detail, "code": code, "element": ""}],
                                   "type": kind}, "time": _stamp(dt.datetime.now(dt.timezone.utc))},
                        status_code=status)


def _unauthorized(detail: str) -> JSONResponse:
    return JSONResponse({"fault": {"error": [{"message": "message=AuthenticationFailed; errorCode=003200; "
                                                         "statusCode=401", "detail": detail, "code": "3200"}],
                                   "type": "AUTHENTICATION"}, "time": _stamp(dt.datetime.now(dt.timezone.utc))},
                        status_code=401)


def throttled(status: int = 429) -> Response:
    return Response(THROTTLE_XML.format(time=_stamp(dt.datetime.now(dt.timezone.utc))).replace(
        "statusCode=429", f"statusCode={status}"), status_code=status, media_type="application/xml")


class _Realms:
    """`sandbox.data[realm]`, generating a company's records on first access."""

    def __init__(self, sandbox: QboSandbox) -> None:
        self.sandbox = sandbox

    def __getitem__(self, realm: str) -> dict[str, list[dict]]:
        return self.sandbox.realm_data(realm)

    def __contains__(self, realm: object) -> bool:
        return realm in REALMS


class QboSandbox:
    name = NAME

    def __init__(self, state: SandboxState, *, per_entity: int = 40) -> None:
        self.state = state
        self.default_per_entity = per_entity
        self.app = FastAPI(title="QuickBooks Online sandbox")
        install_faults(self.app, NAME, state, lambda: throttled(self.throttle_status))
        self.reset()
        self._routes()

    # ---- state --------------------------------------------------------------------------------

    def reset(self) -> None:
        self.queries: collections.deque[list[str]] = collections.deque(maxlen=QUERIES_KEPT)  # [realm, text]
        self.clock_offset = 0.0
        self.per_entity = self.default_per_entity
        self.rate_per_minute = 500
        self.refresh_grace_seconds = 0.0
        self.old_refresh_token = OLD_REFRESH_TOKEN[0]
        self.throttle_status = 429   # older QBO answers used 403 with the same XML body
        self.refresh_tokens: dict[str, tuple[str, float | None]] = {   # token -> (realm, dies at)
            token: (realm, None) for realm, token in INITIAL_REFRESH_TOKENS.items()}
        self.parent_of: dict[str, str] = {}     # refresh token -> the one it replaced, until it is first used
        self.access_tokens: dict[str, tuple[str, float]] = {}            # token -> (realm, expires at)
        self.consent_realm, self.consent_denied = REALMS[0], False
        self.redirect_uris: list[str] | None = None    # the app's registered redirect URIs; None: any local one
        self.codes: dict[str, tuple[str, str, float]] = {}               # code -> (realm, redirect_uri, dies at)
        self.consents = 0
        self.refreshes = 0
        self.refresh_refusals = 0
        self.calls: dict[str, list[float]] = {}
        self._data: dict[str, dict[str, list[dict]]] = {}
        self._deleted: dict[tuple[str, str], list[dict]] = {}      # (realm, entity) -> CDC tombstones
        self._index: dict[tuple[str, str], tuple[list, list]] = {}  # (realm, entity) -> (sort keys, rows)

    # ---- persistence (`--state-file`): everything but the rate windows and the sort index ---------

    SETTINGS = ("clock_offset", "per_entity", "rate_per_minute", "refresh_grace_seconds", "old_refresh_token",
                "throttle_status", "consent_realm", "consent_denied", "redirect_uris", "consents", "refreshes",
                "refresh_refusals")

    def dump(self) -> dict:
        """The company data and every token and code issued (caller holds the state lock)."""
        return {**{name: getattr(self, name) for name in self.SETTINGS},
                "refresh_tokens": self.refresh_tokens, "parent_of": self.parent_of,
                "access_tokens": self.access_tokens, "codes": self.codes, "data": self._data,
                "deleted": [[realm, entity, rows] for (realm, entity), rows in self._deleted.items()]}

    def load(self, saved: dict) -> None:
        self.reset()
        for name in self.SETTINGS:
            setattr(self, name, saved.get(name, getattr(self, name)))
        self.refresh_tokens = {token: (realm, dies) for token, (realm, dies) in saved["refresh_tokens"].items()}
        self.parent_of = dict(saved["parent_of"])
        self.access_tokens = {token: (realm, expires) for token, (realm, expires) in saved["access_tokens"].items()}
        self.codes = {code: (realm, uri, dies) for code, (realm, uri, dies) in saved["codes"].items()}
        self._data = {realm: data for realm, data in saved["data"].items() if realm in REALMS}
        self._deleted = {(realm, entity): rows for realm, entity, rows in saved["deleted"]}

    @property
    def data(self) -> _Realms:
        return _Realms(self)

    def realm_data(self, realm: str) -> dict[str, list[dict]]:
        """A company's records, generated on first use (large sizes cost memory only when used)."""
        with self.state.lock:
            if realm not in self._data:
                self._data[realm] = self._generate(REALMS.index(realm))
            return self._data[realm]

    def now(self) -> float:
        return time.time() + self.clock_offset

    def control(self, payload: dict) -> dict:
        """Tests move the clock, tune limits, and change records."""
        for change in [*payload.get("touch", []), *payload.get("delete", []), *payload.get("restamp", []),
                       *payload.get("void_payment", []), *payload.get("add_payment", []),
                       *([payload["spread"]] if "spread" in payload else [])]:
            self.realm_data(change["realm"])
        for realm in payload.get("generate", []):    # make a company's records now, not on its first query
            self.realm_data(realm)
        with self.state.lock:
            self.clock_offset += float(payload.get("advance_clock_seconds", 0))
            if payload.get("expire_access_tokens"):    # an hour passing for the tokens only: CDC's reach stays put
                self.access_tokens = {t: (realm, self.now()) for t, (realm, _) in self.access_tokens.items()}
            self.rate_per_minute = int(payload.get("rate_per_minute", self.rate_per_minute))
            self.per_entity = int(payload.get("per_entity", self.per_entity))   # for realms not generated yet
            self.refresh_grace_seconds = float(payload.get("refresh_grace_seconds", self.refresh_grace_seconds))
            self.throttle_status = int(payload.get("throttle_status", self.throttle_status))
            if payload.get("old_refresh_token", self.old_refresh_token) not in OLD_REFRESH_TOKEN:
                raise ValueError(f"old_refresh_token must be one of {OLD_REFRESH_TOKEN}")
            self.old_refresh_token = payload.get("old_refresh_token", self.old_refresh_token)
            if "consent_realm" in payload:
                if payload["consent_realm"] not in REALMS:
                    raise ValueError(f"consent_realm must be one of {REALMS}")
                self.consent_realm = payload["consent_realm"]
            self.consent_denied = bool(payload.get("consent_denied", self.consent_denied))
            self.redirect_uris = payload.get("redirect_uris", self.redirect_uris)
            now = _stamp(dt.datetime.fromtimestamp(self.now(), dt.timezone.utc).astimezone(T0.tzinfo))
            for change in payload.get("touch", []):   # {"realm", "entity", "id", "fields": {...}}
                record = next(r for r in self._data[change["realm"]][change["entity"]] if r["Id"] == change["id"])
                record.update(change.get("fields", {}))
                record["SyncToken"] = str(int(record["SyncToken"]) + 1)
                record["MetaData"]["LastUpdatedTime"] = now
                self._index.pop((change["realm"], change["entity"]), None)
            if "spread" in payload:   # {"realm", "from", "to"}: a company's history over years, evenly
                self._spread(**payload["spread"])
            for stamps in payload.get("restamp", []):   # {"realm", "entity", "at": {id: iso time}}: a bulk import
                for record in self._data[stamps["realm"]][stamps["entity"]]:
                    if record["Id"] in stamps["at"]:
                        record["MetaData"]["LastUpdatedTime"] = stamps["at"][record["Id"]]
                self._index.pop((stamps["realm"], stamps["entity"]), None)
            for gone in payload.get("delete", []):    # {"realm", "entity", "id"}: only CDC still tells
                rows = self._data[gone["realm"]][gone["entity"]]
                rows[:] = [r for r in rows if r["Id"] != gone["id"]]
                self._deleted.setdefault((gone["realm"], gone["entity"]), []).append(
                    {"domain": "QBO", "status": "Deleted", "Id": gone["id"], "MetaData": {"LastUpdatedTime": now}})
                self._index.pop((gone["realm"], gone["entity"]), None)
            for void in payload.get("void_payment", []):   # {"realm", "id"}: QBO's void keeps the links at 0
                record = next(r for r in self._data[void["realm"]]["Payment"] if r["Id"] == void["id"])
                for line in record["Line"]:
                    line["Amount"] = 0.0
                record.update({"TotalAmt": 0.0, "UnappliedAmt": 0.0, "PrivateNote": "Voided",
                               "SyncToken": str(int(record["SyncToken"]) + 1)})
                record["MetaData"]["LastUpdatedTime"] = now
                self._index.pop((void["realm"], "Payment"), None)
            added = [self._add_payment(now, **new) for new in payload.get("add_payment", [])]
            for realm in {c["realm"] for c in [*payload.get("touch", []), *payload.get("delete", []),
                                               *payload.get("void_payment", []), *payload.get("add_payment", [])]
                          if c.get("entity", "Payment") == "Payment"}:
                self._rebalance(self._data[realm])
        return {**self.inspect(), "added_payments": added}

    def _add_payment(self, now: str, *, realm: str, invoice_id: str, amount: float,
                     txn_date: str | None = None) -> str:
        """A payment applying `amount` to one invoice (caller holds the state lock); its new Id."""
        data = self._data[realm]
        taken = [int(r["Id"]) for rows in data.values() for r in rows]
        taken += [int(r["Id"]) for (owner, _), rows in self._deleted.items() if owner == realm for r in rows]
        txn_id = str(max(taken) + 1)
        data["Payment"].append({
            "Id": txn_id, "SyncToken": "0", "domain": "QBO", "TxnDate": txn_date or now[:10],
            "TotalAmt": float(amount), "UnappliedAmt": 0.0, "CustomerRef": {"value": "50", "name": "Customer 0"},
            "Line": [{"Amount": float(amount), "LinkedTxn": [{"TxnId": str(invoice_id), "TxnType": "Invoice"}]}],
            "MetaData": {"CreateTime": now, "LastUpdatedTime": now}})
        self._index.pop((realm, "Payment"), None)
        return txn_id

    @classmethod
    def _rebalance(cls, data: dict[str, list[dict]]) -> None:
        """Every invoice's Balance: its total less what the company's payments apply to it, never below 0."""
        applied: dict[str, Decimal] = {}
        for payment in data["Payment"]:
            for line in payment["Line"]:
                for link in line.get("LinkedTxn", []):
                    if link.get("TxnType") == "Invoice":
                        applied[link["TxnId"]] = applied.get(link["TxnId"], Decimal(0)) + Decimal(str(line["Amount"]))
        for invoice in data["Invoice"]:
            balance = Decimal(str(invoice["TotalAmt"])) - applied.get(invoice["Id"], Decimal(0))
            invoice["Balance"] = cls._money(max(Decimal(0), balance))

    def _spread(self, realm: str, **bounds: str) -> None:
        """Every record of the company last updated evenly between `from` and `to` (ISO times), each entity
        over the whole span: a sparse history years long."""
        low, high = (dt.datetime.fromisoformat(bounds[b]) for b in ("from", "to"))
        for entity, rows in self._data[realm].items():
            step = (high - low) / max(1, len(rows))
            for n, record in enumerate(rows):
                record["MetaData"]["LastUpdatedTime"] = _stamp((low + n * step).astimezone(T0.tzinfo))
            self._index.pop((realm, entity), None)

    def _sorted(self, realm: str, entity: str) -> tuple[list, list]:
        """Rows by (LastUpdatedTime, scramble), built once per change: a 100k-row company stays fast.

        QBO promises no order among equal timestamps; neither do we (a scrambled, stable one).
        """
        key, data = (realm, entity), self.realm_data(realm)
        with self.state.lock:
            if key not in self._index:
                rows = sorted(data[entity], key=self._sort_key)
                self._index[key] = ([self._sort_key(r) for r in rows], rows)
            return self._index[key]

    @staticmethod
    def _sort_key(row: dict) -> tuple[dt.datetime, int]:
        return dt.datetime.fromisoformat(row["MetaData"]["LastUpdatedTime"]), (int(row["Id"]) * 7919) % 1009

    def inspect(self) -> dict:
        return {"queries": list(self.queries), "refreshes": self.refreshes, "refresh_refusals": self.refresh_refusals,
                "live_refresh_tokens": len(self.refresh_tokens), "consents": self.consents,
                "records": {realm: {e: len(rows) for e, rows in data.items()} for realm, data in self._data.items()}}

    def _generate(self, realm_index: int) -> dict[str, list[dict]]:
        rng = random.Random(self.state.seed * 1000 + realm_index)
        data: dict[str, list[dict]] = {}
        next_id = 100
        for kind_index, entity in enumerate(ENTITIES):
            rows = []
            for n in range(self.per_entity):
                next_id += 1
                updated = T0 + dt.timedelta(minutes=13 * n + kind_index)
                rows.append(self._transaction(entity, str(next_id), n, updated, rng))
            data[entity] = rows
        self._rebalance(data)
        return data

    @staticmethod
    def _money(value: Decimal) -> float:
        return float(value.quantize(Decimal("0.01")))

    def _transaction(self, entity: str, txn_id: str, n: int, updated: dt.datetime, rng: random.Random) -> dict:
        meta = {"CreateTime": _stamp(updated), "LastUpdatedTime": _stamp(updated)}
        customer = {"value": str(50 + n % 9), "name": f"Customer {n % 9}"}
        if entity == "Payment":
            total = Decimal(rng.randrange(1000, 90000)) / 100
            return {"Id": txn_id, "SyncToken": "0", "domain": "QBO", "TxnDate": updated.date().isoformat(),
                    "TotalAmt": self._money(total), "UnappliedAmt": 0.0, "CustomerRef": customer,
                    "Line": [{"Amount": self._money(total), "LinkedTxn": [{"TxnId": str(int(txn_id) - 90),
                                                                          "TxnType": "Invoice"}]}],
                    "MetaData": meta}
        lines, net = [], Decimal(0)
        for line_no in range(1, rng.randrange(2, 4)):
            qty, price = rng.randrange(1, 5), Decimal(rng.randrange(500, 20000)) / 100
            amount = qty * price
            net += amount
            lines.append({"Id": str(line_no), "LineNum": line_no, "Description": f"Item {line_no}",
                          "Amount": self._money(amount), "DetailType": "SalesItemLineDetail",
                          "SalesItemLineDetail": {"ItemRef": {"value": str(10 + line_no), "name": f"Item {line_no}"},
                                                  "UnitPrice": self._money(price), "Qty": qty,
                                                  "TaxCodeRef": {"value": "TAX"}}})
        shipping = Decimal(rng.choice([0, 0, 995, 1500])) / 100
        if shipping:
            lines.append({"Id": str(len(lines) + 1), "LineNum": len(lines) + 1, "Amount": self._money(shipping),
                          "DetailType": "SalesItemLineDetail",
                          "SalesItemLineDetail": {"ItemRef": {"value": "SHIPPING_ITEM_ID"},
                                                  "TaxCodeRef": {"value": "NON"}}})
        lines.append({"Amount": self._money(net + shipping), "DetailType": "SubTotalLineDetail",
                      "SubTotalLineDetail": {}})
        tax = (net * Decimal("0.0825")).quantize(Decimal("0.01"))
        address = {"Id": str(200 + n), "Line1": f"{n} Market St", "City": "Fresno", "CountrySubDivisionCode": "CA",
                   "PostalCode": "93722"}
        record = {"Id": txn_id, "SyncToken": "0", "domain": "QBO", "DocNumber": f"{entity[:2].upper()}-{txn_id}",
                  "TxnDate": updated.date().isoformat(), "CustomerRef": customer, "Line": lines,
                  "TxnTaxDetail": {"TxnTaxCodeRef": {"value": "2"}, "TotalTax": self._money(tax),
                                   "TaxLine": [{"DetailType": "TaxLineDetail", "Amount": self._money(tax),
                                                "TaxLineDetail": {"TaxRateRef": {"value": "3"}, "PercentBased": True,
                                                                  "TaxPercent": 8.25,
                                                                  "NetAmountTaxable": self._money(net)}}]},
                  "TotalAmt": self._money(net + shipping + tax), "CurrencyRef": {"value": "USD"},
                  "GlobalTaxCalculation": "TaxExcluded", "MetaData": meta}
        # Some documents lack one address, some both, some the zip: real books are like that.
        if n % 7 != 3 and n % 11 != 8:
            record["ShipAddr"] = address if n % 13 != 6 else {k: v for k, v in address.items() if k != "PostalCode"}
        if n % 7 != 5 and n % 11 != 8 and n % 13 != 6:
            record["BillAddr"] = {**address, "Id": str(300 + n)}
        return record

    # ---- routes -------------------------------------------------------------------------------

    def _realm_of_bearer(self, request: Request) -> tuple[str | None, JSONResponse | None]:
        header = request.headers.get("authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        with self.state.lock:
            entry = self.access_tokens.get(token)
        if entry is None:
            return None, _unauthorized("Token invalid")
        if entry[1] <= self.now():
            return None, _unauthorized("Token expired: the access token has expired")
        return entry[0], None

    def _rate_limited(self, realm: str) -> bool:
        with self.state.lock:
            window = [t for t in self.calls.get(realm, []) if t > time.time() - 60]
            window.append(time.time())
            self.calls[realm] = window
            return len(window) > self.rate_per_minute

    def _routes(self) -> None:
        app = self.app

        @app.post("/oauth2/v1/tokens/bearer")
        async def token(request: Request):
            expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
            if not hmac.compare_digest(request.headers.get("authorization", "").encode(), expected.encode()):
                return JSONResponse({"error": "invalid_client"}, status_code=401)
            form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
            if form.get("grant_type") == "authorization_code":
                return self._redeem_code(form)
            if form.get("grant_type") != "refresh_token" or not form.get("refresh_token"):
                return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
            with self.state.lock:
                return self._rotate(form["refresh_token"])

        @app.get("/connect/oauth2")
        def authorize(request: Request):
            return self._consent(dict(request.query_params))

        async def run_query(realm: str, request: Request, text: str | None):
            problem = self._check_call(realm, request)
            if problem is not None:
                return problem
            if not text:
                return _fault(400, "4000", "Error parsing query", "QueryParserError: query is empty")
            with self.state.lock:
                self.queries.append([realm, text])
            return self._query(realm, text)

        @app.get("/v3/company/{realm}/query")
        async def query_get(realm: str, request: Request, query: str | None = None):
            return await run_query(realm, request, query)

        @app.post("/v3/company/{realm}/query")
        async def query_post(realm: str, request: Request):
            return await run_query(realm, request, (await request.body()).decode())

        @app.get("/v3/company/{realm}/companyinfo/{company_id}")
        def company_info(realm: str, company_id: str, request: Request):
            problem = self._check_call(realm, request)
            if problem is not None:
                return problem
            if company_id != realm:
                return _fault(400, "610", "Object Not Found", f"CompanyInfo {company_id} is not in realm {realm}")
            return {"CompanyInfo": {"Id": "1", "CompanyName": f"Sandbox Company {REALMS.index(realm) + 1}",
                                    "Country": "US", "SyncToken": "0"},
                    "time": _stamp(dt.datetime.now(dt.timezone.utc))}

        @app.get("/v3/company/{realm}/cdc")
        def cdc(realm: str, request: Request, entities: str = "", changedSince: str = ""):  # noqa: N803
            problem = self._check_call(realm, request)
            if problem is not None:
                return problem
            try:
                since = dt.datetime.fromisoformat(changedSince)
            except ValueError:
                return _fault(400, "2040", "Invalid Date", f"changedSince {changedSince!r} is not a date or datetime")
            if since.tzinfo is None:
                since = since.replace(tzinfo=dt.timezone.utc)
            now = dt.datetime.fromtimestamp(self.now(), dt.timezone.utc)
            if now - since > dt.timedelta(days=30):
                return _fault(400, "2040", "Invalid Date", "changedSince must be within the last 30 days")
            responses, budget = [], CDC_CAP
            for entity in [e for e in entities.split(",") if e]:
                if entity not in ENTITIES:
                    return _fault(400, "2030", "Invalid Query", f"unsupported entity {entity}")
                keys, ordered = self._sorted(realm, entity)
                changed = ordered[bisect.bisect_left(keys, (since, -1)):]
                gone = [r for r in self._deleted.get((realm, entity), [])
                        if dt.datetime.fromisoformat(r["MetaData"]["LastUpdatedTime"]) >= since]
                rows = sorted([*changed, *gone], key=lambda r: r["MetaData"]["LastUpdatedTime"])[:budget]
                budget -= len(rows)
                if rows:
                    responses.append({entity: rows, "startPosition": 1, "maxResults": len(rows)})
            return {"CDCResponse": [{"QueryResponse": responses or [{}]}], "time": _stamp(now)}

    def _rotate(self, presented: str) -> JSONResponse | dict:
        """grant_type=refresh_token (caller holds the state lock): a new pair, and the old token's fate."""
        entry = self.refresh_tokens.get(presented)
        if entry is None or (entry[1] is not None and entry[1] <= self.now()):
            self.refresh_refusals += 1
            return JSONResponse({"error": "invalid_grant", "error_description": "Token has been expired or revoked."},
                                status_code=400)
        realm = entry[0]
        parent = self.parent_of.pop(presented, None)
        if self.old_refresh_token == "dies_at_once":
            self.refresh_tokens[presented] = (realm, self.now() + self.refresh_grace_seconds)
        elif parent is not None:   # first use of a rotated token: the one it replaced, and its other offspring, die
            for token in [parent, *[t for t, p in self.parent_of.items() if p == parent]]:
                self.refresh_tokens.pop(token, None)
        self.refresh_tokens = {t: v for t, v in self.refresh_tokens.items() if v[1] is None or v[1] > self.now()}
        self.parent_of = {t: p for t, p in self.parent_of.items() if t in self.refresh_tokens}
        self.refreshes += 1
        answer = self._issue_tokens(realm)
        self.parent_of[answer["refresh_token"]] = presented
        return answer

    def _issue_tokens(self, realm: str) -> dict:
        """A new access + refresh token pair for `realm` (caller holds the state lock)."""
        new_refresh = f"RT1-{self.state.random.getrandbits(128):032x}"
        new_access = f"AT1-{self.state.random.getrandbits(256):064x}"
        self.refresh_tokens[new_refresh] = (realm, None)
        self.access_tokens[new_access] = (realm, self.now() + ACCESS_SECONDS)
        return {"token_type": "bearer", "expires_in": ACCESS_SECONDS, "refresh_token": new_refresh,
                "x_refresh_token_expires_in": REFRESH_SECONDS, "access_token": new_access}

    def _registered(self, redirect_uri: str) -> bool:
        """Intuit redirects only to the URIs on the app's Keys tab (exactly); unset here: any local http(s) URL."""
        if self.redirect_uris is not None:
            return redirect_uri in self.redirect_uris
        parts = urlsplit(redirect_uri)
        return parts.scheme in ("http", "https") and parts.hostname in ("127.0.0.1", "localhost")

    def _consent(self, params: dict) -> Response:
        """The consent page, decided at once. A bad client or redirect_uri is shown, never redirected to
        (RFC 6749 4.1.2.1); other errors, and the user's refusal, go back to redirect_uri with `state`."""
        redirect_uri = params.get("redirect_uri", "")
        if params.get("client_id") != CLIENT_ID:
            return JSONResponse({"error": "invalid_client", "error_description": "unknown client_id"}, status_code=400)
        if not redirect_uri or not self._registered(redirect_uri):
            return JSONResponse({"error": "invalid_request", "error_description": "The redirect_uri query parameter "
                                 "value is invalid. Make sure it is listed in the Redirect URIs section on your app's "
                                 "keys tab and matches it exactly."}, status_code=400)

        def back(**answer: str) -> RedirectResponse:
            parts = urlsplit(redirect_uri)
            query = parse_qsl(parts.query, keep_blank_values=True) + list(answer.items())
            if "state" in params:
                query.append(("state", params["state"]))
            return RedirectResponse(urlunsplit(parts._replace(query=urlencode(query))), status_code=302)

        if params.get("response_type") != "code":
            return back(error="unsupported_response_type")
        if ACCOUNTING_SCOPE not in params.get("scope", "").split():
            return back(error="invalid_scope")
        if self.consent_denied:
            return back(error="access_denied")
        with self.state.lock:
            code = f"AB11{self.state.random.getrandbits(192):048x}"
            self.codes[code] = (self.consent_realm, redirect_uri, self.now() + CODE_SECONDS)
            self.consents += 1
            realm = self.consent_realm
        return back(code=code, realmId=realm)

    def _redeem_code(self, form: dict) -> JSONResponse | dict:
        """grant_type=authorization_code: the code works once, before it expires, with the redirect_uri it
        was issued for; a fresh token pair for its company (earlier consents' tokens stay valid)."""
        if not form.get("code") or not form.get("redirect_uri"):
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        with self.state.lock:
            entry = self.codes.pop(form["code"], None)   # single use, whatever the outcome
            if entry is None or entry[2] <= self.now() or entry[1] != form["redirect_uri"]:
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            return self._issue_tokens(entry[0])

    def _check_call(self, realm: str, request: Request):
        token_realm, problem = self._realm_of_bearer(request)
        if problem is not None:
            return problem
        if token_realm != realm:
            return _unauthorized("Token is not valid for this realm")
        if realm not in self.data:
            return _fault(400, "620", "Company not found", f"realm {realm}")
        minor = request.query_params.get("minorversion", "")
        if not minor.isdigit() or int(minor) < 75:
            return _fault(400, "2010", "Request has invalid or unsupported property",
                          "minorversion 75 or newer is required")
        if self._rate_limited(realm):
            return throttled(self.throttle_status)
        return None

    def _query(self, realm: str, text: str):
        match = _QUERY.match(text)
        if not match:
            return _fault(400, "4000", "Error parsing query", f"QueryParserError: {text[:80]}")
        entity = match["entity"]
        if entity not in ENTITIES:
            return _fault(400, "4001", "Invalid query", f"QueryValidationError: unknown entity {entity}")
        keys, ordered = self._sorted(realm, entity)
        low, high, ids = 0, len(ordered), None
        for condition in re.split(r"\s+AND\s+", match["where"], flags=re.IGNORECASE) if match["where"] else []:
            listed = _ID_IN.match(condition)
            if listed:
                ids = {value.strip().strip("'") for value in listed.group(1).split(",")}
                continue
            cond = _CONDITION.match(condition)
            if not cond:
                return _fault(400, "4001", "Invalid query", f"QueryValidationError: unsupported condition {condition}")
            op, bound = cond.group(1), dt.datetime.fromisoformat(cond.group(2))
            if bound.tzinfo is None:
                return _fault(400, "4001", "Invalid query", "QueryValidationError: timestamp without offset")
            before, after = bisect.bisect_left(keys, (bound, -1)), bisect.bisect_right(keys, (bound, 1009))
            low, high = {">=": (max(low, before), high), ">": (max(low, after), high),
                         "<=": (low, min(high, after)), "<": (low, min(high, before)),
                         "=": (max(low, before), min(high, after))}[op]
        rows = ordered[low:max(low, high)]
        if ids is not None:
            rows = [r for r in rows if r["Id"] in ids]
        if match["what"].upper() == "COUNT(*)":
            return {"QueryResponse": {"totalCount": len(rows)}, "time": _stamp(dt.datetime.now(dt.timezone.utc))}
        if not match["order"]:
            rows = sorted(rows, key=lambda r: int(r["Id"]))   # unordered queries come back by Id
        elif (match["dir"] or "ASC").upper() == "DESC":
            rows = rows[::-1]
        start, size = int(match["start"] or 1), int(match["max"] or 100)
        if start < 1 or size < 1 or size > MAX_RESULTS:
            return _fault(400, "4001", "Invalid query",
                          f"QueryValidationError: STARTPOSITION must be >= 1 and MAXRESULTS 1..{MAX_RESULTS}")
        page = rows[start - 1: start - 1 + size]
        body = {"QueryResponse": {}, "time": _stamp(dt.datetime.now(dt.timezone.utc))}
        if page:
            body["QueryResponse"] = {entity: page, "startPosition": start, "maxResults": len(page)}
        return body
