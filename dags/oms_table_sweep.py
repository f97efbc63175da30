"""Manual: one declared OMS-Pro table sweep (include/oms_pro.yaml `sweeps:`), a dry run unless told otherwise."""
from __future__ import annotations

from airflow.sdk import Param, dag, get_current_context, task

from integrations.oms.config import configured_file, load
from integrations.oms.sweeps import BATCH_SIZES
from notifiers.on_call import OnCallNotifier
from operators.budgeted import BudgetedOperator
from operators.dag_defaults import START_DATE, default_args

DOC = """
### oms_table_sweep

Trigger by hand with the form: a *sweep* declared in `include/oms_pro.yaml` (or `$OMS_PRO_CONFIG`) under
`sweeps:`, the *batch size* (records per page read, and per committed step), and *dry run* (on by default).

`check` refuses a bad form or a rule the live app cannot run (a view or field it lacks, a read-only target, a
drop-down value that is not a choice) at once, without retries, naming the value. `sweep` then reads the whole
view page by page. A dry run changes nothing: its log ends with the count and a sample of before -> after,
and every record is in `oms.sweep_changes` (the log gives the query). A real run updates only records whose
value differs and reports inserted (the field was empty) / updated / unchanged / failed. A run that fails or
is killed resumes from its committed cursor on a retry or the next trigger of the same sweep; a spent TrackVia
request budget defers it until the budget resets. Runbook: `docs/integrations/oms-pro.md`.
"""

# The registry is read when the DAG is parsed, so the form offers exactly the declared sweeps; a file that
# does not load is this DAG's import error, naming the key at fault.
SWEEPS = load(configured_file()).sweeps
if not SWEEPS:
    raise ValueError(f"{configured_file()} declares no sweeps: oms_table_sweep has nothing to offer")


def _sweep(context) -> dict:
    from integrations.oms.tasks import run_sweep

    return run_sweep(context)


@dag(
    dag_id="oms_table_sweep",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["oms", "trackvia", "manual"],
    doc_md=DOC,
    default_args=default_args(owner="integrations", retries=2),
    on_failure_callback=OnCallNotifier(),
    params={
        "sweep": Param(sorted(SWEEPS)[0], type="string", enum=sorted(SWEEPS), title="Sweep",
                       values_display={name: f"{name}: {rule.description}" for name, rule in SWEEPS.items()},
                       description="The declared rule to run (include/oms_pro.yaml, sweeps)."),
        "batch_size": Param(500, type="integer", minimum=BATCH_SIZES[0], maximum=BATCH_SIZES[1], title="Batch size",
                            description="Records per page read and per committed step (2 to 1000)."),
        "dry_run": Param(True, type="boolean", title="Dry run",
                         description="On: change nothing, report what would change. Off: change it."),
    },
)
def oms_table_sweep():
    @task
    def check() -> dict:
        from integrations.oms.tasks import check_sweep

        return check_sweep(get_current_context())

    check() >> BudgetedOperator(task_id="sweep", work=_sweep)


oms_table_sweep()
