"""Manual: check one credential now, after its rotation, and record it as verified."""
from __future__ import annotations

from airflow.sdk import Param, dag, task

from notifiers.on_call import OnCallNotifier
from operators.dag_defaults import START_DATE, default_args

DOC = """
### credential_rotation

The last step of a rotation (`docs/credentials.md`): once the new secret is in the Airflow connection
form (or the customer has authorized again), trigger this DAG with the credential's id. It checks that
one credential at once, whatever its daily budget, and on success updates its `last_verified_at` and
expiry in `etl.credentials` and clears its last error, so the next `credential_registry` run is green.

The form takes the id only: **never put a secret in it**, Params are stored in plain text. Ids are
those of `etl.credentials` and of the `credential_registry` log: `airflow:<connection id>`,
`qbo:refresh_token:<realm id>`, `trustfile:company_token:<connection id>`. An unknown id fails at once,
naming the closest valid ones; a credential used outside Airflow (`external:…`) cannot be checked from
here, its `include/credentials.yaml` entry is updated instead.
"""


@dag(
    dag_id="credential_rotation",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["maintenance", "credentials", "manual"],
    doc_md=DOC,
    default_args=default_args(owner="integrations", retries=1),
    on_failure_callback=OnCallNotifier(),
    params={
        "credential_id": Param(
            None, type=["null", "string"], title="Credential id",
            description="The credential to check now, e.g. airflow:trustfile_default, qbo:refresh_token:<realm id> "
                        "or trustfile:company_token:<connection id> (SELECT credential_id, name FROM etl.credentials). "
                        "The new secret goes in the connection form, never here: Params are stored in plain text."),
    },
)
def credential_rotation():
    @task
    def validate_credential(params=None) -> str:
        """A missing id, or one the registry cannot check, fails at once: a retry would not change the form."""
        from etl import credentials, db
        from integrations.registry import declared_credentials
        from notifiers.failures import BadInput

        with db.connect() as conn:
            found = declared_credentials(conn)
            credentials.register(conn, found)
            try:
                return credentials.select(found, (params.get("credential_id") or "").strip()).credential_id
            except credentials.RotationRefused as exc:
                raise BadInput(f"{exc}; trigger credential_rotation again with a valid id") from None

    @task
    def verify_now(credential_id: str) -> dict:
        """A credential that still fails is not retried: the secret in the connection needs a person."""
        import datetime as dt

        from airflow.sdk.exceptions import AirflowFailException

        from etl import credentials, db
        from integrations.registry import declared_credentials

        with db.connect() as conn:
            credential = credentials.select(declared_credentials(conn), credential_id)
            [result] = credentials.verify(conn, [credential], dt.datetime.now(dt.timezone.utc), force=True)
            if not result.ok:
                raise AirflowFailException(
                    f"{credential.name} ({credential_id}) still fails its check: {result.error}. Correct the secret "
                    "in its connection (or put back the previous one while it still works) and trigger "
                    "credential_rotation again")
            return credentials.registered(conn, credential_id)

    verify_now(validate_credential())


credential_rotation()
