"""PPMS order requests against the sandbox's PUMAPI and a real PostgreSQL: each line one createorder, created
exactly once whatever instant a worker dies at; an unanswered line looked up before it is sent again; a refusal
kept with PPMS's text and alerted once; the trigger form checked; the DAG end to end."""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hooks.pumapi import PumapiHook
from hooks.vendor_http import VendorApiError
from integrations.ppms.order_requests import Line, LinesNeedOnCall, RequestConflict, export, record, validate
from notifiers.failures import BadInput
from sandbox import ppms as ppms_sandbox
from tests.kill_points import Locker, until, waiting

ROOT = Path(__file__).resolve().parents[3]
SCOPE = "ppms_default"
LINES = (Line(101, Decimal("1.5")), Line(102, Decimal("2"), comments="grids"), Line(105, Decimal("3")))


@pytest.fixture
def ppms(ppms_connection, sandbox, conn):
    """ppms_default on the sandbox, fast backoff, an empty outbox; an active PPMS login."""
    conn.execute("TRUNCATE ppms.order_requests")
    conn.commit()
    return Facility(conn, sandbox, PumapiHook(SCOPE).call("getusers", active="true")[0])


class Facility:
    def __init__(self, conn, sandbox, login: str):
        self.conn, self.sandbox, self.login = conn, sandbox, login

    def record(self, request_id: str = "r1", lines=LINES) -> int:
        return record(self.conn, SCOPE, request_id, self.login, lines)

    def rows(self, request_id: str = "r1") -> dict[int, tuple]:
        """line -> (state, order_ref, settled_by, attempts, error, held)"""
        self.conn.rollback()
        rows = self.conn.execute("SELECT line_no, state, order_ref, settled_by, attempts, error, held "
                                 "FROM ppms.order_requests WHERE request_id = %s ORDER BY line_no",
                                 (request_id,)).fetchall()
        self.conn.rollback()
        return {row[0]: tuple(row[1:]) for row in rows}

    def created(self) -> list[dict]:
        """The orders createorder made at the sandbox (counted there)."""
        return self.sandbox.state("ppms")["created_orders"]

    def calls(self, action: str) -> int:
        return self.sandbox.state("ppms")["calls"].get(action, 0)


def run_export(db_url: str, request_id: str | None = "r1") -> dict:
    from etl.db import connect

    with connect(db_url) as conn:
        return export(conn, PumapiHook(SCOPE), SCOPE, request_id).as_dict()


def report(**counts) -> dict:
    return {"created": 0, "settled_by_lookup": 0, "resent": 0, "refused": 0, "held": 0, "done_before": 0, **counts}


def without_calls(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "calls"}


def test_three_lines_make_three_orders_and_a_rerun_sends_nothing(ppms, db_url):
    assert ppms.record() == 3
    assert ppms.record() == 0                                   # the same request again: nothing added
    result = run_export(db_url)
    assert without_calls(result) == report(created=3)
    assert result["calls"] == {"getorders": 1, "createorder": 3}
    assert ppms.calls("createorder") == 3
    created = ppms.created()
    assert [(c["params"]["serviceid"], c["params"]["quantity"], c["params"]["login"]) for c in created] == [
        ("101", "1.5", ppms.login), ("102", "2", ppms.login), ("105", "3", ppms.login)]
    assert created[1]["params"]["comments"] == "grids"
    assert ppms.rows() == {n: ("created", int(c["orderref"]), "answer", 1, None, None)
                           for n, c in enumerate(created, start=1)}

    before = ppms.sandbox.state("ppms")["calls"]
    assert without_calls(run_export(db_url)) == report(done_before=3)
    assert ppms.sandbox.state("ppms")["calls"] == before       # not even a getorders
    assert len(ppms.created()) == 3


def test_a_request_id_recorded_with_other_lines_is_refused(ppms):
    ppms.record()
    with pytest.raises(RequestConflict, match="request r1 is recorded already with other lines"):
        ppms.record(lines=LINES[:2])
    assert len(ppms.rows()) == 3


# ---- a worker killed at the two moments that matter --------------------------------------------------------

