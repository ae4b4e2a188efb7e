"""Abstention with a guarantee: the synthetic check of "Done when", and the threshold's rules."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from isograd.detect import GRID, DetectorError, choose_threshold, split_check

ALPHA, DELTA, DRAWS, N_CAL = 0.2, 0.1, 1000, 5000


def true_error(t: float) -> float:
    """Error rate among answered at threshold t when s ~ U(0, 1) and P(wrong | s) = s."""
    return t / 2


def oracle_coverage(alpha: float) -> float:
    """Coverage of the best grid threshold whose true error is <= alpha (coverage = t)."""
    return max(t for t in GRID if true_error(t) <= alpha + 1e-12)


def check_guarantee(controller, seed: int = 0) -> tuple[float, float]:
    """(violation rate, mean true coverage) of `controller(p_error, wrong) -> t or None` over
    DRAWS simulated calibration sets of N_CAL rows."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(size=(DRAWS, N_CAL))
    wrong = (rng.uniform(size=(DRAWS, N_CAL)) < s).astype(np.int64)
    viol, cov = 0, []
    for d in range(DRAWS):
        t = controller(s[d], wrong[d])
        cov.append(0.0 if t is None else min(t, 1.0))
        viol += t is not None and true_error(t) > ALPHA
    return viol / DRAWS, float(np.mean(cov))


def passes(violation: float, coverage: float) -> bool:
    se = np.sqrt(DELTA * (1 - DELTA) / DRAWS)
    return violation <= DELTA + 3 * se and coverage >= 0.8 * oracle_coverage(ALPHA)


def test_guarantee_holds_on_synthetic_draws():
    viol, cov = check_guarantee(
        lambda pe, w: choose_threshold(pe, w, alpha=ALPHA, delta=DELTA).threshold)
    assert passes(viol, cov), (viol, cov, oracle_coverage(ALPHA))


def test_check_rejects_a_controller_that_never_answers_or_always_does():
    assert not passes(*check_guarantee(lambda pe, w: None))
    # answering everything has true error 0.5 > alpha in every draw
    assert not passes(*check_guarantee(lambda pe, w: 1.0))
    # the plug-in threshold (empirical error <= alpha, no confidence margin) violates too often
    def plug_in(pe, w):
        ok = [t for t in GRID if (pe <= t).any() and w[pe <= t].mean() <= ALPHA]
        return max(ok) if ok else None
    viol, _ = check_guarantee(plug_in)
    assert viol > DELTA + 3 * np.sqrt(DELTA * (1 - DELTA) / DRAWS)


def test_chosen_threshold_is_certified_by_the_binomial_tail():
    # necessary for any valid test at level δ: P(Binom(k, α) <= errors) <= δ on the answered rows
    rng = np.random.default_rng(1)
    for n in (300, 1000, 3000):
        s = rng.uniform(size=n)
        w = (rng.uniform(size=n) < s).astype(int)
        thr = choose_threshold(s, w, alpha=0.25, delta=0.1)
        assert thr.threshold is not None
        ans = s <= thr.threshold
        k, e = int(ans.sum()), int(w[ans].sum())
        assert binom.cdf(e, k, 0.25) <= 0.1
        assert thr.coverage == pytest.approx(ans.mean())
        assert thr.error == pytest.approx(e / k)
        assert thr.threshold in GRID


def test_no_threshold_when_alpha_is_out_of_reach():
    rng = np.random.default_rng(2)
    s = rng.uniform(0.3, 1.0, 500)
    w = np.ones(500, dtype=int)  # every answer is wrong
    thr = choose_threshold(s, w, alpha=0.3, delta=0.1)
    assert thr.threshold is None and thr.coverage == 0.0 and thr.error is None
    assert not thr.answers(s).any()


def test_threshold_argument_errors():
    with pytest.raises(DetectorError, match="alpha"):
        choose_threshold([0.1], [0], alpha=1.5)
    with pytest.raises(DetectorError, match="delta"):
        choose_threshold([0.1], [0], delta=0.0)
    with pytest.raises(DetectorError, match="equal"):
        choose_threshold([0.1, 0.2], [0])
    with pytest.raises(DetectorError, match="binary"):
        choose_threshold([0.1], [2])


