"""Device placement: with torch's default device set to "meta" and the model on the CPU, every
public LM entry point gives the same result as without that default.

A tensor that isograd creates without naming a device would land on the meta device and the
call would fail or return meta tensors: this is the CPU-run guard for `--device cuda`.
"""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
import torch

from isograd.lm import (
    greedy_answer,
    greedy_answers,
    qa_prompt,
    sample_answers,
    score,
    score_choices,
)
from isograd.qa.baselines import QAContext, make_baseline

QUESTIONS = ["Who?", "What is the capital of France?"]


@contextlib.contextmanager
def meta_default():
    before = torch.get_default_device()
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(before)


def same_both_ways(fn):
    """fn() under the default device and under a meta default: the two results."""
    plain = fn()
    with meta_default():
        meta = fn()
    assert torch.get_default_device() == torch.device("cpu")
    return plain, meta


def assert_same(a, b):
    """Equal values (tensors on the CPU, bit for bit up to 1e-12), recursively."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and b.device == a.device == torch.device("cpu")
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12, equal_nan=True)
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name))
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


@pytest.mark.parametrize("method", ["ghost", "loop"])
def test_score(model, tok, method):
    prompts = [qa_prompt(tok, q) for q in QUESTIONS]
    a, b = same_both_ways(lambda: score(model, tok, prompts, [" yes", " no way"], method=method,
                                        trace=True))
    assert_same(a, b)


@pytest.mark.parametrize("packed", [True, False])
def test_score_choices(model, tok, packed):
    prompts = [qa_prompt(tok, q) for q in QUESTIONS]
    a, b = same_both_ways(lambda: score_choices(model, tok, prompts, [[" a", " bc"], [" x", " y", " z"]],
                                                packed=packed))
    assert_same(a, b)


def test_answer(model, tok):
    from isograd.lm import answer

    assert_same(*same_both_ways(lambda: answer(model, tok, QUESTIONS, max_new_tokens=4)))


def test_generation(model, tok):
    prompts = [qa_prompt(tok, q) for q in QUESTIONS]
    assert_same(*same_both_ways(lambda: greedy_answer(model, tok, prompts[0], max_new_tokens=4)))
    assert_same(*same_both_ways(lambda: greedy_answers(model, tok, prompts, max_new_tokens=4)))
    assert_same(*same_both_ways(lambda: sample_answers(model, tok, prompts[1], k=3,
                                                       max_new_tokens=4, seed=1)))


SAMPLING = {"k": 3, "max_new_tokens": 4}


@pytest.mark.parametrize("name, options", [
    ("p_true", {}), ("p_true", {"brainstorm": True, **SAMPLING}),
    ("naive_entropy", SAMPLING),
    ("semantic_entropy", SAMPLING), ("semantic_entropy", {"entailment": "llm", **SAMPLING}),
    ("semantic_entropy", {"entailment": "embedding", **SAMPLING}),
    ("semantic_entropy", {"entailment": "nli", **SAMPLING}),
    ("msp", {}), ("mean_token_entropy", {}),
])
def test_every_baseline(model, tok, name, options):
    prompt = qa_prompt(tok, QUESTIONS[1])
    answer = greedy_answer(model, tok, prompt, max_new_tokens=4)
    if options.get("entailment") == "nli":  # a tiny NLI classifier built in code
        from tests.qa.test_baselines import _tiny_nli

        options = {**options, "nli": (_tiny_nli(tok, 0), tok)}
    b = make_baseline(name, **options)
    ctxs = [QAContext(QUESTIONS[1], prompt, answer, None)]
    if name == "msp":  # an answer without log-probabilities makes msp run a forward
        bare = dataclasses.replace(answer, token_logprobs=())
        ctxs.append(QAContext(QUESTIONS[1], prompt, bare, None))
    for ctx in ctxs:
        a, m = same_both_ways(lambda ctx=ctx: b(model, tok, ctx))
        assert_same(a, m)
