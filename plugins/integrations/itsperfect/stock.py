"""The ItsPerfect stock pull of one connector: its warehouses refreshed, then the full stock of every active
warehouse a location is mapped to, read once and written to each of those locations.

A warehouse is read in a pass, one page per transaction: the page's rows (for every mapped location), the
barcodes it held (itsperfect.stock_pass_seen) and the pass's next page (itsperfect.stock_passes) commit
together. When the tenant's 750 requests an hour are spent, the pages done stay and the next call resumes
the pass at its next page. A completed pass sets to 0 the quantities of the barcodes it did not see (the
vendor dropped them: a full update, not deltas) and ends. One page is in memory at a time, whatever the
warehouse's size.

Pages are numbered over a list that may change between hours: a page past the end answers the last page
again, which ends the pass. An item that moved to an earlier page meanwhile is missed, so zeroed, by that
pass, and restored by the next one.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field, fields

import psycopg

from etl import ledger, loader, watermarks
from etl.incremental import Reject
from etl.progress import Progress
from etl.request_budget import BudgetSpent
from etl.tables import TargetTable
from hooks.itsperfect import PAGE_COUNT, ItsPerfectHook
from hooks.paging import header_count
from hooks.vendor_http import VendorApiError
from integrations.itsperfect import stock_rows

log = logging.getLogger(__name__)

PIPELINE = "itsperfect_stock"
QUANTITIES = TargetTable("commerce", "location_quantities", ("location_id", *stock_rows.COLUMNS))
WAREHOUSES = TargetTable("itsperfect", "warehouses", ("connector", "warehouse_id", "name", "active"))
SHAPE_HINT = "unexpected response shape; nothing was loaded from it"


@dataclass
class Counts:
    pages: int = 0
    read: int = 0           # sizes (barcodes) read, a record rejected whole counting one
    rows: int = 0           # location rows written: each loaded size once per location mapped to its warehouse
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined: int = 0    # sizes, once whatever the number of locations
    zeroed: int = 0         # location rows set to 0 at the end of a pass

    def __iadd__(self, other: Counts) -> Counts:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self


@dataclass
class StockReport:
    """What a pull did, for XCom: JSON-serializable through as_dict()."""

    connector: str
    ledger_id: int | None = None
    counts: Counts = field(default_factory=Counts)
    warehouses: list[int] = field(default_factory=list)     # pulled: at least one page asked for
    completed: list[int] = field(default_factory=list)      # passes that ended in this call
    inactive: list[int] = field(default_factory=list)       # mapped, inactive upstream: not pulled
    requests: int = 0              # pages asked for, the warehouses list's included (the hook's retries not)
    cut_by_budget: str | None = None   # when the budget ran out: the ISO moment it resets

    def as_dict(self) -> dict:
        return asdict(self)


class StockPullCut(BudgetSpent):
    """The request budget ran out mid-pull: the pages done are committed and counted in `report`, and the
    next call resumes at each pass's next page. Not a failure: defer until `resets_at`."""

    def __init__(self, spent: BudgetSpent, report: StockReport) -> None:
        super().__init__(spent.budget, spent.requested)
        self.report = report


@dataclass(frozen=True)
class _Warehouse:
    id: int
    name: str
    active: bool
    locations: tuple[str, ...]


