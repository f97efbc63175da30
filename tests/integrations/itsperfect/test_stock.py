"""The ItsPerfect stock pull against the sandbox and a real PostgreSQL: every mapped location holds what the
vendor answers, in the minimum requests; a rerun writes nothing; upstream changes and removals land; a
barcode outside our catalogue is quarantined; an inactive warehouse is not pulled; a pass cut by the request
budget commits its pages and resumes at its next page in the next hour, and ends when the list shrank below it."""
from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Iterator
from urllib.parse import parse_qs

import pytest
import requests

from etl.request_budget import BudgetSpent
from hooks.itsperfect import ItsPerfectHook
from integrations.itsperfect import stock, stock_rows
from integrations.itsperfect.stock import StockPullCut, pull_stock, refresh_warehouses
from sandbox import itsperfect as itsp

CONNECTOR = "itsperfect_default"
PAGE_SIZE = 10                   # several pages per sandbox warehouse (about 48 items each)


class SandboxClock:
    """The sandbox's movable clock, which the request budget must read too (the hook's `clock=`)."""

    def __init__(self, sandbox, start: dt.datetime) -> None:
        self.sandbox = sandbox
        self.offset = 0.0
        self.move(set_clock=start.isoformat())

    def move(self, **control) -> None:
        state = self.sandbox.control("itsperfect", **control)
        self.offset = state["settings"]["clock_offset"]

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(time.time() + self.offset, dt.timezone.utc)

    @property
    def resets_at(self) -> dt.datetime:
        return self.now().replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)


@pytest.fixture
def clock(sandbox) -> SandboxClock:
    """10 minutes into the next hour (no hour crossed mid-test), none of the vendor's own calls: a generous
    hour whose counts are ours alone."""
    start = dt.datetime.now(dt.timezone.utc).replace(minute=10, second=0, microsecond=0) + dt.timedelta(hours=1)
    sandbox.control("itsperfect", server_calls_per_hour=0)
    return SandboxClock(sandbox, start)


@pytest.fixture
def make_hook(sandbox, clock, conn, db_url, monkeypatch):
    conn.execute("TRUNCATE etl.request_budgets")
    conn.commit()
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONNECTOR.upper()}", json.dumps(
        itsp.airflow_connection(sandbox.url)))
    monkeypatch.setattr(ItsPerfectHook, "page_size", PAGE_SIZE)
    monkeypatch.setattr(ItsPerfectHook, "backoff_initial", 0.01)
    monkeypatch.setattr(ItsPerfectHook, "backoff_max", 0.05)

    def make(headroom: int | None = None) -> ItsPerfectHook:
        return ItsPerfectHook(CONNECTOR, conninfo=db_url, clock=clock.now, headroom=headroom)

    return make


@pytest.fixture
def ours(conn, sandbox, make_hook):
    """Our side: an account, four locations, the catalogue (every barcode the sandbox stocks anywhere) and
    the connector; returns `map_locations({location: warehouse})`, which refreshes the warehouses first."""
    conn.execute("TRUNCATE etl.quarantine, etl.run_ledger, commerce.location_quantities, commerce.products, "
                 "commerce.locations, commerce.accounts, itsperfect.connectors CASCADE")
    conn.execute("INSERT INTO commerce.accounts (account_id, name) VALUES ('acme', 'Acme Fashion')")
    conn.execute("INSERT INTO commerce.locations (account_id, location_id, name) "
                 "SELECT 'acme', l, 'Store ' || l FROM unnest(ARRAY['loc-a', 'loc-b', 'loc-c', 'loc-d']) l")
    catalogue = {row[0]: row for row in vendor_rows(sandbox, None)}
    with conn.cursor().copy("COPY commerce.products (barcode, item_number, colour, size) FROM STDIN") as copy:
        for barcode, item_number, _, colour, size, *_ in catalogue.values():
            copy.write_row((barcode, item_number, colour, size))
    conn.execute("INSERT INTO itsperfect.connectors (connector) VALUES (%s)", (CONNECTOR,))
    conn.commit()

    def map_locations(mapping: dict[str, int]) -> None:
        refresh_warehouses(conn, make_hook(), CONNECTOR)
        with conn.transaction():
            for location, warehouse in mapping.items():
                conn.execute("INSERT INTO itsperfect.connector_locations (location_id, connector, warehouse_id) "
                             "VALUES (%s, %s, %s)", (location, CONNECTOR, warehouse))

    return map_locations


