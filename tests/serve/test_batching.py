"""Dynamic batching against a real server: full queue, deadline, a failing request, a client
that disconnects, and a bounded load test."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time

import httpx
import pytest
import torch

from isograd.lm import score
from isograd.lm.sampling import decode
from isograd.serve import ServeOptions, create_app
from tests.serve.server import post, running

COMP = "/v1/completions"
TOL = 1e-10


def body(prompt: str, **kw) -> dict:
    return {"model": "tiny", "prompt": prompt, "max_tokens": 4, "temperature": 0, **kw}


def metric(text: str, name: str) -> float:
    """The value of one sample line of Prometheus text (labels included in `name`)."""
    m = re.search("^" + re.escape(name) + r" ([0-9.e+-]+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def in_thread(fn, *args, **kw):
    out: dict = {}

    def go():
        out["r"] = fn(*args, **kw)

    t = threading.Thread(target=go)
    t.start()
    return t, out


def wait_depth(url: str, n: int) -> None:
    deadline = time.monotonic() + 20
    while httpx.get(url + "/health").json()["queue_depth"] < n:
        assert time.monotonic() < deadline, f"the queue never held {n} requests"
        time.sleep(0.02)


def test_full_queue_is_a_429_and_the_waiting_are_answered(tiny):
    opts = ServeOptions(model_name="tiny", queue_size=2, max_batch_size=8, max_wait_ms=2000)
    with running(create_app(*tiny, opts)) as url:
        waiting = [in_thread(post, url, COMP, body(f"q{i}")) for i in range(2)]
        wait_depth(url, 2)
        r = post(url, COMP, body("one too many"))
        assert r.status_code == 429
        assert r.json()["error"]["type"] == "rate_limit_error"
        for t, out in waiting:
            t.join()
            assert out["r"].status_code == 200
        assert metric(httpx.get(url + "/metrics").text,
                      'isograd_requests_total{endpoint="/v1/completions",status="429"}') == 1


def test_past_the_deadline_is_a_503(tiny):
    opts = ServeOptions(model_name="tiny", request_timeout_s=0.3, max_wait_ms=1500)
    with running(create_app(*tiny, opts)) as url:
        r = post(url, COMP, body("slow"))
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "timeout"
        assert httpx.get(url + "/health").status_code == 200


def _marked(model, marker: int):
    """A forward hook giving NaN logits to rows whose input holds four `marker` tokens in a
    row: that request's scores are non-finite, the others' untouched."""

    def hook(_m, args, kwargs, out):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None or ids.shape[1] < 4:
            return out
        hit = (ids.unfold(1, 4, 1) == marker).all(-1).any(-1)
        if hit.any():
            out.logits = torch.where(hit[:, None, None], torch.nan, out.logits)
        return out

    return model.register_forward_hook(hook, with_kwargs=True)


@pytest.mark.filterwarnings("ignore:fn returned NaN")  # the marked row's, on purpose
def test_a_failing_request_fails_alone(tiny):
    model, tok = tiny
    marker = tok.convert_tokens_to_ids("!")
    opts = ServeOptions(model_name="tiny", max_batch_size=8, max_wait_ms=1000)
    handle = _marked(model, marker)
    try:
        with running(create_app(model, tok, opts)) as url:
            prompts = ["good one", "bad!!!! one", "good two"]
            threads = [in_thread(post, url, COMP, body(p)) for p in prompts]
            for t, _ in threads:
                t.join()
            res = [out["r"] for _, out in threads]
            text = httpx.get(url + "/metrics").text
    finally:
        handle.remove()
    assert [r.status_code for r in res] == [200, 500, 200]
    assert res[1].json()["error"]["code"] == "model_error"
    assert "non-finite" in res[1].json()["error"]["message"]
    assert metric(text, "isograd_batch_size_count") == 1  # the three shared one batch
    for p, r in zip(prompts, res):
        if r.status_code == 200:
            unc = r.json()["choices"][0]["uncertainty"]
            s = score(model, tok, [p], [unc["scored_token_ids"]])
            assert unc["epistemic"] == pytest.approx(float(s.epistemic[0]), rel=TOL)


def test_a_client_that_disconnects_does_not_break_the_batch(tiny):
    opts = ServeOptions(model_name="tiny", max_batch_size=8, max_wait_ms=600)
    with running(create_app(*tiny, opts)) as url:
        port = int(url.rsplit(":", 1)[1])
        payload = b'{"model": "tiny", "prompt": "gone", "max_tokens": 4, "temperature": 0}'
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/json\r\nContent-Length: " + str(len(payload)).encode()
                     + b"\r\n\r\n" + payload)
        wait_depth(url, 1)
        stay, out = in_thread(post, url, COMP, body("stay"))
        sock.close()  # gone before its batch runs
        stay.join()
        assert out["r"].status_code == 200
        assert post(url, COMP, body("after")).status_code == 200
        text = httpx.get(url + "/metrics").text
    assert "server_error" not in text


def test_load_64_concurrent_requests(tiny):
    model, tok = tiny
    opts = ServeOptions(model_name="tiny", max_batch_size=16, max_wait_ms=50, queue_size=64)
    prompts = [f"Question {i}: what is {i} plus {i}?" for i in range(64)]

    async def all_at_once(url):
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=64)) as c:
            return await asyncio.gather(*(c.post(url + COMP, json=body(p)) for p in prompts))

    with running(create_app(model, tok, opts)) as url:
        res = asyncio.run(all_at_once(url))
        text = httpx.get(url + "/metrics").text
    assert [r.status_code for r in res] == [200] * 64
    # none lost or mixed up: each answer is its own prompt's greedy answer, scored alone
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    alone = [decode(model, tok, [x], temperature=0, max_new_tokens=4)[0] for x in ids]
    got = [r.json()["choices"][0] for r in res]
    assert [g["text"] for g in got] == [a.text for a in alone]
    scored = [g["uncertainty"]["scored_token_ids"] for g in got]
    s = score(model, tok, prompts, scored, batch_size=1)
    for k, g in enumerate(got):
        for f in ("p", "epistemic", "aleatoric", "grad_log_p"):
            assert g["uncertainty"][f] == pytest.approx(float(getattr(s, f)[k]), rel=TOL), f
    assert metric(text, 'isograd_requests_total{endpoint="/v1/completions",status="200"}') == 64
    assert metric(text, "isograd_batch_size_sum") == 64
    assert metric(text, "isograd_batch_size_count") < 64  # some batch held more than one
    assert metric(text, 'isograd_batch_size_bucket{le="1.0"}') < metric(
        text, "isograd_batch_size_count")
    assert "isograd_errors_total{" not in text
    assert metric(text, "isograd_queue_depth") == 0


def test_sampled_and_greedy_requests_share_a_batch_and_answer_as_alone(tiny):
    from isograd.lm import sample_answers

    model, tok = tiny
    opts = ServeOptions(model_name="tiny", max_batch_size=8, max_wait_ms=1000)
    asks = [("Once upon", 1.0, 5), ("A cat", 0.0, 0), ("The sea", 1.3, 6), ("Why?", 0.7, 7)]
    with running(create_app(model, tok, opts)) as url:
        threads = [in_thread(post, url, COMP, body(p, temperature=t, seed=s, max_tokens=6))
                   for p, t, s in asks]
        for t, _ in threads:
            t.join()
        text = httpx.get(url + "/metrics").text
    assert metric(text, "isograd_batch_size_count") == 1  # all four in one batch
    for (p, t, s), (_, out) in zip(asks, threads):
        (ref,) = sample_answers(model, tok, p, k=1, temperature=t, max_new_tokens=6, seed=s)
        assert out["r"].json()["choices"][0]["text"] == ref.text, (p, t, s)
