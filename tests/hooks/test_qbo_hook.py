"""QBO hook against the sandbox: rotating refresh tokens shared through PostgreSQL, paging, errors."""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from hooks.qbo import QboHook
from hooks.vendor_http import VendorApiError
from sandbox import qbo as qbo_sandbox

REALM = qbo_sandbox.REALMS[0]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def qbo_env(sandbox, db_url, conn, monkeypatch):
    conn.execute("TRUNCATE etl.oauth_tokens")
    conn.commit()
    monkeypatch.setenv("INTEGRATIONS_FERNET_KEY", Fernet.generate_key().decode())

    def connection(conn_id: str, *, secret: str = qbo_sandbox.CLIENT_SECRET, realm: str = REALM) -> dict:
        value = {"conn_type": "qbo", "host": f"{sandbox.url}/qbo", "login": qbo_sandbox.CLIENT_ID, "password": secret,
                 "extra": {"realm_id": realm, "refresh_token": qbo_sandbox.INITIAL_REFRESH_TOKENS[realm],
                           "token_url": f"{sandbox.url}/qbo/oauth2/v1/tokens/bearer"}}
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(value))
        return value

    connection("qbo_default")
    monkeypatch.setattr(QboHook, "backoff_initial", 0.01)
    monkeypatch.setattr(QboHook, "backoff_max", 0.05)
    monkeypatch.setattr(QboHook, "throttle_wait_seconds", 0.2)
    return connection


def api_calls(sandbox, endpoint: str) -> list[dict]:
    return [r for r in sandbox.requests("qbo") if r["path"].endswith(endpoint)]


def test_query_pages_return_every_row_once_one_page_at_a_time(qbo_env, sandbox):
    rows = QboHook().query("SalesReceipt", page_size=15)
    first = next(rows)
    assert len(api_calls(sandbox, "/query")) == 1
    ids = [first["Id"]] + [row["Id"] for row in rows]
    assert len(ids) == len(set(ids)) == sandbox.state("qbo")["records"][REALM]["SalesReceipt"] == 40
    assert len(api_calls(sandbox, "/query")) == 3   # 15 + 15 + 10: the short page ends it
    assert all("minorversion=75" in r["query"] for r in api_calls(sandbox, "/query"))


def test_changed_since_is_inclusive_and_bounded(qbo_env):
    hook = QboHook()
    everything = list(hook.query("Invoice"))
    cut = dt.datetime.fromisoformat(everything[10]["MetaData"]["LastUpdatedTime"])
    end = dt.datetime.fromisoformat(everything[20]["MetaData"]["LastUpdatedTime"])
    assert [r["Id"] for r in hook.changed_since("Invoice", cut, end)] == [r["Id"] for r in everything[10:20]]


def test_refresh_token_rotates_and_is_shared_through_the_database(qbo_env, sandbox, conn):
    QboHook().query("Payment", page_size=5).__next__()
    assert sandbox.state("qbo")["refreshes"] == 1
    stored = conn.execute("SELECT rotations, refresh_token FROM etl.oauth_tokens WHERE scope = %s", (REALM,)).fetchone()
    assert stored[0] == 1 and qbo_sandbox.INITIAL_REFRESH_TOKENS[REALM].encode() not in bytes(stored[1])
    next(QboHook().query("Payment", page_size=5))      # another worker: reuses the stored access token
    assert sandbox.state("qbo")["refreshes"] == 1


def test_expired_access_token_answers_401_then_one_refresh(qbo_env, sandbox):
    hook = QboHook()
    next(hook.query("Payment"))
    sandbox.control("qbo", advance_clock_seconds=3601)
    assert next(hook.query("Payment"))["Id"]
    assert sandbox.state("qbo")["refreshes"] == 2
    assert [r["status"] for r in api_calls(sandbox, "/query")][-2:] == [401, 200]


def test_two_concurrent_refreshers_refresh_once_and_both_work(qbo_env, sandbox):
    results, errors = [], []

    def work():
        try:
            results.append(next(QboHook().query("CreditMemo"))["Id"])
        except Exception as exc:  # noqa: BLE001 - thread helper, reported by the assertion  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == [] and len(results) == 4
    assert sandbox.state("qbo")["refreshes"] == 1


