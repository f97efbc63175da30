"""The hourly safety net: jobs and invoices changed at ServiceTrade since the last run, whatever the webhooks said.

ServiceTrade drops a delivery after 3 failed attempts, and our own processing could lose an event, so once an hour
each subscribed account (a row of servicetrade.webhook_accounts) reads every job and invoice updated since its
watermark minus OVERLAP (`updatedAfter` is inclusive; the first run, with no watermark, reads everything) in one
ServiceTrade session, and upserts them through entities.store. Rows, watermark and the ledger row (pipeline
`servicetrade_safety_net`, scope = the account) commit in ONE transaction: a run that fails leaves none of them.

Missed. A row the net inserts or updates is a state we did not hold. If no webhook event of that entity is pending
(the receiver folded no notification of it that the processing has not fetched yet), nothing was going to bring
it: a notification ServiceTrade dropped, or one we lost. The net counts those per entity type (`missed`) and logs
a warning naming up to MISSED_LOGGED of them: the on-call signal. It is computed exactly, before the upsert, with
the loader's own comparison (every column but the key, `record` and `deleted_at` included) against the rows as
they are, locked, at that moment. The first run (no watermark) is the baseline: it loads the account's history,
which no webhook could have announced, so it counts nothing as missed (`baseline: true` in the report).

Never backward. A fetched record whose `updated` is older than the row we hold (the webhook processing fetched a
newer state between our listing and our upsert) is not written (`older_skipped`). The rows compared are locked
FOR UPDATE, so the processing cannot write between the comparison and the upsert.

The watermark: the greatest `updated` seen (ServiceTrade's clock, the one `updatedAfter` compares with), minus
the time the listings took (our monotonic clock measures a duration, so no clock offset enters). The listings
run one after the other: a job changed while the invoices were being listed is not in this run's job listing,
yet an invoice updated later could be the greatest `updated` seen; minus the listings' duration, the watermark
is at or before ServiceTrade's time when the first listing started, which every listing covered. OVERLAP then
absorbs a change committed at ServiceTrade with an `updated` earlier than its visibility. Our own clock ("the
run's start") is not used: a worker clock ahead of ServiceTrade's by more than OVERLAP would skip changes. A
greatest `updated` ahead of the database's clock (a bad record, a clock far ahead) is capped at the database's
time, so one bad timestamp cannot move the window past changes still to come. Nothing seen: the watermark stays.
"""
from __future__ import annotations

import datetime as dt
import logging
import math
import time
from dataclasses import asdict, dataclass, field

import psycopg
from psycopg import sql

from etl import ledger, watermarks
from etl.tables import describe
from hooks.servicetrade import ServiceTradeHook
from integrations.servicetrade import entities

log = logging.getLogger(__name__)

PIPELINE = "servicetrade_safety_net"
OVERLAP = dt.timedelta(minutes=5)
NET_ENTITIES = ("job", "invoice")
MISSED_LOGGED = 20


@dataclass
class EntityCounts:
    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    older_skipped: int = 0      # fetched older than the row we hold: not written
    missed: int = 0             # inserted or updated with no webhook event pending (0 on the baseline run)


@dataclass
class NetReport:
    account: str
    baseline: bool                          # the first run: no watermark, everything read, nothing counted missed
    window_start: str | None                # updatedAfter sent (ISO 8601), None on the baseline
    watermark_before: str | None
    watermark_after: str | None
    entities: dict[str, EntityCounts] = field(default_factory=dict)
    missed_sample: list[tuple[str, int]] = field(default_factory=list)   # (type, id), at most MISSED_LOGGED

    @property
    def missed(self) -> int:
        return sum(c.missed for c in self.entities.values())

    def as_dict(self) -> dict:
        return {"account": self.account, "baseline": self.baseline, "window_start": self.window_start,
                "watermark_before": self.watermark_before, "watermark_after": self.watermark_after,
                "missed": self.missed, "entities": {name: asdict(c) for name, c in self.entities.items()},
                "missed_sample": [[t, i] for t, i in self.missed_sample]}


