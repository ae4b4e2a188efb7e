"""Single-score calibrators and the fitted σ² against independent references."""

from __future__ import annotations

import numpy as np
import pytest

from isograd.detect import CalibrationMap, DetectorError, fit_calibrator, fit_sigma2


def scores(n: int = 1000, seed: int = 0):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=n)
    wrong = (rng.uniform(size=n) < 1 / (1 + np.exp(-(0.3 + 1.5 * s)))).astype(int)
    return s, wrong


def test_isotonic_matches_sklearn_and_round_trips():
    from sklearn.isotonic import IsotonicRegression

    s, w = scores()
    cal = fit_calibrator(s, w, method="isotonic")
    ref = IsotonicRegression(out_of_bounds="clip", increasing="auto").fit(s, w)
    grid = np.linspace(-4, 4, 301)
    np.testing.assert_allclose(cal(grid), ref.predict(grid), atol=1e-12)
    assert np.all(np.diff(cal(grid)) >= 0)
    assert CalibrationMap.from_dict(cal.to_dict()) == cal
    # a score oriented the other way is calibrated just as well
    np.testing.assert_allclose(fit_calibrator(-s, w)(-grid), cal(grid), atol=1e-12)


def test_platt_recovers_the_generating_logistic():
    s, w = scores(20000, seed=1)
    cal = fit_calibrator(s, w, method="platt")
    x = np.array([-2.0, 0.0, 1.0])
    np.testing.assert_allclose(cal(x), 1 / (1 + np.exp(-(0.3 + 1.5 * x))), atol=0.03)
    assert CalibrationMap.from_dict(cal.to_dict()) == cal
    with pytest.raises(DetectorError, match="both classes"):
        fit_calibrator(s[:10], np.zeros(10), method="platt")
    with pytest.raises(ValueError, match="allowed: 'none', 'isotonic', 'platt'"):
        fit_calibrator(s, w, method="beta")


def test_sigma2_is_the_least_squares_solution():
    rng = np.random.default_rng(2)
    n = 3000
    p = rng.uniform(0.05, 0.95, n)
    glp = rng.lognormal(0, 1, n)
    g = p**2 * glp
    true_s2 = 0.02
    # y drawn so that E[(y - p)^2] = p(1 - p) + σ²g: P(y = 1) = q with (q - p)² = σ²g
    q = np.clip(p + np.sqrt(true_s2 * g) * rng.choice([-1, 1], n), 0, 1)
    y = (rng.uniform(size=n) < q).astype(int)
    fit = fit_sigma2(p, glp, y)
    r, a = (y - p) ** 2, p * (1 - p)
    # brute force: scan σ² and take the least squares
    grid = np.linspace(0, 0.2, 20001)
    sse = [np.sum((r - a - s2 * g) ** 2) for s2 in grid]
    assert fit.sigma2 == pytest.approx(grid[int(np.argmin(sse))], abs=2e-5)
    np.testing.assert_allclose(fit.total, a + fit.sigma2 * g)
    assert fit.mse <= fit.mse_aleatoric_only
    # when the gradient term only hurts, σ² stops at 0
    assert fit_sigma2(p, glp, (rng.uniform(size=n) < p).astype(int)).sigma2 >= 0.0
    with pytest.raises(DetectorError, match="equal length"):
        fit_sigma2(p, glp[:5], y)


def test_sigma2_fit_reliability_and_figure(tmp_path):
    rng = np.random.default_rng(3)
    n = 2000
    p = rng.uniform(0.05, 0.95, n)
    glp = rng.lognormal(0, 1, n)
    y = (rng.uniform(size=n) < p).astype(int)
    fit = fit_sigma2(p, glp, y)
    rel = fit.reliability(bins=5)
    assert rel.count.sum() == n
    # per bin: the mean total and the mean squared error of that bin's rows
    order = np.argsort(fit.total, kind="stable")
    assert rel.mean_prob[0] == pytest.approx(fit.total[order[:rel.count[0]]].mean())
    assert rel.error_rate[0] == pytest.approx(fit.squared_error[order[:rel.count[0]]].mean())
    fit.plot(tmp_path / "sigma2.png")
    assert (tmp_path / "sigma2.png").stat().st_size > 1000
