"""What a Stratocore PPMS PUMAPI answer body means, action by action (vendors.md §4). Pure: no I/O, no Airflow.

PUMAPI answers HTTP 200 even when it refuses, so an answer is first checked for an error text (`error_in`), then
read with the shape its action declares in `SHAPES` (never guessed from the body):

  Table    CSV: `title_lines` title lines to skip, then a header line, then one row per line -> list[dict[str, str]]
  Record   a Table of at most one row (getuser, getgroup) -> dict[str, str], or None for an empty body ("not found")
  Lines    one value per line, no header (getusers, getgroups, getsysrights `S:admin`, ...) -> list[str]
  Value    a single value or text (createorder's orderref, setright's `done`, auth's empty answer) -> str
  Json     what an action called with `format=json` answers (getprojects offers it) -> the decoded JSON

Decisions (the sandbox emits what this module reads):
- Values stay strings, as PUMAPI wrote them (quotes removed by the CSV reader, a space after a comma skipped):
  callers convert with `parse_bool` (`true`/`True`/`false`/`False`: both spellings occur), `parse_int`,
  `parse_date`, `parse_datetime`. Header names are stripped (`Location, Start time` and `login,lname` both work).
- A data row with MORE fields than the header keeps the header's fields and drops the surplus trailing ones
  (getgroup's recorded row carries two trailing fields its header does not name); a row with FEWER fields gets
  "" for the missing ones. Blank lines are skipped.
- A Table that declares `columns` checks the header carries every one of them (more columns are fine): a
  header-less or garbled answer is a `PumapiFormatError`, not a list of rows with made-up keys.
- `noheaders=true` (exactly `true`: PUMAPI compares strings) suppresses every preamble line, title lines
  included: the body is rows only, named by the action's declared `columns` (or the `columns=` the caller passes).
- An empty body is "nothing": [] for a Table or Lines, None for a Record, "" for a Value (auth succeeds with an
  empty answer) unless the Value declares `allow_empty=False` (createorder must answer its orderref).
- Orders and invoices are not in the recorded responses; their layout is ours (vendors.md §4.2, the UC Davis fork
  skips 2 lines of getorders / getorderlines and 3 of getinvoicedetails): getorders and getorderlines answer one
  title line then the header; getinvoicedetails two title lines then the header (3 preamble lines); getinvoice
  the header `Account number,Amount` then rows, no title.
- `PumapiError` is PUMAPI refusing (its text kept, for an outbox row); `PumapiFormatError` is an answer we cannot
  read. Neither subclasses the other: a createorder answer we cannot read may still have created the order.
  Messages carry the action and at most ~200 characters of the body, never a request parameter (the api key).
- A status other than 200 (`parse(..., status=...)`) is a `PumapiError` before the body is looked at.
"""
from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

EXCERPT = 200  # characters of a body an error message may quote

# getorders (vendors.md §4.2): one title line, then this header, then one row per order.
ORDERS_TITLE_LINES = 1
ORDER_COLUMNS: tuple[str, ...] = (
    "Core facility ref.", "Order ref.", "User", "Group", "Project ref", "Quoted date", "Ordered date",
    "Completed date", "Status", "Invoiced",
)
# getorderlines (orderref=...): one title line, then this header (13 columns), then one row per line.
ORDER_LINES_TITLE_LINES = 1
ORDER_LINE_COLUMNS: tuple[str, ...] = (
    "Core facility ref.", "Order ref.", "Order id", "Service id", "Quantity", "User", "Group", "Project ref",
    "Quoted date", "Ordered date", "Completed date", "Status", "Invoiced",
)
# getinvoice (invoiceid=...): no title line, this header, then rows (account number, amount).
INVOICE_TITLE_LINES = 0
INVOICE_COLUMNS: tuple[str, ...] = ("Account number", "Amount")
# getinvoicedetails (invoiceid=...): a 3-line preamble = 2 title lines + this header (the UC Davis fork skips 3).
INVOICE_DETAILS_TITLE_LINES = 2
INVOICE_DETAILS_PREAMBLE_LINES = INVOICE_DETAILS_TITLE_LINES + 1
INVOICE_DETAIL_COLUMNS: tuple[str, ...] = (
    "Reference", "User", "Group", "Project", "Affiliation", "Session type", "System type", "System", "Date",
    "Start time", "Duration (booked)", "Duration (used)", "Used by others", "Booked by others", "Cancelled",
    "Cancelled date", "Special env. 1", "Special env. 2", "User comments", "Notes", "Account number",
    "Account number (subsidy)", "Rebate", "Fee", "Subsidy", "Final amount",
)

