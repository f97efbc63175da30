"""Manual: sign a company up to TrustFile and create its (disabled) connection."""
from __future__ import annotations

from airflow.sdk import Param, dag, task

from notifiers.on_call import OnCallNotifier
from operators.dag_defaults import START_DATE, default_args

DOC = """
### trustfile_provision

Trigger by hand with the company's details. It creates the TrustFile connection disabled and with
no start date, signs the company up (`POST /v4/company/signup`) and stores the company token it gets
back (encrypted). TrustFile then enables the connection through the extractor API
(`PUT /extractor/connections/{id}` with `enabled` and `startDate`), and the sync picks it up.

Safe to re-trigger with the same email: the connection is found again, and a company already signed
up is not signed up twice. Runs go one at a time (`max_active_runs=1`), and a task retry or a second
run for one email waits for the one signing it up (a lock per email). A failed signup leaves the
connection in `signup_failed` with the reason in its status message (`GET /extractor/connections/{id}`);
a stored company token always means `provisioned`. See `docs/integrations/trustfile.md`.
"""


@dag(
    dag_id="trustfile_provision",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["trustfile", "manual"],
    doc_md=DOC,
    default_args=default_args(owner="integrations", retries=2),
    on_failure_callback=OnCallNotifier(),
    params={
        "email": Param("", type="string", format="email", description="The TrustFile user to create."),
        "company_name": Param("", type="string", minLength=1),
        "line1": Param(None, type=["null", "string"]),
        "city": Param(None, type=["null", "string"]),
        "state": Param(None, type=["null", "string"], description="Two-letter state code."),
        "zip": Param(None, type=["null", "string"]),
        "phone": Param(None, type=["null", "string"]),
        "host_system": Param("qbo", type="string", enum=["qbo", "servicetrade"],
                             description="qbo: the company authorizes QuickBooks from TrustFile afterwards. "
                                         "servicetrade: its login is the Airflow connection below."),
        "host_connection_id": Param(None, type=["null", "string"],
                                    description="ServiceTrade only: the Airflow connection (type servicetrade) "
                                                "holding the company's ServiceTrade login; "
                                                "default servicetrade_default."),
    },
)
def trustfile_provision():
    @task
    def register_connection(params=None) -> str:
        from integrations.trustfile.provisioning import register

        return register(params)

    @task
    def sign_up_company(connection_id: str, params=None) -> str:
        from integrations.trustfile.provisioning import sign_up

        return sign_up(connection_id, params)

    sign_up_company(register_connection())


trustfile_provision()
