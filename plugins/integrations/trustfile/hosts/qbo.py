"""QuickBooks Online as a TrustFile host system: sales and refund documents by last-updated time.

Changes are read with keyset paging on `MetaData.LastUpdatedTime` (QboHook.changed_since), one
entity after another. Deleted documents are not queryable; only CDC reports them, and only for the
last 30 days: every window that ends within that reach asks CDC for the part it reaches (a document
deleted before we ever loaded it needs nothing from us). What CDC cannot answer is said, not
skipped: a window reaching further back than 30 days, or an entity whose CDC answer hit its
1000-object cap (asked per entity, so a busy company rarely does), leaves a line in `warnings`
that ends up in the connection's status message.
"""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from typing import ClassVar

from hooks.qbo import QboHook
from integrations.trustfile import qbo_mapping
from integrations.trustfile.hosts.base import Document
from integrations.trustfile.model import Address, Transaction

log = logging.getLogger(__name__)

QBO_APP_CONN_ID = "qbo_default"       # the OAuth app (client id/secret); each company's consent is ours
ENTITIES = tuple(qbo_mapping.KINDS)
CDC_REACH = dt.timedelta(days=30) - dt.timedelta(minutes=5)   # a margin for the two clocks


def _updated(record: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(record["MetaData"]["LastUpdatedTime"])


class QboHost:
    name: ClassVar[str] = "qbo"
    overlap: ClassVar[dt.timedelta] = dt.timedelta(minutes=5)

    def __init__(self, hook: QboHook) -> None:
        self.hook = hook
        self.warnings: list[str] = []     # what the last window could not verify
        self.window_end = dt.datetime.max.replace(tzinfo=dt.timezone.utc)

    @property
    def identifier(self) -> str:
        return self.hook.realm_id

    def documents(self, since: dt.datetime, until: dt.datetime, *, limit: int | None = None,
                  min_end: dt.datetime | None = None) -> Iterator[Document]:
        """`limit` is shared out between the entities: one past its share ends the window at its time, and
        the entities read after it stop there too (see `_changed`)."""
        self.warnings, self.window_end = [], until
        share = None if limit is None else max(1, limit // len(ENTITIES))
        for entity in ENTITIES:
            yield from self._changed(entity, since, share, min_end or since)
        reach = dt.datetime.now(dt.timezone.utc) - CDC_REACH
        if self.window_end <= reach:
            return
        if since < reach:
            self.warnings.append(f"deletions before {reach.date().isoformat()} are beyond QuickBooks' 30-day change "
                                 "feed and were not checked")
        yield from self._deletions(max(since, reach), self.window_end)

    def _changed(self, entity: str, since: dt.datetime, share: int | None, min_end: dt.datetime) -> Iterator[Document]:
        """The entity's documents in [since, window_end), oldest first. Past `share` of them newer than
        `min_end` (what the overlap re-reads does not count) the window ends at the next one's time:
        every document before it was given (keyset order), and what an entity read earlier past that
        time is read again by the next window."""
        rows = self.hook.changed_since(entity, since, self.window_end)
        fresh = 0
        for record in rows:
            updated = _updated(record)
            if updated > min_end:
                if share is not None and fresh >= share:
                    self.window_end = updated
                    rows.close()
                    return
                fresh += 1
            yield Document(entity, str(record["Id"]), updated, record)

    def _deletions(self, since: dt.datetime, until: dt.datetime) -> Iterator[Document]:
        for entity in ENTITIES:
            answer = self.hook.cdc([entity], since)
            if answer.capped:
                self.warnings.append(f"{entity} deletions since {since.isoformat(timespec='seconds')} may be "
                                     "missing (QuickBooks' change feed answered its 1000-object maximum)")
                log.warning("QBO CDC for %s since %s hit its 1000-object cap: deletions may be missing",
                            entity, since.isoformat())
            for record in answer.changes.get(entity, []):
                if record.get("status") == "Deleted" and since <= _updated(record) < until:
                    yield Document(entity, str(record["Id"]), _updated(record), record, deleted=True)

    def to_transaction(self, document: Document, *, fallback_address: Address | None) -> Transaction:
        return qbo_mapping.map_transaction(document.entity, document.record, company=self.identifier,
                                           fallback_address=fallback_address)


def connect(identifier: str | None, credentials: dict) -> QboHost:
    """A consented company: its realm and refresh token come from the consent (credentials)."""
    return QboHost(QboHook(QBO_APP_CONN_ID, realm_id=credentials["realm_id"],
                           refresh_token=credentials["refresh_token"]))
