"""Daily housekeeping of the integrations database: abandoned runs, ledger retention, watermark lag."""
from __future__ import annotations

from airflow.sdk import Param, dag, task

from notifiers.on_call import OnCallNotifier
from operators.dag_defaults import START_DATE, default_args

DOC = """
### integrations_maintenance

Daily upkeep of the engine's own tables in the integrations database (`etl` schema).

1. **close_abandoned_runs**: ledger rows still `running` after *abandoned_after_hours* belong to a
   worker that died; they are marked `failed` (their load committed nothing).
2. **prune_ledger**: ledger rows and their quarantine rows older than *retention_days* are deleted.
3. **report_watermark_lag**: logs every pipeline scope with its watermark lag, last success and
   recent failures; **fails** when a scope has had no successful run for *max_lag_hours*, so on-call hears of a
   pipeline that silently stopped moving.

On failure the task's log starts with the on-call summary; see `docs/runbook.md`, section
*integrations_maintenance*.
"""


@dag(
    dag_id="integrations_maintenance",
    schedule="@daily",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["maintenance", "engine"],
    doc_md=DOC,
    default_args=default_args(owner="integrations"),
    on_failure_callback=OnCallNotifier(),
    params={
        "retention_days": Param(90, type="integer", minimum=1, title="Ledger retention (days)",
                                description="Keep ledger rows (and their quarantine) this many days."),
        "abandoned_after_hours": Param(12, type="integer", minimum=1, title="Abandoned after (hours)",
                                       description="A run still 'running' after this long is marked failed."),
        "max_lag_hours": Param(48, type="integer", minimum=1, title="Alert after (hours without success)",
                               description="Fail the report when a scope has had no successful run for this long."),
    },
)
def integrations_maintenance():
    # Each body runs under reported(): a failure's on-call summary is the first ERROR line of its log.
    @task
    def close_abandoned_runs(**context) -> int:
        from etl.maintenance import close_abandoned
        from notifiers.failures import reported

        with reported(context):
            return close_abandoned(context["params"]["abandoned_after_hours"], context["run_id"])

    @task
    def prune_ledger(**context) -> int:
        from etl.maintenance import prune
        from notifiers.failures import reported

        with reported(context):
            return prune(context["params"]["retention_days"], context["run_id"])

    @task
    def report_watermark_lag(**context) -> list[dict]:
        from etl.maintenance import report_lag
        from notifiers.failures import reported

        with reported(context):
            return report_lag(context["params"]["max_lag_hours"])

    close_abandoned_runs() >> prune_ledger() >> report_watermark_lag()


integrations_maintenance()
