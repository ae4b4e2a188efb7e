"""`isograd.serve.run`: loads the model once, the detector only when given (isograd.detect,
imported lazily), and hands uvicorn the app."""

from __future__ import annotations

import sys
import types

import pytest
from starlette.testclient import TestClient

import isograd.serve


@pytest.fixture
def served(monkeypatch, tiny):
    """run() with load_model and uvicorn.run replaced: what they were given."""
    import uvicorn

    import isograd.lm

    seen: dict = {}

    def load(name, **kw):
        seen["load"] = (name, kw)
        return tiny

    monkeypatch.setattr(isograd.lm, "load_model", load)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, uvicorn=kw))
    return seen


def test_run_without_detector_never_imports_it(served, monkeypatch):
    monkeypatch.delitem(sys.modules, "isograd.detect", raising=False)
    isograd.serve.run("some/model", port=1234, revision="abc", dtype="fp64")
    assert "isograd.detect" not in sys.modules
    assert served["load"] == ("some/model", {"dtype": "fp64", "device": "cpu", "revision": "abc",
                                              "trust_remote_code": False})
    assert served["uvicorn"]["port"] == 1234 and served["uvicorn"]["host"] == "127.0.0.1"
    assert served["uvicorn"]["timeout_graceful_shutdown"] is None  # SIGTERM waits for in flight
    with TestClient(served["app"]) as c:
        assert c.get("/v1/models").json()["data"][0] == {
            "id": "some/model", "object": "model", "created": 0, "owned_by": "isograd",
            "detector": False}


def test_run_loads_the_detector_for_this_model(served, monkeypatch):
    from tests.serve.conftest import FakeDetector

    calls = []
    fake = types.ModuleType("isograd.detect")

    def load_detector(path, *, model_id=None, revision=None, allow_model_mismatch=False):
        calls.append((path, model_id, revision, allow_model_mismatch))
        return FakeDetector()

    fake.load_detector = load_detector
    monkeypatch.setitem(sys.modules, "isograd.detect", fake)
    isograd.serve.run("m", detector="det.json", api_key="k")
    assert calls == [("det.json", "m", None, False)]
    with TestClient(served["app"]) as c:
        r = c.post("/v1/chat/completions", headers={"Authorization": "Bearer k"}, json={
            "model": "m", "temperature": 0, "max_tokens": 3,
            "messages": [{"role": "user", "content": "Hi"}]})
    unc = r.json()["choices"][0]["uncertainty"]
    assert unc["p_error"] == pytest.approx(1 - unc["p"]) and isinstance(unc["abstain"], bool)


def test_public_host_without_key_warns(served):
    with pytest.warns(UserWarning, match="without an API key"):
        isograd.serve.run("m", host="0.0.0.0")
