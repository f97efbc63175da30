"""The DAGs under real Airflow: integrity of dags/, and end-to-end runs with dag.test()."""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_every_dag_file_imports_cleanly(dagbag):
    assert DAG_FILES, "no DAG files found"
    assert dagbag.import_errors == {}
    assert {Path(dag.fileloc).name for dag in dagbag.dags.values()} == {path.name for path in DAG_FILES}


def test_every_dag_has_owner_tags_docs_retries_and_alerts(dagbag):
    from notifiers.on_call import OnCallNotifier

    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, dag_id
        assert dag.doc_md and len(dag.doc_md.strip()) > 40, dag_id
        assert isinstance(dag.on_failure_callback, OnCallNotifier) or any(
            isinstance(cb, OnCallNotifier) for cb in (dag.on_failure_callback or [])
        ), dag_id
        for task in dag.tasks:
            where = f"{dag_id}.{task.task_id}"
            assert task.owner not in (None, "", "airflow"), where
            assert task.retries >= 1, where
            assert task.retry_exponential_backoff, where
            assert task.max_retry_delay, where
            callbacks = (task.on_failure_callback if isinstance(task.on_failure_callback, list)
                         else [task.on_failure_callback])
            assert any(isinstance(cb, OnCallNotifier) for cb in callbacks), where


IMPORT_PROBE = """
import importlib.util, json, socket, sys
attempts = []
def refuse(self, address, *args, **kwargs):
    attempts.append(repr(address))
    raise OSError("network access at DAG import time")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
import psycopg
def no_db(*args, **kwargs):
    attempts.append("psycopg.connect")
    raise OSError("database access at DAG import time")
psycopg.connect = no_db
psycopg.Connection.connect = classmethod(lambda cls, *a, **k: no_db())
for path in sys.argv[1:]:
    spec = importlib.util.spec_from_file_location("probe_" + str(abs(hash(path))), path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
print(json.dumps(attempts))
"""


