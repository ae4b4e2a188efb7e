"""Metrics for "does this score predict an error?", in the sklearn shape ``f(y_true, score)``.

Convention: ``y_true[i] = 1`` when answer i is INCORRECT and ``score`` is oriented so that higher
means more uncertain. Everything is numpy only, exact under ties, and deterministic (seeded).

- :func:`auroc`: Mann–Whitney U with mid-ranks (= ``sklearn.metrics.roc_auc_score``).
- :func:`bootstrap_auroc`: mean ± std over resamples of the rows (the paper: 300).
- :func:`paired_difference`: AUROC(s1) − AUROC(s2) with its 95% interval and p-value on the same
  resamples; :func:`paired_bootstrap`: that p-value alone.
- :func:`benjamini_hochberg`: FDR-adjusted p-values.
- :func:`spearman`; :func:`prr`, :func:`aurc` as LM-Polygraph defines them; :func:`aurac`
  (1 − AURC); :func:`risk_coverage` (the curve behind AURC); :func:`accuracy`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

MIN_PER_CLASS = 30
"""A score evaluated on fewer labelled answers than this of either class (correct, incorrect)
is too few to rank: reports say so instead of giving its AUROC (`too_few`)."""


def too_few(y_true: ArrayLike) -> bool:
    """Fewer than `MIN_PER_CLASS` rows of either class (1 = incorrect, 0 = correct)."""
    y = np.asarray(y_true)
    return min(int(y.sum()), int(len(y) - y.sum())) < MIN_PER_CLASS


def _check(y_true: ArrayLike, score: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    y = np.asarray(y_true)
    s = np.asarray(score, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1 or len(y) != len(s):
        raise ValueError(f"y_true and score must be 1-D of equal length, got {y.shape} and {s.shape}")
    if len(y) == 0:
        raise ValueError("empty input")
    if y.dtype == bool:
        y = y.astype(np.int64)
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must be binary (1 = incorrect answer, 0 = correct)")
    if np.isnan(s).any():
        raise ValueError(f"score has {int(np.isnan(s).sum())} NaN values; drop them first")
    return y.astype(np.int64), s


def check_scores(y_true: ArrayLike, score: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """The input check every metric shares: ``y_true`` as int 0/1 and ``score`` as float64, both
    1-D of one non-zero length and NaN-free, or a ValueError saying what is wrong."""
    return _check(y_true, score)


def rankdata(x: ArrayLike) -> NDArray[np.float64]:
    """Mid-ranks (1-based; ties share their average rank), as ``scipy.stats.rankdata``."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # group boundaries of equal values
    starts = np.r_[0, np.flatnonzero(xs[1:] != xs[:-1]) + 1]
    ends = np.r_[starts[1:], len(xs)]
    mid = (starts + ends + 1) / 2.0  # average of 1-based ranks starts+1..ends
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(mid, ends - starts)
    return ranks


def _groups(s: NDArray[np.float64]) -> NDArray[np.int64]:
    """Index of each row's value among the sorted unique values (for weighted AUROC)."""
    _, inv = np.unique(s, return_inverse=True)
    return inv.reshape(-1)


