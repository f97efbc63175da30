"""What ItsPerfect contributes to the credential registry (etl.credentials): each registered connector's
Airflow connection (API token, basic auth user name and password), checked once a day with one request
from its tenant's budget; a spent budget leaves the previous outcome standing (not a failure)."""
from __future__ import annotations

import psycopg

from etl.credentials import Credential
from hooks.connection_credentials import airflow_connection
from hooks.itsperfect import ItsPerfectHook
from integrations.itsperfect.connectors import registered

INTEGRATION = "itsperfect"
OWNER = "integrations"
USED_BY = ("itsperfect_stock", "itsperfect_orders", "ItsPerfect admin API (/itsperfect)")


def declare(conn: psycopg.Connection) -> list[Credential]:
    connectors = registered(conn)
    conn.commit()
    return [airflow_connection(ItsPerfectHook, connector, f"ItsPerfect API token and basic auth of connector "
                               f"{connector}", integration=INTEGRATION, owner=OWNER, used_by=USED_BY,
                               scope=connector, once_a_day=True, check=_check)
            for connector in connectors]


def _check(hook: ItsPerfectHook) -> None:
    """One request, no retries; BudgetSpent goes to the registry, which leaves the credential unjudged."""
    hook.max_attempts = 1
    hook.check_credentials()
