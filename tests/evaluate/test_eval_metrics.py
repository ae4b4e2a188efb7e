"""Metrics: checked against sklearn/scipy and brute force, plus invariances shared by all metrics."""

from __future__ import annotations

import numpy as np
import pytest

from isograd.evaluate import metrics as M

sklearn_metrics = pytest.importorskip("sklearn.metrics")
stats = pytest.importorskip("scipy.stats")


def data(seed: int, n: int = 200, ties: bool = True, signal: float = 0.8):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = rng.normal(size=n) + signal * y
    if ties:
        s = np.round(s, 1)  # many tied scores
    return y, s


@pytest.mark.parametrize("seed", range(6))
def test_auroc_matches_sklearn_with_ties(seed):
    y, s = data(seed, n=50 + 40 * seed)
    assert M.auroc(y, s) == pytest.approx(sklearn_metrics.roc_auc_score(y, s), abs=1e-12)
    assert M.auroc(y.astype(bool), s) == M.auroc(y, s)


def test_auroc_edge_cases():
    assert M.auroc([0, 1], [0.0, 1.0]) == 1.0
    assert M.auroc([0, 1], [1.0, 0.0]) == 0.0
    assert M.auroc([0, 1, 0, 1], [3.0, 3.0, 3.0, 3.0]) == 0.5
    assert M.auroc([0, 1], [-np.inf, np.inf]) == 1.0
    with pytest.raises(ValueError, match="both classes"):
        M.auroc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        M.auroc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="binary"):
        M.auroc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="equal length"):
        M.auroc([0, 1, 1], [0.1, 0.2])


def test_rankdata_matches_scipy():
    _, s = data(3)
    np.testing.assert_allclose(M.rankdata(s), stats.rankdata(s))


def test_roc_curve_area_is_auroc():
    y, s = data(1)
    fpr, tpr = M.roc_curve(y, s)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(M.auroc(y, s), abs=1e-12)


def test_bootstrap_matches_brute_force_resamples():
    y, s = data(2, n=120)
    w = M._resample_weights(y, 25, seed=7)
    fast = M._weighted_auc(y, M._groups(s), w)
    for r in range(25):
        idx = np.repeat(np.arange(len(y)), w[r].astype(int))
        assert fast[r] == pytest.approx(sklearn_metrics.roc_auc_score(y[idx], s[idx]), abs=1e-12)
    samples = M.bootstrap_auroc_samples(y, s, n=25, seed=7)
    np.testing.assert_array_equal(samples, fast)
    mean, std = M.bootstrap_auroc(y, s, n=25, seed=7)
    assert mean == pytest.approx(fast.mean()) and std == pytest.approx(fast.std())


def test_bootstrap_deterministic_and_sane():
    y, s = data(4, n=300)
    a = M.bootstrap_auroc(y, s, n=300, seed=0)
    assert a == M.bootstrap_auroc(y, s, n=300, seed=0)
    assert a != M.bootstrap_auroc(y, s, n=300, seed=1)
    assert abs(a[0] - M.auroc(y, s)) < 3 * a[1]
    # the bootstrap std shrinks like 1/sqrt(n)
    y4, s4 = np.tile(y, 4), np.tile(s, 4)
    assert M.bootstrap_auroc(y4, s4, n=300, seed=0)[1] < 0.7 * a[1]


def test_bootstrap_redraws_single_class_resamples():
    y = np.array([1] + [0] * 9)  # most resamples of 10 rows lack the positive
    s = np.arange(10.0)
    samples = M.bootstrap_auroc_samples(y, s, n=50, seed=0)
    assert samples.shape == (50,) and np.isfinite(samples).all()


def test_paired_bootstrap():
    y, s = data(5, n=300, signal=1.0)
    noise = np.random.default_rng(9).normal(size=len(y))
    assert M.paired_bootstrap(y, s, s) == 1.0
    assert M.paired_bootstrap(y, s, 2 * s + 1) == 1.0  # same ranking, same AUROC on every resample
    p = M.paired_bootstrap(y, s, noise, n=300)
    assert p == pytest.approx(1 / 301)  # strong difference: the smallest attainable p
    assert M.paired_bootstrap(y, noise, s) == p  # two-sided: symmetric
    assert M.paired_bootstrap(y, s, noise, n=300, seed=3) == M.paired_bootstrap(y, s, noise, n=300, seed=3)


