"""The scan of a view sorted by Updated against the TrackVia sandbox: a record a person edits within the very
second the scan stands at, whatever its id, is still given (TrackVia stamps to the second and a second's
records come in no promised order); a record given once is not given again."""
from __future__ import annotations

import datetime as dt

import pytest

from integrations.oms import view_scan

PAGE = 20
BURST = 15


@pytest.fixture
def hook(trackvia_hook):
    return trackvia_hook


def test_an_edit_within_the_second_the_scan_stands_at_is_given_whatever_its_id(hook, sandbox):
    view_id, _ = hook.view("Tickets by Updated")
    frozen = sandbox.control("trackvia", freeze_clock=True)["now"]
    burst = list(range(100, 100 + BURST))       # a second's worth of edits: they end the view, ordered by id
    sandbox.control("trackvia", edit=[{"table": "Tickets", "id": rid, "fields": {"Priority": "High"}}
                                      for rid in burst])
    second = dt.datetime.fromisoformat(frozen)
    late = 5                                    # edited once the scan stands inside that second, a lower id

    given: list[tuple[int, str]] = []
    edited_late = False
    for page, mark in view_scan.scan_pages(hook, view_id, None, PAGE):
        given += [(int(r["id"]), r["Updated"]) for r in page]
        if not edited_late and mark.updated == second and 0 < len(mark.ids) < BURST:
            sandbox.control("trackvia", edit=[{"table": "Tickets", "id": late, "fields": {"Priority": "Low"}}])
            edited_late = True

    assert edited_late, "the scan never stood inside the burst's second: the test proves nothing"
    ids = [rid for rid, _ in given]
    assert sorted(ids) == sorted([*range(1, 251), late])      # each record once, `late` as its two versions
    at_second = {rid for rid, updated in given if dt.datetime.fromisoformat(updated) == second}
    assert at_second == set(burst) | {late}     # the late edit, below every id given at that second, is not lost
