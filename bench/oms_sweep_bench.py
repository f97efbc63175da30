"""An OMS-Pro table sweep over 10,000 tickets: a dry run, the real run, and a rerun with nothing left to do.
The figure that matters is API calls against what the work needs: 3 lookups + the pages read + one PUT per
record that needed a change, counted by the sweep and by the sandbox's own hourly counter.

Everything is real but the vendor: the sandbox answers as TrackVia over HTTP on 127.0.0.1 (the seeded OMS-Pro
app with its Tickets table grown to the size asked), our database is PostgreSQL, the sweep is the one the
oms_table_sweep DAG runs (rule `cancelled_tickets_low_priority` of include/oms_pro.yaml).
"""
from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

from bench.server import bench_database
from etl import db, migrate
from hooks.trackvia import TrackViaHook
from integrations.oms import config, sweeps
from sandbox import launch
from sandbox import trackvia as tv

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
SWEEP = "cancelled_tickets_low_priority"
BATCH = 1000


def _sandbox(url: str, method: str, path: str, payload: dict | None = None) -> dict:
    request = urllib.request.Request(f"{url}/_sandbox/{path}", method=method,
                                     data=json.dumps(payload).encode() if payload is not None else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read())


def _run(url: str, sandbox_url: str, dry_run: bool) -> dict:
    calls_before = _sandbox(sandbox_url, "GET", "state/trackvia")["calls_this_hour"]
    started = time.perf_counter()
    with db.connect(url) as conn:
        report = sweeps.run_sweep(conn, TrackViaHook(conninfo=url), config.load(), sweep=SWEEP, dry_run=dry_run,
                                  batch_size=BATCH, dag_run_id="bench")
    seconds = time.perf_counter() - started
    figures = report.as_dict()
    figures.pop("sample")
    figures.update(seconds=round(seconds, 2),
                   vendor_counted=_sandbox(sandbox_url, "GET", "state/trackvia")["calls_this_hour"] - calls_before)
    return figures


def main() -> dict:
    tickets = int(os.environ.get("BENCH_OMS_TICKETS", "10000"))
    print(f"oms sweep benchmark: {SWEEP} over {tickets:,} tickets, pages of {BATCH}", flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)])}
    sandbox, sandbox_url = launch.start(env=env)
    results = {}
    try:
        with bench_database("bench_oms") as url:
            with db.connect(url, autocommit=True) as conn:
                migrate.migrate(conn)
            os.environ["AIRFLOW_CONN_TRACKVIA_DEFAULT"] = json.dumps(tv.airflow_connection(sandbox_url,
                                                                                          hourly_limit=100_000))
            _sandbox(sandbox_url, "PUT", "control/trackvia", {"generate_tickets": tickets, "hourly_limit": 100_000})
            for label, dry_run in (("dry run", True), ("real run", False), ("rerun", False)):
                figures = results[label] = _run(url, sandbox_url, dry_run)
                changed = figures["planned"] if dry_run else figures["inserted"] + figures["updated"]
                verb = "to change" if dry_run else "changed"
                print(f"{label:>8}: {figures['seconds']:6.1f} s, {changed:,} records {verb}, {figures['unchanged']:,} "
                      f"unchanged; API calls {figures['api_calls']:,} = {figures['lookups']} lookups + "
                      f"{figures['pages']} pages + {figures['puts']:,} PUTs "
                      f"(the sandbox counted {figures['vendor_counted']:,})", flush=True)
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=30)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "oms_sweep.json").write_text(json.dumps(results, indent=2))
    return {"oms_sweep": results}


if __name__ == "__main__":
    main()
