"""lm.score in bf16 / fp16 on tiny Llama, GPT-2 and Qwen2 against an fp64 copy of the same weights.

The tolerances are the ones stated in docs/performance.md ("Half precision"), measured by
benchmarks/score_precision.py (largest relative error over 3 seeds, both engines).
"""

from __future__ import annotations

import copy

import pytest
import torch

from isograd.lm import qa_prompt, score
from tests.problems import rel_err

from .tiny_lm import tiny_model, tiny_tokenizer

# largest relative error against fp64 allowed, per dtype and score field
TOL = {
    torch.bfloat16: {"p": 1e-3, "log_p": 1e-3, "aleatoric": 1e-3, "grad_log_p": 1e-2,
                     "epistemic": 1e-2},
    torch.float16: {"p": 2e-4, "log_p": 2e-4, "aleatoric": 2e-4, "grad_log_p": 2e-3,
                    "epistemic": 2e-3},
}
QUESTIONS = ["Who?", "What is the capital of France?", "2+2?"]
ANSWERS = [" Paris", " four", " no idea at all"]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("kind", ["llama", "gpt2", "qwen2"])
def test_half_within_tolerance_of_fp64(kind, dtype):
    tok = tiny_tokenizer()
    prompts = [qa_prompt(tok, q) for q in QUESTIONS]
    half = tiny_model(kind, seed=0, dtype=dtype)
    ref = copy.deepcopy(half).to(torch.float64)
    seen = []
    handle = half.register_forward_hook(lambda m, a, out: seen.append(out.logits.dtype))
    try:
        s = score(half, tok, prompts, ANSWERS)
    finally:
        handle.remove()
    assert seen and set(seen) == {dtype}  # the forward (and so the backward) ran in the model dtype
    assert {p.dtype for p in half.parameters()} == {dtype} and not any(
        p.grad is not None for p in half.parameters())
    r = score(ref, tok, prompts, ANSWERS)
    for field, tol in TOL[dtype].items():
        got = getattr(s, field)
        assert got.dtype == torch.float64 and torch.isfinite(got).all(), field
        assert rel_err(got, getattr(r, field)) < tol, field
    # the half result is not the fp64 one by accident: the arithmetic did differ
    assert rel_err(s.grad_log_p, r.grad_log_p) > 0
