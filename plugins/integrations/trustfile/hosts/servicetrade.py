"""ServiceTrade invoices -> our TrustFile transactions.

What ServiceTrade documents (its API reference, as transcribed by the logicalproof/servicetrade
client; see docs/integrations/servicetrade.md): `GET /invoice` filters `updatedAfter` ("updated on
or after") and `updatedBefore` ("updated on or before") in unix seconds, sorts by name unless told
otherwise, answers at most 2000 per page; `type` is `invoice`, `vendorbill` or `external`; `status`
is one of ok, internal_review, pending_accounting, processed, paid, sent, failed, void; invoices are
voided, never deleted (the resource has no DELETE). Seen in public client code of the live API:
`totalPrice` and an embedded `customer` on list rows, `location.address` on embedded locations.
Assumed, because no public source shows an invoice body: the list embeds each invoice's `items`
(`totalPrice`, `taxable`) and its location's `address` {street, city, state, postalCode};
`taxAmount` holds the tax; amounts are USD. A wrong assumption does not pass silently: such
invoices fail reconciliation or are quarantined as unreadable.

Mapping rules (pure, no I/O):
- Every invoice that is not a `vendorbill` is a sale; a vendor bill is a subcontractor's bill to
  the business, a purchase, and is neither read nor mapped.
- A negative `totalPrice` is a credit: a refund, sent with its amounts made positive and
  `refund: true` (TrustFile negates them).
- Sales amount: the sum of the items' `totalPrice` (credit lines included). ServiceTrade has no
  shipping or freight item, so shipping and shipping tax are 0; a trip charge is a service sale.
- Tax: `taxAmount`.
- Ship-to: the location's address (field service is taxed where the work is done). Without a state
  or a zip the transaction still goes to TrustFile with `reviewRequired` and a message naming what
  is missing, placed at the company's address (`fallback_address`) until someone reviews it.
- Void: status `voided`, every amount 0, under the same itemId, so TrustFile's upsert drops it;
  its items are not read, so a voided invoice is never held back by what it used to contain.
- Reconciliation: items + tax must equal `totalPrice` to the cent, or `Unreconciled` is raised with
  the difference and the invoice is quarantined.
- Transaction date: `transactionDate` as a UTC date (a US local midnight falls on the same date).
"""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Iterator
from decimal import Decimal
from itertools import chain, islice
from typing import ClassVar

from hooks.servicetrade import PAGE_LIMIT, ServiceTradeHook
from integrations.trustfile.hosts.base import Document
from integrations.trustfile.model import Address, Line, Transaction, Unreconciled, money

log = logging.getLogger(__name__)

ENTITY = "invoice"
PURCHASE_TYPE = "vendorbill"
ZERO = Decimal("0.00")
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
SECOND = dt.timedelta(seconds=1)


def _from_unix(seconds) -> dt.datetime:
    return EPOCH + dt.timedelta(seconds=int(seconds))


def _ceil_seconds(moment: dt.datetime) -> int:
    """The first whole unix second at or after `moment`: ServiceTrade's timestamps are whole seconds."""
    if moment.tzinfo is None:
        raise ValueError("ServiceTrade windows need timezone-aware datetimes")
    seconds, rest = divmod(moment - EPOCH, SECOND)
    return seconds + (1 if rest else 0)


def _required(record: dict, key: str, where: str):
    if record.get(key) is None:
        raise ValueError(f"{where} has no {key!r}")
    return record[key]


def _ship_to(record: dict) -> tuple[Address, str | None]:
    """The location's address, and why it needs a human if TrustFile cannot place it."""
    raw = (record.get("location") or {}).get("address")
    if not raw:
        return Address(), "no location address in ServiceTrade"
    address = Address(line1=raw.get("street") or None, city=raw.get("city") or None,
                      state=raw.get("state") or None, zip=raw.get("postalCode") or None)
    missing = [name for name, value in (("state", address.state), ("zip", address.zip)) if not value]
    return address, f"location address lacks {' and '.join(missing)} in ServiceTrade" if missing else None


def _lines(record: dict, where: str) -> list[Line]:
    items = _required(record, "items", where)
    return [Line(line_no=n, description=item.get("description") or (item.get("libItem") or {}).get("name"),
                 amount=money(_required(item, "totalPrice", f"{where} item {n}")), is_shipping=False,
                 taxable=bool(item.get("taxable")))
            for n, item in enumerate(items, start=1)]


