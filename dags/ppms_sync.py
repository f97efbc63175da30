"""Hourly: Stratocore PPMS orders, their lines and invoices synced from PUMAPI into schema `ppms`."""
from __future__ import annotations

from airflow.sdk import Param, dag, get_current_context, task

from notifiers.on_call import OnCallNotifier
from operators.dag_defaults import START_DATE, default_args

DOC = """
### ppms_sync

Every hour, the PPMS instance of the Airflow connection `ppms_default` (one instance for now): every order's
summary row is listed (`getorders`) and compared with what we hold; only the lines of new and changed orders are
fetched (`getorderlines`, 4 at a time), and only the invoices we do not hold yet (`getinvoice`,
`getinvoicedetails`). Orders, lines, invoices and the run's ledger row commit in one transaction: a failed run
changes nothing, and the next one starts from the same state. The task's XCom is the run report (calls per
action, orders new / changed / unchanged, lines fetched, invoices new).

PUMAPI's order list carries no quantity: a line quantity changed at PPMS is not seen until the order's summary
changes. Trigger the DAG with **full** switched on to fetch the lines of every order (one call per order).
Runbook: `docs/integrations/ppms.md`.
"""


@dag(
    dag_id="ppms_sync",
    schedule="@hourly",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["ppms"],
    doc_md=DOC,
    default_args=default_args(owner="integrations", retries=2),
    on_failure_callback=OnCallNotifier(),
    params={
        "full": Param(False, type="boolean", title="Full refresh",
                      description="Fetch the lines of every order, not only of the new and changed ones (a line "
                                  "quantity changed at PPMS does not change the order's summary). One call per "
                                  "order: leave off for the hourly runs."),
    },
)
def ppms_sync():
    @task
    def sync() -> dict:
        from integrations.ppms.tasks import sync_connection

        return sync_connection(get_current_context())

    sync()


ppms_sync()
