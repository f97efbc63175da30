"""The ServiceTrade entities we keep current (servicetrade.jobs, job_items, invoices, locations): one declaration
each, a pure record -> row mapping, and the writes shared by the webhook processing and the hourly safety net.

A row holds a few typed columns for joins and reports, and the whole record as ServiceTrade answered it. Rows go
through the engine's loader (etl.loader.upsert), which rewrites a row only when a value changed, so its counts say
how many entities were new or different from what we held.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from etl.loader import UpsertCounts, upsert
from etl.tables import TargetTable

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _when(seconds) -> dt.datetime | None:
    return None if seconds is None else EPOCH + dt.timedelta(seconds=int(seconds))


def _ref(record: dict, key: str) -> int | None:
    embedded = record.get(key)
    return int(embedded["id"]) if isinstance(embedded, dict) and embedded.get("id") is not None else None


def _number(value) -> Decimal | None:
    return None if value is None else Decimal(str(value))


@dataclass(frozen=True)
class Entity:
    """One ServiceTrade resource (its API name, lower case, as webhooks name it) and the table keeping it."""

    name: str
    table: TargetTable
    columns: Callable[[dict], tuple]     # the typed columns between (account, id) and (updated, record, deleted_at)

    def row(self, account: str, record: dict) -> tuple:
        if record.get("id") is None or record.get("updated") is None:
            raise ValueError(f"{self.name} record without id or updated: {sorted(record)[:12]}")
        return (account, int(record["id"]), *self.columns(record), _when(record["updated"]), Jsonb(record), None)


def _table(name: str, *typed: str) -> TargetTable:
    return TargetTable("servicetrade", name, ("account", "id", *typed, "updated", "record", "deleted_at"))


ENTITIES: dict[str, Entity] = {e.name: e for e in (
    Entity("job", _table("jobs", "number", "status", "job_type", "location_id", "customer_id", "completed_on"),
           lambda r: (r.get("number"), r.get("status"), r.get("type"), _ref(r, "location"), _ref(r, "customer"),
                      _when(r.get("completedOn")))),
    Entity("jobitem", _table("job_items", "job_id", "name", "quantity", "price"),
           lambda r: (_ref(r, "job"), r.get("name"), _number(r.get("quantity")), _number(r.get("price")))),
    Entity("invoice", _table("invoices", "invoice_number", "invoice_type", "status", "job_id", "total_price",
                             "transaction_date"),
           lambda r: (r.get("invoiceNumber"), r.get("type"), r.get("status"), _ref(r, "job"),
                      _number(r.get("totalPrice")), _when(r.get("transactionDate")))),
    Entity("location", _table("locations", "name", "company_id", "status"),
           lambda r: (r.get("name"), _ref(r, "company"), r.get("status"))),
)}


def store(conn: psycopg.Connection, entity: str, account: str, records: Iterable[dict]) -> UpsertCounts:
    """Upsert current states (a record that reappears after a deletion is live again: deleted_at null)."""
    spec = ENTITIES[entity]
    return upsert(conn, spec.table, (spec.row(account, record) for record in records))


def mark_deleted(conn: psycopg.Connection, entity: str, account: str, ids: Iterable[int]) -> int:
    """Mark rows whose entity ServiceTrade no longer has; the row stays for history. Returns rows newly marked."""
    ids = sorted(set(ids))
    if not ids:
        return 0
    table = ENTITIES[entity].table
    return conn.execute(
        sql.SQL("UPDATE {} SET deleted_at = now() WHERE account = %s AND id = ANY(%s) AND deleted_at IS NULL")
        .format(table.identifier), (account, ids)).rowcount