# ---- the vendor's own answer, read directly (not through the code under test) -------------------

def vendor_pages(sandbox, warehouse: int | None, limit: int = 100, pages: range | None = None) -> Iterator[dict]:
    page = 1
    while True:
        params = {"page": page, "limit": limit, "token": itsp.TOKEN}
        if warehouse is not None:
            params["warehouseId"] = warehouse
        answer = requests.get(f"{sandbox.url}/itsperfect/api/v2/stock", params=params,
                              auth=(itsp.USERNAME, itsp.PASSWORD), timeout=10)
        answer.raise_for_status()
        if pages is None or page in pages:
            yield from answer.json()["stock"]
        if page >= int(answer.headers["X-Pagination-Page-Count"]):
            return
        page += 1


def vendor_rows(sandbox, warehouse: int | None, **paging) -> list[tuple]:
    """(barcode, item number, colour number, colour, size, second size, stock, available) of every size."""
    return [(s["barcode"], item["itemNumber"], c["colorNumber"], c["color"], s["size"], s["secondSize"],
             int(s["stock"]), s["availableStock"])
            for item in vendor_pages(sandbox, warehouse, **paging) for w in item["warehouses"]
            if warehouse is None or w["warehouseId"] == warehouse for c in w["colors"] for s in c["sizes"]]


def vendor_stock(sandbox, warehouse: int, **paging) -> dict[str, tuple]:
    return {row[0]: row for row in vendor_rows(sandbox, warehouse, **paging)}


def quantities(conn, location: str) -> dict[str, tuple]:
    rows = conn.execute("SELECT barcode, item_number, colour_number, colour, size, second_size, quantity, "
                        "available_quantity FROM commerce.location_quantities WHERE location_id = %s",
                        (location,)).fetchall()
    conn.rollback()
    return {row[0]: row for row in rows}


def stock_calls(sandbox, since: int) -> list[tuple[int, int]]:
    """(warehouse, page) of every /stock request after the first `since` requests, in order."""
    found = []
    for request in sandbox.requests("itsperfect")[since:]:
        if request["path"].endswith("/api/v2/stock"):
            query = parse_qs(request["query"])
            found.append((int(query["warehouseId"][0]), int(query["page"][0])))
    return found


def ledger_rows(conn) -> list[tuple]:
    rows = conn.execute("SELECT id, status, rows_read, rows_inserted, rows_updated, rows_unchanged, "
                        "rows_quarantined, error FROM etl.run_ledger WHERE pipeline = 'itsperfect_stock' "
                        "ORDER BY id").fetchall()
    conn.rollback()
    return rows


# ---- the tests -----------------------------------------------------------------------------------

def test_every_mapped_location_holds_the_vendors_stock_read_in_the_minimum_requests(conn, sandbox, make_hook,
                                                                                   ours):
    ours({"loc-a": 1, "loc-b": 1, "loc-c": 2})
    held = sandbox.state("itsperfect")["warehouses"]
    since = len(sandbox.requests("itsperfect"))

    report = pull_stock(conn, make_hook(), CONNECTOR, run_id="manual__1")

    made = sandbox.requests("itsperfect")[since:]
    pages = {wid: math.ceil(held[str(wid)]["items"] / PAGE_SIZE) for wid in (1, 2)}
    assert pages[1] > 1 and pages[2] > 1
    assert stock_calls(sandbox, since) == [(1, p) for p in range(1, pages[1] + 1)] + \
        [(2, p) for p in range(1, pages[2] + 1)]                   # one pull per warehouse, fanned out
    assert [r["path"].rsplit("/", 1)[1] for r in made].count("warehouses") == 1
    assert report.requests == len(made) == pages[1] + pages[2] + 1
    assert report.counts.pages == pages[1] + pages[2]
    assert (report.warehouses, report.completed, report.inactive) == ([1, 2], [1, 2], [])

    first, second = vendor_stock(sandbox, 1), vendor_stock(sandbox, 2)
    assert first and second
    assert quantities(conn, "loc-a") == first
    assert quantities(conn, "loc-b") == first
    assert quantities(conn, "loc-c") == second
    assert quantities(conn, "loc-d") == {}
    counts = report.counts
    assert (counts.read, counts.inserted, counts.updated, counts.quarantined, counts.zeroed) == \
        (len(first) + len(second), 2 * len(first) + len(second), 0, 0, 0)
    assert conn.execute("SELECT count(*) FROM itsperfect.stock_passes").fetchone()[0] == 0
    conn.rollback()
    assert ledger_rows(conn) == [(report.ledger_id, "success", counts.read, counts.inserted, 0, 0, 0, None)]
    assert json.loads(json.dumps(report.as_dict()))["counts"]["inserted"] == counts.inserted


