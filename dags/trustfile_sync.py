"""Hourly, and when ServiceTrade invoices change: enabled, authorized TrustFile connections synced and pushed."""
from __future__ import annotations

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

from integrations.servicetrade.assets import SERVICETRADE_INVOICES_CHANGED
from notifiers.on_call import OnCallNotifier
from operators.dag_defaults import START_DATE, default_args

DOC = """
### trustfile_sync

Every hour, one mapped task per TrustFile connection that is enabled, has reached its start date and
is authorized at its host system (QuickBooks Online or ServiceTrade), named by its company (or, for a
connection TrustFile made, its host system's company id). Each task reads the documents
changed since the connection's watermark (in windows of about `window_documents` documents, each
one transaction; at most `max_documents` per run, so a company with years of history catches up
over several runs without starving the others),
maps them to the TrustFile model, loads them and moves the watermark in one transaction, then pushes
to TrustFile only the items that are new or changed since the last push (1000 per call).

At most as many connections run at once as the `trustfile_sync` pool has slots (`make up` creates it
with 4). The connection's `statusMessage`, `lastSyncAt`, `nextSyncAt` and activities say how it went;
failures are also listed by `GET /extractor/errors`. A failed task's log starts with the on-call summary:
the connection and its company, what happened, the next step and its runbook section
(`docs/integrations/trustfile.md`, *Sync failures and what on-call does*).

Besides the top of every hour, the DAG runs when servicetrade_webhook_events announces changed ServiceTrade
invoices (asset `servicetrade_invoices_changed`): such a run syncs only the due connections whose host is
ServiceTrade and whose account the event names, so a changed invoice reaches TrustFile within minutes.
"""


@dag(
    dag_id="trustfile_sync",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("@hourly", timezone="UTC"),
                                 assets=[SERVICETRADE_INVOICES_CHANGED]),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["trustfile", "qbo", "servicetrade"],
    doc_md=DOC,
    default_args=default_args(owner="integrations", retries=2),
    on_failure_callback=OnCallNotifier(),
    params={
        "window_documents": Param(20_000, type="integer", minimum=100, title="Documents per window",
                                  description="A window (one transaction) ends once it holds about this many "
                                              "documents; a sparse history is read in one."),
        "max_documents": Param(100_000, type="integer", minimum=1, title="Documents per connection and run",
                               description="After this many documents a connection's run stops and the next goes on."),
    },
)
def trustfile_sync():
    @task
    def due_connections() -> list[dict]:
        from airflow.sdk import get_current_context

        from integrations.trustfile.tasks import due_scopes

        return due_scopes(get_current_context())

    # Each mapped task is named by its company in the UI, from the start of its run.
    @task(pool="trustfile_sync", map_index_template="{{ task.op_kwargs['connection']['name'] }}")
    def sync_connection(connection: dict) -> dict:
        from airflow.sdk import get_current_context

        from integrations.trustfile.tasks import sync

        return sync(connection["connection_id"], get_current_context())

    sync_connection.expand(connection=due_connections())


trustfile_sync()
