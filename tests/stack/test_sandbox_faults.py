"""The sandbox's `truncate_next` fault does what its comment and docs/integrations/sandbox.md say: a
complete 200 answer (Content-Length matches) carrying only the first half of the body's bytes, so its
JSON is broken (issue 9, point 17: the docs called it "a short, well-formed answer")."""
from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from sandbox import servicetrade

ROOT = Path(__file__).resolve().parents[2]


def _login(url: str) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(f"{url}/servicetrade/api/auth", method="POST",
                                     data=json.dumps({"username": servicetrade.USERNAME,
                                                      "password": servicetrade.PASSWORD}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, dict(response.headers), response.read()


def test_truncate_next_sends_half_the_bytes_as_a_complete_answer_that_is_not_json(sandbox):
    sandbox.reset()                              # the sandbox is seeded: the same session token both times
    _, _, full = _login(sandbox.url)
    sandbox.reset()
    sandbox.faults("servicetrade", truncate_next=1)
    status, headers, cut = _login(sandbox.url)

    assert json.loads(full)["data"]["authenticated"] is True
    assert status == 200
    assert cut == full[: len(full) // 2]
    assert int(headers["content-length"]) == len(cut)          # complete as far as HTTP goes
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut)
    _, _, after = _login(sandbox.url)                          # only the next answer
    assert json.loads(after)["data"]["authenticated"] is True


def test_the_docs_say_what_truncate_next_does():
    docs = (ROOT / "docs" / "integrations" / "sandbox.md").read_text()
    line = next(line for line in docs.splitlines() if "`truncate_next`:" in line)
    assert "well-formed" not in line and "first half" in line and "broken" in line
    core = (ROOT / "sandbox" / "core.py").read_text()
    assert "a well-formed short answer" not in core
