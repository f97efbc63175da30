"""Manual: a request to bill at Stratocore PPMS, one PUMAPI order per line, none ever created twice."""
from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, task

from notifiers.on_call import OnCallNotifier
from operators.dag_defaults import START_DATE, default_args

DOC = """
### ppms_create_order

Trigger it by hand with the form: the PPMS *login* to bill, the *lines* (a JSON list: one object per line,
`service_id`, `quantity` > 0, `project_id` or null, `comments` or null), and whether the orders are
*accepted* and *completed* at creation (completed needs accepted; *completed date* `YYYY-MM-DD hh:mm:ss`,
empty for today). Each line becomes one PUMAPI `createorder` (PPMS orders have a single line).

`validate` refuses a bad form at once (no retry, nothing written) naming the value and what is valid;
`record` writes one row per line to `ppms.order_requests` under this run's id (a rerun adds nothing);
`export` sends each line through that outbox: committed `sending` before the call, `created` with the
order ref after. A line whose answer was lost is looked up at PPMS before it is ever sent again; a line
PPMS refuses keeps PPMS's text and fails the task once, after the other lines. Runbook:
`docs/integrations/ppms.md` (order creation).
"""

LINE = {"service_id": None, "quantity": None, "project_id": None, "comments": None}
LINES_SCHEMA = {
    "type": "object",
    "properties": {
        "service_id": {"type": ["null", "integer"], "minimum": 1},
        "quantity": {"type": ["null", "number"], "exclusiveMinimum": 0},
        "project_id": {"type": ["null", "integer"], "minimum": 1},
        "comments": {"type": ["null", "string"]},
    },
    "additionalProperties": False,
}


def _validate(**context) -> dict:
    from integrations.ppms.order_requests import validate_task

    return validate_task(context)


def _record(request: dict, **context) -> dict:
    from integrations.ppms.order_requests import record_task

    return record_task(request, context)


def _export(**context) -> dict:
    from integrations.ppms.order_requests import export_task

    return export_task(context)


@dag(
    dag_id="ppms_create_order",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["ppms", "manual"],
    doc_md=DOC,
    default_args=default_args(owner="integrations", retries=1),
    on_failure_callback=OnCallNotifier(),
    # Fields without a sensible default are nullable, so the form does not open with "This field is required";
    # `validate` refuses what is still missing.
    params={
        "login": Param(None, type=["null", "string"], title="PPMS login",
                       description="Required. The login of the PPMS user billed (e.g. jdoe)."),
        "lines": Param([dict(LINE)], type="array", minItems=1, items=LINES_SCHEMA, title="Order lines",
                       description='Required. One object per order line: {"service_id": 101, "quantity": 1.5, '
                                   '"project_id": null, "comments": null}. service_id: a PPMS service id; '
                                   "quantity: a number > 0; project_id: a PPMS project id or null."),
        "accepted": Param(False, type="boolean", title="Accepted",
                          description="Create the orders accepted (status Ordered)."),
        "completed": Param(False, type="boolean", title="Completed",
                           description="Create the orders completed too (only with Accepted)."),
        "completed_date": Param(None, type=["null", "string"], title="Completed date",
                                description="With Completed: YYYY-MM-DD hh:mm:ss (PPMS's time); empty for today."),
    },
)
def ppms_create_order():
    # A bad form cannot be fixed by a retry: BadInput fails at once whatever `retries` says.
    validate = task(task_id="validate")(_validate)
    record = task(task_id="record")(_record)
    # Retried after 2 minutes, past the hook's 70 s for one call (connect + read timeouts): the retry looks an
    # unanswered line up at PPMS, and the call of the failed try must have been answered (or dropped) by then.
    export = task(task_id="export", retries=2, retry_delay=dt.timedelta(minutes=2))(_export)
    record(validate()) >> export()


ppms_create_order()
