"""The paper's "epistemic & aleatoric combined" score, which the paper does not define.

Two documented choices, each under its own name in reports:

- ``combined`` (default, unsupervised): :func:`rank_mean`, the mean of each score's normalised
  rank over the evaluated rows. Scale-free (σ² and any monotone transform of a score leave it
  unchanged), needs no labels, and weighs both terms equally. It is transductive: a row's value
  depends on the other rows, so it is computed over the whole evaluated set.
  :func:`zscore_mean` (optionally on logs) is the alternative.
- ``combined_logreg_cv`` (supervised): logistic regression on the log scores, evaluated out of
  fold (:func:`logistic_cv`), so its AUROC is not fit on the rows it is measured on. It uses the
  labels, so it is an upper reference for what a learned combination reaches, not a zero-shot score.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .metrics import rankdata


def _stack(scores: Mapping[str, ArrayLike],
           higher_is_uncertain: Mapping[str, bool] | None) -> tuple[list[str], NDArray[np.float64]]:
    if not scores:
        raise ValueError("no scores to combine")
    names = list(scores)
    cols = []
    for k in names:
        v = np.asarray(scores[k], dtype=np.float64)
        if v.ndim != 1:
            raise ValueError(f"score {k!r} must be 1-D, got shape {v.shape}")
        if np.isnan(v).any():
            raise ValueError(f"score {k!r} has NaN values")
        if higher_is_uncertain is not None and not higher_is_uncertain.get(k, True):
            v = -v
        cols.append(v)
    if len({len(c) for c in cols}) != 1:
        raise ValueError(f"scores differ in length: { {k: len(c) for k, c in zip(names, cols)} }")
    return names, np.stack(cols, axis=1)


def rank_mean(scores: Mapping[str, ArrayLike], *,
              higher_is_uncertain: Mapping[str, bool] | None = None) -> NDArray[np.float64]:
    """Mean of normalised mid-ranks, in [0, 1]; higher = more uncertain.

    Args:
        scores: name -> [N] raw scores.
        higher_is_uncertain: name -> orientation (default: all True); False scores are negated.

    Returns:
        [N] combined score; a row ranked last (most uncertain) by every score gets 1.
    """
    _, X = _stack(scores, higher_is_uncertain)
    n = X.shape[0]
    if n == 1:
        return np.full(1, 0.5)
    ranks = np.stack([rankdata(X[:, j]) for j in range(X.shape[1])], axis=1)
    return ((ranks - 1) / (n - 1)).mean(axis=1)


def _safe_log(v: NDArray[np.float64]) -> NDArray[np.float64]:
    """log of a non-negative score; zeros (and below) floored at the smallest positive value,
    since ‖g‖² and p(1−p) legitimately underflow to 0 while a rank-like order must stay finite."""
    if (v < 0).any():
        raise ValueError("log features need non-negative scores")
    pos = v[v > 0]
    floor = pos.min() if len(pos) else 1e-300
    return np.log(np.maximum(v, floor))


def zscore_mean(scores: Mapping[str, ArrayLike], *,
                higher_is_uncertain: Mapping[str, bool] | None = None,
                log: bool = False) -> NDArray[np.float64]:
    """Mean of per-score z-scores (``log=True``: of log scores, for heavy-tailed ‖g‖²).

    A constant score contributes 0. Orientation as in :func:`rank_mean` (applied after the log).
    """
    names, X = _stack(scores, None)
    if log:
        X = np.stack([_safe_log(X[:, j]) for j in range(X.shape[1])], axis=1)
    if not np.isfinite(X).all():
        raise ValueError("z-scores need finite scores")
    if higher_is_uncertain is not None:
        signs = np.array([1.0 if higher_is_uncertain.get(k, True) else -1.0 for k in names])
        X = X * signs
    sd = X.std(axis=0)
    Z = (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    return Z.mean(axis=1)


def log_features(scores: Mapping[str, ArrayLike]) -> NDArray[np.float64]:
    """[N, F] matrix of log scores (see :func:`_safe_log`), the features of the supervised combination."""
    names, X = _stack(scores, None)
    return np.stack([_safe_log(X[:, j]) for j in range(len(names))], axis=1)


def logistic_cv(X: ArrayLike, y: ArrayLike, *, folds: int = 5, seed: int = 0,
                C: float = 1.0) -> NDArray[np.float64]:
    """Out-of-fold P(y = 1) of a standardised logistic regression (stratified K-fold).

    Args:
        X: [N, F] features (e.g. :func:`log_features` of epistemic and aleatoric).
        y: [N] binary labels (1 = incorrect answer).
        folds: K; lowered to the size of the rarer class when that is smaller (at least 2).
        seed: shuffling seed of the folds.
        C: inverse L2 regularisation strength.

    Returns:
        [N] probabilities, each predicted by a model that did not see that row.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    Xa = np.asarray(X, dtype=np.float64)
    if Xa.ndim == 1:
        Xa = Xa[:, None]
    ya = np.asarray(y).astype(np.int64)
    if Xa.shape[0] != len(ya):
        raise ValueError(f"X has {Xa.shape[0]} rows but y has {len(ya)}")
    if not np.isfinite(Xa).all():
        raise ValueError("X must be finite")
    minority = int(min(ya.sum(), len(ya) - ya.sum()))
    k = min(folds, minority)
    if k < 2:
        raise ValueError(f"cross-validation needs at least 2 rows of each class, got {minority}")
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C))
    return cross_val_predict(model, Xa, ya, cv=cv, method="predict_proba")[:, 1]