KILL_AFTER_REFRESH = """
import os, signal
from hooks.qbo import QboHook
QboHook().check_credentials()          # refreshes, commits the rotated token, makes one call
os.kill(os.getpid(), signal.SIGKILL)   # and dies before doing anything else
"""


def test_a_process_killed_right_after_a_refresh_leaves_a_working_token(qbo_env, sandbox):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)])}
    child = subprocess.run([sys.executable, "-c", KILL_AFTER_REFRESH], env=env, timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert sandbox.state("qbo")["refreshes"] == 1
    sandbox.control("qbo", advance_clock_seconds=3601)  # force the next worker to refresh with the stored token
    assert next(QboHook().query("RefundReceipt"))["Id"]
    assert sandbox.state("qbo")["refreshes"] == 2


def test_the_rotated_out_refresh_token_is_dead(qbo_env, sandbox):
    QboHook().check_credentials()
    with pytest.raises(VendorApiError, match="invalid_grant") as raised:
        QboHook()._refresh(qbo_sandbox.INITIAL_REFRESH_TOKENS[REALM])
    assert "re-authorize the company" in str(raised.value)


def test_throttling_xml_body_is_parsed_and_retried(qbo_env, sandbox, caplog):
    hook = QboHook()
    hook.check_credentials()
    sandbox.faults("qbo", throttle_next=2)
    with caplog.at_level(logging.WARNING):
        assert next(hook.query("Payment"))["Id"]
    assert "ThrottleExceeded" in caplog.text
    assert [r["status"] for r in api_calls(sandbox, "/query")][-3:] == [429, 429, 200]


def test_5xx_burst_recovers_and_a_fault_400_is_not_retried(qbo_env, sandbox):
    hook = QboHook()
    hook.check_credentials()
    sandbox.faults("qbo", burst_5xx=2)
    assert next(hook.query("Invoice"))["Id"]
    with pytest.raises(VendorApiError, match=r"HTTP 400: ValidationFault: 4001 Invalid query"):
        list(hook.query("Invoice", where="TotalAmt > '5'"))
    assert [r["status"] for r in api_calls(sandbox, "/query")][-1] == 400
    assert [r["status"] for r in api_calls(sandbox, "/query")].count(400) == 1


def test_cdc_returns_changes_within_30_days(qbo_env, sandbox):
    sandbox.control("qbo", touch=[{"realm": REALM, "entity": "Invoice", "id": "141", "fields": {"PrivateNote": "x"}}])
    answer = QboHook().cdc(["Invoice", "Payment"], dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1))
    assert [r["Id"] for r in answer.changes["Invoice"]] == ["141"] and answer.changes["Payment"] == []
    assert answer.time and not answer.capped
    with pytest.raises(VendorApiError, match="within the last 30 days"):
        QboHook().cdc(["Invoice"], dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=31))


def test_connection_test_true_for_sandbox_false_for_bad_secret(qbo_env):
    assert QboHook().test_connection()[0] is True
    qbo_env("qbo_bad", secret="wrong-client-secret-value", realm=qbo_sandbox.REALMS[1])
    ok, message = QboHook("qbo_bad").test_connection()
    assert not ok and "HTTP 401" in message and "invalid_client" in message and "qbo_bad" in message


def test_no_secret_or_token_in_debug_logs(qbo_env, sandbox, conn, caplog, capfd):
    from etl.encryption import decrypt

    caplog.set_level(logging.DEBUG)
    hook = QboHook()
    list(hook.query("Payment", page_size=20))
    sandbox.control("qbo", advance_clock_seconds=3601)
    next(hook.query("Payment"))
    qbo_env("qbo_bad", secret="wrong-client-secret-value", realm=qbo_sandbox.REALMS[1])
    QboHook("qbo_bad").test_connection()
    refresh, access = conn.execute("SELECT refresh_token, access_token FROM etl.oauth_tokens WHERE scope = %s",
                                   (REALM,)).fetchone()
    output = caplog.text + "".join(capfd.readouterr())
    assert "/qbo/v3/company/" in output
    for secret in (qbo_sandbox.CLIENT_SECRET, "wrong-client-secret-value", qbo_sandbox.INITIAL_REFRESH_TOKENS[REALM],
                   decrypt(refresh), decrypt(access)):
        assert secret not in output


