"""The Integrations page as server-rendered HTML (Jinja2, autoescaped: names and errors come from data).

Times are UTC, as in Airflow's UI by default; the page refreshes itself every minute.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from console.scopes import Expiry, Overview, ScopeRow

TEMPLATES = Path(__file__).resolve().parent / "templates"
SOON = dt.timedelta(days=14)


def duration(span: dt.timedelta) -> str:
    """3 h 28 min, 2 d 4 h, 12 min, under a minute."""
    minutes = int(span.total_seconds() // 60)
    days, hours, minutes = minutes // 1440, minutes // 60 % 24, minutes % 60
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min" if minutes else "under a minute"


def clock(at: dt.datetime | None, now: dt.datetime) -> str:
    """HH:MM today, else the day too (and the year when it is not this one)."""
    if at is None:
        return "—"
    at, now = at.astimezone(dt.timezone.utc), now.astimezone(dt.timezone.utc)
    if at.date() == now.date():
        return f"{at:%H:%M}"
    return f"{at:%b %d %H:%M}" if at.year == now.year else f"{at:%Y-%m-%d %H:%M}"


def ago(at: dt.datetime | None, now: dt.datetime) -> str:
    return "" if at is None else f"{duration(now - at)} ago" if at <= now else f"in {duration(at - now)}"


def expiry_in(expiry: Expiry, now: dt.datetime) -> str:
    """in 5 days, in 20 h, expired 2 days ago."""
    left = expiry.expires_at - now
    if left < dt.timedelta(0):
        return f"expired {_days_or_hours(-left)} ago"
    return f"in {_days_or_hours(left)}"


def _days_or_hours(span: dt.timedelta) -> str:
    if span >= dt.timedelta(days=2):
        return f"{span.days} days"
    hours = int(span.total_seconds() // 3600)
    return f"{hours} h" if hours else duration(span)


def expiry_class(expiry: Expiry | None, now: dt.datetime) -> str:
    if expiry is None:
        return ""
    return "bad" if expiry.expires_at <= now else "warn" if expiry.expires_at - now <= SOON else ""


def state_text(row: ScopeRow, now: dt.datetime) -> str:
    if row.state == "running":
        return f"running since {clock(row.state_at, now)}"
    if row.state == "deferred":
        return f"deferred until {clock(row.state_at, now)}" if row.state_at else "idle"
    if row.state == "waiting":
        return "waiting"
    return "failed"


def lag_text(row: ScopeRow) -> str:
    if row.lag is None:
        return "—" if row.waiting or row.last_success_at else "no success yet"
    return f"late {duration(row.lag)}" if row.lag else "on time"


def headline(overview: Overview) -> dict[str, int]:
    rows = overview.rows
    return {"scopes": len(rows), "failed": sum(r.state == "failed" for r in rows),
            "late": sum(r.late and r.state != "failed" for r in rows),
            "running": sum(r.state == "running" for r in rows), "waiting": sum(r.state == "waiting" for r in rows)}


_ENVIRONMENT = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True),
                           trim_blocks=True, lstrip_blocks=True)
_ENVIRONMENT.globals.update(clock=clock, ago=ago, expiry_in=expiry_in, expiry_class=expiry_class,
                            state_text=state_text, lag_text=lag_text)


def render(overview: Overview) -> str:
    return _ENVIRONMENT.get_template("page.html").render(overview=overview, now=overview.now,
                                                         counts=headline(overview))


def render_document(title: str, body_html: str, *, depth: int) -> str:
    """A docs page: `body_html` is markdown-it's output (escaped by it); `depth` folders below docs/."""
    return _ENVIRONMENT.get_template("document.html").render(title=title, body=body_html, up="../" * depth)
