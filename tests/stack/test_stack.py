"""`make up` for real: the platform starts and seeds its demo, every scheduled DAG's first run is green and did
real work against the sandbox, `make down` stops every process, and a second `make up` finds the demo and the
sandbox as they were, so the next sync works. Runs on ports and a state folder of its own, so a developer's
running stack is left alone."""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

from sandbox import servicetrade as st
from stack.connections import OMS_PRO_REALM

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


class Stack:
    """The running test stack, from outside: Airflow's REST API, the sandbox, the integrations database."""

    def __init__(self, env: dict):
        self.env = env
        self.local = Path(env["STACK_LOCAL_DIR"])
        self.api = f"http://127.0.0.1:{env['AIRFLOW_API_PORT']}"
        self.sandbox = f"http://127.0.0.1:{env['SANDBOX_PORT']}"
        secrets = json.loads((self.local / "secrets.json").read_text())
        self.extractor_token = secrets["avalara_to_extractor_token"]
        self.token = requests.post(f"{self.api}/auth/token", timeout=30, json={
            "username": "admin", "password": secrets["admin_password"]}).json()["access_token"]

    def get(self, path: str) -> dict:
        answer = requests.get(f"{self.api}{path}", headers={"Authorization": f"Bearer {self.token}"}, timeout=30)
        answer.raise_for_status()
        return answer.json()

    def extractor(self, path: str) -> dict:
        return requests.get(f"{self.api}/extractor{path}", timeout=30,
                            headers={"Authorization": f"Bearer {self.extractor_token}"}).json()

    def scheduled_dags(self) -> list[str]:
        """Every scheduled DAG of dags/, as Airflow parsed it (once every file of dags/ is parsed)."""
        from stack.demo import dag_files

        files = dag_files()
        deadline = time.monotonic() + 180
        while True:
            dags = [d for d in self.get("/api/v2/dags?limit=100")["dags"] if not d["is_stale"]]
            if {Path(d["fileloc"]).name for d in dags} >= files or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert {Path(d["fileloc"]).name for d in dags} >= files, "Airflow did not parse every file of dags/"
        return sorted(d["dag_id"] for d in dags if d["timetable_periodic"])

    def first_scheduled_runs(self, dag_ids: list[str], timeout_seconds: float) -> dict[str, dict]:
        """dag id -> its first scheduled run, once every one has ended."""
        deadline, runs = time.monotonic() + timeout_seconds, {}
        while len(runs) < len(dag_ids) and time.monotonic() < deadline:
            for dag_id in set(dag_ids) - set(runs):
                found = self.get(f"/api/v2/dags/{dag_id}/dagRuns?run_type=scheduled&order_by=run_after&limit=1")
                if found["dag_runs"] and found["dag_runs"][0]["state"] in ("success", "failed"):
                    runs[dag_id] = found["dag_runs"][0]
            time.sleep(3)
        assert sorted(runs) == dag_ids, f"no finished first scheduled run within {timeout_seconds:.0f} s: " \
                                        f"{sorted(set(dag_ids) - set(runs))}"
        return runs

    def task_states(self, dag_id: str, run_id: str) -> list[tuple[str, str]]:
        tis = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return sorted((ti["task_id"], ti["state"]) for ti in tis)

    def xcom(self, dag_id: str, run_id: str, task_id: str):
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/"
                        "return_value")["value"]

    def sandbox_requests(self, since: float, until: float) -> list[dict]:
        found = requests.get(f"{self.sandbox}/_sandbox/requests", params={"since": since}, timeout=30).json()
        return [r for r in found["requests"] if r["at"] <= until]

    def query(self, sql: str, *args) -> list[tuple]:
        import psycopg

        url = f"postgresql://postgres@127.0.0.1:{self.env['EMBEDDED_PG_PORT']}/integrations"
        with psycopg.connect(url, password=_postgres_password(self.env), connect_timeout=10) as conn:
            return conn.execute(sql, args).fetchall()


def _epoch(timestamp: str) -> float:
    return dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def _demo_connections(output: str) -> dict[str, str]:
    """host label -> connection id, from the `make up` banner's demo lines."""
    return dict(re.findall(r"^    (QuickBooks|ServiceTrade) .* -> TrustFile connection ([0-9a-f-]{36}) ", output,
                           re.MULTILINE))


