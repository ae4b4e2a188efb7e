"""isograd.lm.answer: the rows are exactly the greedy answers and their lm.score values."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch

from isograd.lm import answer, greedy_answer, qa_prompt, score, scored_token_ids
from isograd.lm.prompts import encode_prompt

from .tiny_lm import tiny_model, tiny_tokenizer

QUESTIONS = ["What is two plus two?", "Who wrote Hamlet?", "Name a colour."]


def _force_stop(model, tok, prompt):
    """Make the model's first greedy token after `prompt` the end-of-sequence token."""
    ids = torch.tensor([encode_prompt(tok, prompt)])
    with torch.no_grad():
        h = model.model(input_ids=ids).last_hidden_state[0, -1]
        model.lm_head.weight[tok.eos_token_id] = 100 * h / h.dot(h)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_rows_equal_greedy_answers_and_score(kind):
    model, tok = tiny_model(kind), tiny_tokenizer()
    res = answer(model, tok, QUESTIONS, max_new_tokens=6, batch_size=2, prediction="sequence")
    assert len(res) == 3 and [r.question for r in res] == QUESTIONS
    prompts = [qa_prompt(tok, q) for q in QUESTIONS]
    gens = [greedy_answer(model, tok, p, max_new_tokens=6) for p in prompts]
    assert any(g.token_ids for g in gens)
    ids = [list(g.token_ids) or scored_token_ids(model, tok, p, ()) for p, g in zip(prompts, gens)]
    ref = score(model, tok, prompts, ids, prediction="sequence", batch_size=1)
    for k, (r, g) in enumerate(zip(res, gens)):
        assert r.prompt == prompts[k] and r.text == g.text and r.token_ids == g.token_ids
        assert list(r.scored_token_ids) == ids[k] and r.empty == (not g.token_ids)
        for f in ("p", "log_p", "epistemic", "aleatoric", "total", "grad_log_p",
                  "epistemic_isotropic", "epistemic_layer_scaled",
                  "epistemic_last_layers", "embedding_grad"):
            assert math.isclose(getattr(r, f), float(getattr(ref, f)[k]), rel_tol=1e-9), f
        if g.token_ids:  # the scoring pass sees the tokens generation produced
            torch.testing.assert_close(torch.tensor(r.token_logprobs),
                                       torch.tensor(g.token_logprobs), rtol=0, atol=1e-9)
        assert r.trace is None
    assert res.prediction == "sequence" and res.prompt_style == "short" and res.sigma2 == 1.0


def test_empty_answer_scores_the_stop_token():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    prompt = qa_prompt(tok, QUESTIONS[1])
    _force_stop(model, tok, prompt)
    res = answer(model, tok, QUESTIONS, max_new_tokens=4)
    r = res[1]
    assert r.empty and r.text == "" and r.token_ids == ()
    assert r.scored_token_ids == (tok.eos_token_id,)
    assert scored_token_ids(model, tok, prompt, ()) == [tok.eos_token_id]
    ref = score(model, tok, [prompt], [[tok.eos_token_id]])
    assert math.isclose(r.epistemic, float(ref.epistemic[0]), rel_tol=1e-9)
    assert r.p > 0.9  # the forced stop token is the model's confident choice


def test_sigma2_prompt_and_records():
    model, tok = tiny_model("llama"), tiny_tokenizer(chat=False)
    a = answer(model, tok, "Who wrote Hamlet?", max_new_tokens=3, prompt="plain")
    b = answer(model, tok, ["Who wrote Hamlet?"], max_new_tokens=3, prompt="plain", sigma2=4.0)
    assert a[0].prompt == qa_prompt(tok, "Who wrote Hamlet?", "plain")
    assert math.isclose(b[0].epistemic, 4 * a[0].epistemic, rel_tol=1e-12)
    assert b[0].aleatoric == a[0].aleatoric
    rec = a.to_records()
    assert json.loads(json.dumps(rec)) == rec  # plain JSON types
    assert rec[0]["token_ids"] == list(a[0].token_ids) and rec[0]["p"] == a[0].p
    with pytest.raises(AttributeError):
        a[0].p = 0.5  # frozen


@pytest.mark.skipif(importlib.util.find_spec("pandas") is None, reason="pandas is not installed")
def test_to_pandas():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    df = answer(model, tok, QUESTIONS[:2], max_new_tokens=3).to_pandas()
    assert list(df["question"]) == QUESTIONS[:2] and "epistemic" in df.columns