def _weighted_auc(y: NDArray[np.int64], g: NDArray[np.int64], w: NDArray[np.float64]) -> NDArray[np.float64]:
    """AUROC of resampled data given per-row weights w [R, N] (counts of each row in a resample).

    AUROC = P(score_pos > score_neg) + ½ P(equal): with per-value-group positive/negative
    masses P[g], Q[g]: sum_g P[g] (Q[<g] + ½ Q[g]) / (ΣP ΣQ). Exact, O(R·N).
    """
    n_groups = int(g.max()) + 1
    R = w.shape[0]
    offs = (np.arange(R) * n_groups)[:, None]

    def mass(mask: NDArray[np.bool_]) -> NDArray[np.float64]:
        flat = (offs + g[mask][None, :]).ravel()
        return np.bincount(flat, weights=w[:, mask].ravel(), minlength=R * n_groups).reshape(R, n_groups)

    pos, neg = mass(y == 1), mass(y == 0)
    below = np.cumsum(neg, axis=1) - neg
    num = (pos * (below + 0.5 * neg)).sum(axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def auroc(y_true: ArrayLike, score: ArrayLike) -> float:
    """Area under the ROC curve of ``score`` for predicting ``y_true = 1``; ties count ½.

    Raises:
        ValueError: if ``y_true`` has a single class (AUROC undefined).
    """
    y, s = _check(y_true, score)
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        raise ValueError("AUROC needs both classes in y_true (correct and incorrect answers)")
    r = rankdata(s)
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def roc_curve(y_true: ArrayLike, score: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(false positive rate, true positive rate), thresholds at each distinct score, from (0, 0)."""
    y, s = _check(y_true, score)
    order = np.argsort(-s, kind="mergesort")
    ys, ss = y[order], s[order]
    last = np.r_[np.flatnonzero(ss[1:] != ss[:-1]), len(ss) - 1]  # end of each tie group
    tp = np.cumsum(ys)[last]
    fp = (last + 1) - tp
    n1, n0 = max(int(y.sum()), 1), max(int(len(y) - y.sum()), 1)
    return np.r_[0.0, fp / n0], np.r_[0.0, tp / n1]


def _resample_weights(y: NDArray[np.int64], n: int, seed: int) -> NDArray[np.float64]:
    """[n, N] counts of each row in n bootstrap resamples that contain both classes.

    Resamples with one class only (AUROC undefined) are redrawn, deterministically.
    """
    if n < 2:
        raise ValueError(f"need at least 2 bootstrap resamples, got {n}")
    N = len(y)
    if y.min() == y.max():
        raise ValueError("bootstrap AUROC needs both classes in y_true")
    rng = np.random.default_rng(seed)
    chunks: list[NDArray[np.int64]] = []
    have = 0
    while have < n:
        idx = rng.integers(0, N, size=(n - have, N))
        yy = y[idx]
        idx = idx[yy.min(axis=1) != yy.max(axis=1)]
        chunks.append(idx)
        have += len(idx)
    idx = np.concatenate(chunks)[:n]
    flat = (np.arange(n)[:, None] * N + idx).ravel()
    return np.bincount(flat, minlength=n * N).reshape(n, N).astype(np.float64)


def bootstrap_auroc_samples(y_true: ArrayLike, score: ArrayLike, *, n: int = 300,
                            seed: int = 0) -> NDArray[np.float64]:
    """AUROC on each of ``n`` bootstrap resamples of the rows [n]."""
    y, s = _check(y_true, score)
    w = _resample_weights(y, n, seed)
    return _weighted_auc(y, _groups(s), w)


def bootstrap_auroc(y_true: ArrayLike, score: ArrayLike, *, n: int = 300,
                    seed: int = 0) -> tuple[float, float]:
    """(mean, std) of AUROC over ``n`` bootstrap resamples of the rows, as the paper reports.

    The std is the population std of the resampled AUROCs (``ddof=0``), i.e. the bootstrap
    standard error. Resamples lacking a class are redrawn.
    """
    a = bootstrap_auroc_samples(y_true, score, n=n, seed=seed)
    return float(a.mean()), float(a.std())


@dataclass(frozen=True)
class PairedDifference:
    """AUROC(s1) − AUROC(s2) on the same rows, with its paired bootstrap.

    Attributes:
        difference: AUROC(s1) − AUROC(s2) on the data.
        low, high: the percentile 95% interval of the difference over the resamples.
        p_value: two-sided p-value of H0: the two AUROCs are equal (`paired_bootstrap`).
        n: the resamples.
    """

    difference: float
    low: float
    high: float
    p_value: float
    n: int

    def excludes_zero(self) -> int:
        """+1 when the interval lies above 0, −1 below it, 0 when it holds 0."""
        return 1 if self.low > 0 else -1 if self.high < 0 else 0


def paired_difference(y_true: ArrayLike, s1: ArrayLike, s2: ArrayLike, *, n: int = 300,
                      seed: int = 0) -> PairedDifference:
    """AUROC(s1) − AUROC(s2) with its 95% interval and p-value, paired over the same resamples.

    With d the difference on the data and d_b on resample b: the interval is the 2.5th and
    97.5th percentiles of d_b; the null distribution is d_b shifted to 0, so
    p = (1 + #{|d_b − d| ≥ |d|}) / (n + 1) (never 0; smallest 1/(n+1)). Identical scores give
    d = 0 and p = 1.
    """
    y, a = _check(y_true, s1)
    _, b = _check(y_true, s2)
    if len(a) != len(b):
        raise ValueError("s1 and s2 must have the same length")
    w = _resample_weights(y, n, seed)
    d = auroc(y, a) - auroc(y, b)
    db = _weighted_auc(y, _groups(a), w) - _weighted_auc(y, _groups(b), w)
    # tolerance: identical scores must give exactly |d_b − d| = 0 ≥ |d| = 0
    extreme = np.abs(db - d) >= abs(d) - 1e-12
    lo, hi = np.percentile(db, [2.5, 97.5])
    return PairedDifference(float(d), float(lo), float(hi), float((1 + extreme.sum()) / (n + 1)),
                            n)


def paired_bootstrap(y_true: ArrayLike, s1: ArrayLike, s2: ArrayLike, *, n: int = 300,
                     seed: int = 0) -> float:
    """Two-sided p-value of H0: AUROC(s1) = AUROC(s2), paired over the same resamples
    (`paired_difference`'s ``p_value``)."""
    return paired_difference(y_true, s1, s2, n=n, seed=seed).p_value


def benjamini_hochberg(pvals: ArrayLike) -> NDArray[np.float64]:
    """Benjamini–Hochberg adjusted p-values (step-up, monotone, capped at 1), input order kept."""
    p = np.asarray(pvals, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError("pvals must be 1-D")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("p-values must lie in [0, 1] (no NaN)")
    m = len(p)
    if m == 0:
        return p.copy()
    order = np.argsort(p)
    scaled = p[order] * m / np.arange(1, m + 1)
    adj = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out


def spearman(a: ArrayLike, b: ArrayLike) -> float:
    """Spearman rank correlation (Pearson on mid-ranks); NaN if either input is constant."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("a and b must be 1-D of equal length")
    if np.isnan(x).any() or np.isnan(y).any():
        raise ValueError("spearman: NaN in input")
    rx, ry = rankdata(x), rankdata(y)
    rx -= rx.mean()
    ry -= ry.mean()
    den = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / den) if den > 0 else float("nan")


def _tie_averaged(y: NDArray[np.int64], s: NDArray[np.float64]) -> NDArray[np.float64]:
    """y sorted by ascending score (most confident first), each tie group replaced by its mean:
    the expectation over random tie-breaking, so results do not depend on sort order."""
    order = np.argsort(s, kind="mergesort")
    ss, ys = s[order], y[order].astype(np.float64)
    g = np.r_[0, np.cumsum(ss[1:] != ss[:-1])]
    means = np.bincount(g, weights=ys) / np.bincount(g)
    return means[g]


def _rejection_area(quality_sorted: NDArray[np.float64]) -> float:
    """LM-Polygraph's PredictionRejectionArea (max_rejection = 1): mean over k = 1..N of the
    mean quality of the k most confident rows."""
    k = np.arange(1, len(quality_sorted) + 1)
    return float((np.cumsum(quality_sorted) / k).mean())


def aurc(y_true: ArrayLike, score: ArrayLike) -> float:
    """Area under the risk–coverage curve (LM-Polygraph ``RiskCoverageCurveAUC``); lower is better.

    Rows sorted by ascending uncertainty; AURC = mean over coverage k/N of the error rate among
    the k most confident. Ties: averaged over their orderings.
    """
    y, s = _check(y_true, score)
    return _rejection_area(_tie_averaged(y, s))


def aurac(y_true: ArrayLike, score: ArrayLike) -> float:
    """Area under the rejection–accuracy curve; higher is better.

    The accuracy of the answers kept when the most uncertain ones are rejected, averaged over
    the N rejection levels (keep the k most confident, k = 1..N): exactly ``1 − aurc``, the
    accuracy-side reading of the same curve (the form used e.g. for semantic entropy).
    """
    return 1.0 - aurc(y_true, score)


def risk_coverage(y_true: ArrayLike, score: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(coverage k/N, error rate among the k most confident rows) for k = 1..N [N each].

    Ties are averaged over their orderings, as in `aurc`, whose value is the curve's mean.
    """
    y, s = _check(y_true, score)
    err = _tie_averaged(y, s)
    k = np.arange(1, len(err) + 1, dtype=np.float64)
    return k / len(err), np.cumsum(err) / k


def prr(y_true: ArrayLike, score: ArrayLike) -> float:
    """Prediction rejection ratio (LM-Polygraph's normalised PredictionRejectionArea).

    PRR = (PRA(score) − PRA(random)) / (PRA(oracle) − PRA(random)) with quality = 1 − y_true;
    PRA(random) = mean quality (the limit LM-Polygraph estimates with random permutations);
    the oracle rejects incorrect answers first. 1 = oracle, 0 = random, < 0 worse than random.
    NaN when all answers are equally correct.
    """
    y, s = _check(y_true, score)
    q = 1.0 - y.astype(np.float64)
    pra = _rejection_area(1.0 - _tie_averaged(y, s))
    rnd = float(q.mean())
    oracle = _rejection_area(np.sort(q)[::-1])
    den = oracle - rnd
    return float((pra - rnd) / den) if den > 0 else float("nan")


def accuracy(correct: ArrayLike) -> float:
    """Fraction of correct answers (``correct`` boolean or 0/1)."""
    c = np.asarray(correct, dtype=np.float64)
    if c.ndim != 1 or len(c) == 0:
        raise ValueError("correct must be a non-empty 1-D array")
    return float(c.mean())
