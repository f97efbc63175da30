"""trustfile_provision end to end: the DAG against the TrustFile sandbox and a real PostgreSQL."""
from __future__ import annotations

import json
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from cryptography.fernet import Fernet

from sandbox import trustfile as tf_sandbox
from tests.task_logs import first_error, task_log


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


def test_a_servicetrade_company_is_authorized_by_naming_its_airflow_connection(provisioning, monkeypatch):
    from etl.encryption import decrypt
    from integrations.trustfile.provisioning import register

    monkeypatch.setenv("AIRFLOW_CONN_SERVICETRADE_FIELD_CO", json.dumps({"conn_type": "servicetrade",
                                                                          "login": "field", "password": "pw"}))

    connection_id = register({"email": "field@service.example", "company_name": "Field Co",
                              "host_system": "servicetrade", "host_connection_id": "servicetrade_field_co"})
    system, identifier, sealed = provisioning.execute(
        "SELECT host_system, host_identifier, host_credentials FROM trustfile.connections WHERE connection_id = %s",
        (connection_id,)).fetchone()
    assert (system, identifier) == ("servicetrade", "servicetrade_field_co")
    assert json.loads(decrypt(sealed)) == {"airflow_conn_id": "servicetrade_field_co"}


def provision(params: dict) -> str:
    """What one trustfile_provision run does: its two tasks, in order."""
    from integrations.trustfile.provisioning import register, sign_up

    return sign_up(register(params), params)


def at_once(count: int, work) -> list:
    """`work(i)` in `count` threads released together; each result, or the exception it raised."""
    barrier = threading.Barrier(count)

    def run(i: int):
        barrier.wait()
        return work(i)

    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(run, i) for i in range(count)]
    outcomes = []
    for future in futures:
        try:
            outcomes.append(future.result())
        except Exception as exc:   # noqa: BLE001 - the outcome under test
            outcomes.append(exc)
    return outcomes


def test_ten_parallel_registrations_of_one_email_make_one_connection(provisioning):
    """Ten at once, in five rounds (one round alone does not always hit the race)."""
    from integrations.trustfile.provisioning import register

    for round_ in range(5):
        emails = [f"race{round_}@acme.example", f"Race{round_}@Acme.example"]
        outcomes = at_once(10, lambda i, emails=emails: register({"email": emails[i % 2], "company_name": "Race"}))
        assert [o for o in outcomes if isinstance(o, Exception)] == []
        assert len(set(outcomes)) == 1
        assert provisioning.execute("SELECT count(*), min(provisioning_state) FROM trustfile.connections "
                                    "WHERE lower(signup_email) = %s", (emails[0],)).fetchone() == (1, "signing_up")


def test_five_parallel_provisions_of_one_email_sign_up_once_and_end_syncable(provisioning, sandbox):
    """Each run waits for the one signing the email up, then finds its token: none fails, none signs up again."""
    from etl.encryption import decrypt
    from hooks.trustfile import TrustFileHook

    sandbox.faults("trustfile", latency_ms=300, only_path="/v4/company")    # a slow TrustFile widens the race
    params = {"email": "five@acme.example", "company_name": "Five Co"}
    outcomes = at_once(5, lambda _: provision(params))
    assert sorted(map(str, outcomes)) == ["already provisioned"] * 4 + ["provisioned"]
    assert signups(sandbox) == 1
    connection_id, _, _, provisioned, message, token = state(provisioning, "five@acme.example")
    assert (provisioned, message) == ("provisioned", "signed up; waiting for TrustFile to enable it")
    assert TrustFileHook().get_company(decrypt(token))["name"] == "Five Co"


def test_provisioning_states_only_move_forward_and_a_token_means_provisioned(provisioning):
    from etl.encryption import encrypt
    from integrations.trustfile import signup
    from integrations.trustfile.provisioning import register

    failed = register({"email": "fails@acme.example", "company_name": "Fails Co"})
    signup.record_signup_failure(provisioning, failed, "HTTP 503")
    signup.record_signup_failure(provisioning, failed, "HTTP 400: companyZip")    # a later reason replaces it
    assert state(provisioning, "fails@acme.example")[3:5] == ("signup_failed", "signup failed: HTTP 400: companyZip")

    done = register({"email": "done@acme.example", "company_name": "Done Co"})
    assert signup.record_signup(provisioning, done, encrypt("company-token-1")) is True
    signup.record_signup_failure(provisioning, done, "a stale failure of a slower run")
    assert signup.record_signup(provisioning, done, encrypt("company-token-2")) is False   # never replaced
    row = state(provisioning, "done@acme.example")
    assert row[3:5] == ("provisioned", "signed up; waiting for TrustFile to enable it")
    with pytest.raises(psycopg.errors.CheckViolation, match="company_token_means_syncable"):
        with provisioning.transaction():
            provisioning.execute("UPDATE trustfile.connections SET provisioning_state = 'signup_failed' "
                                 "WHERE connection_id = %s", (done,))
    assert register({"email": "done@acme.example", "company_name": "Done Co"}) == done
    assert state(provisioning, "done@acme.example")[3] == "provisioned"


def test_the_migration_repairs_a_connection_left_failed_with_a_token(empty_db, tmp_path):
    """What the race left behind before the fix: `signup_failed` with a company token, never synced."""
    from etl import migrate
    from etl.db import connect

    for path in migrate.discover():
        if path.version <= 5:
            shutil.copy(path.path, tmp_path / path.path.name)
    with connect(empty_db, autocommit=True) as fresh:
        migrate.migrate(fresh, Path(tmp_path))
        fresh.execute("INSERT INTO trustfile.connections (connection_id, signup_email, provisioning_state, "
                      "status_message, company_token) VALUES ('lost-race', 'lost@race.example', 'signup_failed', "
                      "'signup failed: TrustFile already has a user', 'sealed-token')")
        migrate.migrate(fresh)
        assert fresh.execute("SELECT provisioning_state, status_message FROM trustfile.connections "
                             "WHERE connection_id = 'lost-race'").fetchone() == (
            "provisioned", "signed up; waiting for TrustFile to enable it")


