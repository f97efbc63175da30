"""ServiceTrade hook against the sandbox: sessions always ended, eviction survived, paging exact."""
from __future__ import annotations

import json
import logging
import urllib.request

import pytest

from hooks.servicetrade import PAGE_LIMIT, ServiceTradeHook
from hooks.vendor_http import VendorApiError
from sandbox import servicetrade as st


@pytest.fixture
def connection(sandbox, monkeypatch):
    def make(conn_id: str, password: str = st.PASSWORD) -> ServiceTradeHook:
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(
            {"conn_type": "servicetrade", "host": f"{sandbox.url}/servicetrade/api", "login": st.USERNAME,
             "password": password}))
        return ServiceTradeHook(conn_id)

    monkeypatch.setattr(ServiceTradeHook, "backoff_initial", 0.01)
    monkeypatch.setattr(ServiceTradeHook, "backoff_max", 0.05)
    return make


@pytest.fixture
def hook(connection):
    return connection("servicetrade_default")


def list_calls(sandbox, entity):
    return [r for r in sandbox.requests("servicetrade") if r["path"].endswith(f"/api/{entity}")]


EVERY_JOB_STATUS = "new,canceled,bidding,scheduled,completed,pending_invoice,sending_invoice,closed"


def test_paging_returns_every_job_once_one_page_at_a_time(hook, sandbox, monkeypatch):
    monkeypatch.setitem(PAGE_LIMIT, "job", 50)
    with hook.transaction():
        jobs = hook.paginate("job", {"updatedAfter": 0, "status": EVERY_JOB_STATUS})
        first = next(jobs)
        assert len(list_calls(sandbox, "job")) == 1      # one page fetched, not the whole list
        ids = [first["id"]] + [job["id"] for job in jobs]
    assert len(ids) == len(set(ids)) == sandbox.state("servicetrade")["records"]["job"] == 240
    assert len(list_calls(sandbox, "job")) == -(-len(ids) // 50)
    assert sandbox.state("servicetrade")["open_sessions"] == 0


def test_updated_after_is_inclusive_unix_seconds(hook):
    with hook.transaction():
        everything = list(hook.list_invoices(updated_after=0))
        cutoff = sorted(i["updated"] for i in everything)[len(everything) // 2]
        since = list(hook.list_invoices(updated_after=cutoff))
    assert min(i["updated"] for i in since) == cutoff
    assert len(since) == sum(1 for i in everything if i["updated"] >= cutoff)


def test_session_is_ended_even_when_the_work_fails(hook, sandbox):
    with pytest.raises(RuntimeError, match="the task failed"), hook.transaction():
        next(hook.paginate("location", {"updatedAfter": 0}))
        raise RuntimeError("the task failed")
    sandbox.faults("servicetrade", burst_5xx=10)
    with pytest.raises(VendorApiError, match="HTTP 503"), hook.transaction():
        pass
    state = sandbox.state("servicetrade")
    assert (state["open_sessions"], state["sessions_opened"]) == (0, 1)


def test_recovers_when_its_session_is_evicted(hook, connection, sandbox):
    with hook.transaction():
        pages = hook.paginate("company", {"updatedAfter": 0})
        next(pages)
        for _ in range(3):  # three other logins of the same user evict our session
            urllib.request.urlopen(urllib.request.Request(
                f"{sandbox.url}/servicetrade/api/auth", method="POST",
                data=json.dumps({"username": st.USERNAME, "password": st.PASSWORD}).encode(),
                headers={"Content-Type": "application/json"})).close()
        job = hook.call("GET", "/job/10000")["data"]
    assert job["number"] == "J-00000"
    statuses = [r["status"] for r in sandbox.requests("servicetrade") if r["path"].endswith("/job/10000")]
    assert statuses == [401, 200]


def test_a_5xx_burst_is_retried_and_a_400_is_not(hook, sandbox):
    with hook.transaction():
        sandbox.faults("servicetrade", burst_5xx=2)
        assert len(list(hook.paginate("company", {"updatedAfter": 0}))) == 30
        with pytest.raises(VendorApiError, match="HTTP 400"):
            hook.call("GET", "/job", params={"page": 0})
    assert [r["status"] for r in list_calls(sandbox, "job")] == [400]


def test_429_with_retry_after_is_waited_out(hook, sandbox):
    with hook.transaction():
        sandbox.faults("servicetrade", throttle_next=1, retry_after_seconds=0.5)
        assert hook.call("GET", "/company/5000")["data"]["id"] == 5000


def test_connection_test(hook, connection):
    assert hook.test_connection()[0] is True
    ok, message = connection("servicetrade_bad", password="not-the-password").test_connection()
    assert not ok and "HTTP 403" in message and "Invalid username or password" in message


def test_no_password_or_session_token_in_debug_logs(hook, connection, sandbox, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    with hook.transaction():
        list(hook.paginate("company", {"updatedAfter": 0}))
        token = hook._token
    connection("servicetrade_bad", password="not-the-password-either").test_connection()
    output = caplog.text + "".join(capfd.readouterr())
    assert "/servicetrade/api/company" in output
    for secret in (st.PASSWORD, "not-the-password-either", token):
        assert secret not in output


def test_a_truncated_body_is_retried_not_loaded(hook, sandbox):
    with hook.transaction():
        sandbox.faults("servicetrade", truncate_next=1)
        companies = list(hook.paginate("company", {"updatedAfter": 0}))
    assert len(companies) == 30
    assert [r["status"] for r in list_calls(sandbox, "company")] == [200, 200]


def test_a_cut_off_login_answer_is_not_retried_and_quotes_no_token(hook, sandbox):
    sandbox.faults("servicetrade", truncate_next=1)
    with pytest.raises(VendorApiError, match="not valid JSON") as raised:
        with hook.transaction():
            pass
    assert "authToken" not in str(raised.value)
    assert sandbox.state("servicetrade")["sessions_opened"] == 1   # one try: no second session opened
