"""A connector is an Airflow connection of type `itsperfect`; `itsperfect.connectors` registers its id.

The connection holds what is secret or per tenant (API URL, basic auth user and password, the API token)
and the three switches of its form: `active`, `create_orders`, `get_stock` (all off until someone turns
them on). Airflow encrypts it and any secrets backend can serve it; only the hook decrypts it. Our tables
name the connection id, the database cannot check it against Airflow's: the admin API checks it when a
connector is registered, and the DAGs read the switches at run time, so a switch turned off in the form
stops the next run without touching our tables.
"""
from __future__ import annotations

from dataclasses import dataclass

import psycopg
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

CONN_TYPE = "itsperfect"
SWITCHES = ("active", "create_orders", "get_stock")


class ConnectorError(ValueError):
    """A registered connector whose Airflow connection is missing or is not an ItsPerfect one."""


@dataclass(frozen=True)
class Connector:
    connector: str          # the Airflow connection id, also the connector's unique name
    active: bool
    create_orders: bool
    get_stock: bool

    @property
    def pulls_stock(self) -> bool:
        return self.active and self.get_stock

    @property
    def sends_orders(self) -> bool:
        return self.active and self.create_orders


def switch(extra: dict, name: str) -> bool:
    """A form switch: JSON true, or the strings a hand-written extra uses; anything else is off."""
    value = extra.get(name, False)
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return value is True or value == 1


def connector(conn_id: str) -> Connector:
    """The connector's switches, read from its Airflow connection (secrets are not touched here)."""
    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise ConnectorError(f"ItsPerfect connector {conn_id!r} has no Airflow connection: create one of type "
                             f"{CONN_TYPE!r} with that id, or unregister the connector") from None
    if conn.conn_type != CONN_TYPE:
        raise ConnectorError(f"connection {conn_id!r} is of type {conn.conn_type!r}, not {CONN_TYPE!r}")
    extra = conn.extra_dejson or {}
    return Connector(conn_id, *(switch(extra, name) for name in SWITCHES))


def registered(conn: psycopg.Connection) -> list[str]:
    """Every registered connector id, in name order."""
    return [row[0] for row in conn.execute("SELECT connector FROM itsperfect.connectors ORDER BY connector")]