# Actions the recorded responses show (tests/hooks/test_pumapi_format.py reads every one of them).
USER_COLUMNS: tuple[str, ...] = (
    "login", "lname", "fname", "email", "phone", "bcode", "affiliation", "unitlogin", "mustchpwd", "mustchbcode",
    "active",
)
GROUP_COLUMNS: tuple[str, ...] = (
    "unitlogin", "unitname", "headname", "heademail", "unitbcode", "department", "institution", "address",
    "affiliation", "ext", "active", "admname", "admemail", "creationdate",
)
SYSTEM_COLUMNS: tuple[str, ...] = (
    "Core facility ref", "System id", "Type", "Name", "Localisation", "Active", "Schedules", "Stats", "Bookable",
    "Autonomy Required", "Autonomy Required After Hours",
)
PROJECT_COLUMNS: tuple[str, ...] = (
    "Core facility ref.", "Project name", "Phase", "Active", "Bcode", "Project ref.", "Affiliation", "Project Type",
    "Project Group", "Descr",
)
BCODE_COLUMNS: tuple[str, ...] = ("Bcode", "User", "Group", "Project", "Subsidy", "Charges")
RUNNINGSHEET_COLUMNS: tuple[str, ...] = ("Location", "Start time", "End time", "Object", "User", "Training", "Assisted")
USEREXP_COLUMNS: tuple[str, ...] = ("login", "id", "booked_hours", "used_hours", "last_res", "last_train")
SYSRIGHT = re.compile(r"[A-Za-z]:\S.*")  # `S:admin`: the right (D, A, N, S), a colon, the login
TRUE, FALSE = ("true", "True"), ("false", "False")


class PumapiError(ValueError):
    """PUMAPI refused: its answer (HTTP 200 all the same) is an error text, or the status was not 200."""

    def __init__(self, action: str, text: str):
        self.action, self.text = action, text
        super().__init__(f"PUMAPI {action} answered an error: {text}")


class PumapiFormatError(ValueError):
    """An answer that does not have the shape its action declares."""

    def __init__(self, action: str, problem: str, line: int | None = None):
        self.action, self.problem, self.line = action, problem, line
        where = f" (line {line})" if line is not None else ""
        super().__init__(f"PUMAPI {action} answer unreadable{where}: {problem}")


@dataclass(frozen=True)
class Table:
    title_lines: int = 0
    columns: tuple[str, ...] = ()  # the header's names we rely on; the names of rows under `noheaders=true`


@dataclass(frozen=True)
class Record(Table):
    pass


@dataclass(frozen=True)
class Lines:
    pattern: re.Pattern[str] | None = None  # what every line must match in full


@dataclass(frozen=True)
class Value:
    allow_empty: bool = True
    expect: tuple[str, ...] = ()  # the only answers that are not errors, when PUMAPI's answers are known


@dataclass(frozen=True)
class Json:
    pass


Shape = Table | Record | Lines | Value | Json

