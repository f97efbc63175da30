"""Routes for what TrustFile reads about our work: GET /errors and GET /baditems for a day."""
from __future__ import annotations

from fastapi import APIRouter

from integrations.trustfile import reports
from integrations.trustfile.api.common import AUTHORIZED, Conn, DateText, required_day, timestamp

router = APIRouter(dependencies=AUTHORIZED)


@router.get("/errors")
def get_errors(conn: Conn, date: DateText):
    found: dict[str, list[dict]] = {kind.lower(): [] for kind in reports.ERROR_TYPES}
    for entry in reports.errors_on(conn, required_day(date)):
        found[entry.type.lower()].append({"type": entry.type, "timestamp": timestamp(entry.at),
                                          "connectionId": entry.connection_id, "message": entry.message})
    return {"errors": found}


@router.get("/baditems")
def get_bad_items(conn: Conn, date: DateText):
    return {"errors": [{"timestamp": timestamp(item.at), "message": item.message,
                        "connectionId": item.connection_id, "badItems": [item.payload],
                        "friendlyMessage": item.friendly_message}
                       for item in reports.bad_items_on(conn, required_day(date))]}
