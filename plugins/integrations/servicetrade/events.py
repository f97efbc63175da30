"""Processing of ripe webhook events: each announced entity's current state fetched from ServiceTrade and kept.

An event (servicetrade.webhook_events, folded by the inbox) is ripe once its entity has been quiet for the
account's `quiet_seconds`, or `max_wait_seconds` after its first notification for an entity that keeps changing
(include/servicetrade_webhooks.yaml; accounts not listed there use its defaults). The thresholds of every account
travel as one array per column into a single statement, whatever the number of accounts.

`process` works account by account. An account's ripe events are read once (with the version each had), then
handled in batches of at most `batch_size`; a batch is
  1. ONE ServiceTrade session (`with hook.transaction():`, always ended) fetching each entity (`hook.get`;
     404 means ServiceTrade no longer has it), then
  2. ONE transaction of our database: the records upserted per entity type (entities.store: inserted, updated,
     unchanged), the deleted ones marked (entities.mark_deleted), and the events marked done: pending=false,
     fetched_at, fetches+1, attempts=0, last_error null, notifications=0, ONLY where the event's version is the
     one read. A notification that arrived after the read bumped the version: that event stays pending (its
     fetched_at and fetches still say the fetch happened) and the next run fetches it again.
An entity whose fetch fails (ServiceTrade's error other than 404, after the hook's retries, or an answer we cannot
keep) stays pending with attempts+1 and its error (secrets redacted); the others of the batch load. Once every
account was handled, a run with failures raises EventFetchFailed naming how many failed and which (type id), so
the task fails and on-call reads them. Credentials refused (401/403) stop the account at once: every fetch would
fail the same way, and nothing is counted against its events.

Each account's run is a ledger row (pipeline = the DAG id, scope = the account, mode `incremental`), closed
`success` with its counts, or `failed` with the error. Runs of one account never overlap (an advisory lock; a
second run skips the account). Each event is fetched at most once per run.
"""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import psycopg

from etl import db, ledger
from hooks.servicetrade import ServiceTradeHook
from hooks.vendor_http import VendorApiError
from integrations.servicetrade import entities
from integrations.servicetrade.webhook_config import WebhookConfig

log = logging.getLogger(__name__)

PIPELINE = "servicetrade_webhook_events"
DEFAULT_BATCH_SIZE = 100
LISTED_FAILURES = 20         # failures an error message names; the rest are counted
OUTAGE_AFTER = 3             # fetches failing in a row on server errors (each through its retries): stop the account


@dataclass(frozen=True)
class RipeEvent:
    account: str
    entity_type: str
    entity_id: int
    version: int

    def __str__(self) -> str:
        return f"{self.entity_type} {self.entity_id}"


def thresholds(config: WebhookConfig) -> dict:
    """The statement parameters of every account's ripeness thresholds (arrays, one element per account listed
    in the configuration) and of the defaults (every other account)."""
    accounts = sorted(config.accounts)
    return {"accounts": accounts,
            "quiet": [config.accounts[a].quiet_seconds for a in accounts],
            "max_wait": [config.accounts[a].max_wait_seconds for a in accounts],
            "default_quiet": config.defaults.quiet_seconds,
            "default_max_wait": config.defaults.max_wait_seconds}


# The ripe pending events, with each one's `ripe_at` (when it ripened: quiet window or maximum wait, whichever
# came first). `now` null means the database's clock (the inbox stamps received_at with it too).
RIPE_EVENTS = """
WITH rules AS (
    SELECT * FROM unnest(%(accounts)s::text[], %(quiet)s::int[], %(max_wait)s::int[]) AS r(account, quiet, max_wait)
), at AS (
    SELECT coalesce(%(now)s::timestamptz, clock_timestamp()) AS now
), ripe AS (
    SELECT e.account, e.entity_type, e.entity_id, e.version, e.first_seen,
           least(e.last_seen + make_interval(secs => coalesce(r.quiet, %(default_quiet)s)),
                 e.first_seen + make_interval(secs => coalesce(r.max_wait, %(default_max_wait)s))) AS ripe_at
      FROM servicetrade.webhook_events e
      LEFT JOIN rules r ON r.account = e.account
     WHERE e.pending
       AND (%(only_account)s::text IS NULL OR e.account = %(only_account)s)
)
"""

SELECT_RIPE = RIPE_EVENTS + """
SELECT account, entity_type, entity_id, version FROM ripe, at
 WHERE ripe_at <= at.now
 ORDER BY account, first_seen, entity_type, entity_id
 LIMIT %(limit)s
"""

# What the trigger polls: how many are ripe, and when the latest of them ripened.
COUNT_RIPE = RIPE_EVENTS + """
SELECT count(*), max(ripe_at) FROM ripe, at WHERE ripe_at <= at.now
"""


