"""One ItsPerfect stock record (item -> warehouses -> colors -> sizes) as rows of commerce.location_quantities.

Pure functions on plain data. A size that cannot be mapped is rejected on its own (its reason names the
field and the value), so one bad size does not hold back the rest of its item; a record whose nesting is
not the vendor's is rejected whole.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from etl.incremental import Reject

# A row in this order, without the location (the pull fans one row out to every mapped location).
COLUMNS = ("barcode", "item_number", "colour_number", "colour", "size", "second_size", "quantity",
           "available_quantity")
_WHOLE = re.compile(r"^[+-]?\d+$")


@dataclass(frozen=True)
class Size:
    """One size the pulled warehouse holds: its row in COLUMNS order, or why it has none."""

    barcode: str | None       # None when the size has none; a barcode with a reason still counts as seen
    row: tuple | None
    reason: str | None
    source: dict              # the size with its item and colour, as the quarantine keeps it

    @property
    def key(self) -> str:
        """The quarantine's record key: the barcode, else item / colour / size."""
        if self.barcode:
            return self.barcode
        return "/".join(str(self.source.get(k) or "?") for k in ("itemNumber", "colorNumber", "size"))


def flatten(record: Any, warehouse_id: int) -> list[Size]:
    """Every size `warehouse_id` holds of one stock record; Reject when the record is not nested as documented."""
    if not isinstance(record, Mapping):
        raise Reject(f"stock record is not an object: {type(record).__name__}")
    item_number = record.get("itemNumber")
    warehouses = _list(record, "warehouses", f"item {item_number!r}")
    sizes = []
    for warehouse in warehouses:
        if not isinstance(warehouse, Mapping):
            raise Reject(f"item {item_number!r}: a warehouses entry is not an object: {warehouse!r}")
        if str(warehouse.get("warehouseId")) != str(warehouse_id):
            continue
        for colour in _list(warehouse, "colors", f"item {item_number!r}"):
            if not isinstance(colour, Mapping):
                raise Reject(f"item {item_number!r}: a colors entry is not an object: {colour!r}")
            for size in _list(colour, "sizes", f"item {item_number!r} colour {colour.get('colorNumber')!r}"):
                sizes.append(_size(item_number, colour, size))
    return sizes


def row_of(item_number: Any, colour: Mapping, size: Mapping) -> tuple:
    """One size as a row in COLUMNS order; Reject naming the field and value that cannot be mapped."""
    barcode = _text(size.get("barcode"))
    if not barcode:
        raise Reject(f"size without a barcode (barcode={size.get('barcode')!r})")
    if not _text(item_number):
        raise Reject(f"barcode {barcode}: item without an itemNumber (itemNumber={item_number!r})")
    return (barcode, _text(item_number), _text(colour.get("colorNumber")), _text(colour.get("color")),
            _text(size.get("size")), _text(size.get("secondSize")), _whole(size, "stock", barcode),
            _whole(size, "availableStock", barcode))


def _size(item_number: Any, colour: Mapping, size: Any) -> Size:
    if not isinstance(size, Mapping):
        source = {"itemNumber": item_number, "colorNumber": colour.get("colorNumber"), "size": size}
        return Size(None, None, f"a sizes entry is not an object: {size!r}", source)
    source = {"itemNumber": item_number, **{k: v for k, v in colour.items() if k != "sizes"}, **size}
    barcode = _text(size.get("barcode")) or None
    try:
        return Size(barcode, row_of(item_number, colour, size), None, source)
    except Reject as exc:
        return Size(barcode, None, str(exc), source)


def _list(node: Mapping, key: str, where: str) -> list:
    value = node.get(key)
    if not isinstance(value, list):
        raise Reject(f"{where}: {key!r} is not a list: {value!r}")
    return value


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _whole(size: Mapping, field: str, barcode: str) -> int:
    """A count: the vendor sends `stock` as a string and `availableStock` as a number; either may be negative."""
    value = size.get(field)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _WHOLE.match(value.strip()):
        return int(value.strip())
    raise Reject(f"barcode {barcode}: {field} is not a whole number: {value!r}")


def barcodes_in(record: Any) -> set[str]:
    """Every barcode anywhere in a record, however malformed: a record quarantined whole still lists its
    barcodes, which the pass must not zero at its end (the vendor does hold them)."""
    found: set[str] = set()
    stack = [record]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            barcode = value.get("barcode")
            if isinstance(barcode, str | int) and not isinstance(barcode, bool) and str(barcode).strip():
                found.add(str(barcode).strip())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return found
