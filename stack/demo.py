"""The demo `make up` leaves behind (`DEMO=0 make up` skips it): a tenant per integration, seeded
against the vendor sandbox through the platform's own paths, then the scheduled DAGs unpaused so that
their first runs have real work. docs/demo.md is the user's side of it.

TrustFile extractor: a QuickBooks company and a ServiceTrade account, each
  provisioned  by a `trustfile_provision` run (Airflow's REST API, the form's own Params), which signs the
               company up to the sandbox's TrustFile and stores the company token;
  authorized   QuickBooks through the real consent: `GET /extractor/connections/{id}/authentication` as
               TrustFile opens it, the sandbox's consent page, and our callback, which exchanges the code;
               ServiceTrade by its Airflow connection (`servicetrade_default`), named at provisioning;
  enabled      with `PUT /extractor/connections/{id}` as TrustFile does, from START_DATE: the sandbox's
               documents are dated January 2026.
ServiceTrade's webhooks: a `servicetrade_webhook_subscription` run subscribes `servicetrade_default` to this API
server's receiver, so the sandbox delivers every change of its entities (an edited invoice reaches TrustFile
within a minute of its quiet window).
Nothing is written to the database here: what the demo knows of a tenant it reads back.

Airflow creates DAGs paused (`[core] dags_are_paused_at_creation`). Once the tenants are seeded, every
scheduled DAG of dags/ that is paused and has never run is unpaused; with `catchup=False` the scheduler
then creates a run for its latest interval at once (CronTriggerTimetable: the most recent tick at or
before now), so each DAG's first run starts within seconds and finds the tenants. The DAGs that report
on the others (RUNS_AFTER_THE_OTHERS) are unpaused once those first runs have ended, so their first
report covers them. A DAG someone paused after it ran is left paused; a DAG added later is unpaused by
the next `make up`. Everything is idempotent: a restart finds the tenants and changes nothing.
"""
from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests

from sandbox import qbo as qbo_sandbox
from stack import settings
from stack.processes import say
from stack.smoke import call

START_DATE = "2026-01-01"          # the sandbox's documents: QuickBooks 5 January 2026, ServiceTrade 1-10 January
# Where TrustFile would take the browser back after the consent; the demo reads the redirect, never opens it.
REDIRECT_URI = "https://app.trustfile.example/connectors/success"
RUNS_AFTER_THE_OTHERS = ("integrations_maintenance",)    # reports on every pipeline's watermarks
PROVISION_DAG = "trustfile_provision"
WEBHOOK_SUBSCRIPTION_DAG = "servicetrade_webhook_subscription"
WEBHOOK_ACCOUNT = "servicetrade_default"
FIRST_RUNS_TIMEOUT = 600


@dataclass(frozen=True)
class Tenant:
    label: str
    email: str
    company: str
    host_system: str
    vendors: tuple[str, ...]            # the sandboxed Airflow connections it needs
    address: tuple[tuple[str, str], ...]


TENANTS = (
    Tenant("QuickBooks", "demo-quickbooks@example.com", "Demo Bikes", "qbo", ("qbo_default", "trustfile_default"),
           (("line1", "1 Market St"), ("city", "Fresno"), ("state", "CA"), ("zip", "93722"))),
    Tenant("ServiceTrade", "demo-servicetrade@example.com", "Demo Fire Protection", "servicetrade",
           ("servicetrade_default", "trustfile_default"),
           (("line1", "2 Depot Rd"), ("city", "Reno"), ("state", "NV"), ("zip", "89502"))),
)


class DemoError(RuntimeError):
    """The demo could not be seeded; the platform runs anyway."""


@dataclass
class Seeded:
    tenant: Tenant
    connection_id: str
    host_identifier: str | None
    start_date: str | None
    enabled: bool
    changed: bool

    def line(self) -> str:
        where = (f"QuickBooks company {self.host_identifier}" if self.tenant.host_system == "qbo"
                 else f"ServiceTrade ({self.host_identifier})")
        state = f"enabled from {self.start_date}" if self.enabled else "disabled"
        return (f"{where} -> TrustFile connection {self.connection_id} ({self.tenant.company}), {state}"
                + ("" if self.changed else " (already seeded)"))


