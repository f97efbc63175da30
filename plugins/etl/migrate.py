"""Apply include/sql/migrations/NNNN_name.sql in order, each in its own transaction.

Why not Alembic or yoyo: both record which migration ran but not what it contained, so an
edited, already-applied file would go unnoticed; Alembic also wants Python revision files
around plain SQL. Our need is small and exact: numbered SQL files, a checksum per applied
file, one transaction each, and a PostgreSQL advisory lock so `make up`, the compose init
service and parallel test sessions never migrate the same database twice at once.

    python -m etl.migrate --url postgresql://...        (or INTEGRATIONS_DATABASE_URL)
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg

from etl.db import connect

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "include" / "sql" / "migrations"
FILE_PATTERN = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Arbitrary constant shared by every migrator of this project (pg_advisory_xact_lock key).
LOCK_KEY = 0x1A7E_6E41


class MigrationError(RuntimeError):
    """A migration cannot be applied safely; the message says which file and what to do."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = FILE_PATTERN.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_lower_snake.sql")
        migrations.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a number in {directory}")
    return migrations


BOOKKEEPING_DDL = """
CREATE SCHEMA IF NOT EXISTS etl;
CREATE TABLE IF NOT EXISTS etl.schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
"""


def migrate(conn: psycopg.Connection, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply pending migrations, one transaction each; return the ones applied.

    `conn` must be in autocommit mode so each file commits on its own. Refuses to run when an
    applied file was edited or when the database knows migrations this checkout lacks.
    """
    if not conn.autocommit:
        raise MigrationError("migrate() needs an autocommit connection: each file is its own transaction")
    pending = discover(directory)
    applied_now: list[Migration] = []
    conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    try:
        conn.execute(BOOKKEEPING_DDL)
        applied = dict(conn.execute("SELECT version, checksum FROM etl.schema_migrations").fetchall())
        missing = sorted(set(applied) - {m.version for m in pending})
        if missing:
            raise MigrationError(
                f"the database has migrations {missing} that are not in {directory}: "
                "this checkout is older than the database; update it before migrating"
            )
        for migration in pending:
            recorded = applied.get(migration.version)
            if recorded is not None:
                if recorded != migration.checksum:
                    raise MigrationError(
                        f"{migration.path.name} was edited after it was applied "
                        f"(recorded sha256 {recorded[:12]}, file now {migration.checksum[:12]}). "
                        "Applied migrations are immutable: restore the file and add a new numbered migration."
                    )
                continue
            log.info("applying migration %s", migration.path.name)
            try:
                with conn.transaction():
                    conn.execute(migration.sql)
                    conn.execute(
                        "INSERT INTO etl.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
            except psycopg.Error as exc:
                raise MigrationError(f"{migration.path.name} failed and was rolled back: {exc}") from exc
            applied_now.append(migration)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    return applied_now


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("INTEGRATIONS_DATABASE_URL"),
                        help="database URL (default: $INTEGRATIONS_DATABASE_URL, else the integrations_db connection)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        with connect(args.url, autocommit=True) as conn:
            applied = migrate(conn)
    except MigrationError as exc:
        print(f"migration refused: {exc}", file=sys.stderr)
        return 1
    except psycopg.OperationalError as exc:
        print(f"cannot reach the integrations database: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    names = f" ({', '.join(m.path.name for m in applied)})" if applied else ", database up to date"
    print(f"migrations: {len(applied)} applied{names}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
