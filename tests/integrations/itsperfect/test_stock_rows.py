"""The stock record's flattening, on plain data: only the pulled warehouse's sizes, counts as integers, and
a size that cannot be mapped rejected on its own with the field and value named."""
from __future__ import annotations

import pytest

from etl.incremental import Reject
from integrations.itsperfect.stock_rows import COLUMNS, flatten, row_of


def size(barcode="8718190000017", stock="12", available=10, **more) -> dict:
    return {"sizeId": 60, "size": "M", "secondSize": "", "barcode": barcode, "stock": stock,
            "virtualStockReservation": "2", "availableStock": available, **more}


def record(*warehouses) -> dict:
    return {"itemId": 385, "itemNumber": "38248U", "warehouses": list(warehouses)}


def warehouse(wid, *colours) -> dict:
    return {"warehouseId": wid, "warehouse": f"Warehouse {wid}", "colors": list(colours)}


def colour(*sizes, number="35", name="Marine Blue") -> dict:
    return {"colorId": 200, "colorNumber": number, "color": name, "sizes": list(sizes)}


def test_a_size_of_the_pulled_warehouse_becomes_a_row_with_integer_counts():
    sizes = flatten(record(warehouse(1, colour(size()))), 1)
    assert [s.row for s in sizes] == [("8718190000017", "38248U", "35", "Marine Blue", "M", "", 12, 10)]
    assert len(sizes[0].row) == len(COLUMNS)
    assert sizes[0].barcode == "8718190000017" and sizes[0].reason is None


def test_only_the_pulled_warehouse_counts():
    item = record(warehouse(1, colour(size("8718190000017", "5", 5))),
                  warehouse(2, colour(size("8718190000024", "7", 7)), colour(size("8718190000031", "1", 0))))
    assert [s.barcode for s in flatten(item, 2)] == ["8718190000024", "8718190000031"]
    assert [s.barcode for s in flatten(item, 1)] == ["8718190000017"]
    assert flatten(item, 3) == []


def test_numbers_in_the_other_shape_and_negative_stock_are_read():
    row = row_of("38248U", colour(), size(stock=" -3 ", available="4", secondSize=None))
    assert row[5:] == ("", -3, 4)
    assert row_of("38248U", colour(), size(stock=7, available=2.0))[6:] == (7, 2)


@pytest.mark.parametrize(("changes", "named"), [
    ({"stock": "abc"}, "stock is not a whole number: 'abc'"),
    ({"stock": "1.5"}, "stock is not a whole number: '1.5'"),
    ({"stock": None}, "stock is not a whole number: None"),
    ({"availableStock": True}, "availableStock is not a whole number: True"),
    ({"availableStock": 2.5}, "availableStock is not a whole number: 2.5"),
    ({"barcode": ""}, "size without a barcode (barcode='')"),
    ({"barcode": None}, "size without a barcode (barcode=None)"),
])
def test_a_size_that_cannot_be_mapped_is_rejected_naming_the_field_and_value(changes, named):
    with pytest.raises(Reject) as raised:
        row_of("38248U", colour(), size(**changes))
    assert named in str(raised.value)


def test_a_rejected_size_keeps_its_reason_barcode_and_context_and_the_rest_of_the_item_maps():
    sizes = flatten(record(warehouse(1, colour(size("8718190000017", "abc"), size("8718190000024", "3", 3)))), 1)
    bad, good = sizes
    assert bad.row is None and "stock is not a whole number: 'abc'" in bad.reason
    assert bad.barcode == bad.key == "8718190000017"          # still seen upstream: its quantity is kept
    assert bad.source["itemNumber"] == "38248U" and bad.source["colorNumber"] == "35"
    assert good.row is not None and good.reason is None


def test_a_size_without_a_barcode_is_keyed_by_item_colour_and_size():
    (missing,) = flatten(record(warehouse(1, colour(size(barcode=None)))), 1)
    assert missing.barcode is None and missing.key == "38248U/35/M"
    assert "without a barcode" in missing.reason


@pytest.mark.parametrize(("broken", "named"), [
    ({"itemNumber": "38248U", "warehouses": None}, "'warehouses' is not a list"),
    (record(warehouse(1)) | {"warehouses": [{"warehouseId": 1, "colors": "x"}]}, "'colors' is not a list"),
    (record({"warehouseId": 1, "colors": [{"colorNumber": "35", "sizes": {}}]}), "'sizes' is not a list"),
    (record("warehouse 1"), "a warehouses entry is not an object"),
    (["not", "a", "record"], "stock record is not an object"),
])
def test_a_record_not_nested_as_documented_is_rejected_whole(broken, named):
    with pytest.raises(Reject, match=named):
        flatten(broken, 1)
