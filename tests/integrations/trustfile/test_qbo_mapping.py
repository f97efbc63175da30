"""QBO documents -> TrustFile transactions, on payloads shaped like Intuit's documentation examples."""
from __future__ import annotations

import copy
from decimal import Decimal

import pytest

from integrations.trustfile.model import Address, Unreconciled
from integrations.trustfile.qbo_mapping import map_transaction

REALM = "9130350000000001"

# Intuit's invoice example: two item lines, a subtotal line, TxnTaxDetail 8% of 335.25 = 26.82.
INVOICE = {
    "Id": "130", "SyncToken": "0", "DocNumber": "1037", "TxnDate": "2014-11-14",
    "CustomerRef": {"value": "24", "name": "Sonnenschein Family Store"},
    "CurrencyRef": {"value": "USD", "name": "United States Dollar"}, "GlobalTaxCalculation": "TaxExcluded",
    "Line": [
        {"Id": "1", "LineNum": 1, "Description": "Rock Fountain", "Amount": 275.0, "DetailType": "SalesItemLineDetail",
         "SalesItemLineDetail": {"ItemRef": {"value": "5", "name": "Rock Fountain"}, "UnitPrice": 275, "Qty": 1,
                                 "TaxCodeRef": {"value": "TAX"}}},
        {"Id": "2", "LineNum": 2, "Description": "Fountain Pump", "Amount": 60.25, "DetailType": "SalesItemLineDetail",
         "SalesItemLineDetail": {"ItemRef": {"value": "11", "name": "Pump"}, "UnitPrice": 12.05, "Qty": 5,
                                 "TaxCodeRef": {"value": "TAX"}}},
        {"Amount": 335.25, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}},
    ],
    "TxnTaxDetail": {"TxnTaxCodeRef": {"value": "2"}, "TotalTax": 26.82,
                     "TaxLine": [{"DetailType": "TaxLineDetail", "Amount": 26.82,
                                  "TaxLineDetail": {"NetAmountTaxable": 335.25, "TaxPercent": 8,
                                                    "TaxRateRef": {"value": "3"}, "PercentBased": True}}]},
    "TotalAmt": 362.07,
    "BillAddr": {"Id": "15", "Line1": "Russ Sonnenschein", "Line2": "5647 Cypress Hill Ave.", "City": "Middlefield",
                 "CountrySubDivisionCode": "CA", "PostalCode": "94303"},
    "ShipAddr": {"Id": "15", "Line1": "5647 Cypress Hill Ave.", "City": "Middlefield",
                 "CountrySubDivisionCode": "CA", "PostalCode": "94303"},
    "MetaData": {"CreateTime": "2014-11-14T13:16:17-08:00", "LastUpdatedTime": "2014-11-14T13:16:17-08:00"},
}


def with_shipping(record: dict, amount: float, taxable: bool) -> dict:
    record = copy.deepcopy(record)
    record["Line"].insert(2, {"Id": "3", "LineNum": 3, "Amount": amount, "DetailType": "SalesItemLineDetail",
                              "SalesItemLineDetail": {"ItemRef": {"value": "SHIPPING_ITEM_ID"},
                                                      "TaxCodeRef": {"value": "TAX" if taxable else "NON"}}})
    return record


def test_invoice_is_a_sale_that_reconciles_to_the_cent():
    t = map_transaction("Invoice", INVOICE, company=REALM)
    assert (t.kind, t.status, t.item_id) == ("sale", "active", "qbo-Invoice-130")
    assert (t.sales_amount, t.sales_tax, t.shipping_amount, t.shipping_tax) == (
        Decimal("335.25"), Decimal("26.82"), Decimal("0.00"), Decimal("0.00"))
    assert t.computed_total == t.source_total == Decimal("362.07")
    assert t.ship_to.state == "CA" and t.ship_to.zip == "94303" and not t.review_required
    item = t.as_item()
    assert item["transactionDate"] == "2014-11-14T00:00:00" and item["refund"] is False
    assert item["shipToAddress"] == {"line1": "5647 Cypress Hill Ave.", "city": "Middlefield", "state": "CA",
                                     "zip": "94303"}


def test_shipping_line_is_split_out_with_its_share_of_the_tax():
    record = with_shipping(INVOICE, 15.00, taxable=True)
    record["TxnTaxDetail"]["TotalTax"] = 28.02          # 8% of 350.25
    record["TotalAmt"] = 378.27                          # 335.25 + 15.00 + 28.02
    t = map_transaction("SalesReceipt", record, company=REALM)
    assert (t.sales_amount, t.shipping_amount) == (Decimal("335.25"), Decimal("15.00"))
    assert t.shipping_tax == Decimal("1.20") and t.sales_tax == Decimal("26.82")   # 28.02 x 15/350.25
    assert t.computed_total == Decimal("378.27")


def test_untaxed_shipping_carries_no_tax():
    record = with_shipping(INVOICE, 9.95, taxable=False)
    record["TotalAmt"] = 372.02
    t = map_transaction("Invoice", record, company=REALM)
    assert (t.shipping_amount, t.shipping_tax, t.sales_tax) == (Decimal("9.95"), Decimal("0.00"), Decimal("26.82"))


def test_refund_documents_are_refunds_sent_positive():
    for entity in ("RefundReceipt", "CreditMemo"):
        t = map_transaction(entity, INVOICE, company=REALM)
        assert t.kind == "refund" and t.as_item()["refund"] is True and t.as_item()["salesAmount"] == 335.25


