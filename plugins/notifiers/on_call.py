"""A failure notifier that gives on-call the failure's summary (notifiers.failures), and posts it when configured.

A task body that reported its failure has already logged the summary as the first ERROR line of its log
and attached it to the exception: that text is sent as it is. Otherwise the summary is built here, from the
exception alone (no scope), and logged. When the environment variable ALERT_WEBHOOK_URL is set it is POSTed
as `{"text": ...}` (the shape Slack, Teams and most chat webhooks accept). The webhook URL usually embeds a
token, so it is registered with the secret masker and never logged. A failing webhook never raises: an
alerting error must not hide the failure it reports.
"""
from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request

from airflow.sdk import BaseNotifier
from airflow.sdk.log import mask_secret

from notifiers import failures

log = logging.getLogger(__name__)

WEBHOOK_ENV = "ALERT_WEBHOOK_URL"


def summarize(context) -> str:
    """The summary the task body attached to its exception, else one built from the context."""
    exception = context.get("exception")
    return getattr(exception, "on_call_summary", None) or failures.summarize(exception, context)


class OnCallNotifier(BaseNotifier):
    """Log the on-call summary (unless the task already did); post it to ALERT_WEBHOOK_URL when that is set."""

    def __init__(self, timeout_seconds: float = 10.0):
        super().__init__()
        self.timeout_seconds = timeout_seconds

    def render_template_fields(self, context, jinja_env=None) -> None:
        """Nothing to render (no template fields). Skipping the Jinja environment also spares a DAG-run callback
        whose context carries a serialized DAG, which has none (dag.test() after a DAG of that id was stored)."""

    def notify(self, context) -> None:
        if context.get("reason") == "task_failure":
            # The DAG-run callback (only it carries a `reason`) of a run whose task failed: that
            # task's own callback has already alerted, so one failure makes one alert.
            log.info("DAG run failed because a task failed; that task's alert was already sent")
            return
        summary = summarize(context)
        if getattr(context.get("exception"), "on_call_summary", None):
            log.info("on-call alert: the summary logged at the top of this try")
        else:
            log.error("%s", summary)
        url = os.environ.get(WEBHOOK_ENV)
        if url:
            post_summary(url, summary, self.timeout_seconds)


def post_summary(url: str, summary: str, timeout_seconds: float) -> None:
    """POST with the standard library: unlike urllib3, it never logs the request path (the token)."""
    mask_secret(url)
    request = urllib.request.Request(
        url, data=json.dumps({"text": summary}).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_seconds):
            pass
    except urllib.error.HTTPError as exc:
        log.warning("on-call webhook post failed (HTTP %s); the summary above is in the log", exc.code)
    except (OSError, ValueError) as exc:
        # The exception text can contain the URL; report only its class.
        log.warning("on-call webhook post failed (%s); the summary above is in the log", type(exc).__name__)


def warn(text: str, timeout_seconds: float = 10.0) -> None:
    """A warning that is not a failure (a credential expiring soon) goes where alerts go: the task log,
    and the on-call webhook when one is set."""
    log.warning("%s", text)
    if url := os.environ.get(WEBHOOK_ENV):
        post_summary(url, text, timeout_seconds)
