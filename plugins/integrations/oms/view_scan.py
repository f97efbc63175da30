"""Reading a TrackVia view sorted by `Updated` page by page, losing no record to edits made between pages.

TrackVia has no modified-since filter (vendors.md §1.5) and pages with start/max. An edit stamps `Updated`
with TrackVia's now (to the second), so in a view sorted by Updated the record jumps to the end and every
record after its old place slides one place left; a plain `start += max` then skips the record that slid
across the page boundary. `scan_pages` pages by where it stands instead of trusting positions.

Its mark is the greatest `Updated` given and the ids given at that second. A record version is new when it is
later than the mark, or at the mark's second and not among its ids: whatever its id, a record edited within
that second is still to come (records of one second may come in any order). Each next page is read so that it
begins at the last record *before* the mark's second: a page whose first record is before that second proves
that nothing of that second or later lies before it (the view is sorted), so no new version is behind the
page; a page whose first record is at or after that second means records slid left past it: step back
(doubling the step) and read again. When a whole page is one second (a bulk edit), the next page overlaps
its last record instead and trusts TrackVia to keep that second's order between two reads.

Our own edits move records too: the caller says which ones (`edited`), and the next page starts that many
places earlier instead of finding out by stepping back. The first page of a scan from a mark is found the same
way from the view's last page: a run with few changes reads a page or two whatever the table's size.
"""
from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from hooks.trackvia import TrackViaHook

UPDATED = "Updated"
LOWEST = dt.datetime.min.replace(tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class Mark:
    """Where a scan stands: the greatest `Updated` given, and the ids given at that second."""

    updated: dt.datetime
    ids: frozenset[int] = frozenset()

    def passed(self, moment: dt.datetime, record_id: int) -> bool:
        """Whether the version (moment, record_id) was given already, or lies before the scan's start."""
        return moment < self.updated or (moment == self.updated and record_id in self.ids)


class ViewNotSorted(ValueError):
    """The view's pages are not in `Updated` order: the scan would skip records."""


def updated_of(record: dict) -> dt.datetime:
    value = record.get(UPDATED)
    return dt.datetime.fromisoformat(value).astimezone(dt.timezone.utc) if value else LOWEST


def scan_pages(hook: TrackViaHook, view_id: int, after: Mark | None, page_size: int, *, total: int | None = None,
               pages: list[int] | None = None,
               edited: set[int] | None = None) -> Iterator[tuple[list[dict], Mark | None]]:
    """The record versions after `after` (all when None), each once, a page's worth at a time, with the mark
    after them (commit it with what the page's records caused, and resume from it).

    `total` (the view's totalCount) lets the first read start at the last page; `pages` gets one entry (the
    start) per page read, for the caller's count of calls; `edited`: the caller adds the id of each given
    record it edits before asking for the next page (each edit moved a record to the view's end)."""
    if page_size < 2:
        raise ValueError("page_size must be at least 2: each page overlaps its previous page")
    mark = after
    start = max(0, (total or 0) - page_size) if after is not None else 0
    first_step = max(1, page_size // 4)
    step, within_second = first_step, False
    edited = set() if edited is None else edited
    while True:
        page = list(itertools.islice(hook.records(view_id, page_size=page_size, start=start), page_size))
        if pages is not None:
            pages.append(start)
        moments = [updated_of(record) for record in page]
        if any(a > b for a, b in itertools.pairwise(moments)):
            raise ViewNotSorted(f"TrackVia view {view_id} is not sorted by {UPDATED}, ascending: read it through a "
                                "view sorted that way, or records edited during the read are lost")
        if start > 0 and not _anchored(page, moments, mark, within_second):
            start, step = max(0, start - step), step * 2     # records slid left past `start`: step back
            continue
        given = []
        for record, moment in zip(page, moments, strict=True):
            record_id = int(record["id"])
            if mark is not None and mark.passed(moment, record_id):
                continue
            ids = mark.ids if mark is not None and moment == mark.updated else frozenset()
            mark = Mark(moment, ids | {record_id})
            given.append(record)
        ours = len(edited)
        yield given, mark
        if len(page) < page_size:
            return
        moved = len(edited) - ours
        same = sum(1 for moment in moments if mark is not None and moment == mark.updated)
        within_second = same >= len(page) - 1       # no record of the page before the mark's second to begin at
        advance = len(page) - 1 if within_second else len(page) - same - 1
        start, step = max(0, start + advance - moved), first_step


def _anchored(page: list[dict], moments: list[dt.datetime], mark: Mark | None, within_second: bool) -> bool:
    """Whether nothing new can lie before this page: its first record is before the mark's second, or, when
    the last page was one second throughout, a record of that second already given."""
    if not page:
        return False
    if mark is None or moments[0] < mark.updated:
        return True
    return within_second and moments[0] == mark.updated and int(page[0]["id"]) in mark.ids


def scan(hook: TrackViaHook, view_id: int, after: Mark | None, page_size: int, *, total: int | None = None,
         pages: list[int] | None = None, edited: set[int] | None = None) -> Iterator[dict]:
    """`scan_pages`, record by record."""
    for page, _ in scan_pages(hook, view_id, after, page_size, total=total, pages=pages, edited=edited):
        yield from page
