"""As soon as ServiceTrade webhook events ripen (or every 10 minutes): entities fetched, invoices announced."""
from __future__ import annotations

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, get_current_context, task

from integrations.servicetrade.assets import SERVICETRADE_INVOICES_CHANGED, SERVICETRADE_RIPE_WEBHOOK_EVENTS
from notifiers.on_call import OnCallNotifier
from operators.dag_defaults import START_DATE, default_args

DOC = """
### servicetrade_webhook_events

The ServiceTrade webhook receiver stores every notification and folds it into a pending event per entity
(account, type, id). An event is ripe once its entity has been quiet for the account's quiet window, or after
its maximum wait if it keeps changing (`include/servicetrade_webhooks.yaml`). The triggerer watches for ripe
events (asset `servicetrade_ripe_webhook_events`) and schedules this DAG at once; a run every 10 minutes is
the fallback for when the triggerer is down.

*process*: for every account, the ripe events in batches of 100; each batch is one ServiceTrade session that
fetches every entity's current state, then one transaction that upserts jobs, job items, invoices and locations
into schema `servicetrade`, marks the entities ServiceTrade no longer has as deleted, and marks the events done
(an event renamed by a notification meanwhile stays pending and is fetched again). An entity whose fetch fails
stays pending with its error and attempts; the others load, and the task fails naming the ones that did not.
One ledger row per account (scope = the account's Airflow connection id).

*announce_invoices*: when invoices were inserted or updated, an event of asset `servicetrade_invoices_changed`
naming their accounts, which runs trustfile_sync now for those accounts' TrustFile connections; skipped
(no event) when none changed.

Runbook: `docs/integrations/servicetrade.md`, *Webhooks: failures and what on-call does*.
"""


@dag(
    dag_id="servicetrade_webhook_events",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("*/10 * * * *", timezone="UTC"),
                                 assets=[SERVICETRADE_RIPE_WEBHOOK_EVENTS]),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["servicetrade", "webhooks"],
    doc_md=DOC,
    default_args=default_args(owner="integrations", retries=2),
    on_failure_callback=OnCallNotifier(),
)
def servicetrade_webhook_events():
    @task
    def process() -> dict:
        from integrations.servicetrade.tasks import process_ripe_events

        return process_ripe_events(get_current_context())

    @task(outlets=[SERVICETRADE_INVOICES_CHANGED])
    def announce_invoices(report: dict) -> list[str]:
        from integrations.servicetrade.tasks import announce_invoices

        return announce_invoices(get_current_context(), report, SERVICETRADE_INVOICES_CHANGED)

    announce_invoices(process())


servicetrade_webhook_events()
