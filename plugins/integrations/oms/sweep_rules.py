"""Table sweeps as declared rules (include/oms_pro.yaml `sweeps:`): which records of a view to touch and what
one field becomes. Pure: parsing, checking against a view's structure, and evaluating against one record.

A rule is data, never code or SQL: conditions on the record's fields (all must hold) and a value to set,
a literal or a template over the record's fields. The Params form only picks a rule by name.

    sweeps:
      cancelled_tickets_low_priority:
        description: Cancelled tickets drop to Low priority
        view: Tickets by Updated
        where:
          - {field: Status, equals: Cancelled}
          - {field: Priority, not_equals: Low}
        set: {field: Priority, value: Low}

Operators: `equals`, `not_equals`, `in`, `not_in` (a list), `empty` (true or false), `greater_than`,
`less_than`. An operand is a literal, or `{field: Other}` for another field of the same record. Values compare
by the type of the condition's field in the view: numbers by value for number, currency and percentage fields
("12.50" equals 12.5: TrackVia sends numbers as strings), days for date fields, instants for datetime fields,
text (exactly) for every other type; an operand that does not read as the field's type never compares (an
ordering does not hold, `equals` is false). The file's sweeps are read as text, never as YAML numbers or
dates (`02134` stays "02134", `12:30` stays "12:30"). A template is text with `{Field Name}` placeholders
(`{{` and `}}` for braces); an empty field renders as nothing, and a template that renders to nothing, or
`value: ""`, empties the field.

Field types: a rule may set only fields whose value reads back as it was written (TARGET_TYPES: not a
relationship or user, which read as a name and are written as an id, nor a checkbox, file or identifier), and
its conditions may use only single-valued fields (CONDITION_TYPES).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

OPERATORS = ("equals", "not_equals", "in", "not_in", "empty", "greater_than", "less_than")
NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
# Field types whose values compare as numbers, as dates (the day only), as instants.
NUMERIC_TYPES = {"number", "currency", "percentage", "autoIncrement"}
DATE_TYPES = {"date"}
DATETIME_TYPES = {"datetime"}
# What a rule may set: a value that reads back as written. What its conditions may read: one value a field.
TARGET_TYPES = frozenset({"shortAnswer", "paragraph", "email", "url", "number", "currency", "percentage", "date",
                          "datetime", "dropDown"})
CONDITION_TYPES = TARGET_TYPES | {"identifier", "autoIncrement", "relationship", "user"}


@dataclass(frozen=True)
class FieldRef:
    """An operand that is another field of the same record."""

    field: str


@dataclass(frozen=True)
class Condition:
    field: str
    operator: str
    operand: Any          # a literal, a tuple of literals (in / not_in), a bool (empty), or a FieldRef

    def holds(self, record: dict, kinds: Mapping[str, str]) -> bool:
        """`kinds`: the view's field types by name (from its structure)."""
        value, kind = record.get(self.field), kinds.get(self.field)
        if self.operator == "empty":
            return _blank(value) == self.operand
        other = record.get(self.operand.field) if isinstance(self.operand, FieldRef) else self.operand
        if self.operator in ("in", "not_in"):
            inside = any(_order(kind, value, item) == 0 for item in other)
            return inside if self.operator == "in" else not inside
        order = _order(kind, value, other)
        if self.operator == "equals":
            return order == 0
        if self.operator == "not_equals":
            return order != 0
        return order is not None and (order > 0 if self.operator == "greater_than" else order < 0)

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.field, self.operand.field) if isinstance(self.operand, FieldRef) else (self.field,)


@dataclass(frozen=True)
class Assignment:
    field: str
    value: str | None = None           # a literal (None: empty the field) ...
    template: str | None = None        # ... or a template over the record's fields

    def target(self, record: dict) -> str | None:
        if self.template is None:
            return self.value
        def fill(match: re.Match) -> str:
            token = match.group(0)
            if token in ("{{", "}}"):
                return token[0]
            current = record.get(match.group(1))
            return "" if _blank(current) else str(current)
        rendered = _PLACEHOLDER.sub(fill, self.template)
        return rendered if rendered.strip() else None

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(_placeholders(self.template)) if self.template is not None else ()


