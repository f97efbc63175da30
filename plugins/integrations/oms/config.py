"""include/oms_pro.yaml: which OMS-Pro views and fields each pipeline uses, declared, not hard-coded.

`load()` is pure: it turns the file into a typed tree and fails on any missing or unknown key, naming the
key and the file. `check_against(hook)` compares the tree with the live app, so a renamed view or field
fails a DAG's first task with its name instead of writing to the wrong place.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hooks.trackvia import TrackViaHook, ViewNotFound
from integrations.oms.sweep_rules import SweepRule, check_rule, parse_sweeps
from integrations.oms.view_scan import UPDATED

CONFIG_FILE = Path(__file__).resolve().parents[3] / "include" / "oms_pro.yaml"
CONFIG_ENV = "OMS_PRO_CONFIG"          # another file, for a deployment whose OMS-Pro names things its own way


def configured_file() -> Path:
    """The file the DAGs read: $OMS_PRO_CONFIG, else include/oms_pro.yaml."""
    return Path(os.environ.get(CONFIG_ENV) or CONFIG_FILE)


class ConfigError(ValueError):
    """The file is malformed, or OMS-Pro does not have what it names."""


@dataclass(frozen=True)
class PaidField:
    field: str
    paid_value: str
    unpaid_value: str


@dataclass(frozen=True)
class TicketPayments:
    view: str
    invoice_number: str
    amount_paid: str
    payment_date: str
    payment_ids: str
    paid: PaidField

    @property
    def reads(self) -> tuple[str, ...]:
        return (self.invoice_number,)

    @property
    def writes(self) -> tuple[str, ...]:
        return self.amount_paid, self.payment_date, self.payment_ids, self.paid.field


@dataclass(frozen=True)
class PaymentLinking:
    qbo_connections: tuple[str, ...]     # Airflow connections of type qbo: one per QuickBooks company linked
    tickets: TicketPayments


@dataclass(frozen=True)
class CompletedDateView:
    view: str
    status: str
    completed_value: str
    status_changed: str
    completed_date: str

    @property
    def reads(self) -> tuple[str, ...]:
        return self.status, self.status_changed

    @property
    def writes(self) -> tuple[str, ...]:
        return (self.completed_date,)


@dataclass(frozen=True)
class CompletedDates:
    tickets: CompletedDateView
    site_visits: CompletedDateView


@dataclass(frozen=True)
class OmsConfig:
    app: str
    payment_linking: PaymentLinking
    completed_dates: CompletedDates
    sweeps: dict[str, SweepRule]
    path: str = ""

    def uses(self) -> list[tuple[str, TicketPayments | CompletedDateView | SweepRule]]:
        """(pipeline, view use) for every view a pipeline reads or writes; a sweep is pipeline `sweep <name>`."""
        return [("payment_linking", self.payment_linking.tickets),
                ("completed_dates", self.completed_dates.tickets),
                ("completed_dates", self.completed_dates.site_visits),
                *((f"sweep {name}", rule) for name, rule in self.sweeps.items())]


def load(path: Path | str = CONFIG_FILE) -> OmsConfig:
    """The file as an `OmsConfig`; ConfigError naming the file and every missing or unknown key."""
    try:
        text = Path(path).read_text()
        document = yaml.safe_load(text)
        # The sweeps as written: every scalar text (a ZIP code 02134 is not the number 1116, 12:30 not 750).
        as_text = yaml.load(text, Loader=yaml.BaseLoader)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None
    problems: list[str] = []
    config = _build(OmsConfig, document, "", problems, skip={"path"})
    if config is not None:
        config = dataclasses.replace(config, sweeps=parse_sweeps(as_text["sweeps"], "sweeps", problems))
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    return dataclasses.replace(config, path=str(path))


def _build(cls: type, data: Any, where: str, problems: list[str], skip: frozenset | set = frozenset()) -> Any:
    """The dataclass `cls` from a mapping, recording each problem (with its dotted key) in `problems`."""
    name = where or "the top level"
    if not isinstance(data, dict):
        problems.append(f"{name} must be a mapping of {', '.join(_keys(cls, skip))}, not {type(data).__name__}")
        return None
    before = len(problems)
    hints = typing.get_type_hints(cls)
    expected = _keys(cls, skip)
    for key in data:
        if key not in expected:
            problems.append(f"unknown key {_dotted(where, key)!r} (expected under {name}: {', '.join(expected)})")
    values: dict[str, Any] = {}
    for key in expected:
        dotted = _dotted(where, key)
        if key not in data:
            problems.append(f"missing key {dotted!r}")
            continue
        kind, value = hints[key], data[key]
        if dataclasses.is_dataclass(kind):
            values[key] = _build(kind, value, dotted, problems)
        elif typing.get_origin(kind) is tuple:
            if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
                problems.append(f"{dotted!r} must be a non-empty list of names, not {value!r}")
            elif len(set(value)) != len(value):
                problems.append(f"{dotted!r} names {sorted({v for v in value if value.count(v) > 1})} more than once")
            else:
                values[key] = tuple(value)
        elif typing.get_origin(kind) is dict:
            if not isinstance(value, dict):
                problems.append(f"{dotted!r} must be a mapping ({{}} for none), not {type(value).__name__}")
            values[key] = value
        elif not isinstance(value, str) or not value.strip():
            problems.append(f"{dotted!r} must be a non-empty name, not {value!r}")
        else:
            values[key] = value
    return cls(**values) if len(problems) == before else None


def _keys(cls: type, skip: frozenset | set) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.name not in skip]


def _dotted(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


SCHEDULED = ("payment_linking", "completed_dates")


def check_against(config: OmsConfig, hook: TrackViaHook, pipelines: tuple[str, ...] = SCHEDULED) -> None:
    """Every view `pipelines` use exists in the app, with every field named in its `structure`, and the
    fields a pipeline writes are writable by the API user (`canUpdate`); one ConfigError naming them all.
    A sweep (pipeline `sweep <name>`) is checked when it runs: a broken rule does not stop the others."""
    hook.app_id(config.app)                   # a wrong app name fails here, naming the app
    problems: list[str] = []
    structures: dict[str, list[dict] | None] = {}
    for pipeline, use in config.uses():
        if pipeline not in pipelines:
            continue
        if use.view not in structures:
            try:
                structures[use.view] = hook.view(use.view, app=config.app)[1]
            except ViewNotFound as exc:
                structures[use.view] = None
                problems.append(f"{config.app} has no view {use.view!r} (views: {', '.join(exc.views) or 'none'}), "
                                f"used by {pipeline}")
        structure = structures[use.view]
        if structure is None:
            continue
        if isinstance(use, SweepRule):
            problems += [f"{config.app} view {use.view!r}: {problem}, used by {pipeline}"
                         for problem in check_rule(use, structure, required=(UPDATED,))]
            continue
        fields = {str(f.get("name")): f for f in structure}
        for name, writes in [(n, False) for n in use.reads] + [(n, True) for n in use.writes]:
            field = fields.get(name)
            if field is None:
                problems.append(f"{config.app} view {use.view!r} has no field {name!r} "
                                f"(fields: {', '.join(sorted(fields))}), used by {pipeline}")
            elif writes and field.get("canUpdate") is False:
                problems.append(f"{config.app} view {use.view!r}: field {name!r} is read-only to the API user "
                                f"(canUpdate false), and {pipeline} writes it")
    if problems:
        unique = list(dict.fromkeys(problems))
        raise ConfigError(f"{config.path or 'the OMS-Pro config'} does not match TrackVia: " + "; ".join(unique))
