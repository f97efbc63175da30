"""The sandbox's root app: each vendor under its own prefix, the control API under /_sandbox."""
from __future__ import annotations

from fastapi import FastAPI

from sandbox.core import SandboxState, control_app
from sandbox.qbo import QboSandbox
from sandbox.servicetrade import ServiceTradeSandbox
from sandbox.trustfile import TrustFileSandbox


def build_app(seed: int = 7, qbo_records: int = 40, servicetrade_jobs: int = 240) -> FastAPI:
    state = SandboxState(seed)
    vendors = [QboSandbox(state, per_entity=qbo_records), TrustFileSandbox(state),
               ServiceTradeSandbox(state, jobs=servicetrade_jobs)]
    root = FastAPI(title="vendor sandbox")

    @root.get("/health")
    def health():
        return {"status": "ok", "vendors": [v.name for v in vendors]}

    root.mount("/_sandbox", control_app(state, vendors))
    for vendor in vendors:
        root.mount(f"/{vendor.name}", vendor.app)
    return root
