"""The on-call notifier: a readable summary in the log, a webhook post that never leaks its URL."""
from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace

import pytest

from notifiers.on_call import OnCallNotifier, summarize

SECRET_PATH = "/hooks/T000/B000/s3cr3t-webhook-token"


def failing_context():
    ti = SimpleNamespace(dag_id="trustfile_sync", task_id="push_items", run_id="scheduled__2026-11-23",
                         try_number=2, task=SimpleNamespace(retries=3), log_url="http://127.0.0.1:8080/log")
    return {"ti": ti, "exception": ValueError("TrustFile rejected 3 items\nfor connection 42")}


def test_summary_names_task_run_try_cause_the_class_step_and_its_runbook_section():
    text = summarize(failing_context())
    assert text.startswith("[integrations] trustfile_sync.push_items failed on try 2 of 4 (Airflow retries it) "
                           "in run scheduled__2026-11-23\n")
    assert "Cause: ValueError: TrustFile rejected 3 items for connection 42" in text
    assert "Log: http://127.0.0.1:8080/log" in text and "/runbook.md#our-bug" in text
    assert "Next step: " in text and "Check etl.run_ledger" not in text


def test_a_summary_the_task_already_logged_is_sent_as_it_is_and_not_logged_again(webhook, monkeypatch, caplog):
    url, received, _ = webhook
    monkeypatch.setenv("ALERT_WEBHOOK_URL", url)
    context = failing_context()
    context["exception"].on_call_summary = "[integrations] trustfile_sync.push_items failed: the task's own words"
    with caplog.at_level(logging.DEBUG):
        OnCallNotifier().notify(context)
    assert received == [(SECRET_PATH, {"text": context["exception"].on_call_summary})]
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.fixture
def webhook():
    received, status = [], {"code": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(status["code"])
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}{SECRET_PATH}", received, status
    server.shutdown()


def test_posts_the_summary_when_a_webhook_is_configured(webhook, monkeypatch, caplog):
    url, received, _ = webhook
    monkeypatch.setenv("ALERT_WEBHOOK_URL", url)
    with caplog.at_level(logging.DEBUG):
        OnCallNotifier().notify(failing_context())
    assert received == [(SECRET_PATH, {"text": summarize(failing_context())})]
    assert "s3cr3t-webhook-token" not in caplog.text


@pytest.mark.parametrize("failure", ["http-500", "refused"])
def test_a_failing_webhook_is_logged_without_its_url_and_never_raises(webhook, monkeypatch, caplog, failure):
    url, _, status = webhook
    if failure == "http-500":
        status["code"] = 500
    else:
        url = "http://127.0.0.1:9" + SECRET_PATH  # discard port: connection refused
    monkeypatch.setenv("ALERT_WEBHOOK_URL", url)
    with caplog.at_level(logging.DEBUG):
        OnCallNotifier(timeout_seconds=2).notify(failing_context())
    assert "on-call webhook post failed" in caplog.text
    assert "trustfile_sync.push_items failed" in caplog.text
    assert "s3cr3t-webhook-token" not in caplog.text


def test_the_dag_level_callback_of_a_task_failure_does_not_alert_twice(webhook, monkeypatch, caplog):
    url, received, _ = webhook
    monkeypatch.setenv("ALERT_WEBHOOK_URL", url)
    OnCallNotifier().notify({**failing_context(), "reason": "task_failure"})
    assert received == []
    OnCallNotifier().notify({**failing_context(), "reason": "timed_out", "exception": None})
    assert len(received) == 1 and "What happened: the DAG run ended as timed_out" in received[0][1]["text"]