def map_invoice(record: dict, *, account: str, updated_at: dt.datetime,
                fallback_address: Address | None = None) -> Transaction:
    """One ServiceTrade invoice as our transaction; raises Unreconciled when it does not add up."""
    invoice_id = _required(record, "id", "invoice")
    where = f"invoice {invoice_id} ({record.get('invoiceNumber')})"
    if record.get("type") == PURCHASE_TYPE:
        raise ValueError(f"{where} is a vendor bill, a purchase, not a sale")
    voided = record.get("status") == "void"
    if voided:   # what it held no longer matters, nor whether it added up
        kind = "refund" if money(record.get("totalPrice")) < 0 else "sale"
        lines, sales, tax, total = [], ZERO, ZERO, ZERO
    else:
        lines = _lines(record, where)
        sales = sum((line.amount for line in lines), ZERO)
        tax = money(record.get("taxAmount"))
        total = money(_required(record, "totalPrice", where))
        if sales + tax != total:
            raise Unreconciled(f"{where}: items {sales} + tax {tax} = {sales + tax}, but ServiceTrade's totalPrice "
                               f"is {total} (difference {total - sales - tax})")
        kind = "refund" if total < 0 else "sale"
        if kind == "refund":   # TrustFile takes refunds positive and negates them itself
            sales, tax, total = -sales, -tax, -total
            lines = [Line(line.line_no, line.description, -line.amount, line.is_shipping, line.taxable)
                     for line in lines]
    ship_to, review = _ship_to(record)
    if review and fallback_address is not None and fallback_address.complete:
        ship_to, review = fallback_address, f"{review}; placed at the company's address until reviewed"
    customer = record.get("customer") or {}
    return Transaction(
        source_system=ServiceTradeHost.name, source_company=account, source_entity=ENTITY, source_id=str(invoice_id),
        kind=kind, status="voided" if voided else "active",
        transaction_date=_from_unix(_required(record, "transactionDate", where)).date(),
        source_updated_at=updated_at,
        customer_ref=str(customer["id"]) if customer.get("id") is not None else None,
        customer_name=customer.get("name"), ship_to=ship_to, ship_from=None,
        sales_amount=sales, sales_tax=tax, shipping_amount=ZERO, shipping_tax=ZERO, source_total=total,
        currency="USD", review_required=review is not None, review_message=review, lines=tuple(lines),
    )


class ServiceTradeHost:
    """One ServiceTrade account (one Airflow connection) as a TrustFile host system."""

    name: ClassVar[str] = "servicetrade"
    overlap: ClassVar[dt.timedelta] = dt.timedelta(minutes=2)

    def __init__(self, hook: ServiceTradeHook, account: str) -> None:
        self.hook = hook
        self.account = account
        self.warnings: list[str] = []
        self.window_end = dt.datetime.max.replace(tzinfo=dt.timezone.utc)

    @property
    def identifier(self) -> str:
        return self.account

    def documents(self, since: dt.datetime, until: dt.datetime, *, limit: int | None = None,
                  min_end: dt.datetime | None = None) -> Iterator[Document]:
        """Every sales invoice updated in [since, window_end), once, inside one session.

        ServiceTrade pages by page number over a name-sorted list, so a read spanning pages skips a
        row whenever an edit moves another out of (or into) the filter between two pages. Only a
        single-page answer is taken as complete: a window that fills its first page is split in time
        until each part fits in one. Parts come in time order, so past `limit` invoices the window
        ends after the part that reached it.
        """
        self.warnings, self.window_end = [], until
        first, last = _ceil_seconds(since), _ceil_seconds(until) - 1   # updatedBefore is inclusive
        if last < first:
            return
        given: set[int] = set()   # invoice ids only: the records themselves stream through
        fresh, floor = 0, min_end or since   # what the overlap re-reads does not count toward `limit`
        with self.hook.transaction():
            for part_last, rows in self._parts(first, last):
                for record in rows:
                    if record["id"] in given or record.get("type") == PURCHASE_TYPE:
                        continue
                    given.add(record["id"])
                    updated = _from_unix(record["updated"])
                    fresh += updated > floor
                    yield Document(ENTITY, str(record["id"]), updated, record)
                end = _from_unix(part_last + 1)
                if limit is not None and fresh >= limit and part_last < last and end > floor:
                    self.window_end = end
                    return

    def _parts(self, first: int, last: int) -> Iterator[tuple[int, Iterable[dict]]]:
        """[first, last] (unix seconds, inclusive) as consecutive parts in time order, each given as its
        last second and its invoices, read from a one-page answer (one page held)."""
        page = PAGE_LIMIT[ENTITY]
        rows = self.hook.list_invoices(first, last)
        head = list(islice(rows, page))
        extra = next(rows, None)   # asks for page 2 only if page 1 was full
        if extra is None:
            yield last, head
            return
        if first == last:
            self.warnings.append(f"more than {page} invoices were updated in the second "
                                 f"{_from_unix(first).isoformat()}: one edited meanwhile may be missed (reload it)")
            log.warning("more than %d ServiceTrade invoices were updated in the second %s: read page by page; "
                        "if one was edited meanwhile another may be missed: a reload backfill of that second "
                        "recovers it", page, _from_unix(first).isoformat())
            yield last, chain(head, [extra], rows)
            return
        rows.close()
        middle = (first + last) // 2
        yield from self._parts(first, middle)
        yield from self._parts(middle + 1, last)

    def to_transaction(self, document: Document, *, fallback_address: Address | None) -> Transaction:
        return map_invoice(document.record, account=self.account, updated_at=document.updated_at,
                           fallback_address=fallback_address)


def connect(identifier: str | None, credentials: dict) -> ServiceTradeHost:
    """The account's login lives in the Airflow connection the provisioning named (credentials)."""
    return ServiceTradeHost(ServiceTradeHook(credentials["airflow_conn_id"]), account=identifier)
