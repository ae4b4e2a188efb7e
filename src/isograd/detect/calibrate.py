"""Single-score calibrators (isotonic, Platt) and the fitted σ² of the paper's `total`.

The calibrators are what LM-Polygraph, TruthTorchLM and UQLM offer: one raw score -> P(answer
wrong), fitted on labelled rows. Here they are the baselines a detector must beat, and the
optional calibration map on top of a detector's logistic output. Each is a small JSON-ready
`CalibrationMap` (no pickle).

σ²: under the paper's model, total = p(1−p) + σ²‖∇θ p‖² is the expected squared error
E[(y − p)²] of the indicator y that the answer is right. `fit_sigma2` picks σ² by least squares
on labelled rows; `isograd.evaluate.calibration` then says how well calibrated `total` is.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._choice import Choice
from .features import DetectorError


class Calibration(Choice):
    """How one score becomes a probability that the answer is wrong."""

    NONE = "none"
    """The score is already that probability (the detector's logistic output, default)."""
    ISOTONIC = "isotonic"
    """Isotonic regression (monotone step function, interpolated linearly between steps)."""
    PLATT = "platt"
    """Platt scaling: a logistic regression on the one (standardised) score."""


@dataclass(frozen=True)
class CalibrationMap:
    """A fitted map score -> P(wrong).

    Attributes:
        kind: the `Calibration` method.
        x: ISOTONIC: the knots' scores (increasing); PLATT: (mean, scale) of the score.
        y: ISOTONIC: P(wrong) at the knots; PLATT: (intercept, slope) on the standardised score.
    """

    kind: Calibration
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()

    def __call__(self, score: ArrayLike) -> NDArray[np.float64]:
        """P(wrong) of each score ([N] float64 in [0, 1])."""
        s = np.asarray(score, dtype=np.float64)
        if self.kind is Calibration.NONE:
            return np.clip(s, 0.0, 1.0)
        if self.kind is Calibration.ISOTONIC:
            return np.interp(s, self.x, self.y)
        z = (s - self.x[0]) / self.x[1]
        return sigmoid(self.y[0] + self.y[1] * z)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"kind": self.kind.value, "x": list(self.x), "y": list(self.y)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CalibrationMap:
        """Inverse of `to_dict`."""
        return cls(Calibration.parse(d["kind"]), tuple(float(v) for v in d["x"]),
                   tuple(float(v) for v in d["y"]))


def sigmoid(z: NDArray[np.float64]) -> NDArray[np.float64]:
    """1 / (1 + e^(−z)), without overflow warnings for large |z|."""
    out = np.empty_like(z, dtype=np.float64)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    e = np.exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def _binary(wrong: ArrayLike, n: int) -> NDArray[np.int64]:
    w = np.asarray(wrong)
    if w.shape != (n,):
        raise DetectorError(f"labels must be 1-D with one per score ({n}), got shape {w.shape}")
    if not np.isin(w, (0, 1)).all():
        raise DetectorError("labels must be binary (0/1 or False/True)")
    return w.astype(np.int64)


def fit_calibrator(score: ArrayLike, wrong: ArrayLike, *,
                   method: str | Calibration = Calibration.ISOTONIC) -> CalibrationMap:
    """Fit a single-score calibrator: score -> P(wrong).

    Args:
        score: [N] one score per answer (either orientation: isotonic picks the direction
            from the data, Platt's slope takes either sign).
        wrong: [N] 1 = the answer is wrong.
        method: "isotonic" (default), "platt" or "none".

    Returns:
        The fitted `CalibrationMap`.
    """
    kind = Calibration.parse(method)
    s = np.asarray(score, dtype=np.float64)
    if s.ndim != 1 or not np.isfinite(s).all():
        raise DetectorError("the score must be 1-D and finite")
    w = _binary(wrong, len(s))
    if kind is Calibration.NONE:
        return CalibrationMap(kind)
    if kind is Calibration.ISOTONIC:
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(out_of_bounds="clip", increasing="auto", y_min=0.0, y_max=1.0)
        with warnings.catch_warnings():
            # a score unrelated to the labels is a result to report, not a warning per fold
            warnings.filterwarnings("ignore", message=".*Determination of ``increasing``")
            iso.fit(s, w)
        return CalibrationMap(kind, tuple(map(float, iso.X_thresholds_)),
                              tuple(map(float, iso.y_thresholds_)))
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(w)) < 2:
        raise DetectorError("Platt scaling needs labels of both classes")
    mu, sd = float(s.mean()), float(s.std()) or 1.0
    lr = LogisticRegression(C=1e6).fit(((s - mu) / sd)[:, None], w)
    return CalibrationMap(kind, (mu, sd), (float(lr.intercept_[0]), float(lr.coef_[0, 0])))