def _assert_the_banner_says_where_everything_is(output: str, env: dict, extractor_token: str) -> None:
    api = f"http://127.0.0.1:{env['AIRFLOW_API_PORT']}"
    assert f"UI:            {api}" in output and "login:         admin / " in output
    assert f"Integrations:  {api}/integrations/" in output
    assert f"extractor API: {api}/extractor" in output
    secrets_file = str(Path(env["STACK_LOCAL_DIR"]).resolve() / "secrets.json")
    assert f"avalara_to_extractor_token in {secrets_file}" in output
    curl = next(line.strip() for line in output.splitlines() if line.strip().startswith("curl "))
    assert extractor_token not in output                            # the token is read from the file, never shown
    listed = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=30, check=True).stdout
    assert sorted(json.loads(listed)["connections"]) == sorted(_demo_connections(output).values())
    assert "vendors on the local sandbox" in output and "qbo_default" in output
    assert str(Path(env["STACK_LOCAL_DIR"]).resolve() / "sandbox-state.json") in output


def _assert_first_runs_did_real_work(stack: Stack, output: str) -> None:
    """Issue 10's acceptance: no manual step, and every scheduled DAG of dags/ has a green first run that did
    real work: trustfile_sync loaded and pushed both demo companies, integrations_maintenance reported their
    watermarks, and any other scheduled DAG called the sandbox during its run."""
    demo = _demo_connections(output)
    assert sorted(demo) == ["QuickBooks", "ServiceTrade"]
    dag_ids = stack.scheduled_dags()
    assert {"trustfile_sync", "integrations_maintenance"} <= set(dag_ids)
    runs = stack.first_scheduled_runs(dag_ids, timeout_seconds=300)
    failed = {d: stack.task_states(d, r["dag_run_id"]) for d, r in runs.items() if r["state"] != "success"}
    assert failed == {}

    sync = runs["trustfile_sync"]["dag_run_id"]
    assert stack.task_states("trustfile_sync", sync) == [
        ("due_connections", "success"), ("sync_connection", "success"), ("sync_connection", "success")]
    loaded = dict(stack.query("SELECT connection_id, count(*) FROM trustfile.transactions GROUP BY 1"))
    pushed = dict(stack.query("SELECT connection_id, count(*) FROM trustfile.push_ledger WHERE outcome = 'pushed' "
                              "GROUP BY 1"))
    assert loaded[demo["QuickBooks"]] == 4 * 40                     # the sandbox company's sales and refunds
    assert loaded[demo["ServiceTrade"]] > 40 and pushed[demo["ServiceTrade"]] > 40
    holdings = requests.get(f"{stack.sandbox}/_sandbox/state/trustfile", timeout=30).json()
    assert sorted(len(items) for items in holdings["items"].values()) == sorted(pushed.values())
    for connection_id in demo.values():
        status = stack.extractor(f"/connections/{connection_id}")
        assert status["enabled"] and status["authorized"] and status["startDate"] == "2026-01-01"
        assert status["statusMessage"].startswith("up to date: "), status

    maintenance = runs["integrations_maintenance"]["dag_run_id"]
    report = stack.xcom("integrations_maintenance", maintenance, "report_watermark_lag")
    # and the brand's order export, OMS-Pro's two tables, the QuickBooks company linked to OMS-Pro and the
    # ServiceTrade account the safety net reads
    assert {r["scope"] for r in report} == {*demo.values(), "demo-brand", "tickets", "site_visits", OMS_PRO_REALM,
                                            "servicetrade_default"}

    # The ItsPerfect brand: both stores hold their warehouse's stock, its orders reached the tenant once.
    assert "ItsPerfect brand Demo Fashion (account demo-brand) -> connector itsperfect_default" in output
    stocked = dict(stack.query("SELECT location_id, count(*) FROM commerce.location_quantities GROUP BY 1"))
    assert set(stocked) == {"store-amsterdam", "store-utrecht"} and min(stocked.values()) > 50
    itsperfect = requests.get(f"{stack.sandbox}/_sandbox/state/itsperfect", timeout=30).json()
    assert sorted(o["reference"] for o in itsperfect["orders"]) == [f"demo-web-{n:04d}" for n in range(1, 6)]
    assert stack.query("SELECT state, count(*) FROM itsperfect.order_exports GROUP BY 1") == [("sent", 5)]

    # OMS-Pro: every completed ticket and site visit of the sandbox's app has its completed date.
    oms = requests.get(f"{stack.sandbox}/_sandbox/state/trackvia", timeout=30).json()
    completed = [r for table in ("Tickets", "Site Visits") for r in oms["records"][table] if r["Status"] == "Completed"]
    assert completed and all(r["Completed Date"] for r in completed) and oms["delete_requests"] == 0
    # and the payments of the QuickBooks company of qbo_oms_pro are on their tickets.
    linked = dict(stack.query("SELECT status, count(*) FROM etl.run_ledger WHERE pipeline = 'oms_payment_linking' "
                              "GROUP BY 1"))
    assert linked.get("success", 0) >= 1 and any(r["QBO Payment IDs"] for r in oms["records"]["Tickets"])

    # servicetrade_webhook_events fetches only what webhooks announced: _assert_an_invoice_edit_reaches_trustfile
    # shows its real work.
    for dag_id in set(dag_ids) - {"trustfile_sync", "integrations_maintenance", "servicetrade_webhook_events"}:
        run = runs[dag_id]
        calls = stack.sandbox_requests(_epoch(run["start_date"]), _epoch(run["end_date"]))
        assert calls, f"{dag_id}'s first run made no call to the sandbox"


