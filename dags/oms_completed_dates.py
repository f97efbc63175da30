"""Hourly: OMS-Pro tickets and site visits that are Completed without a completed date get one."""
from __future__ import annotations

from airflow.sdk import dag, get_current_context, task

from notifiers.on_call import OnCallNotifier
from operators.budgeted import BudgetedOperator
from operators.dag_defaults import START_DATE, default_args

DOC = """
### oms_completed_dates

Every hour: first the OMS-Pro configuration (`include/oms_pro.yaml`, or `$OMS_PRO_CONFIG`) is checked against
the live app (a view or field it names that the app lacks fails this task, naming it, and nothing is
written), then one task per table (tickets, site visits) reads the records changed since its watermark
through the view sorted by `Updated` and stamps the completed date of every completed record without one
(the date of its `Status Changed`, else of the run). A spent TrackVia request budget defers the task until
it resets. Runbook: `docs/integrations/oms-pro.md`.
"""

TABLES = ("tickets", "site_visits")


def _capture(context, table: str) -> dict:
    from integrations.oms.tasks import capture_completed_dates

    return capture_completed_dates(table, context)


@dag(
    dag_id="oms_completed_dates",
    schedule="@hourly",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["oms", "trackvia"],
    doc_md=DOC,
    default_args=default_args(owner="integrations", retries=2),
    on_failure_callback=OnCallNotifier(),
)
def oms_completed_dates():
    @task
    def check_config() -> None:
        from integrations.oms.tasks import check_config

        check_config(get_current_context(), "completed_dates")

    captures = BudgetedOperator.partial(task_id="capture", work=_capture,
                                        map_index_template="{{ task.op_kwargs['table'] }}").expand(
        op_kwargs=[{"table": table} for table in TABLES])
    check_config() >> captures


oms_completed_dates()
