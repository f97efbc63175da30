"""An operator for work that a vendor's request budget may cut: it waits for the budget's reset deferred.

When the budget is spent (`etl.request_budget.BudgetSpent`, raised before anything is sent) the task does
not fail, hold a worker slot or spend a retry: it defers to the triggerer with a `DateTimeTrigger` for the
reset moment (plus a margin for the vendor's clock), the UI shows it `deferred`, and its log says until
when. Back from the triggerer it calls the same function again, which resumes from the state it
committed (a stock pass's next page, the order outbox), never from anything kept in the task.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from airflow.providers.standard.triggers.temporal import DateTimeTrigger
from airflow.sdk import BaseOperator

from etl.request_budget import VENDOR_CLOCK_MARGIN, BudgetSpent

RESUME_MARGIN = VENDOR_CLOCK_MARGIN + dt.timedelta(seconds=1)   # the budget reopens that long after the reset


class BudgetedOperator(BaseOperator):
    """Calls `work(context=..., **op_kwargs)`; a spent budget defers the task until the budget resets.

    `work` must be resumable: called again after the reset, it goes on from what it committed.
    """

    template_fields = ("op_kwargs",)
    ui_color = "#e8f1fb"

    def __init__(self, *, work: Callable[..., Any], op_kwargs: dict | None = None,
                 resume_margin: dt.timedelta = RESUME_MARGIN, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.work = work
        self.op_kwargs = op_kwargs or {}
        self.resume_margin = resume_margin

    def execute(self, context: Any) -> Any:
        return self._attempt(context)

    def resume_after_reset(self, context: Any, event: Any = None) -> Any:
        """Back from the triggerer: the budget has reset, go on."""
        self.log.info("the request budget has reset; resuming")
        return self._attempt(context)

    def _attempt(self, context: Any) -> Any:
        try:
            return self.work(context=context, **self.op_kwargs)
        except BudgetSpent as spent:
            resume = spent.resets_at.astimezone(dt.timezone.utc) + self.resume_margin
            self.log.warning("%s. Deferred until %s (UTC): no worker slot is held and no retry is spent; the "
                             "work resumes where it stopped.", spent, resume.isoformat(timespec="seconds"))
            self.defer(trigger=DateTimeTrigger(moment=resume), method_name="resume_after_reset")
