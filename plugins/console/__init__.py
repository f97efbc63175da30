"""The Integrations page in the Airflow UI and the docs it serves (the top layer: it reads every integration).

`scopes` reads the state of every (pipeline, scope) in two set-based statements, `page` renders it, `docs`
renders `docs/` for people, and `app` is the FastAPI app plugins/airflow_plugin.py mounts at /integrations,
behind Airflow's own auth manager.
"""
