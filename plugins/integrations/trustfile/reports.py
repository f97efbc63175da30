"""What went wrong, as TrustFile reads it: the errors and bad items of one UTC day, and the recent errors
the extractor's health reports. The sync writes the rows (trustfile.errors, trustfile.bad_items)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal, get_args

import psycopg

from integrations.trustfile.model import start_of

ErrorType = Literal["INTEGRATION", "CONNECTION", "SYSTEM"]
ERROR_TYPES: tuple[str, ...] = get_args(ErrorType)


@dataclass(frozen=True)
class ErrorEntry:
    at: dt.datetime
    type: str
    connection_id: str | None
    message: str


@dataclass(frozen=True)
class BadItem:
    at: dt.datetime
    connection_id: str
    message: str
    friendly_message: str
    payload: dict


def _utc_day(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    return start_of(day), start_of(day + dt.timedelta(days=1))


def errors_on(conn: psycopg.Connection, day: dt.date) -> list[ErrorEntry]:
    """The errors recorded on `day` (UTC), oldest first."""
    rows = conn.execute("SELECT at, type, connection_id, message FROM trustfile.errors "
                        "WHERE at >= %s AND at < %s ORDER BY at, id", _utc_day(day))
    return [ErrorEntry(*row) for row in rows]


def bad_items_on(conn: psycopg.Connection, day: dt.date) -> list[BadItem]:
    """The items quarantined on `day` (UTC), oldest first, each with the payload that was refused."""
    rows = conn.execute("SELECT at, connection_id, message, friendly_message, payload FROM trustfile.bad_items "
                        "WHERE at >= %s AND at < %s ORDER BY at, id", _utc_day(day))
    return [BadItem(*row) for row in rows]


def recent_error_counts(conn: psycopg.Connection, window: dt.timedelta) -> dict[str, int]:
    """Errors per type recorded within `window` of now; types without errors are left out."""
    rows = conn.execute("SELECT type, count(*) FROM trustfile.errors WHERE at > now() - %s GROUP BY type",
                        (window,))
    return dict(rows)
