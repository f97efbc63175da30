"""Issue 9 point 1's acceptance: four parallel unauthenticated 50 MB bodies leave the API process within
+50 MB. The API runs alone in a child process (uvicorn on 127.0.0.1, mounted under /extractor as Airflow
mounts it), so its resident memory is measured apart from the test's; psutil samples it every 10 ms."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from sandbox.launch import free_port

ROOT = Path(__file__).resolve().parents[4]
TOKEN = "tf-to-extractor-test-token"
BODY = b"[" + b"1," * 25_000_000 + b"1]"   # a 50 MB JSON array: 25 million ints once parsed
SERVER = """
import sys

import uvicorn
from fastapi import FastAPI
from integrations.trustfile.api.app import create_app
root = FastAPI()
root.mount("/extractor", create_app())   # INTEGRATIONS_DATABASE_URL, AVALARA_TO_EXTRACTOR_TOKEN
uvicorn.run(root, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", lifespan="off")
"""


def post(port: int, body: bytes, *headers: str) -> int:
    """POST /extractor/connections with `body`, sent in full; the answer's status."""
    head = "".join(f"{line}\r\n" for line in ("POST /extractor/connections HTTP/1.1", f"Host: 127.0.0.1:{port}",
                                               "Content-Type: application/json", f"Content-Length: {len(body)}",
                                               *headers))
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            assert chunk, "the server closed the connection without an answer"
            answer += chunk
    return int(answer.split()[1])


def test_four_parallel_unauthenticated_50_mb_bodies_cost_the_api_under_50_mb(db_url, clean_db):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)]),
           "INTEGRATIONS_DATABASE_URL": db_url, "AVALARA_TO_EXTRACTOR_TOKEN": TOKEN}
    child = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert child.poll() is None and time.monotonic() < deadline, "the extractor API did not start"
                time.sleep(0.1)
        # Warm up the paths under test so their first-use imports and caches are not counted.
        assert post(port, b"[1]") == 401
        assert post(port, b'{"connectionId": "warm-up"}', f"Authorization: Bearer {TOKEN}") == 200
        server = psutil.Process(child.pid)
        baseline = peak = server.memory_info().rss
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, server.memory_info().rss)
                time.sleep(0.01)

        sampler = threading.Thread(target=sample)
        sampler.start()
        statuses: list[int] = []
        senders = [threading.Thread(target=lambda: statuses.append(post(port, BODY))) for _ in range(4)]
        started = time.monotonic()
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(timeout=120)
        elapsed = time.monotonic() - started
        done.set()
        sampler.join()
        growth = (peak - baseline) / 2**20
        print(f"API process RSS {baseline / 2**20:.0f} MB before, {peak / 2**20:.0f} MB at peak (+{growth:.1f} MB) "
              f"under 4 parallel unauthenticated {len(BODY) / 1e6:.0f} MB bodies, sent in {elapsed:.1f} s")
        assert statuses == [401] * 4
        assert growth < 50, f"the API process grew by {growth:.0f} MB"
    finally:
        child.terminate()
        child.wait(timeout=10)
