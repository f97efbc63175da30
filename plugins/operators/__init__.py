"""Reusable Airflow operators and DAG building blocks over the `etl` engine."""
