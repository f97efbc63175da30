"""Turning the UI's Params form into a load window: clear errors for bad input."""
from __future__ import annotations

import datetime as dt

import pytest

from operators.incremental_load import backfill_params, parse_cursor, window_from_params


def test_incremental_mode_has_no_window():
    assert window_from_params({"mode": "incremental", "start": None, "end": None}, "timestamp") == ("incremental", None)


def test_backfill_window_is_parsed_per_cursor_kind():
    mode, window = window_from_params(
        {"mode": "backfill", "start": "2026-01-01T00:00:00+00:00", "end": "2026-02-01T00:00:00+00:00"}, "timestamp")
    assert mode == "backfill"
    assert window.start == dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert window_from_params({"mode": "backfill", "start": "10", "end": "20"}, "id")[1].end == 20


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"mode": "backfill", "start": None, "end": "2026-01-01T00:00:00+00:00"}, "needs both start and end"),
        ({"mode": "backfill", "start": "2026-01-01", "end": "2026-01-02T00:00:00+00:00"}, "with offset"),
        ({"mode": "backfill", "start": "last week", "end": "2026-01-02T00:00:00+00:00"}, "param start='last week'"),
        ({"mode": "backfill", "start": "2026-02-01T00:00:00+00:00", "end": "2026-01-01T00:00:00+00:00"},
         "window is empty"),
        ({"mode": "replay"}, "use incremental or backfill"),
    ],
)
def test_bad_params_are_explained(params, message):
    with pytest.raises(ValueError, match=message):
        window_from_params(params, "timestamp")


def test_id_cursor_rejects_text():
    with pytest.raises(ValueError, match="an integer id"):
        parse_cursor("id", "abc", field="start")


def test_form_offers_mode_start_end():
    params = backfill_params()
    assert set(params) == {"mode", "start", "end"}
    assert params["mode"].schema["enum"] == ["incremental", "backfill"]


def test_the_form_has_titles_and_refusals_read_as_the_runbook_quotes_them():
    assert all(p.schema.get("title") and p.description for p in backfill_params().values())
    with pytest.raises(ValueError) as refused:
        parse_cursor("timestamp", "last week", field="start")
    assert str(refused.value).startswith("param start='last week' is not an ISO 8601 timestamp with offset, "
                                         "e.g. 2026-01-01T00:00:00+00:00 (")
