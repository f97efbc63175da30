"""The TrustFile connector-microservice API we implement ("extractor"), as a FastAPI app.

Mounted into Airflow's API server under /extractor by `extractor_api.plugin`, or run alone:
    uvicorn extractor_api.app:create_app --factory
Airflow does not authenticate plugin apps: every route but /health checks TrustFile's bearer
token itself (AVALARA_TO_EXTRACTOR_TOKEN), in constant time.
"""
