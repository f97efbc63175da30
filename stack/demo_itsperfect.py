"""The ItsPerfect part of the demo `make up` leaves behind: a fashion brand whose stores hold the sandbox
tenant's stock and whose orders go to it.

The brand's own side (an account, two stores, the tenant's catalogue as our products, a few orders) stands
for the business's platform, which has no API of ours: it is written to the commerce tables directly. The
connector model goes through the platform's own path, the admin API (`/itsperfect`, behind Airflow's auth
manager): `itsperfect_default` registered (which reads the tenant's warehouses), the account mapped to
warehouse 1, the stores to warehouses 1 and 3. Idempotent: a second `make up` finds it all and changes nothing.
"""
from __future__ import annotations

import datetime as dt

from sandbox import itsperfect as itsp_sandbox
from sandbox.core import SandboxState

CONNECTOR = "itsperfect_default"
ACCOUNT, BRAND = "demo-brand", "Demo Fashion"
STORES = (("store-amsterdam", "Demo Fashion Amsterdam", 1), ("store-utrecht", "Demo Fashion Utrecht", 3))
ORDERS = 5


def seed(platform) -> list[str]:
    """Seed the brand; the banner's line."""
    created = _our_side(platform.integrations_url)
    platform.airflow("PUT", f"/itsperfect/connectors/{CONNECTOR}", {})
    platform.airflow("PUT", f"/itsperfect/accounts/{ACCOUNT}/connector", {"connector": CONNECTOR, "warehouse_id": 1})
    for store, _, warehouse in STORES:
        platform.airflow("PUT", f"/itsperfect/locations/{store}/connector",
                         {"connector": CONNECTOR, "warehouse_id": warehouse})
    stores = " and ".join(f"{store} (warehouse {warehouse})" for store, _, warehouse in STORES)
    return [f"ItsPerfect brand {BRAND} (account {ACCOUNT}) -> connector {CONNECTOR}: stores {stores}, "
            f"{ORDERS} orders to export" + ("" if created else " (already seeded)")]


def _our_side(integrations_url: str) -> bool:
    """The brand's account, stores, catalogue and orders; False when they were there already."""
    from etl.db import connect

    twin = itsp_sandbox.ItsPerfectSandbox(SandboxState())      # the sandbox's catalogue, from the same seed
    barcodes = sorted(twin.barcodes)
    with connect(integrations_url) as conn:
        if conn.execute("SELECT 1 FROM commerce.accounts WHERE account_id = %s", (ACCOUNT,)).fetchone():
            return False
        for barcode in barcodes:
            item_id, colour, size = twin.barcodes[barcode]
            item = twin.items[item_id]
            conn.execute("INSERT INTO commerce.products (barcode, item_number, colour, size, name) VALUES "
                         "(%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                         (barcode, item["itemNumber"], item["colors"][colour]["color"],
                          item["colors"][colour]["sizes"][size]["size"], item["item"]))
        conn.execute("INSERT INTO commerce.accounts (account_id, name) VALUES (%s, %s)", (ACCOUNT, BRAND))
        for store, name, _ in STORES:
            conn.execute("INSERT INTO commerce.locations (location_id, account_id, name) VALUES (%s, %s, %s)",
                         (store, ACCOUNT, name))
        now = dt.datetime.now(dt.timezone.utc)
        for n in range(1, ORDERS + 1):
            order_id = f"DEMO-{n:04d}"
            conn.execute("INSERT INTO commerce.orders (order_id, account_id, reference, order_number, customer_id, "
                         "ordered_at, currency, comment) VALUES (%s, %s, %s, %s, 'WEB-CUSTOMER', %s, 'EUR', %s)",
                         (order_id, ACCOUNT, f"demo-web-{n:04d}", order_id, now, "demo order from make up"))
            for kind, street in (("shipping", "Kalverstraat"), ("invoice", "Damrak")):
                conn.execute("INSERT INTO commerce.order_addresses (order_id, kind, name, street, housenumber, "
                             "postal_code, city, country_id, email) VALUES (%s, %s, 'Demo Customer', %s, %s, "
                             "'1012 AB', 'Amsterdam', '1', 'customer@example.com')", (order_id, kind, street, str(n)))
            for line in range(1, 1 + n % 3 + 1):
                conn.execute("INSERT INTO commerce.order_lines (order_id, line_no, barcode, quantity, price) "
                             "VALUES (%s, %s, %s, %s, 49.95)", (order_id, line, barcodes[n * 7 + line], line))
        conn.commit()
    return True
