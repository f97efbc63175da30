"""ServiceTrade's webhooks in the sandbox: the subscription store and the delivery engine (vendors.md §2.4).

What ServiceTrade does, and so what this does, no kinder:
- every write queues one notification per entity changed (one user edit may queue several: a job item edit
  also updates its job, twice); a daemon thread takes up to `batch_max` queued notifications every
  `batch_seconds` and makes one message of them, its entities in a seeded random order;
- each message is POSTed (JSON, `timeout_seconds`, 5 s) to every enabled subscription's hookUrl, from a
  small thread pool, so deliveries overlap and arrive out of order;
- an answer 200-499 counts as delivered (4xx included); a 5xx, a timeout or a connection error is tried
  again after `retry_delays` seconds, 3 attempts in all, then the delivery is dropped for good;
- with probability `duplicate_rate` a delivered message is delivered once more (same messageId, same
  body) 0-1 s later;
- `drop_notifications` makes the next N notifications vanish: never delivered, as what ServiceTrade
  could not deliver is lost and only the platform's hourly safety net finds those changes.

No signature, no auth header (ServiceTrade sends none); no `changeset` (the platform subscribes without
them). The hookUrl carries the subscriber's secret: it is never logged and never in the attempt records.

This module knows nothing of FastAPI or of plugins/: `ServiceTradeSandbox` calls it.
"""
from __future__ import annotations

import heapq
import http.client
import itertools
import json
import logging
import queue
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from urllib.parse import urlsplit

log = logging.getLogger("sandbox.servicetrade.webhooks")

ENTITY_TYPES = ("job", "jobitem", "invoice", "location")
ACTIONS = ("created", "updated", "deleted")
MAX_ATTEMPTS = 3
FIRST_WEBHOOK_ID = 555
ATTEMPTS_KEPT = 1000
POOL_SIZE = 8
DEFAULTS = {"batch_seconds": 0.2, "batch_max": 20, "duplicate_rate": 0.1, "retry_delays": [5.0, 15.0],
            "timeout_seconds": 5.0}


class WebhookError(ValueError):
    """A subscription or a setting the vendor (or the control API) refuses: its text is the answer's message."""