def ripe_params(config: WebhookConfig, now: dt.datetime | None = None, limit: int | None = None,
                account: str | None = None) -> dict:
    return {**thresholds(config), "now": now, "limit": limit, "only_account": account}


def ripe(conn: psycopg.Connection, config: WebhookConfig, now: dt.datetime | None = None, limit: int | None = None,
         *, account: str | None = None) -> list[RipeEvent]:
    """Pending events whose entity has been quiet for its account's quiet window, or whose first notification
    is older than its maximum wait; oldest first, per account. Leaves the caller's transaction open."""
    rows = conn.execute(SELECT_RIPE, ripe_params(config, now, limit, account)).fetchall()
    return [RipeEvent(*row) for row in rows]


@dataclass
class TypeCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


@dataclass
class AccountReport:
    account: str
    ripe: int = 0
    fetched: int = 0
    deleted: int = 0              # entities ServiceTrade answered 404 for (rows newly marked deleted: marked)
    marked_deleted: int = 0
    failed: int = 0
    kept_pending: int = 0         # fetched, but a notification arrived after the read: fetched again next run
    sessions: int = 0
    batches: int = 0
    types: dict[str, TypeCounts] = field(default_factory=dict)
    changed_invoices: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)     # "type id: error", at most LISTED_FAILURES
    skipped: str | None = None    # why the account was not processed this run
    error: str | None = None      # what stopped the account (its ledger row says the same)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ProcessReport:
    accounts: dict[str, AccountReport] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(a.failed for a in self.accounts.values())

    def invoices_changed(self) -> dict[str, list[int]]:
        """Per account whose invoices were inserted or updated this run: their ids."""
        return {a.account: sorted(a.changed_invoices) for a in self.accounts.values() if a.changed_invoices}

    def as_dict(self) -> dict:
        return {"accounts": {name: report.as_dict() for name, report in sorted(self.accounts.items())},
                "invoices_changed": self.invoices_changed(), "failed": self.failed}


class EventFetchFailed(RuntimeError):
    """Some announced entities could not be fetched (or an account could not be processed): they stay pending,
    and every run tries them again. The message names how many and which."""

    system = ServiceTradeHook.vendor
    next_step = ("The entities named stay pending and every run fetches them again. Read each one's error in "
                 "servicetrade.webhook_events (last_error, attempts); if ServiceTrade keeps refusing one, see "
                 "docs/integrations/servicetrade.md, 'Webhooks: failures and what on-call does'.")


class AccountFailed(RuntimeError):
    """One account's run ended with failed fetches (its ledger row is marked failed with this message)."""


# ---- the batch's database writes ------------------------------------------------------------------------

MARK_DONE = """
UPDATE servicetrade.webhook_events e
   SET pending = false, fetched_at = clock_timestamp(), fetches = e.fetches + 1, attempts = 0, last_error = NULL,
       notifications = 0
  FROM unnest(%(types)s::text[], %(ids)s::bigint[], %(versions)s::bigint[]) AS d(entity_type, entity_id, version)
 WHERE e.account = %(account)s AND e.entity_type = d.entity_type AND e.entity_id = d.entity_id
   AND e.version = d.version AND e.pending
"""

# Fetched, but renamed by a message since the read: still pending; the fetch is recorded, and its notifications
# and first_seen count from the messages after the read (approximately: from the latest one).
MARK_FETCHED_STILL_PENDING = """
UPDATE servicetrade.webhook_events e
   SET fetched_at = clock_timestamp(), fetches = e.fetches + 1, attempts = 0, last_error = NULL,
       notifications = greatest(e.version - d.version, 1), first_seen = e.last_seen
  FROM unnest(%(types)s::text[], %(ids)s::bigint[], %(versions)s::bigint[]) AS d(entity_type, entity_id, version)
 WHERE e.account = %(account)s AND e.entity_type = d.entity_type AND e.entity_id = d.entity_id
   AND e.version <> d.version AND e.pending
"""

MARK_FAILED = """
UPDATE servicetrade.webhook_events e
   SET attempts = e.attempts + 1, last_error = d.error
  FROM unnest(%(types)s::text[], %(ids)s::bigint[], %(errors)s::text[]) AS d(entity_type, entity_id, error)
 WHERE e.account = %(account)s AND e.entity_type = d.entity_type AND e.entity_id = d.entity_id AND e.pending
"""


def _columns(account: str, events: Iterable[RipeEvent], **extra: list) -> dict:
    events = list(events)
    return {"account": account, "types": [e.entity_type for e in events], "ids": [e.entity_id for e in events],
            "versions": [e.version for e in events], **extra}


