"""NaN stays where it starts: one example's NaN or inf leaves the others' norms exact in every
engine, and the warning names exactly the examples affected (issue 22). Also the loop engine's
in-place check, complex gradients, and the float16 overflow check."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from torch import nn

from isograd import NonFiniteOutputWarning, sq_grad_norms


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.LayerNorm(5), nn.Linear(5, 2)).double()


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Unflatten(1, (1, 3)), nn.Conv1d(1, 2, 2), nn.Tanh(), nn.Flatten(),
                         nn.Linear(4, 2)).double()


def _fn(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).log_softmax(-1)[:, 0]


def _listed(message: str, what: str) -> list[int]:
    m = re.search(what + r" for \d+ example\(s\) \[([0-9, ]*)\]" if what == "fn returned NaN/inf"
                  else what + r" \d+ example\(s\) \[([0-9, ]*)\]", message)
    return [] if m is None else [int(i) for i in m.group(1).split(",")]


@pytest.mark.parametrize("build", [_mlp, _cnn], ids=["mlp", "cnn"])
@pytest.mark.parametrize("method", ["loop", "ghost", "auto"])
def test_one_examples_nan_or_inf_leaves_the_others_exact(build, method):
    model = build()
    torch.manual_seed(1)
    x = torch.randn(5, 3, dtype=torch.float64)
    x[1, 0] = float("nan")  # a NaN output
    x[3, 1] = float("inf")  # tanh saturates: a finite output, a non-finite gradient
    clean = [0, 2, 4]
    ref = sq_grad_norms(model, _fn, x[clean], method="loop")  # the clean examples alone
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        got = sq_grad_norms(model, _fn, x, method=method)
    torch.testing.assert_close(got[clean], ref, rtol=1e-10, atol=0)
    assert torch.isnan(got[1]) and not torch.isfinite(got[3])
    msgs = [str(w.message) for w in seen if issubclass(w.category, NonFiniteOutputWarning)]
    assert len(msgs) == 1
    assert _listed(msgs[0], "fn returned NaN/inf") == [1]
    assert _listed(msgs[0], "the gradients of") == [3]


def test_a_finite_batch_gives_no_warning_and_the_same_numbers():
    model, x = _mlp(), torch.randn(4, 3, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteOutputWarning)
        a = sq_grad_norms(model, _fn, x, method="loop")
    b = sq_grad_norms(model, _fn, x, method="ghost")
    torch.testing.assert_close(a, b, rtol=1e-10, atol=0)


def test_loop_engine_still_refuses_a_saved_tensor_modified_in_place():
    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3).double()

        def forward(self, x):
            y = torch.exp(self.lin(x))  # exp saves its output for the backward
            out = y.sum(-1)
            y.mul_(2)  # ... which is then modified
            return out

    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        sq_grad_norms(InPlace(), lambda m, x: m(x), torch.randn(2, 3, dtype=torch.float64),
                      method="loop")


def test_loop_engine_squares_complex_gradients_as_abs_squared():
    torch.manual_seed(0)
    w = torch.randn(3, dtype=torch.complex128)
    x = torch.randn(4, 3, dtype=torch.complex128)

    class Complex(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(w.clone())

        def forward(self, x):
            return (x @ self.w).abs().square()

    got = sq_grad_norms(Complex(), lambda m, b: m(b), x, method="loop")
    # reference: the same function of the real and imaginary parts, differentiated as reals
    ref = []
    for i in range(4):
        parts = torch.view_as_real(w).clone().requires_grad_()
        y = (x[i] @ torch.view_as_complex(parts)).abs().square()
        (g,) = torch.autograd.grad(y, parts)
        ref.append(g.square().sum())
    torch.testing.assert_close(got, torch.stack(ref), rtol=1e-12, atol=0)


def test_float16_nan_that_rescaling_cannot_fix_raises():
    model = _mlp().half()
    x = torch.randn(3, 3).half()
    x[2, 1] = float("inf")  # finite output, NaN gradient: no scale can fix it
    with pytest.raises(FloatingPointError, match=r"\[2\]"):
        sq_grad_norms(model, _fn, x, method="loop")


class _SeqFirstMHA(nn.Module):
    """nn.MultiheadAttention in its sequence-first layout: inside it the examples sit on
    dimension 1 (then on dimension 0 by heads), which `Isolation` cannot locate."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin, self.mha, self.out = nn.Linear(4, 4), nn.MultiheadAttention(4, 2), nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x).transpose(0, 1)
        y = self.mha(h, h, h, need_weights=False)[0]
        return self.out(torch.tanh(y.transpose(0, 1))).sum((1, 2))


@pytest.mark.parametrize("method", ["loop", "auto"])
def test_nan_inside_sequence_first_attention_leaves_the_others_exact(method):
    model = _SeqFirstMHA().double()
    torch.manual_seed(2)
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    x[1, 0, 0] = float("nan")
    x[3, 2, 1] = float("inf")
    clean = [0, 2, 4]
    # reference: each clean example alone (no other example in the graph at all)
    ref = torch.cat([sq_grad_norms(model, lambda m, b: m(b), x[[i]], method="loop")
                     for i in clean])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        got = sq_grad_norms(model, lambda m, b: m(b), x, method=method)
    torch.testing.assert_close(got[clean], ref, rtol=1e-10, atol=0)
    assert not torch.isfinite(got[[1, 3]]).any()
    msgs = [str(w.message) for w in seen if issubclass(w.category, NonFiniteOutputWarning)]
    assert len(msgs) == 1
    named = _listed(msgs[0], "fn returned NaN/inf") + _listed(msgs[0], "the gradients of")
    assert sorted(named) == [1, 3]


def test_a_model_that_mixes_examples_is_not_rerun_alone():
    # every output reads a batch mean of tanh(lin(x)): finite (tanh(inf) = 1), but its gradient
    # is NaN through example 1's inf, and alone an example's output differs: no rerun is taken
    # for exact, every norm stays non-finite and is named
    model = _SeqFirstMHA().double()

    def fn(m, b):
        return m(b) + torch.tanh(m.lin(b)).mean()

    torch.manual_seed(3)
    x = torch.randn(3, 3, 4, dtype=torch.float64)
    x[1, 0, 0] = float("inf")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        got = sq_grad_norms(model, fn, x, method="loop")
    out = fn(model, x)
    assert torch.isfinite(out[[0, 2]]).all()  # finite outputs: the rerun was considered
    assert not torch.isfinite(got).any()
    msgs = [str(w.message) for w in seen if issubclass(w.category, NonFiniteOutputWarning)]
    assert sorted(_listed(msgs[0], "fn returned NaN/inf") + _listed(msgs[0], "the gradients of")
                  ) == [0, 1, 2]
