"""`python -m sandbox [--host 127.0.0.1] [--port 8090] [--seed 7] [--state-file PATH]`: every vendor simulator
in one process."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

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
    parser.add_argument("--state-file", type=Path, default=None,
                        help="keep the vendors' data (companies, records, issued tokens, pushed items) in this "
                             "file across restarts: loaded at start, saved after every change and at shutdown "
                             "(`make up`: .local/sandbox-state.json). Without it the state lives in memory only.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = build_app(seed=args.seed, qbo_records=args.qbo_records, servicetrade_jobs=args.servicetrade_jobs,
                    state_file=args.state_file)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
