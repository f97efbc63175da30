"""The one file Airflow's plugin manager loads (plugins/.airflowignore hides the packages beside it).

Airflow imports every .py file of the plugins folder as a top-level module named after the file,
so without the ignore file `etl/health.py` and `integrations/trustfile/api/health.py` would both be
executed, as the same module `health`, by every Airflow process. Our packages are imported the
ordinary way, as `etl`, `hooks`, `integrations`... from the plugins folder on sys.path.

Mounted here, in the API server: the TrustFile extractor API under /extractor, the Integrations
page (with the docs it serves) under /integrations, in the UI's navigation, the ItsPerfect admin
API under /itsperfect and the ServiceTrade webhook receiver under /servicetrade-webhooks. Airflow does
not authenticate plugin apps: the extractor checks TrustFile's token itself, the receiver the secret
in its URL; the Integrations page and the ItsPerfect admin API ask Airflow's own auth manager
(console.app, integrations.itsperfect.api.common). This file is imported by every Airflow process,
each task included, so those apps are built on their first request, not here.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin

from console.app import OnFirstRequest
from console.app import create_app as create_console_app
from integrations.trustfile.api.app import create_app

# Where the API server serves the UI (a path when [api] base_url has one, e.g. https://host/airflow/).
_ROOT_PATH = urlsplit(conf.get("api", "base_url", fallback="") or "/").path.rstrip("/")


class TrustFileExtractorPlugin(AirflowPlugin):
    name = "trustfile_extractor"
    fastapi_apps = [{"app": create_app(), "url_prefix": "/extractor", "name": "TrustFile extractor API"}]


class IntegrationsConsolePlugin(AirflowPlugin):
    """Every integration and scope at a glance for on-call, and the docs its alerts link to."""

    name = "integrations_console"
    fastapi_apps = [{"app": OnFirstRequest(create_console_app), "url_prefix": "/integrations",
                     "name": "Integrations page"}]
    # url_route: the UI shows the page inside its own frame, at <airflow>/plugin/integrations.
    external_views = [{"name": "Integrations", "href": f"{_ROOT_PATH}/integrations/", "destination": "nav",
                       "url_route": "integrations", "category": None}]


def _itsperfect_admin_app():
    """Imported on the first request: only the API server needs the app and Airflow's API security modules."""
    from integrations.itsperfect.api.app import create_app as create_itsperfect_app

    return create_itsperfect_app()


class ItsPerfectAdminPlugin(AirflowPlugin):
    """The ItsPerfect connector model, managed by whoever Airflow's auth manager lets edit connections."""

    name = "itsperfect_admin"
    fastapi_apps = [{"app": OnFirstRequest(_itsperfect_admin_app), "url_prefix": "/itsperfect",
                     "name": "ItsPerfect admin API"}]


def _servicetrade_receiver_app():
    from integrations.servicetrade.receiver import create_app as create_receiver_app

    return create_receiver_app()


class ServiceTradeWebhooksPlugin(AirflowPlugin):
    """ServiceTrade's deliveries, stored before they are answered (integrations.servicetrade.receiver)."""

    name = "servicetrade_webhooks"
    fastapi_apps = [{"app": OnFirstRequest(_servicetrade_receiver_app), "url_prefix": "/servicetrade-webhooks",
                     "name": "ServiceTrade webhook receiver"}]
