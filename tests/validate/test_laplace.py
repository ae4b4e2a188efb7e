import numpy as np
import pytest
import torch

import isograd
from isograd.validate.laplace import (
    closed_form_linear_regression,
    laplace_variance,
    prob_grads,
)
from isograd.validate.nets import MLPSpec, TorchMLP, fit_map
from isograd.validate.problems import make_problem


def _setup(name, width, depth, fit=False):
    """A net on a small problem: at the MAP (`fit`) or at a random θ (the identities tested
    with a random θ hold at any θ)."""
    pb = make_problem(name, n_train=30, grid=4, n_heldout=10)
    spec = MLPSpec(pb.in_dim, width, depth, pb.out_dim)
    if fit:
        model, _ = fit_map(spec, pb.x_train, pb.y_train, pb.task, sigma_p=1.5,
                           noise_var=pb.noise_var, seed=0)
    else:
        model = TorchMLP(spec)
        model.set_flat(np.random.default_rng(0).standard_normal(spec.n_params))
        model.eval()
    x_ev = torch.as_tensor(pb.x_eval)
    with torch.no_grad():
        out = model(x_ev)
    if pb.task == "binary":
        label = (out[:, 0] > 0).long()
    elif pb.task == "classification":
        label = out.argmax(1)
    else:
        label = torch.zeros(len(x_ev), dtype=torch.long)
    return pb, model, x_ev, label


def _dense_ggn(model, pb, x_ev, label, sigma_p):
    """Brute force: build the P × P GGN explicitly, one training example at a time."""
    from torch.func import functional_call, jacrev

    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(t, x):
        ps = {n: v.reshape(s) for n, v, s in zip(names, torch.split(t, sizes), shapes, strict=True)}
        return functional_call(model, ps, (x,))

    ggn = torch.eye(len(theta), dtype=torch.float64) / sigma_p**2
    for x in torch.as_tensor(pb.x_train):
        j = jacrev(lambda t, x=x: f(t, x[None])[0])(theta)  # [K, P]
        out = f(theta, x[None])[0].detach()
        if pb.task == "binary":
            s = torch.sigmoid(out)
            lam = (s * (1 - s)).reshape(1, 1)
        elif pb.task == "classification":
            pi = out.softmax(-1)
            lam = torch.diag(pi) - torch.outer(pi, pi)
        else:
            lam = torch.eye(1, dtype=torch.float64) / pb.noise_var
        ggn += j.T @ lam @ j
    g = prob_grads(model, x_ev, pb.task, label)
    return (g * torch.linalg.solve(ggn, g.T).T).sum(1)


@pytest.mark.parametrize("name", ["binary_rings", "multiclass_clusters", "regression_nonlinear"])
def test_woodbury_ggn_equals_dense_ggn(name):
    pb, model, x_ev, label = _setup(name, 5, 2)
    got = laplace_variance(model, torch.as_tensor(pb.x_train), torch.as_tensor(pb.y_train), x_ev,
                           pb.task, label, sigma_p=1.5, noise_var=pb.noise_var)
    want = _dense_ggn(model, pb, x_ev, label, 1.5)
    assert (got > 0).all()
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-7, atol=1e-12)


def test_laplace_is_exact_for_bayesian_linear_regression():
    pb, model, x_ev, label = _setup("regression_linear", 0, 0)
    want = closed_form_linear_regression(pb.x_train, pb.x_eval, sigma_p=1.5,
                                         noise_var=pb.noise_var)
    for curvature in ("ggn", "hessian"):
        got = laplace_variance(model, torch.as_tensor(pb.x_train), torch.as_tensor(pb.y_train),
                               x_ev, "regression", label, sigma_p=1.5, noise_var=pb.noise_var,
                               curvature=curvature)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-8)


def test_exact_hessian_is_close_to_ggn_at_a_good_fit_and_differs_in_general():
    pb, model, x_ev, label = _setup("binary_linear", 4, 1, fit=True)
    args = (model, torch.as_tensor(pb.x_train), torch.as_tensor(pb.y_train), x_ev, pb.task, label)
    ggn = laplace_variance(*args, sigma_p=1.5, curvature="ggn").numpy()
    hes = laplace_variance(*args, sigma_p=1.5, curvature="hessian").numpy()
    assert np.corrcoef(ggn, hes)[0, 1] > 0.9
    assert not np.allclose(ggn, hes, rtol=1e-6)  # a tanh net is not linear in θ


def test_laplace_never_exceeds_gn_and_grads_match_isograd():
    pb, model, x_ev, label = _setup("multiclass_spirals", 6, 1, fit=True)
    lap = laplace_variance(model, torch.as_tensor(pb.x_train), torch.as_tensor(pb.y_train), x_ev,
                           pb.task, label, sigma_p=1.5)
    u = isograd.estimate(model, x_ev, task="classification", target=label, sigma2=1.5**2)
    g = prob_grads(model, x_ev, pb.task, label)
    np.testing.assert_allclose(g.square().sum(1).numpy(), u.sq_grad_norm.numpy(), rtol=1e-10)
    # the data can only shrink the prior variance: Laplace <= GN = σ²‖g‖²
    assert (lap.numpy() <= u.epistemic.numpy() * (1 + 1e-9)).all()
    assert (lap.numpy() < 0.9 * u.epistemic.numpy()).any()


def test_dense_hessian_is_refused_for_big_nets():
    spec = MLPSpec(2, 128, 2, 1)
    model = TorchMLP(spec)
    x = torch.zeros(3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="refused"):
        laplace_variance(model, x, torch.zeros(3), x, "binary", torch.zeros(3, dtype=torch.long),
                         curvature="hessian")
    with pytest.raises(ValueError, match="allowed"):
        laplace_variance(model, x, torch.zeros(3), x, "binary", torch.zeros(3, dtype=torch.long),
                         curvature="kfac")
