"""One progress line at most every PROGRESS_SECONDS of a long loop, so on-call reading a running
task's log sees that it is alive and how far it got, without a line per record."""
from __future__ import annotations

import logging
import time

PROGRESS_SECONDS = 30


class Progress:
    def __init__(self, logger: logging.Logger, every_seconds: float = PROGRESS_SECONDS) -> None:
        self._log = logger
        self._every = every_seconds
        self._last = time.monotonic()

    def tick(self, message: str, *args: object) -> None:
        """Log `message % args` if the last line is at least `every_seconds` old; else do nothing."""
        now = time.monotonic()
        if now - self._last >= self._every:
            self._log.info(message, *args)
            self._last = now
