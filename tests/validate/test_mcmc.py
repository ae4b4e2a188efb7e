import numpy as np

from isograd.validate.laplace import closed_form_linear_regression
from isograd.validate.mcmc import McmcSettings, mcmc_reference
from isograd.validate.nets import MLPSpec
from isograd.validate.problems import make_problem
from isograd.validate.study import conjugate_check


def test_conjugate_linear_regression_matches_closed_form_within_mc_error():
    """The harness's NUTS variance of f(x) equals the Bayesian linear-regression posterior."""
    res = conjugate_check(McmcSettings(200, 500, 2, 6), seed=1, sigma_p=1.5)
    assert res["rhat_max"] < 1.05
    assert res["ess_min"] > 100
    assert res["max_abs_z"] < 4.0, res
    assert res["passed"]
    assert res["max_rel_err"] < 0.5


def test_mcmc_mean_and_variance_against_closed_form_directly():
    pb = make_problem("regression_linear", seed=2, n_train=8, grid=5, n_heldout=0)
    spec = MLPSpec(1, 0, 0, 1)
    ref = mcmc_reference(spec, "regression", pb.x_train, pb.y_train, pb.x_eval,
                         np.zeros(len(pb.x_eval), int), sigma_p=1.0, noise_var=pb.noise_var,
                         settings=McmcSettings(200, 500, 2, 6), seed=0)
    var = closed_form_linear_regression(pb.x_train, pb.x_eval, sigma_p=1.0,
                                        noise_var=pb.noise_var)
    # closed-form posterior mean of the features' weights
    phi = np.concatenate([pb.x_train, np.ones((len(pb.x_train), 1))], 1)
    prec = phi.T @ phi / pb.noise_var + np.eye(2)
    w = np.linalg.solve(prec, phi.T @ pb.y_train / pb.noise_var)
    mean = np.concatenate([pb.x_eval, np.ones((len(pb.x_eval), 1))], 1) @ w
    se = np.sqrt(var / ref.ess)
    assert np.all(np.abs(ref.mean - mean) < 5 * se)
    assert ref.alea is None and ref.n_draws == 1000
    assert ref.divergences == 0
