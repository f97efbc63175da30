"""Three QuickBooks companies synced by trustfile_sync's task body over 50 runs while every token refresh
meets a fault at the token endpoint (dropped, truncated, 503, 429), against both readings of what Intuit
does with the previous refresh token (issue 9, point 10).

Before each run every access token the sandbox issued expires (as an hour passing would, without moving
the clock that QuickBooks' 30-day change feed is measured by), so every sync must refresh. Where the
previous refresh token still works until its successor is used, no company may end in invalid_grant;
where it dies at once, a lost answer costs the consent, and the connection must say "needs re-consent"
with the consent link instead of a generic failure.
"""
from __future__ import annotations

import json
import time

import pytest
import requests

from sandbox import qbo as qbo_sandbox
from sandbox import trustfile as tf_sandbox

RUNS = 50
FAULTS = [("dropped", {"drop_next": 1}), ("truncated", {"truncate_next": 1}), ("503", {"burst_5xx": 2}),
          ("429", {"throttle_next": 2})]
TOKEN_PATH = "/tokens/bearer"


class TaskInstance:
    task_id, try_number = "sync_connection", 1


@pytest.fixture
def companies(sandbox, clean_db, vendor_connections, monkeypatch):
    """Three enabled connections, each signed up to TrustFile and authorized for one sandbox company."""
    from etl.encryption import encrypt
    from hooks.qbo import QboHook

    monkeypatch.setattr(QboHook, "backoff_initial", 0.01)
    monkeypatch.setattr(QboHook, "backoff_max", 0.05)
    monkeypatch.setattr(QboHook, "throttle_wait_seconds", 0.01)
    sandbox.control("qbo", per_entity=3)          # small books: this is about tokens, not volume
    ids = []
    for n, realm in enumerate(qbo_sandbox.REALMS, start=1):
        signed = requests.post(f"{sandbox.url}/trustfile/v4/company/signup", timeout=10,
                               headers={"Authorization": f"Bearer {tf_sandbox.TOKEN}"},
                               json={"email": f"owner@{n}.example", "companyName": f"Company {n}",
                                     "companyLine1": f"{n} Main St", "companyCity": "Fresno", "companyState": "CA",
                                     "companyZip": "93722"}).json()
        seed = qbo_sandbox.INITIAL_REFRESH_TOKENS[realm]
        credentials = encrypt(json.dumps({"realm_id": realm, "refresh_token": seed}))
        clean_db.execute(
            "INSERT INTO trustfile.connections (connection_id, enabled, start_date, host_identifier, host_credentials, "
            "provisioning_state, company_token) VALUES (%s, true, '2026-01-01', %s, %s, 'provisioned', %s)",
            (f"company-{n}", realm, credentials, encrypt(signed["companyToken"])))
        ids.append(f"company-{n}")
    clean_db.commit()
    return ids


def run_syncs(sandbox) -> dict:
    """RUNS hourly runs of every due connection, each refresh faulted in turn; what happened."""
    from integrations.trustfile.tasks import due_connections, sync

    tally = {"runs": 0, "syncs": 0, "succeeded": 0, "failed": {}, "faults": {name: 0 for name, _ in FAULTS}}
    for run in range(RUNS):
        due = due_connections()
        if not due:
            break
        tally["runs"] += 1
        # A sync reads up to the last whole second: in the second it last synced there is nothing to read.
        time.sleep(1.0 - time.time() % 1.0)
        sandbox.control("qbo", expire_access_tokens=True)         # as an hour passing would: each sync refreshes
        for n, connection_id in enumerate(due):
            name, fault = FAULTS[(run + n) % len(FAULTS)]
            sandbox.faults("qbo", only_path=TOKEN_PATH, **fault)
            tally["faults"][name] += 1
            tally["syncs"] += 1
            try:
                sync(connection_id, {"params": {}, "run_id": f"run-{run}", "ti": TaskInstance})
                tally["succeeded"] += 1
            except Exception as exc:  # noqa: BLE001 - counted, and asserted on by the caller
                tally["failed"].setdefault(connection_id, []).append(f"{type(exc).__name__}: {exc}")
    sandbox.faults("qbo")
    return tally


def describe(clean_db, connection_id: str) -> tuple[str, bool]:
    row = clean_db.execute("SELECT status_message, host_credentials IS NOT NULL FROM trustfile.connections "
                           "WHERE connection_id = %s", (connection_id,)).fetchone()
    clean_db.commit()
    return row


