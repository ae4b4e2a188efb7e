"""Half precision: forward/backward in bf16/fp16, squares and sums in fp32/fp64; the stated
tolerances against float64 (docs/performance.md, benchmarks/half_precision.py); fp16 overflow."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from isograd import sq_grad_norms
from isograd.norms.ghost import linear, norms
from tests.problems import HALF, HALF_ARCHS, half_vs_fp64, rel_err

# measured worst cases (results/bench/half-precision-cpu.json): bf16 1.03e-2, fp16 7.7e-4
TOLERANCE = {"bf16": 2e-2, "fp16": 2e-3}


@pytest.mark.parametrize("method", ["ghost", "loop"])
@pytest.mark.parametrize("dtype", list(HALF))
@pytest.mark.parametrize("arch", list(HALF_ARCHS))
def test_half_precision_within_stated_tolerance_of_fp64(arch, dtype, method):
    assert half_vs_fp64(arch, dtype, method) <= TOLERANCE[dtype]


def test_position_sums_are_not_taken_in_half_precision():
    """Bias and norm-weight gradients sum over positions: in float32 for bf16 inputs."""
    g = torch.full((2, 4096, 3), 1.0 + 2**-7, dtype=torch.bfloat16)  # 4096 equal terms
    a = torch.ones(2, 4096, 5, dtype=torch.bfloat16)
    bias = linear.linear_factors(nn.Linear(5, 3).bfloat16(), a, [g], ["bias"])["bias"].grad
    assert bias.dtype == torch.float32
    torch.testing.assert_close(bias, torch.full((2, 3), 4096 * (1.0 + 2**-7)), rtol=0, atol=0)
    ln = nn.LayerNorm(5).bfloat16()
    w = norms.layer_norm_factors(ln, torch.randn(2, 4096, 5).bfloat16(),
                                 [torch.ones(2, 4096, 5, dtype=torch.bfloat16)], ["bias"])
    assert w["bias"].grad.dtype == torch.float32 and float(w["bias"].grad[0, 0]) == 4096


class _Loud(nn.Module):
    """Gradients far above float16's range (1e5 to 1e7) while every output stays inside it."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(4, 2)
        with torch.no_grad():
            self.a.weight.uniform_(-2, 2)
            self.b.weight.uniform_(10, 30)  # outputs stay below 65504

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)) * 300)


def _loud_fn(m, x):
    return (m(x).float() * 1000).sum(1)


@pytest.mark.parametrize("method", ["ghost", "loop", "auto"])
def test_fp16_overflow_is_rescaled_exactly(method, monkeypatch):
    torch.manual_seed(0)
    model = _Loud().half()
    x = torch.randn(3, 3).half()
    ref = sq_grad_norms(copy.deepcopy(model).double(), _loud_fn, x.double(), method="loop")
    assert (ref > 65504.0**2).all()  # the gradients themselves exceed float16's range
    got = sq_grad_norms(model, _loud_fn, x, method=method)
    assert torch.isfinite(got).all()
    assert rel_err(got, ref) <= TOLERANCE["fp16"]
    import isograd.norms.api as api

    monkeypatch.setattr(api, "_FP16_SCALES", (0,))  # no rescaling: overflow, refused clearly
    with pytest.raises(FloatingPointError, match="float16 gradients overflow.*bfloat16"):
        sq_grad_norms(model, _loud_fn, x, method=method)
