"""Requests to bill at Stratocore PPMS: each line one PUMAPI order, created there exactly once.

PUMAPI's `createorder` makes ONE order of ONE line and has no idempotency key: a repeated call makes a second
order. Every line therefore goes through the outbox ppms.order_requests (migration 0017), one row per
(request id, line number):

    record() ---------------------------------------------------------> pending
    pending --committed with the highest order ref PPMS lists---------> sending (attempts + 1), then createorder
    sending --PPMS answered its order ref------------------------------> created (settled_by 'answer')
    sending --PPMS refused it (`error: ...`)---------------------------> refused, PPMS's text kept, alerted once
    sending --no answer (5xx, timeout, dropped answer, a dead worker)--> sending; the task fails, Airflow retries
    sending, next export --exactly one order matches------------------> created (settled_by 'lookup'), not sent
    sending, next export --no order matches, none could be ours-------> sent again (attempts + 1)
    sending, next export --several match, or one may be ours----------> held: never sent again by itself
    sending --provably not sent (no connection; key refused)----------> pending; the task fails, Airflow retries

The row is committed before the call and completed in a commit of its own after it, so whatever instant a
worker dies at, the next export either finds the row settled or looks the order up before sending again.

Reconciliation of a `sending` row (its order may exist: the call went out, the answer did not come back). PPMS
orders carry no reference of ours, so an order is recognised by what it is. A candidate is an order of
`getorders` (read once per export) that
  - has a ref above the row's `highest_ref` (the highest ref PPMS listed, or answered us, when the row was
    last sent: its order, if any, was made after) and not above the `highest_ref` of any of our rows of the
    scope sent after it (exports of a scope are serialised, so those were sent after this row's order existed);
  - is of the row's login and project (none = none);
  - is not already claimed by one of our rows of the scope (an order ref belongs to at most one row: a
    unique index);
  - has exactly one line (getorderlines), of the row's service id and quantity (compared as numbers).
One candidate: the row adopts its ref (`settled_by = 'lookup'`). Two or more: we refuse to guess (a person may
have entered the same line by hand at that moment). None, while an unclaimed order in the window may still be
ours (its login differs only in case, it has a line of the row's service, or its lines cannot be read): we
refuse to guess too, since sending again would make a second order. In both the row keeps `sending` with `held`
saying which orders, is never sent again by itself, and every export of its request fails until on-call settles
it (docs/integrations/ppms.md). Only when no order of the window could be ours is it sent again. The lookup
trusts that no call of a dead try is still being processed by PPMS: the DAG retries after longer than the hook's
timeouts (a task cleared by hand at once skips that wait).

A refusal is kept with PPMS's text; the other lines go on; at the end the export fails (no retry: sent as it
is, it is refused again) naming every line refused and not yet alerted, and marks them alerted in the same
step, so one refusal is alerted once, by one failed task. A refusal about our credentials (`request not
authorized`) is not about the line, and PPMS created nothing: the row goes back to `pending` and the task fails
as a credentials failure; so does a call that provably never left (no connection was made). Other transport
failures leave the row `sending` and fail the task at once; the retry reconciles first.

Exports of one scope (a PPMS connection) are serialised by a session advisory lock, which PostgreSQL drops
when a worker dies: a second export waits for the first.
"""
from __future__ import annotations

import datetime as dt
import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

import psycopg
from airflow.sdk.exceptions import AirflowFailException
from psycopg.rows import dict_row

from etl import db
from etl.ledger import redact_text
from hooks.pumapi import PumapiHook, PumapiRefused
from hooks.pumapi_format import parse_decimal, parse_int
from hooks.vendor_http import VendorApiError
from notifiers.failures import BadInput, Scope, reported

log = logging.getLogger(__name__)

SYSTEM = PumapiHook.vendor
FAILURES_TABLE = ("integrations/ppms.md", "Order creation failures and what on-call does")
LINE_FIELDS = ("service_id", "quantity", "project_id", "comments")
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
DATE_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


class RequestConflict(BadInput):
    """The request id is recorded already, with other lines."""


class LinesNeedOnCall(AirflowFailException):
    """Lines PPMS refused (kept with its text), or lines whose reconciliation will not guess: no retry."""

    system = SYSTEM

    def __init__(self, message: str, *, refused: bool, next_step: str):
        super().__init__(message)
        # A refusal is the vendor refusing data; an ambiguous lookup is state we would not decide on alone.
        self.on_call_class = "data_refused" if refused else "bug"
        self.next_step = next_step


