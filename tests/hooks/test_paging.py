"""The declared paging strategies on plain data: every record once, no call past the last page, and
no call before the caller wants the next page's records."""
from __future__ import annotations

import pytest

from hooks.paging import Keyset, Offsets, Page, PageNumbers, header_count

RECORDS = [{"id": n, "at": n // 3} for n in range(10)]   # three records share each `at`


class Vendor:
    """A list served in pages, recording the calls; `total` says which total the answer carries."""

    def __init__(self, records=RECORDS, total: str | None = None):
        self.records, self.total, self.calls = records, total, []

    def by_number(self, number: int, size: int) -> Page:
        self.calls.append(number)
        chunk = self.records[(number - 1) * size: number * size]
        pages = -(-len(self.records) // size)
        return Page(chunk, total_pages=pages if self.total == "pages" else None)

    def by_offset(self, start: int, size: int) -> Page:
        self.calls.append(start)
        return Page(self.records[start: start + size],
                    total_count=len(self.records) if self.total == "count" else None)

    def by_key(self, key: int, offset: int, size: int) -> Page:
        self.calls.append((key, offset))
        matching = [r for r in self.records if r["at"] >= key]
        return Page(matching[offset - 1: offset - 1 + size])


@pytest.mark.parametrize("total", ["pages", None])
def test_page_numbers_give_every_record_once_and_stop_at_the_last_page(total):
    vendor = Vendor(total=total)
    assert list(PageNumbers(4).walk(vendor.by_number)) == RECORDS
    assert vendor.calls == [1, 2, 3]          # 4 + 4 + 2: the short page (or the count) ends it


def test_a_page_count_stops_a_list_that_fills_its_last_page_without_an_extra_call():
    vendor = Vendor(RECORDS[:8], total="pages")
    assert len(list(PageNumbers(4).walk(vendor.by_number))) == 8
    assert vendor.calls == [1, 2]


def test_the_next_page_is_fetched_only_when_its_records_are_wanted():
    vendor = Vendor(total="pages")
    records = PageNumbers(4).walk(vendor.by_number)
    assert [next(records) for _ in range(4)] == RECORDS[:4] and vendor.calls == [1]
    next(records)
    assert vendor.calls == [1, 2]
    records.close()                           # a caller that stops early costs nothing more
    assert vendor.calls == [1, 2]


@pytest.mark.parametrize("total", ["count", None])
def test_offsets_stop_at_the_total_or_a_short_page(total):
    vendor = Vendor(RECORDS[:8], total=total)
    assert list(Offsets(4).walk(vendor.by_offset)) == RECORDS[:8]
    assert vendor.calls == ([0, 4] if total == "count" else [0, 4, 8])


def test_offsets_can_count_from_one():
    vendor = Vendor([None, *RECORDS])          # position 0 does not exist at a vendor counting from 1
    assert list(Offsets(4, first=1).walk(vendor.by_offset)) == RECORDS


def test_keyset_restarts_at_the_last_key_and_gives_each_record_once():
    vendor = Vendor()
    walked = list(Keyset(4, key_of=lambda r: r["at"], id_of=lambda r: r["id"]).walk(vendor.by_key, 0))
    assert walked == RECORDS
    assert vendor.calls[0] == (0, 1) and all(offset == 1 for _, offset in vendor.calls)


def test_keyset_steps_through_a_key_shared_by_a_whole_page():
    same = [{"id": n, "at": 5} for n in range(9)]
    vendor = Vendor(same)
    walked = list(Keyset(4, key_of=lambda r: r["at"], id_of=lambda r: r["id"]).walk(vendor.by_key, 5))
    assert walked == same
    assert vendor.calls == [(5, 1), (5, 5), (5, 9)]


def test_a_page_count_header_is_read_or_named_when_missing():
    assert header_count({"X-Pagination-Page-Count": "7"}, "X-Pagination-Page-Count") == 7
    with pytest.raises(ValueError, match="X-Pagination-Page-Count"):
        header_count({}, "X-Pagination-Page-Count")


def test_keyset_reads_a_bulk_import_stamped_with_two_seconds_in_full():
    """1000 records share one second and 1500 the next: the third page must start at the 1001st record
    of the second second, not skip 500 of them."""
    bulk = [{"id": n, "at": 1} for n in range(1000)] + [{"id": n, "at": 2} for n in range(1000, 2500)]
    vendor = Vendor(bulk)
    walked = list(Keyset(1000, key_of=lambda r: r["at"], id_of=lambda r: r["id"]).walk(vendor.by_key, 0))
    assert [r["id"] for r in walked] == list(range(2500))
    assert vendor.calls == [(0, 1), (1, 1001), (2, 1001)]


@pytest.mark.parametrize("seed", range(200))
def test_keyset_gives_every_record_once_for_any_distribution_of_equal_keys(seed):
    import random

    rng = random.Random(seed)
    size = rng.choice([1, 2, 3, 5, 10])
    keys = sorted(rng.choice(range(rng.randint(1, 12))) for _ in range(rng.randint(0, 60)))
    records = [{"id": n, "at": key} for n, key in enumerate(keys)]
    vendor = Vendor(records)
    walked = list(Keyset(size, key_of=lambda r: r["at"], id_of=lambda r: r["id"]).walk(vendor.by_key, -1))
    assert [r["id"] for r in walked] == [r["id"] for r in records]
    assert len(vendor.calls) <= len(records) + 1
