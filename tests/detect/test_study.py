"""Out-of-fold comparisons against hand-written fold loops."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.model_selection import StratifiedKFold

from isograd.detect.study import (
    oof_calibrated,
    oof_detector,
    oof_sigma2_total,
    within_set,
    without_gradient,
)
from isograd.evaluate import auroc
from tests.detect.rows import synthetic_rows


def test_oof_calibrated_is_a_fold_loop():
    rng = np.random.default_rng(0)
    s = rng.normal(size=300)
    w = (rng.uniform(size=300) < 1 / (1 + np.exp(-2 * s))).astype(int)
    got = oof_calibrated(s, w, seed=3)
    ref = np.empty(300)
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=3).split(s, w):
        iso = IsotonicRegression(out_of_bounds="clip", increasing="auto").fit(s[tr], w[tr])
        ref[te] = iso.predict(s[te])
    np.testing.assert_allclose(got, ref, atol=1e-12)


def test_oof_sigma2_total_is_a_fold_loop():
    rng = np.random.default_rng(1)
    p = rng.uniform(0.05, 0.95, 400)
    glp = rng.lognormal(0, 1, 400)
    y = (rng.uniform(size=400) < p).astype(int)
    got = oof_sigma2_total(p, glp, y, seed=2)
    g, r, a = p**2 * glp, (y - p) ** 2, p * (1 - p)
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=2).split(p, 1 - y):
        s2 = max(0.0, np.linalg.lstsq(g[tr, None], (r - a)[tr], rcond=None)[0][0])
        np.testing.assert_allclose(got[te], a[te] + s2 * g[te], rtol=1e-10)


def test_oof_detector_and_the_gradient_ablation():
    rows, correct = synthetic_rows(500, seed=9)
    names = ["log_p", "grad_log_p", "epistemic", "aleatoric", "n_tokens", "by_layer/block.0"]
    assert without_gradient(names) == ["log_p", "aleatoric", "n_tokens"]
    oof = oof_detector(rows, correct, features="model-agnostic")
    assert ((oof > 0) & (oof < 1)).all() and auroc(~correct, oof) > 0.7
    res = within_set(rows, correct, features="model-agnostic", n_boot=100)
    assert res["detector"]["auroc"] == pytest.approx(auroc(~correct, oof))
    # the synthetic labels depend on the gradient norm: leaving it out loses AUROC
    assert res["detector"]["auroc"] > res["detector_no_gradient"]["auroc"]
    g = res["gradient"]
    assert 0 < g["p_value"] <= 1 and g["low"] <= g["difference"] <= g["high"]
    assert g["difference"] == pytest.approx(res["detector"]["auroc"]
                                            - res["detector_no_gradient"]["auroc"])
    assert {"msp (isotonic)", "grad_log_p (isotonic)", "epistemic (isotonic)",
            "total (sigma2 fitted)"} <= set(res)
    # the rows carry no combined score: the rank mean of epistemic and aleatoric stands in
    from isograd.evaluate import rank_mean

    comb = rank_mean({k: [r[k] for r in rows] for k in ("epistemic", "aleatoric")})
    assert res["combined (isotonic)"]["auroc"] == pytest.approx(
        auroc(~correct, oof_calibrated(comb, ~correct)))
    assert res["detector"]["n_wrong"] == int((~correct).sum())
