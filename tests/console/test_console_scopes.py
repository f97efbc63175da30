"""What the Integrations page says of each scope, read from the engine's tables on a real PostgreSQL."""
from __future__ import annotations

import datetime as dt
import time

import pytest

from console import scopes
from integrations.trustfile import status
from notifiers import runbook

H = dt.timedelta(hours=1)
M = dt.timedelta(minutes=1)
D = dt.timedelta(days=1)
TF = "trustfile_sync"


def read(seed) -> scopes.Overview:
    seed.conn.commit()
    return scopes.overview(seed.conn, now=seed.now)


def test_a_scope_shows_its_company_last_success_lag_and_quarantine(seed):
    seed.connection("c-acme", company_name="Acme Inc.")
    seed.run(TF, "c-acme", "success", ago=3 * H, took=2 * M)
    seed.quarantine(TF, "c-acme", 3)

    row = read(seed).scope(TF, "c-acme")

    assert (row.integration, row.name) == ("trustfile", "Acme Inc.")
    assert row.last_success_at == seed.now - 3 * H + 2 * M
    # hourly, 30 min of grace: due by last success + 1 h 30 min, i.e. 1 h 28 min ago
    assert row.lag == 3 * H - 2 * M - (H + 30 * M)
    assert row.quarantined == 3
    assert row.failure is None


def test_a_company_without_a_name_is_named_by_its_host_system_and_account(seed):
    seed.connection("c-1", host_system="servicetrade", host_identifier="acct-77")
    seed.connection("c-2", host_identifier=None)

    overview = read(seed)

    # named as the alerts and the mapped tasks name them
    assert overview.scope(TF, "c-1").name == status.display_name(None, "servicetrade", "acct-77")
    assert overview.scope(TF, "c-2").name == status.display_name(None, "qbo", None)
    assert "acct-77" in overview.scope(TF, "c-1").name


def test_on_schedule_means_no_lag(seed):
    seed.connection("c-1", company_name="On time")
    seed.run(TF, "c-1", "success", ago=40 * M)

    assert read(seed).scope(TF, "c-1").lag == dt.timedelta(0)


def test_states_running_failed_waiting_and_deferred(seed):
    next_hour = seed.now.replace(minute=0) + H
    seed.connection("running", company_name="Runs now")
    seed.run(TF, "running", "success", ago=2 * H)
    seed.run(TF, "running", "running", ago=5 * M)
    seed.connection("failed", company_name="Fails")
    seed.run(TF, "failed", "failed", ago=10 * M, error="VendorApiError: QuickBooks Online answered 503")
    seed.connection("idle", company_name="Idle", next_sync_at=next_hour)
    seed.run(TF, "idle", "success", ago=20 * M)
    seed.connection("later", company_name="Starts later", start_date=(seed.now + 3 * D).date())
    seed.connection("disabled", company_name="Off", enabled=False)
    seed.connection("unauthorized", company_name="Not authorized yet", authorized=False)
    seed.connection("lost", company_name="Consent lost", authorized=False, consent_lost=True)

    overview = read(seed)
    state = {scope: (row.state, row.state_at) for scope, row in
             ((r.scope, r) for r in overview.integration("trustfile").scopes)}

    assert state["running"] == ("running", seed.now - 5 * M)
    assert state["failed"][0] == "failed"
    assert state["idle"] == ("deferred", next_hour)
    later = dt.datetime.combine(seed.now.date() + 3 * D, dt.time(), dt.timezone.utc)
    assert state["later"] == ("deferred", later)
    assert state["disabled"] == ("waiting", None)
    assert overview.scope(TF, "disabled").waiting == "disabled by TrustFile"
    assert overview.scope(TF, "unauthorized").waiting == "waiting for authorization at QuickBooks Online"
    assert overview.scope(TF, "lost").waiting == "needs re-consent at QuickBooks Online"
    assert overview.scope(TF, "disabled").lag is None        # not expected to run: no lag


def test_a_scope_never_synced_is_deferred_to_the_next_scheduled_run(seed):
    seed.connection("new", company_name="New")

    row = read(seed).scope(TF, "new")

    assert (row.state, row.state_at) == ("deferred", seed.now.replace(minute=0) + H)
    assert row.last_success_at is None and row.lag is None


def test_the_connector_switched_off_makes_every_company_wait(seed):
    seed.connection("c-1", company_name="A")
    seed.conn.execute("UPDATE trustfile.connector SET enabled = false")

    assert read(seed).scope(TF, "c-1").waiting == "TrustFile connector switched off"


def test_open_failures_are_those_since_the_last_success_with_the_latest_summary_and_runbook(seed):
    seed.connection("c-1", company_name="Acme")
    seed.run(TF, "c-1", "failed", ago=5 * H, error="old failure, already fixed")
    seed.run(TF, "c-1", "success", ago=4 * H)
    seed.run(TF, "c-1", "failed", ago=2 * H, error="VendorApiError: QuickBooks Online answered 503\nTraceback ...")
    seed.run(TF, "c-1", "failed", ago=1 * H, error="VendorApiError: QuickBooks Online answered 401 (credentials "
                                                   "rejected)\n  File \"sync.py\", line 3", run_id="scheduled__x")
    seed.run(TF, "c-1", "failed", ago=30 * M, error="a backfill typo", mode="backfill")

    failure = read(seed).scope(TF, "c-1").failure

    assert failure.count == 2
    assert failure.summary == "VendorApiError: QuickBooks Online answered 401 (credentials rejected)"
    assert failure.at == seed.now - 1 * H
    assert failure.run_id == "scheduled__x"
    assert failure.runbook_url == runbook.docs_url("integrations/trustfile.md", "Sync failures and what on-call does")


