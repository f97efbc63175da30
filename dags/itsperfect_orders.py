"""Every 15 minutes: each account's new orders sent to its ItsPerfect connector, exactly once."""
from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, task

from notifiers.on_call import OnCallNotifier
from operators.budgeted import BudgetedOperator
from operators.dag_defaults import START_DATE, default_args

DOC = """
### itsperfect_orders

Every 15 minutes, one mapped task per account mapped to an ItsPerfect connector whose Airflow connection
has `active` and `create_orders` switched on. New orders since the account's watermark become ItsPerfect
orders (with the connector's extension attributes) through an outbox: the row is committed before the
POST and completed after it, and an order whose answer was lost is looked up by its reference before it
is ever sent again. An order ItsPerfect refuses is kept with its `error` text and alerted once.

Every request is reserved from the tenant's hourly request budget first; when it is spent the task is
**deferred** until the reset (no worker slot, no retry). Runbook: `docs/integrations/itsperfect.md`.
"""


def _export(context, account: str) -> dict:
    from integrations.itsperfect.tasks import export_account

    return export_account(account, context)


@dag(
    dag_id="itsperfect_orders",
    schedule="*/15 * * * *",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["itsperfect"],
    doc_md=DOC,
    # Retried after 5 minutes, well past the hook's 70 s for one POST: the retry looks an unanswered order up
    # by its reference, and a POST of the failed try must have been answered (or dropped) by then.
    default_args={**default_args(owner="integrations", retries=2), "retry_delay": dt.timedelta(minutes=5)},
    on_failure_callback=OnCallNotifier(),
)
def itsperfect_orders():
    @task
    def accounts() -> list[dict]:
        from integrations.itsperfect.tasks import export_accounts

        return [{"account": a} for a in export_accounts()]

    BudgetedOperator.partial(task_id="export_orders", work=_export,
                             map_index_template="{{ task.op_kwargs['account'] }}").expand(op_kwargs=accounts())


itsperfect_orders()
