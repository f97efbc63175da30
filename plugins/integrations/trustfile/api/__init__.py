"""The TrustFile connector-microservice API we implement ("extractor"), as a FastAPI app.

`app.create_app` assembles the routers (`health`, `connections`, `consent`, `reports`); `common` holds
what they share; `consent_state` and `health_checks` are the parts that are not routes. Mounted into
Airflow's API server under /extractor by `plugins/airflow_plugin.py`, or run alone:
    uvicorn integrations.trustfile.api.app:create_app --factory
Airflow does not authenticate plugin apps: every route but /health and the consent callback checks
TrustFile's bearer token itself (AVALARA_TO_EXTRACTOR_TOKEN), in constant time.
"""
