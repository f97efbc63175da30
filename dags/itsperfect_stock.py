"""Hourly: the warehouses and full stock of every active ItsPerfect connector that gets stock."""
from __future__ import annotations

from airflow.sdk import dag, task

from notifiers.on_call import OnCallNotifier
from operators.budgeted import BudgetedOperator
from operators.dag_defaults import START_DATE, default_args

DOC = """
### itsperfect_stock

Every hour, one mapped task per ItsPerfect connector whose Airflow connection has `active` and `get_stock`
switched on. Each refreshes the tenant's warehouses (one gone or inactive upstream is marked inactive, never
deleted), then reads the full stock of every active warehouse a location is mapped to, one page at a time,
and upserts it into each mapped location's quantities (inserted / updated / unchanged in the run ledger).
A barcode outside our catalogue is quarantined with its reason; a barcode the tenant no longer lists is
set to 0 when the pass ends.

Every request is reserved from the tenant's hourly request budget first. When it is spent the task is
**deferred** until the budget resets (its log says until when; no worker slot, no retry), then resumes at
the page it stopped at. Runbook: `docs/integrations/itsperfect.md`.
"""


def _pull(context, connector: str) -> dict:
    from integrations.itsperfect.tasks import pull_stock

    return pull_stock(connector, context)


@dag(
    dag_id="itsperfect_stock",
    schedule="@hourly",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["itsperfect"],
    doc_md=DOC,
    default_args=default_args(owner="integrations", retries=2),
    on_failure_callback=OnCallNotifier(),
)
def itsperfect_stock():
    @task
    def connectors() -> list[dict]:
        from integrations.itsperfect.tasks import stock_connectors

        return [{"connector": c} for c in stock_connectors()]

    BudgetedOperator.partial(task_id="pull_stock", work=_pull,
                             map_index_template="{{ task.op_kwargs['connector'] }}").expand(op_kwargs=connectors())


itsperfect_stock()