@dataclass(frozen=True)
class Line:
    service_id: int
    quantity: Decimal
    project_id: int | None = None
    comments: str | None = None


@dataclass(frozen=True)
class Request:
    """A validated form: what record() writes."""

    login: str
    lines: tuple[Line, ...]
    accepted: bool = False
    completed: bool = False
    completed_date: dt.datetime | None = None


@dataclass
class ExportReport:
    created: int = 0                # lines PPMS created on our call, first try
    settled_by_lookup: int = 0      # unanswered lines found at PPMS: adopted, not sent again
    resent: int = 0                 # unanswered lines not found at PPMS: sent again and created
    refused: int = 0                # lines PPMS refused in this export
    held: int = 0                   # lines whose lookup found several matching orders: not sent, on-call decides
    done_before: int = 0            # lines created or refused by an earlier export: nothing sent
    calls: dict[str, int] = field(default_factory=dict)   # PUMAPI calls of this export, by action

    def as_dict(self) -> dict:
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.__dict__.items()}


# ---- the form ----------------------------------------------------------------------------------------------

def validate(params: Mapping) -> Request:
    """The trigger form, checked past its JSON schema; BadInput (no retry, nothing written) naming the bad
    value and what is valid."""
    problems: list[str] = []
    login = params.get("login")
    if not isinstance(login, str) or not login.strip():
        problems.append(f"login {login!r}: give the PPMS login of the user to bill (a non-empty string)")
    raw_lines = params.get("lines")
    if isinstance(raw_lines, str):          # a caller may pass the lines as JSON text
        import json

        try:
            raw_lines = json.loads(raw_lines)
        except ValueError as exc:
            problems.append(f"lines: not JSON ({exc})")
            raw_lines = []
    lines: list[Line] = []
    if not isinstance(raw_lines, list) or not raw_lines:
        problems.append(f"lines {raw_lines!r}: give at least one line "
                        '{"service_id": 101, "quantity": 1, "project_id": null, "comments": null}')
    else:
        for number, raw in enumerate(raw_lines, start=1):
            line, problem = _line(number, raw)
            if problem:
                problems.append(problem)
            else:
                lines.append(line)
    accepted, completed = params.get("accepted", False), params.get("completed", False)
    for name, value in (("accepted", accepted), ("completed", completed)):
        if not isinstance(value, bool):
            problems.append(f"{name} {value!r}: true or false")
    if completed is True and accepted is not True:
        problems.append("completed true needs accepted true: PPMS completes an order at creation only if it is "
                        "accepted too (set accepted, or leave completed false)")
    completed_date = params.get("completed_date")
    when = None
    if completed_date not in (None, ""):
        if not isinstance(completed_date, str) or not DATE_PATTERN.match(completed_date.strip()):
            problems.append(f"completed_date {completed_date!r}: YYYY-MM-DD hh:mm:ss (e.g. 2026-11-30 17:00:00), "
                            "or empty for today")
        else:
            try:
                when = dt.datetime.strptime(completed_date.strip(), DATE_FORMAT)
            except ValueError:
                problems.append(f"completed_date {completed_date!r}: not a real date and time "
                                "(YYYY-MM-DD hh:mm:ss)")
        if when is not None and completed is not True:
            problems.append(f"completed_date {completed_date!r} needs completed true (and accepted true): "
                            "clear it, or complete the order")
    if problems:
        raise BadInput("the form was refused, nothing was recorded or sent: " + "; ".join(problems))
    return Request(login.strip(), tuple(lines), accepted, completed, when)


