"""ServiceTrade invoices -> TrustFile transactions, on payloads shaped like the invoice resource."""
from __future__ import annotations

import copy
import datetime as dt
from decimal import Decimal

import pytest

from integrations.trustfile.hosts.base import Document
from integrations.trustfile.hosts.servicetrade import ServiceTradeHost, map_invoice
from integrations.trustfile.model import Address, Unreconciled

ACCOUNT = "acme-fire"
UPDATED = dt.datetime(2026, 3, 2, 15, 4, 5, tzinfo=dt.timezone.utc)
COMPANY = Address(line1="1 Main St", city="Sacramento", state="CA", zip="95814")

# Labor is not taxable, parts are: 8.25% of 235.88 + 335.44 = 571.32 -> 47.13.
INVOICE = {
    "id": 20131, "invoiceNumber": "INV-00131", "name": "Site 11 J-00131", "type": "invoice", "status": "sent",
    "partial": False, "transactionDate": 1767697200,   # 2026-01-06T11:00:00Z
    "job": {"id": 10131, "number": "J-00131"}, "customer": {"id": 5011, "name": "Customer 11"},
    "location": {"id": 7011, "name": "Site 11",
                 "address": {"street": "11 Depot Rd", "city": "Fresno", "state": "CA", "postalCode": "93722"}},
    "items": [
        {"id": 41310, "description": "Labor", "libItem": {"id": 301, "name": "Labor", "type": "labor"},
         "quantity": 2.0, "price": 95.0, "totalPrice": 190.0, "taxable": False},
        {"id": 41311, "description": "Sprinkler Head", "libItem": {"id": 310, "name": "Sprinkler Head", "type": "part"},
         "quantity": 2.0, "price": 117.94, "totalPrice": 235.88, "taxable": True},
        {"id": 41312, "description": None, "libItem": {"id": 311, "name": "Smoke Detector", "type": "part"},
         "quantity": 4.0, "price": 83.86, "totalPrice": 335.44, "taxable": True},
    ],
    "subtotal": 761.32, "taxAmount": 47.13, "totalPrice": 808.45, "updated": 1772463845, "created": 1772463800,
}

CREDIT = {
    **copy.deepcopy(INVOICE), "id": 20150, "invoiceNumber": "INV-00150",
    "items": [{"id": 41500, "description": "Credit: warranty rework",
               "libItem": {"id": 312, "name": "Backflow Valve Kit", "type": "part"},
               "quantity": 1.0, "price": -120.0, "totalPrice": -120.0, "taxable": True}],
    "subtotal": -120.0, "taxAmount": -9.9, "totalPrice": -129.9,
}


def mapped(record: dict, fallback: Address | None = None):
    return map_invoice(record, account=ACCOUNT, updated_at=UPDATED, fallback_address=fallback)


def test_invoice_is_a_sale_of_its_items_with_its_tax_at_its_location():
    t = mapped(INVOICE)
    assert (t.kind, t.status, t.item_id, t.source_company) == ("sale", "active", "servicetrade-invoice-20131", ACCOUNT)
    assert (t.sales_amount, t.sales_tax, t.shipping_amount, t.shipping_tax) == (
        Decimal("761.32"), Decimal("47.13"), Decimal("0.00"), Decimal("0.00"))
    assert t.computed_total == t.source_total == Decimal("808.45")
    assert t.transaction_date == dt.date(2026, 1, 6) and t.source_updated_at == UPDATED
    assert (t.customer_ref, t.customer_name) == ("5011", "Customer 11")
    assert [(line.description, line.amount, line.taxable) for line in t.lines] == [
        ("Labor", Decimal("190.00"), False), ("Sprinkler Head", Decimal("235.88"), True),
        ("Smoke Detector", Decimal("335.44"), True)]
    item = t.as_item()
    assert item["refund"] is False and "reviewRequired" not in item
    assert item["shipToAddress"] == {"line1": "11 Depot Rd", "city": "Fresno", "state": "CA", "zip": "93722"}
    assert (item["salesAmount"], item["salesTax"], item["transactionDate"]) == (761.32, 47.13, "2026-01-06T00:00:00")


def test_tax_exempt_invoice_carries_no_tax():
    record = {**copy.deepcopy(INVOICE), "taxAmount": 0.0, "totalPrice": 761.32}
    t = mapped(record)
    assert (t.sales_amount, t.sales_tax, t.source_total) == (Decimal("761.32"), Decimal("0.00"), Decimal("761.32"))


def test_negative_invoice_is_a_refund_sent_positive():
    t = mapped(CREDIT)
    assert (t.kind, t.status) == ("refund", "active")
    assert (t.sales_amount, t.sales_tax, t.source_total) == (Decimal("120.00"), Decimal("9.90"), Decimal("129.90"))
    assert t.lines[0].amount == Decimal("120.00")
    item = t.as_item()
    assert item["refund"] is True and (item["salesAmount"], item["salesTax"]) == (120.0, 9.9)


