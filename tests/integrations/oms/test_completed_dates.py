"""Completed-date capture against the TrackVia sandbox and a real PostgreSQL: records edited while the scan
pages are not lost (a plain start += max walk is shown to lose one), reruns send no PUT, and the date comes
from Status Changed."""
from __future__ import annotations

import dataclasses
import datetime as dt
import itertools

import pytest

from integrations.oms import completed_dates as cd
from integrations.oms import config, view_scan

PAGE = 20


@pytest.fixture
def hook(trackvia_hook):
    return trackvia_hook


def ordered(sandbox, table: str) -> list[dict]:
    """The table's records in the order of its "by Updated" view, as the sandbox holds them."""
    rows = sandbox.state("trackvia")["records"][table]
    return sorted(rows, key=lambda r: (r["Updated"], r["id"]))


def needs_date(record: dict) -> bool:
    return record["Status"] == "Completed" and not record["Completed Date"]


def test_records_edited_mid_scan_are_not_lost_where_plain_paging_loses_one(hook, sandbox):
    view_id, _ = hook.view("Tickets by Updated")
    before = ordered(sandbox, "Tickets")
    wanted = {r["id"] for r in before if needs_date(r)}
    first_pages = 2 * PAGE - 2            # what the scan has given after two pages (the second overlaps by two)
    # The plain walk's third page starts at 2 * PAGE: editing k read records slides the needy record at
    # position j (the first at or after 2 * PAGE) to 2 * PAGE - 1, the last slot of a page already read.
    j = next(i for i in range(2 * PAGE, len(before)) if needs_date(before[i]))
    k = j - 2 * PAGE + 1
    read_ids = [r["id"] for r in before[:k]]
    unread_needy = next(r["id"] for r in before[j + 5:] if needs_date(r))
    unread_open = next(r["id"] for r in before[j + 5:] if r["Status"] == "Open")
    edits = ([{"table": "Tickets", "id": rid, "fields": {"Priority": "High"}} for rid in read_ids]
             + [{"table": "Tickets", "id": unread_needy, "fields": {"Priority": "Low"}},
                {"table": "Tickets", "id": unread_open, "fields": {"Status": "Completed"}}])

    scanning = view_scan.scan(hook, view_id, None, PAGE)
    given = list(itertools.islice(scanning, first_pages))
    sandbox.control("trackvia", edit=edits)
    given += list(scanning)

    sandbox.reset()                                   # the same seeded view, read the plain way
    plain = list(itertools.islice(hook.records(view_id, page_size=PAGE), 2 * PAGE))
    sandbox.control("trackvia", edit=edits)
    plain += list(hook.records(view_id, page_size=PAGE, start=2 * PAGE))
    plain_ids = {r["id"] for r in plain}
    assert before[j]["id"] not in plain_ids          # the plain walk loses the record that slid back

    versions = [(r["id"], r["Updated"]) for r in given]
    assert len(versions) == len(set(versions))       # no version given twice
    ids = {r["id"] for r in given}
    assert ids == {r["id"] for r in before}          # none lost
    needy_now = {r["id"] for r in given if needs_date(r)}
    assert wanted | {unread_open} <= needy_now
    twice = {rid for rid in ids if sum(1 for r in given if r["id"] == rid) > 1}
    assert twice == set(read_ids)                     # only records edited after being read, met at the end


def run(conn, hook, table="tickets", **kwargs):
    return cd.capture(conn, hook, config.load(), table=table, run_id=f"test-{table}", page_size=PAGE, **kwargs)


def test_capture_stamps_each_needy_ticket_once_then_reruns_send_no_put(hook, sandbox, conn):
    before = ordered(sandbox, "Tickets")
    wanted = {r["id"]: r for r in before if needs_date(r)}
    first = run(conn, hook)
    state = sandbox.state("trackvia")
    assert state["put_requests"] == first.puts == first.updated == len(wanted)
    after = {r["id"]: r for r in state["records"]["Tickets"]}
    for rid, record in wanted.items():                # from Status Changed, as a UTC date
        assert after[rid]["Completed Date"] == record["Status Changed"][:10]
    assert not [r for r in after.values() if needs_date(r)]
    assert first.updated + first.already_set + first.not_completed == len(before)
    assert first.requests == first.lookups + first.pages + first.puts
    print("first run", first.as_dict())

    second = run(conn, hook)
    assert second.puts == 0 and sandbox.state("trackvia")["put_requests"] == len(wanted)
    assert second.read == len(wanted)                 # only our own PUTs' versions, inside the overlap
    assert second.pages < first.pages and second.requests == 3 + second.pages
    print("second run", second.as_dict())

    sandbox.control("trackvia", advance_clock_seconds=3600, edit=[
        {"table": "Tickets", "id": next(r["id"] for r in before if r["Status"] == "Open"),
         "fields": {"Status": "Completed"}}])
    third = run(conn, hook)
    assert third.puts == third.updated == 1
    assert third.requests == third.lookups + third.pages + third.puts
    assert sandbox.state("trackvia")["delete_requests"] == 0


def test_no_status_change_time_takes_the_run_date(hook, sandbox, conn):
    rid = next(r["id"] for r in ordered(sandbox, "Site Visits") if r["Status"] == "Scheduled")
    sandbox.control("trackvia", edit=[{"table": "Site Visits", "id": rid,
                                       "fields": {"Status": "Completed", "Status Changed": None}}])
    now = dt.datetime(2026, 3, 4, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    report = run(conn, hook, table="site_visits", now=now)
    record = next(r for r in sandbox.state("trackvia")["records"]["Site Visits"] if r["id"] == rid)
    assert record["Completed Date"] == "2026-03-05"          # the run's date in UTC
    assert report.puts == report.updated
    assert not [r for r in sandbox.state("trackvia")["records"]["Site Visits"] if needs_date(r)]


def test_a_missing_field_fails_before_any_put(hook, sandbox, conn):
    loaded = config.load()
    broken = dataclasses.replace(loaded, completed_dates=dataclasses.replace(
        loaded.completed_dates, tickets=dataclasses.replace(loaded.completed_dates.tickets,
                                                            completed_date="Closed On")))
    with pytest.raises(config.ConfigError, match="no field 'Closed On'"):
        cd.capture(conn, hook, broken, table="tickets", run_id="test-broken")
    assert sandbox.state("trackvia")["put_requests"] == 0
    status = conn.execute("SELECT status FROM etl.run_ledger WHERE run_id = 'test-broken'").fetchone()[0]
    assert status == "failed"


def test_a_view_not_sorted_by_updated_is_refused_before_anything_is_given(hook):
    view_id, _ = hook.view("All Tickets")             # sorted by Record ID: Updated jumps back and forth
    with pytest.raises(view_scan.ViewNotSorted, match=f"view {view_id} is not sorted by Updated"):
        next(view_scan.scan(hook, view_id, None, 50))
