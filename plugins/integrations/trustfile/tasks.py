"""Task bodies of trustfile_sync and trustfile_backfill: wire a connection to its hooks, run, report.

A connection's host credentials live encrypted in trustfile.connections (QBO: the realm and
refresh token from the consent; ServiceTrade: the Airflow connection holding its login), the
OAuth app and TrustFile's token in Airflow connections. Whatever a scheduled sync ends with is
written back on the connection (statusMessage, lastSyncAt, nextSyncAt, an activity) and, for a
failure, in trustfile.errors, which TrustFile reads through GET /errors. A backfill is ours: it adds
an activity and leaves both alone, and its form is checked by a first task that only reads, so a typo
never shows in TrustFile. A consent QuickBooks refuses for good (invalid_grant) is not a failure to
retry: the connection says "needs re-consent" with the consent link, and waits for the customer.
Every failure logs the on-call summary first (notifiers.failures), naming the connection by its company.
"""
from __future__ import annotations

import datetime as dt
import logging

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from etl import db, watermarks
from hooks.qbo import RefreshTokenRefused
from hooks.servicetrade import ServiceTradeHook
from hooks.trustfile import TrustFileHook
from hooks.vendor_http import VendorApiError, register_secret
from integrations.trustfile import connections, hosts, status
from integrations.trustfile.model import Address, start_of
from integrations.trustfile.reports import ErrorType
from integrations.trustfile.sync import Budget, ConnectionGone, SyncJob, SyncReport, run_backfill, run_sync
from notifiers.failures import BadInput, Scope, find, reported

log = logging.getLogger(__name__)

POOL = "trustfile_sync"
SCOPE = "TrustFile connection"
FAILURES_TABLE = ("integrations/trustfile.md", "Sync failures and what on-call does")
LISTED = 20          # connections a refused backfill form lists
MODES = ("reload", "repush")
WAITING_FOR_AUTHORIZATION = ("enabled; waiting for the host system's authorization "
                             "(GET /connections/{id}/authentication)")


class SyncSetupError(RuntimeError):
    """A connection cannot be synced as configured; the message says what to fix."""

    on_call_class = "bad_input"
    next_step = ("If TrustFile changed the connection while the run was queued, nothing: the next run lists the "
                 "due connections again. Otherwise the connection needs its start date and host authorization.")


class NeedsReconsent(AirflowFailException):
    """The host no longer accepts the company's consent: only the customer can fix it, so no retries."""

    on_call_class, system = "credentials", "QuickBooks Online"


def reconsent_message(connection_id: str, refused: RefreshTokenRefused) -> str:
    """The connection's status (and the alert's text) when QuickBooks refuses its refresh token for good."""
    cause = ("an answer carrying its replacement was lost in transit, and QuickBooks does not accept the previous "
             "one" if refused.lost_answer else "revoked, unused for 100 days, or lost")
    return (f"needs re-consent: QuickBooks refuses the company's refresh token (invalid_grant: {cause}); the "
            f"customer authorizes again from TrustFile, which opens the consent link "
            f"GET /connections/{connection_id}/authentication")


def next_step(exc: BaseException, connection_id: str) -> str | None:
    """The step for TrustFile's failures that have one answer; None leaves the kind's own (notifiers.failures)."""
    error = find(exc, VendorApiError)
    if isinstance(error, RefreshTokenRefused):
        return (f"Ask the customer to authorize QuickBooks again from TrustFile (it opens GET /extractor/connections/"
                f"{connection_id}/authentication); the connection waits for that without further alerts.")
    if error is None:
        return None
    if error.vendor == TrustFileHook.vendor and error.status in (401, 403):
        return ("Put the current extractor_to_avalara token (Avalara issues it) in the password of the Airflow "
                "connection trustfile_default, then clear the failed tasks: every TrustFile connection fails the "
                "same way until then.")
    if error.vendor == TrustFileHook.vendor and error.status == 404:
        return (f"TrustFile does not know this connection (HTTP 404): ask TrustFile whether the company was "
                f"deleted; if so, DELETE /extractor/connections/{connection_id}.")
    if error.vendor == ServiceTradeHook.vendor and error.status in (401, 403):
        return ("Fix the login and password of the company's ServiceTrade Airflow connection (its id is the "
                "connection's host identifier; servicetrade_default unless provisioned otherwise), then clear "
                "the task.")
    return None


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


