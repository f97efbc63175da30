"""The sandbox's root app: each vendor under its own prefix, the control API under /_sandbox."""
from __future__ import annotations

import contextlib
from pathlib import Path

from fastapi import FastAPI, Request

from sandbox.core import SandboxState, StateFile, control_app
from sandbox.itsperfect import ItsPerfectSandbox
from sandbox.ppms import PpmsSandbox
from sandbox.qbo import QboSandbox
from sandbox.servicetrade import ServiceTradeSandbox
from sandbox.trackvia import TrackViaSandbox
from sandbox.trustfile import TrustFileSandbox

READ_ONLY_METHODS = ("GET", "HEAD", "OPTIONS")
CHANGING_GETS = ("/qbo/connect/oauth2",      # the consent page issues a code
                 "/itsperfect/",             # every ItsPerfect call counts against its hourly limit
                 "/trackvia/")               # ... and every TrackVia call against the gateway's


def build_app(seed: int = 7, qbo_records: int = 40, servicetrade_jobs: int = 240,
              state_file: Path | None = None) -> FastAPI:
    """`state_file`: keep the vendors' data there across restarts (loaded now, saved after each change)."""
    state = SandboxState(seed)
    vendors = [QboSandbox(state, per_entity=qbo_records), TrustFileSandbox(state),
               ServiceTradeSandbox(state, jobs=servicetrade_jobs), ItsPerfectSandbox(state),
               TrackViaSandbox(state), PpmsSandbox(state)]
    store = StateFile(state_file, state, vendors) if state_file is not None else None
    restored = store.load() if store is not None else False

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if store is not None:
            store.start()
        yield
        if store is not None:
            store.stop()

    root = FastAPI(title="vendor sandbox", lifespan=lifespan)
    root.state.store = store

    @root.get("/health")
    def health():
        return {"status": "ok", "vendors": [v.name for v in vendors],
                "state_file": None if store is None else {"path": str(store.path), "restored": restored}}

    if store is not None:
        @root.middleware("http")
        async def remember(request: Request, call_next):
            response = await call_next(request)
            if request.method not in READ_ONLY_METHODS or request.url.path.startswith(CHANGING_GETS):
                store.changed()
            return response

    root.mount("/_sandbox", control_app(state, vendors))
    for vendor in vendors:
        root.mount(f"/{vendor.name}", vendor.app)
    return root
