"""Trigger a DAG on the running `make up` stack through Airflow's REST API and wait for its outcome.

    python -m stack.smoke [dag_id]          (default: integrations_maintenance; `make smoke`)

Exit code 0 when the run succeeds; otherwise the state of every task, so the failure is readable.
"""
from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request

from stack import settings

BASE = f"http://127.0.0.1:{settings.API_PORT}"


def call(method: str, path: str, token: str | None = None, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        BASE + path, method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def wait_for(what: str, probe, timeout_seconds: float):
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            result = probe()
            if result:
                return result
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_seconds:.0f} s waiting for {what}")
        time.sleep(2)


def run_dag(dag_id: str, timeout_seconds: float = 300) -> str:
    password = settings.local_secrets().admin_password
    token = call("POST", "/auth/token", body={"username": settings.ADMIN_USER, "password": password})["access_token"]
    wait_for(f"{dag_id} to be parsed", lambda: call("GET", f"/api/v2/dags/{dag_id}", token), 180)
    call("PATCH", f"/api/v2/dags/{dag_id}", token, {"is_paused": False})
    run = call("POST", f"/api/v2/dags/{dag_id}/dagRuns", token, {"logical_date": None, "conf": {}})
    run_id = run["dag_run_id"]
    print(f"triggered {dag_id} run {run_id}", flush=True)

    def finished():
        state = call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}", token)["state"]
        return state if state in ("success", "failed") else None

    state = wait_for(f"{dag_id} run {run_id} to finish", finished, timeout_seconds)
    tasks = call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", token)["task_instances"]
    for ti in tasks:
        print(f"  {ti['task_id']:<28} {ti['state']}")
    print(f"{dag_id} run {run_id}: {state}")
    return state


if __name__ == "__main__":
    sys.exit(0 if run_dag(sys.argv[1] if len(sys.argv) > 1 else "integrations_maintenance") == "success" else 1)
