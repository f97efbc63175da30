"""A failure notifier that writes a one-paragraph summary for on-call, and posts it when configured.

The summary goes to the task log (where on-call looks first) and, when the environment
variable ALERT_WEBHOOK_URL is set, is POSTed as `{"text": ...}` (the shape Slack, Teams and
most chat webhooks accept). The webhook URL usually embeds a token, so it is registered with
the secret masker and never logged. A failing webhook never raises: an alerting error must
not hide the failure it reports.
"""
from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request

from airflow.sdk import BaseNotifier
from airflow.sdk.log import mask_secret

from etl.ledger import redact_text

log = logging.getLogger(__name__)

WEBHOOK_ENV = "ALERT_WEBHOOK_URL"
RUNBOOK = "docs/runbook.md"
MESSAGE_LIMIT = 600


def summarize(context) -> str:
    """One paragraph: what failed, where, how often, why, and where to look next."""
    ti = context.get("ti") or context.get("task_instance")
    dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?")
    task_id = getattr(ti, "task_id", None) or "(DAG run)"
    run_id = getattr(ti, "run_id", None) or context.get("run_id", "?")
    try_number = getattr(ti, "try_number", None)
    max_tries = getattr(getattr(ti, "task", None), "retries", None)
    exception = context.get("exception")
    reason = f"{type(exception).__name__}: {exception}" if exception else context.get("reason", "no exception recorded")
    reason = " ".join(redact_text(str(reason)).split())[:MESSAGE_LIMIT]
    tries = f" on try {try_number} of {max_tries + 1}" if try_number and max_tries is not None else ""
    log_url = getattr(ti, "log_url", None)
    where = f" Log: {log_url}." if log_url else ""
    return (
        f"[integrations] {dag_id}.{task_id} failed{tries} in run {run_id}. Cause: {reason}.{where} "
        f"Check etl.run_ledger for this run's window and counts; the runbook ({RUNBOOK}) says what to do per DAG."
    )


class OnCallNotifier(BaseNotifier):
    """Log the on-call summary; post it to ALERT_WEBHOOK_URL when that is set."""

    def __init__(self, timeout_seconds: float = 10.0):
        super().__init__()
        self.timeout_seconds = timeout_seconds

    def notify(self, context) -> None:
        if context.get("reason") == "task_failure":
            # The DAG-run callback (only it carries a `reason`) of a run whose task failed: that
            # task's own callback has already alerted, so one failure makes one alert.
            log.info("DAG run failed because a task failed; that task's alert was already sent")
            return
        summary = summarize(context)
        log.error(summary)
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
