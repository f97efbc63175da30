"""The assets of the ServiceTrade webhooks.

SERVICETRADE_RIPE_WEBHOOK_EVENTS is watched by the triggerer (RipeEventsTrigger): its events schedule
servicetrade_webhook_events as soon as events ripen. SERVICETRADE_INVOICES_CHANGED is updated by that DAG when
invoices were inserted or updated; its extra names the accounts (`{"accounts": [...]}`), and trustfile_sync runs
for the TrustFile connections of those accounts.
"""
from __future__ import annotations

from airflow.sdk import Asset, AssetWatcher

from integrations.servicetrade.trigger import RipeEventsTrigger

SERVICETRADE_RIPE_WEBHOOK_EVENTS = Asset(
    "servicetrade_ripe_webhook_events",
    watchers=[AssetWatcher(name="servicetrade_ripe_webhook_events_watcher", trigger=RipeEventsTrigger())],
)
SERVICETRADE_INVOICES_CHANGED = Asset("servicetrade_invoices_changed")
