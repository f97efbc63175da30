"""Task bodies of itsperfect_stock and itsperfect_orders: pick the connectors and accounts whose switches
say so, wire the hook, run, report.

The switches live in each connector's Airflow connection (integrations.itsperfect.connectors), read when
the run starts, so turning one off in the form stops the next run. A registered connector whose connection
is missing is named in a warning and left out; the others run. Every failure logs the on-call summary
first (notifiers.failures), naming the connector or the account; a spent request budget is not a failure:
the operator (operators.budgeted) defers the task until the budget resets.
"""
from __future__ import annotations

import logging

from airflow.sdk.exceptions import AirflowSkipException

from etl import db
from hooks.itsperfect import ItsPerfectHook
from hooks.vendor_http import VendorApiError
from integrations.itsperfect import orders, stock
from integrations.itsperfect.connectors import Connector, ConnectorError, connector, registered
from notifiers.failures import Scope, find, reported
from notifiers.on_call import warn

log = logging.getLogger(__name__)

FAILURES_TABLE = ("integrations/itsperfect.md", "Failures and what on-call does")


def _connectors() -> list[Connector]:
    with db.connect() as conn:
        ids = registered(conn)
    found = []
    for conn_id in ids:
        try:
            found.append(connector(conn_id))
        except ConnectorError as exc:
            warn(f"ItsPerfect: {exc}")
    return found


def stock_connectors() -> list[str]:
    """Registered connectors that are active and get stock."""
    chosen = [c.connector for c in _connectors() if c.pulls_stock]
    log.info("connectors pulling stock: %s", ", ".join(chosen) or "none (switch `active` and `get_stock` on in "
             "the connector's Airflow connection)")
    return chosen


def export_accounts() -> list[str]:
    """Accounts mapped to a connector that is active and creates orders."""
    sending = {c.connector for c in _connectors() if c.sends_orders}
    with db.connect() as conn:
        chosen = [account for account, conn_id in orders.accounts_to_export(conn) if conn_id in sending]
    log.info("accounts exporting orders: %s", ", ".join(chosen) or "none")
    return chosen


def next_step(exc: BaseException, conn_id: str) -> str | None:
    """The step for the vendor's answers that have one; None leaves the kind's own."""
    error = find(exc, VendorApiError)
    if error is None or error.vendor != ItsPerfectHook.vendor:
        return None
    if error.status == 401 and "token" in str(error).lower():
        return (f"Put the tenant's current API token in the api_token field of the Airflow connection {conn_id!r} "
                "(ItsPerfect: Settings > API), then clear the failed task.")
    if error.status == 401:
        return f"Fix the basic auth user name and password of the Airflow connection {conn_id!r}, then clear the task."
    return None


def _still_on(conn_id: str | None, switch: str) -> None:
    """Checked on every attempt: a task deferred for an hour must not go on after its switch was turned off."""
    current = connector(conn_id) if conn_id else None
    if current is None or not (current.active and getattr(current, switch)):
        raise AirflowSkipException(f"ItsPerfect connector {conn_id} has `active` or `{switch}` switched off now "
                                   "(or no longer exists): nothing done")


def pull_stock(connector_id: str, context) -> dict:
    scope = Scope("ItsPerfect connector", connector_id, more=FAILURES_TABLE)
    with reported(context, scope, next_step=lambda exc: next_step(exc, connector_id)), db.connect() as conn:
        _still_on(connector_id, "get_stock")
        report = stock.pull_stock(conn, ItsPerfectHook(connector_id), connector_id, run_id=context["run_id"])
        return report.as_dict()


def export_account(account_id: str, context) -> dict:
    with db.connect() as conn:
        conn_id = dict(orders.accounts_to_export(conn)).get(account_id)
    scope = Scope("account", account_id, name=f"{account_id} (connector {conn_id})", more=FAILURES_TABLE)
    with reported(context, scope, next_step=lambda exc: next_step(exc, conn_id)), db.connect() as conn:
        _still_on(conn_id, "create_orders")
        report = orders.export_orders(conn, ItsPerfectHook(conn_id), account_id, run_id=context["run_id"])
        return report.as_dict()
