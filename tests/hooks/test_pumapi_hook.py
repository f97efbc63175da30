"""PUMAPI hook against the sandbox's PPMS: form POSTs to the PUMAPI URL, answers read per action, PPMS's
refusals (HTTP 200 all the same) raised with the action named and the key left out, reads retried and
createorder sent once, and the key in no log line even at DEBUG."""
from __future__ import annotations

import json
import logging

import pytest

from hooks.pumapi import PumapiHook, PumapiRefused
from hooks.pumapi_format import ORDER_COLUMNS, ORDER_LINE_COLUMNS
from hooks.vendor_http import VendorApiError
from sandbox import ppms

WRONG_KEY = "wrong-ppms-apikey-91c4"


@pytest.fixture
def connection(sandbox, monkeypatch):
    def make(conn_id: str = "ppms_default", key: str = ppms.API_KEY, host: str | None = None) -> PumapiHook:
        spec = ppms.airflow_connection(sandbox.url, key=key)
        if host is not None:
            spec["host"] = host
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(spec))
        return PumapiHook(conn_id)

    monkeypatch.setattr(PumapiHook, "backoff_initial", 0.01)
    monkeypatch.setattr(PumapiHook, "backoff_max", 0.05)
    return make


def test_orders_lines_and_invoices_read_as_the_sandbox_holds_them(connection, sandbox):
    hook = connection()
    held = sandbox.state("ppms")
    orders = hook.orders()
    assert len(orders) == held["counts"]["orders"] and set(orders[0]) == set(ORDER_COLUMNS)
    first = orders[0]["Order ref."]
    lines = hook.order_lines(first)
    assert lines and all(set(line) == set(ORDER_LINE_COLUMNS) and line["Order ref."] == first for line in lines)
    assert hook.order_lines("999999") == []                       # an unknown order: an empty answer
    invoices = hook.invoice_ids()
    assert len(invoices) == held["counts"]["invoices"]
    assert hook.invoice(invoices[0]) and hook.invoice_details(invoices[0])


def test_the_host_without_its_trailing_slash_is_posted_to_with_it(connection, sandbox):
    hook = connection(host=f"{sandbox.url}/ppms/pumapi")
    assert hook.endpoint == f"{sandbox.url}/ppms/pumapi/"
    hook.check_credentials()


def test_a_wrong_key_is_refused_with_the_action_named_and_what_to_do(connection):
    with pytest.raises(PumapiRefused) as raised:
        connection("ppms_wrong", key=WRONG_KEY).orders()
    text = str(raised.value)
    assert "getorders: error: request not authorized" in text and "'ppms_wrong'" in text and "API key" in text
    assert WRONG_KEY not in text
    assert connection("ppms_wrong", key=WRONG_KEY).test_connection()[0] is False


def test_create_order_answers_its_ref_and_a_refusal_keeps_ppms_text(connection, sandbox):
    hook = connection()
    service = sandbox.state("ppms")["services"][0]
    login = next(o["User"] for o in hook.orders())
    ref = hook.create_order(service_id=service["serviceid"], login=login, quantity=2, accepted=True, completed=True,
                            completed_date="2026-11-30 10:00:00")
    created = sandbox.state("ppms")["created_orders"]
    assert [str(c["orderref"]) for c in created] == [ref]
    assert created[0]["params"]["accepted"] == "true" and created[0]["params"]["completed"] == "true"
    with pytest.raises(PumapiRefused, match="createorder: error: invalid service id 99"):
        hook.create_order(service_id=99, login=login, quantity=1)
    with pytest.raises(ValueError, match="completed at creation only if it is accepted"):
        hook.create_order(service_id=service["serviceid"], login=login, quantity=1, completed=True)
    assert len(sandbox.state("ppms")["created_orders"]) == 1


def test_reads_are_retried_and_createorder_is_sent_once(connection, sandbox):
    hook = connection()
    sandbox.faults("ppms", burst_5xx=1)
    assert hook.invoice_ids()
    service, login = sandbox.state("ppms")["services"][0], hook.orders()[0]["User"]
    sandbox.faults("ppms", burst_5xx=1)
    with pytest.raises(VendorApiError, match="HTTP 503"):
        hook.create_order(service_id=service["serviceid"], login=login, quantity=1)
    assert [r["status"] for r in sandbox.requests("ppms")] == [503, 200, 200, 503]
    assert sandbox.state("ppms")["created_orders"] == []


def test_the_key_is_in_no_log_line_or_error_even_at_debug(connection, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    hook = connection()
    hook.orders()
    hook.order_lines(hook.orders()[0]["Order ref."])
    errors = []
    for bad in (connection("ppms_wrong", key=WRONG_KEY), hook):
        with pytest.raises(VendorApiError) as raised:
            bad.create_order(service_id=99, login="nobody", quantity=1)
        errors.append(str(raised.value))
    output = caplog.text + "".join(capfd.readouterr()) + " ".join(errors)
    assert "/ppms/pumapi/" in output and "createorder" in output      # the lines are there, the key is not
    for secret in (ppms.API_KEY, WRONG_KEY):
        assert secret not in output


def test_a_call_that_never_connected_says_so_and_one_that_got_an_answer_does_not(connection, sandbox):
    import socket

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()                              # nothing listens there: the connection is refused
    with pytest.raises(VendorApiError) as never:
        connection("ppms_nowhere", host=f"http://127.0.0.1:{port}/ppms/pumapi/").create_order(
            service_id=101, login="x", quantity=1)
    assert never.value.unsent and never.value.status is None
    sandbox.faults("ppms", burst_5xx=1)
    with pytest.raises(VendorApiError) as answered:
        connection().create_order(service_id=101, login="x", quantity=1)
    assert not answered.value.unsent and answered.value.status == 503
