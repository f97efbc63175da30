"""The one module that knows every integration: what each declares to the platform-wide DAGs.

One integration never imports another (lint-imports' independence contract); this module is the
exception that contract names, so a platform DAG (credential_registry, credential_rotation) reaches
every integration through one import. A new integration adds its line here.
"""
from __future__ import annotations

import psycopg

from etl.credentials import Credential, load_external


def declared_credentials(conn: psycopg.Connection) -> list[Credential]:
    """Every credential the platform uses: each integration's, and include/credentials.yaml's."""
    from integrations.itsperfect.credentials import declare as itsperfect
    from integrations.trustfile.credentials import declare as trustfile

    return [*trustfile(conn), *itsperfect(conn), *load_external()]
