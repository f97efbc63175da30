"""Table sweeps against the TrackVia sandbox and a real PostgreSQL: over 10,000 tickets the dry run's report is
exactly what the real run then changes, with API calls = lookups + pages + one PUT per change; a sweep killed
at any moment (midway, after a PUT landed but before its row closed, before a committed PUT was sent) and
resumed neither redoes nor skips a record (counted per record at the sandbox); refused records fail alone."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from hooks.trackvia import TrackViaHook
from hooks.vendor_http import VendorApiError
from integrations.oms import config, sweeps
from integrations.oms.sweep_rules import parse_sweeps
from tests.kill_points import Locker, until, waiting

ROOT = Path(__file__).resolve().parents[3]
SWEEP = "cancelled_tickets_low_priority"
BIG = 10_000

KILLABLE_SWEEP = """
import sys
from etl import db
from hooks.trackvia import TrackViaHook
from hooks.vendor_http import VendorApiError
from integrations.oms import config, sweeps
with db.connect(sys.argv[1]) as conn:
    sweeps.run_sweep(conn, TrackViaHook(conninfo=sys.argv[1]), config.load(), sweep=sys.argv[2], dry_run=False,
                     batch_size=int(sys.argv[3]), dag_run_id="killed")
"""


@pytest.fixture
def trackvia(sandbox, db_url, conn, trackvia_connection):
    conn.execute("TRUNCATE oms.sweep_runs, oms.sweep_changes, etl.request_budgets CASCADE")
    conn.commit()
    trackvia_connection()
    return sandbox


def sweep(db_url: str, *, dry_run: bool, name: str = SWEEP, batch_size: int = 1000,
          loaded: config.OmsConfig | None = None) -> sweeps.SweepReport:
    with psycopg.connect(db_url) as conn:
        return sweeps.run_sweep(conn, TrackViaHook(conninfo=db_url), loaded or config.load(), sweep=name,
                                dry_run=dry_run, batch_size=batch_size, dag_run_id="test")


def changes(conn, run: int, *outcomes: str) -> set[tuple[int, str | None, str | None]]:
    rows = conn.execute("SELECT record_id, before, after FROM oms.sweep_changes WHERE run_id = %s "
                        "AND outcome = ANY(%s)", (run, list(outcomes))).fetchall()
    conn.commit()
    return set(rows)


def updates(sandbox) -> dict[int, int]:
    return {int(rid): n for rid, n in sandbox.state("trackvia")["updates"]["Tickets"].items()}


def test_over_10000_records_the_dry_run_reports_exactly_what_the_real_run_changes(trackvia, db_url, conn, caplog):
    trackvia.control("trackvia", generate_tickets=BIG, hourly_limit=100_000)

    dry = sweep(db_url, dry_run=True)

    assert trackvia.state("trackvia")["put_requests"] == 0
    planned = changes(conn, dry.run, "planned")
    assert dry.planned == len(planned) > 500 and dry.unchanged == BIG - dry.planned == dry.read - dry.planned
    assert all(before in ("High", "Normal") and after == "Low" for _, before, after in planned)
    assert f"{dry.planned} records would change" in caplog.text and len(dry.sample) == sweeps.SAMPLE

    calls_before = trackvia.state("trackvia")["calls_this_hour"]
    real = sweep(db_url, dry_run=False)

    assert changes(conn, real.run, "inserted", "updated") == planned
    assert (real.updated, real.inserted, real.failed, real.unchanged) == (len(planned), 0, 0, BIG - len(planned))
    assert updates(trackvia) == {rid: 1 for rid, _, _ in planned}
    # API calls: 3 lookups, the pages (1,000 records each, overlapping by one: our PUTs move their records to
    # the view's end, where the scan reads them once more in the same number of pages), one PUT per change;
    # the sandbox counted the same.
    assert real.puts == len(planned) and real.pages == dry.pages == 11
    assert real.api_calls == 3 + 11 + len(planned) == trackvia.state("trackvia")["calls_this_hour"] - calls_before
    again = sweep(db_url, dry_run=False)
    assert (again.puts, again.updated, again.unchanged) == (0, 0, BIG)
    assert trackvia.state("trackvia")["put_requests"] == len(planned)


def kill_sweep(db_url: str, batch_size: int, ready, what: str) -> None:
    worker = subprocess.Popen([sys.executable, "-c", KILLABLE_SWEEP, db_url, SWEEP, str(batch_size)],
                              env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)])})
    try:
        until(lambda: ready(worker), what, worker)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()


def test_a_sweep_killed_midway_and_resumed_neither_redoes_nor_skips_a_record(trackvia, db_url, conn):
    trackvia.control("trackvia", generate_tickets=BIG, hourly_limit=100_000)
    planned = changes(conn, sweep(db_url, dry_run=True).run, "planned")

    kill_sweep(db_url, 200, lambda _: trackvia.state("trackvia")["put_requests"] >= len(planned) // 3,
               "a third of the changes are sent")
    before_resume = trackvia.state("trackvia")["put_requests"]
    assert before_resume < len(planned)

    resumed = sweep(db_url, dry_run=False, batch_size=200)

    assert resumed.resumed
    assert updates(trackvia) == {rid: 1 for rid, _, _ in planned}          # each once: none redone, none skipped
    assert changes(conn, resumed.run, "inserted", "updated") == planned
    assert resumed.updated == len(planned) and resumed.failed == 0
    assert conn.execute("SELECT count(*) FROM oms.sweep_runs WHERE status = 'running'").fetchone()[0] == 0


def test_a_sweep_killed_after_a_put_landed_but_before_its_row_closed_does_not_send_it_again(trackvia, db_url,
                                                                                            conn):
    planned = changes(conn, sweep(db_url, dry_run=True).run, "planned")
    trackvia.faults("trackvia", latency_ms=1500, only_method="PUT")       # time to lock while the PUT is on its way
    locker = None

    def ready(worker) -> bool:
        """While the first PUT is on its way, its change row is locked: the PUT lands, then closing the row
        waits."""
        nonlocal locker
        if locker is None:
            sending = conn.execute("SELECT count(*) FROM oms.sweep_changes WHERE outcome = 'sending'").fetchone()[0]
            conn.commit()
            if sending:
                locker = Locker(db_url)
                locker.lock("SELECT 1 FROM oms.sweep_changes WHERE outcome = 'sending'")
        return locker is not None and trackvia.state("trackvia")["put_requests"] == 1 and waiting(conn)

    try:
        kill_sweep(db_url, 50, ready, "the first PUT landed and its row waits to close")
    finally:
        if locker is not None:
            locker.close()
    assert trackvia.state("trackvia")["put_requests"] == 1
    trackvia.faults("trackvia")
    assert conn.execute("SELECT outcome FROM oms.sweep_changes c JOIN oms.sweep_runs r ON r.id = c.run_id "
                        "WHERE NOT r.dry_run").fetchall() == [("sending",)]
    conn.commit()

    resumed = sweep(db_url, dry_run=False, batch_size=50)

    assert resumed.resumed and updates(trackvia) == {rid: 1 for rid, _, _ in planned}
    assert changes(conn, resumed.run, "inserted", "updated") == planned


def test_a_put_that_failed_unanswered_is_sent_once_more_on_resume(trackvia, db_url, conn):
    planned = changes(conn, sweep(db_url, dry_run=True).run, "planned")
    trackvia.faults("trackvia", burst_5xx=1, only_method="PUT")          # refused before it reaches a record

    with pytest.raises(VendorApiError, match="503"):
        sweep(db_url, dry_run=False, batch_size=50)

    assert trackvia.state("trackvia")["put_requests"] == 0
    trackvia.faults("trackvia")
    resumed = sweep(db_url, dry_run=False, batch_size=50)

    assert resumed.resumed and updates(trackvia) == {rid: 1 for rid, _, _ in planned}
    assert changes(conn, resumed.run, "inserted", "updated") == planned


def declared(**rules) -> config.OmsConfig:
    """The shipped config with these sweeps instead of its own."""
    problems: list[str] = []
    parsed = parse_sweeps(rules, "sweeps", problems)
    assert problems == []
    return dataclasses.replace(config.load(), sweeps=parsed)


def test_a_refused_record_fails_alone_and_the_sweep_goes_on(trackvia, db_url, conn):
    """Payment ids copied into the currency field Amount Paid: TrackVia takes "12.50" and "7", refuses "1, 2"."""
    trackvia.control("trackvia", edit=[{"table": "Tickets", "id": rid, "fields": {"QBO Payment IDs": ids}}
                                       for rid, ids in ((40, "12.50"), (41, "1, 2"), (42, "7"))])
    loaded = declared(amount_from_ids={
        "description": "d", "view": "Tickets by Updated", "where": [{"field": "QBO Payment IDs", "empty": False}],
        "set": {"field": "Amount Paid", "template": "{QBO Payment IDs}"}})

    report = sweep(db_url, dry_run=False, name="amount_from_ids", loaded=loaded)

    assert (report.updated, report.inserted, report.failed) == (0, 2, 1)
    rows = conn.execute("SELECT record_id, outcome, error FROM oms.sweep_changes WHERE run_id = %s ORDER BY 1",
                        (report.run,)).fetchall()
    assert [(rid, outcome) for rid, outcome, _ in rows] == [(40, "inserted"), (41, "failed"), (42, "inserted")]
    assert 'Could not convert "1, 2" to Double' in rows[1][2]
    amounts = {r["id"]: r["Amount Paid"] for r in trackvia.state("trackvia")["records"]["Tickets"]}
    assert (amounts[40], amounts[41], amounts[42]) == ("12.50", None, "7.00")


def test_a_rule_trackvia_refuses_every_change_of_stops_after_a_run_of_refusals(trackvia, db_url, conn):
    loaded = declared(region_from_priority={
        "description": "a template whose values are not Region choices", "view": "Tickets by Updated",
        "where": [{"field": "Status", "not_equals": "Open"}], "set": {"field": "Region", "template": "{Priority}"}})

    with pytest.raises(sweeps.RuleRefused, match=f"refused the last {sweeps.REFUSALS_IN_A_ROW} changes in a row"):
        sweep(db_url, dry_run=False, name="region_from_priority", loaded=loaded)

    assert trackvia.state("trackvia")["put_requests"] == sweeps.REFUSALS_IN_A_ROW
    assert conn.execute("SELECT count(*), min(outcome), max(outcome) FROM oms.sweep_changes").fetchone() == (
        sweeps.REFUSALS_IN_A_ROW, "failed", "failed")


def test_a_changed_rule_supersedes_the_unfinished_run(trackvia, db_url, conn):
    conn.execute("INSERT INTO oms.sweep_runs (sweep, dry_run, rule, fingerprint, view_name, batch_size, dag_run_id) "
                 "VALUES (%s, false, '{}', 'an older rule', 'Tickets by Updated', 100, 'old')", (SWEEP,))
    conn.commit()

    report = sweep(db_url, dry_run=False)

    assert not report.resumed
    statuses = conn.execute("SELECT dag_run_id, status FROM oms.sweep_runs ORDER BY id").fetchall()
    assert statuses == [("old", "superseded"), ("test", "done")]


def test_an_unknown_sweep_names_the_declared_ones(trackvia, db_url):
    with pytest.raises(sweeps.SweepNotDeclared, match="no sweep 'nope'.*cancelled_tickets_low_priority"):
        sweep(db_url, dry_run=True, name="nope")
