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

The next scheduled run of that pipeline then re-reads everything since the new value; loads are
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
        from etl import db, watermarks
        from operators.incremental_load import parse_cursor

        value = parse_cursor(params["kind"], params["value"], field="value")
        with db.connect() as conn, conn.transaction():
            before = watermarks.read(conn, params["pipeline"], params["scope"], for_update=True)
            watermarks.reset(conn, params["pipeline"], params["scope"], params["kind"], value,
                             run_id=run_id, reason=params["reason"])
        return {"pipeline": params["pipeline"], "scope": params["scope"],
                "from": watermarks.render(before.value) if before else None, "to": watermarks.render(value)}

    reset()


watermark_reset()
