"""Child of the TrustFile sync benchmark: wire one connection, run its first sync, print figures.

`unbounded` (the dense sizes): one window and no per-run budget, so the calls can be compared with
the minimum; `default`: the budget the hourly DAG uses (the sparse history)."""
from __future__ import annotations

import json
import sys
import time

from bench.loader_rss import high_water_mb
from etl import db
from etl.encryption import encrypt
from integrations.trustfile.sync import Budget, run_sync
from integrations.trustfile.tasks import build_job
from sandbox import qbo as qbo_sandbox

BUDGETS = {"unbounded": Budget(window_documents=10**9, max_documents=10**9), "default": Budget()}


def main(url: str, connection_id: str, realm: str, start_date: str = "2026-01-01", budget: str = "unbounded") -> None:
    credentials = encrypt(json.dumps({"realm_id": realm, "refresh_token": qbo_sandbox.INITIAL_REFRESH_TOKENS[realm]}))
    with db.connect(url) as conn:
        conn.execute("INSERT INTO trustfile.connections (connection_id, enabled, start_date, host_identifier, "
                     "host_credentials) VALUES (%s, true, %s, %s, %s)", (connection_id, start_date, realm, credentials))
        conn.commit()
        baseline = high_water_mb()
        started = time.monotonic()
        report = run_sync(conn, build_job(conn, connection_id), run_id="bench", budget=BUDGETS[budget])
        seconds = time.monotonic() - started
    print(json.dumps({"seconds": round(seconds, 2), "peak_rss_mb": round(high_water_mb(), 1),
                      "baseline_rss_mb": round(baseline, 1), "report": report.as_dict()}))


if __name__ == "__main__":
    main(*sys.argv[1:6])
