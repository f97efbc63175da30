"""Task bodies of the OMS-Pro DAGs: the configuration checked against the live app first, then the work.

A config naming a view or field the app does not have fails the first task, naming it, before anything is
written; the tasks after it do not run. Every failure logs the on-call summary first (notifiers.failures);
a spent request budget is not a failure: the operator (operators.budgeted) defers the task until it resets.
"""
from __future__ import annotations

from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

from etl import db
from hooks.qbo import QboHook
from hooks.trackvia import TrackViaHook
from integrations.oms import completed_dates, payments, sweeps
from integrations.oms.config import ConfigError, check_against, configured_file, load
from integrations.oms.sweeps import BATCH_SIZES, RuleRefused, SweepNotDeclared
from integrations.oms.view_scan import ViewNotSorted
from notifiers.failures import BadInput, Scope, reported

CONN_ID = "trackvia_default"
FAILURES_TABLE = ("integrations/oms-pro.md", "Failures and what on-call does")


class OmsConfigInvalid(AirflowFailException):
    """The config does not match the app: retrying cannot fix it, so no retries."""

    on_call_class = "bad_input"


def check_config(context, pipeline: str) -> None:
    """The views and fields `pipeline` (payment_linking, completed_dates) uses, against the live app."""
    path = configured_file()
    with reported(context, Scope("OMS-Pro config", str(path), more=FAILURES_TABLE)):
        try:
            check_against(load(path), TrackViaHook(CONN_ID), pipelines=(pipeline,))
        except ConfigError as exc:
            raise OmsConfigInvalid(str(exc)) from None


def capture_completed_dates(table: str, context) -> dict:
    scope = Scope("OMS-Pro table", table, more=FAILURES_TABLE)
    with reported(context, scope), db.connect() as conn:
        try:
            report = completed_dates.capture(conn, TrackViaHook(CONN_ID), load(configured_file()), table=table,
                                             run_id=context["run_id"])
        except ViewNotSorted as exc:
            raise OmsConfigInvalid(str(exc)) from None
        return report.as_dict()


def _qbo_company(qbo_conn_id: str) -> QboHook:
    """The QBO connection's hook once its company is known: a connection that does not exist, or has no
    realm_id or refresh_token, fails the task at once (BadInput, no retry), naming the connection and what it
    lacks. The config's payment_linking.qbo_connections names it."""
    hook = QboHook(qbo_conn_id)
    try:
        extra = hook.extra
    except AirflowNotFoundException:
        raise BadInput(f"no Airflow connection {qbo_conn_id!r} (payment_linking.qbo_connections in "
                       f"{configured_file()} names it): create it, type qbo (Admin > Connections), or remove "
                       "it from the config") from None
    missing = [key for key in ("realm_id", "refresh_token") if not extra.get(key)]
    if missing:
        raise BadInput(f"connection {qbo_conn_id!r} has no extra {' and no extra '.join(missing)}: it needs the "
                       "QuickBooks company's realm_id and the refresh_token of its consent")
    return hook


def link_payments(qbo_conn_id: str, context) -> dict:
    """QuickBooks payments of the company behind `qbo_conn_id` onto their OMS-Pro tickets (payments)."""
    scope = Scope("QuickBooks company", qbo_conn_id, more=FAILURES_TABLE)
    with reported(context, scope):
        qbo = _qbo_company(qbo_conn_id)
        scope.id, scope.name = qbo.realm_id, f"connection {qbo_conn_id}"
        with db.connect() as conn:
            report = payments.link_payments(conn, qbo, TrackViaHook(CONN_ID), load(configured_file()),
                                            realm=qbo.realm_id, run_id=context["run_id"])
            return report.as_dict()


def payment_companies(context) -> list[dict]:
    """One mapped link task's op_kwargs per QBO connection the config names, read at run time."""
    path = configured_file()
    with reported(context, Scope("OMS-Pro config", str(path), more=FAILURES_TABLE)):
        try:
            config = load(path)
        except ConfigError as exc:
            raise OmsConfigInvalid(str(exc)) from None
        return [{"qbo_conn_id": conn_id} for conn_id in config.payment_linking.qbo_connections]


def check_sweep(context) -> dict:
    """The form, then the rule against the live app, before anything is read or written: a bad value fails
    at once (no retries), naming it and the valid ones. The form's own schema refuses most at trigger time;
    this catches a config changed since the form was drawn."""
    params, path = context["params"], configured_file()
    name, size, dry_run = params.get("sweep"), params.get("batch_size"), params.get("dry_run")
    with reported(context, Scope("OMS-Pro sweep", str(name), more=FAILURES_TABLE)):
        try:
            config = load(path)
        except ConfigError as exc:
            raise OmsConfigInvalid(str(exc)) from None
        if name not in config.sweeps:
            raise BadInput(f"sweep {name!r} is not declared in {path} (sweeps: {', '.join(sorted(config.sweeps))})")
        if isinstance(size, bool) or not isinstance(size, int) or not BATCH_SIZES[0] <= size <= BATCH_SIZES[1]:
            raise BadInput(f"batch size {size!r}: a whole number from {BATCH_SIZES[0]} to {BATCH_SIZES[1]}")
        if not isinstance(dry_run, bool):
            raise BadInput(f"dry run {dry_run!r}: true or false")
        try:
            check_against(config, TrackViaHook(CONN_ID), pipelines=(f"sweep {name}",))
        except ConfigError as exc:
            raise OmsConfigInvalid(str(exc)) from None
        rule = config.sweeps[name]
        return {"sweep": name, "description": rule.description, "view": rule.view, "dry_run": dry_run,
                "batch_size": size}


def run_sweep(context) -> dict:
    """The sweep the form names, resumed from its cursor when an earlier attempt or run left it unfinished."""
    params = context["params"]
    with reported(context, Scope("OMS-Pro sweep", str(params["sweep"]), more=FAILURES_TABLE)), \
            db.connect() as conn:
        try:
            report = sweeps.run_sweep(conn, TrackViaHook(CONN_ID), load(configured_file()), sweep=params["sweep"],
                                      dry_run=params["dry_run"], batch_size=params["batch_size"],
                                      dag_run_id=context["run_id"])
        except (ConfigError, SweepNotDeclared, ViewNotSorted, RuleRefused) as exc:
            raise OmsConfigInvalid(str(exc)) from None
        return report.as_dict()
