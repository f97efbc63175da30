"""The credential registry: every credential the platform uses, its owner, expiry, last check and users.

Integrations declare their credentials in code (a `Credential` with a `check` that proves it works);
people declare those used outside Airflow in include/credentials.yaml (`load_external`). `register`
mirrors both into etl.credentials (metadata only: a secret never reaches this module's tables), `verify`
runs the checks within each credential's request budget, and `report` headlines the next expiration,
alerts once per threshold (30, 14, 7 and 1 days before an expiry, kept in etl.credential_alerts so a
rerun never repeats one) and raises CredentialsNeedAction for what has expired or fails its check.
Plain Python: every function takes `now`, so tests hold the clock, and the caller sends the alerts.
Each function commits as it goes (a check's result is kept even if a later one crashes the task).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import yaml

from etl.ledger import redact_text
from etl.request_budget import BudgetSpent

log = logging.getLogger(__name__)

UTC = dt.timezone.utc
DAY = dt.timedelta(days=1)
THRESHOLDS = (30, 14, 7, 1)
KINDS = ("airflow_connection", "company_token", "oauth_refresh_token", "external")
EXTERNAL_FILE = Path(__file__).resolve().parents[2] / "include" / "credentials.yaml"
RUNBOOK_PAGE = "credentials.md"
RUNBOOK_SECTIONS = {     # docs/credentials.md's heading for each kind: what to do, and how to rotate
    "airflow_connection": "Airflow connections",
    "company_token": "TrustFile company tokens",
    "oauth_refresh_token": "QuickBooks refresh tokens",
    "external": "Credentials outside Airflow",
}
ERROR_LIMIT = 1000
_EXTERNAL_ID = re.compile(r"[a-z0-9][a-z0-9_.-]*")

Check = Callable[[psycopg.Connection], "dt.datetime | None"]
Runbook = Callable[[str], str]


def runbook_section(kind: str) -> str:
    """Where a kind's runbook is, when the caller has no link to give."""
    return f"docs/{RUNBOOK_PAGE}, section '{RUNBOOK_SECTIONS[kind]}'"


class CheckFailed(Exception):
    """A credential's check found it not working; the text says why, and never holds the secret."""


class CredentialsNeedAction(RuntimeError):
    """Credentials expired or failing their checks; the text lists each with where its runbook is."""


class RotationRefused(ValueError):
    """The credential a rotation names cannot be verified; the text says why and what is valid."""


class UnknownCredential(RotationRefused):
    pass


class NotCheckable(RotationRefused):
    pass


@dataclass(frozen=True)
class Credential:
    """A credential as its integration (or include/credentials.yaml) declares it: metadata, and its check.

    `check(conn)` proves the credential works through the cheapest call its vendor allows and returns
    the expiry it learned (None: nothing new), or raises CheckFailed. `once_a_day`: checked at most once
    per UTC day (QuickBooks' budget) unless a rotation asks. `last_verified_at`: a person's own check of
    an external credential; the registry's checks set it for the others.
    """

    credential_id: str
    integration: str
    kind: str
    name: str
    scope: str | None = None
    owner: str | None = None
    expires_at: dt.datetime | None = None
    used_by: tuple[str, ...] = ()
    notes: str | None = None
    last_verified_at: dt.datetime | None = None
    check: Check | None = field(default=None, compare=False, repr=False)
    once_a_day: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"credential {self.credential_id!r}: kind {self.kind!r} is not one of {KINDS}")
        for moment in (self.expires_at, self.last_verified_at):
            if moment is not None and moment.tzinfo is None:
                raise ValueError(f"credential {self.credential_id!r}: timestamps must be timezone-aware")


@dataclass(frozen=True)
class Checked:
    """One check's outcome; `skipped`: not called (once a day) or refused by the vendor's request budget before
    anything was sent: the previous outcome stands."""

    credential_id: str
    ok: bool
    skipped: bool = False
    error: str | None = None


def _merge(declared: Iterable[Credential]) -> dict[str, Credential]:
    """One entry per id: two integrations using one credential share its row, their users joined."""
    merged: dict[str, Credential] = {}
    for credential in declared:
        first = merged.get(credential.credential_id)
        if first is None:
            merged[credential.credential_id] = credential
        else:
            users = tuple(dict.fromkeys([*first.used_by, *credential.used_by]))
            merged[credential.credential_id] = dataclasses.replace(first, used_by=users)
    return merged