def accounts(conn: psycopg.Connection) -> list[str]:
    """The accounts whose webhooks we accept: the ones the net watches."""
    with conn.transaction():
        return [a for (a,) in conn.execute("SELECT account FROM servicetrade.webhook_accounts ORDER BY account")]


def run(conn: psycopg.Connection, hook: ServiceTradeHook, account: str, run_id: str, *,
        task_id: str | None = None, try_number: int | None = None) -> NetReport:
    """One account's net run (the connection `conn` must not be inside a transaction)."""
    with watermarks.claimed(conn, PIPELINE, account):
        with conn.transaction():
            before = watermarks.read(conn, PIPELINE, account)
        since = before.value - OVERLAP if before is not None else None
        report = NetReport(account, before is None, since.isoformat() if since else None,
                           watermarks.render(before.value) if before else None, None)
        info = ledger.RunInfo(PIPELINE, account, run_id, "incremental", task_id, try_number,
                              window_start=report.window_start, watermark_before=report.watermark_before)
        with ledger.ledgered_run(conn, info) as ledgered:
            greatest = None
            started = time.monotonic()
            with hook.transaction():
                for name in NET_ENTITIES:
                    records = list(_listing(hook, name, since if since is not None else 0))
                    counts, seen = _load(conn, name, account, records, baseline=report.baseline, report=report)
                    report.entities[name] = counts
                    greatest = seen if greatest is None or (seen is not None and seen > greatest) else greatest
            listed_for = math.ceil(time.monotonic() - started)
            after = _next_watermark(conn, before, greatest, listed_for)
            if after is not None and (before is None or after > before.value):
                watermarks.advance(conn, PIPELINE, account, "timestamp", after, run_id=run_id)
            report.watermark_after = watermarks.render(after) if after is not None else None
            ledgered.watermark_after = report.watermark_after
            for c in report.entities.values():
                ledgered.counts.read += c.read
                ledgered.counts.inserted += c.inserted
                ledgered.counts.updated += c.updated
                ledgered.counts.unchanged += c.unchanged + c.older_skipped
    _tell(report)
    return report


def _listing(hook: ServiceTradeHook, name: str, since):
    return hook.list_jobs(since) if name == "job" else hook.list_invoices(since)


def _next_watermark(conn, before, greatest: dt.datetime | None, listed_for: int) -> dt.datetime | None:
    if greatest is None:
        return before.value if before else None
    now = conn.execute("SELECT statement_timestamp()").fetchone()[0]
    candidate = min(greatest, now) - dt.timedelta(seconds=listed_for)
    return max(candidate, before.value) if before else candidate


def _load(conn: psycopg.Connection, name: str, account: str, records: list[dict], *, baseline: bool,
          report: NetReport) -> tuple[EntityCounts, dt.datetime | None]:
    """Compare, then upsert, one entity type's records; (counts, greatest `updated` seen)."""
    spec = entities.ENTITIES[name]
    counts = EntityCounts(read=len(records))
    if not records:
        return counts, None
    latest: dict[int, dict] = {}
    for record in records:                  # a record listed twice (changed while paging): the last listed wins
        latest[int(record["id"])] = record
    rows = [spec.row(account, r) for r in latest.values()]
    greatest = max(row[len(spec.table.columns) - 3] for row in rows)
    older, changed, missed = _compare(conn, spec, account, rows)
    current = [r for i, r in latest.items() if i not in older]
    upserted = entities.store(conn, name, account, current)
    counts.inserted, counts.updated = upserted.inserted, upserted.updated
    counts.older_skipped = len(older)
    counts.unchanged = counts.read - counts.inserted - counts.updated - counts.older_skipped
    if len(changed) != upserted.inserted + upserted.updated:
        # Rows we hold are locked; a row new to us may still be inserted by the webhook processing meanwhile
        # (its event was pending, so it was not counted missed).
        log.info("%s %s: %d compared as new or changed, %d written (the webhook processing wrote some meanwhile)",
                 account, name, len(changed), upserted.inserted + upserted.updated)
    if not baseline:
        counts.missed = len(missed)
        room = MISSED_LOGGED - len(report.missed_sample)
        report.missed_sample.extend((name, i) for i in missed[:max(room, 0)])
    return counts, greatest


