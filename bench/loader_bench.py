"""The COPY upsert loader against the other ways to land the same rows, side by side in one run.

Each method writes the same pre-built tuples (so the loaders' own cost is what is timed) into
its own empty table of identical shape, primary key included:

  raw COPY       the physical limit: COPY straight into the table (best of text and binary)
  etl upsert     our loader, first run (every row new) and second run (every row unchanged)
  insert_rows    PostgresHook.insert_rows(..., replace=True) in its fastest mode, picked by a
                 calibration run on a sample
  to_sql         pandas.DataFrame.to_sql with its default method (DataFrame built untimed)

The loader's peak RSS is measured in a child process that streams rows from a generator, at
the full row count and at a tenth of it, so "flat as the input grows" is visible.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import random
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import psycopg

from bench.server import bench_database
from etl import db, loader
from etl.tables import TargetTable

COLUMNS = ("transaction_id", "customer_ref", "occurred_at", "total_amount", "tax_amount", "is_refund")
DDL = """
CREATE TABLE IF NOT EXISTS bench.{name} (
    transaction_id text PRIMARY KEY,
    customer_ref   text NOT NULL,
    occurred_at    timestamptz NOT NULL,
    total_amount   numeric(14,2) NOT NULL,
    tax_amount     numeric(14,2) NOT NULL,
    is_refund      boolean NOT NULL
)
"""
COPY_TYPES = ["text", "text", "timestamptz", "numeric", "numeric", "bool"]
RESULTS = Path(__file__).resolve().parent / "results"
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def make_row(i: int) -> tuple:
    """A row shaped like a sales transaction: text keys, a timestamp, numeric money, a boolean."""
    return (f"QBO-SR-{i:010d}", f"CUST-{i % 50_000:06d}", T0 + dt.timedelta(seconds=i * 7),
            Decimal(i % 250_000) / 100 + Decimal("1.99"), Decimal(i % 9_973) / 100, i % 11 == 0)


def build_rows(n: int) -> list[tuple]:
    rows = [make_row(i) for i in range(n)]
    random.Random(42).shuffle(rows)  # keys arrive in no particular order, as from an API
    return rows


def reset_table(url: str, name: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS bench")
        conn.execute(f"DROP TABLE IF EXISTS bench.{name}")
        conn.execute(DDL.format(name=name))
        conn.execute("CHECKPOINT")


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def raw_copy(url: str, rows: list[tuple], binary: bool) -> None:
    fmt = "(FORMAT BINARY)" if binary else ""
    with psycopg.connect(url) as conn:
        with conn.cursor().copy(f"COPY bench.raw ({', '.join(COLUMNS)}) FROM STDIN {fmt}") as copy:
            if binary:
                copy.set_types(COPY_TYPES)
            for row in rows:
                copy.write_row(row)
        conn.commit()


def etl_upsert(url: str, rows) -> loader.UpsertCounts:
    with db.connect(url) as conn:
        counts = loader.upsert(conn, TargetTable("bench", "upsert", COLUMNS), rows)
        conn.commit()
    return counts


def insert_rows_modes():
    return {
        "executemany, commit_every=1000": {"executemany": True, "commit_every": 1000},
        "executemany, commit_every=10000": {"executemany": True, "commit_every": 10_000},
        "row by row, commit_every=1000": {"executemany": False, "commit_every": 1000},
    }


def hook_insert_rows(rows: list[tuple], mode: dict) -> None:
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    PostgresHook(postgres_conn_id="bench_db").insert_rows(
        "bench.hook", rows, target_fields=list(COLUMNS), replace=True, replace_index=["transaction_id"], **mode
    )


def pandas_to_sql(url: str, frame) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        # Decimal columns are `object` to pandas; without dtype it would bind them as VARCHAR.
        money = {"total_amount": sqlalchemy.Numeric(14, 2), "tax_amount": sqlalchemy.Numeric(14, 2)}
        frame.to_sql("pandas", engine, schema="bench", if_exists="append", index=False, dtype=money)
    finally:
        engine.dispose()


def peak_rss_of_streaming_upsert(url: str, n: int) -> dict:
    """Run the loader in a child process over a generator of n rows; return its peak RSS in MB."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-m", "bench.loader_rss", url, str(n)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(n: int) -> dict:
    import pandas

    source = "from BENCH_DATABASE_URL" if os.environ.get("BENCH_DATABASE_URL") else "embedded"
    print(f"loader benchmark: {n:,} rows, PostgreSQL {source}", flush=True)
    rows = build_rows(n)
    with bench_database() as url:
        os.environ["AIRFLOW_CONN_BENCH_DB"] = url
        results: dict[str, float] = {}

        for binary in (True, False):
            reset_table(url, "raw")
            raw_label = f"raw COPY ({'binary' if binary else 'text'})"
            results[raw_label] = timed(lambda binary=binary: raw_copy(url, rows, binary))
        raw_best = min(results.values())

        reset_table(url, "upsert")
        first_counts = None

        def first():
            nonlocal first_counts
            first_counts = etl_upsert(url, rows)

        results["etl upsert, first run"] = timed(first)
        second_counts = None

        def second():
            nonlocal second_counts
            second_counts = etl_upsert(url, rows)

        results["etl upsert, no-change rerun"] = timed(second)

        sample = rows[: min(20_000, n)]
        reset_table(url, "hook")
        hook_insert_rows(sample[:100], {"executemany": True})  # warm-up: imports and first connection, untimed
        calibration = {}
        for label, mode in insert_rows_modes().items():
            reset_table(url, "hook")
            calibration[label] = timed(lambda mode=mode: hook_insert_rows(sample, mode))
        best_mode = min(calibration, key=calibration.get)
        print(f"insert_rows calibration on {len(sample):,} rows: "
              + ", ".join(f"{k} {len(sample) / v:,.0f} rows/s" for k, v in calibration.items()), flush=True)
        reset_table(url, "hook")
        results[f"insert_rows(replace=True), {best_mode}"] = timed(
            lambda: hook_insert_rows(rows, insert_rows_modes()[best_mode]))

        frame = pandas.DataFrame.from_records(rows, columns=list(COLUMNS))
        reset_table(url, "pandas")
        results["pandas to_sql (default method)"] = timed(lambda: pandas_to_sql(url, frame))

        rss = {f"{m:,} rows": peak_rss_of_streaming_upsert(url, m) for m in (max(n // 10, 1), n)}

    upsert_seconds = results["etl upsert, first run"]
    print(f"\n{'method':<58} {'seconds':>9} {'rows/s':>12} {'upsert speed vs it':>19}")
    for label, seconds in results.items():
        print(f"{label:<58} {seconds:9.2f} {n / seconds:12,.0f} {seconds / upsert_seconds:18.2f}x")
    print(f"\nupsert vs raw COPY (best): {raw_best / upsert_seconds:.2f}x its speed (target >= 0.40)")
    hook_key = next(k for k in results if k.startswith("insert_rows"))
    print(f"upsert vs insert_rows:     {results[hook_key] / upsert_seconds:.2f}x faster (target >= 2.5)")
    print(f"upsert vs to_sql:          {results['pandas to_sql (default method)'] / upsert_seconds:.2f}x faster "
          "(target >= 3)")
    print(f"counts, first run: {first_counts.as_dict()}; no-change rerun: {second_counts.as_dict()}")
    for label, figures in rss.items():
        print(f"loader peak RSS streaming {label}: {figures['peak_rss_mb']:.0f} MB "
              f"(interpreter and imports before loading: {figures['baseline_rss_mb']:.0f} MB)")
    summary = {"rows": n, "seconds": results, "peak_rss": rss,
               "first_run": first_counts.as_dict(), "second_run": second_counts.as_dict(),
               "insert_rows_calibration": calibration}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "loader.json").write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