KILLABLE_EXPORT = """
import sys
from etl import db
from hooks.pumapi import PumapiHook
from integrations.ppms.order_requests import export
with db.connect(sys.argv[1]) as conn:
    export(conn, PumapiHook("ppms_default"), "ppms_default", "r1")
"""


class Gate:
    """A real HTTP hop between the worker and PPMS that holds createorder calls: the test decides whether a
    held call reaches PPMS (and its answer the worker) or never leaves (the worker died before sending it)."""

    def __init__(self, target: str):
        self.target, self.arrived, self.opened = target, threading.Event(), threading.Event()
        self.forward = True
        gate = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if b"action=createorder" in body:
                    gate.arrived.set()
                    gate.opened.wait(60)
                    if not gate.forward:
                        self.close_connection = True
                        return
                request = urllib.request.Request(gate.target + self.path, data=body, method="POST",
                                                 headers={"Content-Type": self.headers["Content-Type"]})
                with urllib.request.urlopen(request, timeout=30) as answer:
                    status, kind, data = answer.status, answer.headers["Content-Type"], answer.read()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass            # the worker is dead

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.opened.set()
        self.server.shutdown()
        self.server.server_close()


def scalar(conn, query: str, *params):
    conn.rollback()
    value = conn.execute(query, params).fetchone()[0]
    conn.rollback()
    return value


def state_of(conn, line_no: int) -> str | None:
    return scalar(conn, "SELECT max(state) FROM ppms.order_requests WHERE request_id = 'r1' AND line_no = %s",
                  line_no)


