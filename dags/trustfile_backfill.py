"""Manual: re-process one TrustFile connection's window (reload or repush); the watermark stays put."""
from __future__ import annotations

from airflow.sdk import Param, dag, task

from notifiers.on_call import OnCallNotifier
from operators.dag_defaults import START_DATE, default_args

DOC = """
### trustfile_backfill

Trigger by hand for one connection and a window of the host system's last-updated time, in whole days
(midnight UTC): *start* inclusive, *end* exclusive.

- `reload`: read that window from the host system again, update the TrustFile model, and push what
  that changed. Use it after a mapping fix, a quarantined document fixed at the source, or a CDC cap
  warning.
- `repush`: push every stored transaction of the window to TrustFile again, whatever the push ledger
  says. Use it when TrustFile lost or was reset for that period.

*check_form* checks what the form cannot: the connection exists (the failure lists the connections, by
company), the end is after the start, a `reload` has a host authorization. A refused form fails at once,
without retries, and leaves the connection's status and `GET /extractor/errors` alone. Both modes are
idempotent and leave the connection's watermark alone. A backfill waits for no one: if the hourly sync is
working on the same connection it fails at once with "being loaded by another run"; trigger it again when
that run ends. See `docs/integrations/trustfile.md`, *Backfill*.
"""


@dag(
    dag_id="trustfile_backfill",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    tags=["trustfile", "manual"],
    doc_md=DOC,
    default_args=default_args(owner="integrations", retries=1),
    on_failure_callback=OnCallNotifier(),
    params={
        "connection_id": Param(None, type=["null", "string"], title="TrustFile connection id",
                               description="Required. The connectionId, as GET /extractor/connections lists it; "
                                           "the first task lists them if it is unknown."),
        "start": Param(None, type=["null", "string"], format="date", title="From (inclusive)",
                       description="Required. The first day to re-process (midnight UTC), by the host "
                                   "system's last-updated time."),
        "end": Param(None, type=["null", "string"], format="date", title="Until (exclusive)",
                     description="Required. The day after the last day to re-process (midnight UTC)."),
        "mode": Param("reload", type="string", enum=["reload", "repush"], title="Mode",
                      values_display={"reload": "reload: read from the host system again, push what changed",
                                      "repush": "repush: push the stored transactions again"},
                      description="reload: read the window from the host system again and push what changed. "
                                  "repush: push every stored transaction of the window again."),
    },
)
def trustfile_backfill():
    @task
    def check_form(**context) -> dict:
        from integrations.trustfile.tasks import check_backfill_form

        return check_backfill_form(context)

    @task(pool="trustfile_sync")
    def backfill_connection(form: dict, **context) -> dict:
        from integrations.trustfile.tasks import backfill

        return backfill(form, context)

    backfill_connection(check_form())


trustfile_backfill()
