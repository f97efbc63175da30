"""Avalara TrustFile as the extractor sees it: the v3 Items API and the v4 signup (docs/integrations/trustfile.md).

Faithful where it hurts: a batch is all or nothing (one bad item and `processed` is 0, with one
error per fault in ajv's format), at most 1000 items per call, upsert by (itemId, refund), 401
`{"message": "You are not authorized"}` for a wrong bearer token, 404 for an unknown connection.
Where the vendor's answer is undocumented or its docs and its behaviour may differ (the 404's body,
the email lookup's answer for an unknown email), `control()` switches between the plausible forms.
"""
from __future__ import annotations

import datetime as dt
import hmac
import re
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from sandbox.core import SandboxState, install_faults

NAME = "trustfile"
TOKEN = "sandbox-extractor-to-avalara-token"
SEEDED_CONNECTIONS = ("tf-sandbox-connection-1", "tf-sandbox-connection-2")
MAX_ITEMS = 1000
NUMBER_FIELDS = ("salesAmount", "salesTax", "shippingAmount", "shippingTax")
REQUIRED = ("itemId", "transactionDate", "shipToAddress", *NUMBER_FIELDS, "refund")
# 404 for an unknown connection: what the sandbox always said, or the public spec's (no body at all).
UNKNOWN_CONNECTION_FORMS = ("message", "empty")
# The v4 lookup of an email TrustFile does not know: undocumented, so each plausible answer.
UNKNOWN_EMAIL_FORMS = ("success_false", "not_found", "bad_request")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _validate(items: list) -> list[dict]:
    errors = []
    for index, item in enumerate(items):
        path = f".items[{index}]"
        if not isinstance(item, dict):
            errors.append({"keyword": "type", "dataPath": path, "message": "should be object", "schema": "object"})
            continue
        for name in REQUIRED:
            if name not in item:
                errors.append({"keyword": "required", "dataPath": path,
                               "message": f"should have required property '{name}'",
                               "params": {"missingProperty": name}})
        for name in NUMBER_FIELDS:
            if name in item and (isinstance(item[name], bool) or not isinstance(item[name], (int, float))):
                errors.append({"keyword": "type", "dataPath": f"{path}.{name}", "message": "should be number",
                               "schema": "number", "data": item[name]})
        if "itemId" in item and not isinstance(item["itemId"], str):
            errors.append({"keyword": "type", "dataPath": f"{path}.itemId", "message": "should be string",
                           "schema": "string", "data": item["itemId"]})
        if "refund" in item and not isinstance(item["refund"], bool):
            errors.append({"keyword": "type", "dataPath": f"{path}.refund", "message": "should be boolean",
                           "schema": "boolean", "data": item["refund"]})
        if "transactionDate" in item:
            try:
                dt.datetime.fromisoformat(str(item["transactionDate"]).replace("Z", "+00:00"))
            except ValueError:
                errors.append({"keyword": "format", "dataPath": f"{path}.transactionDate",
                               "message": 'should match format "date-time"', "data": item["transactionDate"]})
        address = item.get("shipToAddress")
        if "shipToAddress" in item:
            if not isinstance(address, dict):
                errors.append({"keyword": "type", "dataPath": f"{path}.shipToAddress", "message": "should be object"})
            else:
                for name in ("state", "zip"):
                    if name not in address:
                        errors.append({"keyword": "required", "dataPath": f"{path}.shipToAddress",
                                       "message": f"should have required property '{name}'",
                                       "params": {"missingProperty": name}})
    return errors


