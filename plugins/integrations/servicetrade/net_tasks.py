"""Task bodies of servicetrade_safety_net and servicetrade_webhook_subscription.

Every failure logs the on-call summary first (notifiers.failures), naming the ServiceTrade account (its Airflow
connection id). A bad form fails at once (BadInput: no retry), naming the value and what is valid, before any
call to ServiceTrade or write to our database.
"""
from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

from etl import db
from hooks.servicetrade import ServiceTradeHook
from integrations.servicetrade import safety_net, subscriptions
from notifiers.failures import BadInput, Scope, reported

FAILURES_TABLE = ("integrations/servicetrade.md", "Webhooks: failures and what on-call does")
RECEIVER_URL_ENV = "SERVICETRADE_WEBHOOK_URL"
# An account is a path segment of the hookUrl: an Airflow connection id of URL-safe characters only.
ACCOUNT = re.compile(r"^[A-Za-z0-9_.\-]{1,200}$")


def _scope(account: str) -> Scope:
    return Scope("ServiceTrade account", account, more=FAILURES_TABLE)


# ---- servicetrade_safety_net -------------------------------------------------------------------------------

def net_accounts() -> list[str]:
    """The accounts whose webhooks we accept (servicetrade.webhook_accounts), one mapped net task each."""
    with db.connect() as conn:
        return safety_net.accounts(conn)


def net_account(account: str, context) -> dict:
    with reported(context, _scope(account)):
        ti = context.get("ti")
        with db.connect() as conn:
            report = safety_net.run(conn, ServiceTradeHook(account), account, context["run_id"],
                                    task_id=getattr(ti, "task_id", None), try_number=getattr(ti, "try_number", None))
        return report.as_dict()


# ---- servicetrade_webhook_subscription ---------------------------------------------------------------------

def check_params(params: dict) -> dict:
    """The form checked, with the receiver URL from SERVICETRADE_WEBHOOK_URL when the form left it empty."""
    account = params.get("account")
    if not isinstance(account, str) or not ACCOUNT.match(account.strip()):
        raise BadInput(f"Param account {account!r} is not an Airflow connection id (letters, digits, _ . - only), "
                       "e.g. servicetrade_default")
    account = account.strip()
    receiver_url = params.get("receiver_url") or os.environ.get(RECEIVER_URL_ENV) or ""
    if not isinstance(receiver_url, str) or not receiver_url.strip():
        raise BadInput(f"Param receiver_url is empty and {RECEIVER_URL_ENV} is not set: give the base URL "
                       "ServiceTrade calls, e.g. https://airflow.example.com/servicetrade-webhooks")
    receiver_url = receiver_url.strip().rstrip("/")
    parts = urlsplit(receiver_url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment \
            or "@" in parts.netloc:
        raise BadInput(f"Param receiver_url {receiver_url!r} is not an http(s) base URL without user, query or "
                       "fragment, e.g. https://airflow.example.com/servicetrade-webhooks")
    rotate = params.get("rotate_secret", False)
    if not isinstance(rotate, bool):
        raise BadInput(f"Param rotate_secret must be true or false, not {rotate!r}")
    _check_connection(account)
    return {"account": account, "receiver_url": receiver_url, "rotate_secret": rotate}


def _check_connection(account: str) -> None:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        found = BaseHook.get_connection(account)
    except AirflowNotFoundException:
        found = None
    if found is None:
        raise BadInput(f"Param account {account!r}: no Airflow connection of that id; create it (Admin > "
                       "Connections, type servicetrade) or name another one")
    if found.conn_type != ServiceTradeHook.conn_type:
        raise BadInput(f"Param account {account!r}: the Airflow connection is of type {found.conn_type!r}, not "
                       f"{ServiceTradeHook.conn_type!r}; name a ServiceTrade connection")


def check_subscription(context) -> dict:
    params = context.get("params") or {}
    scope = _scope(str(params.get("account")))
    with reported(context, scope):
        return check_params(params)


def ensure_subscription(checked: dict, context) -> dict:
    """The subscription made current; the result names the subscription and what was done, never the secret."""
    account = checked["account"]
    with reported(context, _scope(account)), db.connect() as conn:
        result = subscriptions.ensure(conn, ServiceTradeHook(account), account, checked["receiver_url"],
                                      rotate_secret=checked["rotate_secret"])
    return result.as_dict()
