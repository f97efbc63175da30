"""Target tables declared in code: the loader's allow-list.

A `TargetTable` names a table and the columns a pipeline writes, in row order. The loader
accepts nothing else, so no table or column name ever comes from input data. Types and the
primary key are read from PostgreSQL's catalog (the migrations are their single source of
truth) and checked against the declaration before the first row is sent.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg
from psycopg import sql

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class TableDefinitionError(RuntimeError):
    """The declared table does not match the database (a migration is missing or differs)."""


@dataclass(frozen=True)
class TargetTable:
    schema: str
    name: str
    columns: tuple[str, ...]

    def __post_init__(self) -> None:
        for identifier in (self.schema, self.name, *self.columns):
            if not _IDENTIFIER.match(identifier):
                raise ValueError(f"{identifier!r} is not a lower_snake identifier")
        if len(set(self.columns)) != len(self.columns):
            raise ValueError(f"{self.qualified_name}: a column is declared twice")

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def identifier(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.name)


@dataclass(frozen=True)
class TableShape:
    """What the catalog says about a declared table."""

    table: TargetTable
    type_oids: tuple[int, ...]      # PostgreSQL type of each declared column, in order (domains: their base type)
    primary_key: tuple[str, ...]

    @property
    def value_columns(self) -> tuple[str, ...]:
        return tuple(c for c in self.table.columns if c not in self.primary_key)


def describe(conn: psycopg.Connection, table: TargetTable) -> TableShape:
    rows = conn.execute(
        """
        SELECT a.attname,
               CASE WHEN ty.typtype = 'd' THEN ty.typbasetype
                    WHEN ty.typtype = 'e' THEN 'text'::regtype    -- an enum's binary form is its label
                    ELSE a.atttypid END::int AS type_oid,
               coalesce(a.attnum = ANY (i.indkey), false) AS in_pk,
               c.relkind
          FROM pg_attribute a
          JOIN pg_type ty ON ty.oid = a.atttypid
          JOIN pg_class c ON c.oid = a.attrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
         WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attnum
        """,
        (table.schema, table.name),
    ).fetchall()
    if not rows:
        raise TableDefinitionError(f"table {table.qualified_name} does not exist: are the migrations applied?")
    if rows[0][3] != "r":
        raise TableDefinitionError(
            f"{table.qualified_name} is not a plain table (relkind {rows[0][3]!r}): the loader's counts and "
            "upserts need one; load partitions or views through their own table"
        )
    catalog = {name: (type_oid, in_pk) for name, type_oid, in_pk, _ in rows}
    unknown = [c for c in table.columns if c not in catalog]
    if unknown:
        raise TableDefinitionError(f"{table.qualified_name} has no column(s) {unknown}")
    primary_key = tuple(name for name, (_, in_pk) in catalog.items() if in_pk)
    if not primary_key:
        raise TableDefinitionError(f"{table.qualified_name} has no primary key: an upsert needs one")
    missing_key = [c for c in primary_key if c not in table.columns]
    if missing_key:
        raise TableDefinitionError(f"{table.qualified_name}: declared columns lack primary-key column(s) {missing_key}")
    return TableShape(table, tuple(catalog[c][0] for c in table.columns), primary_key)