def test_ship_to_falls_back_to_bill_to_then_asks_for_review():
    no_ship = {k: v for k, v in INVOICE.items() if k != "ShipAddr"}
    assert map_transaction("Invoice", no_ship, company=REALM).ship_to.zip == "94303"
    neither = {k: v for k, v in INVOICE.items() if k not in ("ShipAddr", "BillAddr")}
    t = map_transaction("Invoice", neither, company=REALM)
    assert t.review_required and t.review_message == "no ship-to or bill-to address in QuickBooks"
    assert t.as_item()["reviewRequired"] is True and t.as_item()["shipToAddress"] == {}
    company = Address(line1="1 HQ Way", city="Fresno", state="CA", zip="93722")
    placed = map_transaction("Invoice", neither, company=REALM, fallback_address=company)
    assert placed.ship_to == company and placed.review_message == (
        "no ship-to or bill-to address in QuickBooks; placed at the company's address until reviewed")
    partial = copy.deepcopy(neither)
    partial["ShipAddr"] = {"Line1": "1 Main", "City": "Fresno", "CountrySubDivisionCode": "CA"}
    t = map_transaction("Invoice", partial, company=REALM)
    assert t.review_message == "ship-to address lacks zip in QuickBooks" and t.ship_to.state == "CA"


def test_a_document_that_does_not_add_up_is_refused_with_the_difference():
    wrong = copy.deepcopy(INVOICE)
    wrong["TotalAmt"] = 362.10
    with pytest.raises(Unreconciled, match=r"difference 0\.03"):
        map_transaction("Invoice", wrong, company=REALM)


def test_discounts_and_grouped_lines_count():
    record = copy.deepcopy(INVOICE)
    record["Line"] = [
        {"LineNum": 1, "DetailType": "GroupLineDetail", "Amount": 335.25,
         "GroupLineDetail": {"Line": copy.deepcopy(INVOICE["Line"][:2])}},
        {"LineNum": 2, "DetailType": "DiscountLineDetail", "Amount": 35.25,
         "DiscountLineDetail": {"PercentBased": False}},
    ]
    record["TxnTaxDetail"]["TotalTax"] = 24.00
    record["TotalAmt"] = 324.00
    t = map_transaction("Invoice", record, company=REALM)
    assert (t.sales_amount, t.sales_tax) == (Decimal("300.00"), Decimal("24.00"))


def test_tax_inclusive_amounts_have_their_tax_taken_out():
    record = copy.deepcopy(INVOICE)
    record["GlobalTaxCalculation"] = "TaxInclusive"
    record["TotalAmt"] = 335.25                          # the lines already include the 26.82
    t = map_transaction("Invoice", record, company=REALM)
    assert (t.sales_amount, t.sales_tax, t.computed_total) == (Decimal("308.43"), Decimal("26.82"), Decimal("335.25"))


def test_voided_documents_zero_out_under_the_same_item_id():
    voided = copy.deepcopy(INVOICE)
    voided.update({"TotalAmt": 0, "PrivateNote": "Voided", "TxnTaxDetail": {"TotalTax": 0}})
    for line in voided["Line"]:
        line["Amount"] = 0
    t = map_transaction("Invoice", voided, company=REALM)
    assert t.status == "voided" and t.computed_total == 0 and t.item_id == "qbo-Invoice-130"


def test_foreign_currency_is_sent_for_review():
    record = copy.deepcopy(INVOICE)
    record["CurrencyRef"] = {"value": "EUR"}
    assert map_transaction("Invoice", record, company=REALM).review_message == "amounts are in EUR, not USD"


def test_every_sandbox_document_reconciles():
    from sandbox.core import SandboxState
    from sandbox.qbo import REALMS, QboSandbox

    data = QboSandbox(SandboxState(seed=7)).realm_data(REALMS[0])
    mapped = [map_transaction(entity, record, company=REALMS[0])
              for entity in ("SalesReceipt", "Invoice", "RefundReceipt", "CreditMemo") for record in data[entity]]
    assert len(mapped) == 160
    assert any(t.shipping_amount for t in mapped) and any(t.review_required for t in mapped)


def test_mapped_documents_are_accepted_by_trustfile(sandbox, monkeypatch):
    import json

    from hooks.trustfile import TrustFileHook
    from sandbox import trustfile as tf_sandbox
    from sandbox.core import SandboxState
    from sandbox.qbo import REALMS, QboSandbox

    monkeypatch.setenv("AIRFLOW_CONN_TRUSTFILE_DEFAULT", json.dumps(
        {"conn_type": "trustfile", "host": f"{sandbox.url}/trustfile", "password": tf_sandbox.TOKEN}))
    data = QboSandbox(SandboxState(seed=7)).realm_data(REALMS[0])
    address = TrustFileHook().get_company(tf_sandbox.SEEDED_CONNECTIONS[0])["address"]
    company = Address(**{k: v for k, v in address.items() if k in ("line1", "city", "state", "zip")})
    items = [map_transaction(entity, record, company=REALMS[0], fallback_address=company).as_item()
             for entity in ("SalesReceipt", "Invoice", "RefundReceipt", "CreditMemo") for record in data[entity]]
    report = TrustFileHook().push_items(tf_sandbox.SEEDED_CONNECTIONS[0], items)
    assert (report.processed, report.rejected, report.calls) == (160, {}, 1)
    flagged = sandbox.trustfile_items(tf_sandbox.SEEDED_CONNECTIONS[0],
                                      next(i["itemId"] for i in items if i.get("reviewRequired")))
    assert flagged[0]["reviewMessage"]


@pytest.mark.parametrize("bad", ["", "abc", {}, [], True, "NaN", float("inf")])
def test_an_amount_that_is_not_one_is_a_value_error(bad):
    from integrations.trustfile.model import money

    with pytest.raises(ValueError, match="is not an amount"):
        money(bad)
