"""The on-call summary of a failed task: what failed, for which scope (its id and its human name), what
happened in plain words, the next step for that kind of failure, and a link to the runbook section of that
kind, served by the platform (notifiers.runbook).

A task body wraps its work in `reported(context, scope)`. On a failure the summary is logged there and then,
so it is the first ERROR line of the try's log: before Airflow's traceback and outside its collapsed log
groups, where the failure callback's lines land. It is also attached to the exception (`on_call_summary`),
and the on-call notifier sends that text as it is; a failure no task body reported gets the same summary
without a scope. The kind of failure is read from the exception and its causes (`classify`); an exception
may name its own kind (`on_call_class`) and its own next step (`next_step`).
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import psycopg
from airflow.sdk.exceptions import (
    AirflowFailException,
    AirflowRescheduleException,
    AirflowSkipException,
    DagRunTriggerException,
    DownstreamTasksSkipped,
    ParamValidationError,
    TaskDeferred,
)

from etl.encryption import EncryptionError
from etl.ledger import redact_text
from etl.maintenance import WatermarkLagError
from etl.request_budget import BudgetSpent
from etl.watermarks import WatermarkBusy, WatermarkInFuture
from hooks.qbo import RefreshTokenRefused
from hooks.vendor_http import VendorApiError
from notifiers.runbook import docs_url

log = logging.getLogger(__name__)

CAUSE_LIMIT = 500
E = TypeVar("E", bound=BaseException)
# A spent request budget is a wait (the task defers until the reset), not a failure to report.
NOT_FAILURES = (AirflowSkipException, AirflowRescheduleException, DownstreamTasksSkipped, DagRunTriggerException,
                TaskDeferred, BudgetSpent)


@dataclass(frozen=True)
class ErrorClass:
    """A kind of failure: what happened in plain words and what on-call does ({system}: what failed)."""

    key: str
    doc: str
    heading: str
    happened: str
    next_step: str

    @property
    def url(self) -> str:
        return docs_url(self.doc, self.heading)


CLASSES = {c.key: c for c in (
    ErrorClass("outage", "runbook.md", "Vendor outage",
               "{system} did not answer, or answered with a server error, through every retry",
               "Nothing to repair: what was loaded is committed, and the next run goes on from there. If it lasts, "
               "check {system}'s status page; clear the task once it answers."),
    ErrorClass("credentials", "runbook.md", "Credentials rejected",
               "{system} refused our credentials",
               "Put the current credentials for {system} in its Airflow connection (Admin > Connections), then "
               "clear the task: every retry fails the same way until then."),
    ErrorClass("budget", "runbook.md", "Budget spent",
               "{system}'s request budget is spent: it answered 429 (too many requests) through every retry",
               "Nothing to repair: the next run goes on once the budget refills. If it happens every run, lower "
               "the pool's slots or find what else spends {system}'s budget."),
    ErrorClass("bad_input", "runbook.md", "Bad input",
               "the run's form or the scope's settings were refused before anything was written",
               "Trigger the DAG again with a valid value (the cause lists them). Nothing was written: there is "
               "nothing to clean up."),
    ErrorClass("data_refused", "runbook.md", "Data refused by the vendor",
               "{system} refused what we sent",
               "Read {system}'s answer in the cause and fix the record, mapping or setting it names, then clear the "
               "task (or backfill the window): sent unchanged, it is refused again."),
    ErrorClass("busy", "runbook.md", "Another run holds the scope",
               "another run (a backfill, a reset or a slower sync) was working on the same scope",
               "Nothing is wrong with the data: let the other run finish, then clear this task or wait for the "
               "next scheduled run."),
    ErrorClass("stalled", "runbook.md", "integrations_maintenance",
               "pipeline scopes stopped moving: no successful run for too long",
               "Open each scope's latest runs in etl.run_ledger: fix the cause of the failed ones and clear them; "
               "unpause a DAG that was paused."),
    ErrorClass("bug", "runbook.md", "Our bug",
               "an error in our code, or data or state it did not expect",
               "A retry will not fix it: open an issue with this log (the traceback follows). A failed load "
               "commits nothing, so clearing the task once it is fixed is safe."),
    ErrorClass("run_ended", "runbook.md", "Runbook",
               "the DAG run ended as {system}",
               "Open the run in the Airflow UI: its failed or unfinished tasks say more."),
)}


class BadInput(AirflowFailException):
    """A form value or setting no retry can fix: the task fails at once, and on-call reads "bad input"."""

    on_call_class = "bad_input"


@dataclass
class Scope:
    """What a failure concerns, e.g. ("TrustFile connection", its id, its company). `name` may be learnt
    inside the reported block; `more` is the integration's own table of failures (doc, heading)."""

    kind: str
    id: str
    name: str | None = None
    more: tuple[str, str] | None = None

    def __str__(self) -> str:
        return f"{self.kind} {self.id}" + (f" ({self.name})" if self.name else "")


