"""score() / score_choices() against brute force: one pair at a time, direct autograd on p."""

from __future__ import annotations

import math

import pytest
import torch

from isograd.lm.batching import encode_answer, encode_prompt
from isograd.lm.choices import score_choices
from isograd.lm.prompts import qa_prompt
from isograd.lm.score import LMScores, Prediction, layer_group, score

from .tiny_lm import tiny_model, tiny_tokenizer

QUESTIONS = ["What is two plus two?", "Who wrote Hamlet?", "Name a colour.", "Why?"]
ANSWERS = ["four", "William Shakespeare wrote it.", "red", "x"]


def _log_p_alone(model, prompt_ids, answer_ids, prediction):
    """log p of one pair from a plain unpadded forward (the reference)."""
    ids = torch.tensor([prompt_ids + answer_ids])
    logp = model(input_ids=ids).logits[0].log_softmax(-1)
    n = len(prompt_ids)
    tok = logp[n - 1:-1].gather(1, ids[0, n:, None])[:, 0]
    if prediction == "sequence":
        return tok.sum(), tok
    if prediction == "geometric":
        return tok.mean(), tok
    return tok[0], tok


def brute_force(model, tok, prompts, answers, prediction):
    """p and ‖∇p‖² per pair: autograd on p itself (not through log p), one pair at a time."""
    params = list(model.parameters())  # deduplicated: the tied GPT-2 embedding counts once
    ps, sq, toks = [], [], []
    for prompt, ans in zip(prompts, answers):
        lp, t = _log_p_alone(model, encode_prompt(tok, prompt), encode_answer(tok, prompt, ans),
                             prediction)
        p = lp.exp()
        grads = torch.autograd.grad(p, params)
        ps.append(float(p.detach()))
        sq.append(float(sum(g.double().square().sum() for g in grads)))
        toks.append(t.detach())
    return torch.tensor(ps, dtype=torch.float64), torch.tensor(sq, dtype=torch.float64), toks


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer(chat=True)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("prediction", [p.value for p in Prediction])
def test_score_matches_brute_force(kind, prediction, tok):
    model = tiny_model(kind)
    prompts = [qa_prompt(tok, q) for q in QUESTIONS]
    p_ref, sq_ref, tok_ref = brute_force(model, tok, prompts, ANSWERS, prediction)
    for side in ("right", "left"):
        s = score(model, tok, prompts, ANSWERS, prediction=prediction, batch_size=3,
                  padding_side=side, method="loop")
        assert isinstance(s, LMScores) and s.prediction == prediction
        torch.testing.assert_close(s.p, p_ref, rtol=1e-9, atol=0)
        torch.testing.assert_close(s.epistemic, sq_ref, rtol=1e-7, atol=1e-30)
        torch.testing.assert_close(s.aleatoric, p_ref * (1 - p_ref))
        torch.testing.assert_close(s.total, s.epistemic + s.aleatoric)
        for got, ref in zip(s.token_logprobs, tok_ref):
            torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), ref.double())
        assert s.n_tokens.tolist() == [len(a) for a in ANSWERS]  # char-level tokenizer


def test_batched_equals_one_at_a_time_fp32(tok):
    """Padding in fp32 changes nothing beyond float rounding (the tiny Llama, both sides)."""
    model = tiny_model("llama", dtype=torch.float32)
    prompts = [qa_prompt(tok, q) for q in QUESTIONS]
    alone = [score(model, tok, [p], [a], method="loop") for p, a in zip(prompts, ANSWERS)]
    for side in ("left", "right"):
        s = score(model, tok, prompts, ANSWERS, batch_size=4, padding_side=side, method="loop")
        torch.testing.assert_close(s.p, torch.cat([a.p for a in alone]), rtol=1e-5, atol=0)
        torch.testing.assert_close(s.epistemic, torch.cat([a.epistemic for a in alone]),
                                   rtol=1e-4, atol=0)


def test_predictions_relations(tok):
    model = tiny_model("gpt2")
    prompts = [qa_prompt(tok, q) for q in QUESTIONS]
    seq = score(model, tok, prompts, ANSWERS, prediction="sequence", method="loop")
    geo = score(model, tok, prompts, ANSWERS, prediction="geometric", method="loop")
    first = score(model, tok, prompts, ANSWERS, prediction="first_token", method="loop")
    n = seq.n_tokens.double()
    torch.testing.assert_close(geo.log_p, seq.log_p / n)
    # the pipeline derives one from the other: ∇ log p_geo = ∇ log p_seq / n
    torch.testing.assert_close(geo.sq_grad_norm_log_p, seq.sq_grad_norm_log_p / n**2)
    torch.testing.assert_close(first.log_p, torch.tensor([t[0] for t in seq.token_logprobs],
                                                         dtype=torch.float64))
    # a one-token answer has the same p under all three definitions
    one = n == 1
    assert one.any()
    torch.testing.assert_close(seq.epistemic[one], geo.epistemic[one])
    torch.testing.assert_close(seq.epistemic[one], first.epistemic[one])


def test_sigma2_scales_epistemic_only(tok):
    model = tiny_model("llama")
    prompts = [qa_prompt(tok, q) for q in QUESTIONS[:2]]
    a = score(model, tok, prompts, ANSWERS[:2], method="loop")
    b = score(model, tok, prompts, ANSWERS[:2], method="loop", sigma2=0.25)
    torch.testing.assert_close(b.epistemic, 0.25 * a.epistemic)
    torch.testing.assert_close(b.aleatoric, a.aleatoric)


