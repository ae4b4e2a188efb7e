"""Where ghost cannot, auto still answers exactly; limits: MoE, integer parameters, memory
budget, out-of-memory splitting."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from isograd import sq_grad_norms
from isograd.norms._common import memory_budget, slice_batch
from tests.problems import (
    VOCAB,
    brute_force,
    lm_logprob_plain,
    padded_batch,
    refused_then_loop,
    rel_err,
    tiny_gpt2,
)


def _tiny_moe(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "mixtral":
        from transformers import MixtralConfig, MixtralForCausalLM

        cfg = MixtralConfig(vocab_size=VOCAB, hidden_size=8, intermediate_size=8,
                            num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                            num_local_experts=3, num_experts_per_tok=2,
                            max_position_embeddings=32)
        cfg._experts_implementation = "eager"  # the grouped-mm kernel has no float64
        return MixtralForCausalLM(cfg).double()
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    cfg = Qwen2MoeConfig(vocab_size=VOCAB, hidden_size=8, intermediate_size=8,
                         moe_intermediate_size=4, shared_expert_intermediate_size=8,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         num_experts=3, num_experts_per_tok=2, max_position_embeddings=32)
    cfg._experts_implementation = "eager"
    return Qwen2MoeForCausalLM(cfg).double()


@pytest.mark.parametrize("kind", ["mixtral", "qwen2-moe"])
def test_mixture_of_experts_refused_by_ghost_auto_gives_the_loop_result(kind):
    model, batch = _tiny_moe(kind), padded_batch("right")
    got = refused_then_loop(model, lm_logprob_plain, batch, "dimension 0|no exact rule|no rule",
                            "no exact ghost rule")
    brute, _ = brute_force(model, lm_logprob_plain, batch)
    assert rel_err(got, brute) <= 1e-8


def test_routed_linear_experts_refused_unless_exact():
    """Experts as plain nn.Linear on routed rows (older MoE code): ghost refuses them."""

    class Routed(nn.Module):
        def __init__(self):
            super().__init__()
            self.router = nn.Linear(4, 2)
            self.experts = nn.ModuleList(nn.Linear(4, 4) for _ in range(2))

        def forward(self, x):
            flat = x.reshape(-1, 4)
            choice = self.router(flat).argmax(-1)
            out = torch.zeros_like(flat)
            for e, expert in enumerate(self.experts):
                rows = torch.nonzero(choice == e).flatten()
                out = out.index_add(0, rows, expert(flat[rows]))
            return out.reshape(x.shape).sum((1, 2))

    torch.manual_seed(0)
    model = Routed().double()
    x = torch.randn(3, 4, 4, dtype=torch.float64)
    fn = lambda m, b: m(b)  # noqa: E731
    refused_then_loop(model, fn, x, "experts", "not proven|dimension 0")


def test_integer_parameters_left_out_with_a_warning():
    """An int8 tensor registered as a parameter (quantised storage) has no gradient."""
    model = tiny_gpt2().double()
    model.transformer.h[0].mlp.register_parameter(
        "qweight", nn.Parameter(torch.ones(3, 4, dtype=torch.int8), requires_grad=False))
    batch = padded_batch("right")
    for method in ("loop", "ghost", "auto"):
        with pytest.warns(UserWarning, match=r"transformer.h.0.mlp.qweight \(torch.int8\)"):
            got = sq_grad_norms(model, lm_logprob_plain, batch, method=method)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = sq_grad_norms(model, lm_logprob_plain, batch,
                                params=lambda n, p: p.is_floating_point())
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=0)
    with pytest.raises(ValueError, match="empty"), pytest.warns(UserWarning):
        sq_grad_norms(model, lm_logprob_plain, batch, params=["transformer.h.0.mlp.qweight"])


def test_small_memory_budget_splits_examples_with_identical_results(monkeypatch):
    from isograd.norms.ghost import factors

    model, batch = tiny_gpt2().double(), padded_batch("right")
    ref = sq_grad_norms(model, lm_logprob_plain, batch, method="ghost")
    sizes = []
    real = factors.sq_norm
    monkeypatch.setattr(factors, "sq_norm",
                        lambda f, cache=None: sizes.append(_rows(f)) or real(f, cache))
    # the largest per-example term here (a [T, T] Gram pair) fits; three examples do not
    got = sq_grad_norms(model, lm_logprob_plain, batch, method="ghost", memory_budget=2000)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=0)
    assert min(sizes) == 1 and max(sizes) == 3  # Gram terms sliced, small Dense terms whole
    refused_then_loop(model, lm_logprob_plain, batch, "bytes per example.*memory budget",
                      "memory budget", memory_budget="10")


def _rows(f) -> int:
    from isograd.norms.ghost.factors import Dense, Index

    if isinstance(f, Dense):
        return f.grad.shape[0]
    side = f.left
    return side.ids.shape[0] if isinstance(side, Index) else side.shape[0]


def test_memory_budget_parsing(monkeypatch):
    assert memory_budget(1234) == 1234
    assert memory_budget("512MiB") == 512 * 1024**2
    assert memory_budget("1.5G") == int(1.5 * 1024**3)
    monkeypatch.setenv("ISOGRAD_MEMORY_BUDGET", "3GiB")
    assert memory_budget() == 3 * 1024**3
    monkeypatch.setenv("ISOGRAD_MEMORY_BUDGET", "lots")
    with pytest.raises(ValueError, match=r"\$ISOGRAD_MEMORY_BUDGET.*'lots'"):
        memory_budget()
    with pytest.raises(ValueError, match="memory_budget must be at least"):
        memory_budget(0)


def test_out_of_memory_splits_in_halves_only_when_asked():
    model, batch = tiny_gpt2().double(), padded_batch("right", [[3, 5, 7], [4, 4], [1, 30, 12],
                                                               [9, 8, 7], [5, 5, 5]])
    ref, ref_per = sq_grad_norms(model, lm_logprob_plain, batch, by_param=True)
    seen = []

    def tight(m, b):  # "out of memory" above two examples
        seen.append(b["input_ids"].shape[0])
        if b["input_ids"].shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return lm_logprob_plain(m, b)

    for method in ("ghost", "auto"):
        with pytest.raises(torch.OutOfMemoryError):
            sq_grad_norms(model, tight, batch, method=method)
        seen.clear()
        got, per = sq_grad_norms(model, tight, batch, method=method, on_oom="split",
                                 by_param=True)
        assert seen == [5, 2, 3, 1, 2]
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=0)
        for k in per:
            torch.testing.assert_close(per[k], ref_per[k], rtol=1e-10, atol=1e-14)


def test_slice_batch_keeps_structure():
    b = {"ids": torch.arange(6).reshape(3, 2), "meta": [torch.ones(3), "x"], "w": torch.ones(2)}
    s = slice_batch(b, 3, 1, 3)
    assert s["ids"].tolist() == [[2, 3], [4, 5]] and s["meta"][0].shape == (2,)
    assert s["meta"][1] == "x" and s["w"].shape == (2,)


def test_out_of_memory_in_a_layer_term_halves_its_slice_down_to_one(monkeypatch):
    """No rerun of fn: only the failing Gram/materialised term is recomputed in halves."""
    from isograd.norms.ghost import factors

    model, batch = tiny_gpt2().double(), padded_batch("right")
    ref = sq_grad_norms(model, lm_logprob_plain, batch, method="ghost")
    real, sizes = factors.sq_norm, []

    def tight(f, cache=None):
        sizes.append(_rows(f))
        if _rows(f) > 1 and not isinstance(f, factors.Dense):
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(f, cache)

    monkeypatch.setattr(factors, "sq_norm", tight)
    calls = []
    got = sq_grad_norms(model, lambda m, b: calls.append(1) or lm_logprob_plain(m, b), batch,
                        method="ghost")
    assert len(calls) == 1 and 1 in sizes and 3 in sizes
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=0)
    monkeypatch.setattr(factors, "sq_norm", lambda f, cache=None: (_ for _ in ()).throw(
        torch.OutOfMemoryError("CUDA out of memory (simulated)")))
    with pytest.raises(torch.OutOfMemoryError):  # at one example: raised, never swallowed
        sq_grad_norms(model, lm_logprob_plain, batch, method="auto")
