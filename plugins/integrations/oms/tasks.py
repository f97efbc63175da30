"""Task bodies of the OMS-Pro DAGs: the configuration checked against the live app first, then the work.

A config naming a view or field the app does not have fails the first task, naming it, before anything is
written; the tasks after it do not run. Every failure logs the on-call summary first (notifiers.failures);
a spent request budget is not a failure: the operator (operators.budgeted) defers the task until it resets.
"""
from __future__ import annotations

from airflow.sdk.exceptions import AirflowFailException

from etl import db
from hooks.trackvia import TrackViaHook
from integrations.oms import completed_dates
from integrations.oms.config import ConfigError, check_against, configured_file, load
from notifiers.failures import Scope, reported

CONN_ID = "trackvia_default"
FAILURES_TABLE = ("integrations/oms-pro.md", "Failures and what on-call does")


class OmsConfigInvalid(AirflowFailException):
    """The config does not match the app: retrying cannot fix it, so no retries."""

    on_call_class = "bad_input"


def check_config(context) -> None:
    path = configured_file()
    with reported(context, Scope("OMS-Pro config", str(path), more=FAILURES_TABLE)):
        try:
            check_against(load(path), TrackViaHook(CONN_ID))
        except ConfigError as exc:
            raise OmsConfigInvalid(str(exc)) from None


def capture_completed_dates(table: str, context) -> dict:
    scope = Scope("OMS-Pro table", table, more=FAILURES_TABLE)
    with reported(context, scope), db.connect() as conn:
        report = completed_dates.capture(conn, TrackViaHook(CONN_ID), load(configured_file()), table=table,
                                         run_id=context["run_id"])
        return report.as_dict()
