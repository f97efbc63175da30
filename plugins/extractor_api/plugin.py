"""Mounts the extractor API into Airflow's API server under /extractor.

Airflow does not authenticate plugin apps; the app checks TrustFile's token itself.
"""
from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from extractor_api.app import create_app


class TrustFileExtractorPlugin(AirflowPlugin):
    name = "trustfile_extractor"
    fastapi_apps = [{"app": create_app(), "url_prefix": "/extractor", "name": "TrustFile extractor API"}]
