"""Airflow's own API server app (its middlewares, our plugins mounted) on as many uvicorn workers as `make up` runs
(stack.settings.API_WORKERS), as `airflow api-server` serves it: the receiver benchmark's server, a process of its
own.

    python -m bench.webhook_api_server PORT      (AIRFLOW_HOME, plugins folder and INTEGRATIONS_DATABASE_URL set)
"""
from __future__ import annotations

import sys

import uvicorn

from stack import settings


def main(port: int) -> None:
    uvicorn.run("airflow.api_fastapi.main:app", host="127.0.0.1", port=port, workers=settings.API_WORKERS,
                access_log=False, log_config=None, log_level="warning", timeout_keep_alive=120)


if __name__ == "__main__":     # the workers are processes started by spawn: they import this module again
    main(int(sys.argv[1]))