class Platform:
    """The running stack as the demo drives it: Airflow's REST API, the extractor API, the sandbox."""

    def __init__(self, env: dict, integrations_url: str):
        self.integrations_url = integrations_url
        self.extractor = f"http://127.0.0.1:{settings.API_PORT}/extractor"
        self.bearer = {"Authorization": f"Bearer {env['AVALARA_TO_EXTRACTOR_TOKEN']}"}
        self.sandbox = f"http://127.0.0.1:{settings.SANDBOX_PORT}"
        self._token: str | None = None
        self._token_at = 0.0

    def airflow(self, method: str, path: str, body: dict | None = None) -> dict:
        if self._token is None or time.monotonic() - self._token_at > 600:
            password = settings.local_secrets().admin_password
            self._token = call("POST", "/auth/token", body={"username": settings.ADMIN_USER,
                                                             "password": password})["access_token"]
            self._token_at = time.monotonic()
        return call(method, path, self._token, body)

    def tenant_row(self, email: str) -> dict | None:
        from etl.db import connect

        with connect(self.integrations_url) as conn:
            row = conn.execute(
                "SELECT connection_id, provisioning_state, host_identifier, host_credentials IS NOT NULL, enabled, "
                "start_date FROM trustfile.connections WHERE lower(signup_email) = lower(%s)", (email,)).fetchone()
        if row is None:
            return None
        keys = ("connection_id", "provisioning_state", "host_identifier", "authorized", "enabled", "start_date")
        return dict(zip(keys, row, strict=True))

    def linked_realms(self, besides: str) -> set[str]:
        from etl.db import connect

        with connect(self.integrations_url) as conn:
            return {r[0] for r in conn.execute(
                "SELECT host_identifier FROM trustfile.connections WHERE host_system = 'qbo' "
                "AND host_credentials IS NOT NULL AND connection_id <> %s", (besides,))}


# ---- the DAGs -------------------------------------------------------------------------------------


def dag_files() -> set[str]:
    """Files of dags/ the DAG processor parses (its safe mode: those naming both "airflow" and "dag")."""
    return {p.name for p in (settings.ROOT / "dags").glob("*.py")
            if re.search(b"airflow", p.read_bytes(), re.I) and re.search(b"dag", p.read_bytes(), re.I)}


def parsed_dags(platform: Platform, timeout_seconds: float = 240) -> list[dict]:
    """Every live DAG, once each file of dags/ has its DAGs (or its import error) in Airflow."""
    expected = dag_files()
    deadline = time.monotonic() + timeout_seconds
    while True:
        dags = _all(platform, "/api/v2/dags", "dags")
        errors = _all(platform, "/api/v2/importErrors", "import_errors")
        seen = {Path(d["relative_fileloc"] or d["fileloc"]).name for d in dags if not d["is_stale"]}
        seen |= {Path(e["filename"]).name for e in errors}
        if expected <= seen:
            for error in errors:
                say(f"demo: {error['filename']} does not import; see the UI's DAG import errors", error=True)
            return [d for d in dags if not d["is_stale"]]
        if time.monotonic() > deadline:
            raise DemoError(f"Airflow has not parsed {', '.join(sorted(expected - seen))} within "
                            f"{timeout_seconds:.0f} s; see {settings.LOG_DIR / 'dag-processor.log'}")
        time.sleep(2)


def _all(platform: Platform, path: str, key: str) -> list[dict]:
    found: list[dict] = []
    while True:
        page = platform.airflow("GET", f"{path}?limit=100&offset={len(found)}")
        found.extend(page[key])
        if not page[key] or len(found) >= page["total_entries"]:
            return found


def scheduled(dags: list[dict]) -> list[dict]:
    return [d for d in dags if d["timetable_periodic"]]


def never_ran(platform: Platform, dag_id: str) -> bool:
    return platform.airflow("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=1")["total_entries"] == 0


