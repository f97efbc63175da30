"""Hourly at :30: jobs and invoices changed at ServiceTrade since the last run, per subscribed account; the rows no
webhook announced are counted and named (notifications dropped)."""
from __future__ import annotations

from airflow.sdk import dag, task

from notifiers.on_call import OnCallNotifier
from operators.dag_defaults import START_DATE, default_args

DOC = """
### servicetrade_safety_net

Every hour at minute 30, one mapped task per account of `servicetrade.webhook_accounts` (an account is the
Airflow connection id of a ServiceTrade connection; the `servicetrade_webhook_subscription` DAG adds it). In one
ServiceTrade session, the jobs and invoices updated since the account's watermark minus 5 minutes (the first run:
all of them) are read and upserted into `servicetrade.jobs` / `servicetrade.invoices`; the rows, the watermark
(pipeline `servicetrade_safety_net`, scope the account) and the ledger row commit in one transaction.

The task's XCom is the run report: per entity type rows read, inserted, updated, unchanged, older_skipped (we
hold a newer state) and **missed**: rows the net inserted or updated for which no webhook event was pending, i.e.
notifications ServiceTrade dropped or we lost. When missed > 0 the log has a WARNING naming up to 20 of them
(type, id): check the subscription (run `servicetrade_webhook_subscription`) and the receiver. The first run is a
baseline (the account's history): it counts nothing as missed. Runbook: `docs/integrations/servicetrade.md`.
"""


@dag(
    dag_id="servicetrade_safety_net",
    schedule="30 * * * *",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["servicetrade", "webhooks"],
    doc_md=DOC,
    default_args=default_args(owner="integrations", retries=2),
    on_failure_callback=OnCallNotifier(),
)
def servicetrade_safety_net():
    @task
    def subscribed_accounts() -> list[str]:
        from integrations.servicetrade.net_tasks import net_accounts

        return net_accounts()

    @task(map_index_template="{{ task.op_kwargs['account'] }}")
    def net(account: str) -> dict:
        from airflow.sdk import get_current_context

        from integrations.servicetrade.net_tasks import net_account

        return net_account(account, get_current_context())

    net.expand(account=subscribed_accounts())


servicetrade_safety_net()