def _line(number: int, raw: object) -> tuple[Line | None, str | None]:
    where = f"lines[{number}]"
    if not isinstance(raw, Mapping):
        return None, f"{where} {raw!r}: an object with service_id, quantity, project_id, comments"
    unknown = sorted(set(raw) - set(LINE_FIELDS))
    if unknown:
        return None, f"{where}: unknown field(s) {', '.join(unknown)}; the fields are {', '.join(LINE_FIELDS)}"
    service_id, quantity = raw.get("service_id"), raw.get("quantity")
    project_id, comments = raw.get("project_id"), raw.get("comments")
    problems = []
    if not _positive_int(service_id):
        problems.append(f"service_id {service_id!r} (a PPMS service id, a whole number > 0, e.g. 101)")
    amount = None
    if isinstance(quantity, bool) or not isinstance(quantity, int | float | str) or quantity == "":
        problems.append(f"quantity {quantity!r} (a number > 0, e.g. 1 or 1.5)")
    else:
        try:
            amount = Decimal(str(quantity).strip())
        except InvalidOperation:
            amount = None
        if amount is None or not amount.is_finite() or amount <= 0 or (isinstance(quantity, float)
                                                                       and not math.isfinite(quantity)):
            problems.append(f"quantity {quantity!r} (a number > 0, e.g. 1 or 1.5)")
    if project_id is not None and not _positive_int(project_id):
        problems.append(f"project_id {project_id!r} (a PPMS project id, a whole number > 0, or null)")
    if comments is not None and not isinstance(comments, str):
        problems.append(f"comments {comments!r} (text, or null)")
    if problems:
        return None, f"{where}: " + ", ".join(problems)
    return Line(int(service_id), amount, int(project_id) if project_id is not None else None,
                comments.strip() or None if comments is not None else None), None


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


# ---- record ------------------------------------------------------------------------------------------------

def record(conn: psycopg.Connection, scope: str, request_id: str, login: str, lines: Iterable[Line],
           accepted: bool = False, completed: bool = False, completed_date: dt.datetime | None = None) -> int:
    """The request's lines as `pending` rows, in one transaction; the number of rows added. Idempotent by
    (request id, line number): recording the same request again adds nothing, and a request id recorded
    with other lines is refused (RequestConflict) rather than mixed."""
    lines = list(lines)
    wanted = [(n, scope, login, line.service_id, line.quantity, line.project_id, accepted, completed,
               completed_date, line.comments) for n, line in enumerate(lines, start=1)]
    columns = ("line_no", "scope", "login", "service_id", "quantity", "project_id", "accepted", "completed",
               "completed_date", "comments")
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"ppms_order_request:{request_id}",))
        held = conn.execute(f"SELECT {', '.join(columns)} FROM ppms.order_requests WHERE request_id = %s "
                            "ORDER BY line_no", (request_id,)).fetchall()
        if held:
            if [tuple(row) for row in held] != wanted:
                raise RequestConflict(f"request {request_id} is recorded already with other lines (login "
                                      f"{held[0][2]}, {len(held)} line(s) in scope {held[0][1]}): give the new "
                                      "request an id of its own")
            return 0
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO ppms.order_requests (request_id, {', '.join(columns)}) "
                            f"VALUES (%s, {', '.join(['%s'] * len(columns))})",
                            [(request_id, *row) for row in wanted])
    log.info("request %s: %d line(s) for PPMS login %s recorded in scope %s", request_id, len(wanted), login, scope)
    return len(wanted)


# ---- export ------------------------------------------------------------------------------------------------

def export(conn: psycopg.Connection, hook: PumapiHook, scope: str, request_id: str | None = None) -> ExportReport:
    """Settle the unanswered lines of the request (every request of the scope when None), then send its
    pending lines, one createorder each. `conn` outside a transaction; `hook` on connection `scope`."""
    if hook.conn_id != scope:
        raise BadInput(f"the order requests of scope {scope} go through PPMS connection {scope}, but the hook "
                       f"given is for connection {hook.conn_id}")
    with db.session_lock(conn, f"ppms_order_requests:{scope}"):
        run = _Export(conn, hook, scope, request_id)
        run.settle_and_send()
        run.raise_for_on_call()
    log.info("PPMS order requests of scope %s%s: %s", scope, f", request {request_id}" if request_id else "",
             run.report.as_dict())
    return run.report