def test_split_check_counts_violations_on_the_test_part():
    rng = np.random.default_rng(3)
    s = rng.uniform(size=4000)
    w = (rng.uniform(size=4000) < s).astype(int)
    chk = split_check(s, w, alpha=0.2, delta=0.1, splits=20, seed=0)
    assert chk.n_calibration == chk.n_test == 2000
    assert 0.0 <= chk.violation_rate <= 0.5 and chk.none_rate == 0.0
    # the certified thresholds answer about t of the rows, below the oracle's 0.4
    assert 0.2 < chk.mean_coverage < 0.4
    never = split_check(s, np.ones(4000, dtype=int), alpha=0.2, delta=0.1, splits=5)
    assert never.none_rate == 1.0 and never.mean_coverage == 0.0 and never.violation_rate == 0.0
    assert never.noise_rate == never.pooled_violation_rate == 0.0


def test_split_check_noise_rate_is_the_binomial_tail_of_the_test_part():
    # one P(wrong) for every row: a certified threshold answers every row, so each split's test
    # part answers m = n_test rows of whole-set error e = K / N, and the noise rate is the
    # binomial tail P(Bin(m, e) > alpha·m) exactly; the test part's own violations follow the
    # hypergeometric tail of drawing m rows from the N (within 3 standard errors)
    from scipy.stats import binom, hypergeom

    n, k, alpha, splits = 8000, 1440, 0.205, 150
    w = np.zeros(n, dtype=int)
    w[:k] = 1
    chk = split_check(np.full(n, 0.05), w, alpha=alpha, delta=0.1, splits=splits,
                      calibration_share=0.9, seed=0)
    m = chk.n_test
    assert chk.none_rate == 0.0 and chk.mean_coverage == 1.0 and chk.pooled_violation_rate == 0.0
    assert chk.noise_rate == pytest.approx(binom.sf(np.floor(alpha * m), m, k / n), rel=1e-9)
    want = hypergeom.sf(np.floor(alpha * m), n, k, m)
    assert abs(chk.violation_rate - want) <= 3 * np.sqrt(want * (1 - want) / splits) + 1e-9
    assert set(chk.to_dict()) >= {"noise_rate", "pooled_violation_rate", "violation_rate"}


def test_candidates_answering_no_row_do_not_block_the_others():
    # P(wrong) never below 0.3: the thresholds 0.01..0.29 answer nobody (MAPIE: NaN p-values)
    rng = np.random.default_rng(4)
    s = rng.uniform(0.3, 0.6, 2000)
    w = (rng.uniform(size=2000) < s - 0.25).astype(int)
    thr = choose_threshold(s, w, alpha=0.2, delta=0.1)
    assert thr.threshold is not None and thr.threshold >= 0.4
    assert thr.error <= 0.2


def test_answered_rows_are_those_mapie_certified():
    import warnings

    from mapie.risk_control import BinaryClassificationController

    rng = np.random.default_rng(5)
    # P(wrong) values sitting on and next to the grid points
    s = np.concatenate([np.array(GRID) + e for e in (-1e-16, 0.0, 1e-16)])
    s = np.clip(np.repeat(s, 10), 0.0, 1.0)
    w = (rng.uniform(size=len(s)) < s / 2).astype(int)
    thr = choose_threshold(s, w, alpha=0.2, delta=0.1)
    assert thr.threshold in GRID
    # MAPIE's own controller, calibrated on the same rows, predicts "correct" (answers) there
    ctl = BinaryClassificationController(lambda x: np.column_stack([x, 1 - x]), "precision", 0.8,
                                         confidence_level=0.9,
                                         list_predict_params=np.array([1.0 - t for t in GRID]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ctl.calibrate(s, 1 - w)
    assert ctl.best_predict_param == pytest.approx(1.0 - thr.threshold)
    np.testing.assert_array_equal(thr.answers(s), ctl.predict(s) == 1)
