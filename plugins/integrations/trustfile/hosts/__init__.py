"""Host systems the TrustFile extractor reads sales and refunds from: one module per system, each
registered here by the name stored in trustfile.connections.host_system.

A host module gives a `HostSystem` (base) and `connect(identifier, credentials)`, which wires it to
its hook from what the connection stores: adding a host system is a module and a line below.
"""
from __future__ import annotations

from collections.abc import Callable

from integrations.trustfile.hosts import qbo, servicetrade
from integrations.trustfile.hosts.base import HostSystem

HostFactory = Callable[[str | None, dict], HostSystem]   # (host_identifier, decrypted credentials)

HOSTS: dict[str, HostFactory] = {
    qbo.QboHost.name: qbo.connect,
    servicetrade.ServiceTradeHost.name: servicetrade.connect,
}


def connect(host_system: str, identifier: str | None, credentials: dict) -> HostSystem:
    """The host system a connection reads, wired to its hook; KeyError names the ones we know."""
    try:
        factory = HOSTS[host_system]
    except KeyError:
        raise KeyError(f"unknown host system {host_system!r}: known are {', '.join(sorted(HOSTS))}") from None
    return factory(identifier, credentials)
