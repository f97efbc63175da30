"""`[core] hostname_callable` of the Celery workers `EXECUTOR=celery make up` starts: the name each worker was
started with (worker1, worker2, ...), so task instances on one machine say which worker ran them."""
from __future__ import annotations

import os
import socket

WORKER_NAME_ENV = "STACK_WORKER_NAME"


def hostname() -> str:
    return os.environ.get(WORKER_NAME_ENV) or socket.getfqdn()