def test_a_truncated_body_is_retried(qbo_env, sandbox):
    hook = QboHook()
    hook.check_credentials()
    sandbox.faults("qbo", truncate_next=1)
    assert len(list(hook.query("Payment"))) == 40


def test_the_older_403_throttle_answer_is_retried_too(qbo_env, sandbox):
    hook = QboHook()
    hook.check_credentials()
    sandbox.control("qbo", throttle_status=403)
    sandbox.faults("qbo", throttle_next=1)
    assert next(hook.query("Payment"))["Id"]
    assert [r["status"] for r in api_calls(sandbox, "/query")][-2:] == [403, 200]


def test_a_failure_between_the_refresh_and_its_commit_still_keeps_the_new_token(qbo_env, sandbox, conn):
    # The database refuses the first save of the rotated token (a trigger, not a mock): the refresh
    # has happened at the vendor, so the hook must still keep the new refresh token.
    conn.execute("CREATE SEQUENCE IF NOT EXISTS etl.fail_once")
    conn.execute("""CREATE OR REPLACE FUNCTION etl.fail_first_save() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN IF nextval('etl.fail_once') = 1 THEN RAISE EXCEPTION 'injected failure'; END IF;
                    RETURN NEW; END $$""")
    conn.execute("CREATE TRIGGER fail_first_save BEFORE UPDATE ON etl.oauth_tokens "
                 "FOR EACH ROW EXECUTE FUNCTION etl.fail_first_save()")
    conn.commit()
    try:
        with pytest.raises(Exception, match="injected failure"):
            QboHook().check_credentials()
        assert sandbox.state("qbo")["refreshes"] == 1
        sandbox.control("qbo", advance_clock_seconds=3601)
        assert next(QboHook().query("Invoice"))["Id"]      # refreshes with the token saved after the failure
        assert sandbox.state("qbo")["refreshes"] == 2
    finally:
        conn.execute("DROP TRIGGER fail_first_save ON etl.oauth_tokens")
        conn.execute("DROP FUNCTION etl.fail_first_save()")
        conn.execute("DROP SEQUENCE etl.fail_once")
        conn.commit()


def test_a_row_updated_during_a_scan_neither_hides_nor_repeats_another(qbo_env, sandbox, monkeypatch):
    import hooks.qbo as qbo_module

    monkeypatch.setattr(qbo_module, "PAGE_SIZE", 10)
    hook = QboHook()
    everything = [r["Id"] for r in hook.query("SalesReceipt")]
    rows = hook.changed_since("SalesReceipt", dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    first_page = [next(rows)["Id"] for _ in range(10)]
    # While the scan is between pages, an early row changes (its timestamp jumps to now).
    sandbox.control("qbo", touch=[{"realm": REALM, "entity": "SalesReceipt", "id": first_page[2],
                                   "fields": {"PrivateNote": "edited"}}])
    rest = [r["Id"] for r in rows]
    assert sorted(first_page + rest) == sorted(everything)   # every row exactly once


def test_changed_since_steps_through_a_timestamp_shared_by_more_than_a_page(qbo_env, sandbox, monkeypatch):
    import hooks.qbo as qbo_module

    monkeypatch.setattr(qbo_module, "PAGE_SIZE", 5)
    hook = QboHook()
    ids = [r["Id"] for r in hook.query("Payment")][:12]
    sandbox.control("qbo", touch=[{"realm": REALM, "entity": "Payment", "id": i, "fields": {}} for i in ids])
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    until = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=1)
    got = [r["Id"] for r in hook.changed_since("Payment", since, until)]
    assert sorted(got) == sorted(ids)


