"""`python -m sandbox [--host 127.0.0.1] [--port 8090] [--seed 7]`: every vendor simulator in one process."""
from __future__ import annotations

import argparse

import uvicorn

from sandbox.server import build_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--seed", type=int, default=7, help="seed of generated data and random faults")
    parser.add_argument("--qbo-records", type=int, default=40,
                        help="QBO records per entity and company (sales receipts, invoices, refund receipts, "
                             "credit memos, payments); generated when a company is first used")
    parser.add_argument("--servicetrade-jobs", type=int, default=240)
    args = parser.parse_args()
    app = build_app(seed=args.seed, qbo_records=args.qbo_records, servicetrade_jobs=args.servicetrade_jobs)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
