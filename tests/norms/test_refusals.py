"""Every "ghost cannot" path raises `GhostUnsupported` (which ``method="auto"`` catches), and
the layouts are read from provenance, not from shapes (issue 22)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from isograd import sq_grad_norms
from isograd.norms import GhostUnsupported
from isograd.norms.ghost import conv, embedding, linear, norms
from tests.problems import refused_then_loop, rel_err


@pytest.mark.parametrize("module, rule, x, g", [
    (nn.Linear(3, 2), linear.linear_factors, torch.randn(3), torch.ones(2)),
    (nn.Embedding(5, 2), embedding.embedding_factors, torch.tensor(1), torch.ones(2)),
    (nn.Conv1d(2, 2, 3), conv.conv_factors, torch.randn(2, 5), torch.ones(2, 3, 1)),
    (nn.LayerNorm(3), norms.layer_norm_factors, torch.randn(3), torch.ones(3)),
    (nn.GroupNorm(1, 2), norms.group_norm_factors, torch.randn(2), torch.ones(2)),
], ids=["linear", "embedding", "conv", "layer-norm", "group-norm"])
def test_rule_without_batch_dimension_raises_ghost_unsupported(module, rule, x, g):
    with pytest.raises(GhostUnsupported, match="batch dimension first"):
        rule(module, x, [g], ["weight"])


class _ItemGate(nn.Module):
    """A module without a rule whose forward reads a value (vmap cannot batch `.item()`)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 3, dtype=torch.float64))

    def forward(self, x):
        return x @ self.w if x.sum().item() > -1e9 else x


def _sum_fn(model, x):
    return model(x).sum(-1)


def test_generic_rule_that_vmap_cannot_run_is_refused_and_auto_uses_loop():
    torch.manual_seed(0)
    refused_then_loop(_ItemGate(), _sum_fn, torch.randn(4, 3, dtype=torch.float64),
                      "cannot run _ItemGate under vmap", "no exact ghost rule")


class _Memory(nn.Module):
    """A rule-less module reading the examples and a batch-free memory bank of M rows."""

    def __init__(self, m: int):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 3, dtype=torch.float64))
        self.register_buffer("bank", torch.randn(m, 3, dtype=torch.float64))

    def forward(self, x, bank):
        return torch.tanh(x @ self.w) + (bank @ self.w).mean(0)


class _WithMemory(nn.Module):
    def __init__(self, m: int):
        super().__init__()
        self.mem = _Memory(m)

    def forward(self, x):
        return self.mem(x, self.mem.bank)


@pytest.mark.parametrize("m", [4, 5], ids=["M==B", "M!=B"])
def test_generic_rule_passes_a_batch_free_argument_whole_even_when_its_size_is_B(m):
    torch.manual_seed(0)
    model, x = _WithMemory(m), torch.randn(4, 3, dtype=torch.float64)
    ref = sq_grad_norms(model, _sum_fn, x, method="loop")
    got = sq_grad_norms(model, _sum_fn, x, method="ghost")
    assert rel_err(got, ref) <= 1e-10


class _Bilinear(nn.Module):
    """A rule-less module: the generic rule materialises [B, 4, 4] per-example gradients."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 4, dtype=torch.float64))

    def forward(self, x):
        return torch.tanh(x @ self.w)


def test_generic_rule_follows_memory_budget():
    torch.manual_seed(0)
    model, x = _Bilinear(), torch.randn(3, 4, dtype=torch.float64)
    need = 3 * 16 * 8  # B x 4 x 4 float64
    ref = sq_grad_norms(model, _sum_fn, x, method="loop")
    got = sq_grad_norms(model, _sum_fn, x, method="ghost", memory_budget=need)
    assert rel_err(got, ref) <= 1e-12
    with pytest.raises(GhostUnsupported, match=f"{need:,} bytes of per-example gradients"):
        sq_grad_norms(model, _sum_fn, x, method="ghost", memory_budget=need - 1)


class _Tied(nn.Module):
    """One Linear called on two inputs of different lengths: a cross term between its uses."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4, bias=False).double()

    def forward(self, x):
        return self.lin(x).sum((1, 2)) * self.lin(torch.tanh(x[:, :3])).sum((1, 2))


def test_tied_cross_terms_follow_memory_budget():
    torch.manual_seed(0)
    model, x = _Tied(), torch.randn(2, 5, 4, dtype=torch.float64)
    ref = sq_grad_norms(model, lambda m, b: m(b), x, method="loop")
    got = sq_grad_norms(model, lambda m, b: m(b), x, method="ghost")
    assert rel_err(got, ref) <= 1e-10
    # each use alone fits (a materialised 4 x 4 gradient and its square: 256 bytes per
    # example); the cross term's two Grams [B, 5, 3] (480 bytes) do not
    with pytest.raises(GhostUnsupported, match="cross term between two uses of a tied"):
        sq_grad_norms(model, lambda m, b: m(b), x, method="ghost", memory_budget=300)


class _ModifiesInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3).double()
        self.out = nn.Linear(3, 1).double()

    def forward(self, x):
        h = self.lin(x)
        y = self.out(h)  # out captures h ...
        h.mul_(2)  # ... which is modified in place (nothing saved by autograd reads it)
        return y[:, 0]


@pytest.mark.filterwarnings("ignore::isograd.norms.EngineFallbackWarning")
def test_input_modified_in_place_after_capture_is_refused():
    """Ghost refuses (it would read the new values); the loop engine, as autograd, raises."""
    torch.manual_seed(0)
    model, x = _ModifiesInput(), torch.randn(3, 3, dtype=torch.float64)
    with pytest.raises(GhostUnsupported, match=r"out \(Linear\) read in the forward.*in place"):
        sq_grad_norms(model, lambda m, b: m(b), x, method="ghost")
    for method in ("loop", "auto"):
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            sq_grad_norms(model, lambda m, b: m(b), x, method=method)


class _ReturnsWeights(nn.Module):
    """A rule-less attention-like module returning (output, weights), the output computed from
    the weights: the gradient reaching the weights includes their internal use."""

    def __init__(self):
        super().__init__()
        self.s = nn.Parameter(torch.randn(3, dtype=torch.float64))

    def forward(self, x):
        w = torch.softmax(x * self.s, -1)
        return w * x, w


class _UsesFirst(nn.Module):
    def __init__(self):
        super().__init__()
        self.att = _ReturnsWeights()

    def forward(self, x):
        return self.att(x)[0].sum(-1)


def test_output_also_used_inside_the_module_is_refused_not_counted_twice():
    torch.manual_seed(0)
    refused_then_loop(_UsesFirst(), lambda m, b: m(b), torch.randn(3, 3, dtype=torch.float64),
                      "also used to compute another of its outputs", "no exact ghost rule")
