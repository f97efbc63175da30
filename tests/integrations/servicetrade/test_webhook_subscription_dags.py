"""servicetrade_webhook_subscription and servicetrade_safety_net run for real with dag.test(), against the sandbox
over HTTP, the receiver served on 127.0.0.1 and a real PostgreSQL: a subscription made, verified, re-enabled and
replaced without the secret reaching a log or an XCom; a bad form refused at once; notifications the sandbox
dropped caught by the next safety-net run."""
from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import pytest
import requests

from hooks.servicetrade import ServiceTradeHook
from integrations.servicetrade.inbox import secret_digest
from sandbox import servicetrade as st

ROOT = Path(__file__).resolve().parents[3]
ACCOUNT = "servicetrade_default"
SUBSCRIBE = "servicetrade_webhook_subscription"
NET = "servicetrade_safety_net"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


@pytest.fixture
def receiver(airflow_db, sandbox, webhook_tables, serve_receiver, monkeypatch):
    """The account's connection on the sandbox, and the receiver's base URL (also SERVICETRADE_WEBHOOK_URL)."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{ACCOUNT.upper()}", json.dumps(
        {"conn_type": "servicetrade", "host": f"{sandbox.url}/servicetrade/api", "login": st.USERNAME,
         "password": st.PASSWORD}))
    monkeypatch.delenv("SERVICETRADE_WEBHOOKS_CONFIG", raising=False)
    webhook_tables.execute("DELETE FROM etl.watermarks WHERE pipeline = 'servicetrade_safety_net'")
    webhook_tables.commit()
    base = serve_receiver()
    monkeypatch.setenv("SERVICETRADE_WEBHOOK_URL", base)
    return base


def subscriptions() -> list[dict]:
    hook = ServiceTradeHook(ACCOUNT)
    with hook.transaction():
        return hook.webhooks()


def states(run) -> dict[str, tuple[str, int]]:
    return {ti.task_id: (str(ti.state), ti.try_number) for ti in run.get_task_instances()}


def ensured(dagbag, **conf) -> dict:
    # Every Param given: dag.test() keeps a run's conf in the DAG's params for the next run.
    run = dagbag.get_dag(SUBSCRIBE).test(run_conf={"account": ACCOUNT, "receiver_url": None, "rotate_secret": False,
                                                   **conf})
    assert states(run) == {"check": ("success", 1), "ensure": ("success", 1)}
    ti = next(t for t in run.get_task_instances() if t.task_id == "ensure")
    return ti.xcom_pull(task_ids="ensure")


def delivered(sandbox, base: str, secret: str) -> int:
    """The status our receiver answers a message posted to `<base>/<account>/<secret>`."""
    body = {"messageId": str(uuid.uuid4()), "timestamp": "1", "data": []}
    return requests.post(f"{base}/{ACCOUNT}/{secret}", json=body, timeout=10).status_code


def test_the_subscription_is_made_verified_re_enabled_and_replaced_and_its_secret_never_shown(
        dagbag, receiver, conn, sandbox, capsys, caplog):
    caplog.set_level(logging.INFO)
    made = ensured(dagbag)
    [subscription] = subscriptions()
    secret = subscription["hookUrl"].rsplit("/", 1)[1]
    assert subscription["hookUrl"] == f"{receiver}/{ACCOUNT}/{secret}" and subscription["enabled"]
    assert made == {"account": ACCOUNT, "action": "subscribed", "subscription_id": subscription["id"],
                    "hook_url_base": f"{receiver}/{ACCOUNT}/", "reason": "no subscription of ours", "deleted": []}
    stored = conn.execute("SELECT secret_sha256, previous_sha256, subscription_id FROM servicetrade.webhook_accounts "
                          "WHERE account = %s", (ACCOUNT,)).fetchone()
    conn.commit()
    assert (bytes(stored[0]), stored[1], stored[2]) == (secret_digest(secret), None, subscription["id"])
    assert delivered(sandbox, receiver, secret) == 200

    posts = lambda: [r for r in sandbox.requests("servicetrade") if r["method"] == "POST"  # noqa: E731
                     and r["path"].endswith("/api/webhook")]
    assert len(posts()) == 1
    assert ensured(dagbag)["action"] == "verified" and len(posts()) == 1

    hook = ServiceTradeHook(ACCOUNT)
    with hook.transaction():
        hook.call("PUT", f"/webhook/{subscription['id']}", json={"enabled": False})
    assert ensured(dagbag)["action"] == "re-enabled"
    assert [(s["id"], s["enabled"]) for s in subscriptions()] == [(subscription["id"], True)] and len(posts()) == 1

    rotated = ensured(dagbag, rotate_secret=True)
    [replacement] = subscriptions()
    new_secret = replacement["hookUrl"].rsplit("/", 1)[1]
    assert rotated["action"] == "subscribed" and rotated["deleted"] == [subscription["id"]]
    assert new_secret != secret and replacement["id"] == rotated["subscription_id"]
    assert delivered(sandbox, receiver, new_secret) == 200

    moved = ensured(dagbag, receiver_url=receiver + "/")          # the same receiver spelled with a slash
    assert moved["action"] == "verified"
    elsewhere = receiver.replace("127.0.0.1", "localhost")
    moved = ensured(dagbag, receiver_url=elsewhere)
    [after_move] = subscriptions()
    assert moved["action"] == "subscribed" and moved["reason"] == "receiver URL changed"
    assert after_move["hookUrl"].startswith(f"{elsewhere}/{ACCOUNT}/") and moved["deleted"] == [replacement["id"]]

    shown = capsys.readouterr()
    # The task logs and our own loggers. dag.test() prints Airflow's DEBUG lines too, among them the supervisor's
    # echo of the masking request itself (MaskSecret, from register_secret): Airflow's, and only at DEBUG.
    logged = "\n".join(line for line in (shown.out + shown.err + caplog.text).splitlines() if "MaskSecret" not in line)
    for each in (secret, new_secret, after_move["hookUrl"].rsplit("/", 1)[1]):
        assert each not in logged
    assert f"subscribed as {rotated['subscription_id']} ({receiver}/{ACCOUNT}/***)" in logged


@pytest.mark.parametrize("conf, named", [
    ({"account": "billing/../servicetrade_default"}, "'billing/../servicetrade_default' is not an Airflow connection"),
    ({"account": "servicetrade_nowhere"}, "'servicetrade_nowhere': no Airflow connection of that id"),
    ({"account": "integrations_db"}, "of type 'postgres', not 'servicetrade'"),
    ({"account": ACCOUNT, "receiver_url": "ftp://example.com/hooks"}, "'ftp://example.com/hooks' is not an http(s)"),
])
def test_a_bad_form_fails_at_once_naming_the_value_and_calls_nothing(dagbag, receiver, sandbox, conn, caplog, conf,
                                                                     named):
    calls_before = len(sandbox.requests("servicetrade"))
    run = dagbag.get_dag(SUBSCRIBE).test(run_conf={"receiver_url": None, "rotate_secret": False, **conf})
    assert str(run.state) == "failed"
    assert states(run)["check"] == ("failed", 1) and states(run)["ensure"][0] == "upstream_failed"
    [summary] = [r.getMessage() for r in caplog.records if r.name == "notifiers.failures"]
    assert named in summary and "/runbook.md#bad-input" in summary
    assert len(sandbox.requests("servicetrade")) == calls_before
    assert conn.execute("SELECT count(*) FROM servicetrade.webhook_accounts").fetchone() == (0,)
    conn.commit()


def test_notifications_the_sandbox_dropped_are_caught_by_the_next_safety_net_run(dagbag, receiver, conn, sandbox,
                                                                                 caplog):
    ensured(dagbag)
    baseline = dagbag.get_dag(NET).test()
    assert {t: s for t, (s, _) in states(baseline).items()} == {"subscribed_accounts": "success", "net": "success"}
    assert conn.execute("SELECT count(*) FROM servicetrade.invoices").fetchone()[0] > 0

    hook = ServiceTradeHook(ACCOUNT)
    with hook.transaction():
        invoice_id = next(hook.paginate("invoice", {"updatedAfter": 0}))["id"]
        job_id = hook.get("job", 10_000)["id"]
        sandbox.control("servicetrade", drop_notifications=1)       # ServiceTrade gives up on the next one
        hook.call("PUT", f"/invoice/{invoice_id}", json={"notes": "its webhook never came"})
        hook.call("PUT", f"/job/{job_id}", json={"description": "announced"})
    flushed = sandbox.control("servicetrade", flush={"timeout": 8})
    assert flushed["flushed"] and flushed["webhooks"]["notifications_dropped"] == 1
    pending = conn.execute("SELECT entity_type, entity_id FROM servicetrade.webhook_events WHERE pending "
                           "ORDER BY 1, 2").fetchall()
    conn.commit()
    assert ("invoice", invoice_id) not in pending and ("job", job_id) in pending
    caplog.clear()
    caplog.set_level(logging.INFO)

    caught = dagbag.get_dag(NET).test()
    assert {t: s for t, (s, _) in states(caught).items()} == {"subscribed_accounts": "success", "net": "success"}
    net = next(t for t in caught.get_task_instances() if t.task_id == "net")
    [report] = net.xcom_pull(task_ids="net", map_indexes=[0])
    assert report["missed"] == 1 and report["missed_sample"] == [["invoice", invoice_id]]
    assert report["entities"]["invoice"]["updated"] == 1 and report["entities"]["job"]["updated"] == 1
    out = caplog.text
    assert "1 row(s) changed at ServiceTrade that no pending webhook event announced" in out
    assert f"invoice {invoice_id}" in out
    notes = conn.execute("SELECT record->>'notes' FROM servicetrade.invoices WHERE account = %s AND id = %s",
                         (ACCOUNT, invoice_id)).fetchone()
    conn.commit()
    assert notes == ("its webhook never came",)
