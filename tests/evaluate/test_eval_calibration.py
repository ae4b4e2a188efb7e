"""Calibration metrics against scikit-learn and a brute-force ECE."""

from __future__ import annotations

import numpy as np
import pytest

from isograd.evaluate.calibration import (
    brier,
    calibration_summary,
    ece,
    log_loss,
    plot_reliability,
    reliability,
)


def data(n: int = 2000, seed: int = 0):
    rng = np.random.default_rng(seed)
    p = rng.beta(2, 3, n)
    y = (rng.uniform(size=n) < np.clip(p + 0.1, 0, 1)).astype(int)
    return y, p


def test_brier_and_log_loss_match_sklearn():
    from sklearn.metrics import brier_score_loss
    from sklearn.metrics import log_loss as sk_log_loss

    y, p = data()
    assert brier(y, p) == pytest.approx(brier_score_loss(y, p), rel=1e-12)
    assert log_loss(y, p) == pytest.approx(sk_log_loss(y, p), rel=1e-10)
    # a certain wrong prediction is finite after clipping
    assert np.isfinite(log_loss([1, 0], [0.0, 1.0]))


@pytest.mark.parametrize("binning", ["uniform", "quantile"])
def test_reliability_bins_match_sklearn_calibration_curve(binning):
    from sklearn.calibration import calibration_curve

    y, p = data(seed=1)
    rel = reliability(y, p, bins=8, binning=binning)
    true, pred = calibration_curve(y, p, n_bins=8, strategy=binning)
    np.testing.assert_allclose(rel.error_rate, true, rtol=1e-12)
    np.testing.assert_allclose(rel.mean_prob, pred, rtol=1e-12)
    assert rel.count.sum() == len(y)


def test_ece_brute_force():
    y, p = data(500, seed=2)
    edges = np.linspace(0, 1, 11)
    total = 0.0
    for k in range(10):
        lo, hi = edges[k], edges[k + 1]
        m = (p > lo) & (p <= hi) if k else (p <= hi)
        if m.any():
            total += m.sum() * abs(y[m].mean() - p[m].mean())
    assert ece(y, p) == pytest.approx(total / len(y), rel=1e-12)
    # a perfectly calibrated constant has ECE 0
    assert ece([1, 0, 1, 0], [0.5] * 4) == 0.0
    s = calibration_summary(y, p)
    assert set(s) == {"brier", "log_loss", "ece"} and s["ece"] == ece(y, p)


def test_errors_and_figure(tmp_path):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        brier([0, 1], [0.5, 1.5])
    with pytest.raises(ValueError, match="allowed: 'uniform', 'quantile'"):
        reliability([0, 1], [0.2, 0.8], binning="log")
    with pytest.raises(ValueError, match="bins"):
        reliability([0, 1], [0.2, 0.8], bins=0)
    y, p = data(300, seed=3)
    out = tmp_path / "rel.png"
    plot_reliability(out, y, {"detector": p, "constant": np.full(300, y.mean())})
    assert out.stat().st_size > 1000


def test_binned_is_reliability_for_any_target():
    from isograd.evaluate.calibration import binned

    y, p = data(400, seed=4)
    a, b = binned(y, p, bins=5), reliability(y, p, bins=5)
    np.testing.assert_array_equal(a.error_rate, b.error_rate)
    # squared errors against their own expectation: a gap near 0 on a large sample
    rng = np.random.default_rng(5)
    pred = rng.uniform(0.0, 0.25, 20000)
    obs = rng.uniform(size=20000) < pred  # E[obs] = pred
    assert binned(obs.astype(float), pred, bins=5, binning="quantile").ece < 0.01