@dataclass
class _Fetched:
    records: dict[str, list[dict]] = field(default_factory=dict)   # entity type -> current states
    deleted: dict[str, list[int]] = field(default_factory=dict)    # entity type -> ids ServiceTrade has not
    done: list[RipeEvent] = field(default_factory=list)
    failed: list[tuple[RipeEvent, str]] = field(default_factory=list)
    outage: str | None = None     # ServiceTrade stopped answering: the batch's remaining events were not tried
    last_error: VendorApiError | None = None


def _fetch(hook: ServiceTradeHook, batch: list[RipeEvent]) -> _Fetched:
    """One session: every entity of the batch fetched. A refused session (401/403) raises; any other error of
    ServiceTrade's is that entity's failure."""
    fetched = _Fetched()
    in_a_row = 0
    with hook.transaction():
        for event in batch:
            try:
                record = hook.get(event.entity_type, event.entity_id)
            except VendorApiError as exc:
                if exc.status in (401, 403):
                    raise
                fetched.failed.append((event, str(exc)))
                fetched.last_error = exc
                in_a_row = in_a_row + 1 if exc.transient else 0
                if in_a_row >= OUTAGE_AFTER:
                    fetched.outage = (f"ServiceTrade failed {in_a_row} fetches in a row (last: {exc}); the account's "
                                      "other events were not tried this run")
                    break
                continue
            in_a_row = 0
            if record is None:
                fetched.deleted.setdefault(event.entity_type, []).append(event.entity_id)
            elif record.get("updated") is None:
                fetched.failed.append((event, f"ServiceTrade answered {event} without `updated`: cannot keep it"))
                continue
            else:
                fetched.records.setdefault(event.entity_type, []).append(record)
            fetched.done.append(event)
    return fetched


def _write(conn: psycopg.Connection, account: str, fetched: _Fetched, report: AccountReport) -> None:
    """The batch's one transaction: upserts, deletions, events marked."""
    with conn.transaction():
        for entity_type, records in sorted(fetched.records.items()):
            changed = _changed_invoices(conn, account, records) if entity_type == "invoice" else []
            counts = entities.store(conn, entity_type, account, records)
            report.changed_invoices.extend(changed)
            tally = report.types.setdefault(entity_type, TypeCounts())
            tally.inserted += counts.inserted
            tally.updated += counts.updated
            tally.unchanged += counts.unchanged
        for entity_type, ids in sorted(fetched.deleted.items()):
            report.marked_deleted += entities.mark_deleted(conn, entity_type, account, ids)
        if fetched.done:
            columns = _columns(account, fetched.done)
            done = conn.execute(MARK_DONE, columns).rowcount
            report.kept_pending += conn.execute(MARK_FETCHED_STILL_PENDING, columns).rowcount
            log.debug("%d events marked done", done)
        if fetched.failed:
            errors = [ledger.redact_text(error)[:ledger.ERROR_TEXT_LIMIT] for _, error in fetched.failed]
            conn.execute(MARK_FAILED, _columns(account, (e for e, _ in fetched.failed), errors=errors))


# Which of the invoices about to be stored are new, different from the record we hold, or back from a deletion
# (what the loader will insert or update: the typed columns are read from the record). A record held as a jsonb
# string of its JSON text (how entities.store wrote it at first) is read as the object it spells.
CHANGED_INVOICES = """
SELECT n.id FROM unnest(%s::bigint[], %s::jsonb[]) AS n(id, record)
  LEFT JOIN servicetrade.invoices i ON i.account = %s AND i.id = n.id
 WHERE i.id IS NULL OR i.deleted_at IS NOT NULL
    OR CASE jsonb_typeof(i.record) WHEN 'string' THEN (i.record #>> '{}')::jsonb ELSE i.record END
       IS DISTINCT FROM n.record
"""


def _changed_invoices(conn: psycopg.Connection, account: str, records: list[dict]) -> list[int]:
    rows = [entities.ENTITIES["invoice"].row(account, r) for r in records]
    return sorted({row[0] for row in conn.execute(CHANGED_INVOICES, ([r[1] for r in rows], [r[-2] for r in rows],
                                                                     account)).fetchall()})


# ---- the procedure -------------------------------------------------------------------------------------

def ripe_accounts(conn: psycopg.Connection, config: WebhookConfig) -> list[str]:
    rows = conn.execute(f"SELECT DISTINCT account FROM ({SELECT_RIPE}) r ORDER BY account",
                        ripe_params(config)).fetchall()
    conn.commit()
    return [r[0] for r in rows]


