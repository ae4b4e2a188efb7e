"""Combined scores: the unsupervised rank mean / z-score mean and the cross-validated logistic regression."""

from __future__ import annotations

import numpy as np
import pytest

from isograd.evaluate import metrics as M
from isograd.evaluate.combine import log_features, logistic_cv, rank_mean, zscore_mean


def terms(seed: int = 0, n: int = 200):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    epi = rng.lognormal(0, 2, n) * np.exp(0.7 * y)
    p = np.clip(rng.beta(2, 2, n) + 0.2 * (1 - y), 0, 1)
    return y, {"epistemic": epi, "aleatoric": p * (1 - p)}


def test_rank_mean_range_and_extremes():
    s = {"a": [1.0, 2.0, 3.0], "b": [10.0, 20.0, 30.0]}
    np.testing.assert_allclose(rank_mean(s), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(rank_mean({"a": [1.0, 2.0, 3.0], "b": [3.0, 2.0, 1.0]}), [0.5, 0.5, 0.5])
    assert rank_mean({"a": [5.0]}).tolist() == [0.5]
    # orientation: a score where higher = more confident is flipped
    np.testing.assert_allclose(rank_mean({"a": [1.0, 2.0, 3.0], "p": [0.9, 0.5, 0.1]},
                                         higher_is_uncertain={"a": True, "p": False}), [0.0, 0.5, 1.0])


def test_rank_mean_ignores_scale_and_monotone_transforms():
    _, s = terms()
    base = rank_mean(s)
    moved = rank_mean({"epistemic": 1e-8 * s["epistemic"], "aleatoric": np.sqrt(s["aleatoric"])})
    np.testing.assert_array_equal(base, moved)


def test_rank_mean_helps_when_both_terms_carry_signal():
    """Each term misranks one of the four correct answers (A: epistemic high, B: aleatoric
    high); their rank mean puts both halfway. By hand, pairs (incorrect > correct) of 16:
    each term 12 (every incorrect beats 3 of 4), the rank mean 14 (ranks A = B = 3.5 and
    C, D = 1, 2 against 3, 4, 5, 6: the incorrect answer at 3 beats only C and D)."""
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])  # correct A, B, C, D, then four incorrect
    s = {"epistemic": np.array([8.0, 1, 2, 3, 4, 5, 6, 7]),
         "aleatoric": np.array([1.0, 8, 2, 3, 4, 5, 6, 7])}
    assert M.auroc(y, s["epistemic"]) == M.auroc(y, s["aleatoric"]) == 12 / 16
    assert M.auroc(y, rank_mean(s)) == 14 / 16


def test_rank_mean_input_errors():
    with pytest.raises(ValueError, match="length"):
        rank_mean({"a": [1.0, 2.0], "b": [1.0]})
    with pytest.raises(ValueError, match="NaN"):
        rank_mean({"a": [1.0, np.nan]})
    with pytest.raises(ValueError, match="no scores"):
        rank_mean({})


def test_zscore_mean():
    _, s = terms()
    z = zscore_mean(s)
    assert z.mean() == pytest.approx(0.0, abs=1e-12)
    zl = zscore_mean(s, log=True)
    # on logs, a σ² factor is a shift: no change at all
    np.testing.assert_allclose(zl, zscore_mean({**s, "epistemic": 1e-6 * s["epistemic"]}, log=True), atol=1e-12)
    with_zero = {**s, "epistemic": np.r_[0.0, s["epistemic"][1:]]}
    assert np.isfinite(zscore_mean(with_zero, log=True)).all()
    flipped = zscore_mean(s, higher_is_uncertain={"epistemic": True, "aleatoric": False})
    assert not np.allclose(flipped, z)


def test_log_features_floor_zeros():
    X = log_features({"a": [0.0, 1e-30, 1.0], "b": [0.25, 0.1, 0.0]})
    assert X.shape == (3, 2) and np.isfinite(X).all()
    assert X[0, 0] == X[1, 0]  # zero floored at the smallest positive value
    with pytest.raises(ValueError, match="non-negative"):
        log_features({"a": [-1.0, 1.0]})


def test_logistic_cv_is_out_of_fold():
    rng = np.random.default_rng(0)
    n = 120
    X = rng.normal(size=(n, 30))  # pure noise, many features: an in-sample fit looks good
    y = rng.integers(0, 2, n)
    from sklearn.linear_model import LogisticRegression

    in_sample = LogisticRegression(C=1.0, max_iter=1000).fit(X, y).predict_proba(X)[:, 1]
    assert M.auroc(y, in_sample) > 0.75
    oof = logistic_cv(X, y, folds=5, seed=0)
    assert oof.shape == (n,) and 0.3 < M.auroc(y, oof) < 0.65


def test_logistic_cv_learns_signal_and_is_deterministic():
    y, s = terms(2, n=400)
    X = log_features(s)
    p = logistic_cv(X, y, seed=0)
    # both terms are informative here: the learned combination beats each alone, out of fold
    assert M.auroc(y, p) > max(M.auroc(y, s["epistemic"]), M.auroc(y, s["aleatoric"]))
    np.testing.assert_array_equal(p, logistic_cv(X, y, seed=0))
    # a σ² factor is a shift of log ‖g‖², undone by the standardisation
    p2 = logistic_cv(log_features({**s, "epistemic": 1e-6 * s["epistemic"]}), y, seed=0)
    np.testing.assert_allclose(p2, p, atol=1e-6)


def test_logistic_cv_small_classes():
    X = np.arange(10.0)[:, None]
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    assert logistic_cv(X, y, folds=5).shape == (10,)  # folds lowered to 3
    with pytest.raises(ValueError, match="at least 2"):
        logistic_cv(X, np.r_[1, np.zeros(9, int)])
