"""trustfile_sync's due connections in a run triggered by servicetrade_webhook_events' asset event: only the
ServiceTrade connections of the accounts the event names; a scheduled or manual run: every due connection."""
from __future__ import annotations

import datetime as dt

import pytest
from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult
from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor


def asset_events(*extras: dict, name: str = "servicetrade_invoices_changed") -> TriggeringAssetEventsAccessor:
    return TriggeringAssetEventsAccessor.build(
        AssetEventDagRunReferenceResult(asset={"name": name, "uri": name, "extra": {}}, extra=extra,
                                        source_task_id="announce_invoices", source_dag_id="servicetrade_webhook_events",
                                        source_run_id="r", source_map_index=-1, source_aliases=[],
                                        timestamp=dt.datetime.now(dt.timezone.utc))
        for extra in extras)


@pytest.fixture
def connections(clean_db):
    from etl.encryption import encrypt

    for connection_id, host, account in [("c-qbo", "qbo", "realm-1"), ("c-st-a", "servicetrade", "acct-a"),
                                         ("c-st-b", "servicetrade", "acct-b"), ("c-st-c", "servicetrade", "acct-c")]:
        clean_db.execute(
            "INSERT INTO trustfile.connections (connection_id, enabled, start_date, host_system, host_identifier, "
            "host_credentials, provisioning_state) VALUES (%s, true, '2026-01-01', %s, %s, %s, 'external')",
            (connection_id, host, account, encrypt('{"x": 1}')))
    clean_db.execute("UPDATE trustfile.connections SET enabled = false WHERE connection_id = 'c-st-c'")
    clean_db.commit()
    return clean_db


def ids(scopes: list[dict]) -> list[str]:
    return sorted(s["connection_id"] for s in scopes)


def test_an_asset_triggered_run_syncs_only_the_named_accounts_due_servicetrade_connections(connections):
    from integrations.trustfile.tasks import due_scopes

    triggered = {"triggering_asset_events": asset_events({"accounts": ["acct-a", "acct-c"]},
                                                         {"accounts": ["realm-1"]})}
    assert ids(due_scopes(triggered)) == ["c-st-a"]      # acct-c's connection is disabled; realm-1 is QBO's


def test_a_scheduled_or_manual_run_syncs_every_due_connection(connections):
    from integrations.trustfile.tasks import due_scopes

    assert ids(due_scopes({"triggering_asset_events": asset_events()})) == ["c-qbo", "c-st-a", "c-st-b"]
    assert ids(due_scopes({})) == ["c-qbo", "c-st-a", "c-st-b"]
    assert ids(due_scopes()) == ["c-qbo", "c-st-a", "c-st-b"]


def test_another_assets_event_names_no_servicetrade_account(connections):
    from integrations.trustfile.tasks import due_scopes

    assert due_scopes({"triggering_asset_events": asset_events({"accounts": ["acct-a"]}, name="other")}) == []
