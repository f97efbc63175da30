"""Hourly: every enabled, authorized TrustFile connection synced from its host system and pushed."""
from __future__ import annotations

from airflow.sdk import Param, dag, task

from notifiers.on_call import OnCallNotifier
from operators.dag_defaults import START_DATE, default_args

DOC = """
### trustfile_sync

Every hour, one mapped task per TrustFile connection that is enabled, has reached its start date and
is authorized at its host system (QuickBooks Online or ServiceTrade). Each task reads the documents
changed since the connection's watermark (in windows of about `window_documents` documents, each
one transaction; at most `max_documents` per run, so a company with years of history catches up
over several runs without starving the others),
maps them to the TrustFile model, loads them and moves the watermark in one transaction, then pushes
to TrustFile only the items that are new or changed since the last push (1000 per call).

At most as many connections run at once as the `trustfile_sync` pool has slots (`make up` creates it
with 4). The connection's `statusMessage`, `lastSyncAt`, `nextSyncAt` and activities say how it went;
failures are also listed by `GET /extractor/errors`. Runbook: `docs/integrations/trustfile.md`.
"""


@dag(
    dag_id="trustfile_sync",
    schedule="@hourly",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["trustfile", "qbo", "servicetrade"],
    doc_md=DOC,
    default_args=default_args(owner="integrations", retries=2),
    on_failure_callback=OnCallNotifier(),
    params={
        "window_documents": Param(20_000, type="integer", minimum=100,
                                  description="A window (one transaction) ends once it holds about this many "
                                              "documents; a sparse history is read in one."),
        "max_documents": Param(100_000, type="integer", minimum=1,
                               description="After this many documents a connection's run stops and the next goes on."),
    },
)
def trustfile_sync():
    @task
    def due_connections() -> list[str]:
        from integrations.trustfile.tasks import due_connections

        return due_connections()

    @task(pool="trustfile_sync", map_index_template="{{ connection_id }}")
    def sync_connection(connection_id: str) -> dict:
        from airflow.sdk import get_current_context

        from integrations.trustfile.tasks import sync

        context = get_current_context()
        context["connection_id"] = connection_id     # names the mapped task in the UI
        return sync(connection_id, context)

    sync_connection.expand(connection_id=due_connections())


trustfile_sync()
