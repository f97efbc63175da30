"""Airflow's own API server app (its middlewares, our plugins mounted) on one uvicorn worker, as
`airflow api-server` runs it by default: the receiver benchmark's server, a process of its own.

    python -m bench.webhook_api_server PORT      (AIRFLOW_HOME, plugins folder and INTEGRATIONS_DATABASE_URL set)
"""
from __future__ import annotations

import sys

import uvicorn


def main(port: int) -> None:
    from airflow.api_fastapi.app import create_app

    uvicorn.run(create_app(), host="127.0.0.1", port=port, access_log=False, log_config=None,
                log_level="warning", timeout_keep_alive=120)


if __name__ == "__main__":
    main(int(sys.argv[1]))
