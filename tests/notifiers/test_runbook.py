"""Runbook links: GitHub's anchors, the served docs' base."""
from __future__ import annotations

from notifiers.runbook import docs_url, slug


def test_slug_is_githubs_anchor():
    assert slug("Sync failures and what on-call does") == "sync-failures-and-what-on-call-does"
    assert slug("Connection `trustfile_default` (type `trustfile`)") == "connection-trustfile_default-type-trustfile"
    assert slug("### `/health`".lstrip("# ")) == "health"


def test_docs_url_uses_the_configured_base_or_airflows(monkeypatch):
    monkeypatch.delenv("INTEGRATIONS_DOCS_URL", raising=False)
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.com/")
    assert docs_url("runbook.md", "Watermark lag") == \
        "https://airflow.example.com/integrations/docs/runbook.md#watermark-lag"
    monkeypatch.setenv("INTEGRATIONS_DOCS_URL", "https://docs.example.com/platform/")
    assert docs_url("integrations/trustfile.md") == "https://docs.example.com/platform/integrations/trustfile.md"
