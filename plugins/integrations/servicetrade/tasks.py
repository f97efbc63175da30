"""Task bodies of servicetrade_webhook_events: the ripe events processed, the changed invoices announced.

Every failure logs the on-call summary first (notifiers.failures), naming the accounts and entities concerned;
the runbook section is docs/integrations/servicetrade.md, "Webhooks: failures and what on-call does".
"""
from __future__ import annotations

import logging

from airflow.sdk.exceptions import AirflowSkipException

from etl import db
from hooks.servicetrade import ServiceTradeHook
from integrations.servicetrade import events, webhook_config
from notifiers.failures import Scope, reported

log = logging.getLogger(__name__)

FAILURES_TABLE = ("integrations/servicetrade.md", "Webhooks: failures and what on-call does")


def process_ripe_events(context, batch_size: int = events.DEFAULT_BATCH_SIZE) -> dict:
    """Every account's ripe events fetched and kept; the run report (XCom): per account, what was fetched and
    stored, and the ids of the invoices inserted or updated (`invoices_changed`)."""
    scope = Scope("ServiceTrade webhook events", "every account", more=FAILURES_TABLE)
    with reported(context, scope):
        config = webhook_config.load()
        ti = context.get("ti") or context.get("task_instance")
        with db.connect() as conn:
            report = events.process(conn, config, ServiceTradeHook, batch_size=batch_size,
                                    run_id=context.get("run_id") or "manual",
                                    task_id=getattr(ti, "task_id", None), try_number=getattr(ti, "try_number", None))
        return report.as_dict()


def announce_invoices(context, report: dict | None, asset) -> list[str]:
    """Emit one event of `asset` whose extra names the accounts whose invoices changed; skip (no event) when
    none changed."""
    changed = dict((report or {}).get("invoices_changed") or {})
    if not changed:
        raise AirflowSkipException("no ServiceTrade invoice changed: no asset event")
    accounts = sorted(changed)
    context["outlet_events"][asset].extra = {"accounts": accounts,
                                             "invoices": {a: len(ids) for a, ids in changed.items()}}
    log.info("invoices changed in %d account(s): %s", len(accounts),
             ", ".join(f"{a} ({len(changed[a])})" for a in accounts))
    return accounts
