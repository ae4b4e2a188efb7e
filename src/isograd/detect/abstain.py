"""Abstention with a guarantee: the answering threshold on P(wrong), by learn-then-test.

A detector answers a question when its P(wrong) is at most the threshold t, and abstains
otherwise. `choose_threshold` picks t on labelled calibration rows so that, with probability
at least 1 − δ over the draw of those rows, the error rate among the answered questions is
at most α. It is MAPIE's risk control (`mapie.risk_control.BinaryClassificationController`,
learn-then-test, Angelopoulos et al. 2021): each candidate t on a fixed grid is a hypothesis
"error among answered > α", tested with the Hoeffding–Bentkus p-value on the rows it answers;
Bonferroni–Holm keeps the family-wise error at δ; among the certified t, the one that answers
most is chosen.

Why Bonferroni–Holm (MAPIE's default) and not fixed-sequence testing: fixed sequence tests the
strictest t first and stops at the first failure, so when the strictest thresholds answer no
row at all (a detector whose P(wrong) never falls below, say, 0.2) it certifies nothing even
where a looser t would pass. Holm costs some coverage instead. Measured on synthetic data
(s ~ U(0, 1), P(wrong | s) = s, α = 0.2, δ = 0.1, 200 calibration draws each): with 2,000
calibration rows Holm answers 74% of what the oracle threshold answers and fixed sequence 83%;
with 4,000 rows Holm reaches 83% (and 84% over the 1,000 draws of the test suite at 5,000).
A candidate that answers no calibration row counts as not certified (MAPIE gives it a NaN
p-value, which would stop its Holm loop: `_holm`).

When no t is certified, the threshold is None and every row abstains: the caller is told
plainly instead of answering everything.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .features import DetectorError

GRID = tuple(round(0.01 * k, 2) for k in range(1, 101))
"""The candidate thresholds on P(wrong): 0.01, 0.02, ..., 1.0 (fixed before any data is seen,
as learn-then-test requires)."""

ALPHA = 0.3
"""Default target error rate among the answered rows."""
DELTA = 0.1
"""Default risk that the threshold's guarantee fails."""


@dataclass(frozen=True)
class Threshold:
    """The answering rule: answer when P(wrong) <= `threshold`.

    Attributes:
        threshold: the certified threshold, or None when none meets `alpha` (abstain always).
        alpha: target error rate among the answered.
        delta: allowed probability that the guarantee fails (confidence 1 − δ).
        n_calibration: calibration rows it was chosen on.
        coverage: share of the calibration rows answered under it (0 when None).
        error: error rate among the answered calibration rows (None when none answered).
    """

    threshold: float | None
    alpha: float
    delta: float
    n_calibration: int
    coverage: float
    error: float | None

    def answers(self, p_error: ArrayLike) -> NDArray[np.bool_]:
        """[N] True where a row is answered (never when `threshold` is None).

        P(wrong) <= t is evaluated as 1 − P(wrong) >= 1 − t, MAPIE's own comparison, so that
        the rows answered are exactly those the certificate counted (no rounding gap).
        """
        pe = np.asarray(p_error, dtype=np.float64)
        if self.threshold is None:
            return np.zeros(pe.shape, dtype=bool)
        return (1.0 - pe) >= (1.0 - self.threshold)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the detector file's ``threshold`` block)."""
        return {"threshold": self.threshold, "alpha": self.alpha, "delta": self.delta,
                "n_calibration": self.n_calibration, "coverage": self.coverage,
                "error": self.error}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Threshold:
        """Inverse of `to_dict`."""
        t = d["threshold"]
        err = d["error"]
        return cls(None if t is None else float(t), float(d["alpha"]), float(d["delta"]),
                   int(d["n_calibration"]), float(d["coverage"]),
                   None if err is None else float(err))


def check_level(name: str, v: float) -> float:
    """`v` as a float strictly between 0 and 1, or a DetectorError naming `name`."""
    if not 0.0 < float(v) < 1.0:
        raise DetectorError(f"{name} must be in (0, 1), got {v}")
    return float(v)


def _proba(p_error: NDArray[np.float64]) -> NDArray[np.float64]:
    # MAPIE's predict_proba shape: column 1 = P(correct), the class whose precision is controlled
    pe = np.asarray(p_error, dtype=np.float64).reshape(-1)
    return np.column_stack([pe, 1.0 - pe])


@functools.cache
def _holm() -> type:
    """MAPIE's Bonferroni–Holm with a candidate that answers no calibration row taken as not
    certified (p-value 1): MAPIE gives it a NaN p-value, and one NaN stops its Holm loop before
    any other candidate is tested."""
    from mapie.risk_control import FWERBonferroniHolm

    class HolmEmptyNotCertified(FWERBonferroniHolm):
        def run(self, p_values: NDArray, delta: float) -> NDArray[np.int_]:
            p = np.asarray(p_values, dtype=np.float64)
            return super().run(np.where(np.isnan(p), 1.0, p), delta)

    return HolmEmptyNotCertified


