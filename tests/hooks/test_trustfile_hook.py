"""TrustFile hook against the sandbox over real HTTP: batching, per-item errors, retries, secrets."""
from __future__ import annotations

import json
import logging
import time

import pytest

from hooks.trustfile import TrustFileHook
from hooks.vendor_http import VendorApiError
from sandbox import trustfile as tf_sandbox

CONNECTION = tf_sandbox.SEEDED_CONNECTIONS[0]


@pytest.fixture
def hook(sandbox, monkeypatch):
    connection = {"conn_type": "trustfile", "host": f"{sandbox.url}/trustfile", "password": tf_sandbox.TOKEN,
                  "extra": {"provisioning_url": f"{sandbox.url}/trustfile"}}
    monkeypatch.setenv("AIRFLOW_CONN_TRUSTFILE_DEFAULT", json.dumps(connection))
    monkeypatch.setattr(TrustFileHook, "backoff_initial", 0.01)
    monkeypatch.setattr(TrustFileHook, "backoff_max", 0.05)
    return TrustFileHook()


@pytest.fixture
def bad_token_hook(sandbox, monkeypatch):
    connection = {"conn_type": "trustfile", "host": f"{sandbox.url}/trustfile", "password": "wrong-token-value"}
    monkeypatch.setenv("AIRFLOW_CONN_TRUSTFILE_BAD", json.dumps(connection))
    return TrustFileHook("trustfile_bad")


def item(n: int, **overrides) -> dict:
    base = {"itemId": f"SR-{n}", "transactionDate": "2026-03-01T10:00:00", "refund": False,
            "shipToAddress": {"line1": "1 Main St", "city": "Fresno", "state": "CA", "zip": "93722"},
            "salesAmount": 100.0 + n, "salesTax": 8.25, "shippingAmount": 5.0, "shippingTax": 0.41}
    return {**base, **overrides}


def pushes(sandbox) -> list[dict]:
    return [r for r in sandbox.requests("trustfile") if r["method"] == "POST" and r["path"].endswith("/items")]


def test_2500_items_go_out_as_three_calls(hook, sandbox):
    report = hook.push_items(CONNECTION, (item(n) for n in range(2500)))
    assert (report.calls, report.processed, report.rejected) == (3, 2500, {})
    assert len(pushes(sandbox)) == 3
    assert sandbox.trustfile_items(CONNECTION, "SR-2499")[0]["salesAmount"] == 2599.0


def test_rejected_items_are_reported_one_by_one_and_the_rest_pushed(hook, sandbox):
    items = [item(n) for n in range(10)]
    items[3]["shippingTax"] = ".00"
    del items[7]["shipToAddress"]["zip"]
    report = hook.push_items(CONNECTION, items)
    assert report.processed == 8 and report.calls == 2
    assert report.rejected == {"SR-3": ["shippingTax: should be number"],
                               "SR-7": ["shipToAddress: should have required property 'zip'"]}
    assert sandbox.trustfile_items(CONNECTION, "SR-3") == []


def test_upsert_by_item_id_keeps_sale_and_refund_apart(hook, sandbox):
    hook.push_items(CONNECTION, [item(1), item(1, refund=True, salesAmount=-20.0)])
    hook.push_items(CONNECTION, [item(1, salesAmount=111.0)])
    stored = sorted(sandbox.trustfile_items(CONNECTION, "SR-1"), key=lambda i: i["refund"])
    assert [(i["refund"], i["salesAmount"]) for i in stored] == [(False, 111.0), (True, -20.0)]


def test_a_5xx_burst_is_retried_and_recovers(hook, sandbox):
    sandbox.faults("trustfile", burst_5xx=2)
    assert hook.push_items(CONNECTION, [item(1)]).processed == 1
    assert [r["status"] for r in pushes(sandbox)] == [503, 503, 200]


def test_a_400_or_404_is_not_retried(hook, sandbox):
    with pytest.raises(VendorApiError, match="HTTP 400") as raised:
        hook.request("POST", f"/v3/connections/{CONNECTION}/items", json={"records": []})
    assert "is not retried" in str(raised.value)
    with pytest.raises(VendorApiError, match="HTTP 404"):
        hook.push_items("no-such-connection", [item(1)])
    assert [r["status"] for r in pushes(sandbox)] == [400, 404]


def test_429_waits_as_long_as_retry_after_says(hook, sandbox):
    sandbox.faults("trustfile", throttle_next=1, retry_after_seconds=1.0)
    started = time.monotonic()
    assert hook.push_items(CONNECTION, [item(1)]).processed == 1
    assert time.monotonic() - started >= 1.0
    assert [r["status"] for r in pushes(sandbox)] == [429, 200]


def test_connection_test_true_for_the_sandbox_false_for_a_bad_token(hook, bad_token_hook):
    assert hook.test_connection() == (True, "TrustFile: connection 'trustfile_default' works")
    ok, message = bad_token_hook.test_connection()
    assert not ok
    assert "HTTP 401" in message and "You are not authorized" in message and "trustfile_bad" in message


def test_signup_returns_a_company_token_that_accepts_items(hook):
    token = hook.signup(email="owner@example.com", company_name="Acme Tools", companyState="CA")
    assert hook.get_company(token)["name"] == "Acme Tools"
    assert hook.push_items(token, [item(1)]).processed == 1
    with pytest.raises(VendorApiError, match="HTTP 400"):
        hook.signup(email="owner@example.com", company_name="Acme Tools again")