def check_hook_url(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise WebhookError("hookUrl is required")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError("hookUrl must be an http or https URL")
    return value


def check_settings(settings: object) -> dict:
    """The delivery settings a control call sets, checked (all or nothing)."""
    if not isinstance(settings, dict):
        raise WebhookError("webhooks must be an object")
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise WebhookError(f"unknown webhooks setting(s) {unknown}; known: {sorted(DEFAULTS)}")
    checked: dict = {}
    for key, value in settings.items():
        if key == "batch_max":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise WebhookError("batch_max must be an integer >= 1")
            checked[key] = value
        elif key == "retry_delays":
            if (not isinstance(value, list) or not value
                    or any(isinstance(d, bool) or not isinstance(d, int | float) or d < 0 for d in value)):
                raise WebhookError("retry_delays must be a non-empty list of seconds >= 0")
            checked[key] = [float(d) for d in value]
        else:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise WebhookError(f"{key} must be a number")
            value = float(value)
            if key == "duplicate_rate" and not 0 <= value <= 1:
                raise WebhookError("duplicate_rate must be between 0 and 1")
            if key in ("batch_seconds", "timeout_seconds") and not 0 < value <= 60:
                raise WebhookError(f"{key} must be more than 0 and at most 60")
            checked[key] = value
    return checked


class WebhookDeliveries:
    """Subscriptions, the notification queue and the deliveries of one ServiceTrade account.

    Thread-safe with its own lock, which is never held during an HTTP call; callers may hold the sandbox
    state lock when they call in (state lock first, then this one: this class never takes the state lock).
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.lock = threading.Condition()
        self.generation = 0
        self.work: queue.SimpleQueue | None = None     # attempts for the daemon workers of this generation
        self.reset()

    # ---- lifecycle ---------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget subscriptions, queue, records and settings; stop the threads (their late results are ignored)."""
        with self.lock:
            self.generation += 1
            work, self.work = self.work, None
            self.random = random.Random(f"{self.seed}-servicetrade-webhooks")
            self.settings = json.loads(json.dumps(DEFAULTS))
            self.subscriptions: dict[int, dict] = {}
            self.next_id = FIRST_WEBHOOK_ID
            self.base_url = "https://api.servicetrade.com"
            self.queue: deque[dict] = deque()
            self.scheduled: list[tuple[float, int, dict]] = []   # heap of (due, seq, delivery): retries, duplicates
            self.sequence = itertools.count()
            self.in_flight = 0
            self.editing = 0          # `notify` scripts still running
            self.drop_next = 0
            self.attempts: deque[dict] = deque(maxlen=ATTEMPTS_KEPT)
            self.counts = dict.fromkeys(("messages", "delivered", "dropped", "duplicates_sent", "notifications_sent",
                                         "notifications_dropped", "notifications_unheard"), 0)
            self.dispatcher: threading.Thread | None = None
            self.lock.notify_all()
        if work is not None:       # the old workers end after the attempt they are making, if any
            for _ in range(POOL_SIZE):
                work.put(None)

    def dump(self) -> dict:
        """What a restart keeps: subscriptions, settings, the drop counter (not the queue nor the records)."""
        with self.lock:
            return {"subscriptions": [dict(s) for s in self.subscriptions.values()], "next_id": self.next_id,
                    "base_url": self.base_url, "settings": json.loads(json.dumps(self.settings)),
                    "drop_next": self.drop_next}

    def load(self, saved: dict) -> None:
        self.reset()
        with self.lock:
            self.subscriptions = {int(s["id"]): dict(s) for s in saved.get("subscriptions", [])}
            self.next_id = int(saved.get("next_id", FIRST_WEBHOOK_ID))
            self.base_url = str(saved.get("base_url", self.base_url))
            self.settings.update(check_settings(saved.get("settings", {})))
            self.drop_next = int(saved.get("drop_next", 0))
            if self.subscriptions:
                self._ensure_running()

    # ---- subscriptions (the API's /api/webhook) ---------------------------------------------------

    @staticmethod
    def _public(subscription: dict) -> dict:
        return dict(subscription)

    def subscribe(self, body: dict, base_url: str) -> dict:
        unknown = sorted(set(body) - {"hookUrl", "includeChangesets", "entityEvents"})
        if unknown:
            raise WebhookError("; ".join(f"{field} cannot be set" for field in unknown))
        hook_url = check_hook_url(body.get("hookUrl"))
        changesets = body.get("includeChangesets", False)
        if not isinstance(changesets, bool):
            raise WebhookError("includeChangesets must be a boolean")
        events = body.get("entityEvents")
        if events is not None and not isinstance(events, list):
            raise WebhookError("entityEvents must be a list")
        with self.lock:
            subscription = {"id": self.next_id, "hookUrl": hook_url, "enabled": True, "confirmed": False,
                            "includeChangesets": changesets, "entityEvents": events}
            self.next_id += 1
            self.subscriptions[subscription["id"]] = subscription
            self.base_url = base_url.rstrip("/")
            self._ensure_running()
            return self._public(subscription)

    def subscriptions_list(self) -> list[dict]:
        with self.lock:
            return [self._public(s) for s in self.subscriptions.values()]

    def subscription(self, webhook_id: int) -> dict | None:
        with self.lock:
            found = self.subscriptions.get(webhook_id)
            return None if found is None else self._public(found)

    def update(self, webhook_id: int, body: dict) -> dict | None:
        """None when there is no such subscription; WebhookError for a change ServiceTrade refuses."""
        unknown = sorted(set(body) - {"hookUrl", "enabled", "includeChangesets", "entityEvents"})
        if unknown:
            raise WebhookError("; ".join(f"{field} cannot be set" for field in unknown))
        for key in ("enabled", "includeChangesets"):
            if key in body and not isinstance(body[key], bool):
                raise WebhookError(f"{key} must be a boolean")
        if "entityEvents" in body and body["entityEvents"] is not None and not isinstance(body["entityEvents"], list):
            raise WebhookError("entityEvents must be a list")
        with self.lock:
            subscription = self.subscriptions.get(webhook_id)
            if subscription is None:
                return None
            if "hookUrl" in body and body["hookUrl"] != subscription["hookUrl"]:
                raise WebhookError("hookUrl cannot be changed; delete the webhook and create another")
            subscription.update({k: body[k] for k in ("enabled", "includeChangesets", "entityEvents") if k in body})
            return self._public(subscription)

    def unsubscribe(self, webhook_id: int) -> bool:
        with self.lock:
            return self.subscriptions.pop(webhook_id, None) is not None

    # ---- notifications ------------------------------------------------------------------------------

    def notify(self, entity_type: str, entity_id: int, action: str, user_id: int | None = 1) -> None:
        """Queue one notification (or swallow it while `drop_notifications` lasts)."""
        assert entity_type in ENTITY_TYPES and action in ACTIONS
        with self.lock:
            if self.drop_next > 0:
                self.drop_next -= 1
                self.counts["notifications_dropped"] += 1
                return
            self.queue.append({"action": action, "timestamp": int(time.time()), "userId": user_id,
                               "entity": {"type": entity_type, "id": int(entity_id)}})
            self._ensure_running()
            self.lock.notify_all()

    def drop_notifications(self, count: int) -> None:
        with self.lock:
            self.drop_next = count

    def configure(self, settings: dict) -> None:
        checked = check_settings(settings)
        with self.lock:
            self.settings.update(checked)
            self.lock.notify_all()

    def script(self, steps: list[tuple[float, Callable[[], None]]]) -> None:
        """Run `steps` ([(delay before, action)]) on a thread of their own; flush waits for them."""
        with self.lock:
            generation = self.generation
            self.editing += 1

        def run() -> None:
            try:
                for delay, action in steps:
                    if delay:
                        time.sleep(delay)
                    with self.lock:
                        if generation != self.generation:
                            return
                    action()
            finally:
                with self.lock:
                    if generation == self.generation:
                        self.editing -= 1
                        self.lock.notify_all()

        threading.Thread(target=run, name="servicetrade-notify", daemon=True).start()

    # ---- inspection ------------------------------------------------------------------------------------

    def summary(self) -> dict:
        with self.lock:
            return {"subscriptions": len(self.subscriptions),
                    "enabled_subscriptions": sum(1 for s in self.subscriptions.values() if s["enabled"]),
                    "queued": len(self.queue), "in_flight": self.in_flight, "scheduled": len(self.scheduled),
                    "editing": self.editing, "drop_next": self.drop_next, **self.counts,
                    "settings": json.loads(json.dumps(self.settings)), "attempts": list(self.attempts)}

    def idle(self) -> bool:
        return not (self.queue or self.in_flight or self.scheduled or self.editing)

    def flush(self, timeout: float) -> bool:
        """Wait until nothing is queued, in flight, waiting for a retry or still being edited: True if so."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while not self.idle():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.lock.wait(min(left, 0.1))
            return True

    # ---- the engine ------------------------------------------------------------------------------------

    def _ensure_running(self) -> None:
        """(lock held) Start the dispatcher of this generation if it is not running yet."""
        if self.dispatcher is None or not self.dispatcher.is_alive():
            self.work = queue.SimpleQueue()
            for n in range(POOL_SIZE):   # daemon threads: a slow receiver never holds up the sandbox's exit
                threading.Thread(target=self._work, args=(self.work,), name=f"servicetrade-webhook-{n}",
                                 daemon=True).start()
            self.dispatcher = threading.Thread(target=self._dispatch, args=(self.generation, self.work),
                                               name="servicetrade-webhooks", daemon=True)
            self.dispatcher.start()

    def _work(self, work: queue.SimpleQueue) -> None:
        while (item := work.get()) is not None:
            self._attempt(*item)

    def _dispatch(self, generation: int, pool: queue.SimpleQueue) -> None:
        next_batch = time.monotonic() + self.settings["batch_seconds"]
        with self.lock:
            while generation == self.generation:
                now = time.monotonic()
                if now >= next_batch:
                    next_batch = now + self.settings["batch_seconds"]
                    if self.queue:
                        self._batch(pool)
                while self.scheduled and self.scheduled[0][0] <= now:
                    _, _, delivery = heapq.heappop(self.scheduled)
                    self._submit(pool, delivery)
                wake = next_batch if not self.scheduled else min(next_batch, self.scheduled[0][0])
                self.lock.wait(max(0.0, wake - time.monotonic()))

    def _batch(self, pool: queue.SimpleQueue) -> None:
        """(lock held) One message of up to `batch_max` queued notifications, sent to every enabled subscription."""
        taken = [self.queue.popleft() for _ in range(min(self.settings["batch_max"], len(self.queue)))]
        targets = [s for s in self.subscriptions.values() if s["enabled"]]
        if not targets:      # nobody listens: ServiceTrade has no one to send these to
            self.counts["notifications_unheard"] += len(taken)
            return
        self.random.shuffle(taken)
        data = [{**n, "entity": {**n["entity"], "uri": f"{self.base_url}/api/{n['entity']['type']}/"
                                                       f"{n['entity']['id']}"}} for n in taken]
        message_id = str(uuid.uuid4())     # never seeded: ids must not repeat across resets and restarts
        body = json.dumps({"messageId": message_id, "timestamp": str(int(time.time())), "data": data}).encode()
        self.counts["messages"] += 1
        self.counts["notifications_sent"] += len(taken)
        for subscription in targets:
            delivery = {"generation": self.generation, "messageId": message_id, "body": body, "entities": len(data),
                        "subscription": subscription["id"], "attempt": 1, "duplicate": False,
                        "repeat": self.random.random() < self.settings["duplicate_rate"]}
            self._submit(pool, delivery)

    def _submit(self, pool: queue.SimpleQueue, delivery: dict) -> None:
        """(lock held) Send one attempt from the pool, unless its subscription is gone or disabled meanwhile."""
        subscription = self.subscriptions.get(delivery["subscription"])
        if subscription is None or not subscription["enabled"]:
            if not delivery["duplicate"]:
                self.counts["dropped"] += 1
            self.lock.notify_all()
            return
        self.in_flight += 1
        pool.put((delivery, subscription["hookUrl"], self.settings["timeout_seconds"]))

    def _attempt(self, delivery: dict, hook_url: str, timeout: float) -> None:
        status, error = _post(hook_url, delivery["body"], timeout)
        with self.lock:
            if delivery["generation"] != self.generation:
                return
            self.in_flight -= 1
            self.attempts.append({"messageId": delivery["messageId"], "subscription": delivery["subscription"],
                                  "attempt": delivery["attempt"], "status": status, "error": error,
                                  "entities": delivery["entities"], "duplicate": delivery["duplicate"],
                                  "at": time.time()})
            answered = status is not None and 200 <= status < 500
            if delivery["duplicate"]:
                self.counts["duplicates_sent"] += 1
            elif answered:
                self.counts["delivered"] += 1
                if delivery["repeat"]:
                    self._schedule({**delivery, "duplicate": True, "attempt": 1}, self.random.random())
            elif delivery["attempt"] < MAX_ATTEMPTS:
                delays = self.settings["retry_delays"]
                delay = delays[min(delivery["attempt"] - 1, len(delays) - 1)]
                self._schedule({**delivery, "attempt": delivery["attempt"] + 1}, delay)
            else:
                self.counts["dropped"] += 1
                log.info("webhook message %s to subscription %s dropped after %d attempts",
                         delivery["messageId"], delivery["subscription"], MAX_ATTEMPTS)
            self.lock.notify_all()

    def _schedule(self, delivery: dict, delay: float) -> None:
        heapq.heappush(self.scheduled, (time.monotonic() + delay, next(self.sequence), delivery))
        self.lock.notify_all()


def _post(hook_url: str, body: bytes, timeout: float) -> tuple[int | None, str | None]:
    """(status, None) when the receiver answered, (None, what went wrong) when it did not. No redirects followed.
    The error names the exception's type only: its text could carry the hookUrl."""
    parts = urlsplit(hook_url)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection = connection_class(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json",
                                                             "User-Agent": "ServiceTrade-Webhooks (sandbox)"})
        response = connection.getresponse()
        response.read()
        return response.status, None
    except (OSError, http.client.HTTPException) as exc:
        return None, "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
    finally:
        connection.close()
