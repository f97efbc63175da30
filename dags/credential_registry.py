"""Daily: every credential the platform uses checked, the next expiration headlined, on-call warned before it."""
from __future__ import annotations

from airflow.sdk import dag, task

from notifiers.on_call import OnCallNotifier
from operators.dag_defaults import START_DATE, default_args

DOC = """
### credential_registry

The token checklist, kept by the platform: `etl.credentials` lists every credential with its owner,
expiry, last successful check and the DAGs or places that use it (`docs/credentials.md`).

1. **verify_credentials**: gathers what the integrations declare in code (Airflow connections of our
   types, TrustFile company tokens, QuickBooks refresh tokens) and `include/credentials.yaml`
   (credentials used outside Airflow), updates the registry, and checks each credential with the
   cheapest call its vendor allows (QuickBooks at most once a day per company). A refused credential is
   recorded with the reason; the task goes on with the others.
2. **report_expirations**: logs `Next expiration: …` first; sends one on-call alert per credential 30, 14,
   7 and 1 days before its expiry (once per threshold, kept in `etl.credential_alerts`); **fails at once**
   when a credential has expired or failed its check, naming each with the runbook section that says what
   to do.

After rotating a credential, trigger `credential_rotation` to check it at once.
"""


@dag(
    dag_id="credential_registry",
    schedule="@daily",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["maintenance", "credentials"],
    doc_md=DOC,
    default_args=default_args(owner="integrations"),
    on_failure_callback=OnCallNotifier(),
)
def credential_registry():
    @task
    def verify_credentials() -> dict:
        import datetime as dt

        from etl import credentials, db
        from integrations.registry import declared_credentials

        with db.connect() as conn:
            found = declared_credentials(conn)
            registered = credentials.register(conn, found)
            results = credentials.verify(conn, found, dt.datetime.now(dt.timezone.utc))
        return {**registered, "checked": sum(not r.skipped for r in results),
                "failed": sorted(r.credential_id for r in results if not r.ok)}

    @task
    def report_expirations() -> dict:
        """Expired or refused credentials fail the task without retries: only a rotation fixes them."""
        import datetime as dt

        from airflow.sdk.exceptions import AirflowFailException

        from etl import credentials, db
        from notifiers.on_call import warn
        from notifiers.runbook import credential_runbook

        with db.connect() as conn:
            try:
                return credentials.report(conn, dt.datetime.now(dt.timezone.utc), warn, credential_runbook)
            except credentials.CredentialsNeedAction as exc:
                raise AirflowFailException(str(exc)) from None

    verify_credentials() >> report_expirations()


credential_registry()
