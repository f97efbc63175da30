"""Child process of the loader benchmark: stream N generated rows through the upsert, report peak RSS."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.loader_bench import COLUMNS, make_row, reset_table
from etl import db, loader
from etl.tables import TargetTable


def high_water_mb() -> float:
    """VmHWM: this process's peak RSS. (ru_maxrss survives execve and would report the parent's.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def main(url: str, n: int) -> None:
    reset_table(url, "rss")
    baseline = high_water_mb()
    with db.connect(url) as conn:
        loader.upsert(conn, TargetTable("bench", "rss", COLUMNS), (make_row(i) for i in range(n)))
        conn.commit()
    peak = high_water_mb()
    print(json.dumps({"peak_rss_mb": peak, "baseline_rss_mb": baseline}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
