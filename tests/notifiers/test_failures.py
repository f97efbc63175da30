"""The on-call summary: each kind of failure told from the exception and its causes, with the next step and
the runbook section of that kind; logged first by the task body and attached for the notifier."""
from __future__ import annotations

import logging
import re
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from etl.maintenance import WatermarkLagError
from etl.watermarks import WatermarkBusy, WatermarkInFuture
from hooks.qbo import RefreshTokenRefused
from hooks.vendor_http import VendorApiError
from notifiers.failures import CLASSES, BadInput, Scope, classify, reported, summarize
from notifiers.runbook import slug

DOCS = Path(__file__).resolve().parents[2] / "docs"


def vendor_error(status: int | None, vendor: str = "TrustFile") -> VendorApiError:
    return VendorApiError(vendor, "POST", "https://api.example/v3/connections/c-1/items", status, "the vendor's words")


def context(try_number: int = 1, retries: int = 2) -> dict:
    ti = SimpleNamespace(dag_id="trustfile_sync", task_id="sync_connection", run_id="scheduled__2026-11-23",
                         try_number=try_number, task=SimpleNamespace(retries=retries),
                         log_url="http://127.0.0.1:8080/log")
    return {"ti": ti, "run_id": ti.run_id}


def chained(cause: BaseException) -> RuntimeError:
    try:
        try:
            raise cause
        except BaseException as exc:
            raise RuntimeError("the sync of connection c-1 failed") from exc
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize(("exception", "kind", "system"), [
    (vendor_error(503), "outage", "TrustFile"),
    (vendor_error(None), "outage", "TrustFile"),
    (vendor_error(401), "credentials", "TrustFile"),
    (vendor_error(403, "ServiceTrade"), "credentials", "ServiceTrade"),
    (vendor_error(429, "QuickBooks Online"), "budget", "QuickBooks Online"),
    (vendor_error(400), "data_refused", "TrustFile"),
    (vendor_error(404), "data_refused", "TrustFile"),
    (RefreshTokenRefused("QuickBooks Online", "POST", "https://oauth.example/tokens", 400, "invalid_grant",
                         lost_answer=False, consent_fingerprint=None), "credentials", "QuickBooks Online"),
    (BadInput("param end='2026-01-01' is not after start"), "bad_input", None),
    (WatermarkInFuture("watermark p/s refuses a reset to …"), "bad_input", None),
    (WatermarkBusy("pipeline 'p' scope 's' is being loaded or reset by another run"), "busy", None),
    (WatermarkLagError("1 pipeline scope(s) have had no successful run"), "stalled", None),
    (psycopg.OperationalError("connection refused"), "outage", "the integrations database"),
    (AirflowFailException("a refusal no retry can fix"), "bad_input", None),
    (KeyError("realm_id"), "bug", None),
    (chained(vendor_error(503)), "outage", "TrustFile"),         # what happened is in the cause
    (chained(KeyError("x")), "bug", None),
])
def test_each_failure_is_told_by_what_a_retry_can_change(exception, kind, system):
    diagnosis = classify(exception)
    assert (diagnosis.error_class.key, diagnosis.system) == (kind, system)


def test_every_class_links_a_heading_of_the_runbook_and_says_something_of_its_own():
    headings = {slug(h) for h in re.findall(r"^#+ +(.+?) *$", (DOCS / "runbook.md").read_text(), re.MULTILINE)}
    assert {"outage", "credentials", "budget", "bad_input", "data_refused", "bug"} <= set(CLASSES)
    for error_class in CLASSES.values():
        assert error_class.doc == "runbook.md" and slug(error_class.heading) in headings, error_class.key
        assert error_class.url.endswith(f"/runbook.md#{slug(error_class.heading)}")
    assert len({c.next_step for c in CLASSES.values()}) == len(CLASSES)


def test_the_summary_names_scope_what_happened_the_step_the_link_and_never_a_secret(monkeypatch):
    from airflow.sdk.log import mask_secret

    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.com")
    monkeypatch.delenv("INTEGRATIONS_DOCS_URL", raising=False)
    mask_secret("company-token-s3cr3t")
    error = VendorApiError("TrustFile", "POST", "https://api.example/v3/connections/x/items", 503,
                           "company-token-s3cr3t is down")
    scope = Scope("TrustFile connection", "c-1", "Acme Tools", more=("integrations/trustfile.md",
                                                                      "Sync failures and what on-call does"))
    text = summarize(error, context(try_number=3, retries=2), scope)
    lines = text.splitlines()
    assert lines[0] == ("[integrations] trustfile_sync.sync_connection failed on try 3 of 3 (no retry left) "
                        "in run scheduled__2026-11-23")
    assert "Scope: TrustFile connection c-1 (Acme Tools)" in lines
    assert any(line.startswith("What happened: TrustFile did not answer") for line in lines)
    assert f"Next step: {CLASSES['outage'].next_step.format(system='TrustFile')}" in lines
    assert ("Runbook: https://airflow.example.com/integrations/docs/runbook.md#vendor-outage "
            "(TrustFile: https://airflow.example.com/integrations/docs/integrations/trustfile.md"
            "#sync-failures-and-what-on-call-does)") in lines
    assert "Log: http://127.0.0.1:8080/log" in lines
    assert "company-token-s3cr3t" not in text and "*** is down" in text


def test_the_try_line_says_whether_airflow_retries():
    assert "failed on try 1 of 3 (Airflow retries it)" in summarize(vendor_error(503), context(1, 2))
    assert "failed on try 1 (not retried: a retry cannot fix it)" in summarize(BadInput("no"), context(1, 2))


def test_a_step_of_the_caller_or_of_the_exception_wins_over_the_class_step():
    refused = BadInput("unknown connection 'x'")
    refused.next_step = "Pick one of the connections listed."
    assert "Next step: Pick one of the connections listed." in summarize(refused, context())
    assert "Next step: Ask TrustFile." in summarize(refused, context(), next_step="Ask TrustFile.")


def test_reported_logs_the_summary_once_at_error_and_attaches_it(caplog):
    scope = Scope("TrustFile connection", "c-1")
    with caplog.at_level(logging.INFO), pytest.raises(RuntimeError) as raised:
        with reported(context(), scope) as where:
            where.name = "Acme Tools"              # learnt inside the body: the summary has it
            raise chained(vendor_error(401))
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [raised.value.on_call_summary]
    assert "Scope: TrustFile connection c-1 (Acme Tools)" in raised.value.on_call_summary
    assert "Credentials rejected".lower().replace(" ", "-") in raised.value.on_call_summary


def test_a_skip_is_not_a_failure(caplog):
    with caplog.at_level(logging.INFO), pytest.raises(AirflowSkipException):
        with reported(context(), Scope("TrustFile connection", "c-1")):
            raise AirflowSkipException("deleted through the API")
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
