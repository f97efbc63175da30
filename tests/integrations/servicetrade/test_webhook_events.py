"""Ripe webhook events processed against the real sandbox and a real PostgreSQL: debounce, sessions per batch,
a notification racing the fetch, deletions, a failing fetch, and rows equal to ServiceTrade's records."""
from __future__ import annotations

import datetime as dt
import json
import time
import uuid

import pytest

from hooks.servicetrade import ServiceTradeHook
from integrations.servicetrade import events, inbox
from integrations.servicetrade.webhook_config import parse
from sandbox import servicetrade as st

ACCOUNT = "st_events_a"
TABLES = {"job": "jobs", "jobitem": "job_items", "invoice": "invoices", "location": "locations"}


def config(quiet: int = 30, max_wait: int = 300, accounts: dict | None = None):
    return parse({"receiver": {"max_body_bytes": 1_000_000, "allowed_networks": []},
                  "defaults": {"quiet_seconds": quiet, "max_wait_seconds": max_wait,
                               "entities": {t: ["created", "updated", "deleted"] for t in TABLES}},
                  "accounts": accounts or {}}, "test")


def body(*entities: tuple[str, int], action: str = "updated") -> bytes:
    return json.dumps({"messageId": str(uuid.uuid4()), "timestamp": "1401833057",
                       "data": [{"action": action, "timestamp": 1401833052, "userId": 1,
                                 "entity": {"type": kind, "id": entity_id, "uri": f"https://x/api/{kind}/{entity_id}"}}
                                for kind, entity_id in entities]}).encode()


def notify(conn, cfg, *entities: tuple[str, int], account: str = ACCOUNT, action: str = "updated") -> None:
    inbox.store(conn, account, body(*entities, action=action), cfg.rules(account))


def age(conn, seconds: int = 3600) -> None:
    """Every pending event's notifications moved `seconds` into the past: ripe for any quiet window."""
    conn.execute("UPDATE servicetrade.webhook_events SET first_seen = first_seen - make_interval(secs => %s), "
                 "last_seen = last_seen - make_interval(secs => %s) WHERE pending", (seconds, seconds))
    conn.commit()


def event(conn, entity_type: str, entity_id: int, account: str = ACCOUNT) -> dict:
    row = conn.execute("SELECT pending, version, notifications, attempts, last_error, fetches, fetched_at "
                       "FROM servicetrade.webhook_events WHERE account = %s AND entity_type = %s AND entity_id = %s",
                       (account, entity_type, entity_id)).fetchone()
    conn.commit()
    return dict(zip(("pending", "version", "notifications", "attempts", "last_error", "fetches", "fetched_at"), row,
                    strict=True))


@pytest.fixture
def st_account(sandbox, monkeypatch, conn):
    """The account's Airflow connection on the sandbox (fast retries), and no events, rows or ledger left over."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{ACCOUNT.upper()}", json.dumps(
        {"conn_type": "servicetrade", "host": f"{sandbox.url}/servicetrade/api", "login": st.USERNAME,
         "password": st.PASSWORD}))
    monkeypatch.setattr(ServiceTradeHook, "backoff_initial", 0.01)
    monkeypatch.setattr(ServiceTradeHook, "backoff_max", 0.02)
    monkeypatch.setattr(ServiceTradeHook, "max_attempts", 2)
    conn.execute("TRUNCATE servicetrade.webhook_events, servicetrade.webhook_inbox, servicetrade.jobs, "
                 "servicetrade.job_items, servicetrade.invoices, servicetrade.locations")
    conn.execute("DELETE FROM etl.run_ledger WHERE pipeline = %s", (events.PIPELINE,))
    conn.commit()
    return ACCOUNT


class Requests:
    """The sandbox's ServiceTrade requests from the moment this was made."""

    def __init__(self, sandbox):
        self.sandbox = sandbox
        self.start = len(sandbox.requests("servicetrade"))

    def since(self) -> list[dict]:
        return self.sandbox.requests("servicetrade")[self.start:]

    def gets(self, kind: str | None = None) -> list[str]:
        return [r["path"] for r in self.since() if r["method"] == "GET"
                and (kind is None or r["path"].split("/api/", 1)[1].startswith(f"{kind}/"))]

    def sessions(self) -> int:
        return sum(1 for r in self.since() if r["method"] == "POST" and r["path"].endswith("/api/auth"))


def sandbox_ids(kind: str, count: int) -> list[int]:
    hook = ServiceTradeHook(ACCOUNT)
    params = {"updatedAfter": 0, "status": ",".join(st.JOB_STATUSES)} if kind == "job" else {"updatedAfter": 0}
    with hook.transaction():
        ids = []
        for record in hook.paginate(kind, params):
            ids.append(record["id"])
            if len(ids) == count:
                break
    return ids


def run(conn, cfg, batch_size: int = 100, hook_for=ServiceTradeHook) -> events.ProcessReport:
    return events.process(conn, cfg, hook_for, batch_size=batch_size, run_id=f"test-{uuid.uuid4().hex[:8]}")