def test_no_token_in_debug_logs_or_errors(hook, bad_token_hook, sandbox, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    hook.push_items(CONNECTION, [item(1)])
    with pytest.raises(VendorApiError) as raised:
        bad_token_hook.get_company(CONNECTION)
    sandbox.faults("trustfile", burst_5xx=1)
    hook.get_company(CONNECTION)
    output = caplog.text + str(raised.value) + "".join(capfd.readouterr())
    assert "GET" in caplog.text or "POST" in caplog.text  # debug lines were captured
    for secret in (tf_sandbox.TOKEN, "wrong-token-value"):
        assert secret not in output


def test_when_trustfile_names_only_the_first_bad_item_the_rest_still_gets_through(hook, sandbox):
    sandbox.control("trustfile", all_errors=False)
    items = [item(n) for n in range(40)]
    for n in (5, 6, 30):
        items[n]["salesTax"] = "8.25"
    report = hook.push_items(CONNECTION, items)
    assert (report.processed, report.calls) == (37, 4)
    assert sorted(report.rejected) == ["SR-30", "SR-5", "SR-6"]


def test_a_signup_whose_answer_is_lost_is_not_repeated_and_says_so(hook, sandbox):
    sandbox.faults("trustfile", truncate_next=1, only_path="/signup")
    with pytest.raises(VendorApiError, match="TrustFile knows owner2@example.com now"):
        hook.signup(email="owner2@example.com", company_name="Lost Answer Inc")
    assert len([r for r in sandbox.requests("trustfile") if r["path"].endswith("/signup")]) == 1


def test_a_pasted_token_with_a_trailing_newline_still_works(sandbox, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_TRUSTFILE_PASTED", json.dumps(
        {"conn_type": "trustfile", "host": f"{sandbox.url}/trustfile", "password": tf_sandbox.TOKEN + "\n"}))
    assert TrustFileHook("trustfile_pasted").test_connection()[0] is True


def test_connection_test_fails_when_the_host_is_not_the_items_api(sandbox, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_TRUSTFILE_WRONG", json.dumps(
        {"conn_type": "trustfile", "host": f"{sandbox.url}/trustfile/v3", "password": tf_sandbox.TOKEN}))
    ok, message = TrustFileHook("trustfile_wrong").test_connection()
    assert not ok and "HTTP 404" in message


def test_an_answer_cut_off_mid_body_is_retried(hook, sandbox):
    sandbox.faults("trustfile", drop_next=1)
    assert hook.get_company(CONNECTION)["name"] == "Sandbox Company 1"
    assert len([r for r in sandbox.requests("trustfile") if r["method"] == "GET"]) == 2


@pytest.mark.parametrize("style", ["ajv8", "opaque"])
def test_bad_items_are_found_whether_or_not_the_errors_name_them(hook, sandbox, style):
    sandbox.control("trustfile", error_style=style)
    items = [item(n) for n in range(10)]
    items[3]["salesTax"], items[8]["shipToAddress"] = ".41", {"line1": "nowhere"}
    report = hook.push_items(CONNECTION, items)
    assert sorted(report.rejected) == ["SR-3", "SR-8"] and report.processed == 8
    stored = {i["itemId"] for i in sandbox.state("trustfile")["items"][CONNECTION]}
    assert stored == {f"SR-{n}" for n in range(10)} - {"SR-3", "SR-8"}
    if style == "ajv8":
        assert report.calls == 2 and report.rejected["SR-3"] == ["salesTax: should be number"]
    else:
        assert report.calls < 2 * len(items)  # halving: about 2·log2(n) calls per bad item
        assert report.rejected["SR-8"] == ["should have required property 'state'",
                                           "should have required property 'zip'"]


def test_a_batch_refused_item_by_item_without_names_is_an_error_not_a_list_of_rejects(hook, sandbox):
    sandbox.control("trustfile", error_style="opaque")
    with pytest.raises(VendorApiError, match="HTTP 400"):
        hook.push_items(CONNECTION, [item(n, refund="no") for n in range(4)])


@pytest.mark.parametrize("form", tf_sandbox.UNKNOWN_CONNECTION_FORMS)
def test_the_credential_check_accepts_trustfiles_404_with_or_without_its_message(hook, sandbox, form):
    """The public spec documents the unknown connection's 404 with no body; the sandbox used to say more."""
    sandbox.control("trustfile", unknown_connection=form)
    assert hook.test_connection() == (True, "TrustFile: connection 'trustfile_default' works")
    with pytest.raises(VendorApiError, match="HTTP 404: " + (".*Connection not found" if form == "message"
                                                              else r"\(no body\)")):
        hook.get_company("no-such-connection")


@pytest.mark.parametrize("form", tf_sandbox.UNKNOWN_EMAIL_FORMS)
def test_the_email_lookup_reads_every_plausible_answer_for_an_unknown_email(hook, sandbox, form):
    sandbox.control("trustfile", unknown_email=form)
    assert hook.user_exists("nobody@example.com") is False
    hook.signup(email="somebody@example.com", company_name="Somebody Inc")
    assert hook.user_exists("Somebody@example.com") is True


def test_an_email_lookup_that_cannot_answer_says_so_instead_of_raising(hook, sandbox):
    sandbox.faults("trustfile", burst_5xx=TrustFileHook.max_attempts)
    assert hook.user_exists("nobody@example.com") is None
    sandbox.faults("trustfile", truncate_next=TrustFileHook.max_attempts)    # 200s cut short: no answer either
    assert hook.user_exists("nobody@example.com") is None
