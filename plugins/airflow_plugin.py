"""The one file Airflow's plugin manager loads (plugins/.airflowignore hides the packages beside it).

Airflow imports every .py file of the plugins folder as a top-level module named after the file,
so without the ignore file `etl/health.py` and `integrations/trustfile/api/health.py` would both be
executed, as the same module `health`, by every Airflow process. Our packages are imported the
ordinary way, as `etl`, `hooks`, `integrations`... from the plugins folder on sys.path.

Mounted here: the TrustFile extractor API under /extractor. Airflow does not authenticate plugin
apps; the app checks TrustFile's token itself.
"""
from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from integrations.trustfile.api.app import create_app


class TrustFileExtractorPlugin(AirflowPlugin):
    name = "trustfile_extractor"
    fastapi_apps = [{"app": create_app(), "url_prefix": "/extractor", "name": "TrustFile extractor API"}]
