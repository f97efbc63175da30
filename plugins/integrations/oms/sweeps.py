"""Table sweeps (issue 12 item 5): a declared rule (integrations.oms.sweep_rules) run over a whole OMS-Pro view.

A dry run changes nothing: every record that would change goes to oms.sweep_changes as `planned`, with its
value before and after, and the log shows a sample. A real run PUTs only records whose value differs.

Resumable, record by record. The view is read with view_scan in pages of the batch size, and the scan's mark
(the greatest Updated handled and the ids handled at that second: the cursor) commits with each page's counts.
A change row commits as `sending` (its PUT counted) before its PUT and becomes `inserted` / `updated` /
`failed` after, so a run that dies anywhere resumes from its cursor (the next trigger, a retry, or the
budget's reset) and:
- redoes nothing: a record with a row in this run is not touched again (our PUT moves the record to the
  view's end, where the scan meets its new version; a `sending` row whose record already holds the value
  landed before the death and is settled then; one whose record changed otherwise since is `failed`, whether
  it landed unknown);
- skips nothing: every record not yet handled lies after the cursor (edits only stamp later times).
TrackVia refusing a record's value fails that record; refusing REFUSALS_IN_A_ROW changes in a row stops the
run (RuleRefused): the rule, not the records, is wrong. API calls: 3 lookups per attempt (views, the view's
structure, its count) + the pages read + one PUT per record that needed a change.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import psycopg
from psycopg.types.json import Jsonb

from etl import watermarks
from etl.ledger import redact_text
from etl.progress import Progress
from hooks.trackvia import TrackViaHook
from hooks.vendor_http import VendorApiError
from integrations.oms.config import ConfigError, OmsConfig
from integrations.oms.sweep_rules import SweepRule, check_rule, same_value
from integrations.oms.view_scan import UPDATED, Mark, scan_pages

log = logging.getLogger(__name__)

PIPELINE = "oms_table_sweep"        # the name its runs are claimed under (one run of a sweep at a time)
BATCH_SIZES = (2, 1000)             # each page overlaps the last by one record; TrackVia pages up to 1000
SAMPLE = 20
LOOKUPS = 3
REFUSALS_IN_A_ROW = 20              # then the rule's value, not a record, is what TrackVia refuses
UNANSWERED = "the PUT got no answer and the record was not seen holding the new value: whether it landed is unknown"


class SweepNotDeclared(ValueError):
    """The name is not a sweep of the config file."""


class RuleRefused(ValueError):
    """TrackVia refused every change of the last REFUSALS_IN_A_ROW: retrying the same rule cannot help."""


@dataclass
class SweepReport:
    """A run's totals over all its attempts (from oms.sweep_runs / oms.sweep_changes), for XCom and the log."""

    sweep: str
    dry_run: bool
    run: int = 0
    resumed: bool = False
    view: str = ""
    lookups: int = 0
    pages: int = 0
    puts: int = 0
    read: int = 0
    planned: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    sample: list[str] = field(default_factory=list)

    @property
    def api_calls(self) -> int:
        return self.lookups + self.pages + self.puts

    def as_dict(self) -> dict:
        return asdict(self) | {"api_calls": self.api_calls}


def rule_named(config: OmsConfig, sweep: str) -> SweepRule:
    rule = config.sweeps.get(sweep)
    if rule is None:
        raise SweepNotDeclared(f"no sweep {sweep!r} in {config.path or 'the OMS-Pro config'} "
                               f"(sweeps: {', '.join(sorted(config.sweeps)) or 'none'})")
    return rule


