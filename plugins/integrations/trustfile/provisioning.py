"""Task bodies of the trustfile_provision DAG: register the connection, then sign the company up.

Signing up creates an account at TrustFile, so it must never happen twice for one company: the
connection row is keyed by the email, one run at a time signs an email up (the others wait, then find
its company token, which ends the work), and before calling signup the task asks TrustFile whether the
email already exists. A retry after an ambiguous failure therefore stops with a clear message instead
of creating a second account. That lookup only guards the signup: when it cannot say, the signup goes
ahead (TrustFile refuses a second signup of one email itself).
"""
from __future__ import annotations

import logging
import uuid

from etl import db
from etl.encryption import encrypt
from etl.ledger import redact_text
from integrations.trustfile import signup

log = logging.getLogger(__name__)
NAMESPACE = uuid.UUID("6f1d7a35-2c56-4d0c-9a8e-3c1b4f0e9b21")   # our connection ids: uuid5(namespace, email)
ADDRESS_FIELDS = {"line1": "companyLine1", "city": "companyCity", "state": "companyState", "zip": "companyZip",
                  "phone": "companyPhone"}


class ProvisioningError(RuntimeError):
    """The company cannot be signed up as asked; the message says what on-call does."""


def register(params: dict) -> str:
    email = (params.get("email") or "").strip()
    company = (params.get("company_name") or "").strip()
    if "@" not in email or not company:
        raise ProvisioningError("provisioning needs an email address and a company name")
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
            raise ProvisioningError(f"connection {connection_id} disappeared before its signup")
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
        raise ProvisioningError(f"connection {connection_id} disappeared before its signup")
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
        raise ProvisioningError(message)
    if exists is None:
        log.warning("TrustFile could not say whether %s exists; signing up anyway (it refuses a known email)",
                    email)
    fields = {api: params[name] for name, api in ADDRESS_FIELDS.items() if params.get(name)}
    try:
        token = hook.signup(email=email, company_name=company, **fields)
    except VendorApiError as exc:
        signup.record_signup_failure(conn, connection_id, redact_text(str(exc)))
        raise
    if not signup.record_signup(conn, connection_id, encrypt(token)):
        raise ProvisioningError(
            f"TrustFile signed {email} up, but connection {connection_id} was deleted or given a company token "
            "meanwhile, so the new company token was not stored: find the company in TrustFile and map it by hand")
    log.info("connection %s signed up to TrustFile", connection_id)
    return "provisioned"