def test_paired_bootstrap_roughly_calibrated_under_null():
    rng = np.random.default_rng(0)
    ps = []
    for _ in range(30):
        y = rng.integers(0, 2, 150)
        ps.append(M.paired_bootstrap(y, rng.normal(size=150), rng.normal(size=150), n=200))
    ps = np.array(ps)
    assert (ps < 0.05).mean() <= 0.2 and np.median(ps) > 0.2


def test_benjamini_hochberg_matches_scipy():
    p = np.random.default_rng(1).uniform(size=30) ** 2
    np.testing.assert_allclose(M.benjamini_hochberg(p), stats.false_discovery_control(p))
    adj = M.benjamini_hochberg([0.01, 0.04, 0.03, 0.5])
    # by hand: sorted 0.01, 0.03, 0.04, 0.5 -> p·m/rank = 0.04, 0.06, 0.0533, 0.5 -> step-up min
    np.testing.assert_allclose(adj, [0.04, 0.16 / 3, 0.16 / 3, 0.5])
    assert M.benjamini_hochberg([]).shape == (0,)
    with pytest.raises(ValueError):
        M.benjamini_hochberg([0.1, np.nan])


def test_spearman_matches_scipy():
    _, a = data(6)
    b = a ** 3 + np.random.default_rng(2).normal(size=len(a))
    assert M.spearman(a, b) == pytest.approx(stats.spearmanr(a, b)[0], abs=1e-12)
    assert M.spearman(a, -a) == pytest.approx(-1.0)
    assert np.isnan(M.spearman(a, np.ones_like(a)))


# ------------------------------------------------------------ PRR / AURC (LM-Polygraph)


def polygraph_pra(estimator, target):
    """Literal port of LM-Polygraph's PredictionRejectionArea(max_rejection=1) (no ties)."""
    ue = np.asarray(estimator)
    num_obs = num_rej = len(ue)
    sorted_metrics = np.asarray(target, dtype=float)[np.argsort(ue)]
    cumsum = np.cumsum(sorted_metrics)[-num_rej:]
    scores = (cumsum / np.arange((num_obs - num_rej) + 1, num_obs + 1))[::-1]
    return np.sum(scores) / num_rej


def polygraph_rcc_auc(estimator, target):
    """Literal port of LM-Polygraph's RiskCoverageCurveAUC (no ties)."""
    risk = 1 - np.asarray(target, dtype=float)
    pairs = sorted(zip(estimator, risk), key=lambda x: x[0])
    cumulative = np.cumsum([x[1] for x in pairs]) / np.arange(1, len(estimator) + 1)
    return cumulative.mean()


@pytest.mark.parametrize("seed", range(4))
def test_prr_and_aurc_match_lm_polygraph(seed):
    y, s = data(seed, n=150, ties=False)
    q = 1 - y
    pra, oracle = polygraph_pra(s, q), polygraph_pra(-q + 1e-9 * np.arange(len(q)), q)
    rng = np.random.default_rng(42)
    rand = np.mean([polygraph_pra(rng.permutation(len(q)), q) for _ in range(2000)])
    expected = (pra - rand) / (oracle - rand)
    assert M.prr(y, s) == pytest.approx(expected, abs=0.02)  # random baseline estimated by sampling
    assert M.prr(y, s) == pytest.approx((pra - q.mean()) / (oracle - q.mean()), abs=1e-12)
    assert M.aurc(y, s) == pytest.approx(polygraph_rcc_auc(s, q), abs=1e-12)
    assert M.aurc(y, s) == pytest.approx(1 - pra, abs=1e-12)