# servicetrade_webhook_events updates this asset (by name: one integration never imports another) when invoices of
# ServiceTrade accounts changed; its extra names them: {"accounts": [...]}.
SERVICETRADE_INVOICES_CHANGED = "servicetrade_invoices_changed"


def changed_servicetrade_accounts(triggering_asset_events) -> set[str] | None:
    """The ServiceTrade accounts the run's triggering asset events name; None for a run no asset event
    triggered (scheduled or manual: every due connection runs)."""
    if not triggering_asset_events:
        return None
    accounts: set[str] = set()
    for asset in triggering_asset_events:
        if getattr(asset, "name", None) != SERVICETRADE_INVOICES_CHANGED:
            continue
        for event in triggering_asset_events[asset]:
            named = (getattr(event, "extra", None) or {}).get("accounts") or []
            accounts.update(str(a) for a in named if isinstance(a, str))
    return accounts


def servicetrade_connections_of(conn, connection_ids: list[str], accounts: set[str]) -> list[str]:
    """Of `connection_ids`, those whose host is ServiceTrade and whose account is one of `accounts`."""
    return [r[0] for r in conn.execute(
        "SELECT connection_id FROM trustfile.connections WHERE connection_id = ANY(%s) "
        "AND host_system = 'servicetrade' AND host_identifier = ANY(%s) ORDER BY connection_id",
        (connection_ids, sorted(accounts))).fetchall()]


def due_scopes(context=None) -> list[dict]:
    """The due connections with their display names, which name the mapped sync tasks in the UI. In a run that
    ServiceTrade's changed invoices triggered, only the due connections of those accounts."""
    ready = due_connections()
    accounts = changed_servicetrade_accounts((context or {}).get("triggering_asset_events"))
    with db.connect() as conn:
        if accounts is not None:
            ready = servicetrade_connections_of(conn, ready, accounts)
            log.info("run triggered by changed ServiceTrade invoices of %s: %d connection(s) of theirs due: %s",
                     ", ".join(sorted(accounts)) or "no account", len(ready), ", ".join(ready) or "none")
        shown = status.names(conn, ready)
    return [{"connection_id": c, "name": shown.get(c, c)} for c in ready]


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


def _run(connection_id: str, context, work, *, backfill: str | None = None) -> dict:
    """`work` for one connection, its failures summarized for on-call first. A scheduled sync tells TrustFile
    how it went (status, errors); a backfill (described by `backfill`) only adds an activity."""
    scheduled = backfill is None
    scope = Scope(SCOPE, connection_id, more=FAILURES_TABLE)
    with reported(context, scope, next_step=lambda exc: next_step(exc, connection_id)):
        with db.connect() as conn:
            scope.name = status.names(conn, [connection_id]).get(connection_id)
            conn.commit()
            report = _work(conn, connection_id, context, work, scheduled)
            summary = _summary(report)
            if scheduled:
                status.record_sync(conn, connection_id, message=summary, activity=f"Synced: {summary}",
                                   next_sync_at=next_sync_at())
            else:
                status.record_backfill(conn, connection_id, f"Backfill ({backfill}): {summary}")
    log.info("%s (%s): %s", connection_id, scope.name, summary)
    return report.as_dict()


