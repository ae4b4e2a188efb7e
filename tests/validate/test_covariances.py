"""The explicit covariances of the covariance study against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import isograd
from isograd.validate.covariances import (
    align_chain,
    distortion,
    ggn,
    kfac_laplace,
    laplace_form,
    near_mask,
    participation_ratio,
    quad_diag,
    sp_prior_mean_variance,
    sp_scale,
    sp_twin,
)
from isograd.validate.covstudy import covariance_matrices, front_door_variances
from isograd.validate.laplace import laplace_variance, prob_grads
from isograd.validate.nets import MLPSpec, TorchMLP
from isograd.validate.problems import make_problem


def _net(spec: MLPSpec, seed: int = 0) -> TorchMLP:
    m = TorchMLP(spec)
    m.set_flat(torch.randn(spec.n_params, generator=torch.Generator().manual_seed(seed),
                           dtype=torch.float64))
    return m.eval()


def test_explicit_laplace_equals_woodbury_laplace():
    pb = make_problem("multiclass_clusters", n_train=30, grid=4, n_heldout=5)
    model = _net(MLPSpec(2, 6, 1, 3))
    x_ev = torch.as_tensor(pb.x_eval)
    label = model(x_ev).argmax(1)
    g = prob_grads(model, x_ev, pb.task, label)
    f = ggn(model, torch.as_tensor(pb.x_train), pb.task, None)
    explicit = quad_diag(g, laplace_form(f, 1.5))
    ref = laplace_variance(model, torch.as_tensor(pb.x_train), torch.as_tensor(pb.y_train), x_ev,
                           pb.task, label, sigma_p=1.5)
    torch.testing.assert_close(explicit, ref, rtol=1e-8, atol=1e-14)


def test_kfac_is_exact_for_one_example_and_one_output():
    # one example, one output: G ⊗ A = (ĝĝᵀ) ⊗ (ããᵀ) = the layer's exact GGN block
    spec = MLPSpec(1, 4, 2, 1)
    model = _net(spec, 1)
    x = torch.tensor([[0.7]], dtype=torch.float64)
    k = kfac_laplace(model, x, "regression", 0.01, 2.0)
    f = ggn(model, x, "regression", 0.01)
    start = 0
    for layer in model.layers:
        n = layer.weight.numel() + layer.bias.numel()
        block = slice(start, start + n)
        torch.testing.assert_close(k[block, block], laplace_form(f[block, block], 2.0),
                                   rtol=1e-9, atol=1e-12)
        start += n
    assert torch.count_nonzero(k[: spec.sizes[1] * 2, spec.sizes[1] * 2 :]) == 0  # block diagonal


def _signed_permutation(theta: np.ndarray, spec: MLPSpec, rng) -> np.ndarray:
    out, i = theta.copy(), 0
    sizes = spec.sizes
    perm_prev, sign_prev = np.arange(sizes[0]), np.ones(sizes[0])
    for li, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        w = theta[i : i + a * b].reshape(b, a)[:, perm_prev] * sign_prev
        bias = theta[i + a * b : i + a * b + b]
        if li == len(sizes) - 2:
            out[i : i + a * b] = w.reshape(-1)
            break
        perm, sign = rng.permutation(b), rng.choice([-1.0, 1.0], b)
        out[i : i + a * b] = (w[perm] * sign[:, None]).reshape(-1)
        out[i + a * b : i + a * b + b] = bias[perm] * sign
        perm_prev, sign_prev = perm, sign
        i += a * b + b
    return out


def test_align_chain_undoes_hidden_unit_symmetries():
    spec = MLPSpec(2, 5, 2, 3)
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(spec.n_params)
    moved = _signed_permutation(ref, spec, rng)
    x = torch.as_tensor(rng.standard_normal((7, 2)))
    a, b = TorchMLP(spec), TorchMLP(spec)
    a.set_flat(ref)
    b.set_flat(moved)
    torch.testing.assert_close(a(x), b(x))  # the same function...
    assert np.abs(moved - ref).max() > 0.5  # ...at other weights
    draws = moved + 0.01 * rng.standard_normal((50, spec.n_params))
    aligned = align_chain(draws, spec.sizes, ref)
    assert np.abs(aligned.mean(0) - ref).max() < 0.02


def test_sp_twin_and_mapped_covariances_match_estimate():
    pb = make_problem("binary_xor", n_train=20, grid=4, n_heldout=4)
    model = _net(MLPSpec(2, 5, 2, 1), 2)
    x = torch.as_tensor(pb.x_eval)
    sp = sp_twin(model)
    torch.testing.assert_close(sp(x), model(x))
    c = sp_scale(model)
    sp_flat = torch.cat([p.detach().reshape(-1) for p in sp.parameters()])
    torch.testing.assert_close(sp_flat, c * torch.as_tensor(model.get_flat()))
    assert sp_prior_mean_variance(model, 2.0) == pytest.approx(float((4.0 * c**2).mean()))
    label = (model(x)[:, 0] > 0).long()
    sigmas = covariance_matrices(pb, model, 2.0, seed=0)
    g = prob_grads(model, x, pb.task, label)
    front = front_door_variances(pb, model, label, 2.0)
    for name, v in front.items():
        np.testing.assert_allclose(v, quad_diag(g, sigmas[name]).numpy(), rtol=1e-9)
    iso = isograd.estimate(model, x, task="binary", target=label, sigma2=4.0).epistemic
    np.testing.assert_allclose(front["isotropic"], iso.numpy())
    assert not np.allclose(front["sp-isotropic"], front["isotropic"], rtol=1e-2)


def test_near_mask_distortion_and_participation_ratio():
    x_tr = np.array([[0.0], [0.1], [0.2]])
    x_ev = np.array([[0.05], [0.15], [2.0], [3.0]])
    near = near_mask(x_ev, x_tr)
    assert near.tolist() == [True, True, False, False]
    d = distortion(np.array([1.0, 1.0, 100.0, 100.0]), np.ones(4), near)
    assert d["log_ratio_near"] == pytest.approx(0.0) and d["far_minus_near"] == pytest.approx(2.0)
    assert participation_ratio(np.ones(5)) == pytest.approx(5.0)
    assert participation_ratio(np.array([1.0, 0, 0])) == pytest.approx(1.0)
