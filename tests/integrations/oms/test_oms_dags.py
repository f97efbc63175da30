"""oms_completed_dates run for real with dag.test() against the sandbox's OMS-Pro: the config checked first,
the dates stamped, a rerun that sends nothing, and a config naming a missing field failing the first task by
name before anything is written."""
from __future__ import annotations

import pytest

from tests.task_logs import task_log


@pytest.fixture
def trackvia(airflow_db, conn, sandbox, trackvia_connection):
    conn.execute("TRUNCATE etl.request_budgets, etl.watermarks, etl.run_ledger CASCADE")
    conn.commit()
    trackvia_connection()
    return sandbox


def run():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag().get_dag("oms_completed_dates").test()


def needing_a_date(state: dict) -> int:
    return sum(1 for table in ("Tickets", "Site Visits") for record in state["records"][table]
               if record["Status"] == "Completed" and not record["Completed Date"])


def test_the_dates_are_stamped_once_and_a_rerun_sends_nothing(trackvia):
    needing = needing_a_date(trackvia.state("trackvia"))
    assert needing > 0

    dag_run = run()

    assert dag_run.state == "success"
    assert sorted((ti.task_id, ti.map_index, str(ti.state)) for ti in dag_run.get_task_instances()) == [
        ("capture", 0, "success"), ("capture", 1, "success"), ("check_config", -1, "success")]
    state = trackvia.state("trackvia")
    assert state["put_requests"] == needing and needing_a_date(state) == 0
    assert run().state == "success"
    assert trackvia.state("trackvia")["put_requests"] == needing


def test_a_config_naming_a_missing_field_fails_the_first_task_by_name_and_writes_nothing(trackvia, tmp_path,
                                                                                        monkeypatch):
    from integrations.oms.config import CONFIG_FILE

    broken = tmp_path / "oms_pro.yaml"
    broken.write_text(CONFIG_FILE.read_text().replace("completed_date: Completed Date",
                                                      "completed_date: Date Completed", 1))
    monkeypatch.setenv("OMS_PRO_CONFIG", str(broken))

    with task_log() as events:
        dag_run = run()

    assert dag_run.state == "failed"
    states = {(ti.task_id, ti.map_index): str(ti.state) for ti in dag_run.get_task_instances()}
    assert states[("check_config", -1)] == "failed" and "success" not in states.values()
    errors = " ".join(text for level, text in events if level == "error")
    assert "Date Completed" in errors and "Tickets by Updated" in errors
    assert trackvia.state("trackvia")["put_requests"] == 0
