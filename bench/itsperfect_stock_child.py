"""Child process of the ItsPerfect stock benchmark: one connector's stock pull, its peak RSS and its figures."""
from __future__ import annotations

import json
import sys
import time

from bench.loader_rss import high_water_mb
from etl import db
from hooks.itsperfect import ItsPerfectHook
from integrations.itsperfect import stock


def main(url: str, connector: str) -> None:
    baseline = high_water_mb()
    started = time.monotonic()
    with db.connect(url) as conn:
        report = stock.pull_stock(conn, ItsPerfectHook(connector, conninfo=url), connector, run_id="bench")
    print(json.dumps({"seconds": round(time.monotonic() - started, 2), "peak_rss_mb": high_water_mb(),
                      "baseline_rss_mb": baseline, "report": report.as_dict()}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
