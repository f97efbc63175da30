"""Manual: create, verify, re-enable or replace a ServiceTrade account's webhook subscription."""
from __future__ import annotations

from airflow.sdk import Param, dag, task

from notifiers.on_call import OnCallNotifier
from operators.dag_defaults import START_DATE, default_args

DOC = """
### servicetrade_webhook_subscription

Trigger it by hand: *account* (the Airflow connection id of a ServiceTrade connection), *receiver URL* (the base
URL ServiceTrade calls, default `SERVICETRADE_WEBHOOK_URL`; deliveries go to `<receiver URL>/<account>/<secret>`)
and *rotate secret*.

`check` refuses a bad form, a missing connection or one of another type at once (no retry, nothing called,
nothing written). `ensure` lists the account's subscriptions: ours (under `<receiver URL>/<account>/`, or carrying
our current or previous secret) enabled with our secret → **verified**; disabled → **re-enabled**; none, several,
a wrong secret, a new receiver URL or *rotate secret* → **subscribed**: a new secret (its hash stored before the
POST, the old one still accepted until the old subscription is deleted), one POST, every other subscription of
ours deleted. The secret is never logged or returned: URLs show `***` in its place. Runbook:
`docs/integrations/servicetrade.md`.
"""


@dag(
    dag_id="servicetrade_webhook_subscription",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["servicetrade", "webhooks", "manual"],
    doc_md=DOC,
    default_args=default_args(owner="integrations", retries=1),
    on_failure_callback=OnCallNotifier(),
    params={
        "account": Param("servicetrade_default", type="string", minLength=1, title="Account",
                         description="The Airflow connection id of the ServiceTrade account (type servicetrade)."),
        "receiver_url": Param(None, type=["null", "string"],
                              title="Receiver URL",
                              description="Base URL ServiceTrade calls, e.g. "
                                          "https://airflow.example.com/servicetrade-webhooks; empty: the "
                                          "SERVICETRADE_WEBHOOK_URL of the worker."),
        "rotate_secret": Param(False, type="boolean", title="Rotate secret",
                               description="Replace the subscription with one under a new secret."),
    },
)
def servicetrade_webhook_subscription():
    @task
    def check(**context) -> dict:
        from integrations.servicetrade.net_tasks import check_subscription

        return check_subscription(context)

    @task
    def ensure(checked: dict, **context) -> dict:
        from integrations.servicetrade.net_tasks import ensure_subscription

        return ensure_subscription(checked, context)

    ensure(check())


servicetrade_webhook_subscription()
