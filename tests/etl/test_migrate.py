"""Migrations: in order, one transaction each, idempotent, checksum-guarded."""
from __future__ import annotations

import shutil

import psycopg
import pytest

from etl import migrate
from etl.db import connect


@pytest.fixture
def migrations_dir(tmp_path):
    target = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, target)
    return target


@pytest.fixture
def fresh(pg_server, empty_db):
    """An autocommit connection to a database emptied before each test."""
    from psycopg import sql

    with connect(empty_db, autocommit=True) as conn:
        schemas = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
                               "AND nspname NOT IN ('information_schema', 'public')").fetchall()
        for (schema,) in schemas:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        yield conn


def test_applies_every_file_once_then_nothing(fresh, migrations_dir):
    applied = migrate.migrate(fresh, migrations_dir)
    assert [m.version for m in applied] == [m.version for m in migrate.discover(migrations_dir)]
    assert migrate.migrate(fresh, migrations_dir) == []
    recorded = fresh.execute("SELECT version, checksum FROM etl.schema_migrations ORDER BY version").fetchall()
    assert recorded == [(m.version, m.checksum) for m in applied]


def test_edited_applied_file_is_refused(fresh, migrations_dir):
    migrate.migrate(fresh, migrations_dir)
    first = sorted(migrations_dir.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- an innocent-looking edit\n")
    with pytest.raises(migrate.MigrationError, match=f"{first.name} was edited after it was applied"):
        migrate.migrate(fresh, migrations_dir)


def test_new_file_is_applied_in_order_and_failure_rolls_back(fresh, migrations_dir):
    migrate.migrate(fresh, migrations_dir)
    (migrations_dir / "9001_scratch.sql").write_text("CREATE SCHEMA scratch; CREATE TABLE scratch.t (id int);")
    (migrations_dir / "9002_broken.sql").write_text("CREATE TABLE scratch.u (id int); SELECT no_such_function();")
    with pytest.raises(migrate.MigrationError, match="9002_broken.sql failed and was rolled back"):
        migrate.migrate(fresh, migrations_dir)
    versions = [v for (v,) in fresh.execute("SELECT version FROM etl.schema_migrations ORDER BY version")]
    assert 9001 in versions and 9002 not in versions
    assert fresh.execute("SELECT to_regclass('scratch.t'), to_regclass('scratch.u')").fetchone() == ("scratch.t", None)


def test_database_newer_than_checkout_is_refused(fresh, migrations_dir):
    (migrations_dir / "9001_scratch.sql").write_text("CREATE SCHEMA scratch;")
    migrate.migrate(fresh, migrations_dir)
    (migrations_dir / "9001_scratch.sql").unlink()
    with pytest.raises(migrate.MigrationError, match=r"has migrations \[9001\] that are not in"):
        migrate.migrate(fresh, migrations_dir)


def test_badly_named_file_is_refused(tmp_path):
    (tmp_path / "1_create.sql").write_text("SELECT 1;")
    with pytest.raises(migrate.MigrationError, match="NNNN_lower_snake.sql"):
        migrate.discover(tmp_path)


def test_needs_autocommit(empty_db):
    with connect(empty_db) as conn, pytest.raises(migrate.MigrationError, match="autocommit"):
        migrate.migrate(conn)


def test_command_line_migrates_a_database_by_url(fresh, empty_db, capsys):
    assert migrate.main(["--url", empty_db]) == 0
    assert "applied" in capsys.readouterr().out
    assert migrate.main(["--url", empty_db]) == 0
    assert "database up to date" in capsys.readouterr().out
    assert fresh.execute("SELECT count(*) FROM etl.schema_migrations").fetchone()[0] >= 1


def test_concurrent_migrators_apply_each_file_once(fresh, empty_db, migrations_dir):
    import threading

    errors = []

    def run():
        try:
            with connect(empty_db, autocommit=True) as conn:
                migrate.migrate(conn, migrations_dir)
        except psycopg.Error as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    counts = fresh.execute("SELECT count(*), count(DISTINCT version) FROM etl.schema_migrations").fetchone()
    assert counts[0] == counts[1] == len(migrate.discover(migrations_dir))
