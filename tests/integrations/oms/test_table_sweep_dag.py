"""oms_table_sweep run for real with dag.test() against the sandbox's OMS-Pro: the form's default is a dry run
that sends nothing and reports; a real run changes what the dry run reported and a rerun sends nothing; a bad
form value is refused before anything runs; a rule the app cannot run fails the first task by name."""
from __future__ import annotations

import pytest

from tests.task_logs import task_log

SWEEP = "cancelled_tickets_low_priority"


@pytest.fixture
def trackvia(airflow_db, conn, sandbox, trackvia_connection):
    conn.execute("TRUNCATE oms.sweep_runs, oms.sweep_changes, etl.request_budgets CASCADE")
    conn.commit()
    trackvia_connection()
    return sandbox


def dag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag().get_dag("oms_table_sweep")


def states(dag_run) -> dict[str, tuple[str, int]]:
    return {ti.task_id: (str(ti.state), ti.try_number) for ti in dag_run.get_task_instances()}


def cancelled_not_low(state: dict) -> set[int]:
    return {r["id"] for r in state["records"]["Tickets"] if r["Status"] == "Cancelled" and r["Priority"] != "Low"}


def test_the_default_is_a_dry_run_then_a_real_run_changes_exactly_that_and_a_rerun_nothing(trackvia, conn):
    needy = cancelled_not_low(trackvia.state("trackvia"))
    assert needy

    with task_log() as events:
        dry = dag().test(run_conf={"sweep": SWEEP})

    assert states(dry) == {"check": ("success", 1), "sweep": ("success", 1)}
    assert trackvia.state("trackvia")["put_requests"] == 0
    logged = " ".join(text for _, text in events)
    assert f"{len(needy)} records would change" in logged and "Priority 'Normal' -> 'Low'" in logged
    planned = {rid for (rid,) in conn.execute(
        "SELECT record_id FROM oms.sweep_changes c JOIN oms.sweep_runs r ON r.id = c.run_id WHERE r.dry_run")}
    assert planned == needy

    real = dag().test(run_conf={"sweep": SWEEP, "dry_run": False, "batch_size": 40})

    assert states(real) == {"check": ("success", 1), "sweep": ("success", 1)}
    assert cancelled_not_low(trackvia.state("trackvia")) == set()
    assert {int(rid) for rid in trackvia.state("trackvia")["updates"]["Tickets"]} == planned
    assert dag().test(run_conf={"sweep": SWEEP, "dry_run": False}).state == "success"
    assert trackvia.state("trackvia")["put_requests"] == len(planned)


def test_a_bad_form_value_is_refused_before_anything_runs(trackvia):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="batch_size"):
        dag().test(run_conf={"sweep": SWEEP, "batch_size": 1})
    with pytest.raises(ParamValidationError, match="nope"):
        dag().test(run_conf={"sweep": "nope"})
    assert trackvia.state("trackvia")["calls_this_hour"] == 0


def test_a_sweep_no_longer_declared_fails_the_check_at_once_naming_the_declared_ones(trackvia, tmp_path, monkeypatch):
    from integrations.oms.config import CONFIG_FILE

    sweep_dag = dag()                       # parsed with the sweep declared, as a form opened before the change
    changed = tmp_path / "oms_pro.yaml"
    changed.write_text(CONFIG_FILE.read_text().replace(f"  {SWEEP}:", "  cancelled_tickets_lowest:", 1))
    monkeypatch.setenv("OMS_PRO_CONFIG", str(changed))

    with task_log() as events:
        run = sweep_dag.test(run_conf={"sweep": SWEEP})

    assert states(run) == {"check": ("failed", 1), "sweep": ("upstream_failed", 0)}
    errors = " ".join(text for level, text in events if level == "error")
    assert f"sweep {SWEEP!r} is not declared" in errors and "cancelled_tickets_lowest" in errors
    assert trackvia.state("trackvia")["calls_this_hour"] == 0


def test_a_rule_naming_a_missing_field_fails_the_first_task_by_name(trackvia, tmp_path, monkeypatch):
    from integrations.oms.config import CONFIG_FILE

    broken = tmp_path / "oms_pro.yaml"
    broken.write_text(CONFIG_FILE.read_text().replace("set: {field: Priority, value: Low}",
                                                      "set: {field: Urgency, value: Low}", 1))
    monkeypatch.setenv("OMS_PRO_CONFIG", str(broken))

    with task_log() as events:
        run = dag().test(run_conf={"sweep": SWEEP, "dry_run": False})

    assert states(run)["check"] == ("failed", 1) and states(run)["sweep"][0] == "upstream_failed"
    errors = " ".join(text for level, text in events if level == "error")
    assert "no field 'Urgency'" in errors and "Tickets by Updated" in errors
    assert trackvia.state("trackvia")["put_requests"] == 0