def test_a_runbook_link_in_the_error_wins_over_the_pipeline_default(seed):
    link = runbook.docs_url("runbook.md", "Vendor failures")
    seed.connection("c-1", company_name="Acme")
    seed.run(TF, "c-1", "failed", ago=H, error=f"QuickBooks is down. Runbook: {link}. Retried 3 times.")

    assert read(seed).scope(TF, "c-1").failure.runbook_url == link


def test_backfills_do_not_count_as_the_schedule_succeeding(seed):
    seed.connection("c-1", company_name="Acme")
    seed.run(TF, "c-1", "success", ago=10 * H)
    seed.run(TF, "c-1", "success", ago=10 * M, mode="backfill")

    assert read(seed).scope(TF, "c-1").last_success_at == seed.now - 10 * H + 2 * M


def test_next_credential_expiry_per_scope_and_per_integration(seed):
    seed.connection("c-1", company_name="Acme")
    seed.credential("qbo:refresh:1", integration="qbo", scope="c-1", name="QuickBooks refresh token, Acme",
                    expires_in=400 * D)
    seed.credential("trustfile:company:1", integration="trustfile", scope="c-1", name="TrustFile company token, Acme",
                    expires_in=20 * D)
    seed.credential("airflow:trustfile_default", integration="trustfile", name="TrustFile API token",
                    expires_in=5 * D)
    seed.credential("airflow:trustfile_old", integration="trustfile", name="never expires")
    seed.credential("oms:trackvia", integration="oms", name="TrackVia API key, OMS-Pro", expires_in=-D)

    overview = read(seed)

    assert overview.scope(TF, "c-1").credential == scopes.Expiry("TrustFile company token, Acme", seed.now + 20 * D)
    assert overview.integration("trustfile").credential == scopes.Expiry("TrustFile API token", seed.now + 5 * D)
    oms = overview.integration("oms")                   # known only from the registry: listed, no scopes
    assert oms.scopes == [] and oms.credential == scopes.Expiry("TrackVia API key, OMS-Pro", seed.now - D)


def test_a_deleted_connection_leaves_no_ghost_scope_and_other_pipelines_appear(seed):
    seed.run(TF, "deleted-connection", "success", ago=H)
    seed.run("integrations_maintenance", "prune_ledger", "success", ago=3 * H)
    seed.run("some_new_pipeline", "scope-a", "failed", ago=H, error="boom")

    overview = read(seed)

    assert [row.scope for row in overview.integration("trustfile").scopes] == []
    maintenance = overview.scope("integrations_maintenance", "prune_ledger")
    assert (maintenance.integration, maintenance.lag) == ("platform", dt.timedelta(0))
    unknown = overview.scope("some_new_pipeline", "scope-a")
    assert (unknown.integration, unknown.state, unknown.lag) == ("some_new_pipeline", "failed", None)
    assert unknown.failure.runbook_url == runbook.docs_url("runbook.md")


def test_a_paused_watermark_makes_its_scope_wait(seed):
    seed.watermark("integrations_maintenance", "prune_ledger", paused_reason="switched off for the migration")

    row = read(seed).scope("integrations_maintenance", "prune_ledger")

    assert (row.state, row.waiting) == ("waiting", "switched off for the migration")


def test_problems_come_first(seed):
    seed.connection("a-ok", company_name="A fine")
    seed.run(TF, "a-ok", "success", ago=10 * M)
    seed.connection("z-failed", company_name="Z broken")
    seed.run(TF, "z-failed", "failed", ago=10 * M, error="boom")
    seed.connection("m-late", company_name="M late")
    seed.run(TF, "m-late", "success", ago=5 * H)

    assert [r.scope for r in read(seed).integration("trustfile").scopes] == ["z-failed", "m-late", "a-ok"]


class CountingConnection:
    """The connection the page uses, counting the statements it sends."""

    def __init__(self, conn):
        self.conn, self.statements = conn, 0

    def execute(self, *args, **kwargs):
        self.statements += 1
        return self.conn.execute(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.conn, name)


def test_five_hundred_scopes_in_three_statements_and_well_under_a_second(seed):
    names = seed.many(500)
    seed.conn.commit()
    counting = CountingConnection(seed.conn)

    started = time.perf_counter()
    overview = scopes.overview(counting, now=seed.now)
    elapsed = time.perf_counter() - started

    assert counting.statements <= 3          # scopes, credential expiries, request budgets
    assert sorted(r.name for r in overview.integration("trustfile").scopes) == sorted(names)
    assert sum(1 for r in overview.integration("trustfile").scopes if r.state == "failed") == 50
    print(f"overview of 500 scopes (24,000 ledger rows): {elapsed * 1000:.0f} ms")
    assert elapsed < 0.5


@pytest.mark.parametrize("pipeline", sorted(scopes.PIPELINES))
def test_every_pipeline_schedule_is_its_dags_schedule(pipeline):
    from pathlib import Path

    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags" / f"{pipeline}.py"))
    assert bag.dags[pipeline].schedule == scopes.PIPELINES[pipeline].schedule


def test_a_failed_signup_makes_its_connection_wait(seed):
    seed.connection("c-1", company_name="Acme")
    seed.conn.execute("UPDATE trustfile.connections SET company_token = NULL, provisioning_state = 'signup_failed'")

    assert read(seed).scope(TF, "c-1").waiting == "signup to TrustFile failed"
