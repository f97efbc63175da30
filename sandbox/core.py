"""What every simulated vendor shares: the request log and fault injection."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

log = logging.getLogger("sandbox")


@dataclass
class Faults:
    """Misbehaviour switched on per vendor. All off by default."""

    error_rate: float = 0.0          # share of requests answered 503 at random (seeded)
    burst_5xx: int = 0               # the next N requests answer 503
    latency_ms: int = 0              # added to every request
    truncate_next: int = 0           # the next N successful answers keep only the first half of their body's
                                     # bytes, sent as complete (Content-Length matches): a 200 whose JSON or
                                     # XML is broken, as a proxy that cut the answer would deliver
    drop_next: int = 0               # the next N successful answers promise their full length, then stop
    throttle_next: int = 0           # the next N requests answer the vendor's 429
    retry_after_seconds: float | None = None  # Retry-After sent with those 429s (None: no header)
    only_path: str | None = None     # apply the faults only to request paths containing this
    only_method: str | None = None   # ... and only to requests of this method (e.g. POST)


@dataclass
class Recorded:
    vendor: str
    method: str
    path: str
    query: str
    status: int
    at: float = field(default_factory=time.time)


class SandboxState:
    """Request log and faults of every vendor; thread-safe, reset between tests."""

    def __init__(self, seed: int = 7) -> None:
        self.lock = threading.Lock()
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.requests: list[Recorded] = []
            self.faults: dict[str, Faults] = {}
            self.random = random.Random(self.seed)

    def faults_for(self, vendor: str) -> Faults:
        with self.lock:
            return self.faults.setdefault(vendor, Faults())

    def record(self, entry: Recorded) -> None:
        with self.lock:
            self.requests.append(entry)

    def dump(self) -> dict:
        """What a restart must not forget (caller holds the lock): the random generator, so tokens and
        ids issued after a restart never repeat those issued before it. Requests and faults are not kept."""
        version, internal, gauss = self.random.getstate()
        return {"seed": self.seed, "random": [version, list(internal), gauss]}

    def load(self, data: dict) -> None:
        version, internal, gauss = data["random"]
        self.random.setstate((version, tuple(internal), gauss))


def install_faults(app: FastAPI, vendor: str, state: SandboxState, throttled: Callable[[], Response]) -> None:
    """Middleware: apply the vendor's faults and record every request it answers.

    `throttled()` builds the vendor's own 429 response (QBO answers XML, others JSON).
    """

    @app.middleware("http")
    async def faults_and_log(request: Request, call_next):
        faults = state.faults_for(vendor)
        if (faults.only_path and faults.only_path not in request.url.path) or (
                faults.only_method and faults.only_method.upper() != request.method):
            response = await call_next(request)
            state.record(Recorded(vendor, request.method, request.url.path, request.url.query, response.status_code))
            return response
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        response = None
        with state.lock:
            if faults.burst_5xx > 0:
                faults.burst_5xx -= 1
                response = JSONResponse({"message": "Service Unavailable (sandbox burst)"}, status_code=503)
            elif faults.throttle_next > 0:
                faults.throttle_next -= 1
                response = throttled()
                if faults.retry_after_seconds is not None:
                    response.headers["Retry-After"] = f"{faults.retry_after_seconds:g}"
            elif faults.error_rate and state.random.random() < faults.error_rate:
                response = JSONResponse({"message": "Internal Server Error (sandbox)"}, status_code=503)
        if response is None:
            response = await call_next(request)
            cut = drop = False
            if response.status_code < 300:
                with state.lock:
                    if faults.truncate_next > 0:
                        faults.truncate_next, cut = faults.truncate_next - 1, True
                    elif faults.drop_next > 0:
                        faults.drop_next, drop = faults.drop_next - 1, True
            if cut or drop:
                body = b"".join([chunk async for chunk in response.body_iterator])
                headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
                if drop:  # the connection closes mid-body, as a dropped network link does
                    headers["content-length"] = str(len(body))
                response = Response(body[: len(body) // 2], status_code=response.status_code, headers=headers)
        state.record(Recorded(vendor, request.method, request.url.path, request.url.query, response.status_code))
        return response


def control_app(state: SandboxState, vendors: list) -> FastAPI:
    """`/_sandbox`: inspect requests, switch faults, reset every vendor's data."""
    app = FastAPI(title="sandbox control")
    names = [v.name for v in vendors]

    @app.get("/requests")
    def requests(vendor: str | None = None, since: float = 0.0):
        with state.lock:
            return {"requests": [asdict(r) for r in state.requests
                                 if (vendor is None or r.vendor == vendor) and r.at >= since]}

    @app.put("/faults/{vendor}")
    def set_faults(vendor: str, faults: dict):
        if vendor not in names:
            return JSONResponse({"message": f"unknown vendor {vendor}; known: {names}"}, status_code=404)
        unknown = set(faults) - set(Faults.__dataclass_fields__)
        if unknown:
            return JSONResponse({"message": f"unknown fault(s) {sorted(unknown)}"}, status_code=400)
        with state.lock:
            state.faults[vendor] = Faults(**faults)
        return asdict(state.faults[vendor])

    @app.get("/state/{vendor}")
    def vendor_state(vendor: str):
        for v in vendors:
            if v.name == vendor and hasattr(v, "inspect"):
                return v.inspect()
        return JSONResponse({"message": f"no inspectable vendor {vendor}"}, status_code=404)

    @app.put("/control/{vendor}")
    def vendor_control(vendor: str, payload: dict):
        for v in vendors:
            if v.name == vendor and hasattr(v, "control"):
                return v.control(payload)
        return JSONResponse({"message": f"no controllable vendor {vendor}"}, status_code=404)

    @app.post("/reset")
    def reset():
        state.reset()
        for vendor in vendors:
            vendor.reset()
        return {"reset": True}

    return app