def process(conn: psycopg.Connection, config: WebhookConfig, hook_for: Callable[[str], ServiceTradeHook],
            batch_size: int = DEFAULT_BATCH_SIZE, run_id: str = "manual", *, task_id: str | None = None,
            try_number: int | None = None) -> ProcessReport:
    """Fetch and keep every ripe event's entity, account by account; raise EventFetchFailed at the end if any
    entity could not be fetched or any account not processed (the others are committed)."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    report = ProcessReport()
    problems: list[BaseException] = []
    for account in ripe_accounts(conn, config):
        account_report = report.accounts[account] = AccountReport(account)
        info = ledger.RunInfo(PIPELINE, account, run_id, "incremental", task_id=task_id, try_number=try_number)
        try:
            with db.session_lock(conn, f"{PIPELINE}:{account}", wait=False) as held:
                if not held:
                    account_report.skipped = "another run holds this account"
                    log.warning("account %s: another run is processing its events; skipped", account)
                    continue
                _process_account(conn, config, account, hook_for(account), batch_size, info, account_report)
        except Exception as exc:  # noqa: BLE001 - the other accounts go on; raised together at the end
            if not isinstance(exc, AccountFailed):
                account_report.error = ledger.redact_text(f"{type(exc).__name__}: {exc}")[:500]
                log.error("account %s stopped: %s", account, account_report.error)
            problems.append(exc)
    for account in report.accounts.values():
        log.info("account %s: %s", account.account, _summary(account))
    if problems:
        raise _failure(report, problems) from problems[0]
    return report


def _process_account(conn: psycopg.Connection, config: WebhookConfig, account: str, hook: ServiceTradeHook,
                     batch_size: int, info: ledger.RunInfo, report: AccountReport) -> None:
    events = ripe(conn, config, account=account)
    conn.commit()
    report.ripe = len(events)
    last_error: VendorApiError | None = None
    with ledger.ledgered_run(conn, info, atomic=False) as run:
        for start in range(0, len(events), batch_size):
            batch = events[start:start + batch_size]
            report.sessions += 1
            fetched = _fetch(hook, batch)
            _write(conn, account, fetched, report)
            report.batches += 1
            report.fetched += len(fetched.done) - sum(map(len, fetched.deleted.values()))
            report.deleted += sum(map(len, fetched.deleted.values()))
            report.failed += len(fetched.failed)
            last_error = fetched.last_error or last_error
            for event, error in fetched.failed:
                if len(report.failures) < LISTED_FAILURES:
                    report.failures.append(f"{event}: {ledger.redact_text(error)[:300]}")
                log.warning("account %s: %s could not be fetched (stays pending): %s", account, event,
                            ledger.redact_text(error))
            if fetched.outage:
                report.error = ledger.redact_text(fetched.outage)[:500]
                raise AccountFailed(f"ServiceTrade account {account}: {fetched.outage}") from last_error
            log.info("account %s: batch %d: %d of %d events done (%d fetched, %d deleted, %d failed so far)",
                     account, report.batches, min(start + batch_size, len(events)), len(events), report.fetched,
                     report.deleted, report.failed)
        counts = run.counts
        counts.read = report.fetched + report.deleted
        counts.inserted = sum(t.inserted for t in report.types.values())
        counts.updated = sum(t.updated for t in report.types.values()) + report.marked_deleted
        counts.unchanged = sum(t.unchanged for t in report.types.values()) + report.deleted - report.marked_deleted
        if report.failed:
            raise AccountFailed(f"ServiceTrade account {account}: {report.failed} announced entit"
                                f"{'y' if report.failed == 1 else 'ies'} could not be fetched and stay pending: "
                                + "; ".join(report.failures)) from last_error


def _summary(report: AccountReport) -> str:
    if report.skipped:
        return f"skipped ({report.skipped})"
    types = ", ".join(f"{t} +{c.inserted} ~{c.updated} ={c.unchanged}" for t, c in sorted(report.types.items()))
    return (f"{report.ripe} ripe, {report.fetched} fetched ({types or 'nothing stored'}), {report.deleted} deleted, "
            f"{report.failed} failed, {report.kept_pending} renamed meanwhile (fetched again next run), "
            f"{report.sessions} session(s), {len(report.changed_invoices)} invoice(s) changed"
            + (f"; stopped: {report.error}" if report.error else ""))


def _failure(report: ProcessReport, problems: list[BaseException]) -> EventFetchFailed:
    parts = []
    for account in report.accounts.values():
        if account.failed:
            listed = ", ".join(f.split(":", 1)[0] for f in account.failures)
            more = account.failed - len(account.failures)
            parts.append(f"account {account.account}: {account.failed} failed ({listed}"
                         + (f" and {more} more" if more > 0 else "") + ")")
        elif account.error:
            parts.append(f"account {account.account} stopped: {account.error}")
    failed = report.failed
    return EventFetchFailed(f"ServiceTrade webhook events: {failed} entit{'y' if failed == 1 else 'ies'} could not "
                            f"be fetched and stay pending; {len(problems)} account(s) with problems: "
                            + "; ".join(parts))