def test_underflowing_p_keeps_a_finite_log(tok):
    """A long answer: p underflows in float64, log p and the norm of log p stay finite."""
    model = tiny_model("gpt2")
    long = "abcdefghij" * 40  # 400 tokens, each of probability ~1/70
    s = score(model, tok, [qa_prompt(tok, "Say it.")], [long], method="loop", prediction="sequence")
    assert s.log_p.item() < -1000 and math.isfinite(s.log_p.item())
    assert math.isfinite(s.sq_grad_norm_log_p.item()) and s.sq_grad_norm_log_p.item() > 0
    assert s.p.item() == 0.0 and s.epistemic.item() == 0.0


def test_token_ids_answers_equal_text_answers(tok):
    model = tiny_model("llama")
    prompts = [qa_prompt(tok, q) for q in QUESTIONS]
    ids = [encode_answer(tok, p, a) for p, a in zip(prompts, ANSWERS)]
    a = score(model, tok, prompts, ANSWERS, method="loop")
    b = score(model, tok, prompts, ids, method="loop")
    torch.testing.assert_close(a.epistemic, b.epistemic)


def test_by_layer_groups_sum_to_epistemic(tok):
    model = tiny_model("llama")
    prompts = [qa_prompt(tok, q) for q in QUESTIONS]
    s = score(model, tok, prompts, ANSWERS, method="loop", batch_size=2)
    assert {"embed", "block.0", "block.1", "norm", "lm_head"} == set(s.by_layer)
    torch.testing.assert_close(sum(s.by_layer.values()), s.epistemic)
    assert all(bool((v >= 0).all()) for v in s.by_layer.values())


def test_layer_group_names():
    assert layer_group("model.layers.12.self_attn.q_proj.weight") == "block.12"
    assert layer_group("transformer.h.3.attn.c_attn.bias") == "block.3"
    assert layer_group("transformer.wte.weight") == "embed"
    assert layer_group("transformer.ln_f.weight") == "ln_f"


def test_errors(tok):
    model = tiny_model("gpt2")
    with pytest.raises(ValueError, match="allowed: 'sequence', 'geometric', 'first_token'"):
        score(model, tok, ["a"], ["b"], prediction="mean")
    with pytest.raises(ValueError, match="2 prompts but 1 answers"):
        score(model, tok, ["a", "b"], ["c"])
    with pytest.raises(ValueError, match="pair 0: the answer has no tokens"):
        score(model, tok, ["a"], [[]])


def test_state_restored(tok):
    model = tiny_model("gpt2")
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    score(model, tok, ["<s>q"], ["ab"], method="loop")
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


def _brute_choice(model, tok, prompt, options):
    params = list(model.parameters())
    lls = []
    for o in options:
        lp, _ = _log_p_alone(model, encode_prompt(tok, prompt), encode_answer(tok, prompt, o),
                             "sequence")
        lls.append(lp)
    ll = torch.stack(lls)
    k = int(ll.argmax())
    p = ll.softmax(0)[k]
    grads = torch.autograd.grad(p, params)
    return k, float(p.detach()), float(sum(g.double().square().sum() for g in grads))


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_score_choices_matches_brute_force(kind, tok):
    model = tiny_model(kind)
    prompts = [qa_prompt(tok, q) for q in QUESTIONS[:3]]
    options = [["four", "five", "twenty two"], ["me", "Shakespeare"], ["red", "blue", "a", "b"]]
    for packed in (False, True):
        _check_choices(score_choices(model, tok, prompts, options, batch_size=2, packed=packed),
                       model, tok, prompts, options)
    # the default checks once whether the model honours a 4-D mask (both tiny models do)
    _check_choices(score_choices(model, tok, prompts, options), model, tok, prompts, options)


def _check_choices(s, model, tok, prompts, options):
    for i, (pr, opts) in enumerate(zip(prompts, options)):
        k, p, sq = _brute_choice(model, tok, pr, opts)
        assert int(s.pick[i]) == k
        assert s.p[i].item() == pytest.approx(p, rel=1e-9)
        assert s.epistemic[i].item() == pytest.approx(sq, rel=1e-7)
        assert len(s.option_logliks[i]) == len(opts)
        assert max(s.option_logliks[i]) == s.option_logliks[i][k]
    torch.testing.assert_close(s.aleatoric, s.p * (1 - s.p))


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_auto_engine_matches_loop_on_padded_batches(kind, tok):
    """method="auto" (the batched engine where it has rules) gives the loop engine's numbers."""
    model = tiny_model(kind)
    prompts = [qa_prompt(tok, q) for q in QUESTIONS]
    ref = score(model, tok, prompts, ANSWERS, method="loop")
    for side in ("left", "right"):
        s = score(model, tok, prompts, ANSWERS, method="auto", batch_size=4, padding_side=side)
        torch.testing.assert_close(s.epistemic, ref.epistemic, rtol=1e-9, atol=0)
        for g in ref.by_layer:
            torch.testing.assert_close(s.by_layer[g], ref.by_layer[g], rtol=1e-9, atol=1e-300)


def test_auto_falls_back_to_loop_when_the_batched_engine_fails(tok, monkeypatch):
    import isograd.norms.ghost as G

    model = tiny_model("llama")
    prompts, answers = [qa_prompt(tok, QUESTIONS[0])], ANSWERS[:1]
    ref = score(model, tok, prompts, answers, method="loop")

    def ghost_cannot(*a, **k):
        raise G.GhostUnsupported("no exact rule for this batch")

    # the fallback lives in sq_grad_norms itself: the batched engine it calls says it cannot
    monkeypatch.setattr(G, "ghost_sq_grad_norms", ghost_cannot)
    with pytest.warns(RuntimeWarning, match="using the loop engine"):
        s = score(model, tok, prompts, answers, method="auto")
    torch.testing.assert_close(s.epistemic, ref.epistemic)
    with pytest.raises(G.GhostUnsupported, match="no exact rule"):
        score(model, tok, prompts, answers, method="ghost")  # asked for explicitly: no fallback
