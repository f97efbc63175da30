"""A test DAG: the IncrementalLoadOperator over the vendor-free synthetic source."""
from __future__ import annotations

import synthetic_source
from airflow.sdk import DAG

from operators.dag_defaults import START_DATE, default_args
from operators.incremental_load import IncrementalLoadOperator, backfill_params

with DAG(
    dag_id="synthetic_incremental",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    tags=["test"],
    doc_md="Loads scratch.source_events into scratch.events through the engine (tests only).",
    default_args={**default_args(owner="tests"), "retries": 0},
    params=backfill_params(),
):
    IncrementalLoadOperator(task_id="load_events", source=synthetic_source.make_source(None), scope="dag")
