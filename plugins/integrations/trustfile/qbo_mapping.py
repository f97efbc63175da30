"""QuickBooks Online documents -> our TrustFile transactions. Pure functions: no I/O.

- SalesReceipt and Invoice are sales; RefundReceipt and CreditMemo are refunds (sent with positive
  amounts and `refund: true`; TrustFile negates them).
- Sales amount: item lines (`SalesItemLineDetail`, inside `GroupLineDetail` too) minus discount lines;
  shipping: the lines whose item is QBO's synthetic `SHIPPING_ITEM_ID`. Subtotal and description
  lines carry no money of their own.
- Tax: `TxnTaxDetail.TotalTax`, split between sales and shipping in proportion to their taxable
  amounts (a line is taxable unless its tax code is `NON`); the rounding cent goes to sales tax.
  With `GlobalTaxCalculation = TaxInclusive` the line amounts include that tax, which is taken out.
- Ship-to: `ShipAddr`, else `BillAddr`; without state and zip on either, the transaction still goes
  to TrustFile, with `reviewRequired` and a `reviewMessage` naming what is missing. TrustFile's item
  schema requires a state and zip, so such a transaction carries the company's own address (the
  caller passes it as `fallback_address`, from TrustFile's company record) until someone reviews it.
- Voided documents (QBO zeroes them: TotalAmt 0, "Voided" in PrivateNote) and deleted ones (CDC
  `status: Deleted`) are sent again with every amount 0 under the same itemId: TrustFile has no delete,
  and the upsert replaces what it had, so its totals drop the document.
- Reconciliation: sales + sales tax + shipping + shipping tax must equal `TotalAmt` to the cent, or
  `Unreconciled` is raised with the difference and the document is quarantined.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from integrations.trustfile.model import CENT, Address, Line, Transaction, Unreconciled, money

SOURCE = "qbo"
KINDS = {"SalesReceipt": "sale", "Invoice": "sale", "RefundReceipt": "refund", "CreditMemo": "refund"}
SHIPPING_ITEM_ID = "SHIPPING_ITEM_ID"
ZERO = Decimal("0.00")


def _address(raw: dict | None) -> Address:
    raw = raw or {}
    return Address(line1=raw.get("Line1"), city=raw.get("City"), state=raw.get("CountrySubDivisionCode"),
                   zip=raw.get("PostalCode"))


def _ship_to(record: dict) -> tuple[Address, str | None]:
    """The address TrustFile taxes by, and why it needs a human if it is not good enough."""
    ship, bill = _address(record.get("ShipAddr")), _address(record.get("BillAddr"))
    if ship.complete:
        return ship, None
    if bill.complete:
        return bill, None
    best = ship if (ship.state or ship.zip) else bill
    missing = [name for name, value in (("state", best.state), ("zip", best.zip)) if not value]
    if not record.get("ShipAddr") and not record.get("BillAddr"):
        return best, "no ship-to or bill-to address in QuickBooks"
    return best, f"ship-to address lacks {' and '.join(missing)} in QuickBooks"


def _lines(raw_lines: list[dict]) -> list[Line]:
    lines: list[Line] = []
    for raw in raw_lines or []:
        kind = raw.get("DetailType")
        if kind == "GroupLineDetail":
            lines.extend(_lines((raw.get("GroupLineDetail") or {}).get("Line", [])))
        elif kind == "SalesItemLineDetail":
            detail = raw.get("SalesItemLineDetail") or {}
            lines.append(Line(
                line_no=int(raw.get("LineNum") or len(lines) + 1), description=raw.get("Description"),
                amount=money(raw.get("Amount")),
                is_shipping=(detail.get("ItemRef") or {}).get("value") == SHIPPING_ITEM_ID,
                taxable=(detail.get("TaxCodeRef") or {}).get("value", "TAX") != "NON"))
        elif kind == "DiscountLineDetail":
            detail = raw.get("DiscountLineDetail") or {}
            lines.append(Line(
                line_no=int(raw.get("LineNum") or len(lines) + 1), description=raw.get("Description") or "discount",
                amount=-money(raw.get("Amount")), is_shipping=False,
                taxable=(detail.get("TaxCodeRef") or {}).get("value", "TAX") != "NON"))
        # SubTotalLineDetail, DescriptionOnly: no money of their own
    return lines


def _split_tax(total_tax: Decimal, lines: list[Line]) -> tuple[Decimal, Decimal]:
    taxable_sales = sum((line.amount for line in lines if line.taxable and not line.is_shipping), ZERO)
    taxable_shipping = sum((line.amount for line in lines if line.taxable and line.is_shipping), ZERO)
    base = taxable_sales + taxable_shipping
    if total_tax == 0 or taxable_shipping <= 0 or base <= 0:
        return total_tax, ZERO
    shipping_tax = (total_tax * taxable_shipping / base).quantize(CENT)
    return total_tax - shipping_tax, shipping_tax


def _is_voided(record: dict) -> bool:
    return money(record.get("TotalAmt")) == 0 and "voided" in (record.get("PrivateNote") or "").lower()


def map_transaction(entity: str, record: dict, *, company: str, fallback_address: Address | None = None) -> Transaction:
    """One QBO sales or refund document as our transaction; raises Unreconciled when it does not add up."""
    if entity not in KINDS:
        raise ValueError(f"{entity} is not a sale or refund document (expected one of {sorted(KINDS)})")
    lines = _lines(record.get("Line", []))
    total_tax = money((record.get("TxnTaxDetail") or {}).get("TotalTax"))
    sales_tax, shipping_tax = _split_tax(total_tax, lines)
    sales = sum((line.amount for line in lines if not line.is_shipping), ZERO)
    shipping = sum((line.amount for line in lines if line.is_shipping), ZERO)
    if record.get("GlobalTaxCalculation") == "TaxInclusive":
        sales, shipping = sales - sales_tax, shipping - shipping_tax
    ship_to, review = _ship_to(record)
    if review and fallback_address is not None and fallback_address.complete:
        ship_to, review = fallback_address, f"{review}; placed at the company's address until reviewed"
    currency = (record.get("CurrencyRef") or {}).get("value") or "USD"
    if currency != "USD":
        review = "; ".join(filter(None, [review, f"amounts are in {currency}, not USD"]))
    voided = _is_voided(record)
    if voided:
        sales = sales_tax = shipping = shipping_tax = ZERO
    transaction = Transaction(
        source_system=SOURCE, source_company=company, source_entity=entity, source_id=str(record["Id"]),
        kind=KINDS[entity], status="voided" if voided else "active",
        transaction_date=dt.date.fromisoformat(record["TxnDate"]),
        source_updated_at=dt.datetime.fromisoformat(record["MetaData"]["LastUpdatedTime"]),
        customer_ref=(record.get("CustomerRef") or {}).get("value"),
        customer_name=(record.get("CustomerRef") or {}).get("name"),
        ship_to=ship_to, ship_from=None,
        sales_amount=sales, sales_tax=sales_tax, shipping_amount=shipping, shipping_tax=shipping_tax,
        source_total=money(record.get("TotalAmt")), currency=currency,
        review_required=review is not None, review_message=review, lines=tuple(lines),
    )
    difference = transaction.source_total - transaction.computed_total
    if difference != 0:
        raise Unreconciled(
            f"{entity} {record['Id']}: sales {sales} + sales tax {sales_tax} + shipping {shipping} + shipping tax "
            f"{shipping_tax} = {transaction.computed_total}, but QuickBooks' TotalAmt is {transaction.source_total} "
            f"(difference {difference})"
        )
    return transaction
