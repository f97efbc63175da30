"""The brand's side of an ItsPerfect test, written straight into our tables, and what the sandbox holds.

The sandbox lists no barcodes outside a warehouse's stock, so the catalogue and the expected stock are
read from a twin of it built in this process from the same seed and the same control calls (`control`
sends each to both); reading them through the API would spend the tenant's request budget.
"""
from __future__ import annotations

import datetime as dt

from sandbox import itsperfect as itsp
from sandbox.core import SandboxState

UTC = dt.timezone.utc


class Shop:
    def __init__(self, conn, sandbox):
        self.conn, self.sandbox = conn, sandbox
        self.twin = itsp.ItsPerfectSandbox(SandboxState())

    def control(self, **payload) -> dict:
        self.twin.control(payload)
        return self.sandbox.control("itsperfect", **payload)

    def catalogue(self, *, leave_out: tuple[str, ...] = ()) -> int:
        """Every barcode the tenant knows, as our products (but `leave_out`)."""
        with self.conn.cursor().copy("COPY commerce.products (barcode, item_number, colour, size, name) "
                                     "FROM STDIN") as copy:
            for barcode, (item_id, colour, size) in self.twin.barcodes.items():
                if barcode not in leave_out:
                    item = self.twin.items[item_id]
                    variant = item["colors"][colour]
                    copy.write_row((barcode, item["itemNumber"], variant["color"],
                                    variant["sizes"][size]["size"], item["item"]))
        return len(self.twin.barcodes) - len(leave_out)

    def connector(self, conn_id: str, *, warehouses: tuple[int, ...] = ()) -> None:
        """A registered connector and, as its first refresh would leave them, the tenant's `warehouses`."""
        self.conn.execute("INSERT INTO itsperfect.connectors (connector) VALUES (%s) ON CONFLICT DO NOTHING",
                          (conn_id,))
        for wid in warehouses:
            found = self.twin.warehouses[wid]
            self.conn.execute("INSERT INTO itsperfect.warehouses (connector, warehouse_id, name, active) "
                              "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                              (conn_id, wid, found["warehouse"], bool(found["active"])))

    def account(self, account_id: str, *, connector: str | None = None, warehouse_id: int = 1,
                orders: int = 0) -> list[str]:
        """An account (mapped to `connector` when given) with `orders` new orders; their references."""
        self.conn.execute("INSERT INTO commerce.accounts (account_id, name) VALUES (%s, %s)",
                          (account_id, f"Account {account_id}"))
        if connector:
            self.conn.execute("INSERT INTO itsperfect.account_connectors (account_id, connector, warehouse_id) "
                              "VALUES (%s, %s, %s)", (account_id, connector, warehouse_id))
        barcodes = sorted(self.twin.barcodes)[:50]
        return [self.order(account_id, f"{account_id}-{n:05d}", lines=[(barcodes[(n + k) % 50], 1 + k, 19.95)
                                                                     for k in range(1 + n % 3)])
                for n in range(orders)]

    def order(self, account_id: str, order_id: str, *, lines: list[tuple[str, int, float]],
              city: str = "Amsterdam") -> str:
        reference = f"ref-{order_id}"
        self.conn.execute(
            "INSERT INTO commerce.orders (order_id, account_id, reference, order_number, customer_id, ordered_at,"
            " currency) VALUES (%s, %s, %s, %s, %s, %s, 'EUR')",
            (order_id, account_id, reference, order_id.upper(), "C-1001", dt.datetime(2026, 5, 31, 12, tzinfo=UTC)))
        for kind in ("shipping", "invoice"):
            self.conn.execute(
                "INSERT INTO commerce.order_addresses (order_id, kind, name, street, housenumber, postal_code, city,"
                " country_id) VALUES (%s, %s, 'Test customer', 'Keizersgracht', '12', '1015 CX', %s, '1')",
                (order_id, kind, city))
        for n, (barcode, quantity, price) in enumerate(lines, start=1):
            self.conn.execute("INSERT INTO commerce.order_lines (order_id, line_no, barcode, quantity, price) "
                              "VALUES (%s, %s, %s, %s, %s)", (order_id, n, barcode, quantity, price))
        return reference

    def location(self, location_id: str, *, account: str, connector: str, warehouse_id: int) -> None:
        self.conn.execute("INSERT INTO commerce.locations (location_id, account_id, name) VALUES (%s, %s, %s)",
                          (location_id, account, f"Store {location_id}"))
        self.conn.execute("INSERT INTO itsperfect.connector_locations (location_id, connector, warehouse_id) "
                          "VALUES (%s, %s, %s)", (location_id, connector, warehouse_id))

    # ---- what should be, and what is -----------------------------------------------------------------

    def mapped(self) -> list[tuple[str, str, int]]:
        return self.conn.execute("SELECT location_id, connector, warehouse_id FROM itsperfect.connector_locations "
                                 "ORDER BY 1").fetchall()

    def pulled_warehouses(self) -> set[tuple[str, int]]:
        return {(connector, wid) for _, connector, wid in self.mapped()}

    def items_held(self, warehouse_id: int) -> int:
        return len(self.twin.held[warehouse_id])

    def expected_quantities(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(location, barcode) -> (stock, available stock) as the tenant holds them, for every mapped location."""
        known = {row[0] for row in self.conn.execute("SELECT barcode FROM commerce.products")}
        return {(location, barcode): (on_hand, on_hand - reserved)
                for location, _, wid in self.mapped() if self.twin.warehouses[wid]["active"]
                for barcode, (on_hand, reserved) in self.twin.stock[wid].items() if barcode in known}

    def location_quantities(self) -> dict[tuple[str, str], tuple[int, int]]:
        self.conn.rollback()
        rows = self.conn.execute("SELECT location_id, barcode, quantity, available_quantity "
                                 "FROM commerce.location_quantities").fetchall()
        self.conn.rollback()
        return {(location, barcode): (quantity, available) for location, barcode, quantity, available in rows}
