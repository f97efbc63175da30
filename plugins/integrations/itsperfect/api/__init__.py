"""The ItsPerfect admin API: how a person manages the connector model (docs/integrations/itsperfect-admin-api.md).

`app.create_app` assembles the routers (`connectors`, `attributes`, `mappings`, `exports`); `common` holds
what they share. Mounted in Airflow's API server under /itsperfect by `plugins/airflow_plugin.py`, built on
its first request. A connector is an Airflow connection, so every route asks Airflow's own auth manager for
the matching right on connections: GET to read, PUT / POST / DELETE to change.
"""