def refresh_warehouses(conn: psycopg.Connection, hook: ItsPerfectHook, connector: str) -> dict[str, int]:
    """Upsert the tenant's warehouses in one transaction. One we hold that it no longer lists is marked
    inactive, never deleted: locations and accounts refer to it."""
    listed = [_warehouse_row(hook, connector, record) for record in hook.warehouses()]
    if not listed:   # a token without the permission, or a glitch: never a reason to deactivate every warehouse
        raise VendorApiError(hook.vendor, "GET", "/warehouses", 200, "the tenant listed no warehouse at all",
                             hint="nothing was changed; check the API token's permissions (Settings > API)")
    with conn.transaction():
        if conn.execute("SELECT 1 FROM itsperfect.connectors WHERE connector = %s", (connector,)).fetchone() is None:
            raise LookupError(f"ItsPerfect connector {connector!r} is not registered in itsperfect.connectors: "
                              "register it (the admin API) before pulling its stock")
        upserted = loader.upsert(conn, WAREHOUSES, listed)
        gone = conn.execute(
            "UPDATE itsperfect.warehouses SET active = false WHERE connector = %s AND active "
            "AND NOT warehouse_id = ANY(%s)", (connector, [row[1] for row in listed])).rowcount
        conn.execute("UPDATE itsperfect.warehouses SET refreshed_at = now() WHERE connector = %s", (connector,))
    counts = {"listed": len(listed), "inserted": upserted.inserted, "updated": upserted.updated,
              "unchanged": upserted.unchanged, "gone": gone,
              "requests": max(1, math.ceil(len(listed) / hook.page_size))}
    log.info("%s: warehouses refreshed: %s", connector, counts)
    return counts


def pull_stock(conn: psycopg.Connection, hook: ItsPerfectHook, connector: str, *, run_id: str) -> StockReport:
    """Refresh the warehouses, then pull (or resume) the stock pass of every active warehouse mapped to a
    location. `conn` must be outside a transaction: pages commit as they go.

    One ledger row per call; its `updated` includes the zeroed rows. A spent request budget closes it as a
    success and raises StockPullCut (a BudgetSpent carrying the report); any other error marks it failed.
    """
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise RuntimeError("the stock pull commits page by page: the connection is inside a transaction already")
    report = StockReport(connector)
    spent: BudgetSpent | None = None
    info = ledger.RunInfo(pipeline=PIPELINE, scope=connector, run_id=run_id, mode="incremental")
    with watermarks.claimed(conn, PIPELINE, connector), ledger.ledgered_run(conn, info, atomic=False) as run:
        report.ledger_id = run.id
        try:
            _pull(conn, hook, connector, run.id, report)
        except BudgetSpent as exc:
            spent, report.cut_by_budget = exc, exc.resets_at.isoformat()
        c = report.counts
        run.counts = ledger.RunCounts(read=c.read, inserted=c.inserted, updated=c.updated + c.zeroed,
                                      unchanged=c.unchanged, quarantined=c.quarantined)
    log.info("%s: stock pull %s: %s", connector,
             f"cut by the request budget, resumes after {report.cut_by_budget}" if spent else "done",
             report.as_dict())
    if spent is not None:
        raise StockPullCut(spent, report) from None
    return report


def _pull(conn: psycopg.Connection, hook: ItsPerfectHook, connector: str, ledger_id: int,
          report: StockReport) -> None:
    report.requests += refresh_warehouses(conn, hook, connector)["requests"]
    mapped = _mapped(conn, connector)
    with conn.transaction():          # a pass of a warehouse no longer pulled would resume, stale, some day
        conn.execute("DELETE FROM itsperfect.stock_passes WHERE connector = %s AND NOT warehouse_id = ANY(%s)",
                     (connector, [w.id for w in mapped if w.active]))
    for warehouse in mapped:
        if not warehouse.active:
            report.inactive.append(warehouse.id)
            log.warning("%s: warehouse %d (%s) is inactive in ItsPerfect: not pulled; locations %s keep their "
                        "last quantities", connector, warehouse.id, warehouse.name, ", ".join(warehouse.locations))
            continue
        report.warehouses.append(warehouse.id)
        _pull_warehouse(conn, hook, connector, warehouse, ledger_id, report)


def _mapped(conn: psycopg.Connection, connector: str) -> list[_Warehouse]:
    """The connector's warehouses at least one location is mapped to, with those locations."""
    with conn.transaction():
        rows = conn.execute(
            """
            SELECT w.warehouse_id, w.name, w.active, array_agg(l.location_id ORDER BY l.location_id)
              FROM itsperfect.warehouses w
              JOIN itsperfect.connector_locations l ON l.connector = w.connector AND l.warehouse_id = w.warehouse_id
             WHERE w.connector = %s
             GROUP BY w.warehouse_id, w.name, w.active
             ORDER BY w.warehouse_id
            """, (connector,)).fetchall()
    return [_Warehouse(wid, name, active, tuple(locations)) for wid, name, active, locations in rows]


