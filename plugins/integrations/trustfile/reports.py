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


# The day's end is computed by PostgreSQL (in Python the day after 9999-12-31 overflows), as 24 hours:
# '1 day' would follow the session's time zone across a DST change.
_ON_DAY = "at >= %(start)s AND at < %(start)s + interval '24 hours'"


def errors_on(conn: psycopg.Connection, day: dt.date) -> list[ErrorEntry]:
    """The errors recorded on `day` (UTC), oldest first."""
    rows = conn.execute(f"SELECT at, type, connection_id, message FROM trustfile.errors WHERE {_ON_DAY} "
                        "ORDER BY at, id", {"start": start_of(day)})
    return [ErrorEntry(*row) for row in rows]


def bad_items_on(conn: psycopg.Connection, day: dt.date) -> list[BadItem]:
    """The items quarantined on `day` (UTC), oldest first, each with the payload that was refused."""
    rows = conn.execute("SELECT at, connection_id, message, friendly_message, payload FROM trustfile.bad_items "
                        f"WHERE {_ON_DAY} ORDER BY at, id", {"start": start_of(day)})
    return [BadItem(*row) for row in rows]


def recent_error_counts(conn: psycopg.Connection, window: dt.timedelta) -> dict[str, int]:
    """Errors per type recorded within `window` of now; types without errors are left out."""
    rows = conn.execute("SELECT type, count(*) FROM trustfile.errors WHERE at > now() - %s GROUP BY type",
                        (window,))
    return dict(rows)