def register(conn: psycopg.Connection, declared: Iterable[Credential]) -> dict:
    """Make etl.credentials hold exactly what is declared: upsert each, delete what nobody declares any more
    (a deleted connection, an entry removed from the file). Checks and alerts already made are kept."""
    merged = _merge(declared)
    rows = [(c.credential_id, c.integration, c.scope, c.name, c.kind, c.owner, c.expires_at, list(c.used_by),
             c.notes, c.last_verified_at) for c in merged.values()]
    with conn.cursor() as cur:
        cur.executemany(
            """
            INSERT INTO etl.credentials AS c (credential_id, integration, scope, name, kind, owner, expires_at,
                                              used_by, notes, last_verified_at)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (credential_id) DO UPDATE SET
                integration = EXCLUDED.integration, scope = EXCLUDED.scope, name = EXCLUDED.name,
                kind = EXCLUDED.kind, owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at,
                used_by = EXCLUDED.used_by, notes = EXCLUDED.notes,
                last_verified_at = COALESCE(EXCLUDED.last_verified_at, c.last_verified_at), updated_at = now()
            WHERE (c.integration, c.scope, c.name, c.kind, c.owner, c.expires_at, c.used_by, c.notes)
                  IS DISTINCT FROM (EXCLUDED.integration, EXCLUDED.scope, EXCLUDED.name, EXCLUDED.kind,
                                    EXCLUDED.owner, EXCLUDED.expires_at, EXCLUDED.used_by, EXCLUDED.notes)
               OR (EXCLUDED.last_verified_at IS NOT NULL
                   AND EXCLUDED.last_verified_at IS DISTINCT FROM c.last_verified_at)
            """, rows)
    removed = [r[0] for r in conn.execute(
        "DELETE FROM etl.credentials WHERE NOT (credential_id = ANY(%s)) RETURNING credential_id", (list(merged),))]
    conn.commit()
    if removed:
        log.info("no longer declared, removed from the registry: %s", ", ".join(sorted(removed)))
    return {"registered": len(merged), "removed": sorted(removed)}


def verify(conn: psycopg.Connection, declared: Iterable[Credential], now: dt.datetime, *,
           force: bool = False) -> list[Checked]:
    """Check every declared credential that has a check, each result committed on its own. A `once_a_day`
    credential already checked today (passed or not) is skipped unless `force` (a person's rotation)."""
    checkable = [c for c in _merge(declared).values() if c.check is not None]
    state = {r[0]: r[1:] for r in conn.execute(
        "SELECT credential_id, last_checked_at, last_verify_error FROM etl.credentials "
        "WHERE credential_id = ANY(%s)", ([c.credential_id for c in checkable],))}
    conn.commit()
    results = []
    for credential in checkable:
        last_checked, last_error = state.get(credential.credential_id, (None, None))
        if (credential.once_a_day and not force and last_checked is not None
                and last_checked.astimezone(UTC).date() == now.astimezone(UTC).date()):
            log.info("%s: already checked at %s today (at most once a day); not called again",
                     credential.credential_id, _moment(last_checked))
            results.append(Checked(credential.credential_id, last_error is None, skipped=True, error=last_error))
            continue
        results.append(_check(conn, credential, now))
    return results


def _check(conn: psycopg.Connection, credential: Credential, now: dt.datetime) -> Checked:
    try:
        learned = credential.check(conn)
    except BudgetSpent as exc:         # the vendor's budget is spent for now: not a verdict on the credential
        conn.rollback()
        log.info("%s (%s): not checked now, %s; its previous outcome stands", credential.name,
                 credential.credential_id, exc)
        last_error = conn.execute("SELECT last_verify_error FROM etl.credentials WHERE credential_id = %s",
                                  (credential.credential_id,)).fetchone()
        conn.commit()
        error = last_error[0] if last_error else None
        return Checked(credential.credential_id, error is None, skipped=True, error=error)
    except CheckFailed as exc:
        conn.rollback()
        error = redact_text(str(exc))[:ERROR_LIMIT]
        conn.execute("UPDATE etl.credentials SET last_checked_at = %s, last_verify_error = %s, updated_at = now() "
                     "WHERE credential_id = %s", (now, error, credential.credential_id))
        conn.commit()
        log.warning("%s (%s) failed its check: %s", credential.name, credential.credential_id, error)
        return Checked(credential.credential_id, False, error=error)
    conn.execute("UPDATE etl.credentials SET last_checked_at = %s, last_verified_at = %s, last_verify_error = NULL, "
                 "expires_at = COALESCE(%s, expires_at), updated_at = now() WHERE credential_id = %s",
                 (now, now, learned, credential.credential_id))
    conn.commit()
    log.info("%s (%s) works", credential.name, credential.credential_id)
    return Checked(credential.credential_id, True)