@dataclass(frozen=True)
class SweepRule:
    name: str
    description: str
    view: str
    where: tuple[Condition, ...]
    set: Assignment
    source: dict           # the rule as declared, for its fingerprint and the run's record

    def matches(self, record: dict, kinds: Mapping[str, str]) -> bool:
        return all(condition.holds(record, kinds) for condition in self.where)

    @property
    def reads(self) -> tuple[str, ...]:
        names = [f for condition in self.where for f in condition.fields] + list(self.set.fields)
        return tuple(dict.fromkeys(names))

    @property
    def fingerprint(self) -> str:
        """Stable for the same declaration: a resumed run must apply the rule it started with."""
        return hashlib.sha256(json.dumps(self.source, sort_keys=True, default=str).encode()).hexdigest()[:16]


def same_value(kind: str | None, current: Any, wanted: Any) -> bool:
    """Whether a field of TrackVia type `kind` holding `current` already holds `wanted` as TrackVia stores it:
    numbers by value, a date by its day, a datetime by its instant, text exactly, empty as empty."""
    if _blank(current) or _blank(wanted):
        return _blank(current) == _blank(wanted)
    return _order(kind, current, wanted) == 0


def check_rule(rule: SweepRule, structure: list[dict], *, required: tuple[str, ...] = ()) -> list[str]:
    """What the view (its `structure`) lacks for the rule: fields read or written (and `required` ones), a
    writable target, drop-down values among the field's choices (a typo would otherwise match nothing)."""
    fields = {str(f.get("name")): f for f in structure}
    problems = [f"no field {name!r}" for name in (*required, *rule.reads, rule.set.field) if name not in fields]
    target = fields.get(rule.set.field)
    if target is not None and target.get("canUpdate") is False:
        problems.append(f"field {rule.set.field!r} is read-only to the API user (canUpdate false)")
    elif target is not None and target.get("type") not in TARGET_TYPES:
        problems.append(f"field {rule.set.field!r} is a {target.get('type')} field, which a sweep cannot set "
                        f"(it sets {', '.join(sorted(TARGET_TYPES))})")
    for name in dict.fromkeys(f for condition in rule.where for f in condition.fields):
        kind = (fields.get(name) or {}).get("type")
        if name in fields and kind not in CONDITION_TYPES:
            problems.append(f"field {name!r} is a {kind} field, which a condition cannot compare "
                            f"(it compares {', '.join(sorted(CONDITION_TYPES))})")
    literals = [(c.field, c.operand) for c in rule.where if c.operator in ("equals", "not_equals")
                and not isinstance(c.operand, FieldRef)]
    literals += [(c.field, v) for c in rule.where if c.operator in ("in", "not_in") for v in c.operand]
    if rule.set.value is not None:
        literals.append((rule.set.field, rule.set.value))
    for name, value in literals:
        choices = (fields.get(name) or {}).get("choices")
        if isinstance(choices, list) and str(value) not in [str(c) for c in choices]:
            listed = ", ".join(map(str, choices))
            problems.append(f"{value!r} is not a choice of drop-down {name!r} (choices: {listed})")
    return list(dict.fromkeys(problems))


# ---- parsing ----------------------------------------------------------------------------------------


def parse_sweeps(document: Any, where: str, problems: list[str]) -> dict[str, SweepRule]:
    """The `sweeps:` mapping as rules; each problem (with its dotted key) appended to `problems`."""
    if not isinstance(document, dict):
        problems.append(f"{where!r} must be a mapping of sweep names to rules ({{}} for none)")
        return {}
    rules = {}
    for name, body in document.items():
        at = f"{where}.{name}"
        if not isinstance(name, str) or not NAME.match(name):
            problems.append(f"sweep name {name!r} must be lower case letters, digits and _ (a letter first)")
            continue
        before = len(problems)
        rule = _rule(name, body, at, problems)
        if rule is not None and len(problems) == before:
            rules[name] = rule
    return rules


def _rule(name: str, body: Any, at: str, problems: list[str]) -> SweepRule | None:
    if not isinstance(body, dict):
        problems.append(f"{at!r} must be a mapping of description, view, where, set")
        return None
    unknown = sorted(set(body) - {"description", "view", "where", "set"})
    if unknown:
        problems.append(f"unknown key {at}.{unknown[0]!r} (expected: description, view, where, set)")
    for key in ("description", "view"):
        if not isinstance(body.get(key), str) or not body[key].strip():
            problems.append(f"'{at}.{key}' must be non-empty text")
    where = body.get("where")
    if not isinstance(where, list) or not where:
        problems.append(f"'{at}.where' must be a non-empty list of conditions (to sweep every record, say so: "
                        "{{field: Record ID, empty: false}})")
        where = []
    conditions = [c for n, item in enumerate(where) if (c := _condition(item, f"{at}.where[{n}]", problems))]
    assignment = _assignment(body.get("set"), f"{at}.set", problems)
    if assignment is None or len(conditions) != len(where):
        return None
    return SweepRule(name, str(body.get("description", "")), str(body.get("view", "")), tuple(conditions),
                     assignment, body)


