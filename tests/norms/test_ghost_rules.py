"""Each ghost rule and the factor algebra against the loop engine / a dense computation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from isograd import sq_grad_norms
from isograd.norms import EngineFallbackWarning
from isograd.norms.ghost import coverage, factors, unsupported_params
from tests.problems import refused_then_loop, rel_err


def _sum_fn(m, x):
    out = m(x)
    return out.reshape(out.shape[0], -1).tanh().sum(1)


def _agree(model: nn.Module, x, fn=_sum_fn, tol=1e-9):
    ref, ref_per = sq_grad_norms(model, fn, x, method="loop", by_param=True)
    got, per = sq_grad_norms(model, fn, x, method="ghost", by_param=True)
    assert (ref > 0).all()
    assert rel_err(got, ref) <= tol
    for n in per:
        torch.testing.assert_close(per[n], ref_per[n], rtol=tol, atol=1e-13)


def _seed(builder):
    torch.manual_seed(0)
    return builder().double()


def _x(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


class Twice(nn.Module):
    """One Linear called twice (a weight with two uses: cross terms)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(torch.tanh(self.lin(x)))


class Scale(nn.Module):
    """A module with its own parameter and no dedicated rule."""

    def __init__(self, d):
        super().__init__()
        self.s = nn.Parameter(torch.linspace(0.5, 1.5, d))

    def forward(self, x):
        return x * self.s + torch.sin(self.s)


@pytest.mark.parametrize(
    "build,x",
    [
        (lambda: nn.Sequential(nn.Linear(3, 5), nn.ReLU(inplace=True), nn.Linear(5, 2)), _x(4, 3)),
        (lambda: nn.Sequential(nn.Linear(3, 5, bias=False), nn.Linear(5, 2)), _x(4, 7, 3)),
        (lambda: nn.Sequential(nn.Linear(6, 9), nn.Linear(9, 40)), _x(3, 50, 6)),  # materialised
        (lambda: nn.Sequential(nn.Linear(30, 20), nn.Linear(20, 30)), _x(3, 4, 30)),  # Gram
        (Twice, _x(5, 3, 4)),
        (lambda: nn.Sequential(nn.Conv1d(2, 3, 3, padding=2, dilation=2), nn.Conv1d(3, 2, 2,
                                                                                   stride=2)),
         _x(3, 2, 9)),
        (lambda: nn.Sequential(nn.Conv2d(2, 3, 3, padding="same", padding_mode="reflect"),
                               nn.Conv2d(3, 2, (2, 3), stride=(2, 1), padding=(1, 0))),
         _x(3, 2, 6, 5)),
        (lambda: nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.Conv2d(4, 2, 1)), _x(2, 2, 5, 5)),
        (lambda: nn.Sequential(nn.Linear(4, 6), nn.GroupNorm(2, 6), nn.RMSNorm(6),
                               nn.LayerNorm(6, bias=False)), _x(3, 4)),
        (lambda: nn.Sequential(nn.Linear(4, 6), nn.LayerNorm((3, 6))), _x(2, 3, 4)),
        (lambda: nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), Scale(6)), _x(5, 4)),
    ],
    ids=["inplace-relu", "3d-no-bias", "materialised", "gram", "called-twice", "conv1d",
         "conv2d-same-reflect", "conv-groups-generic", "norms", "layernorm-2d", "bn-and-generic"],
)
def test_layer_rules_match_loop(build, x):
    model = _seed(build)
    if isinstance(model[1] if isinstance(model, nn.Sequential) else None, nn.BatchNorm1d):
        with torch.no_grad():
            model[1].running_mean.uniform_(-1, 1)
            model[1].running_var.uniform_(0.5, 2)
    _agree(model, x)


def test_embedding_repeats_padding_idx_and_two_uses():
    class Emb(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(11, 4, padding_idx=0)
            self.head = nn.Linear(4, 11, bias=False)
            self.head.weight = self.emb.weight  # tied

        def forward(self, ids):
            h = torch.tanh(self.emb(ids)).cumsum(1)
            return self.head(h)

    ids = torch.tensor([[3, 3, 0, 5, 3], [1, 2, 2, 2, 0], [7, 0, 0, 0, 0]])
    _agree(_seed(Emb), ids)


def test_generic_rule_used_for_unknown_modules_and_auto_falls_back():
    model = _seed(lambda: nn.Sequential(nn.Linear(3, 4), Scale(4)))
    assert unsupported_params(model, dict(model.named_parameters())) == ["1.s"]
    assert coverage(model)["1.s"] == "generic (vjp)"
    x = _x(4, 3)
    _agree(model, x)
    ref = sq_grad_norms(model, _sum_fn, x)
    with pytest.warns(EngineFallbackWarning, match=r"1.s: generic \(vjp\)"):
        torch.testing.assert_close(sq_grad_norms(model, _sum_fn, x, method="auto"), ref)


def test_batchnorm_with_batch_statistics_is_refused():
    model = _seed(lambda: nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4,
                                                                         track_running_stats=False)))
    assert unsupported_params(model, dict(model.named_parameters())) == ["1.weight", "1.bias"]
    with pytest.raises(ValueError, match=r"1 \(BatchNorm1d\).*batch statistics"):
        sq_grad_norms(model, _sum_fn, _x(4, 3), method="ghost")
    with pytest.warns(EngineFallbackWarning, match="refused: it normalises with batch stat"):
        sq_grad_norms(model, _sum_fn, _x(4, 3), method="auto")  # the loop engine takes it