@dataclass(frozen=True)
class Sigma2Fit:
    """σ² fitted so that total = p(1−p) + σ²‖∇θ p‖² matches (y − p)².

    Attributes:
        sigma2: the least-squares σ² (>= 0).
        total: [N] the rows' total under that σ².
        squared_error: [N] (y − p)², what `total` predicts.
        mse: mean of (total − (y − p)²)²; `mse_aleatoric_only` is the same at σ² = 0.
    """

    sigma2: float
    total: NDArray[np.float64]
    squared_error: NDArray[np.float64]
    mse: float
    mse_aleatoric_only: float

    def reliability(self, bins: int = 10) -> Any:
        """`isograd.evaluate.calibration.Reliability` of `total` against (y − p)²: mean total
        and mean squared error per bin (equal-count bins); its ``ece`` is the weighted gap."""
        from ..evaluate.calibration import binned

        return binned(self.squared_error, self.total, bins=bins, binning="quantile")

    def plot(self, path: str | Path, *, bins: int = 10, title: str = "") -> None:
        """The calibration figure of `total`: mean (y − p)² against mean total per bin."""
        from ..evaluate.calibration import plot_binned

        rel = self.reliability(bins)
        plot_binned(path, {f"total, σ² = {self.sigma2:.3g} (gap {rel.ece:.3f})": rel},
                    xlabel="mean total = p(1−p) + σ²‖∇p‖² in the bin",
                    ylabel="mean (y − p)² in the bin",
                    title=title or "Is the σ²-fitted total the expected squared error?")


def fit_sigma2(p: ArrayLike, grad_log_p: ArrayLike, correct: ArrayLike) -> Sigma2Fit:
    """Least-squares σ² of the paper's total against the squared error (y − p)².

    With r = (y − p)², a = p(1−p) and g = ‖∇θ p‖² = p²‖∇θ log p‖², minimises Σ(r − a − σ²g)²
    over σ² >= 0: σ² = max(0, Σ g(r − a) / Σ g²).

    Args:
        p: [N] the rows' prediction p (the probability the answer is right).
        grad_log_p: [N] ‖∇θ log p‖² (the rows' ``grad_log_p``; independent of the run's σ²).
        correct: [N] y, 1 = the answer is right.
    """
    pa = np.asarray(p, dtype=np.float64)
    gl = np.asarray(grad_log_p, dtype=np.float64)
    if pa.shape != gl.shape or pa.ndim != 1 or not (np.isfinite(pa).all() and np.isfinite(gl).all()):
        raise DetectorError("p and grad_log_p must be finite 1-D arrays of equal length")
    y = _binary(correct, len(pa))
    r = (y - pa) ** 2
    a = pa * (1 - pa)
    g = pa**2 * gl
    gg = float(g @ g)
    s2 = max(0.0, float(g @ (r - a)) / gg) if gg > 0 else 0.0
    total = a + s2 * g
    return Sigma2Fit(s2, total, r, float(np.mean((total - r) ** 2)), float(np.mean((a - r) ** 2)))
