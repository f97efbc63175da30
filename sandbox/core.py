"""What every simulated vendor shares: the request log and fault injection."""
from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response


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


def install_faults(app: FastAPI, vendor: str, state: SandboxState, throttled: Callable[[], Response]) -> None:
    """Middleware: apply the vendor's faults and record every request it answers.

    `throttled()` builds the vendor's own 429 response (QBO answers XML, others JSON).
    """

    @app.middleware("http")
    async def faults_and_log(request: Request, call_next):
        faults = state.faults_for(vendor)
        if faults.only_path and faults.only_path not in request.url.path:
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