def _condition(item: Any, at: str, problems: list[str]) -> Condition | None:
    if not isinstance(item, dict) or not isinstance(item.get("field"), str) or not item["field"].strip():
        problems.append(f"{at!r} must be a mapping with a field and one operator ({', '.join(OPERATORS)})")
        return None
    ops = [key for key in item if key != "field"]
    if len(ops) != 1 or ops[0] not in OPERATORS:
        problems.append(f"{at!r} must have exactly one operator of {', '.join(OPERATORS)}, not {ops}")
        return None
    op, operand = ops[0], item[ops[0]]
    if op == "empty":
        flag = operand if isinstance(operand, bool) else {"true": True, "false": False}.get(str(operand).lower())
        if flag is None:
            problems.append(f"'{at}.empty' must be true or false, not {operand!r}")
            return None
        operand = flag
    elif op in ("in", "not_in"):
        if not isinstance(operand, list) or not operand or not all(_literal(v) for v in operand):
            problems.append(f"'{at}.{op}' must be a non-empty list of values")
            return None
        operand = tuple(operand)
    elif isinstance(operand, dict):
        if set(operand) != {"field"} or not isinstance(operand["field"], str) or not operand["field"].strip():
            problems.append(f"'{at}.{op}' as a mapping must be {{field: <a field name>}}, not {operand!r}")
            return None
        operand = FieldRef(operand["field"])
    elif not _literal(operand):
        problems.append(f"'{at}.{op}' must be a value or {{field: <a field name>}}, not {operand!r}")
        return None
    return Condition(item["field"], op, operand)


def _assignment(item: Any, at: str, problems: list[str]) -> Assignment | None:
    if not isinstance(item, dict) or not isinstance(item.get("field"), str) or not item["field"].strip():
        problems.append(f"{at!r} must be a mapping with a field and a value or a template")
        return None
    given = [key for key in ("value", "template") if key in item]
    unknown = sorted(set(item) - {"field", "value", "template"})
    if len(given) != 1 or unknown:
        problems.append(f"{at!r} must have a field and exactly one of value, template (found {sorted(item)})")
        return None
    if given == ["value"]:
        value = item["value"]
        if value is not None and not _literal(value):
            problems.append(f"'{at}.value' must be a single value ("" to empty the field), not {value!r}")
            return None
        return Assignment(item["field"], value=None if value is None or str(value) == "" else str(value))
    template = item["template"]
    if not isinstance(template, str) or not template:
        problems.append(f"'{at}.template' must be text with {{Field Name}} placeholders")
        return None
    bad = [token for token in _tokens(template) if token is not None and not token.strip()]
    stray = any(m.group(0) in ("{", "}") for m in _PLACEHOLDER.finditer(template))
    if bad or stray:
        problems.append(f"'{at}.template' {template!r}: every {{ opens a {{Field Name}} placeholder "
                        "(write {{ and }} for braces)")
        return None
    return Assignment(item["field"], template=template)


def _tokens(template: str) -> list[str | None]:
    return [m.group(1) for m in _PLACEHOLDER.finditer(template) if m.group(0) not in ("{{", "}}", "{", "}")]


def _placeholders(template: str) -> list[str]:
    return [token for token in _tokens(template) if token]


def _literal(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


# ---- comparing ----------------------------------------------------------------------------------------


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _instant(value: Any) -> dt.datetime | None:
    text = str(value).strip()
    if not re.match(r"^\d{4}-\d{2}-\d{2}", text):
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def _order(kind: str | None, a: Any, b: Any) -> int | None:
    """-1, 0, 1 comparing `a` and `b` as a field of type `kind` holds them; None when either is empty or does
    not read as that type."""
    if _blank(a) or _blank(b):
        return None
    if kind in NUMERIC_TYPES:
        x, y = _number(a), _number(b)
    elif kind in DATE_TYPES:
        x, y = _instant(a), _instant(b)
        x, y = (x.date() if x else None), (y.date() if y else None)
    elif kind in DATETIME_TYPES:
        x, y = _instant(a), _instant(b)
    else:
        x, y = str(a), str(b)
    if x is None or y is None:
        return None
    return (x > y) - (x < y)