@pytest.mark.parametrize("bad, match", [
    ({"questions": []}, "at least one question"),
    ({"questions": ["ok", "  "]}, r"questions\[1\]"),
    ({"prompt": "verbose"}, "short"),
    ({"prediction": "mean"}, "geometric"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
])
def test_bad_input_is_named(bad, match):
    model, tok = tiny_model("llama"), tiny_tokenizer()
    kw = {"questions": ["Why?"], "max_new_tokens": 2, **bad}
    with pytest.raises(ValueError, match=match):
        answer(model, tok, **kw)


def test_trace_is_lm_score_trace():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    res = answer(model, tok, QUESTIONS[:2], max_new_tokens=4, trace=True)
    ref = score(model, tok, [r.prompt for r in res], [list(r.scored_token_ids) for r in res],
                trace=True)
    for r, t in zip(res, ref.trace):
        assert r.trace.token_ids == r.scored_token_ids == t.token_ids
        torch.testing.assert_close(r.trace.epistemic, t.epistemic, rtol=1e-9, atol=0)
        torch.testing.assert_close(r.trace.p, t.p, rtol=1e-9, atol=0)
    rec = res.to_records()[0]["trace"]
    assert rec["p"] == res[0].trace.p.tolist() and json.dumps(rec)


def test_covariance_is_passed_to_lm_score():
    model, tok = tiny_model("gpt2"), tiny_tokenizer()
    iso = answer(model, tok, QUESTIONS[:2], max_new_tokens=3)
    lay = answer(model, tok, QUESTIONS[:2], max_new_tokens=3, covariance="layer-scaled",
                 layer_scale="fan-in")
    ref = score(model, tok, [r.prompt for r in lay], [list(r.scored_token_ids) for r in lay],
                covariance="layer-scaled", layer_scale="fan-in")
    assert iso.covariance == "isotropic" and lay.covariance == "layer-scaled"
    for k, (a, b) in enumerate(zip(iso, lay)):
        assert a.epistemic == a.epistemic_isotropic and b.epistemic == b.epistemic_layer_scaled
        assert math.isclose(b.epistemic, float(ref.epistemic[k]), rel_tol=1e-9)
        assert math.isclose(b.total, b.epistemic + b.aleatoric, rel_tol=1e-12)
        assert b.epistemic != a.epistemic
    with pytest.raises(ValueError, match="isotropic"):
        answer(model, tok, ["Why?"], max_new_tokens=2, covariance="full")


def test_detector_adds_p_error_and_abstain_from_the_same_pass():
    import numpy as np

    from isograd.detect import fit_detector

    model, tok = tiny_model("llama"), tiny_tokenizer()
    # detector rows from the tiny model itself (its by_layer groups), labels made up
    qs = [f"Question number {i}?" for i in range(24)]
    prompts = [qa_prompt(tok, q) for q in qs]
    s = score(model, tok, prompts, [f" answer {i % 7}" for i in range(24)], batch_size=8)
    rows = [s.row(k) for k in range(24)]
    correct = np.array([r["log_p"] > np.median([x["log_p"] for x in rows]) for r in rows])
    det = fit_detector(rows, correct, alpha=0.45, delta=0.2)
    assert any(n.startswith("by_layer/block.") for n in det.feature_names)
    res = answer(model, tok, QUESTIONS, max_new_tokens=6, detector=det)
    plain = answer(model, tok, QUESTIONS, max_new_tokens=6)
    assert all(r.p_error is None and r.abstain is None for r in plain)
    # the same numbers as the detector on rows scored independently
    ref_scores = score(model, tok, [r.prompt for r in plain],
                       [list(r.scored_token_ids) for r in plain], batch_size=1)
    ref = det.predict([ref_scores.row(k) for k in range(len(plain))])
    np.testing.assert_allclose([r.p_error for r in res], ref.p_error, rtol=1e-9)
    assert [r.abstain for r in res] == ref.abstain.tolist()
    rec = res.to_records()[0]
    assert isinstance(rec["p_error"], float) and isinstance(rec["abstain"], bool)


def test_score_row_is_the_qa_score_row():
    from isograd.qa.stages import scalar_fields

    model, tok = tiny_model("gpt2"), tiny_tokenizer()
    s = score(model, tok, [qa_prompt(tok, q) for q in QUESTIONS], [" a", " bc", " d"])
    for k in range(3):
        row = s.row(k)
        assert row == {**scalar_fields(s, k), **s.row_vectors(k)}
        assert {"p", "log_p", "grad_log_p", "epistemic", "aleatoric", "embedding_grad",
                "n_tokens", "by_layer"} <= set(row)
        assert isinstance(row["n_tokens"], int) and row["grad_log_p"] == float(s.grad_log_p[k])