def unpause(platform: Platform, dag_id: str) -> None:
    platform.airflow("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})


def trigger(platform: Platform, dag_id: str, conf: dict) -> str:
    return platform.airflow("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})[
        "dag_run_id"]


def wait_for_runs(platform: Platform, dag_id: str, run_ids: list[str], timeout_seconds: float) -> dict[str, str]:
    """run id -> final state (success / failed), waiting for all."""
    deadline, states = time.monotonic() + timeout_seconds, {}
    while len(states) < len(run_ids):
        for run_id in run_ids:
            if run_id not in states:
                state = platform.airflow("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
                if state in ("success", "failed"):
                    states[run_id] = state
        if len(states) < len(run_ids):
            if time.monotonic() > deadline:
                raise DemoError(f"{dag_id} runs {', '.join(r for r in run_ids if r not in states)} did not end "
                                f"within {timeout_seconds:.0f} s; see them in the UI")
            time.sleep(2)
    return states


# ---- the tenants ----------------------------------------------------------------------------------


def seed(platform: Platform, sandboxed: list[str], *, sandbox_fresh: bool) -> list[Seeded]:
    """Provision, authorize and enable every tenant whose vendors are on the sandbox; what each ended as."""
    tenants = [t for t in TENANTS if set(t.vendors) <= set(sandboxed)]
    for tenant in TENANTS:
        if tenant not in tenants:
            say(f"demo: no {tenant.label} tenant: {', '.join(v for v in tenant.vendors if v not in sandboxed)} "
                "point(s) at a real vendor, not the sandbox")
    if not tenants:
        return []
    rows = {t: platform.tenant_row(t.email) for t in tenants}
    if sandbox_fresh:
        # The sandbox lost the companies these tenants were signed up as (no state file): start them again.
        for tenant, row in rows.items():
            if row is not None:
                say(f"demo: the sandbox started without its state; deleting the {tenant.label} tenant "
                    f"{row['connection_id']} to provision it again")
                answer = requests.delete(f"{platform.extractor}/connections/{row['connection_id']}",
                                         headers=platform.bearer, timeout=30)
                if answer.status_code not in (200, 404):
                    raise DemoError(f"DELETE /extractor/connections/{row['connection_id']} answered "
                                    f"{answer.status_code}: {answer.text[:200]}")
                rows[tenant] = None
    changed = provision(platform, [t for t, row in rows.items() if row is None or row["provisioning_state"]
                                   != "provisioned"])
    seeded = []
    for tenant in tenants:
        row = platform.tenant_row(tenant.email)
        if row is None or row["provisioning_state"] != "provisioned":
            raise DemoError(f"the {tenant.label} tenant ({tenant.email}) is not provisioned "
                            f"({row['provisioning_state'] if row else 'no connection'}); see the "
                            f"{PROVISION_DAG} run in the UI")
        touched = tenant in changed
        if not row["authorized"] and tenant.host_system == "qbo":
            authorize_qbo(platform, row["connection_id"])
            touched = True
        if row["start_date"] is None:
            enable(platform, row["connection_id"])
            touched = True
        row = platform.tenant_row(tenant.email)
        seeded.append(Seeded(tenant, row["connection_id"], row["host_identifier"],
                             row["start_date"].isoformat() if row["start_date"] else None, row["enabled"], touched))
    return seeded


def provision(platform: Platform, tenants: list[Tenant]) -> set[Tenant]:
    """One trustfile_provision run per tenant, as someone fills the form in the UI; all must succeed."""
    if not tenants:
        return set()
    unpause(platform, PROVISION_DAG)       # manual only: unpaused, its triggered runs execute
    runs = {}
    for tenant in tenants:
        conf = {"email": tenant.email, "company_name": tenant.company, "host_system": tenant.host_system,
                **dict(tenant.address)}
        runs[trigger(platform, PROVISION_DAG, conf)] = tenant
        say(f"demo: provisioning the {tenant.label} tenant \"{tenant.company}\" ({PROVISION_DAG})")
    states = wait_for_runs(platform, PROVISION_DAG, list(runs), timeout_seconds=300)
    failed = [f"{runs[r].label} ({r})" for r, state in states.items() if state != "success"]
    if failed:
        raise DemoError(f"{PROVISION_DAG} failed for {', '.join(failed)}: open the run in the UI")
    return set(tenants)


def authorize_qbo(platform: Platform, connection_id: str) -> str:
    """The consent as a browser makes it: TrustFile's link, Intuit's page (the sandbox's, which consents at
    once for the company set with consent_realm), our callback. Returns the realm authorized."""
    taken = platform.linked_realms(connection_id)
    realm = next((r for r in qbo_sandbox.REALMS if r not in taken), None)
    if realm is None:
        raise DemoError("every QuickBooks sandbox company is already linked to another connection")
    requests.put(f"{platform.sandbox}/_sandbox/control/qbo", json={"consent_realm": realm},
                 timeout=30).raise_for_status()
    started = requests.get(f"{platform.extractor}/connections/{connection_id}/authentication", timeout=30,
                           headers=platform.bearer, params={"redirectUri": REDIRECT_URI}, allow_redirects=False)
    if started.status_code != 302:
        raise DemoError(f"the consent did not start: HTTP {started.status_code}: {started.text[:200]}")
    at_intuit = requests.get(started.headers["location"], allow_redirects=False, timeout=30)
    if at_intuit.status_code != 302:
        raise DemoError(f"the sandbox's consent page answered HTTP {at_intuit.status_code}: {at_intuit.text[:200]}")
    back = requests.get(at_intuit.headers["location"], allow_redirects=False, timeout=60)
    outcome = parse_qs(urlsplit(back.headers.get("location", "")).query)
    if back.status_code != 302 or outcome.get("success") != ["true"]:
        raise DemoError(f"the consent callback ended with HTTP {back.status_code} "
                        f"{outcome.get('error') or back.text[:200]}; see the connection's activities")
    say(f"demo: authorized QuickBooks company {realm} for connection {connection_id} (consent through the sandbox)")
    return realm


def enable(platform: Platform, connection_id: str) -> None:
    answer = requests.put(f"{platform.extractor}/connections/{connection_id}", headers=platform.bearer, timeout=30,
                          json={"enabled": True, "startDate": START_DATE})
    if answer.status_code != 200:
        raise DemoError(f"PUT /extractor/connections/{connection_id} answered {answer.status_code}: "
                        f"{answer.text[:200]}")


# ---- ServiceTrade webhooks ------------------------------------------------------------------------


def subscribe_webhooks(platform: Platform, account: str = WEBHOOK_ACCOUNT) -> str:
    """A `servicetrade_webhook_subscription` run for the sandboxed account, as someone fills the form: the sandbox
    then delivers the account's changes to the receiver of this API server (SERVICETRADE_WEBHOOK_URL). Every
    `make up` runs it: it verifies the subscription, or makes it again when the sandbox lost its state."""
    from etl.db import connect

    unpause(platform, WEBHOOK_SUBSCRIPTION_DAG)
    run_id = trigger(platform, WEBHOOK_SUBSCRIPTION_DAG, {"account": account})
    state = wait_for_runs(platform, WEBHOOK_SUBSCRIPTION_DAG, [run_id], timeout_seconds=300)[run_id]
    if state != "success":
        raise DemoError(f"{WEBHOOK_SUBSCRIPTION_DAG} {state} for {account} ({run_id}): open the run in the UI")
    with connect(platform.integrations_url) as conn:
        subscription, base = conn.execute("SELECT subscription_id, hook_url_base FROM servicetrade.webhook_accounts "
                                          "WHERE account = %s", (account,)).fetchone()
    return f"ServiceTrade webhooks: {account} subscription {subscription} delivers to {base}***"


# ---- first runs -----------------------------------------------------------------------------------


def start_first_runs(platform: Platform, stopping: Callable[[], bool]) -> list[str]:
    """Unpause the scheduled DAGs that never ran; the ones reporting on the others after those first runs
    ended (in a thread). Returns what was done, for the banner."""
    dags = scheduled(parsed_dags(platform))
    fresh = [d["dag_id"] for d in dags if d["is_paused"] and never_ran(platform, d["dag_id"])]
    first = [dag_id for dag_id in fresh if dag_id not in RUNS_AFTER_THE_OTHERS]
    later = [dag_id for dag_id in fresh if dag_id in RUNS_AFTER_THE_OTHERS]
    for dag_id in first:
        unpause(platform, dag_id)
    lines = []
    if first:
        lines.append(f"unpaused {', '.join(first)}: first runs start now")
    if later:
        lines.append(f"{', '.join(later)} unpaused once those first runs end")
        threading.Thread(target=_unpause_after, args=(platform, first, later, stopping), name="demo-first-runs",
                         daemon=True).start()
    left = [d["dag_id"] for d in dags if d["is_paused"] and d["dag_id"] not in fresh]
    if left:
        lines.append(f"left paused (they ran before): {', '.join(left)}")
    return lines


def _unpause_after(platform: Platform, first: list[str], later: list[str], stopping: Callable[[], bool]) -> None:
    deadline = time.monotonic() + FIRST_RUNS_TIMEOUT
    outcome: dict[str, str] = {}
    try:
        while len(outcome) < len(first) and time.monotonic() < deadline and not stopping():
            for dag_id in first:
                if dag_id not in outcome:
                    runs = platform.airflow("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=1&order_by=run_after")
                    ended = [r["state"] for r in runs["dag_runs"] if r["state"] in ("success", "failed")]
                    if ended:
                        outcome[dag_id] = ended[0]
            time.sleep(3)
        if stopping():
            return
        for dag_id in later:
            unpause(platform, dag_id)
        ended = ", ".join(f"{d} {s}" for d, s in outcome.items()) or "none ended"
        say(f"demo: first runs ended ({ended}); unpaused {', '.join(later)}")
    except Exception as exc:  # noqa: BLE001 - a helper thread: say what went wrong, never take the stack down
        say(f"demo: could not unpause {', '.join(later)}: {exc}; unpause them in the UI", error=True)
