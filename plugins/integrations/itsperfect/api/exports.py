"""The order export's outbox: what was sent to ItsPerfect, what is on its way, what ItsPerfect refused and why;
and the retry of a refused order once it is corrected: its outbox row deleted and, when the export's watermark
is already past the order, the watermark moved back to just before it, in one transaction."""
from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import psycopg
from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import APIRouter, HTTPException, Query

from etl import watermarks
from integrations.itsperfect.api.common import CREATE, READ, Conn, ConnectorId, RecordId, registered
from integrations.itsperfect.orders import PIPELINE

router = APIRouter(prefix="/order-exports", tags=["order exports"])
RUN_ID = "itsperfect_admin_api"   # who moved a watermark, in etl.watermark_history


@router.get("", dependencies=READ)
def list_exports(conn: Conn, state: Literal["refused", "sending", "sent"] | None = None,
                 connector: ConnectorId | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict:
    """The newest first."""
    if connector is not None:
        registered(conn, connector, 422)
    rows = conn.execute(
        "SELECT order_id, connector, reference, state, error, attempts, itsperfect_id, itsperfect_number, "
        "created_at, completed_at FROM itsperfect.order_exports "
        "WHERE (%(state)s::text IS NULL OR state = %(state)s) "
        "AND (%(connector)s::text IS NULL OR connector = %(connector)s) "
        "ORDER BY created_at DESC, order_id LIMIT %(limit)s", {"state": state, "connector": connector, "limit": limit})
    columns = [column.name for column in rows.description]
    return {"order_exports": [{**dict(zip(columns, row, strict=True)),
                               "created_at": row[8].isoformat(),
                               "completed_at": row[9].isoformat() if row[9] else None} for row in rows]}


@router.post("/{order_id}/retry", dependencies=CREATE)
def retry_export(order_id: RecordId, conn: Conn, user: GetUserDep) -> dict:
    """Deletes a refused export, so the next export run sends the (corrected) order again. Only a refused one:
    'sending' may have reached ItsPerfect (the next run looks it up by its reference), 'sent' did."""
    with conn.transaction():
        row = conn.execute("SELECT e.state, e.reference, e.error, o.account_id, o.created_at "
                           "FROM itsperfect.order_exports AS e JOIN commerce.orders AS o USING (order_id) "
                           "WHERE e.order_id = %s FOR UPDATE OF e", (order_id,)).fetchone()
        if row is None:
            raise HTTPException(404, f"order {order_id!r} has no export in the outbox")
        state, reference, error, account_id, created_at = row
        if state != "refused":
            raise HTTPException(409, f"the export of order {order_id!r} is {state!r}; only a 'refused' export can "
                                     "be retried ('sending' is reconciled by the next export run, 'sent' is in "
                                     "ItsPerfect)")
        conn.execute("DELETE FROM itsperfect.order_exports WHERE order_id = %s", (order_id,))
        rewound = _rewind(conn, account_id, created_at, f"order {order_id} retried by {user.get_name()} through "
                                                        "the ItsPerfect admin API")
    return {"order_id": order_id, "reference": reference, "refused_with": error,
            "watermark_rewound_to": rewound.isoformat() if rewound else None,
            "detail": "the refused export is deleted: the next export run sends the order again"}


def _rewind(conn: psycopg.Connection, account_id: str, created_at: dt.datetime, reason: str) -> dt.datetime | None:
    """The export reads only orders above the account's watermark: one already past this order moves back to
    just before it (the orders after it are in the outbox and skipped). Claimed first: a run in progress could
    move the watermark past the order again, so the retry is refused until it has ended."""
    try:
        watermarks.claim(conn, PIPELINE, account_id)
    except watermarks.WatermarkBusy:
        raise HTTPException(409, f"the order export of account {account_id!r} is running; retry when it has "
                                 "ended") from None
    before = created_at - dt.timedelta(microseconds=1)
    current = watermarks.read(conn, PIPELINE, account_id)
    if current is None or current.value < before:
        return None
    watermarks.reset(conn, PIPELINE, account_id, "timestamp", before, run_id=RUN_ID, reason=reason)
    return before