def test_prr_aurc_reference_points():
    y = np.array([0, 0, 0, 1, 1])
    assert M.prr(y, y.astype(float)) == pytest.approx(1.0)  # oracle
    assert M.prr(y, -y.astype(float)) < 0  # worst ordering
    assert M.prr(y, np.zeros(5)) == pytest.approx(0.0)  # all tied = random
    assert M.aurc(y, y.astype(float)) < M.aurc(y, np.zeros(5)) < M.aurc(y, -y.astype(float))
    assert M.aurc(y, np.zeros(5)) == pytest.approx(y.mean())
    assert np.isnan(M.prr(np.zeros(4, int), np.arange(4.0)))


def test_ties_do_not_depend_on_row_order():
    y, s = data(8, n=100)
    perm = np.random.default_rng(0).permutation(len(y))
    for f in (M.prr, M.aurc, M.auroc):
        assert f(y[perm], s[perm]) == pytest.approx(f(y, s), abs=1e-12)


def test_accuracy():
    assert M.accuracy([True, False, True, True]) == 0.75
    with pytest.raises(ValueError):
        M.accuracy([])


# ------------------------------------------------------------ invariances shared by all metrics

METRICS = {
    "auroc": M.auroc,
    "prr": M.prr,
    "aurc": M.aurc,
    "bootstrap_auroc": lambda y, s: M.bootstrap_auroc(y, s, n=50, seed=1),
    "paired_bootstrap": lambda y, s: M.paired_bootstrap(y, s, np.sin(np.arange(len(y))), n=50, seed=1),
    "spearman_with_label": lambda y, s: M.spearman(y, s),
}
TRANSFORMS = {
    "sigma2_small": lambda s: 1e-6 * s,  # epistemic = σ²‖g‖²: σ² must not matter
    "sigma2_large": lambda s: 1e6 * s,
    "shift": lambda s: s + 3.0,
    "exp": np.exp,
    "cube": lambda s: s ** 3,
    "arctan": np.arctan,
}


@pytest.mark.parametrize("metric", list(METRICS))
@pytest.mark.parametrize("transform", list(TRANSFORMS))
def test_monotone_transforms_change_no_metric(metric, transform):
    y, s = data(11, n=120)
    f, t = METRICS[metric], TRANSFORMS[transform]
    base, moved = f(y, s), f(y, t(s))
    np.testing.assert_allclose(moved, base, rtol=0, atol=1e-12)


@pytest.mark.parametrize("metric", ["auroc", "prr", "aurc", "spearman_with_label"])
def test_row_order_changes_no_metric(metric):
    y, s = data(12, n=120)
    perm = np.random.default_rng(3).permutation(len(y))
    assert METRICS[metric](y[perm], s[perm]) == pytest.approx(METRICS[metric](y, s), abs=1e-12)


def test_flipping_the_score_mirrors_auroc():
    y, s = data(13)
    assert M.auroc(y, -s) == pytest.approx(1 - M.auroc(y, s), abs=1e-12)
    m1, sd1 = M.bootstrap_auroc(y, s, n=100)
    m2, sd2 = M.bootstrap_auroc(y, -s, n=100)
    assert m2 == pytest.approx(1 - m1, abs=1e-12) and sd2 == pytest.approx(sd1, abs=1e-12)


def test_paired_difference_interval_and_p_agree():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 400)
    strong, noise = y + rng.normal(scale=0.8, size=400), rng.normal(size=400)
    d = M.paired_difference(y, strong, noise, n=300, seed=2)
    # the difference is the plain AUROCs' difference; a clear gain has an interval above 0
    assert d.difference == pytest.approx(M.auroc(y, strong) - M.auroc(y, noise))
    assert 0 < d.low < d.difference < d.high and d.excludes_zero() == 1
    assert d.p_value == M.paired_bootstrap(y, strong, noise, n=300, seed=2) < 0.05
    flipped = M.paired_difference(y, noise, strong, n=300, seed=2)
    assert flipped.excludes_zero() == -1 and flipped.difference == pytest.approx(-d.difference)
    same = M.paired_difference(y, noise, 3 * noise, n=300, seed=2)
    assert same.difference == 0 and same.excludes_zero() == 0 and same.p_value == 1.0