def select(declared: Iterable[Credential], credential_id: str) -> Credential:
    """The declared, checkable credential a rotation names; otherwise RotationRefused saying what is valid."""
    merged = _merge(declared)
    wanted = (credential_id or "").strip()
    found = merged.get(wanted)
    if found is None:
        close = difflib.get_close_matches(wanted, list(merged), n=5, cutoff=0.6)
        listed = ", ".join(repr(i) for i in (close or sorted(merged)[:20]))
        raise UnknownCredential(f"no credential {wanted!r} is declared; "
                                f"{'did you mean' if close else 'valid ids include'} {listed} "
                                f"({len(merged)} in all: SELECT credential_id, name FROM etl.credentials)")
    if found.check is None:
        raise NotCheckable(f"{found.name} ({found.credential_id}) is used outside Airflow and cannot be checked from "
                           "here: once it is rotated where it is used, set its expires and last_verified in "
                           "include/credentials.yaml")
    return found


def registered(conn: psycopg.Connection, credential_id: str) -> dict | None:
    """What the registry holds about one credential, as plain values (for a task's log and XCom)."""
    keys = ("credential_id", "name", "owner", "scope", "expires_at", "last_verified_at", "last_verify_error")
    row = conn.execute(f"SELECT {', '.join(keys)} FROM etl.credentials WHERE credential_id = %s",
                       (credential_id,)).fetchone()
    conn.commit()
    if row is None:
        return None
    return {key: value.isoformat() if isinstance(value, dt.datetime) else value
            for key, value in zip(keys, row, strict=True)}


def report(conn: psycopg.Connection, now: dt.datetime, send: Callable[[str], None],
           runbook: Runbook = runbook_section) -> dict:
    """Log the next expiration, send the alerts that are due, and raise CredentialsNeedAction for every
    credential that has expired or failed its last check (`runbook(kind)`: where each says what to do)."""
    headline = next_expiration(conn, now)
    log.info(headline)
    alerted = send_alerts(conn, now, send, runbook)
    trouble = needing_action(conn, now, runbook)
    if trouble:
        raise CredentialsNeedAction(f"{len(trouble)} credential(s) need action: " + "; ".join(trouble))
    return {"headline": headline, "alerted": alerted}


def next_expiration(conn: psycopg.Connection, now: dt.datetime) -> str:
    total, unknown = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE expires_at IS NULL) FROM etl.credentials").fetchone()
    row = conn.execute("SELECT credential_id, name, owner, expires_at FROM etl.credentials "
                       "WHERE expires_at IS NOT NULL ORDER BY expires_at, credential_id LIMIT 1").fetchone()
    conn.commit()
    counts = f"{total} credentials tracked, {unknown} without a known expiry"
    if row is None:
        return f"Next expiration: none known; {counts}"
    credential_id, name, owner, expires_at = row
    return (f"Next expiration: {name} ({credential_id}, owner {owner or 'unknown'}) on {_moment(expires_at)}, "
            f"{_until(expires_at - now)}; {counts}")


def send_alerts(conn: psycopg.Connection, now: dt.datetime, send: Callable[[str], None],
                runbook: Runbook = runbook_section) -> list[str]:
    """One alert per credential that crossed a threshold not yet alerted for its current expiry. A credential
    first seen past several thresholds gets one alert, and all of them are recorded. The alert rows are
    committed after `send`: a crash in between repeats an alert rather than losing it, and a concurrent run
    waits on those rows, then finds them."""
    rows = conn.execute(
        """
        SELECT c.credential_id, c.name, c.kind, c.owner, c.expires_at, c.used_by,
               array(SELECT a.days_before FROM etl.credential_alerts a
                      WHERE a.credential_id = c.credential_id AND a.expires_at = c.expires_at)
          FROM etl.credentials c WHERE c.expires_at > %s AND c.expires_at <= %s
         ORDER BY c.expires_at, c.credential_id
        """, (now, now + max(THRESHOLDS) * DAY)).fetchall()
    conn.commit()
    alerted = []
    for credential_id, name, kind, owner, expires_at, used_by, sent in rows:
        due = [days for days in THRESHOLDS if expires_at - now <= days * DAY and days not in sent]
        if not due:
            continue
        inserted = conn.execute(
            "INSERT INTO etl.credential_alerts (credential_id, expires_at, days_before, alerted_at) "
            "SELECT %s, %s, d, %s FROM unnest(%s::integer[]) AS d ON CONFLICT DO NOTHING RETURNING days_before",
            (credential_id, expires_at, now, due)).fetchall()
        if inserted:
            send(f"[integrations] credential {name} ({credential_id}, owner {owner or 'unknown'}) expires on "
                 f"{_moment(expires_at)}, {_until(expires_at - now)}; used by: {', '.join(used_by) or 'not recorded'}."
                 f" Rotate it before then: {runbook(kind)}")
            alerted.append(credential_id)
        conn.commit()
    return alerted


