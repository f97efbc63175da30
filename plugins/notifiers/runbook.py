"""Links into the docs the platform serves, so an alert's "what to do" is one click away.

The Integrations page (plugins/console) serves every page of `docs/` at `<base>/<path>`, with each
heading's anchor made by `slug`; the base is INTEGRATIONS_DOCS_URL, else Airflow's own base URL
(`AIRFLOW__API__BASE_URL`, which `make up` sets) followed by DOCS_PREFIX.
"""
from __future__ import annotations

import os
import re

DOCS_URL_ENV = "INTEGRATIONS_DOCS_URL"
DOCS_PREFIX = "/integrations/docs"
DEFAULT_AIRFLOW_URL = "http://127.0.0.1:8080"


def slug(heading: str) -> str:
    """A heading's anchor as GitHub writes it: lower case, punctuation dropped, spaces as dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def docs_url(path: str, heading: str | None = None) -> str:
    """The served page of `docs/<path>` (e.g. "runbook.md"), at `heading` when given."""
    base = os.environ.get(DOCS_URL_ENV) or (
        (os.environ.get("AIRFLOW__API__BASE_URL") or DEFAULT_AIRFLOW_URL).rstrip("/") + DOCS_PREFIX)
    return f"{base.rstrip('/')}/{path.lstrip('/')}" + (f"#{slug(heading)}" if heading else "")


def credential_runbook(kind: str) -> str:
    """The rotation steps for a kind of credential (docs/credentials.md)."""
    from etl.credentials import RUNBOOK_PAGE, RUNBOOK_SECTIONS

    return docs_url(RUNBOOK_PAGE, RUNBOOK_SECTIONS[kind])
