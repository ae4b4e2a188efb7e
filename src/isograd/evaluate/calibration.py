"""Is a probability of error calibrated? Brier, log-loss, ECE and the reliability diagram.

Metrics in the sklearn shape ``f(y_true, prob)``; ``y_true = 1`` for an incorrect answer (the
package's convention) and ``prob`` = the predicted probability that the answer is incorrect
(a detector's ``p_error``, a calibrated score). numpy only; the figure uses matplotlib lazily
through `isograd.evaluate.curves`.

- :func:`brier`: mean squared error of prob (= ``sklearn.metrics.brier_score_loss``).
- :func:`log_loss`: mean negative log-likelihood, prob clipped to [eps, 1 − eps].
- :func:`reliability`: per-bin mean prob and observed error rate (the bins of
  ``sklearn.calibration.calibration_curve``); :func:`ece`: their count-weighted mean gap.
- :func:`binned`: the same bins for any prediction of a mean (the paper's total against the
  squared error (y − p)²); :func:`plot_reliability`, :func:`plot_binned`: the diagrams.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._choice import Choice
from .metrics import check_scores


class Binning(Choice):
    """How the reliability bins are cut."""

    UNIFORM = "uniform"
    """Equal widths on [0, 1] (default)."""
    QUANTILE = "quantile"
    """Equal counts: edges at quantiles of prob."""


def _checked(y_true: ArrayLike, prob: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    y, p = check_scores(y_true, prob)
    if (p < 0).any() or (p > 1).any():
        raise ValueError("prob must lie in [0, 1]")
    return y, p


def brier(y_true: ArrayLike, prob: ArrayLike) -> float:
    """Mean of (prob − y)², in [0, 1]; lower is better."""
    y, p = _checked(y_true, prob)
    return float(np.mean((p - y) ** 2))


def log_loss(y_true: ArrayLike, prob: ArrayLike, *, eps: float = 1e-15) -> float:
    """Mean of −[y log prob + (1 − y) log(1 − prob)], prob clipped to [eps, 1 − eps]."""
    y, p = _checked(y_true, prob)
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


@dataclass(frozen=True)
class Reliability:
    """Reliability-diagram data; arrays [K] over the non-empty bins.

    Attributes:
        edges: [bins + 1] the bin edges (all bins, empty ones included).
        mean_prob: mean predicted probability in each bin.
        error_rate: observed share of y = 1 in each bin.
        count: rows in each bin.
    """

    edges: NDArray[np.float64]
    mean_prob: NDArray[np.float64]
    error_rate: NDArray[np.float64]
    count: NDArray[np.int64]

    @property
    def ece(self) -> float:
        """Expected calibration error: Σ_k (n_k / N)·|error_rate_k − mean_prob_k|."""
        return float(np.sum(self.count * np.abs(self.error_rate - self.mean_prob)) / self.count.sum())


def binned(observed: ArrayLike, predicted: ArrayLike, *, bins: int = 10,
           binning: str | Binning = Binning.UNIFORM) -> Reliability:
    """Bin `predicted` and compare each bin's mean prediction with its mean observed value.

    The core of `reliability`, for any prediction of a mean: a probability against 0/1
    outcomes, or the paper's total against squared errors (y − p)².

    Args:
        observed: [N] observed values (0/1 outcomes, squared errors, ...).
        predicted: [N] predictions of their mean (finite).
        bins: number of bins (>= 1).
        binning: "uniform" (equal widths on [0, 1]; predictions above 1 fall in the last bin)
            or "quantile".
    """
    o = np.asarray(observed, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    if o.shape != p.shape or o.ndim != 1 or not len(o) or not np.isfinite(p).all():
        raise ValueError("observed and predicted must be finite, 1-D and of one non-zero length")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    q = np.linspace(0.0, 1.0, bins + 1)
    edges = np.percentile(p, q * 100) if Binning.parse(binning) is Binning.QUANTILE else q
    # the same assignment as sklearn's calibration_curve: right-closed inner edges
    ids = np.searchsorted(edges[1:-1], p)
    n = np.bincount(ids, minlength=bins)
    s = np.bincount(ids, weights=p, minlength=bins)
    e = np.bincount(ids, weights=o, minlength=bins)
    keep = n > 0
    return Reliability(edges, s[keep] / n[keep], e[keep] / n[keep], n[keep].astype(np.int64))


def reliability(y_true: ArrayLike, prob: ArrayLike, *, bins: int = 10,
                binning: str | Binning = Binning.UNIFORM) -> Reliability:
    """Bin prob and compare each bin's mean prob with its observed error rate.

    Args:
        y_true: [N] 1 = incorrect answer.
        prob: [N] predicted probability of y = 1.
        bins: number of bins (>= 1).
        binning: "uniform" (default) or "quantile".
    """
    y, p = _checked(y_true, prob)
    return binned(y, p, bins=bins, binning=binning)


def ece(y_true: ArrayLike, prob: ArrayLike, *, bins: int = 10,
        binning: str | Binning = Binning.UNIFORM) -> float:
    """Expected calibration error over `bins` bins (see `Reliability.ece`)."""
    return reliability(y_true, prob, bins=bins, binning=binning).ece


def calibration_summary(y_true: ArrayLike, prob: ArrayLike, *, bins: int = 10) -> dict[str, float]:
    """``{"brier", "log_loss", "ece"}`` of one probability (uniform bins)."""
    return {"brier": brier(y_true, prob), "log_loss": log_loss(y_true, prob),
            "ece": ece(y_true, prob, bins=bins)}


def plot_reliability(path: str | Path, y: ArrayLike, probs: Mapping[str, ArrayLike], *,
                     bins: int = 10, title: str = "") -> None:
    """The reliability diagram: observed error rate against mean predicted probability per bin,
    one line per probability (legend: its ECE and Brier), with the diagonal of perfect
    calibration.

    Args:
        path: the image to write.
        y: [N] 1 = incorrect answer.
        probs: name -> [N] predicted probability of an incorrect answer.
        bins: uniform bins.
        title: figure title.
    """
    curves = {f"{name} (ECE {reliability(y, p, bins=bins).ece:.3f}, Brier {brier(y, p):.3f})":
              reliability(y, p, bins=bins) for name, p in probs.items()}
    plot_binned(path, curves, xlabel="mean predicted P(incorrect) in the bin",
                ylabel="observed error rate in the bin", title=title or "Reliability diagram")


def plot_binned(path: str | Path, curves: Mapping[str, Reliability], *, xlabel: str,
                ylabel: str, title: str) -> None:
    """Mean observed against mean predicted per bin, one line per `curves` entry (legend: its
    key), with the diagonal y = x; the axes span the data (at least [0, 1])."""
    from .curves import finish, pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    try:
        top = max([1.0, *(float(max(c.mean_prob.max(), c.error_rate.max())) for c in curves.values())])
        ax.plot([0, top], [0, top], color="0.6", lw=1, ls="--", label="perfectly calibrated")
        for i, (name, c) in enumerate(curves.items()):
            ax.plot(c.mean_prob, c.error_rate, marker="os^vD<>"[i % 7], lw=1.3, label=name)
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        finish(fig, ax, path, xlabel=xlabel, ylabel=ylabel, title=title,
               legend={"fontsize": 6, "loc": "upper left"})
    finally:
        plt.close(fig)
