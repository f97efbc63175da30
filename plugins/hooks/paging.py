"""Declared paging: a hook names how its vendor pages and gives a function that fetches one page;
the strategy walks the pages.

Every strategy is a generator over records that holds one page in memory and asks for the next
page only when its caller wants another record, so a caller that stops early (or closes the
generator) costs no further call. `fetch` makes one call and returns a `Page`; it is the hook's
code, so the vendor's quirks (where the total is, how the request is phrased) stay in the hook.

- `PageNumbers`: page 1, 2, ... until the vendor's page count (in the body, as ServiceTrade's
  `totalPages`, or in a header, as ItsPerfect's `X-Pagination-Page-Count`: `header_count`), or a
  short page when it gives none.
- `Offsets`: start/max, until the vendor's record count (TrackVia's `totalCount`) is reached, or a
  short page (QBO's STARTPOSITION/MAXRESULTS).
- `Keyset`: records ordered by a key the vendor filters on with `>=` (QBO's LastUpdatedTime): each
  page restarts at the last key seen, so a record edited during the scan cannot shift the pages.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Page:
    records: Sequence[Any]
    total_pages: int | None = None    # PageNumbers: how many pages the whole list has
    total_count: int | None = None    # Offsets: how many records the whole list has


def header_count(headers: Mapping[str, str], name: str) -> int:
    """An integer count from a response header; ValueError naming the header when it is absent or bad."""
    value = headers.get(name)
    if value is None or not str(value).strip().isdigit():
        raise ValueError(f"the answer has no usable {name} header (got {value!r})")
    return int(value)


@dataclass(frozen=True)
class PageNumbers:
    size: int
    first: int = 1

    def walk(self, fetch: Callable[[int, int], Page]) -> Iterator[Any]:
        """`fetch(page_number, size)` for page `first`, `first + 1`, ..."""
        number = self.first
        while True:
            page = fetch(number, self.size)
            yield from page.records
            fetched = number - self.first + 1
            if page.total_pages is not None:
                if fetched >= page.total_pages:
                    return
            elif len(page.records) < self.size:
                return
            number += 1


@dataclass(frozen=True)
class Offsets:
    size: int
    first: int = 0      # TrackVia counts from 0, QBO's STARTPOSITION from 1

    def walk(self, fetch: Callable[[int, int], Page]) -> Iterator[Any]:
        """`fetch(start, size)` for start `first`, `first + size`, ..."""
        start = self.first
        while True:
            page = fetch(start, self.size)
            yield from page.records
            start += len(page.records)
            if not page.records or len(page.records) < self.size:
                return
            if page.total_count is not None and start - self.first >= page.total_count:
                return


@dataclass(frozen=True)
class Keyset:
    """`key_of` gives a record's ordering key, `id_of` its identity (to skip what a restart repeats)."""

    size: int
    key_of: Callable[[Any], Any]
    id_of: Callable[[Any], Hashable]
    first_offset: int = 1

    def walk(self, fetch: Callable[[Any, int, int], Page], start: Any) -> Iterator[Any]:
        """`fetch(key, offset, size)`: records with key >= `key`, in key order, from position `offset`.

        The vendor's filter has no "after this id", so each page restarts at the last key seen and
        skips the records already given at it. When a page's worth of records or more share that key,
        a restart would return only those: the next query skips them by offset instead (the number
        given at that key, whichever query gave them), which assumes the vendor orders equal keys the
        same way in both queries. Each record is given once.
        """
        key, seen_at_key, offset = start, set(), self.first_offset
        while True:
            page = fetch(key, offset, self.size)
            for record in page.records:
                record_key, record_id = self.key_of(record), self.id_of(record)
                if record_key == key and record_id in seen_at_key:
                    continue
                if record_key != key:
                    key, seen_at_key = record_key, set()
                seen_at_key.add(record_id)
                yield record
            if len(page.records) < self.size:
                return
            offset = self.first_offset + (len(seen_at_key) if len(seen_at_key) >= self.size else 0)
