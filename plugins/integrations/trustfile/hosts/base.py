"""What a host system gives the TrustFile sync: documents changed in a window, and a pure mapping.

A new host system is one module with one class satisfying `HostSystem`; `trustfile_sync` does the
rest (watermark, overlap, load, push, ledgers). Keeping the mapping a pure method lets it be
unit-tested on real-shaped payloads without a server.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, Protocol

from integrations.trustfile.model import Address, Transaction


@dataclass(frozen=True)
class Document:
    """One source document as read from the host, before mapping."""

    entity: str                 # "SalesReceipt", "invoice", ...
    source_id: str
    updated_at: dt.datetime     # timezone-aware: the host's last-updated time, the sync's cursor
    record: dict                # the host's payload, untouched (quarantined as-is when it cannot be mapped)
    deleted: bool = False       # the host reports the document gone: TrustFile gets it with every amount 0


class HostSystem(Protocol):
    name: ClassVar[str]                 # "qbo", "servicetrade": trustfile.connections.host_system
    overlap: ClassVar[dt.timedelta]     # how far behind the watermark each sync re-reads (host clock skew)
    warnings: list[str]                 # what the last `documents()` could not verify; shown on the connection
    window_end: dt.datetime             # until when the last `documents()` read everything (see its `limit`)

    @property
    def identifier(self) -> str:
        """The company at the host (QBO realm, ServiceTrade account): hostSystemIdentifier."""

    def documents(self, since: dt.datetime, until: dt.datetime, *, limit: int | None = None,
                  min_end: dt.datetime | None = None) -> Iterator[Document]:
        """Every sale and refund document whose last-updated time is in [since, window_end), each at most
        once per call, one page in memory at a time. `window_end` is `until`, unless `limit` is given
        and the host ended the window early, after about that many documents, at a moment later than
        `min_end` (default `since`) before which it read everything; a few documents at or after
        `window_end` may have been given too (the next window reads them again: they load unchanged)."""

    def to_transaction(self, document: Document, *, fallback_address: Address | None) -> Transaction:
        """Map one document (no I/O). Raises `Unreconciled` when the parts do not add up to the
        document's total, ValueError when it cannot be read at all; the sync quarantines both."""
