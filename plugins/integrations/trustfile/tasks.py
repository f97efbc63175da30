"""Task bodies of trustfile_sync and trustfile_backfill: wire a connection to its hooks, run, report.

A connection's host credentials live encrypted in trustfile.connections (QBO: the realm and
refresh token from the consent; ServiceTrade: the Airflow connection holding its login), the
OAuth app and TrustFile's token in Airflow connections. Whatever a run ends with is written
back on the connection (statusMessage, lastSyncAt, nextSyncAt, an activity) and, for a failure,
in trustfile.errors, which TrustFile reads through GET /errors. A consent QuickBooks refuses for good
(invalid_grant) is not a failure to retry: the connection says "needs re-consent" with the consent
link, and waits for the customer.
"""
from __future__ import annotations

import datetime as dt
import logging

from airflow.sdk.exceptions import AirflowFailException

from etl import db, watermarks
from hooks.qbo import RefreshTokenRefused
from hooks.trustfile import TrustFileHook
from hooks.vendor_http import VendorApiError, register_secret
from integrations.trustfile import connections, hosts, status
from integrations.trustfile.model import Address, start_of
from integrations.trustfile.reports import ErrorType
from integrations.trustfile.sync import Budget, ConnectionGone, SyncJob, SyncReport, run_backfill, run_sync
from operators.incremental_load import parse_cursor

log = logging.getLogger(__name__)

POOL = "trustfile_sync"
WAITING_FOR_AUTHORIZATION = ("enabled; waiting for the host system's authorization "
                             "(GET /connections/{id}/authentication)")


class SyncSetupError(RuntimeError):
    """A connection cannot be synced as configured; the message says what to fix."""


class NeedsReconsent(AirflowFailException):
    """The host no longer accepts the company's consent: only the customer can fix it, so no retries."""


def reconsent_message(connection_id: str, refused: RefreshTokenRefused) -> str:
    """The connection's status (and the alert's text) when QuickBooks refuses its refresh token for good."""
    cause = ("an answer carrying its replacement was lost in transit, and QuickBooks does not accept the previous "
             "one" if refused.lost_answer else "revoked, unused for 100 days, or lost")
    return (f"needs re-consent: QuickBooks refuses the company's refresh token (invalid_grant: {cause}); the "
            f"customer authorizes again from TrustFile, which opens the consent link "
            f"GET /connections/{connection_id}/authentication")


def next_sync_at(now: dt.datetime | None = None) -> dt.datetime:
    """trustfile_sync runs at the top of every hour."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return now.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)


def due_connections() -> list[str]:
    with db.connect() as conn:
        ready, waiting = status.due(conn, dt.datetime.now(dt.timezone.utc).date())
        if waiting:
            status.mark_waiting(conn, waiting, WAITING_FOR_AUTHORIZATION)
            log.warning("enabled but not authorized at their host system: %s", ", ".join(waiting))
    log.info("%d connection(s) due: %s", len(ready), ", ".join(ready) or "none")
    return ready


def build_job(conn, connection_id: str) -> SyncJob:
    settings = connections.sync_settings(conn, connection_id)
    conn.commit()
    if settings is None:
        raise ConnectionGone(f"connection {connection_id} no longer exists (deleted through the API)")
    if settings.start_date is None or settings.credentials is None:
        raise SyncSetupError(f"connection {connection_id} has no start date or no host authorization yet")
    try:
        host = hosts.connect(settings.host_system, settings.host_identifier, settings.credentials)
    except KeyError as exc:
        raise SyncSetupError(f"connection {connection_id}: {exc.args[0]}") from None
    target = connection_id
    if settings.company_token is not None:   # the company token addresses the company's data: kept out of logs
        target = settings.company_token
        register_secret(target)
    trustfile = TrustFileHook()
    company = trustfile.get_company(target)
    address = company.get("address") or {}
    fallback = Address(line1=address.get("line1"), city=address.get("city"), state=address.get("state"),
                       zip=address.get("zip"))
    return SyncJob(connection_id, settings.start_date, host, trustfile, target,
                   fallback if fallback.complete else None, settings.synced_from)


def error_type(exc: BaseException) -> ErrorType:
    """TrustFile refusing our token is the whole integration's problem; a host refusing is one connection's."""
    if isinstance(exc, VendorApiError):
        if exc.vendor == TrustFileHook.vendor:
            return "INTEGRATION" if exc.status in (401, 403) else "SYSTEM"
        return "CONNECTION"
    if isinstance(exc, (SyncSetupError, watermarks.WatermarkBusy)):
        return "CONNECTION"
    return "SYSTEM"


def _summary(report: SyncReport) -> str:
    state = "up to date" if report.caught_up else f"catching up (synced to {report.watermark_after})"
    text = (f"{state}: {report.read} documents read, {report.inserted} new, {report.updated} changed, "
            f"{report.pushed} items pushed, {report.rejected} refused by TrustFile, "
            f"{report.quarantined} quarantined")
    if report.warnings:
        text += "; unverified: " + "; ".join(report.warnings) + " (compare totals with the host system)"
    return text


def _run(connection_id: str, context, work) -> dict:
    from airflow.sdk.exceptions import AirflowSkipException

    ti = context["ti"]
    with db.connect() as conn:
        try:
            job = build_job(conn, connection_id)
            report = work(conn, job, run_id=context["run_id"], task_id=ti.task_id, try_number=ti.try_number)
        except ConnectionGone as gone:
            raise AirflowSkipException(str(gone)) from None
        except RefreshTokenRefused as refused:
            message = reconsent_message(connection_id, refused)
            if status.record_consent_lost(conn, connection_id, refused.consent_fingerprint, message):
                raise NeedsReconsent(f"connection {connection_id} {message}") from refused
            status.record_failure(conn, connection_id, error_type(refused), f"{type(refused).__name__}: {refused}",
                                  next_sync_at())
            raise
        except BaseException as exc:
            status.record_failure(conn, connection_id, error_type(exc), f"{type(exc).__name__}: {exc}",
                                  next_sync_at())
            raise
        summary = _summary(report)
        status.record_sync(conn, connection_id, message=summary, activity=f"Synced: {summary}",
                           next_sync_at=next_sync_at())
    log.info("%s: %s", connection_id, summary)
    return report.as_dict()


def sync(connection_id: str, context) -> dict:
    params = context["params"]
    budget = Budget(window_documents=int(params.get("window_documents") or 20_000),
                    max_documents=int(params.get("max_documents") or 100_000))
    return _run(connection_id, context, lambda conn, job, **kw: run_sync(conn, job, budget=budget, **kw))


def backfill(context) -> dict:
    params = context["params"]
    connection_id = (params.get("connection_id") or "").strip()
    if not connection_id:
        raise ValueError("a backfill needs the connection_id param")
    since, until = (start_of_param(params.get(name), name) for name in ("start", "end"))
    mode = params.get("mode") or "reload"
    return _run(connection_id, context,
                lambda conn, job, **kw: run_backfill(conn, job, mode=mode, since=since, until=until, **kw))


def start_of_param(value: str | None, name: str) -> dt.datetime:
    """A date (yyyy-mm-dd, midnight UTC) or an ISO 8601 timestamp with offset."""
    if not value:
        raise ValueError(f"a backfill needs the {name} param")
    if len(value) == 10:
        try:
            return start_of(dt.date.fromisoformat(value))
        except ValueError:
            raise ValueError(f"param {name}={value!r} is not a date (yyyy-mm-dd)") from None
    return parse_cursor("timestamp", value, field=name)
