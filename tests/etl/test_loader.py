"""The COPY upsert loader: counts, change detection, duplicate keys, declared tables only."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from etl import loader
from etl.tables import TableDefinitionError, TargetTable

SALES = TargetTable("scratch", "sales", ("txn_id", "occurred_at", "amount", "is_refund", "note"))
T0 = dt.datetime(2026, 5, 1, 9, 30, tzinfo=dt.timezone.utc)


@pytest.fixture(autouse=True)
def sales_table(conn):
    conn.execute("CREATE SCHEMA IF NOT EXISTS scratch")
    conn.execute("DROP TABLE IF EXISTS scratch.sales")
    conn.execute(
        "CREATE TABLE scratch.sales (txn_id text PRIMARY KEY, occurred_at timestamptz NOT NULL, "
        "amount numeric(12,2) NOT NULL, is_refund boolean NOT NULL, note text, "
        "loaded_at timestamptz NOT NULL DEFAULT now())"
    )
    conn.commit()


def rows(n, *, amount=Decimal("10.00"), start=0):
    return [(f"S{i:05d}", T0 + dt.timedelta(minutes=i), amount + i, i % 3 == 0, None) for i in range(start, start + n)]


def test_insert_then_no_change_then_update(conn):
    first = loader.upsert(conn, SALES, iter(rows(100)))
    conn.commit()
    assert first.as_dict() == {"staged": 100, "inserted": 100, "updated": 0, "unchanged": 0}

    again = loader.upsert(conn, SALES, iter(rows(100)))
    conn.commit()
    assert again.as_dict() == {"staged": 100, "inserted": 0, "updated": 0, "unchanged": 100}

    changed = rows(100)
    changed[3] = changed[3][:2] + (Decimal("999.99"),) + changed[3][3:]
    changed[7] = changed[7][:4] + ("now with a note",)
    mixed = loader.upsert(conn, SALES, iter(changed + rows(5, start=100)))
    conn.commit()
    assert mixed.as_dict() == {"staged": 105, "inserted": 5, "updated": 2, "unchanged": 98}
    assert conn.execute("SELECT amount FROM scratch.sales WHERE txn_id = 'S00003'").fetchone() == (Decimal("999.99"),)
    assert conn.execute("SELECT count(*) FROM scratch.sales").fetchone() == (105,)


def test_null_to_value_and_back_counts_as_a_change(conn):
    loader.upsert(conn, SALES, rows(1))
    noted = [rows(1)[0][:4] + ("x",)]
    assert loader.upsert(conn, SALES, noted).updated == 1
    assert loader.upsert(conn, SALES, rows(1)).updated == 1
    assert loader.upsert(conn, SALES, rows(1)).unchanged == 1


def test_repeated_key_in_one_batch_keeps_the_last(conn):
    batch = rows(3) + [("S00001", T0, Decimal("1.23"), True, "last one")]
    counts = loader.upsert(conn, SALES, batch)
    assert (counts.staged, counts.inserted) == (4, 3)
    assert conn.execute("SELECT amount, note FROM scratch.sales WHERE txn_id = 'S00001'").fetchone() == (
        Decimal("1.23"), "last one")


def test_empty_input_writes_nothing(conn):
    assert loader.upsert(conn, SALES, iter(())).as_dict() == {"staged": 0, "inserted": 0, "updated": 0, "unchanged": 0}


def test_rows_are_consumed_lazily(conn):
    consumed = []

    def generate():
        for row in rows(1000):
            consumed.append(row[0])
            yield row

    stream = generate()
    assert consumed == []
    assert loader.upsert(conn, SALES, stream).inserted == 1000
    assert len(consumed) == 1000


def test_undeclared_or_mismatched_tables_are_refused(conn):
    with pytest.raises(TableDefinitionError, match="does not exist"):
        loader.upsert(conn, TargetTable("scratch", "nope", ("a",)), [])
    conn.rollback()
    with pytest.raises(TableDefinitionError, match=r"has no column\(s\) \['colour'\]"):
        loader.upsert(conn, TargetTable("scratch", "sales", ("txn_id", "colour")), [])
    conn.rollback()
    with pytest.raises(TableDefinitionError, match="lack primary-key"):
        loader.upsert(conn, TargetTable("scratch", "sales", ("amount",)), [])
    conn.rollback()


@pytest.mark.parametrize("bad", ['sales"; DROP TABLE x; --', "Sales", "1abc", "a b"])
def test_identifiers_must_be_plain(bad):
    with pytest.raises(ValueError, match="lower_snake"):
        TargetTable("scratch", bad, ("a",))
    with pytest.raises(ValueError, match="lower_snake"):
        TargetTable("scratch", "sales", (bad,))


def test_loads_inside_the_callers_transaction(conn):
    loader.upsert(conn, SALES, rows(10))
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM scratch.sales").fetchone() == (0,)


def test_a_row_committed_meanwhile_by_another_transaction_is_updated_not_duplicated(conn, db_url):
    import threading
    import time

    from etl.db import connect

    with connect(db_url) as other:
        other.execute("INSERT INTO scratch.sales (txn_id, occurred_at, amount, is_refund) "
                      "VALUES ('S00002', now(), 1, false)")
        result = {}
        worker = threading.Thread(target=lambda: result.update(counts=loader.upsert(conn, SALES, rows(5))))
        worker.start()
        time.sleep(0.5)  # the upsert now waits on the other transaction's uncommitted key
        other.commit()
        worker.join(timeout=30)
    conn.commit()
    assert result["counts"].as_dict() == {"staged": 5, "inserted": 4, "updated": 1, "unchanged": 0}
    assert conn.execute("SELECT amount FROM scratch.sales WHERE txn_id = 'S00002'").fetchone() == (Decimal("12.00"),)


def test_a_table_of_key_columns_only(conn):
    conn.execute("CREATE TABLE scratch.tags (sale text, tag text, PRIMARY KEY (sale, tag))")
    tags = TargetTable("scratch", "tags", ("sale", "tag"))
    assert loader.upsert(conn, tags, [("S1", "a"), ("S1", "b")]).inserted == 2
    assert loader.upsert(conn, tags, [("S1", "a"), ("S2", "a"), ("S2", "a")]).as_dict() == {
        "staged": 3, "inserted": 1, "updated": 0, "unchanged": 2}


def test_last_row_wins_even_when_it_equals_the_stored_row(conn):
    loader.upsert(conn, SALES, [("S1", T0, Decimal("1.00"), False, "old")])
    counts = loader.upsert(conn, SALES, [("S1", T0, Decimal("1.00"), False, "new"),
                                         ("S1", T0, Decimal("1.00"), False, "old")])
    assert conn.execute("SELECT note FROM scratch.sales WHERE txn_id = 'S1'").fetchone() == ("old",)
    assert counts.as_dict() == {"staged": 2, "inserted": 0, "updated": 0, "unchanged": 2}


def test_enum_columns_load_and_partitioned_tables_are_refused(conn):
    conn.execute("CREATE TYPE scratch.colour AS ENUM ('red', 'green')")
    conn.execute("CREATE TABLE scratch.paint (id int PRIMARY KEY, colour scratch.colour NOT NULL)")
    paint = TargetTable("scratch", "paint", ("id", "colour"))
    assert loader.upsert(conn, paint, [(1, "red"), (2, "green")]).inserted == 2
    conn.execute("CREATE TABLE scratch.parted (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at)")
    with pytest.raises(TableDefinitionError, match="not a plain table"):
        loader.upsert(conn, TargetTable("scratch", "parted", ("id", "at")), [])
    conn.rollback()
