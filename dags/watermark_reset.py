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
the message, and so are a malformed value and a missing field: the task fails at once, without retries,
and its log starts with the on-call summary. The next scheduled run of that pipeline then re-reads
everything since the new value; loads are upserts, so rows already present come back as `unchanged`.
To re-process a window *without* moving the watermark, trigger the pipeline's backfill instead (for
TrustFile, `trustfile_backfill`). See `docs/runbook.md`, *Rewinding a watermark*.
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
    # Required fields are nullable with no default, so the form does not open with "This field is
    # required"; the task refuses a missing one at once.
    params={
        "pipeline": Param(None, type=["null", "string"], title="Pipeline",
                          description="Required. The pipeline's name, as in etl.watermarks (e.g. trustfile_sync)."),
        "scope": Param(None, type=["null", "string"], title="Scope",
                       description="Required. The scope, as in etl.watermarks (a TrustFile connection id, ...)."),
        "kind": Param("timestamp", type="string", enum=["timestamp", "id", "json"], title="Cursor kind",
                      description="timestamp: ISO 8601 with offset. id: an integer. json: any JSON value."),
        "value": Param(None, type=["null", "string"], title="New value",
                       description="Required. The new cursor, e.g. 2026-01-01T00:00:00+00:00 for a timestamp."),
        "reason": Param(None, type=["null", "string"], title="Reason",
                        description="Required (5 characters at least). Why: kept in etl.watermark_history."),
    },
)
def watermark_reset():
    @task
    def reset(**context) -> dict:
        """A refused form (missing or bad value, a time in the future, no reason) fails at once: a retry cannot
        fix it. WatermarkBusy alone is retried, since the load holding the scope ends."""
        from etl import db, watermarks
        from notifiers.failures import BadInput, Scope, reported
        from operators.incremental_load import parse_cursor

        params = context["params"]
        pipeline, scope, kind = params["pipeline"], params["scope"], params["kind"]
        with reported(context, Scope(f"{pipeline} watermark", str(scope))):
            missing = [name for name in ("pipeline", "scope", "value", "reason") if not (params[name] or "").strip()]
            if missing or len(params["reason"].strip()) < 5:
                raise BadInput(f"the form needs {', '.join(missing or ['a reason of 5 characters at least'])}")
            try:
                value = parse_cursor(kind, params["value"], field="value")
                with db.connect() as conn, conn.transaction():
                    before = watermarks.read(conn, pipeline, scope, for_update=True)
                    watermarks.reset(conn, pipeline, scope, kind, value, run_id=context["run_id"],
                                     reason=params["reason"])
            except watermarks.WatermarkBusy:
                raise
            except (ValueError, watermarks.WatermarkError) as exc:
                raise BadInput(f"{exc}; trigger watermark_reset again with a corrected form") from None
        return {"pipeline": pipeline, "scope": scope,
                "from": watermarks.render(before.value) if before else None, "to": watermarks.render(value)}

    reset()


watermark_reset()
