"""Provider metadata Airflow reads through the `apache_airflow_provider` entry point.

Airflow 3.2+ takes connection-form labels and extra fields declaratively from here
(`ui-field-behaviour`, `conn-fields`); the extra fields land in the connection's `extra` JSON
under these names, which is where the hooks read them.
"""

_STRING = {"type": ["string", "null"]}
_SECRET = {"type": ["string", "null"], "format": "password"}
_SWITCH = {"type": ["boolean", "null"], "default": False}

CONNECTION_TYPES = [
    {
        "connection-type": "qbo",
        "hook-class-name": "hooks.qbo.QboHook",
        "hook-name": "QuickBooks Online",
        "ui-field-behaviour": {
            "hidden-fields": ["schema", "port"],
            "relabeling": {"host": "API base URL", "login": "OAuth client id", "password": "OAuth client secret"},
            "placeholders": {"host": "https://quickbooks.api.intuit.com"},
        },
        "conn-fields": {
            "realm_id": {"label": "Realm (company) id", "schema": _STRING},
            "refresh_token": {"label": "Initial refresh token (from the consent)", "schema": _SECRET},
            # Not "token_url": Airflow shows any extra whose name contains "token" as *** in the form.
            "oauth_endpoint_url": {"label": "Token endpoint URL", "schema": {
                "type": ["string", "null"], "default": "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"}},
            "minorversion": {"label": "API minor version", "schema": {"type": ["integer", "null"], "default": 75}},
            "authorize_url": {"label": "Authorize (consent) URL", "schema": {
                "type": ["string", "null"], "default": "https://appcenter.intuit.com/connect/oauth2"}},
        },
    },
    {
        "connection-type": "trustfile",
        "hook-class-name": "hooks.trustfile.TrustFileHook",
        "hook-name": "Avalara TrustFile",
        "ui-field-behaviour": {
            "hidden-fields": ["schema", "port", "login"],
            "relabeling": {"host": "Items API base URL", "password": "extractor_to_avalara token"},
            "placeholders": {"host": "https://api.trustfile.avalara.com"},
        },
        "conn-fields": {
            "provisioning_url": {"label": "Provisioning (v4) base URL", "schema": {
                "type": ["string", "null"], "default": "https://app.trustfile.avalara.com"}},
        },
    },
    {
        "connection-type": "servicetrade",
        "hook-class-name": "hooks.servicetrade.ServiceTradeHook",
        "hook-name": "ServiceTrade",
        "ui-field-behaviour": {
            "hidden-fields": ["schema", "port", "extra"],
            "relabeling": {"host": "API base URL", "login": "User name"},
            "placeholders": {"host": "https://api.servicetrade.com/api"},
        },
    },
    {
        "connection-type": "itsperfect",
        "hook-class-name": "hooks.itsperfect.ItsPerfectHook",
        "hook-name": "ItsPerfect",
        "ui-field-behaviour": {
            # No `login`: Airflow stores it unencrypted; the user name goes in the (encrypted) extra.
            "hidden-fields": ["schema", "port", "login"],
            "relabeling": {"host": "API URL (tenant)", "password": "Basic auth password"},
            "placeholders": {"host": "https://<tenant>.itsperfect.it/api/v2"},
        },
        "conn-fields": {
            # Named with "token" on purpose: Airflow masks it in the form; the hook registers it as a secret.
            "api_token": {"label": "API token (sent as ?token=)", "schema": _SECRET},
            "username": {"label": "Basic auth user name", "schema": _STRING},
            # The connector's switches (integrations.itsperfect.connectors), all off until turned on.
            "active": {"label": "Active", "schema": _SWITCH},
            "create_orders": {"label": "Create orders (export this tenant's accounts' orders)", "schema": _SWITCH},
            "get_stock": {"label": "Get stock (pull its warehouses' stock every hour)", "schema": _SWITCH},
            "hourly_limit": {"label": "Requests an hour (the tenant's limit, its own calls included)",
                             "schema": {"type": ["integer", "null"], "default": 750}},
            "budget_headroom": {"label": "Requests an hour kept back for the vendor's own calls",
                                "schema": {"type": ["integer", "null"], "default": 30}},
        },
    },
    {
        "connection-type": "trackvia",
        "hook-class-name": "hooks.trackvia.TrackViaHook",
        "hook-name": "TrackVia",
        "ui-field-behaviour": {
            "hidden-fields": ["schema", "port", "login"],
            "relabeling": {"host": "Account base URL (/openapi is appended)", "password": "API user's auth token"},
            "placeholders": {"host": "https://go.trackvia.com"},
        },
        "conn-fields": {
            # Masked in the form (not a name Airflow recognises): the hook registers it as a secret.
            "api_key": {"label": "API key (sent as ?user_key=)", "schema": _SECRET},
            "hourly_limit": {"label": "Requests an hour (TrackVia publishes no limit: our guess)",
                             "schema": {"type": ["integer", "null"], "default": 5000}},
            "budget_headroom": {"label": "Requests an hour kept back for the account's other API users",
                                "schema": {"type": ["integer", "null"], "default": 50}},
        },
    },
    {
        "connection-type": "ppms",
        "hook-class-name": "hooks.pumapi.PumapiHook",
        "hook-name": "Stratocore PPMS (PUMAPI)",
        "ui-field-behaviour": {
            "hidden-fields": ["schema", "port", "login", "extra"],
            "relabeling": {"host": "PUMAPI URL (with its trailing slash)", "password": "API key"},
            "placeholders": {"host": "https://ppms.example.org/pumapi/"},
        },
    },
]


def get_provider_info() -> dict:
    return {
        "package-name": "integrations-provider",
        "name": "Integrations platform",
        "description": ("Connection types for QuickBooks Online, Avalara TrustFile, ServiceTrade, ItsPerfect, "
                        "TrackVia and Stratocore PPMS."),
        "versions": ["0.1.0"],
        "connection-types": CONNECTION_TYPES,
    }
