"""Manual rewind (or first setting) of one pipeline scope's watermark, from the Airflow UI."""
from __future__ import annotations

from airflow.sdk import Param, dag, task

from notifiers.on_call import OnCallNotifier
from operators.dag_defaults import START_DATE, default_args

DOC = """
### watermark_reset

The only way a watermark moves backward. Trigger it by hand with the form: *pipeline*, *scope*,
the cursor *kind* and the new *value* (ISO 8601 timestamp with offset, an integer id, or JSON),
and a *reason* that is kept in `etl.watermark_history` with this run's id.

A timestamp in the future is refused (5 minutes of clock skew allowed) with the current watermark in
the message, and so is a malformed value: the task fails at once, without retries. The next
scheduled run of that pipeline then re-reads everything since the new value; loads are
upserts, so rows already present come back as `unchanged`. To re-process a window *without*
moving the watermark, trigger the pipeline's own DAG in `backfill` mode instead.
See `docs/runbook.md`, *Rewinding a watermark*.
"""


@dag(
    dag_id="watermark_reset",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["maintenance", "engine", "manual"],
    doc_md=DOC,
    default_args=default_args(owner="integrations", retries=1),
    on_failure_callback=OnCallNotifier(),
    params={
        "pipeline": Param("", type="string", minLength=1, description="Pipeline name, as in etl.watermarks."),
        "scope": Param("", type="string", minLength=1, description="Scope (connection, company, view)."),
        "kind": Param("timestamp", type="string", enum=["timestamp", "id", "json"]),
        "value": Param("", type="string", minLength=1, description="New cursor value."),
        "reason": Param("", type="string", minLength=5, description="Why: kept in etl.watermark_history."),
    },
)
def watermark_reset():
    @task
    def reset(params=None, run_id=None) -> dict:
        """A refused form (bad value, a time in the future, no reason) fails at once: a retry cannot fix it.
        WatermarkBusy alone is retried, since the load holding the scope ends."""
        from airflow.sdk.exceptions import AirflowFailException

        from etl import db, watermarks
        from operators.incremental_load import parse_cursor

        try:
            value = parse_cursor(params["kind"], params["value"], field="value")
            with db.connect() as conn, conn.transaction():
                before = watermarks.read(conn, params["pipeline"], params["scope"], for_update=True)
                watermarks.reset(conn, params["pipeline"], params["scope"], params["kind"], value,
                                 run_id=run_id, reason=params["reason"])
        except watermarks.WatermarkBusy:
            raise
        except (ValueError, watermarks.WatermarkError) as exc:
            raise AirflowFailException(f"{exc}; trigger watermark_reset again with a corrected form") from None
        return {"pipeline": params["pipeline"], "scope": params["scope"],
                "from": watermarks.render(before.value) if before else None, "to": watermarks.render(value)}

    reset()


watermark_reset()
