"""Manual: re-process one TrustFile connection's window (reload or repush); the watermark stays put."""
from __future__ import annotations

from airflow.sdk import Param, dag, task

from notifiers.on_call import OnCallNotifier
from operators.dag_defaults import START_DATE, default_args

DOC = """
### trustfile_backfill

Trigger by hand for one connection and a window of the host system's last-updated time,
`start` inclusive, `end` exclusive (dates are midnight UTC, or give ISO 8601 timestamps with offset).

- `reload`: read that window from the host system again, update the TrustFile model, and push what
  that changed. Use it after a mapping fix, a quarantined document fixed at the source, or a CDC cap
  warning.
- `repush`: push every stored transaction of the window to TrustFile again, whatever the push ledger
  says. Use it when TrustFile lost or was reset for that period.

Both are idempotent and leave the connection's watermark alone. A backfill waits for no one: if the
hourly sync is working on the same connection it fails at once with "being loaded by another run";
trigger it again when that run ends.
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
        "connection_id": Param("", type="string", minLength=1, description="The TrustFile connectionId."),
        "start": Param("", type="string", minLength=10, description="Inclusive: yyyy-mm-dd or ISO 8601 with offset."),
        "end": Param("", type="string", minLength=10, description="Exclusive: yyyy-mm-dd or ISO 8601 with offset."),
        "mode": Param("reload", type="string", enum=["reload", "repush"]),
    },
)
def trustfile_backfill():
    @task(pool="trustfile_sync")
    def backfill_connection(**context) -> dict:
        from integrations.trustfile.tasks import backfill

        return backfill(context)

    backfill_connection()


trustfile_backfill()
