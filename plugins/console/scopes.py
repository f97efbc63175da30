"""What the Integrations page says of every (pipeline, scope): read in three statements, whatever their number.

The scopes are every TrustFile connection (named by its company, else its host system and account), and every
other (pipeline, scope) that has a watermark or a scheduled run in the ledger. Per scope, from the engine's
tables: the last scheduled success, the open failures (failed runs since then: how many, the latest one's
first line and its runbook link), the records waiting in quarantine, and the credential of the registry
(etl.credentials) that expires next. Backfills are manual and not part of the schedule: they are left out.
Request budgets are per vendor credential (a tenant), not per scope: each integration lists its own budgets
(etl.request_budget.usage: used and left in the current window, when it resets, the vendor's last report).

A TrustFile connection's columns are read in the same statement (a join, not a second query), and its name
is made by the TrustFile package's own `display_name`, so the page names a company as its alerts and its
mapped tasks do.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

import psycopg
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable
from croniter import croniter

from etl import maintenance
from etl.request_budget import Budget, usage
from integrations.servicetrade.assets import SERVICETRADE_INVOICES_CHANGED
from integrations.trustfile import status as trustfile_status
from integrations.trustfile import sync as trustfile_sync
from notifiers import runbook

UTC = dt.timezone.utc
SUMMARY_LIMIT = 300


@dataclass(frozen=True)
class Pipeline:
    """A scheduled pipeline: whose it is, when it runs (its DAG's schedule), how late it may finish, and the
    runbook section for its failures (a docs/ path and a heading)."""

    integration: str
    schedule: str | AssetOrTimeSchedule     # a cron string, or its time part with the assets that also run it
    grace: dt.timedelta
    runbook: tuple[str, str | None]

    @property
    def cron(self) -> str:
        """The time part of the schedule: what the page measures lateness against (asset-triggered runs come
        on top of it)."""
        return self.schedule if isinstance(self.schedule, str) else self.schedule.timetable.expression

    def next_run(self, after: dt.datetime) -> dt.datetime:
        return croniter(self.cron, after).get_next(dt.datetime)

    def interval(self, at: dt.datetime) -> dt.timedelta:
        ticks = croniter(self.cron, at)
        first = ticks.get_next(dt.datetime)
        return ticks.get_next(dt.datetime) - first


# The schedules are the DAGs' own (tests/console checks them against dags/); the pipeline name is the DAG id.
PIPELINES: dict[str, Pipeline] = {
    # hourly, and when ServiceTrade invoices change (servicetrade_webhook_events' asset event)
    trustfile_sync.PIPELINE: Pipeline("trustfile", AssetOrTimeSchedule(
                                          timetable=CronTriggerTimetable("@hourly", timezone="UTC"),
                                          assets=[SERVICETRADE_INVOICES_CHANGED]), dt.timedelta(minutes=30),
                                      ("integrations/trustfile.md", "Sync failures and what on-call does")),
    maintenance.PIPELINE: Pipeline("platform", "@daily", dt.timedelta(hours=2),
                                   ("runbook.md", "integrations_maintenance")),
    "itsperfect_stock": Pipeline("itsperfect", "@hourly", dt.timedelta(minutes=45),
                                 ("integrations/itsperfect.md", "Failures and what on-call does")),
    "itsperfect_orders": Pipeline("itsperfect", "*/15 * * * *", dt.timedelta(minutes=30),
                                  ("integrations/itsperfect.md", "Failures and what on-call does")),
    "oms_completed_dates": Pipeline("oms", "@hourly", dt.timedelta(minutes=45),
                                    ("integrations/oms-pro.md", "Failures and what on-call does")),
    "oms_payment_linking": Pipeline("oms", "*/15 * * * *", dt.timedelta(minutes=30),
                                    ("integrations/oms-pro.md", "Failures and what on-call does")),
    "ppms_sync": Pipeline("ppms", "@hourly", dt.timedelta(minutes=45),
                          ("integrations/ppms.md", "Failures and what on-call does")),
}
DEFAULT_RUNBOOK = ("runbook.md", None)
# Why a TrustFile connection is not due (the first statement's codes), for people.
WAITING = {"connector_off": "TrustFile connector switched off", "disabled": "disabled by TrustFile",
           "signing_up": "signup to TrustFile in progress", "signup_failed": "signup to TrustFile failed",
           "consent_lost": "needs re-consent at {host}", "not_authorized": "waiting for authorization at {host}"}
# Integrations and host systems as people call them (keys as in etl.credentials.integration).
TITLES = {"trustfile": "TrustFile", "qbo": "QuickBooks Online", "servicetrade": "ServiceTrade",
          "itsperfect": "ItsPerfect", "ppms": "Stratocore PPMS", "oms": "OMS-Pro (TrackVia)", "platform": "Platform"}
# The integration whose section shows a request budget, by the budget's vendor when they are named apart.
BUDGET_OWNERS = {"trackvia": "oms"}


@dataclass(frozen=True)
class Timing:
    """A pipeline's schedule around the moment the page is read: computed once per page, not per scope."""

    pipeline: Pipeline
    next_run: dt.datetime
    interval: dt.timedelta


@dataclass(frozen=True)
class Expiry:
    name: str
    expires_at: dt.datetime


@dataclass(frozen=True)
class Failure:
    """The failed scheduled runs since the last success: how many, and the latest one."""

    count: int
    summary: str
    at: dt.datetime
    run_id: str
    task_id: str | None
    runbook_url: str


@dataclass(frozen=True)
class ScopeRow:
    integration: str
    pipeline: str
    scope: str
    name: str
    state: str                          # running | failed | waiting | deferred
    state_at: dt.datetime | None        # running since / deferred until
    waiting: str | None                 # why a waiting scope is not expected to run
    last_success_at: dt.datetime | None
    lag: dt.timedelta | None            # past its due time (last success + interval + grace); None: not expected
    quarantined: int
    credential: Expiry | None
    failure: Failure | None

    @property
    def late(self) -> bool:
        return bool(self.lag)


@dataclass
class Integration:
    key: str
    title: str
    credential: Expiry | None = None    # the next expiry among all its credentials
    scopes: list[ScopeRow] = field(default_factory=list)
    budgets: list[Budget] = field(default_factory=list)     # its vendors' request budgets, current window


@dataclass(frozen=True)
class Overview:
    now: dt.datetime
    integrations: list[Integration]

    def integration(self, key: str) -> Integration:
        return next(i for i in self.integrations if i.key == key)

    def scope(self, pipeline: str, scope: str) -> ScopeRow:
        return next(r for i in self.integrations for r in i.scopes if (r.pipeline, r.scope) == (pipeline, scope))

    @property
    def rows(self) -> list[ScopeRow]:
        return [r for i in self.integrations for r in i.scopes]

    @property
    def next_expiry(self) -> Expiry | None:
        expiries = [i.credential for i in self.integrations if i.credential]
        return min(expiries, key=lambda e: e.expires_at, default=None)


# Scopes of other pipelines come from the ledger's (pipeline, scope, started_at) index, one probe per scope
# (a loose index scan), rather than from a scan of every run it keeps.
SCOPES_SQL = """
WITH RECURSIVE ledger_scopes AS (
    (SELECT pipeline, scope FROM etl.run_ledger ORDER BY pipeline, scope LIMIT 1)
    UNION ALL
    SELECT n.pipeline, n.scope FROM ledger_scopes s CROSS JOIN LATERAL (
        SELECT l.pipeline, l.scope FROM etl.run_ledger l WHERE (l.pipeline, l.scope) > (s.pipeline, s.scope)
         ORDER BY l.pipeline, l.scope LIMIT 1) n
), tf AS (
    SELECT %(tf)s::text AS pipeline, c.connection_id AS scope, c.company_name, c.host_system, c.host_identifier,
           c.next_sync_at, CASE WHEN c.start_date > %(today)s THEN c.start_date END AS starts_on,
           CASE WHEN NOT k.enabled THEN 'connector_off' WHEN NOT c.enabled THEN 'disabled'
                WHEN c.provisioning_state NOT IN ('external', 'provisioned') THEN c.provisioning_state
                WHEN c.consent_lost_at IS NOT NULL THEN 'consent_lost'
                WHEN c.host_credentials IS NULL THEN 'not_authorized' END AS waiting
      FROM trustfile.connections c CROSS JOIN trustfile.connector k
), scopes AS (
    SELECT pipeline, scope FROM tf
    UNION SELECT pipeline, scope FROM etl.watermarks WHERE pipeline <> %(tf)s
    UNION SELECT pipeline, scope FROM ledger_scopes WHERE pipeline <> %(tf)s
), credentials AS (
    SELECT DISTINCT ON (scope) scope, name, expires_at FROM etl.credentials
     WHERE scope IS NOT NULL AND expires_at IS NOT NULL ORDER BY scope, expires_at
)
SELECT s.pipeline, s.scope, tf.company_name, tf.host_system, tf.host_identifier, tf.next_sync_at, tf.starts_on,
       tf.waiting, w.paused_reason, ok.finished_at, latest.status, latest.started_at,
       failed.count, failed.error, failed.started_at, failed.run_id, failed.task_id,
       (SELECT count(*) FROM etl.quarantine q WHERE q.pipeline = s.pipeline AND q.scope = s.scope),
       cr.name, cr.expires_at
  FROM scopes s
  LEFT JOIN tf ON (tf.pipeline, tf.scope) = (s.pipeline, s.scope)
  LEFT JOIN etl.watermarks w ON (w.pipeline, w.scope) = (s.pipeline, s.scope)
  LEFT JOIN credentials cr ON cr.scope = s.scope
  LEFT JOIN LATERAL (
        SELECT l.started_at, l.finished_at FROM etl.run_ledger l
         WHERE (l.pipeline, l.scope) = (s.pipeline, s.scope) AND l.status = 'success' AND l.mode <> 'backfill'
         ORDER BY l.started_at DESC LIMIT 1) ok ON true
  LEFT JOIN LATERAL (
        SELECT l.status, l.started_at FROM etl.run_ledger l
         WHERE (l.pipeline, l.scope) = (s.pipeline, s.scope) AND l.mode <> 'backfill'
         ORDER BY l.started_at DESC, l.id DESC LIMIT 1) latest ON true
  LEFT JOIN LATERAL (
        SELECT count(*) OVER () AS count, l.error, l.started_at, l.run_id, l.task_id FROM etl.run_ledger l
         WHERE (l.pipeline, l.scope) = (s.pipeline, s.scope) AND l.status = 'failed' AND l.mode <> 'backfill'
           AND l.started_at > coalesce(ok.started_at, '-infinity')
         ORDER BY l.started_at DESC, l.id DESC LIMIT 1) failed ON true
"""

INTEGRATION_CREDENTIALS_SQL = """
SELECT DISTINCT ON (integration) integration, name, expires_at FROM etl.credentials
 WHERE expires_at IS NOT NULL ORDER BY integration, expires_at
"""


def overview(conn: psycopg.Connection, now: dt.datetime | None = None) -> Overview:
    """Every integration with its scopes (problems first) and request budgets; three statements."""
    now = now or dt.datetime.now(UTC)
    rows = conn.execute(SCOPES_SQL, {"tf": trustfile_sync.PIPELINE, "today": now.astimezone(UTC).date()}).fetchall()
    integrations = {p.integration: Integration(p.integration, TITLES.get(p.integration, p.integration))
                    for p in PIPELINES.values()}
    for key, name, expires_at in conn.execute(INTEGRATION_CREDENTIALS_SQL).fetchall():
        integrations.setdefault(key, Integration(key, TITLES.get(key, key))).credential = Expiry(name, expires_at)
    timings = {name: Timing(p, p.next_run(now), p.interval(now)) for name, p in PIPELINES.items()}
    for row in rows:
        scope = _scope_row(row, now, timings.get(row[0]))
        integrations.setdefault(scope.integration, Integration(scope.integration, TITLES.get(scope.integration,
                                                                                            scope.integration)))
        integrations[scope.integration].scopes.append(scope)
    for budget in usage(conn, now=now):
        owner = BUDGET_OWNERS.get(budget.vendor, budget.vendor)
        integrations.setdefault(owner, Integration(owner, TITLES.get(owner, owner)))
        integrations[owner].budgets.append(budget)
    for integration in integrations.values():
        integration.scopes.sort(key=_problems_first)
    return Overview(now, sorted(integrations.values(),
                                key=lambda i: (i.key == "platform", not (i.scopes or i.budgets), i.title)))


def _problems_first(row: ScopeRow) -> tuple:
    rank = {"failed": 0, "running": 2, "deferred": 2, "waiting": 3}[row.state]
    if row.late and row.state != "failed":
        rank = 1
    return rank, row.name.lower(), row.scope


def _scope_row(row: tuple, now: dt.datetime, timing: Timing | None) -> ScopeRow:
    (pipeline_name, scope, company, host_system, host_identifier, next_sync_at, starts_on, waiting_code, paused,
     last_success, latest_status, latest_started, failures, error, failed_at, run_id, task_id, quarantined,
     cred_name, cred_expires) = row
    pipeline = timing.pipeline if timing else None
    waiting = WAITING[waiting_code].format(host=TITLES.get(host_system, host_system)) if waiting_code else paused
    state, state_at = _state(timing, now, waiting, latest_status, latest_started, failures, next_sync_at,
                             starts_on)
    return ScopeRow(
        integration=pipeline.integration if pipeline else pipeline_name, pipeline=pipeline_name, scope=scope,
        name=_name(scope, company, host_system, host_identifier), state=state, state_at=state_at, waiting=waiting,
        last_success_at=last_success, lag=None if waiting else _lag(timing, now, last_success),
        quarantined=quarantined, credential=Expiry(cred_name, cred_expires) if cred_expires else None,
        failure=_failure(pipeline, failures, error, failed_at, run_id, task_id) if failures else None)


def _name(scope: str, company: str | None, host_system: str | None, host_identifier: str | None) -> str:
    if host_system is None:            # not a TrustFile connection: its scope is its name
        return scope
    return trustfile_status.display_name(company.strip() if company else None, host_system, host_identifier)


def _state(timing: Timing | None, now: dt.datetime, waiting: str | None, latest_status: str | None,
           latest_started: dt.datetime | None, failures: int | None, next_sync_at: dt.datetime | None,
           starts_on: dt.date | None) -> tuple[str, dt.datetime | None]:
    if latest_status == "running":
        return "running", latest_started
    if failures:
        return "failed", None
    if waiting:
        return "waiting", None
    if starts_on:
        return "deferred", dt.datetime.combine(starts_on, dt.time(), UTC)
    if next_sync_at and next_sync_at > now:
        return "deferred", next_sync_at
    return "deferred", timing.next_run if timing else None


def _lag(timing: Timing | None, now: dt.datetime, last_success: dt.datetime | None) -> dt.timedelta | None:
    if timing is None or last_success is None:
        return None
    due = last_success + timing.interval + timing.pipeline.grace
    return max(now - due, dt.timedelta(0))


def _failure(pipeline: Pipeline | None, count: int, error: str | None, at: dt.datetime, run_id: str,
             task_id: str | None) -> Failure:
    text = (error or "").strip()
    summary = text.splitlines()[0][:SUMMARY_LIMIT] if text else "failed without an error message"
    return Failure(count, summary, at, run_id, task_id, _runbook_url(pipeline, text))


def _runbook_url(pipeline: Pipeline | None, error: str) -> str:
    """The runbook link the failure's own message carries (the failure summaries name their section), else the
    pipeline's runbook section."""
    base = runbook.docs_url("")
    found = re.search(re.escape(base) + r"[^\s\"'<>]*[^\s\"'<>.,;:)]", error)
    if found:
        return found.group(0)
    return runbook.docs_url(*(pipeline.runbook if pipeline else DEFAULT_RUNBOOK))