def test_the_oauth_app_alone_is_tested_without_a_company(qbo_env, sandbox, monkeypatch, conn):
    def app_only(conn_id: str, secret: str) -> None:
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(
            {"conn_type": "qbo", "host": f"{sandbox.url}/qbo", "login": qbo_sandbox.CLIENT_ID, "password": secret,
             "extra": {"token_url": f"{sandbox.url}/qbo/oauth2/v1/tokens/bearer"}}))

    app_only("qbo_app", qbo_sandbox.CLIENT_SECRET)
    app_only("qbo_app_bad", "wrong-client-secret-value")
    assert QboHook("qbo_app").test_connection()[0] is True
    ok, message = QboHook("qbo_app_bad").test_connection()
    assert not ok and "invalid_client" in message
    assert api_calls(sandbox, "/query") == [] and sandbox.state("qbo")["refreshes"] == 0
    assert conn.execute("SELECT count(*) FROM etl.oauth_tokens").fetchone()[0] == 0


# ---- the refresh under token-endpoint faults (issue 9, point 10) ------------------------------------

TOKEN_PATH = "/tokens/bearer"
FAULTS = {"dropped": {"drop_next": 1}, "truncated": {"truncate_next": 1}, "503": {"burst_5xx": 2},
          "429": {"throttle_next": 2}}


def token_calls(sandbox) -> list[int]:
    return [r["status"] for r in api_calls(sandbox, TOKEN_PATH)]


def test_the_sandbox_keeps_the_old_refresh_token_until_the_new_one_is_used_or_kills_it_at_once(qbo_env, sandbox):
    old = qbo_sandbox.INITIAL_REFRESH_TOKENS[REALM]
    sandbox.control("qbo", old_refresh_token="until_new_one_used")
    first = QboHook()._refresh(old)
    second = QboHook()._refresh(old)             # the answer to the first never arrived: the old one still works
    QboHook()._refresh(second.refresh_token)     # the new one is used: from now on the old one is dead
    with pytest.raises(VendorApiError, match="invalid_grant"):
        QboHook()._refresh(old)
    with pytest.raises(VendorApiError, match="invalid_grant"):
        QboHook()._refresh(first.refresh_token)  # the sibling of the token that was used is superseded too
    sandbox.control("qbo", old_refresh_token="dies_at_once")
    realm = qbo_sandbox.REALMS[1]
    QboHook()._refresh(qbo_sandbox.INITIAL_REFRESH_TOKENS[realm])
    with pytest.raises(VendorApiError, match="invalid_grant"):
        QboHook()._refresh(qbo_sandbox.INITIAL_REFRESH_TOKENS[realm])


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_refresh_that_got_no_usable_answer_is_retried_with_the_previous_token(qbo_env, sandbox, fault):
    sandbox.control("qbo", old_refresh_token="until_new_one_used")
    sandbox.faults("qbo", only_path=TOKEN_PATH, **FAULTS[fault])
    assert next(QboHook().query("Payment"))["Id"]
    assert token_calls(sandbox)[-1] == 200 and len(token_calls(sandbox)) >= 2
    sandbox.control("qbo", advance_clock_seconds=3601)    # the stored token is the one that works from now on
    assert next(QboHook().query("Invoice"))["Id"]


@pytest.mark.parametrize(("fault", "cause"), [("503", "server error"), ("429", "throttled"),
                                              ("dropped", "no complete answer")])
def test_a_token_endpoint_that_keeps_failing_is_named_as_the_cause_and_the_token_is_kept(qbo_env, sandbox, conn,
                                                                                         fault, cause):
    faults = {"503": {"burst_5xx": 50}, "429": {"throttle_next": 50}, "dropped": {"drop_next": 50}}[fault]
    sandbox.control("qbo", old_refresh_token="until_new_one_used")
    sandbox.faults("qbo", only_path=TOKEN_PATH, **faults)
    with pytest.raises(VendorApiError) as raised:
        QboHook().check_credentials()
    message = str(raised.value)
    assert cause in message and "client id/secret" not in message and "re-authorize" not in message
    assert len(token_calls(sandbox)) == QboHook.max_attempts
    assert qbo_sandbox.INITIAL_REFRESH_TOKENS[REALM] not in message
    sandbox.faults("qbo")
    assert QboHook().check_credentials() is None              # the previous token was kept, and still works


