"""estimate(): p, epistemic = σ²‖∇p‖², aleatoric, total against a direct brute force on p."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

from isograd import Task, Uncertainty, estimate
from tests.problems import SmallCNN


def grad_p_sq(model: nn.Module, p_of_output) -> torch.Tensor:
    """‖∇θ p‖² per example from the Jacobian of p itself (no log-space trick)."""
    model.eval()
    params = {n: p.detach() for n, p in model.named_parameters()}
    jac = jacrev(lambda ps: p_of_output(lambda x: functional_call(model, ps, (x,))))(params)
    return sum(j.reshape(j.shape[0], -1).square().sum(1) for j in jac.values())


def _mlp(d_in, d_out, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, 8), nn.Tanh(), nn.Linear(8, d_out)).double()


X = torch.randn(6, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def test_classification_predicted_class():
    model = _mlp(3, 4)
    u = estimate(model, X, sigma2=1.0)
    logits = model(X)
    assert torch.equal(u.label, logits.argmax(1))
    p_ref = logits.softmax(1).max(1).values.detach()
    torch.testing.assert_close(u.p, p_ref)
    ref = grad_p_sq(model, lambda f: f(X).softmax(1).gather(1, u.label[:, None])[:, 0])
    torch.testing.assert_close(u.epistemic, ref, rtol=1e-8, atol=0)
    torch.testing.assert_close(u.aleatoric, p_ref * (1 - p_ref))
    torch.testing.assert_close(u.total, u.epistemic + u.aleatoric)
    assert isinstance(u, Uncertainty)
    with pytest.raises(AttributeError):
        u.p = u.p  # frozen


def test_classification_given_target_and_sigma2_scaling():
    model = _mlp(3, 4)
    target = torch.tensor([0, 1, 2, 3, 0, 1])
    u1 = estimate(model, X, target=target)
    u2 = estimate(model, X, target=target, sigma2=0.25)
    assert torch.equal(u1.label, target)
    ref = grad_p_sq(model, lambda f: f(X).softmax(1).gather(1, target[:, None])[:, 0])
    torch.testing.assert_close(u1.epistemic, ref, rtol=1e-8, atol=0)
    torch.testing.assert_close(u2.epistemic, 0.25 * u1.epistemic)
    torch.testing.assert_close(u2.sq_grad_norm, u1.sq_grad_norm)
    torch.testing.assert_close(u2.aleatoric, u1.aleatoric)
    # σ² scales epistemic only, so the ranking of examples by epistemic cannot change
    assert torch.equal(u1.epistemic.argsort(), u2.epistemic.argsort())


def test_binary_single_logit():
    model = _mlp(3, 1)
    u = estimate(model, X, task="binary")
    z = model(X)[:, 0].detach()
    assert torch.equal(u.label, (z > 0).long())
    p_ref = torch.where(z > 0, torch.sigmoid(z), torch.sigmoid(-z))
    torch.testing.assert_close(u.p, p_ref)
    sign = (2 * u.label - 1).double()
    ref = grad_p_sq(model, lambda f: torch.sigmoid(sign * f(X)[:, 0]))
    torch.testing.assert_close(u.epistemic, ref, rtol=1e-8, atol=0)
    assert (u.p >= 0.5).all()


def test_regression_mean_and_predicted_log_variance():
    model = _mlp(3, 2)
    u = estimate(model, X, task="regression")
    out = model(X).detach()
    torch.testing.assert_close(u.p, out[:, 0])
    torch.testing.assert_close(u.aleatoric, out[:, 1].exp())
    ref = grad_p_sq(model, lambda f: f(X)[:, 0])
    torch.testing.assert_close(u.epistemic, ref, rtol=1e-8, atol=0)
    assert u.label is None


def test_regression_with_given_noise_var():
    model = _mlp(3, 1)
    u = estimate(model, X, task="regression", noise_var=0.3)
    torch.testing.assert_close(u.aleatoric, torch.full((6,), 0.3, dtype=torch.float64))
    with pytest.raises(ValueError, match="noise_var"):
        estimate(model, X, task="regression")


def test_cnn_float32_close_to_float64():
    torch.manual_seed(0)
    m64 = SmallCNN().double()
    m32 = SmallCNN()
    m32.load_state_dict({k: v.float() for k, v in m64.state_dict().items()})
    x = torch.randn(4, 1, 7, 7, generator=torch.Generator().manual_seed(0))
    u64 = estimate(m64, x.double())
    u32 = estimate(m32, x)
    assert torch.equal(u64.label, u32.label)
    torch.testing.assert_close(u32.epistemic, u64.epistemic, rtol=1e-4, atol=0)


def test_underflowing_probability_stays_finite_and_matches_log_space():
    """p = exp(-800) underflows in float64; p²‖∇log p‖² gives 0, never NaN."""
    model = nn.Linear(3, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[100.0] * 3, [-100.0] * 3]))
        model.bias.zero_()
    x = torch.full((2, 3), 4 / 3, dtype=torch.float64)  # logits ±400: p(class 1) = e^-800
    u = estimate(model, x, target=torch.tensor([1, 1]))
    assert torch.isfinite(u.epistemic).all() and torch.isfinite(u.total).all()
    assert (u.p == 0).all() and (u.epistemic == 0).all()
    assert (u.sq_grad_norm == 0).all()
    # a moderate case where both routes are representable agrees with the direct gradient of p
    target = torch.tensor([1, 0, 1, 0, 1, 0])
    small = _mlp(3, 2)
    with torch.no_grad():
        small[2].weight.mul_(20)
    ue = estimate(small, X, target=target)
    ref = grad_p_sq(small, lambda f: f(X).softmax(1).gather(1, target[:, None])[:, 0])
    torch.testing.assert_close(ue.epistemic, ref, rtol=1e-8, atol=1e-300)


def test_mapping_input_and_logits_attribute():
    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _mlp(3, 3)

        def forward(self, features):
            return type("Out", (), {"logits": self.net(features)})()

    model = Wrapped()
    u = estimate(model, {"features": X})
    torch.testing.assert_close(u.p, model.net(X).softmax(1).max(1).values.detach())


def test_bad_task_and_shapes():
    model = _mlp(3, 4)
    with pytest.raises(ValueError, match="'classification', 'binary', 'regression'"):
        estimate(model, X, task="ranking")
    with pytest.raises(ValueError, match="one logit"):
        estimate(model, X, task="binary")
    with pytest.raises(ValueError, match="sigma2"):
        estimate(model, X, sigma2=-1)
    assert Task("binary") is Task.BINARY


@pytest.mark.parametrize("method", ["loop", "ghost", "auto"])
def test_one_logit_model_under_classification_names_binary(method):
    with pytest.raises(ValueError, match=r"one logit.*task='binary'"):
        estimate(_mlp(3, 1), X, method=method)
    # the fix it names works, and gives a non-trivial p
    u = estimate(_mlp(3, 1), X, task="binary", method=method)
    assert ((u.p > 0.5) & (u.p < 1)).all() and (u.aleatoric > 0).all()


@pytest.mark.parametrize("sigma2, error", [
    (float("nan"), ValueError), (float("inf"), ValueError), (-0.5, ValueError),
    ("1.0", TypeError), (None, TypeError), (True, TypeError), (torch.ones(2), TypeError),
])
def test_sigma2_must_be_a_finite_non_negative_number(sigma2, error):
    with pytest.raises(error, match="sigma2"):
        estimate(_mlp(3, 4), X, sigma2=sigma2)


def test_sigma2_accepts_numeric_scalars_alike():
    ref = estimate(_mlp(3, 4), X, sigma2=0.5)
    # not the plain float again (that would compare ref with itself): other scalar types
    for s in (torch.tensor(0.5), np.float64(0.5), np.float32(0.5), Fraction(1, 2)):
        u = estimate(_mlp(3, 4), X, sigma2=s)
        assert u.sigma2 == 0.5 and torch.equal(u.epistemic, ref.epistemic)


@pytest.mark.parametrize("task,d_out", [("classification", 4), ("binary", 1), ("regression", 2)])
def test_engines_agree_through_estimate(task, d_out):
    model = _mlp(3, d_out)
    ref = estimate(model, X, task=task, method="loop")
    for method in ("ghost", "auto"):
        u = estimate(model, X, task=task, method=method)
        torch.testing.assert_close(u.epistemic, ref.epistemic, rtol=1e-8, atol=0)
        torch.testing.assert_close(u.p, ref.p)