QUIET_SECONDS = 30    # include/servicetrade_webhooks.yaml's default quiet window


def _assert_an_invoice_edit_reaches_trustfile(stack: Stack) -> None:
    """Issue 14's acceptance: an invoice edited at ServiceTrade reaches its TrustFile item within the quiet window
    + 60 s, through the webhook (sandbox delivery -> receiver -> watcher -> servicetrade_webhook_events -> the
    asset -> trustfile_sync), with no hourly run involved."""
    # The sandbox keeps TrustFile's items per company token; the ServiceTrade tenant's are its invoices.
    companies = requests.get(f"{stack.sandbox}/_sandbox/state/trustfile", timeout=30).json()["items"]
    company, holdings = next((c, items) for c, items in companies.items()
                             if any(i["itemId"].startswith("servicetrade-invoice-") for i in items))
    item = next(i for i in holdings if i["itemId"].startswith("servicetrade-invoice-") and not i.get("refund"))
    invoice_id = int(item["itemId"].rsplit("-", 1)[1])
    moved = dt.date.fromisoformat(item["transactionDate"][:10]) + dt.timedelta(days=3)
    api = f"{stack.sandbox}/servicetrade/api"
    session = requests.post(f"{api}/auth", json={"username": st.USERNAME, "password": st.PASSWORD},
                            timeout=30).json()["data"]["authToken"]
    edited_at = time.time()
    requests.put(f"{api}/invoice/{invoice_id}", cookies={"PHPSESSID": session}, timeout=30,
                 json={"transactionDate": int(dt.datetime(moved.year, moved.month, moved.day,
                                                          tzinfo=dt.timezone.utc).timestamp())}).raise_for_status()
    requests.delete(f"{api}/auth", cookies={"PHPSESSID": session}, timeout=30)
    deadline = edited_at + QUIET_SECONDS + 120
    while time.time() < deadline:
        items = requests.get(f"{stack.sandbox}/_sandbox/state/trustfile", timeout=30).json()["items"][company]
        now = next(i for i in items if i["itemId"] == item["itemId"] and i.get("refund") == item.get("refund"))
        if now["transactionDate"].startswith(moved.isoformat()):
            break
        time.sleep(1)
    took = time.time() - edited_at
    print(f"invoice {invoice_id} edited at ServiceTrade -> its TrustFile item updated in {took:.1f} s "
          f"(quiet window {QUIET_SECONDS} s)")
    assert now["transactionDate"].startswith(moved.isoformat()), f"not updated within {took:.0f} s"
    assert took <= QUIET_SECONDS + 60
    syncs = stack.get("/api/v2/dags/trustfile_sync/dagRuns?order_by=-run_after&limit=20")["dag_runs"]
    since_edit = [r for r in syncs if r["start_date"] and _epoch(r["start_date"]) >= edited_at]
    assert {r["run_type"] for r in since_edit} == {"asset_triggered"}, since_edit