def test_a_rerun_of_unchanged_stock_writes_nothing(conn, sandbox, make_hook, ours):
    ours({"loc-a": 1, "loc-b": 1, "loc-c": 2})
    first = pull_stock(conn, make_hook(), CONNECTOR, run_id="r1")
    again = pull_stock(conn, make_hook(), CONNECTOR, run_id="r2")
    assert (again.counts.inserted, again.counts.updated, again.counts.zeroed) == (0, 0, 0)
    assert again.counts.unchanged == first.counts.inserted > 0
    assert ledger_rows(conn)[-1][1:7] == ("success", first.counts.read, 0, 0, first.counts.inserted, 0)


def test_a_changed_barcode_is_updated_and_a_removed_one_zeroed(conn, sandbox, make_hook, ours):
    ours({"loc-a": 1, "loc-b": 1, "loc-c": 2})
    pull_stock(conn, make_hook(), CONNECTOR, run_id="r1")
    before = vendor_stock(sandbox, 1)
    changed = next(b for b, row in before.items() if row[6] != 999)
    removed = next(b for b, row in before.items() if b != changed and (row[6] or row[7]))
    sandbox.control("itsperfect", set_stock=[{"warehouseId": 1, "barcode": changed, "stock": 999},
                                             {"warehouseId": 1, "barcode": removed, "stock": None}])

    report = pull_stock(conn, make_hook(), CONNECTOR, run_id="r2")

    assert (report.counts.inserted, report.counts.updated, report.counts.zeroed) == (0, 2, 2)  # loc-a and loc-b
    after = vendor_stock(sandbox, 1)
    assert removed not in after and after[changed][6:] == (999, 999)
    for location in ("loc-a", "loc-b"):
        held = quantities(conn, location)
        assert held.pop(removed)[6:] == (0, 0)
        assert held == after
    assert quantities(conn, "loc-c") == vendor_stock(sandbox, 2)
    assert ledger_rows(conn)[-1][4] == 4                      # the ledger's updated counts the zeroed rows


def test_a_barcode_not_in_our_catalogue_is_quarantined_and_the_rest_loads(conn, sandbox, make_hook, ours):
    ours({"loc-a": 1})
    stock = vendor_stock(sandbox, 1)
    unknown = sorted(stock)[3]
    conn.execute("DELETE FROM commerce.products WHERE barcode = %s", (unknown,))
    conn.commit()

    report = pull_stock(conn, make_hook(), CONNECTOR, run_id="r1")

    assert report.counts.quarantined == 1
    del stock[unknown]
    assert quantities(conn, "loc-a") == stock
    quarantined = conn.execute("SELECT ledger_id, pipeline, scope, record_key, reason, payload->>'barcode' "
                               "FROM etl.quarantine").fetchall()
    conn.rollback()
    assert len(quarantined) == 1
    ledger_id, pipeline, scope, key, reason, payload_barcode = quarantined[0]
    assert (ledger_id, pipeline, scope, key, payload_barcode) == (report.ledger_id, "itsperfect_stock", CONNECTOR,
                                                                  unknown, unknown)
    assert f"barcode {unknown} is not in our catalogue" in reason
    assert ledger_rows(conn)[-1][6] == 1