def _work(conn, connection_id: str, context, work, scheduled: bool) -> SyncReport:
    ti = context["ti"]
    try:
        job = build_job(conn, connection_id)
        return work(conn, job, run_id=context["run_id"], task_id=ti.task_id, try_number=ti.try_number)
    except ConnectionGone as gone:
        if scheduled:
            raise AirflowSkipException(str(gone)) from None
        raise BadInput(f"{gone}: there is nothing to backfill") from None
    except RefreshTokenRefused as refused:
        message = reconsent_message(connection_id, refused)
        if status.record_consent_lost(conn, connection_id, refused.consent_fingerprint, message):
            raise NeedsReconsent(f"connection {connection_id} {message}") from refused
        if scheduled:
            status.record_failure(conn, connection_id, error_type(refused), f"{type(refused).__name__}: {refused}",
                                  next_sync_at())
        raise
    except BaseException as exc:
        if scheduled:
            status.record_failure(conn, connection_id, error_type(exc), f"{type(exc).__name__}: {exc}",
                                  next_sync_at())
        raise


def sync(connection_id: str, context) -> dict:
    params = context["params"]
    budget = Budget(window_documents=int(params.get("window_documents") or 20_000),
                    max_documents=int(params.get("max_documents") or 100_000))
    return _run(connection_id, context, lambda conn, job, **kw: run_sync(conn, job, budget=budget, **kw))


# ---- trustfile_backfill -------------------------------------------------------------------------

def check_backfill_form(context) -> dict:
    """The first task of trustfile_backfill: what the form cannot check at parse time (the connection exists
    and can be read, the window is not empty). Reads only; a refusal fails at once, listing what is valid."""
    params = context["params"]
    connection_id = (params.get("connection_id") or "").strip()
    scope = Scope(SCOPE, connection_id or "(none given)", more=FAILURES_TABLE)
    with reported(context, scope):
        with db.connect() as conn:
            known = status.names(conn)
            found = connections.get(conn, connection_id) if connection_id in known else None
        scope.name = known.get(connection_id, "no such connection")
        if found is None:
            given = f"no TrustFile connection {connection_id!r}" if connection_id else "the form names no connection"
            raise BadInput(f"{given}; {_listing(known)}")
        start, end = (_date_param(params, name) for name in ("start", "end"))
        if not start < end:
            later = max(start, end + dt.timedelta(days=1))
            raise BadInput(f"end {end} is not after start {start}: the window [start, end) would be empty; "
                           f"e.g. start {min(start, end)}, end {later}")
        mode = params.get("mode") or "reload"
        if mode not in MODES:
            raise BadInput(f"mode {mode!r} is not one of {', '.join(MODES)}")
        if mode == "reload" and not found.authorized:
            raise BadInput(f"connection {connection_id} ({scope.name}) is not authorized at its host system: "
                           "there is nothing to reload; a repush needs no authorization")
    log.info("backfill %s of %s (%s): [%s, %s)", mode, connection_id, scope.name, start, end)
    return {"connection_id": connection_id, "name": scope.name, "start": start.isoformat(), "end": end.isoformat(),
            "mode": mode}


def _listing(known: dict[str, str]) -> str:
    if not known:
        return "there is no TrustFile connection yet"
    shown = ", ".join(f"{c} ({name})" for c, name in list(known.items())[:LISTED])
    more = f" and {len(known) - LISTED} more (GET /extractor/connections)" if len(known) > LISTED else ""
    return f"the connections are: {shown}{more}"


def _date_param(params: dict, name: str) -> dt.date:
    value = params.get(name)
    try:
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        raise BadInput(f"param {name}={value!r} is not a date (yyyy-mm-dd, e.g. 2026-01-05)") from None


def backfill(form: dict, context) -> dict:
    """Re-process [start, end) (midnight UTC) of the connection the first task checked."""
    since, until = (start_of(dt.date.fromisoformat(form[name])) for name in ("start", "end"))
    return _run(form["connection_id"], context,
                lambda conn, job, **kw: run_backfill(conn, job, mode=form["mode"], since=since, until=until, **kw),
                backfill=f"{form['mode']} of {form['start']} .. {form['end']}")
