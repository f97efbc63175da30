"""Fixtures of the hook tests."""
from __future__ import annotations

import pytest


@pytest.fixture
def budgets(conn, request):
    """Emptied request budgets, and a reader of the budget of the test module's hook (its `HOOK`) in its
    current window: None before any request."""
    from etl.request_budget import usage

    vendor = request.module.HOOK.budget_vendor
    conn.execute("TRUNCATE etl.request_budgets")
    conn.commit()

    def read():
        conn.rollback()
        found = [b for b in usage(conn) if b.vendor == vendor]
        conn.rollback()
        return found[0] if found else None

    return read