class TrustFileSandbox:
    name = NAME

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.app = FastAPI(title="TrustFile sandbox")
        install_faults(self.app, NAME, state, lambda: JSONResponse({"message": "Too Many Requests"}, status_code=429))
        self.reset()
        self._routes()

    def control(self, payload: dict) -> dict | JSONResponse:
        """`all_errors: false` answers only the first validation error, as ajv does by default;
        `error_style`: `ajv6` (`dataPath: .items[i]`), `ajv8` (`instancePath: /items/i`) or `opaque`
        (errors that name no item: the docs promise nothing more);
        `unknown_connection`: `message` (404 `{"message": "Connection not found"}`) or `empty` (404 with
        no body, as the public spec documents it);
        `unknown_email` (`GET /v4/company?email=` for an email TrustFile does not know): `success_false`
        (200 `{"success": "false"}`), `not_found` (404, no body) or `bad_request` (400 `{"success": "false"}`)."""
        forms = {"unknown_connection": UNKNOWN_CONNECTION_FORMS, "unknown_email": UNKNOWN_EMAIL_FORMS}
        for key, allowed in forms.items():
            if key in payload and payload[key] not in allowed:
                return JSONResponse({"message": f"{key} must be one of {list(allowed)}"}, status_code=400)
        with self.state.lock:
            self.all_errors = bool(payload.get("all_errors", self.all_errors))
            self.error_style = payload.get("error_style", self.error_style)
            self.unknown_connection = payload.get("unknown_connection", self.unknown_connection)
            self.unknown_email = payload.get("unknown_email", self.unknown_email)
        return {"all_errors": self.all_errors, "error_style": self.error_style,
                "unknown_connection": self.unknown_connection, "unknown_email": self.unknown_email}

    def _connection_not_found(self) -> Response:
        if self.unknown_connection == "empty":
            return Response(status_code=404)
        return JSONResponse({"message": "Connection not found"}, status_code=404)

    def _email_not_found(self) -> Response | dict:
        if self.unknown_email == "not_found":
            return Response(status_code=404)
        if self.unknown_email == "bad_request":
            return JSONResponse({"success": "false", "error": "User does not exist"}, status_code=400)
        return {"success": "false", "message": "User does not exist"}

    def _styled(self, errors: list[dict]) -> list[dict]:
        if self.error_style == "ajv8":
            return [{**{k: v for k, v in e.items() if k != "dataPath"},
                     "instancePath": re.sub(r"\.items\[(\d+)\]\.?", r"/items/\1/", e["dataPath"]).rstrip("/")}
                    for e in errors]
        if self.error_style == "opaque":
            return [{"message": e["message"]} for e in errors]
        return errors

    def inspect(self) -> dict:
        """Every stored item per company (as TrustFile keeps them: one per itemId and refund flag),
        how many push calls succeeded, and how many item writes they made (re-pushes included)."""
        with self.state.lock:
            items: dict[str, list[dict]] = {}
            for (company, _, _), item in sorted(self.items.items()):
                items.setdefault(company, []).append(item)
            return {"items": items, "push_calls": dict(self.push_calls), "item_writes": dict(self.item_writes)}

    def reset(self) -> None:
        self.all_errors = True
        self.error_style = "ajv6"
        self.unknown_connection = "message"
        self.unknown_email = "success_false"
        self.items: dict[tuple[str, str, bool], dict] = {}
        self.push_calls: dict[str, int] = {}
        self.item_writes: dict[str, int] = {}
        self.companies: dict[str, dict] = {
            cid: {"name": f"Sandbox Company {n}", "syncDate": None, "phone": None, "fax": None,
                  "createdAt": "2026-01-01T00:00:00+00:00", "updatedAt": "2026-01-01T00:00:00+00:00",
                  "address": {"line1": f"{n} Main St", "line2": None, "line3": None, "city": "Fresno",
                              "state": "CA", "zip": "93722"}}
            for n, cid in enumerate(SEEDED_CONNECTIONS, start=1)
        }
        self.users: set[str] = set()

    # ---- persistence (`--state-file`) -------------------------------------------------------------

    SETTINGS = ("all_errors", "error_style", "unknown_connection", "unknown_email")

    def dump(self) -> dict:
        """Companies (signed up ones with their company token), users, stored items and the push counters
        (caller holds the state lock)."""
        return {**{name: getattr(self, name) for name in self.SETTINGS},
                "items": [[company, item_id, refund, item] for (company, item_id, refund), item in self.items.items()],
                "push_calls": self.push_calls, "item_writes": self.item_writes, "companies": self.companies,
                "users": sorted(self.users)}

    def load(self, saved: dict) -> None:
        self.reset()
        for name in self.SETTINGS:
            setattr(self, name, saved.get(name, getattr(self, name)))
        self.items = {(company, item_id, refund): item for company, item_id, refund, item in saved["items"]}
        self.push_calls = dict(saved["push_calls"])
        self.item_writes = dict(saved["item_writes"])
        self.companies = dict(saved["companies"])
        self.users = set(saved["users"])

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        return hmac.compare_digest(header.encode(), f"Bearer {TOKEN}".encode())

    def _routes(self) -> None:
        app = self.app
        unauthorized = lambda: JSONResponse({"message": "You are not authorized"}, status_code=401)  # noqa: E731

        @app.post("/v3/connections/{connection_id}/items")
        async def post_items(connection_id: str, request: Request):
            if not self._authorized(request):
                return unauthorized()
            if connection_id not in self.companies:
                return self._connection_not_found()
            try:
                body = await request.json()
            except ValueError:
                return JSONResponse({"processed": 0, "dateTime": _now(), "errors": [
                    {"keyword": "parse", "dataPath": "", "message": "body is not valid JSON"}]}, status_code=400)
            items = body.get("items") if isinstance(body, dict) else None
            if not isinstance(items, list):
                return JSONResponse({"processed": 0, "dateTime": _now(), "errors": [
                    {"keyword": "required", "dataPath": "", "message": "should have required property 'items'"}]},
                    status_code=400)
            if len(items) > MAX_ITEMS:
                return JSONResponse({"processed": 0, "dateTime": _now(), "errors": [
                    {"keyword": "maxItems", "dataPath": ".items",
                     "message": f"Should not have more than {MAX_ITEMS} items", "schema": MAX_ITEMS}]}, status_code=400)
            errors = _validate(items)
            if errors and not self.all_errors:
                errors = errors[:1]
            if errors:
                return JSONResponse({"processed": 0, "dateTime": _now(), "errors": self._styled(errors)},
                                    status_code=400)
            with self.state.lock:
                for item in items:
                    self.items[(connection_id, item["itemId"], item["refund"])] = item
                self.push_calls[connection_id] = self.push_calls.get(connection_id, 0) + 1
                self.item_writes[connection_id] = self.item_writes.get(connection_id, 0) + len(items)
            return {"processed": len(items), "dateTime": _now()}

        @app.get("/v3/connections/{connection_id}/items/{item_id}")
        def get_item(connection_id: str, item_id: str, request: Request):
            if not self._authorized(request):
                return unauthorized()
            if connection_id not in self.companies:
                return self._connection_not_found()
            found = [v for (cid, iid, _), v in self.items.items() if cid == connection_id and iid == item_id]
            if not found:
                return JSONResponse({"message": "Item not found"}, status_code=404)
            return {"items": found}

        @app.get("/v3/connections/{connection_id}")
        def get_company(connection_id: str, request: Request):
            if not self._authorized(request):
                return unauthorized()
            if connection_id not in self.companies:
                return self._connection_not_found()
            return {"company": self.companies[connection_id]}

        @app.get("/v4/company")
        def company_exists(request: Request, email: str | None = None):
            if not self._authorized(request):
                return unauthorized()
            if not email:
                return JSONResponse({"success": "false", "error": "No email address provided"}, status_code=400)
            if email.lower() in self.users:
                return {"success": "true", "message": "User already exists"}
            return self._email_not_found()

        @app.post("/v4/company/signup")
        async def signup(request: Request):
            if not self._authorized(request):
                return unauthorized()
            failed = JSONResponse({"status": "Failed", "notification": {
                "message": "There was a problem creating your account. Account could not be created.",
                "options": {"level": "error"}}}, status_code=400)
            try:
                body = await request.json()
            except ValueError:
                return failed
            email, company = (body or {}).get("email"), (body or {}).get("companyName")
            if not email or not company or email.lower() in self.users:
                return failed
            with self.state.lock:
                token = str(uuid.UUID(int=self.state.random.getrandbits(128), version=4))
                self.users.add(email.lower())
                now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
                self.companies[token] = {
                    "name": company, "syncDate": None, "phone": body.get("companyPhone"), "fax": None,
                    "createdAt": now, "updatedAt": now,
                    "address": {"line1": body.get("companyLine1"), "line2": body.get("companyLine2"),
                                "line3": body.get("companyLine3"), "city": body.get("companyCity"),
                                "state": body.get("companyState"), "zip": body.get("companyZip")}}
            return {"status": "Success", "notification": {"message": "Account Created.",
                                                          "options": {"level": "success"}},
                    "companyToken": token}