def test_credit_line_on_a_positive_invoice_reduces_the_sale():
    record = copy.deepcopy(INVOICE)
    record["items"].append({"id": 41313, "description": "Discount", "libItem": {"id": 320, "name": "Discount"},
                            "quantity": 1.0, "price": -61.32, "totalPrice": -61.32, "taxable": False})
    record["totalPrice"] = 747.13
    t = mapped(record)
    assert (t.kind, t.sales_amount, t.source_total) == ("sale", Decimal("700.00"), Decimal("747.13"))


@pytest.mark.parametrize("record", [INVOICE, CREDIT], ids=["sale", "credit"])
def test_void_invoice_is_resent_with_every_amount_zero_under_the_same_item(record):
    voided = {**copy.deepcopy(record), "status": "void"}
    voided["items"][0]["totalPrice"] = 1.0   # what a void invoice held no longer has to add up
    t = mapped(voided)
    assert t.status == "voided" and t.item_id == mapped(record).item_id
    assert t.kind == mapped(record).kind
    assert (t.sales_amount, t.sales_tax, t.shipping_amount, t.shipping_tax, t.source_total) == (Decimal("0.00"),) * 5
    assert t.as_item()["salesAmount"] == 0.0


@pytest.mark.parametrize(("address", "missing"), [
    ({"street": "5 Depot Rd", "city": "Fresno", "state": None, "postalCode": "93722"}, "lacks state"),
    ({"street": "3 Depot Rd", "city": "Reno", "state": "NV", "postalCode": ""}, "lacks zip"),
    ({"street": "3 Depot Rd", "city": "Reno"}, "lacks state and zip"),
])
def test_incomplete_location_address_goes_to_review_at_the_company_address(address, missing):
    record = copy.deepcopy(INVOICE)
    record["location"]["address"] = address
    t = mapped(record, fallback=COMPANY)
    assert t.review_required and t.ship_to == COMPANY
    assert t.review_message == (f"location address {missing} in ServiceTrade; "
                                "placed at the company's address until reviewed")
    item = t.as_item()
    assert item["reviewRequired"] is True and item["shipToAddress"]["zip"] == "95814"
    assert t.computed_total == t.source_total   # the amounts are untouched by the address question


def test_without_a_company_address_the_incomplete_one_is_kept_for_review():
    record = copy.deepcopy(INVOICE)
    record["location"]["address"]["state"] = None
    t = mapped(record)
    assert t.review_required and t.ship_to == Address("11 Depot Rd", "Fresno", None, "93722")
    assert t.review_message == "location address lacks state in ServiceTrade"


def test_invoice_without_a_location_goes_to_review():
    record = {k: v for k, v in INVOICE.items() if k != "location"}
    t = mapped(record, fallback=COMPANY)
    assert t.review_required and t.review_message.startswith("no location address in ServiceTrade")


def test_parts_that_do_not_add_up_are_unreconciled_with_the_difference():
    record = {**copy.deepcopy(INVOICE), "totalPrice": 808.46}
    with pytest.raises(Unreconciled, match=r"invoice 20131 \(INV-00131\).*= 808.45.*totalPrice is 808.46 "
                                           r"\(difference 0.01\)"):
        mapped(record)
    missing_tax = {k: v for k, v in INVOICE.items() if k != "taxAmount"}
    with pytest.raises(Unreconciled, match=r"difference 47.13"):
        mapped(missing_tax)


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r.pop("items"), "has no 'items'"),
    (lambda r: r["items"][1].pop("totalPrice"), "item 2 has no 'totalPrice'"),
    (lambda r: r.pop("transactionDate"), "has no 'transactionDate'"),
    (lambda r: r.update(type="vendorbill"), "vendor bill, a purchase"),
])
def test_unreadable_or_non_sale_invoices_are_refused(change, message):
    record = copy.deepcopy(INVOICE)
    change(record)
    with pytest.raises(ValueError, match=message) as raised:
        mapped(record)
    assert not isinstance(raised.value, Unreconciled)


def test_the_host_maps_a_document_with_its_account_and_last_updated_time():
    host = ServiceTradeHost(hook=None, account=ACCOUNT)
    t = host.to_transaction(Document("invoice", "20131", UPDATED, INVOICE), fallback_address=None)
    assert (t.source_system, t.source_company, t.source_updated_at) == ("servicetrade", ACCOUNT, UPDATED)
    assert t.item_id == f"{host.name}-invoice-20131" and host.identifier == ACCOUNT
