"""The create-order payload on plain data: the vendor's documented shape, extension attributes merged in last
(replacing a standard key of the same name), Dutch wall-clock dates, and orders that cannot be exported."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from integrations.itsperfect.order_payload import OrderNotExportable, build_payload

ORDER = {
    "order_id": "web-1001", "account_id": "acme", "reference": "ACME-1001", "order_number": "1001",
    "customer_id": "C-77", "ordered_at": dt.datetime(2026, 1, 31, 23, 30, 5, tzinfo=dt.timezone.utc),
    "currency": "EUR", "shipping_costs": Decimal("4.5"), "comment": "Leave at the door",
    "internal_comment": "VIP", "channel_order_number": "BOL-555", "channel_order_id": "bol-abc-555",
    "created_at": dt.datetime(2026, 1, 31, 23, 31, tzinfo=dt.timezone.utc),
}
LINES = [
    {"order_id": "web-1001", "line_no": 2, "barcode": "8718192000021", "quantity": 1, "price": Decimal("59.95")},
    {"order_id": "web-1001", "line_no": 1, "barcode": "8718192000014", "quantity": 3, "price": Decimal("20")},
]


def address(kind: str, **changes) -> dict:
    return {"order_id": "web-1001", "kind": kind, "name": "Test customer", "street": f"{kind.title()} street",
            "housenumber": "12", "housenumber_extension": "a", "postal_code": "1015 CX", "city": "Amsterdam",
            "country_id": "1", "email": "klant@example.nl", "phone": "+31 20 123 4567", **changes}


ADDRESSES = [address("invoice", street="Herengracht", housenumber_extension=""), address("shipping")]

EXPECTED = {
    "orderType": "2",
    "date": "2026-02-01 00:30:05",          # 23:30:05 UTC is half past midnight the next day in Amsterdam
    "reference": "ACME-1001",
    "orderNumber": "1001",
    "customerId": "C-77",
    "currency": "EUR",
    "warehouseId": "3",
    "shippingCosts": "4.50",
    "comment": "Leave at the door",
    "internalComment": "VIP",
    "channel": {"orderNumber": "BOL-555", "orderId": "bol-abc-555"},
    "shippingAddress": {"addressId": "", "name": "Test customer", "street": "Shipping street", "housenumber": "12",
                        "housenumberExtension": "a", "postalCode": "1015 CX", "city": "Amsterdam", "countryId": "1",
                        "email": "klant@example.nl", "phone": "+31 20 123 4567"},
    "invoiceAddress": {"addressId": "", "name": "Test customer", "street": "Herengracht", "housenumber": "12",
                       "housenumberExtension": "", "postalCode": "1015 CX", "city": "Amsterdam", "countryId": "1",
                       "email": "klant@example.nl", "phone": "+31 20 123 4567"},
    "items": [{"barcode": "8718192000014", "quantity": 3, "price": "20.00"},
              {"barcode": "8718192000021", "quantity": 1, "price": "59.95"}],
}


def test_the_payload_has_the_vendors_shape_lines_in_order_and_money_as_strings():
    assert build_payload(ORDER, LINES, ADDRESSES, 3, []) == EXPECTED


def test_a_summer_date_is_dutch_summer_time():
    summer = {**ORDER, "ordered_at": dt.datetime(2026, 7, 1, 10, 0, tzinfo=dt.timezone.utc)}
    assert build_payload(summer, LINES, ADDRESSES, 3, [])["date"] == "2026-07-01 12:00:00"


def test_extension_attributes_replace_standard_keys_and_add_new_ones():
    payload = build_payload(ORDER, LINES, ADDRESSES, 3,
                            [("orderType", "5"), ("warehouseId", "1"), ("sellingPointId", "12")])
    assert payload == {**EXPECTED, "orderType": "5", "warehouseId": "1", "sellingPointId": "12"}


@pytest.mark.parametrize(("lines", "addresses", "missing"), [
    ([], ADDRESSES, "it has no order lines"),
    (LINES, [address("invoice")], "it has no shipping address"),
    (LINES, [address("shipping")], "it has no invoice address"),
    ([], [], "it has no order lines, no shipping address, no invoice address"),
])
def test_an_order_missing_a_part_names_the_order_and_every_missing_part(lines, addresses, missing):
    with pytest.raises(OrderNotExportable) as raised:
        build_payload(ORDER, lines, addresses, 3, [])
    assert str(raised.value) == f"order web-1001 (reference ACME-1001) cannot be exported to ItsPerfect: {missing}"
