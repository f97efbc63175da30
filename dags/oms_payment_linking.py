"""Every 15 minutes: QuickBooks payments land on their OMS-Pro tickets (amount paid, date, ids, paid)."""
from __future__ import annotations

from airflow.sdk import dag, get_current_context, task

from notifiers.on_call import OnCallNotifier
from operators.budgeted import BudgetedOperator
from operators.dag_defaults import START_DATE, default_args

DOC = """
### oms_payment_linking

Every 15 minutes: first the OMS-Pro configuration (`include/oms_pro.yaml`, or `$OMS_PRO_CONFIG`) is checked
against the live app (a view or field it names that the app lacks fails this task, naming it, and nothing is
written), then one task per QuickBooks company (each Airflow connection of type qbo listed in the config's
`payment_linking.qbo_connections`) reads the payments changed since its watermark and the deletions QuickBooks
reports, and puts each invoice's amount paid, payment date, payment ids and paid status on the OMS-Pro ticket
holding its invoice number, sending only the fields that differ. A payment whose invoice has no ticket waits
in `oms.payment_reviews` and is tried again every run. A spent TrackVia request budget defers the task until
it resets. Runbook: `docs/integrations/oms-pro.md`.
"""


def _link(context, qbo_conn_id: str) -> dict:
    from integrations.oms.tasks import link_payments

    return link_payments(qbo_conn_id, context)


@dag(
    dag_id="oms_payment_linking",
    schedule="*/15 * * * *",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["oms", "trackvia", "qbo"],
    doc_md=DOC,
    default_args=default_args(owner="integrations", retries=2),
    on_failure_callback=OnCallNotifier(),
)
def oms_payment_linking():
    @task
    def check_config() -> None:
        from integrations.oms.tasks import check_config

        check_config(get_current_context(), "payment_linking")

    @task
    def companies() -> list[dict]:
        from integrations.oms.tasks import payment_companies

        return payment_companies(get_current_context())

    connections = companies()
    links = BudgetedOperator.partial(task_id="link", work=_link,
                                     map_index_template="{{ task.op_kwargs['qbo_conn_id'] }}").expand(
        op_kwargs=connections)
    check_config() >> connections >> links


oms_payment_linking()
