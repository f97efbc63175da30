"""Start `python -m sandbox` on a free port and wait until it answers: for the tests and the benchmarks."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(*args: str, env: dict | None = None, timeout: float = 30.0) -> tuple[subprocess.Popen, str]:
    """(the process, its base URL); the caller terminates the process."""
    port = free_port()
    env = {**(env or os.environ), "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)])}
    process = subprocess.Popen([sys.executable, "-m", "sandbox", "--port", str(port), *args], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1).close()
            return process, url
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("the sandbox did not start") from None
            time.sleep(0.1)