def needing_action(conn: psycopg.Connection, now: dt.datetime, runbook: Runbook = runbook_section) -> list[str]:
    rows = conn.execute(
        "SELECT credential_id, name, kind, expires_at, last_checked_at, last_verify_error FROM etl.credentials "
        "WHERE expires_at <= %s OR last_verify_error IS NOT NULL ORDER BY expires_at NULLS LAST, credential_id",
        (now,)).fetchall()
    conn.commit()
    lines = []
    for credential_id, name, kind, expires_at, checked_at, error in rows:
        if expires_at is not None and expires_at <= now:
            lines.append(f"{name} ({credential_id}) expired on {_moment(expires_at)}: rotate it ({runbook(kind)})")
        else:
            lines.append(f"{name} ({credential_id}) failed its check at {_moment(checked_at)}: {error} "
                         f"({runbook(kind)})")
    return lines


def _moment(moment: dt.datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else "an unknown time"


def _until(left: dt.timedelta) -> str:
    if left <= dt.timedelta(0):
        return f"expired {(-left) // DAY} day(s) ago" if -left >= DAY else "expired"
    if left >= DAY:
        days = left // DAY
        return f"in {days} day{'s' if days != 1 else ''}"
    hours = int(left.total_seconds() // 3600)
    return f"in {hours} hour{'s' if hours != 1 else ''}" if hours else "in less than an hour"


# ---- include/credentials.yaml: credentials used outside Airflow, declared by people ----------------------

def load_external(path: Path | str = EXTERNAL_FILE) -> list[Credential]:
    """The file's entries as `external` credentials (id, name, owner, expires, used_by; optional integration,
    notes, last_verified). ValueError naming the file and the entry for anything missing or malformed."""
    document = yaml.safe_load(Path(path).read_text()) or {}
    entries = document.get("credentials") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a top-level 'credentials:' list")
    declared: dict[str, Credential] = {}
    for number, entry in enumerate(entries, start=1):
        credential = _external(entry, number, path)
        if credential.credential_id in declared:
            raise ValueError(f"{path}: credential {entry['id']!r} is declared twice")
        declared[credential.credential_id] = credential
    return list(declared.values())


def _external(entry: object, number: int, path: Path | str) -> Credential:
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: entry {number} is not a mapping")
    key = entry.get("id")
    if not key:
        raise ValueError(f"{path}: entry {number} has no id")
    if not isinstance(key, str) or not _EXTERNAL_ID.fullmatch(key):
        raise ValueError(f"{path}: entry {number}: id {key!r} must be lower case letters, digits, '_', '-' or '.'")
    for required in ("name", "owner", "used_by"):
        if not entry.get(required):
            raise ValueError(f"{path}: credential {key!r} has no {required}")
    if "expires" not in entry:
        raise ValueError(f"{path}: credential {key!r} has no expires (write null when it has none)")
    used_by = entry["used_by"]
    if not isinstance(used_by, list) or not all(isinstance(u, str) and u for u in used_by):
        raise ValueError(f"{path}: credential {key!r}: used_by must be a list of places")
    return Credential(f"external:{key}", str(entry.get("integration") or "platform"), "external", str(entry["name"]),
                      owner=str(entry["owner"]), expires_at=_when(entry["expires"], key, "expires", path),
                      used_by=tuple(used_by), notes=entry.get("notes"),
                      last_verified_at=_when(entry.get("last_verified"), key, "last_verified", path))


def _when(value: object, key: str, name: str, path: Path | str) -> dt.datetime | None:
    """A YAML date (midnight UTC) or timestamp (UTC unless it says otherwise)."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time(), UTC)
    raise ValueError(f"{path}: credential {key!r}: {name} {value!r} is not a date (yyyy-mm-dd)")
