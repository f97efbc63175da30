"""Child of the TrustFile sync benchmark: wire one connection, run its first sync (one window, no
per-run budget, so the calls can be compared with the minimum), print figures."""
from __future__ import annotations

import datetime as dt
import json
import sys
import time

from bench.loader_rss import high_water_mb
from etl import db
from etl.encryption import encrypt
from integrations.trustfile.sync import Budget, run_sync
from integrations.trustfile.tasks import build_job
from sandbox import qbo as qbo_sandbox


def main(url: str, connection_id: str, realm: str) -> None:
    credentials = encrypt(json.dumps({"realm_id": realm, "refresh_token": qbo_sandbox.INITIAL_REFRESH_TOKENS[realm]}))
    with db.connect(url) as conn:
        conn.execute("INSERT INTO trustfile.connections (connection_id, enabled, start_date, host_identifier, "
                     "host_credentials) VALUES (%s, true, '2026-01-01', %s, %s)", (connection_id, realm, credentials))
        conn.commit()
        baseline = high_water_mb()
        started = time.monotonic()
        budget = Budget(window=dt.timedelta(days=3650), max_documents=10**9)
        report = run_sync(conn, build_job(conn, connection_id), run_id="bench", budget=budget)
        seconds = time.monotonic() - started
    print(json.dumps({"seconds": round(seconds, 2), "peak_rss_mb": round(high_water_mb(), 1),
                      "baseline_rss_mb": round(baseline, 1), "report": report.as_dict()}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