def test_a_warehouse_deactivated_upstream_is_inactive_here_and_not_pulled(conn, sandbox, make_hook, ours):
    conn.execute("INSERT INTO itsperfect.connectors (connector) VALUES ('other_tenant')")
    conn.execute("INSERT INTO itsperfect.warehouses (connector, warehouse_id, name, active) VALUES "
                 "(%s, 99, 'Closed DC', true), ('other_tenant', 99, 'Their DC', true)", (CONNECTOR,))
    conn.commit()
    assert refresh_warehouses(conn, make_hook(), CONNECTOR)["gone"] == 1   # held here, no longer listed upstream
    ours({"loc-a": 1, "loc-c": 2})
    pull_stock(conn, make_hook(), CONNECTOR, run_id="r1")
    pulled = quantities(conn, "loc-c")
    assert pulled == vendor_stock(sandbox, 2)
    sandbox.control("itsperfect", deactivate_warehouses=[2],
                    set_stock=[{"warehouseId": 2, "barcode": next(iter(pulled)), "stock": 555}])
    since = len(sandbox.requests("itsperfect"))

    report = pull_stock(conn, make_hook(), CONNECTOR, run_id="r2")

    assert {w for w, _ in stock_calls(sandbox, since)} == {1}
    assert (report.warehouses, report.inactive) == ([1], [2])
    assert quantities(conn, "loc-c") == pulled                 # its last quantities kept
    active = dict(conn.execute("SELECT connector || '/' || warehouse_id, active FROM itsperfect.warehouses"))
    conn.rollback()
    assert active == {f"{CONNECTOR}/1": True, f"{CONNECTOR}/2": False, f"{CONNECTOR}/3": True,
                      f"{CONNECTOR}/4": False, f"{CONNECTOR}/99": False, "other_tenant/99": True}


def test_a_pass_cut_by_the_budget_keeps_its_pages_and_resumes_at_the_next_one_an_hour_later(conn, sandbox, clock,
                                                                                            make_hook, ours):
    ours({"loc-a": 1, "loc-b": 1})
    pages = math.ceil(sandbox.state("itsperfect")["warehouses"]["1"]["items"] / PAGE_SIZE)
    assert pages >= 5
    # What the budget knows the vendor counted this hour, plus the warehouses list and 3 pages: then it is spent.
    counted = sandbox.state("itsperfect")["calls_this_hour"]
    headroom = ItsPerfectHook.request_limit - (counted + 1 + 3)
    resets_at = clock.resets_at
    since = len(sandbox.requests("itsperfect"))

    with pytest.raises(BudgetSpent) as raised:
        pull_stock(conn, make_hook(headroom), CONNECTOR, run_id="r1")

    assert isinstance(raised.value, StockPullCut) and raised.value.resets_at == resets_at
    cut = raised.value.report
    assert cut.cut_by_budget == resets_at.isoformat()
    assert (cut.counts.pages, cut.completed, cut.requests) == (3, [], 4)
    assert stock_calls(sandbox, since) == [(1, 1), (1, 2), (1, 3)]      # nothing sent past the budget
    state = conn.execute("SELECT next_page, page_count FROM itsperfect.stock_passes "
                         "WHERE connector = %s AND warehouse_id = 1", (CONNECTOR,)).fetchone()
    seen = conn.execute("SELECT count(*) FROM itsperfect.stock_pass_seen").fetchone()[0]
    conn.rollback()
    done = vendor_stock(sandbox, 1, limit=PAGE_SIZE, pages=range(1, 4))
    assert state == (4, pages) and seen == len(done) == cut.counts.read
    assert quantities(conn, "loc-a") == quantities(conn, "loc-b") == done
    assert ledger_rows(conn) == [(cut.ledger_id, "success", len(done), 2 * len(done), 0, 0, 0, None)]

    clock.move(advance_clock_seconds=3600)
    since = len(sandbox.requests("itsperfect"))
    report = pull_stock(conn, make_hook(headroom), CONNECTOR, run_id="r2")

    assert stock_calls(sandbox, since) == [(1, p) for p in range(4, pages + 1)]
    assert (report.completed, report.cut_by_budget, report.counts.zeroed) == ([1], None, 0)
    assert quantities(conn, "loc-a") == quantities(conn, "loc-b") == vendor_stock(sandbox, 1)
    assert conn.execute("SELECT count(*) FROM itsperfect.stock_passes").fetchone()[0] == 0
    conn.rollback()


