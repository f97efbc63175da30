"""What every DAG of this project shares: owner, retries with exponential backoff, on-call alerts."""
from __future__ import annotations

import datetime as dt

from notifiers.on_call import OnCallNotifier

# Airflow 3's default timetable for a cron string is CronTriggerTimetable (zero-length data
# interval); our DAGs take their windows from etl.watermarks, never from data_interval_*.
START_DATE = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def default_args(owner: str, *, retries: int = 3) -> dict:
    return {
        "owner": owner,
        "retries": retries,
        "retry_delay": dt.timedelta(minutes=1),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(minutes=30),
        "on_failure_callback": OnCallNotifier(),
    }
