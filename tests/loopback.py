"""ASGI apps served for real on 127.0.0.1 during a test: uvicorn on a thread, up before the first request, stopped
when the test ends."""
from __future__ import annotations

import threading
import time

import uvicorn

from sandbox.launch import free_port


class LoopbackServers:
    def __init__(self) -> None:
        self.running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(self, app, what: str, *, port: int | None = None, lifespan: str = "off", timeout: float = 10) -> int:
        """Serve `app` (on `port`, or a free one); its port once it accepts connections."""
        port = port or free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                               lifespan=lifespan))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"{what} did not start")
            time.sleep(0.01)
        self.running.append((server, thread))
        return port

    def stop(self) -> None:
        for server, thread in self.running:
            server.should_exit = True
            thread.join(timeout=10)
        self.running.clear()
