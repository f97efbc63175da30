"""GET /health's `trustfile` check against each form of TrustFile's 404 for an unknown connection: the
public spec documents it with no body, so a healthy connection must not read FAIL for lack of a message."""
from __future__ import annotations

import pytest
import requests

from sandbox import trustfile as tf_sandbox


@pytest.mark.parametrize("form", tf_sandbox.UNKNOWN_CONNECTION_FORMS)
def test_a_healthy_trustfile_connection_is_ok_whatever_its_404_says(serve, vendor_connections, sandbox, form):
    sandbox.control("trustfile", unknown_connection=form)
    response = requests.get(f"{serve()}/health", timeout=30)
    statuses = {s["type"]: (s["status"], s["description"]) for s in response.json()["statuses"]}
    assert statuses["trustfile"] == ("OK", "NOMINAL")