def test_fifty_runs_of_faulted_refreshes_lose_no_consent_while_the_previous_token_is_accepted(
        companies, sandbox, clean_db):
    sandbox.control("qbo", old_refresh_token="until_new_one_used")
    started = time.monotonic()
    tally = run_syncs(sandbox)
    qbo = sandbox.state("qbo")
    token_calls = [r["status"] for r in sandbox.requests("qbo") if r["path"].endswith(TOKEN_PATH)]
    print(f"\nprevious token accepted until its successor is used: {tally['syncs']} syncs of 3 companies over "
          f"{tally['runs']} runs, faults {tally['faults']}, {tally['succeeded']} succeeded, "
          f"{len(tally['failed'])} companies with a failure, {len(token_calls)} token-endpoint calls "
          f"({qbo['refreshes']} refreshes issued), "
          f"{qbo['refresh_refusals']} invalid_grant, {time.monotonic() - started:.1f} s")
    assert tally["failed"] == {}
    assert tally["syncs"] == tally["succeeded"] == 3 * RUNS
    assert qbo["refreshes"] >= 3 * RUNS                        # every sync refreshed, through its fault
    assert qbo["refresh_refusals"] == 0                        # no company ever met invalid_grant
    assert clean_db.execute("SELECT count(*) FROM trustfile.errors").fetchone()[0] == 0
    for connection_id in companies:
        message, authorized = describe(clean_db, connection_id)
        assert authorized and message.startswith("up to date"), (connection_id, message)


def test_where_the_previous_token_dies_at_once_a_lost_answer_reads_needs_re_consent_with_the_link(
        companies, sandbox, clean_db):
    from integrations.trustfile.tasks import due_connections

    sandbox.control("qbo", old_refresh_token="dies_at_once")
    tally = run_syncs(sandbox)
    print(f"\nprevious token dead at once: {tally['runs']} runs until none was due, {tally['syncs']} syncs, "
          f"{tally['succeeded']} succeeded, "
          f"{sum(len(f) for f in tally['failed'].values())} failed ({len(tally['failed'])} companies), "
          f"faults {tally['faults']}, {sandbox.state('qbo')['refresh_refusals']} invalid_grant")
    assert sorted(tally["failed"]) == companies
    for connection_id in companies:
        link = f"GET /connections/{connection_id}/authentication"
        (failure,) = tally["failed"][connection_id]            # once: then it waits for the consent, no more alerts
        assert failure.startswith(f"NeedsReconsent: connection {connection_id} needs re-consent") and link in failure
        message, authorized = describe(clean_db, connection_id)
        assert message.startswith("needs re-consent") and link in message and not authorized
        assert "lost in transit" in message
        assert qbo_sandbox.INITIAL_REFRESH_TOKENS[qbo_sandbox.REALMS[0]] not in message + failure
    assert due_connections() == []
    errors = clean_db.execute("SELECT type, message FROM trustfile.errors ORDER BY connection_id").fetchall()
    assert [t for t, _ in errors] == ["CONNECTION"] * 3 and all("needs re-consent" in m for _, m in errors)


def test_a_new_consent_ends_the_wait_and_a_consent_renewed_meanwhile_is_never_dropped(companies, sandbox, clean_db):
    from etl.encryption import encrypt
    from etl.oauth_tokens import fingerprint
    from integrations.trustfile import consent, status
    from integrations.trustfile.tasks import NeedsReconsent, due_connections, sync

    realm = qbo_sandbox.REALMS[0]
    clean_db.execute("UPDATE trustfile.connections SET host_credentials = %s WHERE connection_id = 'company-1'",
                     (encrypt(json.dumps({"realm_id": realm, "refresh_token": "RT1-revoked-in-quickbooks"})),))
    clean_db.commit()
    with pytest.raises(NeedsReconsent, match="revoked, unused for 100 days, or lost"):
        sync("company-1", {"params": {}, "run_id": "r1", "ti": TaskInstance})
    assert due_connections() == ["company-2", "company-3"]
    assert describe(clean_db, "company-1")[0].startswith("needs re-consent")
    from integrations.trustfile import connections  # TrustFile switching it off and on does not hide why
    connections.update(clean_db, "company-1", enabled=False, start_date=None, start_date_given=False)
    connections.update(clean_db, "company-1", enabled=True, start_date=None, start_date_given=False)
    assert describe(clean_db, "company-1")[0].startswith("needs re-consent")

    consent.authorize_qbo(clean_db, "company-1", realm, qbo_sandbox.INITIAL_REFRESH_TOKENS[realm])
    assert due_connections() == companies
    assert sync("company-1", {"params": {}, "run_id": "r2", "ti": TaskInstance})["caught_up"]
    # A refusal of an older consent's token, arriving after the customer authorized again, changes nothing.
    assert not status.record_consent_lost(clean_db, "company-1", fingerprint("RT1-an-older-consent"), "stale")
    message, authorized = describe(clean_db, "company-1")
    assert authorized and message.startswith("up to date")
