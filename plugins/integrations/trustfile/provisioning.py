"""Task bodies of the trustfile_provision DAG: register the connection, then sign the company up.

Signing up creates an account at TrustFile, so it must never happen twice for one company: the
connection row is keyed by the email, one run at a time signs an email up (the others wait, then find
its company token, which ends the work), and before calling signup the task asks TrustFile whether the
email already exists. A retry after an ambiguous failure therefore stops with a clear message instead
of creating a second account. That lookup only guards the signup: when it cannot say, the signup goes
ahead (TrustFile refuses a second signup of one email itself).

The first task checks what the form cannot (a company name that is not blank, the ServiceTrade login's
Airflow connection) before it writes anything. Whatever no retry can change fails at once
(ProvisioningError is an AirflowFailException), and every failure logs the on-call summary first.
"""
from __future__ import annotations

import logging
import re
import uuid

from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

from etl import db
from etl.encryption import encrypt
from etl.ledger import redact_text
from integrations.trustfile import signup
from notifiers.failures import BadInput, Scope, reported

log = logging.getLogger(__name__)
NAMESPACE = uuid.UUID("6f1d7a35-2c56-4d0c-9a8e-3c1b4f0e9b21")   # our connection ids: uuid5(namespace, email)
ADDRESS_FIELDS = {"line1": "companyLine1", "city": "companyCity", "state": "companyState", "zip": "companyZip",
                  "phone": "companyPhone"}
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
SCOPE = "TrustFile connection"
HOST_SYSTEMS = ("qbo", "servicetrade")
GONE = ("Someone deleted the connection (DELETE /extractor/connections): trigger trustfile_provision again if the "
        "company is still to be signed up.")
REFUSED = ("Read TrustFile's answer in the cause: correct the field a 400 names and trigger again with the same email. "
           "If it says TrustFile knows the email now, find the company in TrustFile and map it by hand.")
MAP_BY_HAND = ("Find the company in TrustFile and map it to the connection by hand (docs/integrations/trustfile.md, "
               "Provisioning); triggering again will not help.")


class ProvisioningError(AirflowFailException):
    """The company cannot be signed up as asked, and no retry changes that: the task fails at once. The
    message says what happened; `next_step` what on-call does."""

    def __init__(self, message: str, *, next_step: str | None = None, on_call_class: str = "bad_input",
                 system: str | None = None):
        super().__init__(message)
        self.next_step, self.on_call_class, self.system = next_step, on_call_class, system


def register_task(context) -> str:
    """The first task: check the form, create (or find) the connection; its id is an XCom `connection_id`."""
    params = context["params"]
    scope = Scope(SCOPE, "(not created)", (params.get("company_name") or "").strip() or None)
    with reported(context, scope):
        connection_id = register(params)
    context["ti"].xcom_push(key="connection_id", value=connection_id)
    return connection_id


def sign_up_task(connection_id: str, context) -> str:
    """The second task: sign the company up; says which connection TrustFile is to enable."""
    params = context["params"]
    company, email = (params.get("company_name") or "").strip(), (params.get("email") or "").strip()
    with reported(context, Scope(SCOPE, connection_id, company)):
        outcome = sign_up(connection_id, params)
    context["ti"].xcom_push(key="connection_id", value=connection_id)
    log.info("%s %s (%s, %s): %s; TrustFile enables it with PUT /extractor/connections/%s", SCOPE, connection_id,
             company, email, outcome, connection_id)
    return outcome


def check_form(params: dict) -> None:
    """What the form cannot check: a blank value, a ServiceTrade login's Airflow connection. Writes nothing."""
    email = (params.get("email") or "").strip()
    if not email:
        raise BadInput("the form needs an email address (the TrustFile user to create)")
    if not EMAIL.match(email):
        raise BadInput(f"email {email!r} is not an email address, e.g. owner@company.example")
    if not (params.get("company_name") or "").strip():
        raise BadInput("the form needs a company name")
    host_system = params.get("host_system") or "qbo"
    if host_system not in HOST_SYSTEMS:
        raise BadInput(f"host_system {host_system!r} is not one of {', '.join(HOST_SYSTEMS)}")
    host_connection_id = params.get("host_connection_id")
    if host_system != "servicetrade":
        if host_connection_id:
            raise BadInput("host_connection_id is for host_system servicetrade only: leave it empty for qbo")
        return
    _check_servicetrade_login(host_connection_id or "servicetrade_default")