def _pull_warehouse(conn: psycopg.Connection, hook: ItsPerfectHook, connector: str, warehouse: _Warehouse,
                    ledger_id: int, report: StockReport) -> None:
    """Read the warehouse's pass from its next page to its end, one committed page at a time."""
    page, page_count = _pass_start(conn, connector, warehouse)
    if page > 1:
        log.info("%s warehouse %d: resuming its stock pass at page %d of %s", connector, warehouse.id, page,
                 page_count)
    done = Counts()
    progress = Progress(log)
    outcome = None
    try:
        while True:
            records, page_count = _stock_page(hook, warehouse.id, page)
            report.requests += 1
            last = page >= page_count
            if page > max(page_count, 1):
                log.info("%s warehouse %d: page %d asked for, the list has %d now (it shrank since the pass "
                         "started): the vendor answered its last page again, and the pass ends here", connector,
                         warehouse.id, page, page_count)
            with conn.transaction():
                counts = _write_page(conn, connector, warehouse, records, ledger_id)
                conn.execute("UPDATE itsperfect.stock_passes SET next_page = %s, page_count = %s, updated_at = now() "
                             "WHERE connector = %s AND warehouse_id = %s",
                             (page + 1, page_count, connector, warehouse.id))
                if last:
                    counts.zeroed = _end_pass(conn, connector, warehouse)
            done += counts
            report.counts += counts
            if last:
                report.completed.append(warehouse.id)
                outcome = "pass complete"
                return
            progress.tick("%s warehouse %d: page %d of %d, %d barcodes read so far", connector, warehouse.id,
                          page, page_count, done.read)
            page += 1
    except BudgetSpent as exc:
        outcome = f"cut by the request budget; resumes at page {page} after {exc.resets_at.isoformat()}"
        raise
    finally:
        log.info("%s warehouse %d (%s): %s; %d pages, %d rows for %d location(s): %d inserted, %d updated, "
                 "%d unchanged, %d quarantined, %d zeroed", connector, warehouse.id, warehouse.name,
                 outcome or f"stopped by an error at page {page} (the pages before it are committed)",
                 done.pages, done.rows, len(warehouse.locations), done.inserted, done.updated, done.unchanged,
                 done.quarantined, done.zeroed)


def _pass_start(conn: psycopg.Connection, connector: str, warehouse: _Warehouse) -> tuple[int, int | None]:
    """The pass's next page and page count: a pass cut by the budget goes on, else a new one starts at 1. A
    pass started for other locations starts again: a location mapped since would miss the pages before."""
    with conn.transaction():
        conn.execute("DELETE FROM itsperfect.stock_passes WHERE connector = %s AND warehouse_id = %s "
                     "AND locations <> %s", (connector, warehouse.id, list(warehouse.locations)))
        conn.execute("INSERT INTO itsperfect.stock_passes (connector, warehouse_id, locations) VALUES (%s, %s, %s) "
                     "ON CONFLICT DO NOTHING", (connector, warehouse.id, list(warehouse.locations)))
        return conn.execute("SELECT next_page, page_count FROM itsperfect.stock_passes "
                            "WHERE connector = %s AND warehouse_id = %s", (connector, warehouse.id)).fetchone()


def _stock_page(hook: ItsPerfectHook, warehouse_id: int, page: int) -> tuple[list, int]:
    """One page of a warehouse's stock and the page count. A page past the end answers the last page:
    loaded again (unchanged rows), it is the end of the pass."""
    records, headers = hook.request("GET", "/stock", params={"warehouseId": warehouse_id, "page": page,
                                                             "limit": hook.page_size}, _envelope="stock")
    try:
        return records, header_count(headers, PAGE_COUNT)
    except ValueError as exc:
        raise VendorApiError(hook.vendor, "GET", "/stock", 200, str(exc), hint=SHAPE_HINT) from None


