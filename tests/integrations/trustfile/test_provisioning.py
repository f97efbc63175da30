"""trustfile_provision end to end: the DAG against the TrustFile sandbox and a real PostgreSQL."""
from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet

from sandbox import trustfile as tf_sandbox


@pytest.fixture
def provisioning(sandbox, db_url, conn, monkeypatch):
    conn.execute("TRUNCATE trustfile.connections CASCADE")
    conn.commit()
    monkeypatch.setenv("INTEGRATIONS_FERNET_KEY", Fernet.generate_key().decode())
    monkeypatch.setenv("AIRFLOW_CONN_TRUSTFILE_DEFAULT", json.dumps(
        {"conn_type": "trustfile", "host": f"{sandbox.url}/trustfile", "password": tf_sandbox.TOKEN,
         "extra": {"provisioning_url": f"{sandbox.url}/trustfile"}}))
    return conn


def signups(sandbox) -> int:
    return len([r for r in sandbox.requests("trustfile") if r["path"].endswith("/v4/company/signup")])


def state(conn, email):
    return conn.execute("SELECT connection_id, enabled, start_date, provisioning_state, status_message, company_token "
                        "FROM trustfile.connections WHERE signup_email = %s", (email,)).fetchone()


def test_provisioning_signs_up_once_and_stores_the_token(airflow_db, provisioning, sandbox):
    from airflow.dag_processing.dagbag import DagBag

    from etl.encryption import decrypt
    from hooks.trustfile import TrustFileHook

    dag = DagBag().get_dag("trustfile_provision")
    conf = {"email": "owner@acme.example", "company_name": "Acme Tools", "state": "CA", "zip": "93722"}
    assert str(dag.test(run_conf=conf).state) == "success"
    connection_id, enabled, start_date, provisioned, message, token = state(provisioning, "owner@acme.example")
    assert (enabled, start_date, provisioned) == (False, None, "provisioned")
    assert TrustFileHook().get_company(decrypt(token))["name"] == "Acme Tools"

    assert str(dag.test(run_conf=conf).state) == "success"      # re-triggered: nothing new
    assert signups(sandbox) == 1 and state(provisioning, "owner@acme.example")[0] == connection_id


def test_a_refused_signup_is_visible_and_a_later_try_succeeds(provisioning, sandbox):
    from hooks.vendor_http import VendorApiError
    from integrations.trustfile.provisioning import register, sign_up

    params = {"email": "retry@acme.example", "company_name": "Retry Co"}
    connection_id = register(params)
    sandbox.faults("trustfile", burst_5xx=1, only_path="/signup")
    with pytest.raises(VendorApiError, match="HTTP 503"):
        sign_up(connection_id, params)
    row = state(provisioning, "retry@acme.example")
    assert row[3] == "signup_failed" and row[4].startswith("signup failed: TrustFile POST")
    assert register(params) == connection_id                     # found again, not made twice
    assert sign_up(connection_id, params) == "provisioned"


def test_an_answer_lost_after_the_account_was_made_is_never_signed_up_again(provisioning, sandbox):
    from hooks.vendor_http import VendorApiError
    from integrations.trustfile.provisioning import ProvisioningError, register, sign_up

    params = {"email": "lost@acme.example", "company_name": "Lost Co"}
    connection_id = register(params)
    sandbox.faults("trustfile", truncate_next=1, only_path="/signup")   # the account is made, its answer lost
    with pytest.raises(VendorApiError):
        sign_up(connection_id, params)
    with pytest.raises(ProvisioningError, match="do not sign up again"):
        sign_up(connection_id, params)
    assert signups(sandbox) == 1 and state(provisioning, "lost@acme.example")[3] == "signup_failed"


def test_a_servicetrade_company_is_authorized_by_naming_its_airflow_connection(provisioning):
    from etl.encryption import decrypt
    from integrations.trustfile.provisioning import register

    connection_id = register({"email": "field@service.example", "company_name": "Field Co",
                              "host_system": "servicetrade", "host_connection_id": "servicetrade_field_co"})
    system, identifier, sealed = provisioning.execute(
        "SELECT host_system, host_identifier, host_credentials FROM trustfile.connections WHERE connection_id = %s",
        (connection_id,)).fetchone()
    assert (system, identifier) == ("servicetrade", "servicetrade_field_co")
    assert json.loads(decrypt(sealed)) == {"airflow_conn_id": "servicetrade_field_co"}
