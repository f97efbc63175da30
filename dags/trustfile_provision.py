"""Manual: sign a company up to TrustFile and create its (disabled) connection."""
from __future__ import annotations

from airflow.sdk import Param, dag, task

from notifiers.on_call import OnCallNotifier
from operators.dag_defaults import START_DATE, default_args

DOC = """
### trustfile_provision

Trigger by hand with the company's details. It creates the TrustFile connection disabled and with
no start date, signs the company up (`POST /v4/company/signup`) and stores the company token it gets
back (encrypted). The log's last line names the new connection (`TrustFile connection <id> (<company>,
<email>): provisioned`), and so does the XCom `connection_id` of both tasks. TrustFile then enables the
connection through the extractor API (`PUT /extractor/connections/{id}` with `enabled` and `startDate`),
and the sync picks it up.

*register_connection* checks first what the form cannot (a blank name, the ServiceTrade login's Airflow
connection) and writes nothing when it refuses; a refusal, and a signup no retry can fix, fail at once.
Safe to re-trigger with the same email: the connection is found again, and a company already signed
up is not signed up twice. Runs go one at a time (`max_active_runs=1`), and a task retry or a second
run for one email waits for the one signing it up (a lock per email). A failed signup leaves the
connection in `signup_failed` with the reason in its status message (`GET /extractor/connections/{id}`);
a stored company token always means `provisioned`. See `docs/integrations/trustfile.md`.
"""

US_STATES = ("AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID", "IL", "IN", "IA", "KS",
             "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM", "NY", "NC",
             "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA", "WV", "WI", "WY")


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
    # Required fields are nullable with no default: Airflow's form shows a non-nullable field whose default
    # fails its schema as "This field is required" before anything is typed. The first task checks them.
    params={
        "email": Param(None, type=["null", "string"], format="email", title="Email",
                       description="Required. The TrustFile user to create, e.g. owner@company.example; one "
                                   "company per email."),
        "company_name": Param(None, type=["null", "string"], title="Company name",
                              description="Required. As TrustFile will show it; alerts and task names use it."),
        "line1": Param(None, type=["null", "string"], title="Street address",
                       description="The company's address: documents without a usable ship-to are placed there."),
        "city": Param(None, type=["null", "string"], title="City", description="The company's city."),
        "state": Param(None, type=["null", "string"], enum=[None, *US_STATES], title="State",
                       description="The company's state (two-letter code)."),
        "zip": Param(None, type=["null", "string"], pattern=r"^\d{5}(-\d{4})?$", title="ZIP code",
                     description="Five digits, or ZIP+4 (93722-1234)."),
        "phone": Param(None, type=["null", "string"], title="Phone", description="The company's phone number."),
        "host_system": Param("qbo", type="string", enum=["qbo", "servicetrade"], title="Host system",
                             values_display={"qbo": "QuickBooks Online", "servicetrade": "ServiceTrade"},
                             description="qbo: the company authorizes QuickBooks from TrustFile afterwards. "
                                         "servicetrade: its login is the Airflow connection below."),
        "host_connection_id": Param(None, type=["null", "string"], title="ServiceTrade login (Airflow connection)",
                                    description="ServiceTrade only: the Airflow connection (type servicetrade) "
                                                "holding the company's ServiceTrade login; empty: "
                                                "servicetrade_default."),
    },
)
def trustfile_provision():
    @task
    def register_connection(**context) -> str:
        from integrations.trustfile.provisioning import register_task

        return register_task(context)

    @task
    def sign_up_company(connection_id: str, **context) -> str:
        from integrations.trustfile.provisioning import sign_up_task

        return sign_up_task(connection_id, context)

    sign_up_company(register_connection())


trustfile_provision()
