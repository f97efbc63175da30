"""QuickBooks Online as a TrustFile host system: sales and refund documents by last-updated time.

Changes are read with keyset paging on `MetaData.LastUpdatedTime` (QboHook.changed_since), one
entity after another. Deleted documents are not queryable; only CDC reports them, and only for the
last 30 days, so deletions are asked of CDC when the window lies within that reach (a document
deleted before we ever loaded it needs nothing from us). CDC answers at most 1000 objects: per
entity, so a busy company rarely hits the cap, and when it does the sync is told (`cdc_capped`).
"""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from typing import ClassVar

from etl.trustfile import qbo_mapping
from etl.trustfile.hosts.base import Document
from etl.trustfile.model import Address, Transaction
from hooks.qbo import QboHook

log = logging.getLogger(__name__)

ENTITIES = tuple(qbo_mapping.KINDS)
CDC_REACH = dt.timedelta(days=30) - dt.timedelta(minutes=5)   # a margin for the two clocks


def _updated(record: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(record["MetaData"]["LastUpdatedTime"])


class QboHost:
    name: ClassVar[str] = "qbo"
    overlap: ClassVar[dt.timedelta] = dt.timedelta(minutes=5)

    def __init__(self, hook: QboHook) -> None:
        self.hook = hook
        self.cdc_capped: list[str] = []   # entities whose deletions in the last window may be incomplete

    @property
    def identifier(self) -> str:
        return self.hook.realm_id

    def documents(self, since: dt.datetime, until: dt.datetime) -> Iterator[Document]:
        for entity in ENTITIES:
            for record in self.hook.changed_since(entity, since, until):
                yield Document(entity, str(record["Id"]), _updated(record), record)
        if dt.datetime.now(dt.timezone.utc) - since <= CDC_REACH:
            yield from self._deletions(since, until)

    def _deletions(self, since: dt.datetime, until: dt.datetime) -> Iterator[Document]:
        self.cdc_capped = []
        for entity in ENTITIES:
            answer = self.hook.cdc([entity], since)
            if answer.capped:
                self.cdc_capped.append(entity)
                log.warning("QBO CDC for %s since %s hit its 1000-object cap: deletions may be missing",
                            entity, since.isoformat())
            for record in answer.changes.get(entity, []):
                if record.get("status") == "Deleted" and since <= _updated(record) < until:
                    yield Document(entity, str(record["Id"]), _updated(record), record, deleted=True)

    def to_transaction(self, document: Document, *, fallback_address: Address | None) -> Transaction:
        return qbo_mapping.map_transaction(document.entity, document.record, company=self.identifier,
                                           fallback_address=fallback_address)