@pytest.mark.parametrize("answer", [*tf_sandbox.UNKNOWN_EMAIL_FORMS, "unavailable"])
def test_the_email_lookup_never_fails_a_provisioning_alone(provisioning, sandbox, monkeypatch, answer):
    """Its answer for an unknown email is undocumented; whatever it says, or if it cannot say, we sign up
    (TrustFile itself refuses a second signup of one email)."""
    from hooks.trustfile import TrustFileHook

    monkeypatch.setattr(TrustFileHook, "backoff_initial", 0.01)
    monkeypatch.setattr(TrustFileHook, "backoff_max", 0.05)
    if answer == "unavailable":
        sandbox.faults("trustfile", burst_5xx=TrustFileHook.max_attempts, only_path="/v4/company")
    else:
        sandbox.control("trustfile", unknown_email=answer)
    email = f"lookup-{answer}@acme.example"
    assert provision({"email": email, "company_name": "Lookup Co"}) == "provisioned"
    assert signups(sandbox) == 1 and state(provisioning, email)[3] == "provisioned"


# ---- the form, the summary and what the run shows (issue 10, point 2) ------------------------------

def run_provision(conf: dict):
    """A trustfile_provision run: (the DagRun, its log events)."""
    from airflow.dag_processing.dagbag import DagBag

    with task_log() as events:
        dag_run = DagBag(dag_folder=str(Path(__file__).resolve().parents[3] / "dags")).dags[
            "trustfile_provision"].test(run_conf=conf)
    return dag_run, events


def test_the_provision_run_shows_the_new_connection_id_in_its_log_and_as_an_xcom(airflow_db, provisioning):
    dag_run, events = run_provision({"email": "owner@acme.example", "company_name": "Acme Tools", "state": "CA",
                                     "zip": "93722"})
    assert str(dag_run.state) == "success"
    connection_id = state(provisioning, "owner@acme.example")[0]
    tis = {ti.task_id: ti for ti in dag_run.get_task_instances()}
    for task_id in ("register_connection", "sign_up_company"):
        assert tis[task_id].xcom_pull(task_ids=task_id, key="connection_id") == connection_id
    assert (f"TrustFile connection {connection_id} (Acme Tools, owner@acme.example): provisioned; TrustFile enables "
            f"it with PUT /extractor/connections/{connection_id}") in [text for _, text in events]


def test_a_signup_no_retry_can_fix_fails_at_once_with_the_summary_first(airflow_db, provisioning, sandbox):
    from hooks.trustfile import TrustFileHook
    TrustFileHook().signup(email="taken@acme.example", company_name="Elsewhere Inc")   # the user exists already
    dag_run, events = run_provision({"email": "taken@acme.example", "company_name": "Taken Co"})
    states = {ti.task_id: (str(ti.state), ti.try_number) for ti in dag_run.get_task_instances()}
    assert states["sign_up_company"] == ("failed", 1)                     # ProvisioningError: no retry
    connection_id = state(provisioning, "taken@acme.example")[0]
    summary = first_error(events, "sign_up_company")
    assert summary.startswith("[integrations] trustfile_provision.sign_up_company failed on try 1 (not retried")
    assert f"Scope: TrustFile connection {connection_id} (Taken Co)" in summary
    assert "Next step: Find the company in TrustFile and map it to the connection by hand" in summary
    assert "/runbook.md#data-refused-by-the-vendor" in summary


@pytest.mark.parametrize(("conf", "refusal"), [
    ({"company_name": "No Email Co"}, "the form needs an email address (the TrustFile user to create)"),
    ({"email": "owner@blank.example", "company_name": "  "}, "the form needs a company name"),
    ({"email": "field@service.example", "company_name": "Field Co", "host_system": "servicetrade",
      "host_connection_id": "servicetrade_nowhere"},
     "no Airflow connection 'servicetrade_nowhere' of type servicetrade"),
    ({"email": "owner@qbo.example", "company_name": "Qbo Co", "host_connection_id": "servicetrade_default"},
     "host_connection_id is for host_system servicetrade only"),
])
def test_a_form_the_first_task_refuses_fails_at_once_and_writes_nothing(airflow_db, provisioning, conf, refusal):
    dag_run, events = run_provision(conf)
    states = {ti.task_id: (str(ti.state), ti.try_number) for ti in dag_run.get_task_instances()}
    assert states["register_connection"] == ("failed", 1) and states["sign_up_company"][0] == "upstream_failed"
    summary = first_error(events, "register_connection")
    assert refusal in summary and "/runbook.md#bad-input" in summary
    assert provisioning.execute("SELECT count(*) FROM trustfile.connections").fetchone()[0] == 0


def test_a_malformed_email_or_zip_is_refused_by_the_form_itself(airflow_db, provisioning):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.exceptions import ParamValidationError

    dag = DagBag(dag_folder=str(Path(__file__).resolve().parents[3] / "dags")).dags["trustfile_provision"]
    for conf, refused in (({"email": "owner.acme.example", "company_name": "A"}, "email"),
                          ({"email": "o@acme.example", "company_name": "A", "zip": "9372"}, "zip"),
                          ({"email": "o@acme.example", "company_name": "A", "state": "Calif."}, "state")):
        with pytest.raises(ParamValidationError, match=f"param {refused}"):
            dag.test(run_conf=conf)
