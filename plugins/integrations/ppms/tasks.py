"""Task bodies of ppms_sync: the Params checked, the hook wired, the sync run, its report returned.

Every failure logs the on-call summary first (notifiers.failures), naming the PPMS connection; the step for a
refused key says which connection field to fix.
"""
from __future__ import annotations

from etl import db
from hooks.pumapi import PumapiHook, PumapiRefused
from integrations.ppms import sync
from notifiers.failures import BadInput, Scope, find, reported

CONN_ID = "ppms_default"     # one PPMS instance for now: a second one is a second connection id and scope
FAILURES_TABLE = ("integrations/ppms.md", "Failures and what on-call does")


def next_step(exc: BaseException, conn_id: str) -> str | None:
    """The step for PPMS's own refusals; None leaves the kind's own."""
    refused = find(exc, PumapiRefused)
    if refused is None:
        return None
    if "not authorized" in refused.text.lower():
        return (f"Put the core facility's current PUMAPI key in the password of the Airflow connection {conn_id!r} "
                "(PPMS: Admin > API keys; the key must allow reading orders and invoices), then clear the task.")
    return (f"PPMS refused {refused.action}: read its text in the cause. Nothing was written; clear the task once "
            "PPMS accepts the call (a retry as is gets the same answer).")


def _full(params: dict) -> bool:
    full = params.get("full", False)
    if not isinstance(full, bool):
        raise BadInput(f"Param full must be true or false, not {full!r}")
    return full


def sync_connection(context, conn_id: str = CONN_ID) -> dict:
    scope = Scope("PPMS connection", conn_id, more=FAILURES_TABLE)
    with reported(context, scope, next_step=lambda exc: next_step(exc, conn_id)):
        full = _full(context.get("params") or {})
        with db.connect() as conn:
            report = sync.sync(conn, PumapiHook(conn_id), conn_id, context["run_id"], full=full)
        return report.as_dict()