def _check_servicetrade_login(conn_id: str) -> None:
    from airflow.sdk import BaseHook

    try:
        found = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        found = None
    if found is None or found.conn_type != "servicetrade":
        raise BadInput(f"no Airflow connection {conn_id!r} of type servicetrade: create it (Admin > Connections) "
                       "with the company's ServiceTrade login, or name another one in host_connection_id")


def register(params: dict) -> str:
    check_form(params)
    email, company = params["email"].strip(), params["company_name"].strip()
    connection_id = str(uuid.uuid5(NAMESPACE, email.lower()))
    with db.connect() as conn:
        connection_id, state = signup.register_signup(conn, connection_id, email, company,
                                                           params.get("host_system") or "qbo",
                                                           params.get("host_connection_id"))
    log.info("connection %s for %s is %s", connection_id, email, state)
    return connection_id


def sign_up(connection_id: str, params: dict) -> str:
    with db.connect() as conn:
        row = conn.execute("SELECT signup_email FROM trustfile.connections WHERE connection_id = %s",
                           (connection_id,)).fetchone()
        conn.commit()
        if row is None:
            raise ProvisioningError(f"connection {connection_id} disappeared before its signup", next_step=GONE)
        with signup.signup_lock(conn, row[0]):
            return _sign_up_alone(conn, connection_id, row[0], params)


def _sign_up_alone(conn, connection_id: str, email: str, params: dict) -> str:
    """The signup itself, under the email's lock: no other run is between our read and our write."""
    from hooks.trustfile import TrustFileHook
    from hooks.vendor_http import VendorApiError

    row = conn.execute("SELECT company_token IS NOT NULL, company_name FROM trustfile.connections "
                       "WHERE connection_id = %s", (connection_id,)).fetchone()
    conn.commit()
    if row is None:
        raise ProvisioningError(f"connection {connection_id} disappeared before its signup", next_step=GONE)
    already, company = row
    if already:
        log.info("connection %s is already signed up; nothing to do", connection_id)
        return "already provisioned"
    hook = TrustFileHook()
    exists = hook.user_exists(email)
    if exists:
        message = (f"TrustFile already has a user {email} but we hold no company token for connection "
                   f"{connection_id}: find the company in TrustFile and map it by hand, do not sign up again")
        signup.record_signup_failure(conn, connection_id, message)
        raise ProvisioningError(message, next_step=MAP_BY_HAND, on_call_class="data_refused", system="TrustFile")
    if exists is None:
        log.warning("TrustFile could not say whether %s exists; signing up anyway (it refuses a known email)",
                    email)
    fields = {api: params[name] for name, api in ADDRESS_FIELDS.items() if params.get(name)}
    try:
        token = hook.signup(email=email, company_name=company, **fields)
    except VendorApiError as exc:
        signup.record_signup_failure(conn, connection_id, redact_text(str(exc)))
        if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (401, 403, 429):
            raise ProvisioningError(f"TrustFile refused the signup: {redact_text(str(exc))}", next_step=REFUSED,
                                    on_call_class="data_refused", system="TrustFile") from exc
        raise
    if not signup.record_signup(conn, connection_id, encrypt(token)):
        raise ProvisioningError(
            f"TrustFile signed {email} up, but connection {connection_id} was deleted or given a company token "
            "meanwhile, so the new company token was not stored: find the company in TrustFile and map it by hand",
            next_step=MAP_BY_HAND)
    log.info("connection %s signed up to TrustFile", connection_id)
    return "provisioned"
