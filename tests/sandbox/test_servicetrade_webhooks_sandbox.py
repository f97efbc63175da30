"""ServiceTrade webhook deliveries in the sandbox (vendors.md §2.4), over plain HTTP against the real sandbox
process and a tiny receiver: subscriptions, the writes that notify, batching, retries of 5xx and timeouts,
drops after 3 attempts, duplicates, silently lost notifications, a person editing repeatedly, deletions."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from sandbox import launch, servicetrade
from sandbox.core import SandboxState

FAST = {"batch_seconds": 0.05, "batch_max": 20, "duplicate_rate": 0.0, "retry_delays": [0.5, 1]}


class Receiver:
    """An HTTP server on 127.0.0.1 keeping every body POSTed to it; answers `statuses` in turn, then 200."""

    def __init__(self) -> None:
        self.received: list[dict] = []      # {"path", "body", "at"}
        self.statuses: list[int] = []
        self.delay = 0.0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver.lock:
                    receiver.received.append({"path": self.path, "body": body, "at": time.time()})
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    delay = receiver.delay
                if delay:
                    time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def clear(self) -> None:
        with self.lock:
            self.received, self.statuses, self.delay = [], [], 0.0

    def bodies(self, path: str | None = None) -> list[dict]:
        with self.lock:
            return [r["body"] for r in self.received if path is None or r["path"] == path]

    def entities(self, path: str | None = None) -> list[dict]:
        return [entry for body in self.bodies(path) for entry in body["data"]]


@pytest.fixture(scope="module")
def url():
    process, base = launch.start()
    yield base
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def receiver():
    server = Receiver()
    yield server
    server.server.shutdown()


def control(url: str, **payload) -> dict:
    answer = requests.put(f"{url}/_sandbox/control/servicetrade", json=payload, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()


def flush(url: str) -> dict:
    answer = control(url, flush={"timeout": 10})
    assert answer["flushed"] is True
    return answer["webhooks"]


@pytest.fixture
def api(url, receiver):
    """A logged-in session on the sandbox's ServiceTrade API, everything reset, deliveries fast."""
    requests.post(f"{url}/_sandbox/reset", timeout=10).raise_for_status()
    receiver.clear()
    control(url, webhooks=FAST)
    session = requests.Session()
    session.post(f"{url}/servicetrade/api/auth", timeout=10,
                 json={"username": servicetrade.USERNAME, "password": servicetrade.PASSWORD}).raise_for_status()
    session.base = f"{url}/servicetrade/api"
    yield session
    requests.post(f"{url}/_sandbox/reset", timeout=10).raise_for_status()