def test_a_list_that_shrank_below_the_next_page_ends_the_pass(conn, sandbox, clock, make_hook, ours):
    ours({"loc-a": 1})
    pull_stock(conn, make_hook(), CONNECTOR, run_id="r1")
    counted = sandbox.state("itsperfect")["calls_this_hour"]
    with pytest.raises(StockPullCut):
        pull_stock(conn, make_hook(ItsPerfectHook.request_limit - (counted + 1 + 3)), CONNECTOR, run_id="r2")
    # Every item past page 3 goes upstream: page 4 no longer exists.
    gone = vendor_stock(sandbox, 1, limit=PAGE_SIZE, pages=range(4, 100))
    sandbox.control("itsperfect", set_stock=[{"warehouseId": 1, "barcode": b, "stock": None} for b in gone])
    assert sandbox.state("itsperfect")["warehouses"]["1"]["items"] == 3 * PAGE_SIZE
    clock.move(advance_clock_seconds=3600)
    since = len(sandbox.requests("itsperfect"))

    report = pull_stock(conn, make_hook(), CONNECTOR, run_id="r3")

    assert stock_calls(sandbox, since) == [(1, 4)]             # answered with page 3 again: the pass ends
    assert report.completed == [1]
    assert report.counts.zeroed == sum(1 for row in gone.values() if row[6] or row[7]) > 0
    held = quantities(conn, "loc-a")
    assert all(held.pop(b)[6:] == (0, 0) for b in gone)
    assert held == vendor_stock(sandbox, 1)
    assert conn.execute("SELECT count(*) FROM itsperfect.stock_passes").fetchone()[0] == 0
    conn.rollback()


def test_a_location_mapped_while_a_pass_is_cut_gets_a_whole_pass(conn, sandbox, clock, make_hook, ours):
    ours({"loc-a": 1})
    counted = sandbox.state("itsperfect")["calls_this_hour"]
    with pytest.raises(StockPullCut):
        pull_stock(conn, make_hook(ItsPerfectHook.request_limit - (counted + 1 + 3)), CONNECTOR, run_id="r1")
    with conn.transaction():
        conn.execute("INSERT INTO itsperfect.connector_locations (location_id, connector, warehouse_id) "
                     "VALUES ('loc-b', %s, 1)", (CONNECTOR,))
    clock.move(advance_clock_seconds=3600)
    since = len(sandbox.requests("itsperfect"))

    pull_stock(conn, make_hook(), CONNECTOR, run_id="r2")

    assert stock_calls(sandbox, since)[0] == (1, 1)            # started again, for both locations
    assert quantities(conn, "loc-a") == quantities(conn, "loc-b") == vendor_stock(sandbox, 1)


def test_a_record_quarantined_whole_keeps_its_barcodes_at_the_end_of_the_pass(conn, sandbox, make_hook, ours):
    ours({"loc-a": 1})
    pull_stock(conn, make_hook(), CONNECTOR, run_id="r1")
    held = quantities(conn, "loc-a")
    record = next(vendor_pages(sandbox, 1))
    barcode = record["warehouses"][0]["colors"][1]["sizes"][0]["barcode"]     # a colour left whole
    broken = {**record, "warehouses": [{**record["warehouses"][0], "colors": [
        {**record["warehouses"][0]["colors"][0], "sizes": None}, *record["warehouses"][0]["colors"][1:]]}]}
    warehouse = stock._Warehouse(1, "Warehouse 1", True, ("loc-a",))
    ledger_id = ledger_rows(conn)[-1][0]
    with conn.transaction():
        conn.execute("INSERT INTO itsperfect.stock_passes (connector, warehouse_id, locations) "
                     "VALUES (%s, 1, '{loc-a}')", (CONNECTOR,))
        counts = stock._write_page(conn, CONNECTOR, warehouse, [broken], ledger_id)
        zeroed = stock._end_pass(conn, CONNECTOR, warehouse)

    assert counts.quarantined == 1
    after = quantities(conn, "loc-a")
    assert after[barcode] == held[barcode] and any(held[barcode][6:])   # quarantined, yet held upstream: kept
    assert zeroed == sum(1 for b, row in held.items() if b not in stock_rows.barcodes_in(broken) and any(row[6:]))


def test_barcodes_are_found_anywhere_in_a_malformed_record():
    record = {"itemNumber": "X", "warehouses": [{"colors": [{"sizes": None}, {"sizes": [
        {"barcode": "8718192021544"}, {"barcode": 8718192021551}, {"barcode": ""}, {"barcode": True}]}]}]}
    assert stock_rows.barcodes_in(record) == {"8718192021544", "8718192021551"}
    assert stock_rows.barcodes_in("not a record") == set()