class _Export:
    def __init__(self, conn: psycopg.Connection, hook: PumapiHook, scope: str, request_id: str | None):
        self.conn, self.hook, self.scope, self.request_id = conn, hook, scope, request_id
        self.report = ExportReport()
        self.highest = 0
        self.lines_of: dict[int, list[dict]] = {}

    def _call(self, action: str) -> None:
        self.report.calls[action] = self.report.calls.get(action, 0) + 1

    def _rows(self, where: str, *params) -> list[dict]:
        query = ("SELECT * FROM ppms.order_requests WHERE scope = %s AND (%s::text IS NULL OR request_id = %s) "
                 f"AND {where} ORDER BY created_at, request_id, line_no")
        with self.conn.transaction(), self.conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(query, (self.scope, self.request_id, self.request_id, *params)).fetchall()

    def settle_and_send(self) -> None:
        self.report.done_before = len(self._rows("state IN ('created', 'refused')"))
        unanswered = self._rows("state = 'sending' AND held IS NULL")
        pending = self._rows("state = 'pending'")
        if not unanswered and not pending:
            return
        self._call("getorders")
        listing = self.hook.orders()
        self.highest = max((_ref(o) for o in listing), default=0)
        to_send: list[tuple[dict, bool]] = []
        for row in unanswered:          # every lookup before anything is sent again
            if not self._settle(row, listing):
                to_send.append((row, True))
        to_send += [(row, False) for row in pending]
        for row, again in sorted(to_send, key=lambda item: (item[0]["created_at"], item[0]["request_id"],
                                                            item[0]["line_no"])):
            self._send(row, again)

    # ---- a line whose answer never came back ----------------------------------------------------------

    def _settle(self, row: dict, listing: list[dict]) -> bool:
        """True when the row is settled (adopted, or held); False when its order is not at PPMS."""
        with self.conn.transaction():
            claimed = {ref for (ref,) in self.conn.execute(
                "SELECT order_ref FROM ppms.order_requests WHERE scope = %s AND order_ref IS NOT NULL", (self.scope,))}
            (upper,) = self.conn.execute(
                "SELECT min(highest_ref) FROM ppms.order_requests WHERE scope = %s AND sent_at > %s "
                "AND NOT (request_id = %s AND line_no = %s)",
                (self.scope, row["sent_at"], row["request_id"], row["line_no"])).fetchone()
        window = [o for o in listing if row["highest_ref"] < _ref(o) and (upper is None or _ref(o) <= upper)
                  and _ref(o) not in claimed]
        login, project = row["login"].strip(), row["project_id"]
        matches, doubtful = [], []
        for order in sorted(window, key=_ref):
            fit = self._fit(order, row)
            same_owner = (order.get("User") or "").strip() == login and _project(order) == project
            if fit == "same" and same_owner:
                matches.append(_ref(order))
            elif fit != "other" or (order.get("User") or "").strip().lower() == login.lower():
                doubtful.append(_ref(order))
        what = (f"line {row['line_no']} of request {row['request_id']} (login {row['login']}, service "
                f"{row['service_id']}, quantity {_number(row['quantity'])})")
        if len(matches) == 1:
            with self.conn.transaction():
                self.conn.execute(
                    "UPDATE ppms.order_requests SET state = 'created', order_ref = %s, settled_by = 'lookup', "
                    "completed_at = now() WHERE request_id = %s AND line_no = %s AND state = 'sending'",
                    (matches[0], row["request_id"], row["line_no"]))
            self.report.settled_by_lookup += 1
            log.info("%s: its answer was lost; found at PPMS as order %s, not sent again", what, matches[0])
            return True
        if matches or doubtful:
            held = (f"PPMS holds {len(matches)} orders that match it equally (refs "
                    f"{', '.join(map(str, matches))}), none claimed by another line" if matches else
                    f"no order at PPMS matches it exactly, but unclaimed orders made since it was sent may be it "
                    f"(refs {', '.join(map(str, doubtful))}: a login differing only in case, a line of its service, "
                    "or lines that cannot be read)")
            with self.conn.transaction():
                self.conn.execute("UPDATE ppms.order_requests SET held = %s WHERE request_id = %s AND line_no = %s "
                                  "AND state = 'sending'", (held, row["request_id"], row["line_no"]))
            log.error("%s: %s; not sent again, left to on-call", what, held)
            self.report.held += 1
            return True
        log.info("%s: not found at PPMS (orders above %s); sent again", what, row["highest_ref"])
        return False

    def _fit(self, order: Mapping[str, str], row: dict) -> str:
        """`same`: the order's one line is the row's service and quantity; `other`: its lines are readable and
        none is the row's service; `doubt`: anything else (several lines with the service, unreadable lines)."""
        ref = _ref(order)
        if ref not in self.lines_of:
            self._call("getorderlines")
            self.lines_of[ref] = self.hook.order_lines(str(ref))
        lines = self.lines_of[ref]
        try:
            services = [parse_int(line["Service id"]) for line in lines]
            quantities = [parse_decimal(line["Quantity"]) for line in lines]
        except (KeyError, ValueError, InvalidOperation):
            return "doubt"
        if not lines or None in services:
            return "doubt"
        if row["service_id"] not in services:
            return "other"
        return "same" if len(lines) == 1 and quantities[0] == row["quantity"] else "doubt"

    # ---- createorder ---------------------------------------------------------------------------------

    def _send(self, row: dict, again: bool) -> None:
        key = (row["request_id"], row["line_no"])
        with self.conn.transaction():
            updated = self.conn.execute(
                "UPDATE ppms.order_requests SET state = 'sending', attempts = attempts + 1, highest_ref = %s, "
                "sent_at = clock_timestamp(), error = NULL WHERE request_id = %s AND line_no = %s "
                "AND state = %s AND held IS NULL", (self.highest, *key, "sending" if again else "pending")).rowcount
        if updated != 1:
            return      # settled meanwhile (cannot happen under the scope's lock; never send on a doubt)
        what = f"line {row['line_no']} of request {row['request_id']} (login {row['login']})"
        try:
            self._call("createorder")
            ref = self.hook.create_order(
                service_id=row["service_id"], login=row["login"], quantity=_number(row["quantity"]),
                project_id=row["project_id"], accepted=row["accepted"], completed=row["completed"],
                completed_date=row["completed_date"].strftime(DATE_FORMAT) if row["completed_date"] else None,
                comments=row["comments"])
        except PumapiRefused as exc:
            if "request not authorized" in exc.text.lower():
                self._unsent(key, exc)      # about our key, not the line: PPMS created nothing
                raise
            with self.conn.transaction():
                self.conn.execute("UPDATE ppms.order_requests SET state = 'refused', error = %s, "
                                  "completed_at = now() WHERE request_id = %s AND line_no = %s AND state = 'sending'",
                                  (redact_text(exc.text)[:2000], *key))
            log.error("%s: PPMS refused it: %s", what, exc.text)
            self.report.refused += 1
            return
        except VendorApiError as exc:
            if exc.unsent:
                log.error("%s: createorder never reached PPMS (%s); the line is pending again", what, exc)
                self._unsent(key, exc)
                raise
            log.error("%s: createorder got no usable answer (%s); the line stays 'sending' and the next try looks "
                      "it up at PPMS before it sends it again", what, exc)
            self._failed(key, exc)
            raise
        log.info("%s: PPMS answered order %s", what, ref)        # before the commit: a lost commit leaves it here
        with self.conn.transaction():
            self.conn.execute("UPDATE ppms.order_requests SET state = 'created', order_ref = %s, "
                              "settled_by = 'answer', completed_at = now() WHERE request_id = %s AND line_no = %s "
                              "AND state = 'sending'", (int(ref), *key))
        self.highest = max(self.highest, int(ref))
        if again:
            self.report.resent += 1
        else:
            self.report.created += 1
        log.info("%s is PPMS order %s", what, ref)

    def _unsent(self, key: tuple[str, int], exc: Exception) -> None:
        """PPMS provably created nothing for this call: the line is pending again, sent by a later try."""
        with self.conn.transaction():
            self.conn.execute("UPDATE ppms.order_requests SET state = 'pending', attempts = attempts - 1, "
                              "highest_ref = NULL, sent_at = NULL, error = %s WHERE request_id = %s AND line_no = %s "
                              "AND state = 'sending'", (redact_text(str(exc))[:2000], *key))

    def _failed(self, key: tuple[str, int], exc: Exception) -> None:
        with self.conn.transaction():
            self.conn.execute("UPDATE ppms.order_requests SET error = %s WHERE request_id = %s AND line_no = %s "
                              "AND state = 'sending'", (redact_text(str(exc))[:2000], *key))

    # ---- what on-call must see ---------------------------------------------------------------------------

    def raise_for_on_call(self) -> None:
        """Refusals not alerted yet are marked alerted and named in one failure; held lines fail every export."""
        with self.conn.transaction():
            refused = self.conn.execute(
                "UPDATE ppms.order_requests SET alerted_at = now() WHERE scope = %s AND (%s::text IS NULL OR "
                "request_id = %s) AND state = 'refused' AND alerted_at IS NULL "
                "RETURNING request_id, line_no, login, service_id, quantity, error",
                (self.scope, self.request_id, self.request_id)).fetchall()
        held = self._rows("held IS NOT NULL")
        if not refused and not held:
            return
        parts, steps = [], []
        if refused:
            parts.append("; ".join(f"PPMS refused line {n} of request {r} (login {login}, service {service}, "
                                   f"quantity {_number(q)}): {error}"
                                   for r, n, login, service, q, error in sorted(refused)))
            steps.append("A refused line is kept in ppms.order_requests (state 'refused', PPMS's text in `error`) "
                         "and never sent again: fix what PPMS names (service id, login, project) and trigger "
                         "ppms_create_order with the corrected line; the other lines were created.")
        if held:
            parts.append("; ".join(f"line {h['line_no']} of request {h['request_id']} (login {h['login']}, service "
                                   f"{h['service_id']}, quantity {_number(h['quantity'])}) was not answered and "
                                   f"{h['held']}" for h in held))
            steps.append("An ambiguous line is not sent again: look the orders up in PPMS; set the line's order_ref "
                         "to the one that is ours (state 'created', settled_by 'lookup', completed_at now(), held "
                         "null), or, if none is, set state 'pending' and held null to have it sent again without a "
                         "lookup; then clear the task.")
        raise LinesNeedOnCall(f"Stratocore PPMS order requests of scope {self.scope}: " + "; ".join(parts),
                              refused=bool(refused), next_step=" ".join(steps))


