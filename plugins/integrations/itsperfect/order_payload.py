"""Our order as ItsPerfect's create-order payload (`POST /api/v2/orders`, vendors.md §3.5): a pure function.

The shape is the one the vendor's documentation shows: every value a string except the line quantities,
money with two decimals (never a float), `warehouseId` as a string. Order lines go in `items`
(`barcode`, `quantity`, `price`): the vendor's docs we hold were cut before the lines, so those names are
the sandbox's assumption. The connector's extension attributes are merged into the main node last, so an
attribute named like a standard key (`orderType`, `warehouseId`...) replaces it: that is how a tenant that
needs another order type or a fixed value gets it without a code change.

`date` has no offset in the vendor's format: ItsPerfect tenants are Dutch companies whose ERP shows times
as Dutch wall-clock time, so the order's moment is rendered in Europe/Amsterdam. UTC would show every
order one or two hours early in the ERP and date an order placed just after midnight on the day before.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

TENANT_TIME_ZONE = ZoneInfo("Europe/Amsterdam")
ORDER_TYPE = "2"            # what the vendor's example sends for an order to ship
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


class OrderNotExportable(ValueError):
    """Our order lacks what ItsPerfect needs to create it; the message names the order and what is missing."""


def build_payload(order: Mapping[str, Any], lines: Iterable[Mapping[str, Any]],
                  addresses: Iterable[Mapping[str, Any]], warehouse_id: int,
                  attributes: Iterable[tuple[str, str]]) -> dict:
    """The payload of `order` (a commerce.orders row), its order_lines and order_addresses rows (by `kind`),
    to the account's warehouse, with the connector's extension attributes (name, value) merged in last."""
    lines = sorted(lines, key=lambda line: line["line_no"])
    by_kind = {address["kind"]: address for address in addresses}
    missing = [what for what, absent in (("no order lines", not lines),
                                         ("no shipping address", "shipping" not in by_kind),
                                         ("no invoice address", "invoice" not in by_kind)) if absent]
    if missing:
        raise OrderNotExportable(f"order {order['order_id']} (reference {order['reference']}) cannot be exported "
                                 f"to ItsPerfect: it has {', '.join(missing)}")
    payload = {
        "orderType": ORDER_TYPE,
        "date": order["ordered_at"].astimezone(TENANT_TIME_ZONE).strftime(DATE_FORMAT),
        "reference": order["reference"],
        "orderNumber": order["order_number"],
        "customerId": order["customer_id"],
        "currency": order["currency"],
        "warehouseId": str(warehouse_id),
        "shippingCosts": _money(order["shipping_costs"]),
        "comment": order["comment"],
        "internalComment": order["internal_comment"],
        "channel": {"orderNumber": order["channel_order_number"], "orderId": order["channel_order_id"]},
        "shippingAddress": _address(by_kind["shipping"]),
        "invoiceAddress": _address(by_kind["invoice"]),
        "items": [{"barcode": line["barcode"], "quantity": int(line["quantity"]), "price": _money(line["price"])}
                  for line in lines],
    }
    payload.update(attributes)
    return payload


def _address(address: Mapping[str, Any]) -> dict:
    """`addressId` empty: the vendor creates the address from the fields rather than reusing one of its own."""
    return {"addressId": "", "name": address["name"], "street": address["street"],
            "housenumber": address["housenumber"], "housenumberExtension": address["housenumber_extension"],
            "postalCode": address["postal_code"], "city": address["city"], "countryId": address["country_id"],
            "email": address["email"], "phone": address["phone"]}


def _money(value: Decimal | int | str) -> str:
    return f"{Decimal(value):.2f}"
