"""The Celery broker for the CeleryExecutor option (issue 15): the redis-server of the pinned wheel, run as a process
of its own on loopback, with a password no other client has, keeping what is queued across a restart."""
from __future__ import annotations

import os
import secrets
import stat
import subprocess

import pytest
import redis
from kombu import Connection

from sandbox.launch import free_port
from stack.redis_broker import RedisBroker, RedisBrokerError


@pytest.fixture
def broker(tmp_path):
    broker = RedisBroker(tmp_path / "redis", free_port(), secrets.token_urlsafe(24))
    processes = []

    def start() -> subprocess.Popen:
        process = subprocess.Popen(broker.command(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        processes.append(process)
        broker.wait_ready()
        return process

    broker.start = start
    yield broker
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


def test_a_message_queued_through_kombu_is_received_and_survives_a_restart(broker):
    server = broker.start()
    with Connection(broker.url()) as connection:         # what Celery's workers and executor use
        queue = connection.SimpleQueue("airflow-test")
        queue.put({"task": "first"})
        first = queue.get(timeout=5)
        assert first.payload == {"task": "first"}
        first.ack()                                       # unacknowledged, it would be delivered again
        queue.put({"task": "queued when the broker stopped"})
        queue.close()
    server.terminate()
    assert server.wait(timeout=10) == 0
    broker.start()
    with Connection(broker.url()) as connection:
        queue = connection.SimpleQueue("airflow-test")
        message = queue.get(timeout=5)
        assert message.payload == {"task": "queued when the broker stopped"}
        message.ack()
        queue.close()


def test_only_the_password_opens_it_and_the_password_is_in_no_command_line(broker):
    server = broker.start()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=broker.port, password="wrong").ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=broker.port).set("key", "value")
    password = broker.url().split(":")[2].split("@")[0]
    with open(f"/proc/{server.pid}/cmdline", "rb") as cmdline:
        assert password.encode() not in cmdline.read()
    assert password not in repr(broker)
    assert stat.S_IMODE(os.stat(broker.config_file).st_mode) == 0o600


def test_a_broker_that_does_not_answer_is_named_with_its_port(tmp_path):
    broker = RedisBroker(tmp_path / "redis", free_port(), "x")
    with pytest.raises(RedisBrokerError, match=f"127.0.0.1:{broker.port} is not ready: ConnectionError"):
        broker.wait_ready(timeout_seconds=1)
