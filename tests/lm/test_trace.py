"""score(trace=True): the per-token profile against a per-token brute-force loop (float64)."""

from __future__ import annotations

import pytest
import torch

from isograd.lm.prompts import encode_answer, encode_prompt, qa_prompt
from isograd.lm.score import score
from isograd.lm.trace import TokenTrace, prefix_pairs

from ..problems import rel_err
from .tiny_lm import tiny_model, tiny_tokenizer

QUESTIONS = ["What is two plus two?", "Who wrote Hamlet?", "Name a colour.", "Why?"]
ANSWERS = ["four", "Shakespeare wrote it.", "red", "x"]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer(chat=True)


def brute_trace(model, tok, prompt, answer):
    """p_t, ‖∇θ log p_t‖²·p_t² and ‖∇θ p_t‖² for every answer token: one full unpadded forward,
    one backward per token and quantity."""
    params = list(model.parameters())  # deduplicated: the tied GPT-2 embedding counts once
    p_ids = encode_prompt(tok, prompt)
    a_ids = encode_answer(tok, prompt, answer)
    ids = torch.tensor([p_ids + a_ids])
    logp = model(input_ids=ids).logits[0].log_softmax(-1)
    n = len(p_ids)

    def sq(x):
        grads = torch.autograd.grad(x, params, retain_graph=True)
        return float(sum(g.double().square().sum() for g in grads))

    ps, sq_log, sq_p = [], [], []
    for t, v in enumerate(a_ids):
        lp = logp[n - 1 + t, v]
        ps.append(float(lp.detach().exp()))
        sq_log.append(ps[-1] ** 2 * sq(lp))
        sq_p.append(sq(lp.exp()))
    f64 = dict(dtype=torch.float64)
    return (a_ids, torch.tensor(ps, **f64), torch.tensor(sq_log, **f64),
            torch.tensor(sq_p, **f64))


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("method", ["auto", "loop"])
def test_trace_matches_per_token_brute_force(kind, method, tok):
    model = tiny_model(kind)
    prompts = [qa_prompt(tok, q) for q in QUESTIONS]
    refs = [brute_trace(model, tok, p, a) for p, a in zip(prompts, ANSWERS)]
    sigma2 = 0.5
    for side in ("right", "left"):
        # 5 rows per pass: prefix rows of different pairs and lengths share padded batches
        s = score(model, tok, prompts, ANSWERS, method=method, batch_size=3, padding_side=side,
                  trace=True, trace_batch_size=5, sigma2=sigma2)
        assert s.trace is not None and len(s.trace) == len(ANSWERS)
        for tr, (ids, p_ref, sq_ref, sq_direct), lps in zip(s.trace, refs, s.token_logprobs):
            assert isinstance(tr, TokenTrace) and tr.token_ids == tuple(ids)
            assert rel_err(tr.p, p_ref) <= 1e-10
            assert rel_err(tr.epistemic, sigma2 * sq_ref) <= 1e-8
            # autograd on p_t itself: HF's Llama RMSNorm computes in float32 even in a float64
            # model, so ∇p and p·∇log p differ by float32 rounding there (~5e-8), not beyond
            assert rel_err(tr.epistemic, sigma2 * sq_direct) <= 1e-6
            torch.testing.assert_close(tr.aleatoric, p_ref * (1 - p_ref), rtol=1e-10, atol=0)
            # the profile's p_t are the main pass's token probabilities
            torch.testing.assert_close(tr.p, torch.tensor(lps, dtype=torch.float64).exp())
        torch.testing.assert_close(s.epistemic_token_max,
                                   torch.stack([sigma2 * r[2].max() for r in refs]), rtol=1e-8,
                                   atol=0)
        torch.testing.assert_close(s.epistemic_token_mean,
                                   torch.stack([sigma2 * r[2].mean() for r in refs]), rtol=1e-8,
                                   atol=0)


def test_first_token_of_the_trace_is_the_first_token_prediction(tok):
    model = tiny_model("llama")
    prompts = [qa_prompt(tok, q) for q in QUESTIONS]
    s = score(model, tok, prompts, ANSWERS, prediction="first_token", trace=True)
    torch.testing.assert_close(torch.stack([t.epistemic[0] for t in s.trace]), s.epistemic,
                               rtol=1e-9, atol=0)


def test_no_trace_by_default(tok):
    model = tiny_model("gpt2")
    s = score(model, tok, [qa_prompt(tok, "Why?")], ["x"])
    assert s.trace is None and s.epistemic_token_max is None and s.epistemic_token_mean is None


def test_prefix_pairs_order():
    rows = prefix_pairs([([1, 2], [3, 4, 5]), ([6], [7])])
    assert rows == [([1, 2], [3]), ([1, 2, 3], [4]), ([1, 2, 3, 4], [5]), ([6], [7])]


def test_trace_batch_size_changes_nothing_but_the_passes(tok):
    model = tiny_model("gpt2")
    prompts = [qa_prompt(tok, q) for q in QUESTIONS]
    a = score(model, tok, prompts, ANSWERS, trace=True, trace_batch_size=1, method="auto")
    b = score(model, tok, prompts, ANSWERS, trace=True, method="auto")
    for x, y in zip(a.trace, b.trace):
        assert rel_err(x.epistemic, y.epistemic) <= 1e-9
    with pytest.raises(ValueError, match="trace_batch_size must be >= 1, got 0"):
        score(model, tok, prompts, ANSWERS, trace=True, trace_batch_size=0)


def test_row_vectors_are_the_trace_and_by_layer(tok):
    model = tiny_model("llama")
    prompts = [qa_prompt(tok, q) for q in QUESTIONS[:2]]
    s = score(model, tok, prompts, ANSWERS[:2], trace=True)
    v = s.row_vectors(1)
    assert v["token_epistemic"] == s.trace[1].epistemic.tolist()
    assert v["token_aleatoric"] == s.trace[1].aleatoric.tolist()
    assert len(v["token_epistemic"]) == int(s.n_tokens[1])
    assert v["by_layer"] == {g: float(x[1]) for g, x in s.by_layer.items()}
    plain = score(model, tok, prompts, ANSWERS[:2]).row_vectors(0)
    assert set(plain) == {"by_layer"}


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_token_trace_alone_is_the_trace_of_score(kind, tok):
    """token_trace (the qa trace stage's call) gives score(trace=True)'s profile without the main
    pass; both are held to the brute force above."""
    from isograd.lm import token_trace

    model = tiny_model(kind)
    prompts = [qa_prompt(tok, q) for q in QUESTIONS]
    s = score(model, tok, prompts, ANSWERS, trace=True, sigma2=0.5)
    traces, tmax, tmean = token_trace(model, tok, prompts, ANSWERS, sigma2=0.5, batch_size=4,
                                      padding_side="left")
    for a, b in zip(traces, s.trace):
        assert a.token_ids == b.token_ids
        assert rel_err(a.epistemic, b.epistemic) <= 1e-9
        torch.testing.assert_close(a.p, b.p, rtol=1e-10, atol=0)
    torch.testing.assert_close(tmax, s.epistemic_token_max, rtol=1e-9, atol=0)
    torch.testing.assert_close(tmean, s.epistemic_token_mean, rtol=1e-9, atol=0)
    for bad, msg in (({"batch_size": 0}, "batch_size must be >= 1"),
                     ({"padding_side": "up"}, "padding_side must be"),
                     ({"sigma2": -1.0}, "sigma2 must be >= 0")):
        with pytest.raises(ValueError, match=msg):
            token_trace(model, tok, prompts, ANSWERS, **bad)