@pytest.mark.parametrize("moment", ["order created, row not completed", "row committed sending, call not sent"])
def test_a_worker_killed_mid_line_leaves_each_line_created_exactly_once(ppms, sandbox, db_url, moment):
    ppms.record()
    conn, gate, completion = ppms.conn, Gate(sandbox.url), Locker(db_url)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)]),
           "AIRFLOW_CONN_PPMS_DEFAULT": json.dumps(ppms_sandbox.airflow_connection(gate.url))}
    worker = subprocess.Popen([sys.executable, "-c", KILLABLE_EXPORT, db_url], env=env)
    try:
        until(gate.arrived.is_set, "line 1's createorder reaches the gate", worker)
        assert state_of(conn, 1) == "sending"                     # committed before the call
        if moment == "order created, row not completed":
            completion.lock("SELECT 1 FROM ppms.order_requests WHERE request_id = 'r1' AND line_no = 1")
            gate.opened.set()                                     # PPMS makes the order and answers
            until(lambda: len(ppms.created()) == 1 and waiting(conn), "line 1 is created at PPMS and its row "
                  "waits to be completed", worker)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
        gate.forward = False                                      # a held call never reaches PPMS now
        gate.close()
        completion.close()
    until(lambda: scalar(conn, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0,
          "the killed worker's session is gone")
    made = len(ppms.created())
    assert made == (1 if moment == "order created, row not completed" else 0)
    assert {n: r[0] for n, r in ppms.rows().items()} == {1: "sending", 2: "pending", 3: "pending"}

    result = run_export(db_url)
    if moment == "order created, row not completed":
        assert without_calls(result) == report(settled_by_lookup=1, created=2)
        assert result["calls"] == {"getorders": 1, "getorderlines": 1, "createorder": 2}
    else:
        assert without_calls(result) == report(resent=1, created=2)
        assert result["calls"] == {"getorders": 1, "createorder": 3}
    created = ppms.created()
    assert len(created) == 3 and ppms.calls("createorder") == 3    # counted at PPMS: none twice
    assert [c["params"]["serviceid"] for c in created] == ["101", "102", "105"]
    settled = "lookup" if made else "answer"
    assert {n: r[:3] for n, r in ppms.rows().items()} == {
        1: ("created", int(created[0]["orderref"]), settled),
        2: ("created", int(created[1]["orderref"]), "answer"), 3: ("created", int(created[2]["orderref"]), "answer")}
    assert ppms.rows()[1][3] == (1 if made else 2)                 # attempts


# ---- no answer: a dropped answer, an ambiguous lookup -------------------------------------------------------

def export_with_answer_dropped(ppms, db_url, **fault) -> BaseException | None:
    """The export of r1 in a thread, line 1's createorder answer cut off (sandbox `drop_next`, or the fault
    given): the fault is switched on while line 1's row waits to be marked `sending`, after the export read
    getorders."""
    outcome: list[BaseException | None] = []

    def work():
        try:
            run_export(db_url)
            outcome.append(None)
        except BaseException as exc:        # noqa: BLE001 - handed to the test
            outcome.append(exc)

    locker = Locker(db_url)
    locker.lock("SELECT 1 FROM ppms.order_requests WHERE request_id = 'r1' AND line_no = 1")
    thread = threading.Thread(target=work)
    thread.start()
    try:
        until(lambda: waiting(ppms.conn) or outcome, "line 1 waits to be marked sending")
        ppms.sandbox.faults("ppms", **(fault or {"drop_next": 1}))
    finally:
        locker.close()
    thread.join(60)
    ppms.sandbox.faults("ppms")
    return outcome[0]


def test_a_dropped_answer_fails_the_task_and_the_rerun_finds_the_order_without_a_second_call(ppms, db_url):
    ppms.record(lines=LINES[:1])
    failure = export_with_answer_dropped(ppms, db_url)
    assert isinstance(failure, VendorApiError) and not isinstance(failure, LinesNeedOnCall)
    [made] = ppms.created()
    state, ref, _, attempts, error, _ = ppms.rows()[1]
    assert (state, ref, attempts) == ("sending", None, 1) and error

    result = run_export(db_url)
    assert without_calls(result) == report(settled_by_lookup=1)
    assert ppms.calls("createorder") == 1 and len(ppms.created()) == 1
    assert ppms.rows()[1][:3] == ("created", int(made["orderref"]), "lookup")


def test_two_orders_matching_an_unanswered_line_are_not_guessed_at_and_nothing_is_sent(ppms, db_url):
    ppms.record(lines=LINES[:1])
    assert isinstance(export_with_answer_dropped(ppms, db_url), VendorApiError)
    # A person enters the same line for the same user by hand before the retry.
    ppms.sandbox.control("ppms", add_orders=[{"login": ppms.login, "lines": [{"serviceid": 101, "quantity": 1.5}]}])
    refs = sorted(o["orderref"] for o in ppms.sandbox.state("ppms")["orders"])[-2:]

    for _ in range(2):          # every export of the request fails until on-call settles the line
        with pytest.raises(LinesNeedOnCall, match=f"PPMS holds 2 orders that match it equally "
                                                  f"\\(refs {refs[0]}, {refs[1]}\\)") as raised:
            run_export(db_url)
        assert raised.value.on_call_class == "bug" and "set the line's order_ref" in raised.value.next_step
    assert ppms.calls("createorder") == 1
    state, ref, _, _, _, held = ppms.rows()[1]
    assert (state, ref) == ("sending", None) and "refs" in held


def test_an_order_that_may_be_ours_holds_the_line_rather_than_send_a_second(ppms, db_url):
    """The call failed before PPMS acted (a 503), then a person entered an order of the same service for the
    user with another quantity: no order matches exactly, but one may be ours; sending again could double it."""
    ppms.record(lines=LINES[:1])
    assert isinstance(export_with_answer_dropped(ppms, db_url, burst_5xx=1), VendorApiError)
    assert ppms.created() == [] and ppms.rows()[1][0] == "sending"
    ppms.sandbox.control("ppms", add_orders=[{"login": ppms.login, "lines": [{"serviceid": 101, "quantity": 7}]}])
    ref = max(o["orderref"] for o in ppms.sandbox.state("ppms")["orders"])

    with pytest.raises(LinesNeedOnCall, match=f"no order at PPMS matches it exactly, but .* \\(refs {ref}:"):
        run_export(db_url)

    assert ppms.calls("createorder") == 0          # the 503 came before PPMS; nothing was sent again since
    state, order_ref, _, _, _, held = ppms.rows()[1]
    assert (state, order_ref) == ("sending", None) and str(ref) in held


# ---- refusals ---------------------------------------------------------------------------------------------

def test_a_refused_line_keeps_ppms_text_the_others_are_created_and_it_is_alerted_once(ppms, db_url):
    ppms.record(lines=(LINES[0], Line(99, Decimal("1")), LINES[2]))
    with pytest.raises(LinesNeedOnCall) as raised:
        run_export(db_url)
    assert "PPMS refused line 2 of request r1" in str(raised.value)
    assert "invalid service id 99" in str(raised.value)
    assert raised.value.on_call_class == "data_refused" and raised.value.system == "Stratocore PPMS"
    rows = ppms.rows()
    assert rows[2][0] == "refused" and "invalid service id 99" in rows[2][4] and rows[2][1] is None
    assert [rows[n][0] for n in (1, 3)] == ["created", "created"]
    assert ppms.calls("createorder") == 3 and len(ppms.created()) == 2

    assert without_calls(run_export(db_url)) == report(done_before=3)     # alerted once: the rerun succeeds
    assert ppms.calls("createorder") == 3


# ---- the trigger form --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("params", "named"), [
    ({"login": "  ", "lines": [{"service_id": 101, "quantity": 1}]}, "login '  '"),
    ({"login": "x", "lines": [{"service_id": None, "quantity": None, "project_id": None, "comments": None}]},
     "lines[1]: service_id None"),
    ({"login": "x", "lines": [{"service_id": 101, "quantity": 0}]}, "quantity 0 (a number > 0"),
    ({"login": "x", "lines": [{"service_id": 101, "quantity": 1, "price": 3}]}, "unknown field(s) price"),
    ({"login": "x", "lines": [{"service_id": 101, "quantity": 1}], "completed": True},
     "completed true needs accepted true"),
    ({"login": "x", "lines": [{"service_id": 101, "quantity": 1}], "accepted": True, "completed": True,
      "completed_date": "2026-13-01 10:00:00"}, "not a real date"),
    ({"login": "x", "lines": [{"service_id": 101, "quantity": 1}], "completed_date": "2026-11-30 10:00:00"},
     "needs completed true"),
    ({"login": "x", "lines": []}, "give at least one line"),
])
def test_the_form_is_refused_naming_the_bad_value(params, named):
    with pytest.raises(BadInput) as raised:
        validate(params)
    assert named in str(raised.value)