def test_no_dag_file_opens_a_connection_at_import():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)])}
    out = subprocess.run([sys.executable, "-c", IMPORT_PROBE, *map(str, DAG_FILES)], env=env,
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_probe_would_catch_a_connection_at_import(tmp_path):
    bad = tmp_path / "bad_dag.py"
    bad.write_text("import socket\ntry:\n    socket.create_connection(('127.0.0.1', 9))\nexcept OSError:\n    pass\n")
    out = subprocess.run([sys.executable, "-c", IMPORT_PROBE, str(bad)], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) != []


# ---- end-to-end runs -------------------------------------------------------------------------

def _task_states(dag_run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def test_maintenance_dag_closes_abandoned_runs_prunes_and_reports(airflow_db, dagbag, conn):
    conn.execute("TRUNCATE etl.watermarks, etl.quarantine, etl.run_ledger CASCADE")
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=200)
    recent = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    conn.execute(
        "INSERT INTO etl.run_ledger (pipeline, scope, run_id, mode, status, started_at, finished_at) VALUES "
        "('p', 'old', 'r-old', 'incremental', 'success', %(old)s, %(old)s), "
        "('p', 'stuck', 'r-stuck', 'incremental', 'running', %(day)s, NULL), "
        "('p', 'fresh', 'r-fresh', 'incremental', 'success', %(recent)s, %(recent)s)",
        {"old": old, "day": recent - dt.timedelta(days=1), "recent": recent},
    )
    conn.execute("INSERT INTO etl.watermarks (pipeline, scope, cursor_kind, id_value, moved_by_run) "
                 "VALUES ('p', 'fresh', 'id', 5, 'r-fresh')")
    conn.commit()

    run = dagbag.get_dag("integrations_maintenance").test()
    assert str(run.state) == "success", _task_states(run)
    statuses = dict(conn.execute("SELECT run_id, status FROM etl.run_ledger WHERE pipeline = 'p'").fetchall())
    assert statuses == {"r-stuck": "failed", "r-fresh": "success"}  # r-old pruned, r-stuck closed
    maintenance = conn.execute(
        "SELECT scope, status FROM etl.run_ledger WHERE pipeline = 'integrations_maintenance' ORDER BY id").fetchall()
    assert maintenance == [("close_abandoned_runs", "success"), ("prune_ledger", "success")]


def test_lag_report_fails_when_a_pipeline_stopped_succeeding(db_url, conn):
    # The task body itself: a failing task under dag.test() would sit through its real retries.
    from etl.maintenance import WatermarkLagError, report_lag

    conn.execute("TRUNCATE etl.watermarks, etl.quarantine, etl.run_ledger CASCADE")
    conn.execute("INSERT INTO etl.watermarks (pipeline, scope, cursor_kind, id_value, moved_by_run) "
                 "VALUES ('stalled', 'acme', 'id', 1, 'r'), ('healthy', 'acme', 'id', 1, 'r')")
    conn.execute("INSERT INTO etl.run_ledger (pipeline, scope, run_id, mode, status, started_at, finished_at) "
                 "VALUES ('healthy', 'acme', 'r', 'incremental', 'success', now(), now())")
    conn.commit()
    with pytest.raises(WatermarkLagError, match=r"1 pipeline scope\(s\) .* stalled/acme \(never succeeded\)"):
        report_lag(48)
    conn.execute("DELETE FROM etl.watermarks WHERE pipeline = 'stalled'")
    conn.commit()
    assert [r["pipeline"] for r in report_lag(48)] == ["healthy"]


def test_incremental_operator_runs_and_backfills_through_a_dag(airflow_db, conn):
    import synthetic_source as src
    from airflow.dag_processing.dagbag import DagBag

    from etl import watermarks

    conn.execute(src.SCHEMA)
    conn.commit()
    src.seed(conn, 25)
    dag = DagBag(dag_folder=str(ROOT / "tests" / "dag_bundle")).get_dag("synthetic_incremental")

    assert str(dag.test().state) == "success"
    assert conn.execute("SELECT count(*) FROM scratch.events").fetchone() == (25,)
    mark = watermarks.read(conn, src.PIPELINE, "dag")
    assert mark.value == src.T0 + dt.timedelta(minutes=24)

    conn.execute("UPDATE scratch.events SET customer = 'x'")
    conn.commit()
    backfill = {"mode": "backfill", "start": "2026-01-01T00:00:00+00:00", "end": "2026-01-01T00:05:00+00:00"}
    assert str(dag.test(run_conf=backfill).state) == "success"
    assert conn.execute("SELECT count(*) FROM scratch.events WHERE customer <> 'x'").fetchone() == (5,)
    assert watermarks.read(conn, src.PIPELINE, "dag") == mark

    bad = {"mode": "backfill", "start": "yesterday", "end": "2026-01-02T00:00:00+00:00"}
    dag.task_dict["load_events"].retries = 2
    run = dag.test(run_conf=bad)
    assert str(run.state) == "failed"
    [ti] = run.get_task_instances()
    assert (str(ti.state), ti.try_number) == ("failed", 1)          # a bad form: no retry can fix it


def test_watermark_reset_dag_rewinds_with_a_recorded_reason(airflow_db, dagbag, conn):
    from etl import watermarks

    conn.execute("TRUNCATE etl.watermarks, etl.watermark_history")
    conn.commit()
    with conn.transaction():
        watermarks.advance(conn, "qbo_sales", "realm-1", "timestamp",
                           dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc), run_id="r1")
    conf = {"pipeline": "qbo_sales", "scope": "realm-1", "kind": "timestamp",
            "value": "2026-05-01T00:00:00+00:00", "reason": "QBO restored a backup of May"}
    run = dagbag.get_dag("watermark_reset").test(run_conf=conf)
    assert str(run.state) == "success", _task_states(run)
    assert watermarks.read(conn, "qbo_sales", "realm-1").value == dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc)
    assert conn.execute("SELECT action, old_value, reason FROM etl.watermark_history ORDER BY id DESC LIMIT 1"
                        ).fetchone() == ("reset", "2026-06-01T00:00:00+00:00", "QBO restored a backup of May")


def test_watermark_reset_dag_refuses_a_future_value_at_once_and_keeps_the_watermark(airflow_db, dagbag, conn):
    from etl import watermarks

    conn.execute("TRUNCATE etl.watermarks, etl.watermark_history")
    conn.commit()
    current = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)
    with conn.transaction():
        watermarks.advance(conn, "qbo_sales", "realm-1", "timestamp", current, run_id="r1")
    ahead = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=180)).replace(microsecond=0)
    for value in (ahead.isoformat(), "not a date"):
        conf = {"pipeline": "qbo_sales", "scope": "realm-1", "kind": "timestamp", "value": value,
                "reason": "a typo in the year"}
        run = dagbag.get_dag("watermark_reset").test(run_conf=conf)
        assert str(run.state) == "failed", _task_states(run)
        [ti] = run.get_task_instances()
        assert (str(ti.state), ti.try_number) == ("failed", 1)     # AirflowFailException: no retry
    assert watermarks.read(conn, "qbo_sales", "realm-1").value == current
    assert conn.execute("SELECT count(*) FROM etl.watermark_history WHERE action = 'reset'").fetchone() == (0,)