def _compare(conn: psycopg.Connection, spec: entities.Entity, account: str,
             rows: list[tuple]) -> tuple[set[int], list[int], list[int]]:
    """(ids we hold newer than fetched, ids new or changed, of those the ids with no pending event), with the rows
    held locked until the transaction ends."""
    table = spec.table
    conn.execute(sql.SQL("SELECT 1 FROM {} WHERE account = %s AND id = ANY(%s) ORDER BY id FOR UPDATE")
                 .format(table.identifier), (account, [r[1] for r in rows]))
    staging = sql.Identifier(f"_net_{table.name}")
    columns = sql.SQL(", ").join(map(sql.Identifier, table.columns))
    conn.execute(sql.SQL("CREATE TEMPORARY TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA")
                 .format(staging, columns, table.identifier))
    # Staged as the loader stages (binary COPY, the target's types), so the comparison is the loader's own.
    types = list(describe(conn, table).type_oids)       # read before the COPY: the connection is busy during it
    with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(staging, columns)) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)
    values = [c for c in table.columns if c not in ("account", "id")]

    def tuple_of(alias: str) -> sql.Composable:
        return sql.SQL(", ").join(sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(c)) for c in values)

    found = conn.execute(sql.SQL(
        """
        SELECT s.id, t.updated > s.updated AS older,
               t.id IS NULL OR ({t}) IS DISTINCT FROM ({s}) AS changed,
               EXISTS (SELECT 1 FROM servicetrade.webhook_events e
                        WHERE e.account = s.account AND e.entity_type = %s AND e.entity_id = s.id AND e.pending)
                   AS announced
          FROM {staging} s LEFT JOIN {target} t ON t.account = s.account AND t.id = s.id
         ORDER BY s.id
        """).format(t=tuple_of("t"), s=tuple_of("s"), staging=staging, target=table.identifier),
        (spec.name,)).fetchall()
    conn.execute(sql.SQL("DROP TABLE {}").format(staging))
    older = {i for i, is_older, _, _ in found if is_older}
    changed = [i for i, is_older, is_changed, _ in found if is_changed and not is_older]
    missed = [i for i, is_older, is_changed, announced in found if is_changed and not is_older and not announced]
    return older, changed, missed


def _tell(report: NetReport) -> None:
    per = ", ".join(f"{name} read {c.read} inserted {c.inserted} updated {c.updated} unchanged {c.unchanged}"
                    f"{f' older-skipped {c.older_skipped}' if c.older_skipped else ''} missed {c.missed}"
                    for name, c in report.entities.items())
    log.info("ServiceTrade safety net, account %s%s: %s; watermark %s -> %s", report.account,
             " (baseline: first run, nothing counted missed)" if report.baseline else "", per,
             report.watermark_before, report.watermark_after)
    if report.missed:
        named = ", ".join(f"{t} {i}" for t, i in report.missed_sample)
        more = f" (first {len(report.missed_sample)} named)" if report.missed > len(report.missed_sample) else ""
        log.warning("ServiceTrade safety net, account %s: %d row(s) changed at ServiceTrade that no pending webhook "
                    "event announced (notifications dropped by ServiceTrade, or lost by us): %s%s. Check the "
                    "subscription (servicetrade_webhook_subscription) and the receiver's errors; the rows are "
                    "current now.", report.account, report.missed, named, more)
