"""servicetrade_webhook_events run for real with dag.test(): ripe events processed against the sandbox, and the
changed invoices' accounts announced as an asset event (the task skipped, no event, when none changed)."""
from __future__ import annotations

import json
import uuid

import pytest

from hooks.servicetrade import ServiceTradeHook
from integrations.servicetrade import inbox, webhook_config
from sandbox import servicetrade as st

ACCOUNT = "st_dag_account"
ASSET = "servicetrade_invoices_changed"


@pytest.fixture
def account(sandbox, conn, monkeypatch):
    monkeypatch.setenv(f"AIRFLOW_CONN_{ACCOUNT.upper()}", json.dumps(
        {"conn_type": "servicetrade", "host": f"{sandbox.url}/servicetrade/api", "login": st.USERNAME,
         "password": st.PASSWORD}))
    monkeypatch.delenv("SERVICETRADE_WEBHOOKS_CONFIG", raising=False)
    conn.execute("TRUNCATE servicetrade.webhook_events, servicetrade.webhook_inbox, servicetrade.jobs, "
                 "servicetrade.job_items, servicetrade.invoices, servicetrade.locations")
    conn.commit()
    return ACCOUNT


def notify_ripe(conn, *entities: tuple[str, int]) -> None:
    body = json.dumps({"messageId": str(uuid.uuid4()), "timestamp": "1", "data": [
        {"action": "updated", "timestamp": 1, "entity": {"type": t, "id": i}} for t, i in entities]}).encode()
    inbox.store(conn, ACCOUNT, body, webhook_config.load().rules(ACCOUNT))
    conn.execute("UPDATE servicetrade.webhook_events SET first_seen = first_seen - interval '1 hour', "
                 "last_seen = last_seen - interval '1 hour' WHERE pending")
    conn.commit()


def invoice_events() -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(select(AssetEvent.extra, AssetEvent.source_dag_id).join(
            AssetModel, AssetModel.id == AssetEvent.asset_id).where(AssetModel.name == ASSET)
            .order_by(AssetEvent.id)).all()
    return [extra for extra, dag_id in rows if dag_id == "servicetrade_webhook_events"]


def test_the_dag_processes_ripe_events_and_announces_the_changed_invoices_accounts(
        account, conn, sandbox, airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    hook = ServiceTradeHook(ACCOUNT)
    with hook.transaction():
        invoice = next(hook.paginate("invoice", {"updatedAfter": 0}))
        job = hook.get("job", 10_000)
    dag = DagBag().get_dag("servicetrade_webhook_events")
    before = len(invoice_events())

    notify_ripe(conn, ("invoice", invoice["id"]), ("job", job["id"]))
    run = dag.test()
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert states == {"process": "success", "announce_invoices": "success"}
    assert conn.execute("SELECT count(*) FROM servicetrade.webhook_events WHERE pending").fetchone() == (0,)
    assert conn.execute("SELECT id FROM servicetrade.invoices").fetchall() == [(invoice["id"],)]
    conn.commit()
    announced = invoice_events()[before:]
    assert [e["accounts"] for e in announced] == [[ACCOUNT]]

    notify_ripe(conn, ("invoice", invoice["id"]), ("job", job["id"]))      # announced again, nothing changed
    run = dag.test()
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert states == {"process": "success", "announce_invoices": "skipped"}
    assert conn.execute("SELECT count(*) FROM servicetrade.webhook_events WHERE pending").fetchone() == (0,)
    conn.commit()
    assert len(invoice_events()) == before + 1          # a skipped task emits no asset event