SHAPES: dict[str, Shape] = {
    # orders and invoices (vendors.md §4.2; layout ours, see the module doc)
    "getorders": Table(ORDERS_TITLE_LINES, ORDER_COLUMNS),
    "getorderlines": Table(ORDER_LINES_TITLE_LINES, ORDER_LINE_COLUMNS),
    "createorder": Value(allow_empty=False),
    "getinvoicelist": Lines(),
    "getinvoice": Table(INVOICE_TITLE_LINES, INVOICE_COLUMNS),
    "getinvoicedetails": Table(INVOICE_DETAILS_TITLE_LINES, INVOICE_DETAIL_COLUMNS),
    # users, groups, systems, projects (recorded responses)
    "auth": Value(),
    "getuser": Record(columns=USER_COLUMNS),
    "getusers": Lines(),
    "getadmins": Lines(),
    "getgroup": Record(columns=GROUP_COLUMNS),
    "getgroups": Lines(),
    "getgroupusers": Lines(),
    "getsystems": Table(columns=SYSTEM_COLUMNS),
    "getsysrights": Lines(SYSRIGHT),
    "setright": Value(allow_empty=False, expect=("done",)),
    "getuserexp": Table(columns=USEREXP_COLUMNS),
    "getbooking": Lines(),  # login, minutes until the end, session id; empty: no booking now
    "nextbooking": Lines(),  # login, minutes until the start, session id; empty: none to come
    "getrunningsheet": Table(columns=RUNNINGSHEET_COLUMNS),
    "getprojects": Table(columns=PROJECT_COLUMNS),
    "getprojectusers": Lines(),
    "getuserprojects": Lines(),
    "getbcodes": Table(columns=BCODE_COLUMNS),
}
JSON_ACTIONS = frozenset({"getprojects"})  # actions known to offer `format=json` (any action called so reads JSON)


def excerpt(text: str, limit: int = EXCERPT) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def error_in(action: str, body: str) -> str | None:
    """PUMAPI's error text when `body` is an error answer, else None."""
    text = body.strip()
    lowered = text.lower()
    if lowered.startswith("error:") or "request not authorized" in lowered:
        return excerpt(text)
    if action == "auth" and "error" in lowered:  # pyppms's rule: any auth answer naming an error is a failure
        return excerpt(text)
    return None


def shape_of(action: str, params: Mapping[str, Any] | None = None) -> Shape:
    """The shape an answer to `action` called with `params` has."""
    if _flag(params, "format") == "json":
        return Json()
    try:
        return SHAPES[action]
    except KeyError:
        raise ValueError(f"no answer shape declared for PUMAPI action {action!r}") from None


def parse(
    action: str,
    body: str,
    *,
    params: Mapping[str, Any] | None = None,
    columns: Sequence[str] | None = None,
    status: int = 200,
) -> Any:
    """What PUMAPI's answer `body` to `action` (called with `params`) means, per the action's declared shape.

    `columns` names the rows of a Table asked with `noheaders=true` when the action declares none (or others).
    Raises `PumapiError` for a refusal (an error text, or a `status` other than 200) and `PumapiFormatError`
    for a body that does not fit its shape.
    """
    if status != 200:
        raise PumapiError(action, f"HTTP status {status}")
    error = error_in(action, body)
    if error is not None:
        raise PumapiError(action, error)
    shape = shape_of(action, params)
    if isinstance(shape, Json):
        try:
            return json.loads(body)
        except ValueError as exc:
            raise PumapiFormatError(action, f"not JSON: {exc}: {excerpt(body)!r}") from None
    if isinstance(shape, Value):
        return _value(action, body, shape)
    if isinstance(shape, Lines):
        return _lines(action, body, shape)
    noheaders = _flag(params, "noheaders") == "true"
    names = tuple(columns) if columns is not None else shape.columns
    numbered = _rows(action, body, title_lines=shape.title_lines, columns=names, noheaders=noheaders)
    if isinstance(shape, Record):
        if len(numbered) > 1:
            raise PumapiFormatError(action, f"one record expected, {len(numbered)} rows", numbered[1][0])
        return numbered[0][1] if numbered else None
    return [row for _, row in numbered]


def read_table(
    action: str,
    body: str,
    *,
    title_lines: int = 0,
    columns: Sequence[str] = (),
    noheaders: bool = False,
) -> list[dict[str, str]]:
    """Rows of a CSV answer: `title_lines` skipped, then a header (unless `noheaders`), then rows (see module doc)."""
    return [row for _, row in _rows(action, body, title_lines=title_lines, columns=columns, noheaders=noheaders)]


