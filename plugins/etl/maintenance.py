"""The maintenance DAG's task bodies: each records itself in the run ledger like any pipeline.

Plain Python over the engine's own tables, so it lives with the engine; the DAG only schedules it.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from etl import db, health, ledger

log = logging.getLogger(__name__)
PIPELINE = "integrations_maintenance"


class WatermarkLagError(RuntimeError):
    """A pipeline scope stopped moving; the message lists the scopes and the runbook step."""


def _ledgered(step: str, run_id: str, work: Callable) -> int:
    """Run `work(conn)` under a maintenance ledger row; return the number of rows it touched.

    Not atomic: pruning commits batch by batch.
    """
    with db.connect() as conn, ledger.ledgered_run(conn, ledger.RunInfo(PIPELINE, step, run_id, "maintenance"),
                                                   atomic=False) as run:
        run.counts.updated = work(conn)
    return run.counts.updated


def close_abandoned(older_than_hours: int, run_id: str) -> int:
    closed = _ledgered("close_abandoned_runs", run_id,
                       lambda conn: health.close_abandoned_runs(conn, older_than_hours=older_than_hours))
    log.info("marked %d abandoned run(s) failed (running for more than %d h)", closed, older_than_hours)
    return closed


def prune(retention_days: int, run_id: str) -> int:
    deleted = _ledgered("prune_ledger", run_id,
                        lambda conn: ledger.prune(conn, older_than_days=retention_days))
    log.info("pruned %d ledger row(s) older than %d days", deleted, retention_days)
    return deleted


def report_lag(max_lag_hours: int) -> list[dict]:
    with db.connect() as conn:
        scopes = health.watermark_lag(conn)
    if not scopes:
        log.info("no watermarks yet: no pipeline has loaded anything")
    for scope in scopes:
        log.info("%s", scope.line())
    stale = [s for s in scopes if not s.paused_reason
             and (s.hours_since_success is None or s.hours_since_success > max_lag_hours)]
    if stale:
        names = ", ".join(f"{s.pipeline}/{s.scope} ({_since_success(s)})" for s in stale)
        raise WatermarkLagError(
            f"{len(stale)} pipeline scope(s) have had no successful run for more than {max_lag_hours} h: {names}. "
            "Open each pipeline's latest failed run in etl.run_ledger (docs/runbook.md, 'integrations_maintenance')."
        )
    return [{"pipeline": s.pipeline, "scope": s.scope, "cursor_lag_hours": round(s.lag_hours, 2),
             "hours_since_success": None if s.hours_since_success is None else round(s.hours_since_success, 2),
             "failures_since_success": s.failures_since_success} for s in scopes]


def _since_success(scope: health.ScopeHealth) -> str:
    return "never succeeded" if scope.hours_since_success is None else f"{scope.hours_since_success:.0f} h"
