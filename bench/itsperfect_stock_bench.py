"""The ItsPerfect stock pull of one warehouse at 5,000 and at 50,000 barcodes: requests against the fewest
the vendor's page size allows, wall time, and peak RSS (flat is the target: pages stream through the loader).

Everything is real but the vendor: the sandbox answers as ItsPerfect over HTTP on 127.0.0.1 (pages of at most
100 items; a generated warehouse holds items of 50 barcodes), our database is PostgreSQL, the pull runs in a
child process so its peak RSS is its own. The catalogue (commerce.products) is written straight from a twin
of the sandbox built in this process from the same seed.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from bench.server import bench_database
from etl import db, migrate
from sandbox import itsperfect as itsp
from sandbox import launch
from sandbox.core import SandboxState

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
CONNECTOR = "itsperfect_bench"
PAGE_ITEMS = 100


def _control(sandbox_url: str, payload: dict) -> dict:
    request = urllib.request.Request(f"{sandbox_url}/_sandbox/control/itsperfect", method="PUT",
                                     data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read())


def _requests(sandbox_url: str) -> list[dict]:
    with urllib.request.urlopen(f"{sandbox_url}/_sandbox/requests?vendor=itsperfect", timeout=60) as response:
        return json.loads(response.read())["requests"]


def _seed(url: str, twin: itsp.ItsPerfectSandbox, warehouse_id: int) -> None:
    """The catalogue, the connector, the warehouse and one location mapped to it."""
    with db.connect(url) as conn:
        conn.execute("TRUNCATE commerce.products, commerce.accounts, itsperfect.connectors CASCADE")
        with conn.cursor().copy("COPY commerce.products (barcode, item_number) FROM STDIN") as copy:
            for barcode, (item_id, _, _) in twin.barcodes.items():
                copy.write_row((barcode, twin.items[item_id]["itemNumber"]))
        conn.execute("INSERT INTO commerce.accounts (account_id, name) VALUES ('bench', 'Bench')")
        conn.execute("INSERT INTO commerce.locations (location_id, account_id, name) VALUES ('bench-1', 'bench', 'B')")
        conn.execute("INSERT INTO itsperfect.connectors (connector) VALUES (%s)", (CONNECTOR,))
        conn.execute("INSERT INTO itsperfect.warehouses (connector, warehouse_id, name, active) "
                     "VALUES (%s, %s, 'B', true)", (CONNECTOR, warehouse_id))
        conn.execute("INSERT INTO itsperfect.connector_locations (location_id, connector, warehouse_id) "
                     "VALUES ('bench-1', %s, %s)", (CONNECTOR, warehouse_id))
        conn.commit()


def run_size(url: str, sandbox_url: str, env: dict, twin: itsp.ItsPerfectSandbox, barcodes: int) -> dict:
    """`twin` has had every control call the sandbox had: barcodes are numbered across warehouses."""
    warehouse_id = 900 + barcodes // 1000
    spec = {"generate_warehouse": {"id": warehouse_id, "barcodes": barcodes}, "hourly_limit": 100_000}
    _control(sandbox_url, spec)
    twin.control(spec)
    _seed(url, twin, warehouse_id)
    before = len(_requests(sandbox_url))
    child = subprocess.run([sys.executable, "-m", "bench.itsperfect_stock_child", url, CONNECTOR], cwd=ROOT, env=env,
                           capture_output=True, text=True)
    if child.returncode != 0:
        raise RuntimeError(f"the stock child failed:\n{child.stderr[-4000:]}")
    figures = json.loads(child.stdout.strip().splitlines()[-1])
    made = _requests(sandbox_url)[before:]
    warehouses = len(twin.warehouses)
    figures.update(barcodes=barcodes, items=len(twin.held[warehouse_id]), quarantined=figures["report"]["counts"]
                   ["quarantined"],
                   stock_requests=sum(1 for r in made if r["path"].endswith("/stock")),
                   warehouse_requests=sum(1 for r in made if r["path"].endswith("/warehouses")),
                   stock_minimum=math.ceil(len(twin.held[warehouse_id]) / PAGE_ITEMS),
                   warehouse_minimum=math.ceil(warehouses / PAGE_ITEMS))
    with db.connect(url) as conn:
        figures["rows"] = conn.execute("SELECT count(*) FROM commerce.location_quantities").fetchone()[0]
    return figures


def main() -> dict:
    sizes = [int(n) for n in os.environ.get("BENCH_ITSPERFECT_BARCODES", "5000,50000").split(",")]
    print(f"itsperfect stock benchmark: one warehouse of {', '.join(f'{n:,}' for n in sizes)} barcodes", flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)])}
    sandbox, sandbox_url = launch.start(env=env)
    results = []
    try:
        with bench_database("bench_itsperfect") as url:
            with db.connect(url, autocommit=True) as conn:
                migrate.migrate(conn)
            env.update({
                "AIRFLOW_CONN_INTEGRATIONS_DB": url,
                f"AIRFLOW_CONN_{CONNECTOR.upper()}": json.dumps(itsp.airflow_connection(sandbox_url,
                                                                                          hourly_limit=100_000)),
            })
            twin = itsp.ItsPerfectSandbox(SandboxState())
            for size in sizes:
                figures = run_size(url, sandbox_url, env, twin, size)
                results.append(figures)
                print(f"{size:>7,} barcodes ({figures['items']:,} items): {figures['seconds']:6.1f} s "
                      f"({figures['rows'] / figures['seconds']:,.0f} rows/s), /stock requests "
                      f"{figures['stock_requests']} (minimum {figures['stock_minimum']}), /warehouses requests "
                      f"{figures['warehouse_requests']} (minimum {figures['warehouse_minimum']}), rows "
                      f"{figures['rows']:,} ({figures['quarantined']} quarantined), peak RSS "
                      f"{figures['peak_rss_mb']:.0f} MB (baseline {figures['baseline_rss_mb']:.0f} MB)", flush=True)
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=30)
    if len(results) > 1:
        print(f"peak RSS ratio {results[-1]['barcodes']:,} vs {results[0]['barcodes']:,} barcodes: "
              f"{results[-1]['peak_rss_mb'] / results[0]['peak_rss_mb']:.2f}x (target <= 1.2)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "itsperfect_stock.json").write_text(json.dumps(results, indent=2))
    return {"itsperfect_stock": results}