@dataclass(frozen=True)
class Diagnosis:
    error_class: ErrorClass
    system: str | None = None

    @property
    def happened(self) -> str:
        return self.error_class.happened.format(system=self.system or "the vendor")

    @property
    def next_step(self) -> str:
        return self.error_class.next_step.format(system=self.system or "the vendor")


def _causes(exc: BaseException | None) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def find(exc: BaseException | None, kind: type[E]) -> E | None:
    """The exception itself, or the first of its causes, that is a `kind`."""
    return next((link for link in _causes(exc) if isinstance(link, kind)), None)


def _told(exc: BaseException) -> tuple[str, str | None] | None:
    """The kind of failure and the system at fault, when this exception alone says it."""
    if getattr(exc, "on_call_class", None) in CLASSES:
        return exc.on_call_class, getattr(exc, "system", None)
    if isinstance(exc, RefreshTokenRefused):
        return "credentials", exc.vendor
    if isinstance(exc, VendorApiError):
        if exc.status in (401, 403):
            return "credentials", exc.vendor
        if exc.status == 429:
            return "budget", exc.vendor
        return ("outage" if exc.transient else "data_refused"), exc.vendor
    kinds = ((WatermarkBusy, "busy", None), (WatermarkInFuture, "bad_input", None),
             (ParamValidationError, "bad_input", None), (WatermarkLagError, "stalled", None),
             (EncryptionError, "credentials", "the integrations database (INTEGRATIONS_FERNET_KEY)"),
             (psycopg.OperationalError, "outage", "the integrations database"))
    return next(((kind, system) for cls, kind, system in kinds if isinstance(exc, cls)), None)


def classify(exc: BaseException | None) -> Diagnosis:
    """The exception's kind, else that of the first cause that tells; a bare AirflowFailException is a
    refusal no retry can fix (bad input), anything else our bug."""
    for link in _causes(exc):
        told = _told(link)
        if told:
            return Diagnosis(CLASSES[told[0]], told[1])
    return Diagnosis(CLASSES["bad_input" if isinstance(exc, AirflowFailException) else "bug"])


def _headline(exc: BaseException | None, context) -> str:
    ti = context.get("ti") or context.get("task_instance")
    dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", None) or "?"
    task_id = getattr(ti, "task_id", None) or "(DAG run)"
    run_id = getattr(ti, "run_id", None) or context.get("run_id") or "?"
    try_number = getattr(ti, "try_number", None)
    retries = getattr(getattr(ti, "task", None), "retries", None)
    if not try_number or retries is None:
        attempt = ""
    elif isinstance(exc, AirflowFailException):
        attempt = f" on try {try_number} (not retried: a retry cannot fix it)"
    else:
        then = "Airflow retries it" if try_number <= retries else "no retry left"
        attempt = f" on try {try_number} of {retries + 1} ({then})"
    return f"[integrations] {dag_id}.{task_id} failed{attempt} in run {run_id}"


def summarize(exc: BaseException | None, context, scope: Scope | None = None, next_step: str | None = None) -> str:
    """The summary, secrets redacted: a few short lines, the cause last."""
    if exc is None:
        diagnosis = Diagnosis(CLASSES["run_ended"], str(context.get("reason") or "failed"))
        cause = f"{context.get('reason') or 'no exception recorded'}"
    else:
        diagnosis = classify(exc)
        cause = f"{type(exc).__name__}: {exc}"
    link = diagnosis.error_class.url
    if scope is not None and scope.more:
        link += f" ({scope.kind.split()[0]}: {docs_url(*scope.more)})"
    log_url = getattr(context.get("ti") or context.get("task_instance"), "log_url", None)
    lines = [_headline(exc, context), f"Scope: {scope}" if scope else None,
             f"What happened: {diagnosis.happened}.",
             f"Next step: {next_step or getattr(exc, 'next_step', None) or diagnosis.next_step}",
             f"Runbook: {link}", f"Cause: {' '.join(cause.split())[:CAUSE_LIMIT]}",
             f"Log: {log_url}" if log_url else None]
    return redact_text("\n".join(line for line in lines if line))


@contextlib.contextmanager
def reported(context, scope: Scope | None = None, *,
             next_step: Callable[[BaseException], str | None] | None = None) -> Iterator[Scope | None]:
    """Log the summary of a failure of the block first, attach it to the exception, and let it go on."""
    try:
        yield scope
    except NOT_FAILURES:
        raise
    except Exception as exc:
        text = summarize(exc, context, scope, next_step(exc) if next_step else None)
        log.error("%s", text)
        with contextlib.suppress(AttributeError):       # an exception that takes no attribute is still raised
            exc.on_call_summary = text
        raise
