"""Every tensor the engines and `estimate` create is created on the device of what they meet:
with "meta" as the default device and the model on the CPU, results are unchanged."""

from __future__ import annotations

import warnings

import pytest
import torch

from isograd import estimate, sq_grad_norms
from tests.devices import assert_same_under_meta
from tests.problems import PROBLEMS

CASES = [p for p in PROBLEMS if p.id in {
    "cnn", "mlp-regression", "gpt2-no-position-ids", "gpt2-tied-left-pad", "llama-right-pad",
    "opt-no-position-ids", "qwen2-tied-right-pad"}]  # Gemma2 itself is not meta-safe


@pytest.mark.parametrize("problem", CASES, ids=[p.id for p in CASES])
@pytest.mark.parametrize("method", ["loop", "ghost", "auto"])
def test_sq_grad_norms_unchanged_with_meta_default_device(problem, method):
    model = problem.build_model(torch.float64)
    batch = problem.build_batch(torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # OPT under auto: the loop engine, announced
        total, per = assert_same_under_meta(
            lambda: sq_grad_norms(model, problem.fn, batch, method=method, by_param=True,
                                  memory_budget=20000))  # the sliced path too
    assert total.device.type == "cpu" and total.dtype == torch.float64 and (total > 0).all()


@pytest.mark.parametrize("method", ["loop", "ghost", "auto"])
def test_estimate_unchanged_with_meta_default_device(method):
    torch.manual_seed(0)
    clf = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
    binary, reg, reg1 = torch.nn.Linear(4, 1), torch.nn.Linear(4, 2), torch.nn.Linear(4, 1)
    x = torch.randn(5, 4)
    calls = [
        lambda: estimate(clf, x, method=method),
        lambda: estimate(clf, x, target=[0, 1, 2, 0, 1], method=method),
        lambda: estimate(clf, x, covariance="layer-scaled", method=method),
        lambda: estimate(binary, x, task="binary", method=method),
        lambda: estimate(reg, x, task="regression", method=method),
        lambda: estimate(reg1, x, task="regression", noise_var=0.5, method=method),
    ]
    for call in calls:
        u = assert_same_under_meta(call)
        assert u.p.device.type == "cpu" and u.epistemic.dtype == torch.float64
