import jax.numpy as jnp
import numpy as np
import pytest
import torch

from isograd.validate.mcmc import potential
from isograd.validate.nets import MLPSpec, TorchMLP, fit_map, jax_apply, neg_log_posterior
from isograd.validate.problems import make_problem

SPECS = [MLPSpec(2, 0, 0, 1), MLPSpec(2, 5, 1, 1), MLPSpec(2, 7, 2, 3), MLPSpec(1, 16, 2, 1)]


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_torch_and_jax_nets_agree_for_the_same_weights(spec):
    rng = np.random.default_rng(0)
    theta = 2.0 * rng.standard_normal(spec.n_params)
    x = 2.0 * rng.standard_normal((33, spec.in_dim))
    net = TorchMLP(spec)
    assert sum(p.numel() for p in net.parameters()) == spec.n_params
    net.set_flat(theta)
    np.testing.assert_array_equal(net.get_flat(), theta)
    with torch.no_grad():
        out_t = net(torch.as_tensor(x)).numpy()
    out_j = np.asarray(jax_apply(spec, jnp.asarray(theta), jnp.asarray(x)))
    assert out_t.shape == out_j.shape == (33, spec.out_dim)
    np.testing.assert_allclose(out_j, out_t, rtol=1e-12, atol=1e-12)


def test_set_flat_rejects_wrong_size():
    with pytest.raises(ValueError, match="entries"):
        TorchMLP(MLPSpec(2, 3, 1, 1)).set_flat(np.zeros(5))


@pytest.mark.parametrize("name", ["binary_xor", "multiclass_spirals", "regression_nonlinear"])
def test_jax_potential_equals_torch_map_loss(name):
    pb = make_problem(name)
    spec = MLPSpec(pb.in_dim, 6, 2, pb.out_dim)
    theta = np.random.default_rng(1).standard_normal(spec.n_params)
    net = TorchMLP(spec)
    net.set_flat(theta)
    with torch.no_grad():
        lt = float(neg_log_posterior(net, torch.as_tensor(pb.x_train), torch.as_tensor(pb.y_train),
                                     pb.task, 1.5, pb.noise_var))
    u = potential(spec, pb.task, 1.5, pb.noise_var)
    lj = float(u(jnp.asarray(theta), jnp.asarray(pb.x_train), jnp.asarray(pb.y_train)))
    np.testing.assert_allclose(lj, lt, rtol=1e-12)


def test_fit_map_reaches_a_stationary_point():
    pb = make_problem("binary_xor")
    spec = MLPSpec(2, 8, 1, 1)
    model, info = fit_map(spec, pb.x_train, pb.y_train, "binary", sigma_p=2.0, seed=0)
    assert info["map_grad_norm"] < 1e-4
    # better than the starting point and than the all-zero net
    zero = TorchMLP(spec)
    zero.set_flat(np.zeros(spec.n_params))
    with torch.no_grad():
        l0 = float(neg_log_posterior(zero, torch.as_tensor(pb.x_train),
                                     torch.as_tensor(pb.y_train), "binary", 2.0, None))
    assert info["map_loss"] < l0
    assert not model.training