# ---- ripeness --------------------------------------------------------------------------------------------

def test_ripe_uses_each_accounts_quiet_window_and_maximum_wait_in_one_statement(conn, st_account):
    cfg = config(quiet=60, max_wait=600, accounts={"fast": {"quiet_seconds": 10, "max_wait_seconds": 100}})
    for account in ("fast", "slow"):
        notify(conn, cfg, ("job", 1), account=account)
    at = conn.execute("SELECT max(last_seen) FROM servicetrade.webhook_events").fetchone()[0]
    conn.commit()

    def ripe_at(seconds: float) -> list[str]:
        return [e.account for e in events.ripe(conn, cfg, now=at + dt.timedelta(seconds=seconds))]

    assert ripe_at(5) == []
    assert ripe_at(11) == ["fast"]                 # its own quiet window; "slow" takes the defaults
    assert ripe_at(61) == ["fast", "slow"]
    # an entity that keeps changing: quiet never comes, the maximum wait does
    conn.execute("UPDATE servicetrade.webhook_events SET first_seen = first_seen - interval '95 seconds'")
    conn.commit()
    assert ripe_at(6) == ["fast"]
    assert [e.account for e in events.ripe(conn, cfg, now=at + dt.timedelta(seconds=61), limit=1)] == ["fast"]


# ---- (a) debounce ----------------------------------------------------------------------------------------

def test_twenty_notifications_within_ten_seconds_make_one_fetch_after_the_quiet_window(conn, sandbox, st_account):
    cfg = config(quiet=3)
    job_id = sandbox_ids("job", 1)[0]
    seen = Requests(sandbox)
    for _ in range(20):
        notify(conn, cfg, ("job", job_id))
        assert run(conn, cfg).accounts == {}          # not ripe: nothing fetched, no session opened
        time.sleep(0.5)
    assert seen.gets() == [] and seen.sessions() == 0
    assert event(conn, "job", job_id)["notifications"] == 20
    time.sleep(3.2)
    report = run(conn, cfg)
    assert report.accounts[ACCOUNT].fetched == 1
    assert seen.gets() == [f"/servicetrade/api/job/{job_id}"] and seen.sessions() == 1
    assert event(conn, "job", job_id)["pending"] is False
    assert run(conn, cfg).accounts == {}               # done: no second fetch
    assert len(seen.gets()) == 1


# ---- (b) sessions per batch ------------------------------------------------------------------------------

def hundred(conn, cfg) -> list[tuple[str, int]]:
    wanted = [("job", i) for i in sandbox_ids("job", 40)] + [("invoice", i) for i in sandbox_ids("invoice", 20)] \
        + [("location", i) for i in sandbox_ids("location", 20)] + [("jobitem", i) for i in sandbox_ids("jobitem", 20)]
    assert len(set(wanted)) == 100
    return wanted


def test_a_hundred_entities_are_a_hundred_fetches_in_one_session_or_two_of_fifty(conn, sandbox, st_account):
    cfg = config()
    wanted = hundred(conn, cfg)
    for start in range(0, 100, 7):                     # several messages, some entities named twice
        notify(conn, cfg, *wanted[start:start + 10])
    age(conn)
    seen = Requests(sandbox)
    report = run(conn, cfg, batch_size=100).accounts[ACCOUNT]
    assert (report.fetched, report.sessions, seen.sessions(), len(seen.gets())) == (100, 1, 1, 100)
    assert sorted(seen.gets()) == sorted(f"/servicetrade/api/{t}/{i}" for t, i in wanted)
    assert {t: c.inserted for t, c in report.types.items()} == {"job": 40, "invoice": 20, "location": 20,
                                                                 "jobitem": 20}
    assert sandbox.state("servicetrade")["open_sessions"] == 0          # every session ended

    notify(conn, cfg, *wanted)
    age(conn)
    seen = Requests(sandbox)
    report = run(conn, cfg, batch_size=50).accounts[ACCOUNT]
    assert (report.fetched, report.sessions, seen.sessions(), len(seen.gets())) == (100, 2, 2, 100)
    assert sandbox.state("servicetrade")["open_sessions"] == 0


# ---- (c) a notification after the read -------------------------------------------------------------------

def test_a_notification_arriving_after_the_read_keeps_its_event_pending(conn, db_url, sandbox, st_account):
    from etl.db import connect

    cfg = config()
    job_ids = sandbox_ids("job", 3)
    notify(conn, cfg, *[("job", i) for i in job_ids])
    age(conn)
    racing = job_ids[1]

    class RacingHook(ServiceTradeHook):
        """ServiceTrade announces a new change of one job while the run fetches it (another connection: the
        receiver's)."""

        def get(self, entity, record_id):
            record = super().get(entity, record_id)
            if record_id == racing:
                with connect(db_url) as receiver:
                    notify(receiver, cfg, ("job", racing))
            return record

    report = run(conn, cfg, hook_for=RacingHook).accounts[ACCOUNT]
    assert report.fetched == 3 and report.kept_pending == 1
    assert [event(conn, "job", i)["pending"] for i in job_ids] == [False, True, False]
    assert event(conn, "job", racing)["fetches"] == 1 and event(conn, "job", racing)["version"] == 2
    age(conn)
    seen = Requests(sandbox)
    assert run(conn, cfg).accounts[ACCOUNT].fetched == 1          # fetched again, once
    assert seen.gets() == [f"/servicetrade/api/job/{racing}"]
    assert event(conn, "job", racing)["pending"] is False


