"""What the maintenance DAG reports and repairs: watermark lag, abandoned runs."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class ScopeHealth:
    pipeline: str
    scope: str
    cursor_kind: str
    cursor: str
    lag_hours: float               # now - cursor for timestamps, now - last move otherwise
    last_success_at: dt.datetime | None
    hours_since_success: float | None
    failures_since_success: int
    quarantined_7d: int
    paused_reason: str | None = None   # switched off on purpose: listed, not alerted on

    def line(self) -> str:
        last = self.last_success_at.isoformat(timespec="seconds") if self.last_success_at else "never"
        paused = f"  paused: {self.paused_reason}" if self.paused_reason else ""
        return (f"{self.pipeline:<32} {self.scope:<24} lag {self.lag_hours:8.1f} h  cursor {self.cursor:<32} "
                f"last success {last:<25} ({self.hours_since_success or 0:.1f} h ago) "
                f"failures {self.failures_since_success:>3}  quarantined 7d {self.quarantined_7d}{paused}")


def watermark_lag(conn: psycopg.Connection) -> list[ScopeHealth]:
    """One entry per (pipeline, scope) that has a watermark, most lagging first.

    Cursor lag says how old the newest loaded data is; a quiet source legitimately has a large
    one. Hours since the last successful run say whether the pipeline still runs at all.
    """
    rows = conn.execute(
        """
        SELECT w.pipeline, w.scope, w.cursor_kind,
               coalesce(to_char(w.ts_value AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'),
                        w.id_value::text, w.json_value::text) AS cursor,
               extract(epoch FROM now() - coalesce(w.ts_value, w.moved_at)) / 3600.0 AS lag_hours,
               s.last_success_at,
               extract(epoch FROM now() - s.last_success_at) / 3600.0 AS hours_since_success,
               (SELECT count(*) FROM etl.run_ledger f
                 WHERE f.pipeline = w.pipeline AND f.scope = w.scope AND f.status = 'failed'
                   AND f.started_at > coalesce(s.last_success_at, '-infinity')) AS failures,
               (SELECT count(*) FROM etl.quarantine q
                 WHERE q.pipeline = w.pipeline AND q.scope = w.scope
                   AND q.quarantined_at > now() - interval '7 days') AS quarantined,
               w.paused_reason
          FROM etl.watermarks w
          LEFT JOIN LATERAL (
                SELECT max(finished_at) AS last_success_at FROM etl.run_ledger l
                 WHERE l.pipeline = w.pipeline AND l.scope = w.scope AND l.status = 'success') s ON true
         ORDER BY lag_hours DESC, w.pipeline, w.scope
        """
    ).fetchall()
    return [
        ScopeHealth(p, s, k, c, float(lag), last, None if since is None else float(since), int(f), int(q), paused)
        for p, s, k, c, lag, last, since, f, q, paused in rows
    ]


def close_abandoned_runs(conn: psycopg.Connection, *, older_than_hours: int) -> int:
    """Mark `running` ledger rows older than the limit as failed: their worker died mid-run.

    A killed load commits nothing, so nothing but this bookkeeping needs repair.
    """
    with conn.transaction():
        return conn.execute(
            """
            UPDATE etl.run_ledger
               SET status = 'failed', finished_at = clock_timestamp(),
                   error = 'abandoned: still running after ' || %s || ' h; its worker died or was killed '
                           '(its load committed nothing). The next scheduled run picks up from the watermark.'
             WHERE status = 'running' AND started_at < now() - make_interval(hours => %s)
            """,
            (older_than_hours, older_than_hours),
        ).rowcount
