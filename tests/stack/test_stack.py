"""`make up` for real: the platform starts, the maintenance DAG runs green through the REST API,
`make down` stops every process, and a second `make up` works. Runs on ports and a state folder
of its own, so a developer's running stack is left alone."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.stack


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stack_env(tmp_path_factory):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AIRFLOW") and k not in ("INTEGRATIONS_DATABASE_URL", "PYTHONPATH")}
    env.update({
        "STACK_LOCAL_DIR": str(tmp_path_factory.mktemp("stack")),
        "EMBEDDED_PG_PORT": str(_free_port()),
        "AIRFLOW_API_PORT": str(_free_port()),
        "SANDBOX_PORT": str(_free_port()),
        # Airflow's side servers too, so a developer's own running stack does not collide.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(_free_port()),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(_free_port()),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)]),
    })
    return env


def _start(env, name: str) -> tuple[subprocess.Popen, Path]:
    out = Path(env["STACK_LOCAL_DIR"]) / f"{name}.out"
    with open(out, "wb") as log:
        up = subprocess.Popen([sys.executable, "-m", "stack", "up"], cwd=ROOT, env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        output = out.read_text()
        if "Airflow is up." in output:
            return up, out
        if up.poll() is not None:
            pytest.fail(f"make up exited with {up.returncode}:\n{output[-3000:]}")
        time.sleep(1)
    up.kill()
    pytest.fail("make up did not report the UI within 300 s")


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _down(env, up: subprocess.Popen) -> None:
    started = _children(up.pid)
    down = subprocess.Popen([sys.executable, "-m", "stack", "down"], cwd=ROOT, env=env)
    assert up.wait(timeout=120) == 0
    assert down.wait(timeout=120) == 0
    alive = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"still running after make down: {[p.cmdline()[:3] for p in alive]}"


LIST_CONNECTIONS = """
import json
from stack.smoke import call
from stack import settings
token = call("POST", "/auth/token", body={"username": settings.ADMIN_USER,
                                          "password": settings.local_secrets().admin_password})["access_token"]
found = call("GET", "/api/v2/connections?limit=100", token)["connections"]
print(json.dumps({c["connection_id"]: c["conn_type"]
                  + ("" if c["conn_type"] == "postgres" else " " + c["host"].split("//")[1])
                  for c in found}))
"""


EXTRACTOR = """
import json, urllib.error, urllib.request
from stack import settings
base = f"http://127.0.0.1:{settings.API_PORT}/extractor"
with urllib.request.urlopen(base + "/health") as r:
    print(r.status, json.loads(r.read())["statuses"][0]["status"])
try:
    urllib.request.urlopen(base + "/connections")
except urllib.error.HTTPError as e:
    print(e.code)
token = settings.local_secrets().avalara_to_extractor_token
request = urllib.request.Request(base + "/connections", headers={"Authorization": "Bearer " + token})
with urllib.request.urlopen(request) as r:
    print(r.status)
"""


def _postgres_password(env) -> str:
    return json.loads((Path(env["STACK_LOCAL_DIR"]) / "secrets.json").read_text())["postgres_password"]


def _files_holding(folder: Path, secret: str, *, besides: set[Path]) -> list[str]:
    found = []
    for path in folder.rglob("*"):
        if path.is_file() and path not in besides and secret.encode() in path.read_bytes():
            found.append(str(path.relative_to(folder)))
    return found


def _assert_postgres_asks_for_the_password(env) -> None:
    """Issue 9, point 11: `make up`'s PostgreSQL trusted every local account."""
    import psycopg

    base = f"postgresql://postgres@127.0.0.1:{env['EMBEDDED_PG_PORT']}"
    no_pgpass = {"passfile": str(Path(env["STACK_LOCAL_DIR"]) / "no-such-pgpass")}
    for database in ("integrations", "airflow"):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(f"{base}/{database}", connect_timeout=5, **no_pgpass).close()
        with psycopg.connect(f"{base}/{database}", password=_postgres_password(env), connect_timeout=5,
                             **no_pgpass) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (database,)


def test_up_runs_the_maintenance_dag_green_then_down_and_up_again(stack_env):
    up, out = _start(stack_env, "first-up")
    try:
        assert "login:  admin / " in out.read_text()
        _assert_postgres_asks_for_the_password(stack_env)
        smoke = subprocess.run([sys.executable, "-m", "stack.smoke", "integrations_maintenance"], cwd=ROOT,
                               env=stack_env, capture_output=True, text=True, timeout=420)
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr
        assert "integrations_maintenance run" in smoke.stdout and ": success" in smoke.stdout
        assert "vendors on the local sandbox" in out.read_text() and "qbo_default" in out.read_text()
        connections = subprocess.run([sys.executable, "-c", LIST_CONNECTIONS], cwd=ROOT, env=stack_env,
                                     capture_output=True, text=True, timeout=60, check=True).stdout
        extractor = subprocess.run([sys.executable, "-c", EXTRACTOR], cwd=ROOT, env=stack_env,
                                   capture_output=True, text=True, timeout=60, check=True).stdout.split()
        assert extractor == ["200", "OK", "401", "200"]   # health open; connections need TrustFile's token
        sandbox = f"127.0.0.1:{stack_env['SANDBOX_PORT']}"
        assert json.loads(connections) == {
            "integrations_db": "postgres", "qbo_default": f"qbo {sandbox}/qbo",
            "servicetrade_default": f"servicetrade {sandbox}/servicetrade/api",
            "trustfile_default": f"trustfile {sandbox}/trustfile"}
    finally:
        _down(stack_env, up)

    again, _ = _start(stack_env, "second-up")  # a second `make up` on the same state folder
    try:
        _assert_postgres_asks_for_the_password(stack_env)
    finally:
        _down(stack_env, again)
    # The password is in the 0600 secrets file and nowhere else: not in make up's output, the logs,
    # Airflow's files or the server's data (Airflow holds the connection encrypted, PostgreSQL a verifier).
    local = Path(stack_env["STACK_LOCAL_DIR"])
    assert oct((local / "secrets.json").stat().st_mode & 0o777) == "0o600"
    assert _files_holding(local, _postgres_password(stack_env), besides={local / "secrets.json"}) == []