# ---- (d) deletion ----------------------------------------------------------------------------------------

def test_an_entity_servicetrade_answers_404_for_is_marked_deleted(conn, sandbox, st_account):
    cfg = config()
    conn.execute("INSERT INTO servicetrade.jobs (account, id, updated, record) VALUES (%s, 999999, now(), '{}')",
                 (ACCOUNT,))
    conn.commit()
    notify(conn, cfg, ("job", 999999), action="deleted")
    age(conn)
    report = run(conn, cfg).accounts[ACCOUNT]
    assert (report.deleted, report.marked_deleted, report.fetched, report.failed) == (1, 1, 0, 0)
    assert conn.execute("SELECT deleted_at IS NOT NULL FROM servicetrade.jobs WHERE id = 999999").fetchone() == (True,)
    assert event(conn, "job", 999999)["pending"] is False


# ---- (e) a failing fetch ---------------------------------------------------------------------------------

def test_a_failing_fetch_stays_pending_with_its_error_while_the_others_load_and_the_run_fails(
        conn, sandbox, st_account):
    cfg = config()
    job_ids = sandbox_ids("job", 4)
    failing = job_ids[2]
    notify(conn, cfg, *[("job", i) for i in job_ids])
    age(conn)
    sandbox.faults("servicetrade", burst_5xx=50, only_path=f"/api/job/{failing}")
    with pytest.raises(events.EventFetchFailed, match=rf"1 entity could not be fetched.*{ACCOUNT}.*job {failing}"):
        run(conn, cfg)
    sandbox.faults("servicetrade")
    failed = event(conn, "job", failing)
    assert failed["pending"] is True and failed["attempts"] == 1 and "HTTP 503" in failed["last_error"]
    assert [event(conn, "job", i)["pending"] for i in job_ids if i != failing] == [False, False, False]
    assert conn.execute("SELECT count(*) FROM servicetrade.jobs").fetchone() == (3,)
    ledger_row = conn.execute("SELECT status, error FROM etl.run_ledger WHERE pipeline = %s",
                              (events.PIPELINE,)).fetchone()
    assert ledger_row[0] == "failed" and f"job {failing}" in ledger_row[1]

    report = run(conn, cfg).accounts[ACCOUNT]      # ServiceTrade answers again: the next run fetches it
    assert (report.fetched, report.failed) == (1, 0)
    assert event(conn, "job", failing) | {"fetched_at": None} == {
        "pending": False, "version": 1, "notifications": 0, "attempts": 0, "last_error": None, "fetches": 1,
        "fetched_at": None}


# ---- (f) rows equal ServiceTrade's records; a rerun changes nothing ---------------------------------------

def test_rows_equal_servicetrade_records_and_a_rerun_changes_nothing(conn, sandbox, st_account):
    cfg = config()
    wanted = [("job", i) for i in sandbox_ids("job", 5)] + [("invoice", i) for i in sandbox_ids("invoice", 5)] \
        + [("location", i) for i in sandbox_ids("location", 3)] + [("jobitem", i) for i in sandbox_ids("jobitem", 3)]
    notify(conn, cfg, *wanted)
    age(conn)
    first = run(conn, cfg)
    assert sorted(first.invoices_changed()[ACCOUNT]) == sorted(i for t, i in wanted if t == "invoice")

    hook = ServiceTradeHook(ACCOUNT)
    with hook.transaction():
        for kind, entity_id in wanted:
            record = hook.get(kind, entity_id)
            row = conn.execute(f"SELECT record, deleted_at FROM servicetrade.{TABLES[kind]} "
                               "WHERE account = %s AND id = %s", (ACCOUNT, entity_id)).fetchone()
            held = json.loads(row[0]) if isinstance(row[0], str) else row[0]   # entities.store's jsonb string
            assert (held, row[1]) == (record, None), (kind, entity_id)
    conn.commit()

    notify(conn, cfg, *wanted)
    age(conn)
    again = run(conn, cfg).accounts[ACCOUNT]
    assert again.fetched == len(wanted)
    assert {t: (c.inserted, c.updated) for t, c in again.types.items()} == dict.fromkeys(TABLES, (0, 0))
    assert sum(c.unchanged for c in again.types.values()) == len(wanted)
    assert again.changed_invoices == []
    ledger_rows = conn.execute("SELECT status, rows_read, rows_inserted, rows_updated, rows_unchanged "
                               "FROM etl.run_ledger WHERE pipeline = %s AND scope = %s ORDER BY id",
                               (events.PIPELINE, ACCOUNT)).fetchall()
    assert ledger_rows == [("success", 16, 16, 0, 0), ("success", 16, 0, 0, 16)]
