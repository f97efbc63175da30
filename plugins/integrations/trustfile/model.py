"""Our canonical transaction, shaped after TrustFile's item, with money as Decimal.

One `Transaction` per source document (a QBO SalesReceipt, a ServiceTrade invoice, ...). It keeps
the source's identity, so a re-extracted document updates the same row, and turns into exactly one
TrustFile item whose `itemId` is stable across runs.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

CENT = Decimal("0.01")
Kind = Literal["sale", "refund"]
Status = Literal["active", "voided", "deleted"]


def start_of(day: dt.date) -> dt.datetime:
    """Midnight UTC of `day`: how start dates and date windows become timestamps."""
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)


def money(value) -> Decimal:
    """A source amount (float, int, str or Decimal) as Decimal cents, exactly as written."""
    if value is None:
        return Decimal("0.00")
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise ValueError(f"{value!r} is not an amount")
    try:
        amount = Decimal(str(value))
    except ArithmeticError:
        raise ValueError(f"{value!r} is not an amount") from None
    if not amount.is_finite():
        raise ValueError(f"{value!r} is not an amount")
    return amount.quantize(CENT)


def item_id(source_system: str, source_entity: str, source_id: str) -> str:
    """Stable across runs and unique per company: TrustFile upserts on it."""
    return f"{source_system}-{source_entity}-{source_id}"


@dataclass(frozen=True)
class Address:
    line1: str | None = None
    city: str | None = None
    state: str | None = None
    zip: str | None = None

    @property
    def complete(self) -> bool:
        """TrustFile needs at least state and zip to place a transaction."""
        return bool(self.state and self.zip)

    def as_item(self) -> dict:
        return {k: v for k, v in {"line1": self.line1, "city": self.city, "state": self.state,
                                  "zip": self.zip}.items() if v}


@dataclass(frozen=True)
class Line:
    line_no: int
    description: str | None
    amount: Decimal
    is_shipping: bool
    taxable: bool


@dataclass(frozen=True)
class Transaction:
    source_system: str          # "qbo", "servicetrade"
    source_company: str         # QBO realm, ServiceTrade account
    source_entity: str          # "SalesReceipt", "invoice", ...
    source_id: str
    kind: Kind
    status: Status
    transaction_date: dt.date
    source_updated_at: dt.datetime
    customer_ref: str | None
    customer_name: str | None
    ship_to: Address
    ship_from: Address | None
    sales_amount: Decimal
    sales_tax: Decimal
    shipping_amount: Decimal
    shipping_tax: Decimal
    source_total: Decimal
    currency: str
    review_required: bool
    review_message: str | None
    lines: tuple[Line, ...] = field(default=())

    @property
    def item_id(self) -> str:
        return item_id(self.source_system, self.source_entity, self.source_id)

    @property
    def computed_total(self) -> Decimal:
        return self.sales_amount + self.sales_tax + self.shipping_amount + self.shipping_tax

    def as_item(self) -> dict:
        """The TrustFile item. Amounts are sent positive; `refund: true` makes TrustFile negate them."""
        item = {
            "itemId": self.item_id,
            "transactionDate": self.transaction_date.isoformat() + "T00:00:00",
            "shipToAddress": self.ship_to.as_item(),
            "salesAmount": float(self.sales_amount),
            "salesTax": float(self.sales_tax),
            "shippingAmount": float(self.shipping_amount),
            "shippingTax": float(self.shipping_tax),
            "refund": self.kind == "refund",
            "description": f"{self.source_entity} {self.source_id}",
        }
        if self.ship_from is not None and self.ship_from.complete:
            item["shipFromAddress"] = self.ship_from.as_item()
        if self.review_required:
            item["reviewRequired"] = True
            item["reviewMessage"] = self.review_message
        return item


class Unreconciled(ValueError):
    """The parts do not add up to the source total: the transaction is quarantined with the difference."""