@pytest.mark.parametrize(("conf", "refusal"), [
    ({"pipeline": "qbo_sales", "scope": "realm-1", "kind": "timestamp", "value": "2026-05-01T00:00:00+00:00"},
     "the form needs reason"),
    ({"pipeline": "qbo_sales", "kind": "id", "value": "12", "reason": "typo"}, "the form needs scope"),
])
def test_watermark_reset_refuses_a_missing_field_at_once_with_the_summary_first(airflow_db, conn, caplog, conf,
                                                                                refusal):
    from airflow.dag_processing.dagbag import DagBag

    conn.execute("TRUNCATE etl.watermarks, etl.watermark_history")
    conn.commit()
    # A DAG of its own: an in-process run keeps the values it resolved on the DAG's Params.
    run = DagBag(dag_folder=str(ROOT / "dags")).dags["watermark_reset"].test(run_conf=conf)
    [ti] = run.get_task_instances()
    assert (str(ti.state), ti.try_number) == ("failed", 1)
    summaries = [r.getMessage() for r in caplog.records if r.name == "notifiers.failures"]
    assert len(summaries) == 1 and refusal in summaries[0] and "/runbook.md#bad-input" in summaries[0]
    assert conn.execute("SELECT count(*) FROM etl.watermarks").fetchone() == (0,)


def test_a_stalled_pipeline_fails_the_lag_report_with_its_runbook_section(airflow_db, dagbag, conn, caplog):
    conn.execute("TRUNCATE etl.watermarks, etl.quarantine, etl.run_ledger CASCADE")
    conn.execute("INSERT INTO etl.watermarks (pipeline, scope, cursor_kind, id_value, moved_by_run) "
                 "VALUES ('stalled', 'acme', 'id', 1, 'r')")
    conn.commit()
    dag = dagbag.get_dag("integrations_maintenance")
    dag.task_dict["report_watermark_lag"].retries = 0
    run = dag.test()
    assert str(run.state) == "failed"
    [summary] = [r.getMessage() for r in caplog.records if r.name == "notifiers.failures"]
    assert summary.startswith("[integrations] integrations_maintenance.report_watermark_lag failed")
    assert "What happened: pipeline scopes stopped moving" in summary
    assert "/runbook.md#integrations_maintenance" in summary and "stalled/acme (never succeeded)" in summary


def test_trustfile_provision_runs_one_at_a_time(dagbag):
    """Two runs at once would race on TrustFile's signup; the DAG serialises them (the email lock does too)."""
    assert dagbag.get_dag("trustfile_provision").max_active_runs == 1


# ---- the trigger forms ---------------------------------------------------------------------------

DATE_PARAMS = {("trustfile_backfill", "start"), ("trustfile_backfill", "end")}
CHOICE_PARAMS = {("trustfile_backfill", "mode"), ("trustfile_provision", "host_system"),
                 ("trustfile_provision", "state"), ("watermark_reset", "kind")}


def test_every_param_has_a_title_and_a_description_and_dates_and_choices_their_widgets(dagbag):
    """Issue 10, point 2: raw names without titles; dates as free text; choices typed by hand."""
    seen = set()
    for dag_id, dag in dagbag.dags.items():
        for name in dag.params:
            param = dag.params.get_param(name)
            where = f"{dag_id}.{name}"
            assert param.schema.get("title") and param.description, where
            if (dag_id, name) in DATE_PARAMS:
                assert param.schema.get("format") == "date", where        # the UI's date picker
            if (dag_id, name) in CHOICE_PARAMS:
                assert param.schema.get("enum"), where                      # the UI's drop-down
            seen.add((dag_id, name))
    assert DATE_PARAMS | CHOICE_PARAMS <= seen


def test_no_form_opens_with_this_field_is_required(dagbag):
    """Airflow's API sends a Param whose default fails its own schema as null (SerializedParam.dump), and the
    3.3 form then shows "This field is required" under a non-nullable field before anything is typed: every
    default must validate, and a field that has no sensible default is nullable and checked by the first task."""
    from airflow.serialization.definitions.param import SerializedParam

    for dag_id, dag in dagbag.dags.items():
        for name in dag.params:
            param = dag.params.get_param(name)
            served = SerializedParam(param.value, param.description, **param.schema).dump()
            nullable = "null" in (param.schema.get("type") if isinstance(param.schema.get("type"), list)
                                  else [param.schema.get("type")])
            assert served["value"] not in (None, "") or nullable, \
                f"{dag_id}.{name} opens with 'This field is required'"