def _write_page(conn: psycopg.Connection, connector: str, warehouse: _Warehouse, records: list,
                ledger_id: int) -> Counts:
    """Inside the page's transaction: its rows for every mapped location, its rejects, its seen barcodes."""
    counts = Counts(pages=1)
    rejects = ledger.QuarantineBuffer(PIPELINE, connector)
    sizes: list[stock_rows.Size] = []
    listed: set[str] = set()          # barcodes of records rejected whole: held by the vendor, never zeroed
    for record in records:
        try:
            sizes.extend(stock_rows.flatten(record, warehouse.id))
        except Reject as exc:
            counts.read += 1
            listed |= stock_rows.barcodes_in(record)
            key = record.get("itemNumber") if isinstance(record, dict) else None
            rejects.add(None if key is None else str(key), f"warehouse {warehouse.id}: {exc}", record)
    counts.read += len(sizes)
    seen = sorted({size.barcode for size in sizes if size.barcode} | listed)
    known = {row[0] for row in conn.execute("SELECT barcode FROM commerce.products WHERE barcode = ANY(%s)",
                                            (seen,))}
    rows = []
    for size in sizes:
        if size.reason:
            rejects.add(size.key, f"warehouse {warehouse.id}: {size.reason}", size.source)
        elif size.barcode not in known:
            rejects.add(size.key, f"warehouse {warehouse.id}: barcode {size.barcode} is not in our catalogue "
                                  "(commerce.products): add the product and the next pass loads its stock",
                        size.source)
        else:
            rows.append(size.row)
    upserted = loader.upsert(conn, QUANTITIES, ((location, *row) for location in warehouse.locations for row in rows))
    counts.rows, counts.inserted, counts.updated = upserted.staged, upserted.inserted, upserted.updated
    counts.unchanged = upserted.unchanged
    counts.quarantined = rejects.flush(conn, ledger_id)
    conn.execute("INSERT INTO itsperfect.stock_pass_seen (connector, warehouse_id, barcode) "
                 "SELECT %s, %s, unnest(%s::text[]) ON CONFLICT DO NOTHING", (connector, warehouse.id, seen))
    return counts


def _end_pass(conn: psycopg.Connection, connector: str, warehouse: _Warehouse) -> int:
    """Zero what the pass did not see at the warehouse's locations, and end it; returns the rows zeroed."""
    # The seen rows were all written since the last statistics: without them the planner scans them once per
    # location row (50,000 barcodes: 30 s instead of a fraction of one).
    conn.execute("ANALYZE itsperfect.stock_pass_seen")
    zeroed = conn.execute(
        """
        UPDATE commerce.location_quantities q SET quantity = 0, available_quantity = 0
         WHERE q.location_id = ANY(%(locations)s) AND (q.quantity <> 0 OR q.available_quantity <> 0)
           AND NOT EXISTS (SELECT 1 FROM itsperfect.stock_pass_seen s
                            WHERE s.connector = %(connector)s AND s.warehouse_id = %(warehouse)s
                              AND s.barcode = q.barcode)
        """, {"locations": list(warehouse.locations), "connector": connector, "warehouse": warehouse.id}).rowcount
    conn.execute("DELETE FROM itsperfect.stock_passes WHERE connector = %s AND warehouse_id = %s",
                 (connector, warehouse.id))
    return zeroed


def _warehouse_row(hook: ItsPerfectHook, connector: str, record: object) -> tuple:
    """(connector, warehouse_id, name, active); a warehouse without a usable id or `active` flag fails the refresh."""
    try:
        warehouse_id, active = int(record["id"]), int(record["active"])
    except (TypeError, KeyError, ValueError):
        raise VendorApiError(hook.vendor, "GET", "/warehouses", 200,
                             f"a warehouse without a usable id or active flag (keys: "
                             f"{sorted(record) if isinstance(record, dict) else type(record).__name__})",
                             hint=SHAPE_HINT) from None
    name = str(record.get("warehouse") or "").strip() or f"warehouse {warehouse_id}"
    return connector, warehouse_id, name, active == 1