def subscribe(api, hook_url: str) -> dict:
    answer = api.post(f"{api.base}/webhook", json={"hookUrl": hook_url, "includeChangesets": False}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def notified(entries: list[dict]) -> list[tuple]:
    return sorted((e["entity"]["type"], e["entity"]["id"], e["action"], e["userId"] or 0) for e in entries)


# ---- subscriptions --------------------------------------------------------------------------------------

def test_subscription_round_trip_and_an_immutable_hook_url(api, url, receiver):
    assert requests.get(f"{api.base}/webhook", timeout=10).status_code == 401          # no session
    refused = api.post(f"{api.base}/webhook", json={"hookUrl": "ftp://example.com/x"}, timeout=10)
    assert refused.status_code == 400 and refused.json()["messages"]["validation"]
    assert api.post(f"{api.base}/webhook", json={}, timeout=10).status_code == 400

    created = subscribe(api, f"{receiver.url}/hook?secret=s3")
    assert {k: created[k] for k in ("id", "enabled", "confirmed")} == {"id": 555, "enabled": True, "confirmed": False}
    assert subscribe(api, f"{receiver.url}/other")["id"] == 556
    listed = api.get(f"{api.base}/webhook", timeout=10).json()["data"]["webhooks"]
    assert [w["id"] for w in listed] == [555, 556]
    assert api.get(f"{api.base}/webhook/555", timeout=10).json()["data"]["hookUrl"] == f"{receiver.url}/hook?secret=s3"

    moved = api.put(f"{api.base}/webhook/555", json={"hookUrl": f"{receiver.url}/elsewhere"}, timeout=10)
    assert moved.status_code == 400
    assert moved.json() == {"messages": {"validation": [
        "hookUrl cannot be changed; delete the webhook and create another"]}}
    same = api.put(f"{api.base}/webhook/555", json={"hookUrl": f"{receiver.url}/hook?secret=s3", "enabled": False},
                   timeout=10)
    assert same.status_code == 200 and same.json()["data"]["enabled"] is False
    assert api.put(f"{api.base}/webhook/999", json={"enabled": True}, timeout=10).status_code == 404

    deleted = api.delete(f"{api.base}/webhook/555", timeout=10)
    assert deleted.status_code == 200 and deleted.json()["messages"]["success"]
    assert api.delete(f"{api.base}/webhook/555", timeout=10).status_code == 404
    assert api.get(f"{api.base}/webhook/555", timeout=10).status_code == 404
    state = requests.get(f"{url}/_sandbox/state/servicetrade", timeout=10).json()
    assert state["webhooks"]["subscriptions"] == 1
    assert "s3" not in json.dumps(state["webhooks"])      # the hookUrl's secret is in no record


def test_subscriptions_survive_dump_and_load():
    sandbox = servicetrade.ServiceTradeSandbox(SandboxState(7), jobs=10)
    sandbox.webhooks.subscribe({"hookUrl": "https://example.com/h"}, "http://127.0.0.1:1/servicetrade/")
    sandbox.webhooks.update(555, {"enabled": False})
    saved = json.loads(json.dumps(sandbox.dump()))
    again = servicetrade.ServiceTradeSandbox(SandboxState(7), jobs=10)
    again.load(saved)
    assert again.webhooks.subscriptions_list() == sandbox.webhooks.subscriptions_list()
    assert again.webhooks.subscribe({"hookUrl": "https://example.com/2"}, "http://x/")["id"] == 556
    sandbox.reset()
    again.reset()


# ---- writes that notify -------------------------------------------------------------------------------

def test_an_invoice_edit_delivers_one_message_naming_it(api, url, receiver):
    subscribe(api, f"{receiver.url}/hook")
    invoice = api.get(f"{api.base}/invoice", params={"limit": 1}, timeout=10).json()["data"]["invoices"][0]
    before = int(time.time())
    assert api.put(f"{api.base}/invoice/{invoice['id']}", json={"notes": "edited"}, timeout=10).status_code == 200
    summary = flush(url)

    [message] = receiver.bodies()
    assert isinstance(message["messageId"], str) and len(message["messageId"]) == 36
    assert isinstance(message["timestamp"], str) and int(message["timestamp"]) >= before
    [entry] = message["data"]
    assert entry["action"] == "updated" and entry["userId"] == 1 and entry["timestamp"] >= before
    assert entry["entity"]["type"] == "invoice" and entry["entity"]["id"] == invoice["id"]
    assert entry["entity"]["uri"] == f"{url}/servicetrade/api/invoice/{invoice['id']}"
    assert api.get(entry["entity"]["uri"], timeout=10).json()["data"]["notes"] == "edited"   # followable
    assert summary["messages"] == summary["delivered"] == 1 and summary["notifications_sent"] == 1
    [attempt] = summary["attempts"]
    assert attempt | {"at": 0} == {"messageId": message["messageId"], "subscription": 555, "attempt": 1,
                                   "status": 200, "error": None, "entities": 1, "duplicate": False, "at": 0}


def test_job_item_edits_notify_the_item_and_its_job_twice(api, url, receiver):
    subscribe(api, f"{receiver.url}/hook")
    assert api.post(f"{api.base}/jobitem", json={"jobId": 10003}, timeout=10).json() == {
        "messages": {"validation": ["name is required"]}}
    assert api.post(f"{api.base}/jobitem", json={"name": "x", "jobId": 1}, timeout=10).status_code == 400
    assert api.put(f"{api.base}/jobitem/1", json={"name": "x"}, timeout=10).status_code == 404

    created = api.post(f"{api.base}/jobitem", json={"name": "Hose", "jobId": 10003, "quantity": 2, "price": 9.5},
                       timeout=10).json()["data"]
    assert created["id"] >= 60_000 and created["job"] == {"id": 10003}
    items = api.get(f"{api.base}/jobitem", params={"jobId": 10003}, timeout=10).json()["data"]["jobItems"]
    assert created["id"] in [i["id"] for i in items] and all(i["job"]["id"] == 10003 for i in items)
    flush(url)
    assert notified(receiver.entities()) == [("job", 10003, "updated", 0), ("job", 10003, "updated", 1),
                                             ("jobitem", created["id"], "created", 1)]
    receiver.clear()
    edited = api.put(f"{api.base}/jobitem/{created['id']}", json={"price": 11}, timeout=10).json()["data"]
    assert edited["price"] == 11.0 and edited["updated"] >= created["updated"]
    flush(url)
    assert notified(receiver.entities()) == [("job", 10003, "updated", 0), ("job", 10003, "updated", 1),
                                             ("jobitem", created["id"], "updated", 1)]
    assert api.get(f"{api.base}/job/10003", timeout=10).json()["data"]["updated"] >= created["updated"]

    receiver.clear()
    assert api.put(f"{api.base}/job/10004", json={"status": "nonsense"}, timeout=10).status_code == 400
    assert api.put(f"{api.base}/job/10004", json={"number": "J-1"}, timeout=10).status_code == 400
    job = api.put(f"{api.base}/job/10004", json={"status": "completed", "customerPo": "PO-7"}, timeout=10)
    assert job.json()["data"]["status"] == "completed"
    flush(url)
    assert notified(receiver.entities()) == [("job", 10004, "updated", 1)]


def test_deleted_records_answer_404_and_are_notified(api, url, receiver):
    subscribe(api, f"{receiver.url}/hook")
    item = api.get(f"{api.base}/jobitem/60000", timeout=10).json()["data"]
    assert api.delete(f"{api.base}/jobitem/60000", timeout=10).status_code == 200
    assert api.get(f"{api.base}/jobitem/60000", timeout=10).status_code == 404
    assert api.delete(f"{api.base}/jobitem/60000", timeout=10).status_code == 404
    assert api.delete(f"{api.base}/location/7001", timeout=10).status_code == 200
    assert api.get(f"{api.base}/location/7001", timeout=10).status_code == 404
    assert requests.delete(f"{api.base}/location/7002", timeout=10).status_code == 401     # no session
    flush(url)
    job = item["job"]["id"]
    assert notified(receiver.entities()) == [("job", job, "updated", 0), ("job", job, "updated", 1),
                                             ("jobitem", 60000, "deleted", 1), ("location", 7001, "deleted", 1)]


# ---- delivery -------------------------------------------------------------------------------------------

def test_a_503_is_retried_and_a_4xx_counts_as_delivered(api, url, receiver):
    subscribe(api, f"{receiver.url}/hook")
    receiver.statuses = [503]
    control(url, notify=[{"entity": "job", "id": 10001}])
    summary = flush(url)
    first, second = receiver.bodies()
    assert first == second                                    # the same message, sent again
    assert [(a["attempt"], a["status"]) for a in summary["attempts"]] == [(1, 503), (2, 200)]
    assert summary["attempts"][1]["at"] - summary["attempts"][0]["at"] >= 0.45   # retry_delays[0]
    assert (summary["delivered"], summary["dropped"]) == (1, 0)

    receiver.clear()
    receiver.statuses = [404]
    control(url, notify=[{"entity": "job", "id": 10002}])
    summary = flush(url)
    assert len(receiver.bodies()) == 1 and summary["attempts"][-1]["status"] == 404
    assert (summary["delivered"], summary["dropped"]) == (2, 0)


def test_three_failed_attempts_drop_the_message(api, url, receiver):
    subscribe(api, f"{receiver.url}/hook")
    receiver.statuses = [503, 503, 503]
    control(url, notify=[{"entity": "location", "id": 7003}])
    summary = flush(url)
    assert len(receiver.bodies()) == 3
    assert [(a["attempt"], a["status"]) for a in summary["attempts"]] == [(1, 503), (2, 503), (3, 503)]
    assert (summary["delivered"], summary["dropped"]) == (0, 1)


def test_a_receiver_too_slow_times_out_and_is_retried(api, url, receiver):
    subscribe(api, f"{receiver.url}/hook")
    control(url, webhooks={"timeout_seconds": 0.2, "retry_delays": [0.1]})
    receiver.delay = 0.5
    control(url, notify=[{"entity": "job", "id": 10001}])
    summary = flush(url)
    assert [(a["status"], a["error"]) for a in summary["attempts"]] == [(None, "timeout")] * 3
    assert summary["dropped"] == 1


def test_duplicates_repeat_the_same_message(api, url, receiver):
    subscribe(api, f"{receiver.url}/hook")
    control(url, webhooks={"duplicate_rate": 1.0})
    control(url, notify=[{"entity": "job", "id": 10001}, {"entity": "location", "id": 7002}])
    summary = flush(url)
    first, second = receiver.bodies()
    assert first == second and len(first["data"]) == 2
    assert summary["duplicates_sent"] == 1 and summary["delivered"] == 1 and summary["messages"] == 1
    assert [a["duplicate"] for a in summary["attempts"]] == [False, True]


def test_dropped_notifications_are_never_delivered(api, url, receiver):
    subscribe(api, f"{receiver.url}/hook")
    control(url, drop_notifications=2)
    control(url, notify=[{"entity": "job", "id": 10001}, {"entity": "job", "id": 10002},
                         {"entity": "job", "id": 10003}])
    summary = flush(url)
    assert notified(receiver.entities()) == [("job", 10003, "updated", 1)]
    assert summary["notifications_dropped"] == 2 and summary["notifications_sent"] == 1


def test_a_person_editing_notifies_again_and_again(api, url, receiver):
    subscribe(api, f"{receiver.url}/hook")
    started = time.time()
    answer = control(url, notify=[{"entity": "job", "id": 10003, "action": "updated", "times": 20,
                                   "every_seconds": 0.05}])
    assert time.time() - started < 0.5 and answer["webhooks"]["editing"] == 1      # returned at once
    summary = flush(url)
    entries = receiver.entities()
    assert len(entries) == 20 and {(e["entity"]["type"], e["entity"]["id"]) for e in entries} == {("job", 10003)}
    assert len(receiver.bodies()) > 1                         # spread over several batches
    assert summary["notifications_sent"] == 20
    assert api.get(f"{api.base}/job/10003", timeout=10).json()["data"]["updated"] >= int(started)

    receiver.clear()
    control(url, notify=[{"entity": "job", "id": 10_000 + n} for n in range(100)])
    summary = flush(url)
    sizes = [len(body["data"]) for body in receiver.bodies()]
    assert sum(sizes) == 100 and max(sizes) <= 20 and len(sizes) >= 5
    assert sorted(e["entity"]["id"] for e in receiver.entities()) == list(range(10_000, 10_100))
    assert any([e["entity"]["id"] for e in body["data"]] != sorted(e["entity"]["id"] for e in body["data"])
               for body in receiver.bodies())              # reordered within messages


def test_a_disabled_subscription_receives_nothing(api, url, receiver):
    subscribe(api, f"{receiver.url}/on")
    off = subscribe(api, f"{receiver.url}/off")
    api.put(f"{api.base}/webhook/{off['id']}", json={"enabled": False}, timeout=10).raise_for_status()
    control(url, notify=[{"entity": "location", "id": 7005}])
    flush(url)
    assert len(receiver.bodies("/on")) == 1 and receiver.bodies("/off") == []


def test_without_subscriptions_nothing_is_sent(api, url, receiver):
    control(url, notify=[{"entity": "job", "id": 10001}])
    summary = flush(url)
    assert receiver.bodies() == [] and summary["messages"] == 0 and summary["notifications_unheard"] == 1


@pytest.mark.parametrize("payload", [{"nonsense": 1}, {"webhooks": {"batch_size": 3}},
                                     {"webhooks": {"duplicate_rate": 2}}, {"drop_notifications": -1},
                                     {"notify": [{"entity": "job", "id": 1}]},
                                     {"notify": [{"entity": "quote", "id": 10001}]}])
def test_bad_control_calls_are_refused(api, url, payload):
    answer = requests.put(f"{url}/_sandbox/control/servicetrade", json=payload, timeout=10)
    assert answer.status_code == 400 and "refused" in answer.json()["message"]