def test_a_lost_answer_where_the_old_token_dies_at_once_says_the_company_must_consent_again(qbo_env, sandbox):
    from hooks.qbo import RefreshTokenRefused

    sandbox.faults("qbo", only_path=TOKEN_PATH, drop_next=1)
    with pytest.raises(RefreshTokenRefused) as raised:
        QboHook().check_credentials()
    assert raised.value.status == 400 and "invalid_grant" in str(raised.value)
    assert "lost in transit" in str(raised.value) and "authorize" in str(raised.value)
    assert token_calls(sandbox) == [200, 400]


def test_an_invalid_client_is_not_retried_and_still_says_check_the_client(qbo_env, sandbox):
    qbo_env("qbo_bad", secret="wrong-client-secret-value", realm=qbo_sandbox.REALMS[1])
    with pytest.raises(VendorApiError, match="client id/secret"):
        QboHook("qbo_bad").check_credentials()
    assert token_calls(sandbox) == [401]


# ---- the token store on a database named by the caller (issue 9, point 9) ---------------------------

def test_the_token_store_can_be_a_database_given_by_url_without_the_airflow_connection(qbo_env, db_url, conn,
                                                                                         monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_INTEGRATIONS_DB")
    assert next(QboHook(conninfo=db_url).query("Payment"))["Id"]
    assert conn.execute("SELECT rotations FROM etl.oauth_tokens WHERE scope = %s", (REALM,)).fetchone() == (1,)


# ---- which company a consent's token is for (issue 9, point 2) ---------------------------------------

def test_an_access_token_reads_only_the_company_it_was_issued_for(qbo_env, sandbox):
    grant = QboHook()._refresh(qbo_sandbox.INITIAL_REFRESH_TOKENS[REALM])
    assert QboHook().token_grants_realm(grant.access_token, REALM) is True
    assert QboHook().token_grants_realm(grant.access_token, qbo_sandbox.REALMS[2]) is False
    statuses = [r["status"] for r in api_calls(sandbox, f"/companyinfo/{qbo_sandbox.REALMS[2]}")]
    assert statuses == [401]


# ---- a refresh holds the company's token row: its retries have a time budget ---------------------------------

def test_a_refresh_stops_retrying_when_its_time_budget_is_spent_and_the_row_lock_goes_with_it(qbo_env, sandbox,
                                                                                             monkeypatch):
    """Every worker of the company (and /health) waits for the row while the refresh retries: the retries stop
    before a wait would pass the budget, not after max_attempts whatever they cost (here 0.4 s throttle waits,
    a 1 s budget: three calls in about 0.8 s, where five took 1.6 s)."""
    import time

    monkeypatch.setattr(QboHook, "throttle_wait_seconds", 0.4)
    monkeypatch.setattr(QboHook, "refresh_budget_seconds", 1.0, raising=False)
    sandbox.faults("qbo", only_path=TOKEN_PATH, throttle_next=50)
    started = time.monotonic()
    with pytest.raises(VendorApiError) as raised:
        QboHook().check_credentials()
    assert time.monotonic() - started < 1.2                      # the budget and the last call's own time
    calls = len(token_calls(sandbox))
    assert 2 <= calls < QboHook.max_attempts
    assert "throttled" in str(raised.value) and f"{calls} time(s) in a row" in str(raised.value)
    assert "gave up after" in str(raised.value)
    sandbox.faults("qbo")
    assert QboHook().check_credentials() is None       # the lock was released, the token kept


def test_the_default_refresh_budget_allows_one_wait_for_quickbooks_next_minute():
    assert QboHook.throttle_wait_seconds < QboHook.refresh_budget_seconds <= 90 < 2 * QboHook.throttle_wait_seconds