def choose_threshold(p_error: ArrayLike, wrong: ArrayLike, *, alpha: float = ALPHA,
                     delta: float = DELTA) -> Threshold:
    """The largest certified answering threshold on labelled calibration rows.

    Args:
        p_error: [N] the detector's P(wrong) on calibration rows it was not fitted on.
        wrong: [N] 1 = the answer is wrong.
        alpha: target error rate among the answered, in (0, 1).
        delta: the guarantee holds with probability >= 1 − δ over the calibration draw.

    Returns:
        `Threshold` (threshold None when no candidate is certified).
    """
    from mapie.risk_control import BinaryClassificationController

    a, d = check_level("alpha", alpha), check_level("delta", delta)
    pe = np.asarray(p_error, dtype=np.float64)
    w = np.asarray(wrong)
    if pe.ndim != 1 or w.shape != pe.shape or len(pe) == 0:
        raise DetectorError(f"p_error and labels must be 1-D of equal non-zero length, "
                            f"got {pe.shape} and {w.shape}")
    if not np.isfinite(pe).all() or not np.isin(w, (0, 1)).all():
        raise DetectorError("p_error must be finite and labels binary")
    w = w.astype(np.int64)
    # MAPIE answers (predicts "correct") when P(correct) >= λ, i.e. P(wrong) <= 1 − λ
    lambdas = np.array([1.0 - t for t in GRID])
    ctl = BinaryClassificationController(_proba, "precision", 1.0 - a, confidence_level=1.0 - d,
                                         list_predict_params=lambdas, fwer_method=_holm()())
    with warnings.catch_warnings():
        # MAPIE warns for every candidate that answers no calibration row (its risk is 1)
        warnings.simplefilter("ignore", UserWarning)
        ctl.calibrate(pe, 1 - w)
    lam = ctl.best_predict_param
    # back to the grid value t (1 − (1 − t) may differ from t in the last bit)
    t = None if lam is None else min(GRID, key=lambda g: abs((1.0 - g) - float(lam)))
    out = Threshold(t, a, d, len(pe), 0.0, None)
    ans = out.answers(pe)
    err = float(w[ans].mean()) if ans.any() else None
    return dataclasses.replace(out, coverage=float(ans.mean()), error=err)


@dataclass(frozen=True)
class SplitCheck:
    """The guarantee checked on random calibration/test splits of labelled rows.

    Attributes:
        violation_rate: share of splits whose threshold gives a test error among the answered
            above alpha (splits answering no test row count as no violation).
        pooled_violation_rate: share of splits whose threshold gives an error among the answered
            above alpha on all the rows (calibration and test part together: the closest this
            set comes to the population the guarantee is about).
        noise_rate: the violation rate that the test part's sampling noise alone would give:
            the mean over splits of P(Binomial(m, e) > alpha·m), with m the test rows answered
            and e the threshold's error among the answered on all the rows.
        none_rate: share of splits where no threshold was certified.
        mean_coverage: mean share of the test rows answered.
        splits, n_calibration, n_test: how many splits, and the two parts' sizes.
    """

    violation_rate: float
    pooled_violation_rate: float
    noise_rate: float
    none_rate: float
    mean_coverage: float
    splits: int
    n_calibration: int
    n_test: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dataclasses.asdict(self)


def split_check(p_error: ArrayLike, wrong: ArrayLike, *, alpha: float, delta: float,
                splits: int = 500, calibration_share: float = 0.5, seed: int = 0) -> SplitCheck:
    """Choose the threshold on a random calibration part, measure the error on the rest.

    The test part has its own sampling noise: with m answered test rows and a true error of
    exactly alpha, about half the splits would exceed alpha on the test part. So the check
    also gives the rate that noise alone explains (``noise_rate``) and the violation rate on
    all the rows (``pooled_violation_rate``); compare those with δ.

    Args:
        p_error: [N] a detector's P(wrong) on rows it was not fitted on.
        wrong: [N] 1 = wrong.
        alpha, delta: as `choose_threshold`.
        splits: number of random splits.
        calibration_share: calibration part's share (<= 0.5 keeps the test part at least as
            large).
        seed: the splits' seed.
    """
    from scipy.stats import binom

    pe = np.asarray(p_error, dtype=np.float64)
    w = np.asarray(wrong).astype(np.int64)
    n_cal = int(round(calibration_share * len(pe)))
    if not 0 < n_cal < len(pe):
        raise DetectorError(f"calibration_share {calibration_share} leaves an empty part")
    rng = np.random.default_rng(seed)
    viol = pooled = none = 0
    cov, noise = [], []
    for _ in range(splits):
        perm = rng.permutation(len(pe))
        cal, test = perm[:n_cal], perm[n_cal:]
        thr = choose_threshold(pe[cal], w[cal], alpha=alpha, delta=delta)
        ans = thr.answers(pe[test])
        none += thr.threshold is None
        cov.append(ans.mean())
        viol += bool(ans.any() and w[test][ans].mean() > alpha)
        every = thr.answers(pe)
        e = float(w[every].mean()) if every.any() else 0.0
        pooled += e > alpha
        m = int(ans.sum())
        # P(errors > alpha·m) for m answered rows of true error e
        noise.append(float(binom.sf(np.floor(alpha * m), m, e)) if m else 0.0)
    return SplitCheck(viol / splits, pooled / splits, float(np.mean(noise)), none / splits,
                      float(np.mean(cov)), splits, n_cal, len(pe) - n_cal)