def _rows(
    action: str, body: str, *, title_lines: int, columns: Sequence[str], noheaders: bool
) -> list[tuple[int, dict[str, str]]]:
    """The rows of a CSV answer, each with the number of the body's line it ends on."""
    if not body.strip():
        return []
    lines = body.splitlines(keepends=True)
    skip = 0 if noheaders else title_lines
    if len(lines) <= skip:
        raise PumapiFormatError(action, f"{skip} title line(s) and a header expected: {excerpt(body)!r}", 1)
    reader = csv.reader(io.StringIO("".join(lines[skip:])), skipinitialspace=True)
    header: list[str] | None = None
    if noheaders:
        if not columns:
            raise ValueError(f"PUMAPI {action} asked with noheaders=true: the caller must name the columns")
        header = list(columns)
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        for fields in reader:
            number = reader.line_num + skip
            if not fields or fields == [""]:
                continue
            if header is None:
                header = [name.strip() for name in fields]
                missing = [name for name in columns if name not in header]
                if missing:
                    problem = f"header lacks {len(missing)} declared column(s), {missing[0]!r} first"
                    raise PumapiFormatError(action, f"{problem}: {excerpt(lines[number - 1])!r}", number)
                continue
            values = fields[: len(header)] + [""] * (len(header) - len(fields))
            rows.append((number, dict(zip(header, values, strict=True))))
    except csv.Error as exc:
        raise PumapiFormatError(action, f"CSV: {exc}", reader.line_num + skip) from None
    if header is None:
        raise PumapiFormatError(action, f"no header line: {excerpt(body)!r}", skip + 1)
    return rows


def _lines(action: str, body: str, shape: Lines) -> list[str]:
    values = []
    for number, line in enumerate(body.splitlines(), 1):
        value = line.strip()
        if not value:
            continue
        if shape.pattern is not None and not shape.pattern.fullmatch(value):
            raise PumapiFormatError(action, f"unexpected line {excerpt(value)!r}", number)
        values.append(value)
    return values


def _value(action: str, body: str, shape: Value) -> str:
    value = body.strip()
    if not value and not shape.allow_empty:
        raise PumapiFormatError(action, "empty answer")
    if shape.expect and value not in shape.expect:
        raise PumapiFormatError(action, f"answer {excerpt(value)!r} is none of {list(shape.expect)}", 1)
    return value


def _flag(params: Mapping[str, Any] | None, name: str) -> str:
    """A request parameter as it goes on the wire: PUMAPI (PHP) compares strings, so `noheaders=True` (what a
    Python True is sent as) is not `noheaders=true`, and the headers come."""
    value = (params or {}).get(name)
    return "" if value is None else str(value)


# Typed values: the tables hold strings; a caller converts the columns it uses.

def parse_bool(value: str) -> bool:
    """`true`/`True` -> True, `false`/`False` -> False (both spellings occur); anything else is a ValueError."""
    text = value.strip()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise ValueError(f"not a PUMAPI boolean: {value!r}")


def _absent(value: str | None) -> bool:
    return value is None or value.strip() in ("", "n/a")


def parse_int(value: str | None) -> int | None:
    """An integer, or None for an empty value or `n/a`."""
    return None if _absent(value) else int(value.strip())


def parse_decimal(value: str | None) -> decimal.Decimal | None:
    """A Decimal (amounts, quantities), or None for an empty value or `n/a`."""
    if _absent(value):
        return None
    try:
        return decimal.Decimal(value.strip())
    except decimal.InvalidOperation:
        raise ValueError(f"not a PUMAPI number: {value!r}") from None


def parse_date(value: str | None) -> dt.date | None:
    """`YYYY-MM-DD` or `YYYY/MM/DD` (getgroup's creationdate); None for an empty value or `n/a`."""
    if _absent(value):
        return None
    return dt.date.fromisoformat(value.strip().replace("/", "-"))


def parse_datetime(value: str | None) -> dt.datetime | None:
    """`YYYY-MM-DD hh:mm[:ss]` (or a bare date, at midnight), naive as PUMAPI writes it; None when absent."""
    if _absent(value):
        return None
    text = value.strip().replace("/", "-")
    return dt.datetime.fromisoformat(text)
