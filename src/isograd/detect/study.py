"""Out-of-fold comparisons on one labelled set: the detector, the calibrated single scores, the
σ²-fitted total, and the detector without its gradient features.

Every probability here is predicted for a row by a model fitted on the other folds (outer
stratified K-fold; the detector's C is chosen by an inner CV within each outer training part),
so no number is fitted on the rows it is measured on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .calibrate import Calibration, fit_calibrator, fit_sigma2
from .detector import fit_logistic, inner_cv, wrong_labels
from .features import BLOCKS, FeatureSet, feature_names, make_features, raw_matrix, transform

GRADIENT_FIELDS = frozenset({"grad_log_p", "epistemic", "embedding_grad", "epistemic_isotropic",
                             "epistemic_layer_scaled", "epistemic_last_layers", "total"})
"""Features that need the backward pass (with the per-block vector ``by_layer/*``)."""

SINGLE_SCORES = ("msp", "mean_token_entropy", "grad_log_p", "epistemic", "combined")
"""The single scores `within_set` calibrates by default (those a row lacks are skipped)."""


def without_gradient(names: Sequence[str]) -> list[str]:
    """`names` without the gradient features (`GRADIENT_FIELDS` and the per-block vector)."""
    return [n for n in names if n not in GRADIENT_FIELDS and not n.startswith(BLOCKS + "/")]


def oof_detector(rows: Sequence[Mapping[str, Any]], labels: ArrayLike | None, *,
                 features: str | FeatureSet | Sequence[str] = FeatureSet.DEFAULT,
                 seed: int = 0) -> NDArray[np.float64]:
    """[N] out-of-fold P(wrong) of the detector's logistic regression (labels as `fit_detector`)."""
    wrong = wrong_labels(rows, labels)
    names = feature_names(rows, features)
    raw = raw_matrix(rows, names)
    out = np.empty(len(rows))
    for tr, te in inner_cv(wrong, seed).split(raw, wrong):
        feats = make_features(names, raw[tr])
        model = fit_logistic(transform(feats, raw[tr]), wrong[tr], seed=seed)
        out[te] = model.predict_proba(transform(feats, raw[te]))[:, 1]
    return out


def oof_calibrated(score: ArrayLike, wrong: ArrayLike, *,
                   method: str | Calibration = Calibration.ISOTONIC,
                   seed: int = 0) -> NDArray[np.float64]:
    """[N] out-of-fold P(wrong) of one score under a single-score calibrator."""
    s = np.asarray(score, dtype=np.float64)
    w = np.asarray(wrong).astype(np.int64)
    out = np.empty(len(s))
    for tr, te in inner_cv(w, seed).split(s, w):
        out[te] = fit_calibrator(s[tr], w[tr], method=method)(s[te])
    return out


def oof_sigma2_total(p: ArrayLike, grad_log_p: ArrayLike, correct: ArrayLike, *,
                     seed: int = 0) -> NDArray[np.float64]:
    """[N] out-of-fold total = p(1−p) + σ²‖∇p‖², σ² fitted on the other folds."""
    pa, gl = np.asarray(p, dtype=np.float64), np.asarray(grad_log_p, dtype=np.float64)
    y = np.asarray(correct).astype(np.int64)
    out = np.empty(len(pa))
    for tr, te in inner_cv(1 - y, seed).split(pa, y):
        s2 = fit_sigma2(pa[tr], gl[tr], y[tr]).sigma2
        out[te] = pa[te] * (1 - pa[te]) + s2 * pa[te] ** 2 * gl[te]
    return out


def probability_metrics(y: ArrayLike, prob: ArrayLike) -> dict[str, float]:
    """AUROC, Brier, log-loss, ECE, n and n_wrong of P(wrong) `prob` against `y` (1 = wrong)."""
    from ..evaluate import auroc
    from ..evaluate.calibration import calibration_summary

    y = np.asarray(y)
    return {"auroc": auroc(y, prob), **calibration_summary(y, prob), "n": len(y),
            "n_wrong": int(y.sum())}


def single_score(rows: Sequence[Mapping[str, Any]], name: str) -> NDArray[np.float64]:
    """[N] one score of the rows (NaN where a row lacks it). ``combined``, when the rows do not
    carry it, is the paper's combination computed over these rows as the reports compute it:
    the rank mean of epistemic and aleatoric (`isograd.evaluate.rank_mean`)."""
    def col(n: str) -> NDArray[np.float64]:
        return np.array([float(r[n]) if isinstance(r.get(n), (int, float)) else np.nan
                         for r in rows])

    if name == "combined" and not any("combined" in r for r in rows):
        from ..evaluate import rank_mean

        e, a = col("epistemic"), col("aleatoric")
        out = np.full(len(rows), np.nan)
        ok = np.isfinite(e) & np.isfinite(a)
        if ok.any():
            out[ok] = rank_mean({"epistemic": e[ok], "aleatoric": a[ok]})
        return out
    return col(name)


def within_set(rows: Sequence[Mapping[str, Any]], labels: ArrayLike | None, *,
               features: str | FeatureSet | Sequence[str] = FeatureSet.DEFAULT,
               scores: Sequence[str] = SINGLE_SCORES, seed: int = 0,
               n_boot: int = 300) -> dict[str, Any]:
    """Out-of-fold metrics on one set (y = 1 for a wrong answer).

    Returns:
        ``{"detector": m, "detector_no_gradient": m, "<score> (isotonic)": m, ...,
        "total (sigma2 fitted)": {"auroc", "gap", "mse", "n"}, "gradient": d}`` with m
        = {auroc, brier, log_loss, ece, n, n_wrong}; a score absent from some rows is measured
        on the rows that have it (``combined``: `single_score`); ``gradient`` is the paired
        bootstrap of AUROC(detector) − AUROC(detector without gradient features)
        (`isograd.evaluate.paired_difference` as a dict: difference, low, high, p_value, n).
    """
    import dataclasses

    from ..evaluate import auroc, paired_difference
    from ..evaluate.calibration import binned

    wrong = wrong_labels(rows, labels)
    names = feature_names(rows, features)
    det = oof_detector(rows, 1 - wrong, features=names, seed=seed)
    plain = oof_detector(rows, 1 - wrong, features=without_gradient(names), seed=seed)
    out: dict[str, Any] = {"detector": probability_metrics(wrong, det),
                           "detector_no_gradient": probability_metrics(wrong, plain),
                           "gradient": dataclasses.asdict(
                               paired_difference(wrong, det, plain, n=n_boot, seed=seed))}
    for name in scores:
        s = single_score(rows, name)
        keep = np.isfinite(s)
        if keep.sum() < 10 or len(np.unique(wrong[keep])) < 2:
            continue
        out[f"{name} (isotonic)"] = probability_metrics(
            wrong[keep], oof_calibrated(s[keep], wrong[keep], seed=seed))
    p = np.array([float(r["p"]) for r in rows])
    total = oof_sigma2_total(p, [float(r["grad_log_p"]) for r in rows], 1 - wrong, seed=seed)
    sq = (1 - wrong - p) ** 2
    out["total (sigma2 fitted)"] = {
        "auroc": auroc(wrong, total), "gap": binned(sq, total, binning="quantile").ece,
        "mse": float(np.mean((total - sq) ** 2)), "n": len(rows)}
    return out
