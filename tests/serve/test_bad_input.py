"""Every bad input gets a 400 naming the field, and the server keeps serving."""

from __future__ import annotations

import hmac

import httpx
import pytest

from isograd.serve import ServeOptions, create_app
from tests.serve.server import post, running

CHAT, COMP = "/v1/chat/completions", "/v1/completions"
LIMIT = 20_000
GOOD_CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3,
             "temperature": 0}
GOOD_COMP = {"model": "tiny", "prompt": "Hi", "max_tokens": 3, "temperature": 0}


@pytest.fixture(scope="module")
def url(tiny):
    opts = ServeOptions(model_name="tiny", max_tokens_cap=50, default_max_tokens=8,
                        max_body_bytes=LIMIT)
    with running(create_app(*tiny, opts)) as u:
        yield u


def chat(**kw):
    return {**GOOD_CHAT, **kw}


def without(body, key):
    return {k: v for k, v in body.items() if k != key}


BAD = [
    # (id, path, body, the field the error names)
    ("missing-messages", CHAT, without(GOOD_CHAT, "messages"), "messages"),
    ("missing-model", CHAT, without(GOOD_CHAT, "model"), "model"),
    ("missing-prompt", COMP, without(GOOD_COMP, "prompt"), "prompt"),
    ("messages-not-array", CHAT, chat(messages="Hi"), "messages"),
    ("messages-empty", CHAT, chat(messages=[]), "messages"),
    ("message-not-object", CHAT, chat(messages=["Hi"]), "messages[0]"),
    ("content-not-string", CHAT, chat(messages=[{"role": "user", "content": 5}]),
     "messages[0].content"),
    ("bad-role", CHAT, chat(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role"),
    ("message-extra-key", CHAT, chat(messages=[{"role": "user", "content": "x", "name": "a"}]),
     "messages[0].name"),
    ("model-not-string", CHAT, chat(model=3), "model"),
    ("unknown-model", CHAT, chat(model="gpt-4o"), "model"),
    ("max-tokens-string", CHAT, chat(max_tokens="5"), "max_tokens"),
    ("max-tokens-bool", CHAT, chat(max_tokens=True), "max_tokens"),
    ("max-tokens-float", CHAT, chat(max_tokens=2.5), "max_tokens"),
    ("max-tokens-zero", CHAT, chat(max_tokens=0), "max_tokens"),
    ("max-tokens-negative", COMP, {**GOOD_COMP, "max_tokens": -1}, "max_tokens"),
    ("max-tokens-above-cap", CHAT, chat(max_tokens=51), "max_tokens"),
    ("max-completion-tokens-zero", CHAT, without(chat(max_completion_tokens=0), "max_tokens"),
     "max_completion_tokens"),
    ("temperature-string", CHAT, chat(temperature="hot"), "temperature"),
    ("temperature-above-2", CHAT, chat(temperature=2.5), "temperature"),
    ("temperature-negative", CHAT, chat(temperature=-0.1), "temperature"),
    ("seed-float", CHAT, chat(seed=1.5), "seed"),
    ("seed-negative", CHAT, chat(seed=-1), "seed"),
    ("stop-number", CHAT, chat(stop=5), "stop"),
    ("stop-too-many", CHAT, chat(stop=["a", "b", "c", "d", "e"]), "stop"),
    ("stop-empty-string", CHAT, chat(stop=[""]), "stop"),
    ("profile-not-bool", CHAT, chat(token_uncertainty="yes"), "token_uncertainty"),
    ("prompt-array", COMP, {**GOOD_COMP, "prompt": ["a", "b"]}, "prompt"),
    ("prompt-token-ids", COMP, {**GOOD_COMP, "prompt": [1, 2, 3]}, "prompt"),
    ("prompt-empty", COMP, {**GOOD_COMP, "prompt": ""}, "prompt"),
    ("prompt-longer-than-context", COMP, {**GOOD_COMP, "prompt": "a" * 600}, "prompt"),
    ("prompt-plus-max-tokens-past-context", COMP,
     {**GOOD_COMP, "prompt": "a" * 500, "max_tokens": 20}, "max_tokens"),
    ("chat-prompt-longer-than-context", CHAT,
     chat(messages=[{"role": "user", "content": "a" * 600}]), "messages"),
    ("n-2", CHAT, chat(n=2), "n"),
    ("stream-true", CHAT, chat(stream=True), "stream"),
    ("top-p", CHAT, chat(top_p=0.5), "top_p"),
    ("tools", CHAT, chat(tools=[{"type": "function", "function": {"name": "f"}}]), "tools"),
    ("presence-penalty", COMP, {**GOOD_COMP, "presence_penalty": 1.0}, "presence_penalty"),
    ("logprobs", CHAT, chat(logprobs=True), "logprobs"),
    ("stream-zero-is-not-false", CHAT, chat(stream=0), "stream"),
    ("n-true-is-not-1", CHAT, chat(n=True), "n"),
    ("best-of", COMP, {**GOOD_COMP, "best_of": 3}, "best_of"),
    ("unknown-parameter", CHAT, chat(foo=1), "foo"),
    ("chat-field-on-completions", COMP, {**GOOD_COMP, "messages": []}, "messages"),
    ("completion-field-on-chat", CHAT, chat(prompt="x"), "prompt"),
    ("body-not-object", CHAT, [GOOD_CHAT], None),
]


@pytest.mark.parametrize("path,body,param", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_body_is_a_400_naming_the_field(url, path, body, param):
    r = post(url, path, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param
    if param is not None:
        assert err["message"].startswith(param)


@pytest.mark.parametrize("content", [b'{"model": "tiny", "messages": [', b"\xff\xfe", b"",
                                     b"not json"], ids=["truncated", "not-utf8", "empty", "text"])
def test_malformed_json(url, content):
    r = post(url, CHAT, content=content, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "body"
    assert "malformed JSON" in r.json()["error"]["message"]


def test_body_above_the_limit(url):
    big = b'{"model": "tiny", "prompt": "' + b"a" * LIMIT + b'"}'
    r = post(url, COMP, content=big, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "body"
    # chunked (no content-length): counted while read
    chunks = iter([big[i:i + 4096] for i in range(0, len(big), 4096)])
    r = httpx.post(url + COMP, content=chunks, headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert r.status_code == 400 and r.json()["error"]["param"] == "body"


@pytest.mark.parametrize("extra", [{"n": 1}, {"stream": False}, {"top_p": 1}, {"top_p": 1.0},
                                   {"frequency_penalty": 0}, {"logprobs": False},
                                   {"tools": None}, {"user": "alice"},
                                   {"max_completion_tokens": 3}],
                         ids=lambda e: "-".join(f"{k}={v}" for k, v in e.items()))
def test_openai_defaults_are_accepted(url, extra):
    r = post(url, CHAT, chat(**extra))
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["uncertainty"]["n_tokens"] >= 1


def test_server_keeps_serving_and_counts_errors(url):
    for body in ([1], {"model": "x"}, chat(n=3)):
        assert post(url, CHAT, body).status_code == 400
    assert post(url, CHAT, GOOD_CHAT).status_code == 200
    assert post(url, COMP, GOOD_COMP).status_code == 200
    metrics = httpx.get(url + "/metrics").text
    assert 'isograd_errors_total{type="invalid_request_error"}' in metrics
    assert httpx.get(url + "/nowhere").json()["error"]["message"] == "Not Found"


def test_api_key_checked_in_constant_time(tiny, monkeypatch):
    calls, real = [], hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("isograd.serve.app.hmac.compare_digest", spy)
    with running(create_app(*tiny, ServeOptions(model_name="tiny", api_key="s3cret"))) as u:
        assert post(u, CHAT, GOOD_CHAT).status_code == 401
        bad = post(u, CHAT, GOOD_CHAT, headers={"Authorization": "Bearer s3cre"})
        assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(u + "/v1/models").status_code == 401
        ok = post(u, CHAT, GOOD_CHAT, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert httpx.get(u + "/health").status_code == 200  # health needs no key
    assert (b"s3cre", b"s3cret") in calls and (b"s3cret", b"s3cret") in calls