def run_sweep(conn: psycopg.Connection, hook: TrackViaHook, config: OmsConfig, *, sweep: str, dry_run: bool,
              batch_size: int, dag_run_id: str) -> SweepReport:
    """Run (or resume) `sweep`; `conn` must be outside a transaction. Raises BudgetSpent when TrackVia's
    budget is spent and RuleRefused when TrackVia refuses its changes in a row, with everything done so far
    committed."""
    rule = rule_named(config, sweep)
    if not BATCH_SIZES[0] <= batch_size <= BATCH_SIZES[1]:
        raise ValueError(f"batch size {batch_size}: must be {BATCH_SIZES[0]} to {BATCH_SIZES[1]}")
    with watermarks.claimed(conn, PIPELINE, sweep):
        view_id, structure = hook.view(rule.view, app=config.app)
        problems = check_rule(rule, structure, required=(UPDATED,))
        if problems:
            raise ConfigError(f"{config.path or 'the OMS-Pro config'}: sweeps.{sweep}: view {rule.view!r}: "
                              + "; ".join(problems))
        kinds = {str(f.get("name")): str(f.get("type")) for f in structure}
        total = hook.count(view_id)
        run_id, mark, resumed = _open_run(conn, rule, dry_run, batch_size, dag_run_id)
        _Run(conn, hook, view_id, rule, kinds, run_id, dry_run).work(mark, total, batch_size)
    report = _report(conn, rule, run_id, dry_run, resumed)
    _log_outcome(report)
    return report


def _open_run(conn: psycopg.Connection, rule: SweepRule, dry_run: bool, batch_size: int,
              dag_run_id: str) -> tuple[int, Mark | None, bool]:
    """(run id, cursor, resumed): the sweep's unfinished run of this kind when it applies the same rule, else
    a new run (an unfinished one with another rule is superseded: its cursor belongs to that rule)."""
    with conn.transaction():
        row = conn.execute(
            "SELECT id, fingerprint, cursor_updated, cursor_ids FROM oms.sweep_runs "
            "WHERE sweep = %s AND dry_run = %s AND status = 'running' FOR UPDATE", (rule.name, dry_run)).fetchone()
        if row and row[1] == rule.fingerprint:
            conn.execute("UPDATE oms.sweep_runs SET resumed_at = now(), batch_size = %s, lookups = lookups + %s "
                         "WHERE id = %s", (batch_size, LOOKUPS, row[0]))
            mark = Mark(row[2], frozenset(row[3])) if row[2] is not None else None
            log.info("sweep %s: resuming run %d from %s", rule.name, row[0],
                     f"the records after Updated {row[2].isoformat()} ({len(row[3])} handled at that second)"
                     if mark else "the beginning")
            return row[0], mark, True
        if row:
            conn.execute("UPDATE oms.sweep_runs SET status = 'superseded', finished_at = now() WHERE id = %s",
                         (row[0],))
            conn.execute("UPDATE oms.sweep_changes SET outcome = 'failed', error = %s WHERE run_id = %s "
                         "AND outcome = 'sending'", (UNANSWERED, row[0]))
            log.warning("sweep %s: unfinished run %d applied another version of the rule: superseded, this run "
                        "starts from the beginning", rule.name, row[0])
        run_id = conn.execute(
            "INSERT INTO oms.sweep_runs (sweep, dry_run, rule, fingerprint, view_name, batch_size, dag_run_id, "
            "lookups) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (rule.name, dry_run, Jsonb(rule.source), rule.fingerprint, rule.view, batch_size, dag_run_id,
             LOOKUPS)).fetchone()[0]
    log.info("sweep %s: %s run %d begins: %s", rule.name, "dry" if dry_run else "real", run_id, rule.description)
    return run_id, None, False


