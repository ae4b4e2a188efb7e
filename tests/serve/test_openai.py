"""The official openai client against a real server: answers and uncertainty equal isograd.lm."""

from __future__ import annotations

import httpx
import pytest
import torch

from isograd.lm import answer, sample_answers, score, token_trace
from isograd.lm.prompts import INSTRUCTION, qa_prompt
from isograd.serve import ServeOptions, create_app
from tests.serve.conftest import FakeDetector
from tests.serve.server import post, running

openai = pytest.importorskip("openai")
TOL = 1e-10
FIELDS = ("p", "log_p", "epistemic", "aleatoric", "total", "grad_log_p")


@pytest.fixture(scope="module")
def url(tiny):
    with running(create_app(*tiny, ServeOptions(model_name="tiny-llama"))) as u:
        yield u


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def assert_scores(unc: dict, s, k: int = 0) -> None:
    for f in FIELDS:
        assert unc[f] == pytest.approx(float(getattr(s, f)[k]), rel=TOL, abs=TOL), f


def test_chat_equals_lm_answer(client, tiny):
    model, tok = tiny
    question = "What is the capital of France?"
    messages = [{"role": "user", "content": f"{INSTRUCTION}\nQuestion: {question}"}]
    # the chat template of these messages is lm.answer's prompt
    assert tok.apply_chat_template(messages, tokenize=False,
                                   add_generation_prompt=True) == qa_prompt(tok, question)
    r = client.chat.completions.create(model="tiny-llama", temperature=0, max_tokens=32,
                                       messages=messages)
    ref = answer(model, tok, [question], max_new_tokens=32)[0]
    choice = r.choices[0]
    unc = choice.model_extra["uncertainty"]
    assert choice.message.content == ref.text
    assert unc["scored_token_ids"] == list(ref.scored_token_ids)
    assert r.usage.completion_tokens == len(ref.token_ids)
    for f in FIELDS:
        assert unc[f] == pytest.approx(getattr(ref, f), rel=TOL, abs=TOL), f
    assert unc["total"] == pytest.approx(unc["epistemic"] + unc["aleatoric"], rel=1e-12)
    assert "p_error" not in unc and "tokens" not in unc


def test_completion_is_the_prompt_as_is(client, tiny):
    model, tok = tiny
    prompt = "Question: 2+2?\nAnswer:"
    r = client.completions.create(model="tiny-llama", prompt=prompt, temperature=0,
                                  max_tokens=6)
    unc = r.choices[0].model_extra["uncertainty"]
    ids = unc["scored_token_ids"]
    assert r.usage.prompt_tokens == len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert_scores(unc, score(model, tok, [prompt], [ids]))
    assert r.choices[0].finish_reason in ("stop", "length")


def test_profile_equals_token_trace(client, tiny):
    model, tok = tiny
    r = client.chat.completions.create(
        model="tiny-llama", temperature=0, max_tokens=5,
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "Name a colour."}],
        extra_body={"token_uncertainty": True})
    unc = r.choices[0].model_extra["uncertainty"]
    prompt = tok.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}],
        tokenize=False, add_generation_prompt=True)
    (tr,), _, _ = token_trace(model, tok, [prompt], [unc["scored_token_ids"]])
    assert [t["id"] for t in unc["tokens"]] == list(tr.token_ids)
    assert "".join(t["text"] for t in unc["tokens"]).strip() == r.choices[0].message.content
    for key in ("p", "epistemic", "aleatoric"):
        got = torch.tensor([t[key] for t in unc["tokens"]], dtype=torch.float64)
        torch.testing.assert_close(got, getattr(tr, key), rtol=TOL, atol=TOL)
    assert_scores(unc, score(model, tok, [prompt], [unc["scored_token_ids"]]))


def test_sampling_is_reproducible_with_seed_and_defaults_to_temperature_1(url, tiny):
    model, tok = tiny
    prompt = "Once upon a time"
    body = {"model": "tiny-llama", "prompt": prompt, "max_tokens": 8, "seed": 1234}
    a, b = post(url, "/v1/completions", body).json(), post(url, "/v1/completions", body).json()
    assert a["choices"][0]["text"] == b["choices"][0]["text"]
    # no temperature given: OpenAI's default 1, sampled with the private generator of `seed`
    (ref,) = sample_answers(model, tok, prompt, k=1, temperature=1.0, max_new_tokens=8, seed=1234)
    if ref.token_ids:
        assert a["choices"][0]["uncertainty"]["scored_token_ids"] == list(ref.token_ids)
    assert a["choices"][0]["text"] == ref.text
    hot = post(url, "/v1/completions", {**body, "temperature": 1.7}).json()
    (ref_hot,) = sample_answers(model, tok, prompt, k=1, temperature=1.7, max_new_tokens=8,
                                seed=1234)
    assert hot["choices"][0]["text"] == ref_hot.text


def test_stop_cuts_before_the_stop_sequence(url, tiny):
    model, tok = tiny
    body = {"model": "tiny-llama", "prompt": "Tell me:", "max_tokens": 12, "temperature": 0}
    full = post(url, "/v1/completions", body).json()["choices"][0]
    ids = full["uncertainty"]["scored_token_ids"]
    chars = [tok.decode([i]) for i in ids]  # char-level tokenizer: one token, one character
    k = next((j for j in range(2, len(chars)) if chars[j].strip()), None)
    assert k is not None, "the greedy answer needs a third visible character"
    stop = chars[k - 1] + chars[k]  # two tokens: nothing of it may be returned
    cut = post(url, "/v1/completions", {**body, "stop": [stop, "never-seen"]}).json()
    c = cut["choices"][0]
    first = "".join(chars).index(stop)
    assert c["finish_reason"] == "stop"
    assert c["text"] == "".join(chars[:first]).strip()
    assert c["uncertainty"]["scored_stop_token"] == (first == 0)
    if first:  # else the empty answer is scored on its stop token, as lm.answer does
        assert c["uncertainty"]["scored_token_ids"] == ids[:first]
        assert_scores(c["uncertainty"], score(model, tok, ["Tell me:"], [ids[:first]]))


def test_models_health_and_detector(tiny):
    det = FakeDetector()
    with running(create_app(*tiny, ServeOptions(model_name="tiny-llama"), detector=det)) as u:
        models = httpx.get(u + "/v1/models").json()
        assert [m["id"] for m in models["data"]] == ["tiny-llama"]
        assert httpx.get(u + "/health").json()["status"] == "ok"
        r = post(u, "/v1/chat/completions", {"model": "tiny-llama", "temperature": 0,
                                              "max_tokens": 4,
                                              "messages": [{"role": "user", "content": "Hi"}]})
        unc = r.json()["choices"][0]["uncertainty"]
    assert unc["p_error"] == pytest.approx(1 - unc["p"], rel=1e-12)
    assert unc["abstain"] == (unc["p_error"] > 0.5)
    (row,) = det.rows  # the lm.score field names, the detector's input
    assert {"p", "log_p", "epistemic", "aleatoric", "total", "grad_log_p", "n_tokens"} <= set(row)
    assert row["p"] == unc["p"]
