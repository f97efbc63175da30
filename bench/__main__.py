"""`make bench`: every benchmark in turn.

BENCH_ROWS scales the loader benchmark (default 1,000,000); BENCH_TRUSTFILE_DOCUMENTS lists the
TrustFile sync sizes (default 10000,100000); BENCH_ITSPERFECT_BARCODES the ItsPerfect warehouse sizes
(default 5000,50000); BENCH_OMS_TICKETS the OMS-Pro sweep's table size (default 10000); BENCH_WEBHOOK_RATE
and BENCH_WEBHOOK_SECONDS the webhook receiver's load (default 500 messages/s for 20 s).
"""
from __future__ import annotations

import os
import sys

from bench import itsperfect_stock_bench, loader_bench, oms_sweep_bench, trustfile_sync_bench, webhook_receiver_bench


def main() -> int:
    loader_bench.main(int(os.environ.get("BENCH_ROWS", "1000000")))
    trustfile_sync_bench.main()
    itsperfect_stock_bench.main()
    oms_sweep_bench.main()
    webhook_receiver_bench.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