class _Run:
    """One attempt at a sweep run: the view read page by page, each page's records handled, its cursor and
    counts committed."""

    def __init__(self, conn: psycopg.Connection, hook: TrackViaHook, view_id: int, rule: SweepRule,
                 kinds: dict[str, str], run_id: int, dry_run: bool) -> None:
        self.conn, self.hook, self.view_id, self.rule, self.kinds = conn, hook, view_id, rule, kinds
        self.run_id, self.dry_run = run_id, dry_run
        self.kind = kinds[rule.set.field]
        self.edited: set[int] = set()          # ids PUT this attempt: each moved its record to the view's end
        self.refused: list[str] = []           # TrackVia's refusals since the last change it accepted

    def work(self, start: Mark | None, total: int, batch_size: int) -> None:
        pages: list[int] = []
        counted = 0
        progress = Progress(log)
        try:
            for page, mark in scan_pages(self.hook, self.view_id, start, batch_size, total=total, pages=pages,
                                         edited=self.edited):
                rows = self._rows_of(page)
                unchanged = sum(self._handle(record, rows.get(int(record["id"]))) for record in page)
                with self.conn.transaction():
                    self.conn.execute(
                        "UPDATE oms.sweep_runs SET cursor_updated = %s, cursor_ids = %s, pages = pages + %s, "
                        "read = read + %s, unchanged = unchanged + %s WHERE id = %s",
                        (mark.updated if mark else None, sorted(mark.ids) if mark else [], len(pages) - counted,
                         len(page), unchanged, self.run_id))
                counted = len(pages)
                progress.tick("sweep %s: %d pages read (of about %d), run %d", self.rule.name, counted,
                              max(1, total // max(1, batch_size - 1)), self.run_id)
        finally:
            self._count_pages(len(pages) - counted)
        with self.conn.transaction():
            # A PUT without an answer whose record the scan did not meet again (it left the view): unknown.
            self.conn.execute("UPDATE oms.sweep_changes SET outcome = 'failed', error = %s WHERE run_id = %s "
                              "AND outcome = 'sending'", (UNANSWERED, self.run_id))
            self.conn.execute("UPDATE oms.sweep_runs SET status = 'done', finished_at = now() WHERE id = %s",
                              (self.run_id,))

    def _rows_of(self, page: list[dict]) -> dict[int, tuple[str, str | None]]:
        """This run's change rows of the page's records: (outcome, after) by record id."""
        rows = self.conn.execute(
            "SELECT record_id, outcome, after FROM oms.sweep_changes WHERE run_id = %s AND record_id = ANY(%s)",
            (self.run_id, [int(record["id"]) for record in page])).fetchall()
        self.conn.commit()
        return {rid: (outcome, after) for rid, outcome, after in rows}

    def _count_pages(self, uncounted: int) -> None:
        """Pages read since the last committed page (a failure, a kill of the page's work, a spent budget)."""
        if uncounted and not self.conn.broken:
            self.conn.rollback()
            with self.conn.transaction():
                self.conn.execute("UPDATE oms.sweep_runs SET pages = pages + %s WHERE id = %s",
                                  (uncounted, self.run_id))

    def _handle(self, record: dict, row: tuple[str, str | None] | None) -> int:
        """One record version (`row`: its change row in this run, if any): 1 when it is counted unchanged
        (committed with the page), else 0."""
        rid, current = int(record["id"]), record.get(self.rule.set.field)
        if row and row[0] != "sending":
            return 0                    # handled in this run: our PUT's new version, or a decided record
        if row and same_value(self.kind, current, row[1]):
            self._close(rid)            # the PUT landed before the attempt died
            return 0
        wanted = self.rule.matches(record, self.kinds)
        target = self.rule.set.target(record) if wanted else None
        if not wanted or same_value(self.kind, current, target):
            if not row:
                return 1
            # Sent without an answer, and the record has changed since in a way the rule no longer asks to:
            # whether our PUT landed first is unknown.
            self._close(rid, error=f"{UNANSWERED}; the record has changed since and now holds {current!r}")
            return 0
        with self.conn.transaction():
            self.conn.execute(
                """
                INSERT INTO oms.sweep_changes (run_id, record_id, record_name, field, before, after, outcome)
                VALUES (%s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (run_id, record_id) DO UPDATE SET before = EXCLUDED.before, after = EXCLUDED.after,
                    changed_at = now()
                """, (self.run_id, rid, record.get("Record ID"), self.rule.set.field, _text(current), target,
                      "planned" if self.dry_run else "sending"))
            if not self.dry_run:        # counted as it is sent: an attempt that dies next counts it all the same
                self.conn.execute("UPDATE oms.sweep_runs SET puts = puts + 1 WHERE id = %s", (self.run_id,))
        if not self.dry_run:
            self._put(record, target)
        return 0

    def _put(self, record: dict, target: str | None) -> None:
        rid = int(record["id"])
        try:
            self.hook.update_record(self.view_id, rid, {self.rule.set.field: target})
        except VendorApiError as exc:
            if not _refused_record(exc):
                raise                       # answer unknown: the row stays `sending` for the resume to settle
            self._refused(record, exc)
            return
        self.edited.add(rid)
        self.refused.clear()
        self._close(rid)

    def _refused(self, record: dict, exc: VendorApiError) -> None:
        """TrackVia refused this record's value: the record fails, the sweep goes on, unless every change of
        the last REFUSALS_IN_A_ROW was refused (the rule's value does not fit the field)."""
        error = redact_text(str(exc))
        self._close(int(record["id"]), error=error)
        log.warning("sweep %s: record %s (id %s) refused: %s", self.rule.name, record.get("Record ID"),
                    record["id"], error)
        self.refused.append(error)
        if len(self.refused) >= REFUSALS_IN_A_ROW:
            raise RuleRefused(f"sweep {self.rule.name}: TrackVia refused the last {len(self.refused)} changes in a "
                              f"row (the last: {error}); nothing more is sent. Correct the rule's value in "
                              "the config, then trigger the sweep again (the run is superseded by the new rule)")

    def _close(self, rid: int, *, error: str | None = None) -> None:
        """A `sending` row settled: inserted when the field was empty before, updated otherwise; failed with
        `error`."""
        with self.conn.transaction():
            self.conn.execute(
                """
                UPDATE oms.sweep_changes SET error = %(error)s, changed_at = now(),
                    outcome = CASE WHEN %(error)s::text IS NOT NULL THEN 'failed'
                                   WHEN before IS NULL THEN 'inserted' ELSE 'updated' END
                 WHERE run_id = %(run)s AND record_id = %(rid)s
                """, {"error": error, "run": self.run_id, "rid": rid})


def _refused_record(exc: VendorApiError) -> bool:
    """TrackVia refused this record's value (400) or no longer has the record (401 accessDenied naming a
    Record): that record fails, the sweep goes on. Anything else (a token, a field, the budget) stops it."""
    body = exc.body if isinstance(exc.body, dict) else {}
    if exc.status == 400:
        return True
    return exc.status == 401 and body.get("name") == "accessDenied" and "record" in str(body.get("message")).lower()


def _text(value: object) -> str | None:
    return None if value is None or (isinstance(value, str) and not value.strip()) else str(value)


def _report(conn: psycopg.Connection, rule: SweepRule, run_id: int, dry_run: bool, resumed: bool) -> SweepReport:
    report = SweepReport(rule.name, dry_run, run_id, resumed, rule.view)
    report.lookups, report.pages, report.puts, report.read, report.unchanged = conn.execute(
        "SELECT lookups, pages, puts, read, unchanged FROM oms.sweep_runs WHERE id = %s", (run_id,)).fetchone()
    for outcome, count in conn.execute("SELECT outcome, count(*) FROM oms.sweep_changes WHERE run_id = %s "
                                       "GROUP BY outcome", (run_id,)).fetchall():
        setattr(report, outcome, count)
    report.sample = [f"{name or rid} (id {rid}): {field_name} {before!r} -> {after!r}"
                     + (f" FAILED: {error}" if error else "")
                     for rid, name, field_name, before, after, error in conn.execute(
                         "SELECT record_id, record_name, field, before, after, error FROM oms.sweep_changes "
                         "WHERE run_id = %s ORDER BY changed_at, record_id LIMIT %s", (run_id, SAMPLE)).fetchall()]
    conn.commit()
    return report


def _log_outcome(report: SweepReport) -> None:
    if report.dry_run:
        log.info("sweep %s (dry run %d): %d records would change, %d unchanged, %d read; nothing was sent",
                 report.sweep, report.run, report.planned, report.unchanged, report.read)
    else:
        log.info("sweep %s (run %d): %d inserted (the field was empty), %d updated, %d unchanged, %d failed; "
                 "API calls: %d lookups + %d pages + %d PUTs", report.sweep, report.run, report.inserted,
                 report.updated, report.unchanged, report.failed, report.lookups, report.pages, report.puts)
    for line in report.sample:
        log.info("  %s", line)
    log.info("the whole report: SELECT * FROM oms.sweep_changes WHERE run_id = %d ORDER BY record_id", report.run)