def test_a_valid_form_accepts_json_text_lines_and_keeps_exact_quantities():
    request = validate({"login": " jdoe ", "lines": json.dumps([{"service_id": 101, "quantity": 0.1}]),
                        "accepted": True, "completed": True, "completed_date": "2026-11-30 17:00:00"})
    assert request.login == "jdoe" and request.lines == (Line(101, Decimal("0.1")),)
    assert request.completed_date == dt.datetime(2026, 11, 30, 17, 0)


@pytest.fixture
def create_order_dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags" / "ppms_create_order.py")).dags["ppms_create_order"]


def test_the_dag_refuses_a_schema_violation_at_trigger_and_a_semantic_error_on_the_first_try(
        ppms, create_order_dag):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        create_order_dag.test(run_conf={"login": ppms.login, "lines": [{"service_id": 101, "quantity": -1}]})
    run = create_order_dag.test(run_conf={"login": ppms.login, "lines": [{"service_id": 101, "quantity": 1}],
                                          "completed": True})
    assert str(run.state) == "failed"
    states = {ti.task_id: (str(ti.state), ti.try_number) for ti in run.get_task_instances()}
    assert states["validate"] == ("failed", 1)
    assert states["record"][0] == states["export"][0] == "upstream_failed"
    assert ppms.rows(run.run_id) == {} and ppms.calls("createorder") == 0


def test_the_dag_creates_a_two_line_request_end_to_end(ppms, create_order_dag):
    run = create_order_dag.test(run_conf={
        "login": ppms.login, "accepted": True,
        "lines": [{"service_id": 103, "quantity": 2, "project_id": None, "comments": "two grids"},
                  {"service_id": 104, "quantity": 0.75, "project_id": None, "comments": None}]})
    assert str(run.state) == "success", {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    created = ppms.created()
    assert [(c["params"]["serviceid"], c["params"]["quantity"], c["params"].get("accepted")) for c in created] == [
        ("103", "2", "true"), ("104", "0.75", "true")]
    assert ppms.rows(run.run_id) == {n: ("created", int(c["orderref"]), "answer", 1, None, None)
                                     for n, c in enumerate(created, start=1)}