class _Flat(nn.Module):
    """A Linear on flattened rows [B·T, 3]: example-major (plain reshape) or position-major."""

    def __init__(self, position_major: bool = False):
        super().__init__()
        self.position_major = position_major
        self.lin = nn.Linear(3, 2)
        self.norm = nn.LayerNorm(2)

    def forward(self, x):
        b, t = x.shape[:2]
        if self.position_major:  # [T, B, 3] rows: example b's rows are not a block
            rows = x.transpose(0, 1).reshape(-1, 3)
            return torch.relu(self.norm(self.lin(rows))).reshape(t, b, -1).transpose(0, 1).sum(1)
        return torch.relu(self.norm(self.lin(x.reshape(-1, 3)))).reshape(b, -1)


def test_flattened_example_major_rows_are_exact():
    _agree(_seed(_Flat), _x(3, 5, 3))
    _agree(_seed(_Flat), _x(1, 4, 3))  # one example: its T rows are the flattened block


def test_rows_not_example_major_are_refused_and_auto_uses_loop():
    model, x = _seed(lambda: _Flat(position_major=True)), _x(2, 5, 3)
    refused_then_loop(model, _sum_fn, x, r"lin \(Linear\).*not proven",
                      "not proven to hold the examples in order")


def test_parent_using_a_child_parameter_directly_is_refused():
    class Parent(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            return self.lin(x) @ self.lin.weight  # second use, outside Linear.forward

    with pytest.raises(ValueError, match="lin.weight"):
        sq_grad_norms(_seed(Parent), _sum_fn, _x(2, 3), method="ghost")


def test_hf_rms_norm_takes_the_broadcast_path_not_vmap(monkeypatch):
    from isograd.norms.ghost import generic
    from tests.problems import PROBLEMS

    problem = next(p for p in PROBLEMS if p.id == "llama-left-pad")
    model, batch = problem.build_model(torch.float64), problem.build_batch(torch.float64)
    ref = sq_grad_norms(model, problem.fn, batch)

    def boom(*a, **k):
        raise AssertionError("fell back to vmap")

    monkeypatch.setattr(generic, "generic_factors", boom)
    assert rel_err(sq_grad_norms(model, problem.fn, batch, method="ghost"), ref) <= 1e-10


# ---- factor algebra ------------------------------------------------------------------


def _dense_grad(f: factors.Outer) -> torch.Tensor:
    return torch.einsum("btn,btm->bnm", factors._dense(f.left, torch.float64),
                        factors._dense(f.right, torch.float64))


def _random_outer(b=3, t=6, n=5, m=4, index=False, zero_rows=()):
    g = torch.Generator().manual_seed(n * m + t)
    left = torch.randn(b, t, n, generator=g, dtype=torch.float64)
    right = torch.randn(b, t, m, generator=g, dtype=torch.float64)
    for r in zero_rows:
        left[:, r] = 0
    if index:
        ids = torch.randint(0, n, (b, t), generator=g)
        ids[:, 0] = ids[:, 1]  # a repeated token
        ids[0, -1] = -1  # a dropped row
        return factors.Outer(factors.Index(ids, n), right, grad="right")
    return factors.Outer(left, right)


@pytest.mark.parametrize("t,n,m", [(6, 5, 4), (2, 30, 40), (40, 3, 2)])
@pytest.mark.parametrize("index", [False, True])
def test_sq_norm_and_inner_match_dense(t, n, m, index):
    f = _random_outer(t=t, n=n, m=m, index=index, zero_rows=range(1, t, 2))
    h = _random_outer(t=t + 1, n=n, m=m)
    dense_f, dense_h = _dense_grad(f), _dense_grad(h)
    torch.testing.assert_close(factors.sq_norm(f), dense_f.square().sum((1, 2)))
    torch.testing.assert_close(factors.inner(f, h), (dense_f * dense_h).sum((1, 2)))
    dense = factors.Dense(dense_h)
    torch.testing.assert_close(factors.inner(f, dense), (dense_f * dense_h).sum((1, 2)))
    torch.testing.assert_close(factors.inner(dense, dense), dense_h.square().sum((1, 2)))


def test_partial_then_finish_equals_inner():
    """Cross term prepared before the second use's gradient is known (tied head + embedding)."""
    head = _random_outer(t=5, n=7, m=3)
    emb = _random_outer(t=4, n=7, m=3, index=True)
    pending = factors.Outer(emb.left, None, grad="right")
    p = factors.partial(head, pending)
    assert p.known is not None and p.factor.left is None  # the wide side is gone
    torch.testing.assert_close(factors.finish(p, emb), factors.inner(head, emb))


def test_compact_drops_zero_gradient_rows_only():
    f = _random_outer(t=8, zero_rows=[0, 2, 3, 5, 6, 7])
    c = factors.compact(f)
    assert c.left.shape[1] == 2 and c.compacted
    torch.testing.assert_close(factors.sq_norm(c), factors.sq_norm(f))
    torch.testing.assert_close(_dense_grad(c), _dense_grad(f))
