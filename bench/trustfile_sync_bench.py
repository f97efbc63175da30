"""One company's first TrustFile sync from QuickBooks Online, at 10,000 and at 100,000 documents, and
a company with three years of sparse history under the hourly DAG's own budget.

Everything is real but the vendors: the sandbox (`python -m sandbox`) answers as QBO and TrustFile
over HTTP on 127.0.0.1, our database is PostgreSQL. Each sync runs in a child process so its peak
RSS is its own. Reported: wall time, documents per second, QBO and TrustFile calls against the
fewest the page sizes allow (QBO query pages of 1000 per entity, one more when an entity's count
is a multiple of 1000 because only a short page says "done"; TrustFile calls of 1000 items), and
peak memory at both sizes (flat is the target). The sparse history (1,500 documents spread over
three years and the 90-day lookback) shows what sizing windows by documents saves: its calls against
the same minimum.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from cryptography.fernet import Fernet

from bench.server import bench_database
from etl import db, migrate
from sandbox import launch
from sandbox import qbo as qbo_sandbox
from sandbox import trustfile as tf_sandbox

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
ENTITIES = 4          # SalesReceipt, Invoice, RefundReceipt, CreditMemo


def _sandbox_call(url: str, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(f"{url}/_sandbox{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read())


def _minimum_qbo_pages(per_entity: int) -> int:
    """One window: pages of 1000 per entity, and one more when the count fills its last page."""
    return ENTITIES * (per_entity // 1000 + 1)


def run_size(url: str, sandbox_url: str, env: dict, documents: int, connection_id: str, realm: str) -> dict:
    per_entity = documents // ENTITIES
    _sandbox_call(sandbox_url, "PUT", "/control/qbo", {"per_entity": per_entity})
    started = time.monotonic()   # the company's records are made before the sync is timed
    _sandbox_call(sandbox_url, "PUT", "/control/qbo", {"generate": [realm]})
    generate_seconds = time.monotonic() - started
    before = _sandbox_call(sandbox_url, "GET", "/requests?vendor=qbo")["requests"]
    child = subprocess.run([sys.executable, "-m", "bench.trustfile_sync_child", url, connection_id, realm],
                           cwd=ROOT, env=env, capture_output=True, text=True)
    if child.returncode != 0:
        raise RuntimeError(f"the sync child failed:\n{child.stderr[-4000:]}")
    figures = json.loads(child.stdout.strip().splitlines()[-1])
    qbo_requests = _sandbox_call(sandbox_url, "GET", "/requests?vendor=qbo")["requests"][len(before):]
    figures.update(
        documents=documents, sandbox_generate_seconds=round(generate_seconds, 2),
        qbo_query_calls=sum(1 for r in qbo_requests if r["path"].endswith("/query")),
        qbo_cdc_calls=sum(1 for r in qbo_requests if r["path"].endswith("/cdc")),
        qbo_token_calls=sum(1 for r in qbo_requests if "/oauth2/" in r["path"]),
        qbo_query_minimum=_minimum_qbo_pages(per_entity),
        trustfile_push_minimum=-(-documents // 1000),
        trustfile_push_calls=_sandbox_call(sandbox_url, "GET", "/state/trustfile")["push_calls"].get(connection_id, 0),
        trustfile_items=len(_sandbox_call(sandbox_url, "GET", "/state/trustfile")["items"].get(connection_id, [])),
    )
    return figures


SPARSE_DOCUMENTS = 1500
SPARSE_YEARS = 3


def run_sparse(url: str, sandbox_url: str, env: dict, connection_id: str, realm: str) -> dict:
    """1,500 documents last updated evenly over three years before now; the default budget."""
    per_entity = SPARSE_DOCUMENTS // ENTITIES
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    start_date = (now - dt.timedelta(days=365 * SPARSE_YEARS)).date()
    _sandbox_call(sandbox_url, "PUT", "/control/qbo", {"per_entity": per_entity})
    _sandbox_call(sandbox_url, "PUT", "/control/qbo", {"generate": [realm], "spread": {
        "realm": realm, "from": (now - dt.timedelta(days=365 * SPARSE_YEARS + 90)).isoformat(),
        "to": (now - dt.timedelta(hours=1)).isoformat()}})
    before = _sandbox_call(sandbox_url, "GET", "/requests?vendor=qbo")["requests"]
    child = subprocess.run([sys.executable, "-m", "bench.trustfile_sync_child", url, connection_id, realm,
                            start_date.isoformat(), "default"], cwd=ROOT, env=env, capture_output=True, text=True)
    if child.returncode != 0:
        raise RuntimeError(f"the sync child failed:\n{child.stderr[-4000:]}")
    figures = json.loads(child.stdout.strip().splitlines()[-1])
    qbo_requests = _sandbox_call(sandbox_url, "GET", "/requests?vendor=qbo")["requests"][len(before):]
    calls = {kind: sum(1 for r in qbo_requests if test(r["path"])) for kind, test in (
        ("query", lambda p: p.endswith("/query")), ("cdc", lambda p: p.endswith("/cdc")),
        ("token", lambda p: "/oauth2/" in p))}
    minimum = {"query": _minimum_qbo_pages(per_entity), "cdc": ENTITIES, "token": 1}
    figures.update(documents=SPARSE_DOCUMENTS, years=SPARSE_YEARS, qbo_calls=calls, qbo_minimum=minimum,
                   qbo_ratio=round(sum(calls.values()) / sum(minimum.values()), 2))
    return figures


def main() -> dict:
    sizes = [int(n) for n in os.environ.get("BENCH_TRUSTFILE_DOCUMENTS", "10000,100000").split(",")]
    print(f"trustfile sync benchmark: {', '.join(f'{n:,}' for n in sizes)} QBO documents, one company each", flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)]),
           "INTEGRATIONS_FERNET_KEY": Fernet.generate_key().decode()}
    sandbox, sandbox_url = launch.start(env=env)
    results = []
    try:
        with bench_database("bench_trustfile") as url:
            with db.connect(url, autocommit=True) as conn:
                migrate.migrate(conn)
            env.update({
                "AIRFLOW_CONN_INTEGRATIONS_DB": url,      # the QBO hook keeps its tokens there
                "AIRFLOW_CONN_QBO_DEFAULT": json.dumps({
                    "conn_type": "qbo", "host": f"{sandbox_url}/qbo", "login": qbo_sandbox.CLIENT_ID,
                    "password": qbo_sandbox.CLIENT_SECRET,
                    "extra": {"oauth_endpoint_url": f"{sandbox_url}/qbo/oauth2/v1/tokens/bearer"}}),
                "AIRFLOW_CONN_TRUSTFILE_DEFAULT": json.dumps({
                    "conn_type": "trustfile", "host": f"{sandbox_url}/trustfile", "password": tf_sandbox.TOKEN}),
            })
            for _n, (size, connection_id, realm) in enumerate(zip(sizes, tf_sandbox.SEEDED_CONNECTIONS,
                                                                  qbo_sandbox.REALMS, strict=False)):
                figures = run_size(url, sandbox_url, env, size, connection_id, realm)
                results.append(figures)
                print(f"{size:>9,} documents: {figures['seconds']:7.1f} s ({size / figures['seconds']:,.0f}/s; extract "
                      f"{figures['report']['extract_seconds']:.1f} s, push {figures['report']['push_seconds']:.1f} s), "
                      f"QBO query calls {figures['qbo_query_calls']} (minimum {figures['qbo_query_minimum']}) "
                      f"+ {figures['qbo_cdc_calls']} CDC + {figures['qbo_token_calls']} token, "
                      f"TrustFile push calls {figures['trustfile_push_calls']} "
                      f"(minimum {figures['trustfile_push_minimum']}), items in TrustFile "
                      f"{figures['trustfile_items']:,}, peak RSS {figures['peak_rss_mb']:.0f} MB", flush=True)
        with bench_database("bench_trustfile_sparse") as url:
            with db.connect(url, autocommit=True) as conn:
                migrate.migrate(conn)
            env["AIRFLOW_CONN_INTEGRATIONS_DB"] = url
            sparse = run_sparse(url, sandbox_url, env, tf_sandbox.SEEDED_CONNECTIONS[0], qbo_sandbox.REALMS[-1])
            results.append(sparse)
            calls, minimum = sparse["qbo_calls"], sparse["qbo_minimum"]
            print(f"sparse history, {sparse['documents']:,} documents over {sparse['years']} years, the DAG's budget: "
                  f"{sparse['report']['windows']} window(s), {sparse['seconds']:.1f} s; QBO calls: query "
                  f"{calls['query']} (minimum {minimum['query']}), CDC {calls['cdc']} ({minimum['cdc']}), token "
                  f"{calls['token']} ({minimum['token']}): {sparse['qbo_ratio']:.2f}x the minimum (target <= 1.5)",
                  flush=True)
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=30)
    dense = [r for r in results if "years" not in r]
    if len(dense) > 1:
        print(f"peak RSS ratio {dense[-1]['documents']:,} vs {dense[0]['documents']:,} documents: "
              f"{dense[-1]['peak_rss_mb'] / dense[0]['peak_rss_mb']:.2f}x (flat is 1.0)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "trustfile_sync.json").write_text(json.dumps(results, indent=2))
    return {"trustfile_sync": results}