class StateFile:
    """The sandbox's data kept across restarts (`python -m sandbox --state-file`; `make up` uses
    .local/sandbox-state.json): companies, records, issued tokens and codes, pushed items, sessions.

    Loaded before the first request; saved (whole, atomically, mode 600) shortly after every request
    that may change it and once more at shutdown, so `make down` or Ctrl-C loses nothing and a kill -9
    at most the last fraction of a second. It holds the sandbox's own fake data, never a real secret.
    A file of another format version is set aside (renamed `.unreadable`) and the sandbox starts afresh.
    """

    VERSION = 1
    DELAY_SECONDS = 0.2       # coalesces a burst of requests into one write

    def __init__(self, path: Path, state: SandboxState, vendors: list) -> None:
        self.path = Path(path)
        self.state = state
        self.vendors = vendors
        self.dirty = threading.Event()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def load(self) -> bool:
        """Restore every vendor from the file; False (nothing changed) when there is none to use."""
        if not self.path.exists():
            return False
        try:
            data = json.loads(self.path.read_text())
            if data.get("version") != self.VERSION:
                raise ValueError(f"format version {data.get('version')!r}, expected {self.VERSION}")
            self.state.load(data["core"])
            for vendor in self.vendors:
                if vendor.name in data["vendors"]:
                    vendor.load(data["vendors"][vendor.name])
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            aside = self.path.with_name(self.path.name + ".unreadable")
            os.replace(self.path, aside)
            log.warning("sandbox state %s is unusable (%s): moved to %s, starting afresh", self.path, exc, aside)
            self.state.reset()
            for vendor in self.vendors:
                vendor.reset()
            return False
        log.warning("sandbox state loaded from %s", self.path)
        return True

    def changed(self) -> None:
        self.dirty.set()

    def save(self) -> None:
        with self.state.lock:
            text = json.dumps({"version": self.VERSION, "saved_at": time.time(), "core": self.state.dump(),
                               "vendors": {vendor.name: vendor.dump() for vendor in self.vendors}})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(partial, 0o600)
        os.replace(partial, self.path)

    def start(self) -> None:
        self.thread = threading.Thread(target=self._saver, name="sandbox-state", daemon=True)
        self.thread.start()

    def _saver(self) -> None:
        while not self.stopping.is_set():
            if self.dirty.wait(timeout=1.0) and not self.stopping.is_set():
                time.sleep(self.DELAY_SECONDS)
                self.dirty.clear()
                self._save_logged()

    def stop(self) -> None:
        """At shutdown: the saver ends, and the state is written once more."""
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
        self.dirty.clear()
        self._save_logged()

    def _save_logged(self) -> None:
        try:
            self.save()
        except OSError as exc:   # a full disk must not take the sandbox down; say so in its log
            log.error("sandbox state could not be saved to %s: %s", self.path, exc)
