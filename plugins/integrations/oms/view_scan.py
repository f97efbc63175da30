"""Reading a TrackVia view sorted by `Updated` page by page, losing no record to edits made between pages.

TrackVia has no modified-since filter (vendors.md §1.5) and pages with start/max. An edit stamps `Updated`
with TrackVia's now, so in a view sorted by Updated the record jumps to the end and every record after its
old place slides one place left; a plain `start += max` then skips the record that slid across the page
boundary. `scan_pages` pages by key instead of trusting positions: K is the greatest (Updated, id) read so
far, and each page is read at `start + max - 1`, overlapping the previous page's last record. A page whose
first record is at or before K proves that nothing after K lies before it (the view is sorted), so its
records after K continue the scan with no gap; a page whose first record is after K means records slid left
past it: step back (doubling the step) and read again. Keys only grow (an edit stamps now), so a record not
yet read is always after K, and a record is given once per version: a record edited after we read it is
met again at the end as its new version.

The first page is found the same way: from the view's last page, stepping back until the first record is at
or before the starting key. A run with few changes reads one page whatever the table's size, and a resumed
run (completed dates, table sweeps) starts from its committed key at the cost of a few pages.
"""
from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator

from hooks.trackvia import TrackViaHook

UPDATED = "Updated"
LOWEST = (dt.datetime.min.replace(tzinfo=dt.timezone.utc), -1)

Key = tuple[dt.datetime, int]


class ViewNotSorted(ValueError):
    """The view's pages are not in (Updated, id) order: the key-anchored scan would skip records."""


def updated_of(record: dict) -> dt.datetime:
    value = record.get(UPDATED)
    return dt.datetime.fromisoformat(value).astimezone(dt.timezone.utc) if value else LOWEST[0]


def key_of(record: dict) -> Key:
    return updated_of(record), int(record["id"])


def scan_pages(hook: TrackViaHook, view_id: int, after: Key | None, page_size: int, *, total: int | None = None,
               pages: list[int] | None = None, edited: set[int] | None = None) -> Iterator[list[dict]]:
    """The record versions with a key greater than `after` (all when None), in key order, each once, a page's
    worth at a time (a list may be empty when a page held only versions already given).

    `total` (the view's totalCount) lets the first read start at the last page; `pages` gets one entry (the
    start) per page read, for the caller's count of calls; `edited`: the caller adds the id of each given
    record it edits before asking for the next page, and the next read starts that many places earlier (each
    of our edits moved a record to the end), instead of finding out by stepping back."""
    if page_size < 2:
        raise ValueError("page_size must be at least 2: each page overlaps its previous page by one record")
    last = after or LOWEST
    start = max(0, (total or 0) - page_size) if after is not None else 0
    first_step = max(1, page_size // 4)
    step = first_step
    edited = set() if edited is None else edited
    while True:
        page = list(itertools.islice(hook.records(view_id, page_size=page_size, start=start), page_size))
        if pages is not None:
            pages.append(start)
        keys = [key_of(record) for record in page]
        if any(a > b for a, b in itertools.pairwise(keys)):
            raise ViewNotSorted(f"TrackVia view {view_id} is not sorted by {UPDATED} (then Record ID), ascending: "
                                "read it through a view sorted that way, or records edited during the read are lost")
        if start > 0 and (not page or keys[0] > last):
            start, step = max(0, start - step), step * 2     # records slid left past `start`: step back
            continue
        given = [record for record, key in zip(page, keys, strict=True) if key > last]
        if given:
            last = key_of(given[-1])
        ours = len(edited)
        yield given
        if len(page) < page_size:
            return
        start, step = max(0, start + page_size - 1 - (len(edited) - ours)), first_step


def scan(hook: TrackViaHook, view_id: int, after: Key | None, page_size: int, *, total: int | None = None,
         pages: list[int] | None = None, edited: set[int] | None = None) -> Iterator[dict]:
    """`scan_pages`, record by record."""
    for page in scan_pages(hook, view_id, after, page_size, total=total, pages=pages, edited=edited):
        yield from page
