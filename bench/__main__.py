"""`make bench`: every benchmark in turn (BENCH_ROWS scales the loader benchmark, default 1,000,000)."""
from __future__ import annotations

import os
import sys

from bench import loader_bench


def main() -> int:
    loader_bench.main(int(os.environ.get("BENCH_ROWS", "1000000")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