def test_up_leaves_a_working_demo_that_survives_down_and_up_again(stack_env):
    started = time.monotonic()
    up, out = _start(stack_env, "first-up")
    try:
        _assert_postgres_asks_for_the_password(stack_env)
        stack = Stack(stack_env)
        output = out.read_text()
        _assert_the_banner_says_where_everything_is(output, stack_env, stack.extractor_token)
        _assert_first_runs_did_real_work(stack, output)
        assert time.monotonic() - started < 600
        _assert_an_invoice_edit_reaches_trustfile(stack)
        connections = subprocess.run([sys.executable, "-c", LIST_CONNECTIONS], cwd=ROOT, env=stack_env,
                                     capture_output=True, text=True, timeout=60, check=True).stdout
        extractor = subprocess.run([sys.executable, "-c", EXTRACTOR], cwd=ROOT, env=stack_env,
                                   capture_output=True, text=True, timeout=60, check=True).stdout.split()
        assert extractor == ["200", "OK", "401", "200"]   # health open; connections need TrustFile's token
        sandbox = f"127.0.0.1:{stack_env['SANDBOX_PORT']}"
        assert {c: t for c, t in json.loads(connections).items() if c in (
            "integrations_db", "qbo_default", "servicetrade_default", "trustfile_default")} == {
            "integrations_db": "postgres", "qbo_default": f"qbo {sandbox}/qbo",
            "servicetrade_default": f"servicetrade {sandbox}/servicetrade/api",
            "trustfile_default": f"trustfile {sandbox}/trustfile"}
    finally:
        _down(stack_env, up)
    state_file = Path(stack_env["STACK_LOCAL_DIR"]) / "sandbox-state.json"
    assert oct(state_file.stat().st_mode & 0o777) == "0o600"

    again, out = _start(stack_env, "second-up")  # a second `make up` on the same state folder
    try:
        _assert_postgres_asks_for_the_password(stack_env)
        output = out.read_text()
        assert output.count("(already seeded)") == 3 and "provisioning" not in output
        stack = Stack(stack_env)
        assert requests.get(f"{stack.sandbox}/health", timeout=30).json()["state_file"]["restored"] is True
        # The sandbox remembers the companies and the tokens it issued: with every access token expired, the
        # next sync refreshes with the refresh token the platform stored before the restart, and pushes again.
        before = requests.put(f"{stack.sandbox}/_sandbox/control/qbo", json={"expire_access_tokens": True},
                              timeout=30).json()
        smoke = subprocess.run([sys.executable, "-m", "stack.smoke", "trustfile_sync"], cwd=ROOT, env=stack_env,
                               capture_output=True, text=True, timeout=420)
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr
        after = requests.get(f"{stack.sandbox}/_sandbox/state/qbo", timeout=30).json()
        # (The credential registry's daily check of the OAuth app presents a dummy refresh token on purpose: a
        # refusal proves the client id and secret. None may come from the sync.)
        assert after["refreshes"] == before["refreshes"] + 1
        assert after["refresh_refusals"] == before["refresh_refusals"]
        for connection_id in _demo_connections(output).values():
            status = stack.extractor(f"/connections/{connection_id}")
            assert status["authorized"] and status["statusMessage"].startswith("up to date: "), status
    finally:
        _down(stack_env, again)
    # The password is in the 0600 secrets file and nowhere else: not in make up's output, the logs,
    # Airflow's files, the sandbox's state or the server's data (Airflow holds the connection encrypted,
    # PostgreSQL a verifier).
    local = Path(stack_env["STACK_LOCAL_DIR"])
    assert oct((local / "secrets.json").stat().st_mode & 0o777) == "0o600"
    assert _files_holding(local, _postgres_password(stack_env), besides={local / "secrets.json"}) == []