def _ref(order: Mapping[str, str]) -> int:
    text = str(order.get("Order ref.", "")).strip()
    return int(text) if text.isdigit() else 0


def _project(order: Mapping[str, str]) -> int | None:
    """The order's project ref; None for none (PPMS writes it empty, or n/a)."""
    try:
        return parse_int(order.get("Project ref"))
    except ValueError:
        return -1                   # unreadable: matches no row's project

def _number(value: Decimal) -> str:
    """2, 1.5, 0.25: as PPMS writes a quantity."""
    return format(Decimal(value).normalize(), "f")


# ---- task bodies (dags/ppms_create_order.py) ----------------------------------------------------------------

def request_scope(request_id: str, scope: str) -> Scope:
    return Scope("PPMS order request", request_id, name=f"connection {scope}", more=FAILURES_TABLE)


def validate_task(context, scope: str = PumapiHook.default_conn_name) -> dict:
    """The form checked; what record_task takes (JSON-safe, for XCom)."""
    with reported(context, request_scope(context["run_id"], scope)):
        request = validate(context["params"])
    return {"login": request.login, "accepted": request.accepted, "completed": request.completed,
            "completed_date": request.completed_date.strftime(DATE_FORMAT) if request.completed_date else None,
            "lines": [{"service_id": ln.service_id, "quantity": str(ln.quantity), "project_id": ln.project_id,
                       "comments": ln.comments} for ln in request.lines]}


def record_task(request: dict, context, scope: str = PumapiHook.default_conn_name) -> dict:
    run_id = context["run_id"]
    with reported(context, request_scope(run_id, scope)), db.connect() as conn:
        added = record(conn, scope, run_id, request["login"],
                       [Line(ln["service_id"], Decimal(ln["quantity"]), ln["project_id"], ln["comments"])
                        for ln in request["lines"]],
                       request["accepted"], request["completed"],
                       dt.datetime.strptime(request["completed_date"], DATE_FORMAT)
                       if request["completed_date"] else None)
    return {"request_id": run_id, "lines": len(request["lines"]), "added": added}


def export_task(context, scope: str = PumapiHook.default_conn_name) -> dict:
    run_id = context["run_id"]
    with reported(context, request_scope(run_id, scope)), db.connect() as conn:
        report = export(conn, PumapiHook(scope), scope, run_id)
        with conn.transaction():
            refs = conn.execute("SELECT line_no, state, order_ref FROM ppms.order_requests WHERE request_id = %s "
                                "ORDER BY line_no", (run_id,)).fetchall()
    return {**report.as_dict(), "lines": [{"line": n, "state": s, "order_ref": r} for n, s, r in refs]}
