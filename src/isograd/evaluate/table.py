"""The metrics table of a QA run: rows -> numbers (pure: no files, no plots, no text).

Rows are dicts with ``correct`` (bool) and one raw value per method (None/NaN = not available
for that row). ``methods`` maps each name to ``higher_is_uncertain``; the target is
``y_true = not correct`` and every score is oriented so that higher predicts an error.
When ``epistemic`` and ``aleatoric`` are both listed, the combined scores are (re)computed over
the evaluated rows (see :mod:`isograd.evaluate.combine`): ``combined`` (rank mean, unsupervised)
and ``combined_logreg_cv`` (out-of-fold logistic regression, supervised).
Everything is seeded: the same rows give the same numbers. Rendering (markdown, plots) lives in
:mod:`isograd.evaluate.render`, files in :mod:`isograd.evaluate.report`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import metrics as M
from .combine import log_features, logistic_cv, rank_mean
from .labellings import second_labelling
from .paper import PAPER_COLUMN, PAPER_TABLE2, PASS_SIGNALS, method_label

REFERENCE = "combined"
COMBINED_DEFINITION = ("combined = mean of the normalised mid-ranks of epistemic and aleatoric over "
                       "the evaluated rows (unsupervised); combined_logreg_cv = out-of-fold P(error) "
                       "of a logistic regression on (log epistemic, log aleatoric), stratified "
                       "{folds}-fold CV, seed {seed} (supervised)")


def _raw(rows: Sequence[Mapping[str, Any]], name: str) -> np.ndarray:
    out = np.full(len(rows), np.nan)
    for i, r in enumerate(rows):
        v = r.get(name)
        if v is None or isinstance(v, bool):
            continue
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"row {i} ({r.get('id', '?')}): {name}={v!r} is not a number") from None
    return out


def _labels(rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    y = np.empty(len(rows), dtype=np.int64)
    for i, r in enumerate(rows):
        c = r.get("correct")
        if c not in (True, False, 0, 1):
            raise ValueError(f"row {i} ({r.get('id', '?')}): 'correct' must be true/false, got {c!r}")
        y[i] = 0 if c else 1
    return y


def score_columns(rows: Sequence[Mapping[str, Any]], methods: Mapping[str, bool], *,
                  seed: int = 0, folds: int = 5, combine: bool = True,
                  ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, bool], list[str]]:
    """(y_true [N], raw columns name -> [N] with NaN where missing, orientation, notes).

    Adds ``combined`` and ``combined_logreg_cv`` when ``combine`` and both terms are listed.
    """
    if not rows:
        raise ValueError("no rows to evaluate")
    y = _labels(rows)
    derived = combine and "epistemic" in methods and "aleatoric" in methods
    cols = {m: _raw(rows, m) for m in methods}
    orient = {m: bool(h) for m, h in methods.items()}
    notes: list[str] = []
    absent = [m for m, c in cols.items() if np.isnan(c).all()
              and not (derived and m in ("combined", "combined_logreg_cv"))]
    if absent:
        raise ValueError(f"methods {absent} have no value in any row "
                         f"(row keys: {sorted(rows[0])})")
    if derived:
        ok = ~np.isnan(cols["epistemic"]) & ~np.isnan(cols["aleatoric"])
        terms = {k: cols[k][ok] for k in ("epistemic", "aleatoric")}
        comb = np.full(len(rows), np.nan)
        comb[ok] = rank_mean(terms, higher_is_uncertain={k: orient[k] for k in terms})
        given = cols.get("combined")
        if given is not None and not np.isnan(given).all() and not np.allclose(given[ok], comb[ok], equal_nan=True):
            notes.append("the rows' 'combined' values were replaced by the rank mean over all rows")
        cols["combined"], orient["combined"] = comb, True
        try:
            lr = np.full(len(rows), np.nan)
            signs = {k: 1.0 if orient[k] else -1.0 for k in terms}
            feats = log_features(terms) * np.array([signs["epistemic"], signs["aleatoric"]])
            lr[ok] = logistic_cv(feats, y[ok], folds=folds, seed=seed)
            cols["combined_logreg_cv"], orient["combined_logreg_cv"] = lr, True
        except ImportError:
            notes.append("combined_logreg_cv skipped: scikit-learn is not installed (extra 'eval')")
        except ValueError as e:
            notes.append(f"combined_logreg_cv skipped: {e}")
    return y, cols, orient, notes


def _cost(rows: Sequence[Mapping[str, Any]], method: str, kind: str) -> float | None:
    vals = [float(r[k]) for r in rows if (k := f"cost_{method}_{kind}") in r and r[k] is not None]
    return float(np.mean(vals)) if vals else None


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def evaluate(rows: Sequence[Mapping[str, Any]], methods: Mapping[str, bool], *, seed: int = 0,
             n_boot: int = 300, folds: int = 5, combine: bool = True,
             model: str | None = None, dataset: str | None = None, command: str | None = None,
             extra: Mapping[str, Any] | None = None,
             labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """All metrics of a QA run (the content of metrics.json).

    Args:
        rows: scores.jsonl records (``correct`` plus one raw field per method; optional
            ``cost_<method>_s`` / ``cost_<method>_fwd`` per-question costs).
        methods: name -> higher_is_uncertain.
        seed: seed of every bootstrap and of the CV folds. n_boot: bootstrap resamples.
        folds: CV folds of ``combined_logreg_cv``. combine: add the combined scores.
        model, dataset, command: recorded as given. extra: more top-level fields (e.g. grading).
        labels: report names of methods this package does not name itself (`method_label`).

    Returns:
        ``{"model", "dataset", "n", "accuracy", "methods": {NAME: {"auroc" (on the rows: the
        number reports show, ± "auroc_std"), "auroc_mean", "auroc_std" (bootstrap), "prr",
        "aurc", "aurac", "n", "n_incorrect" (the rows that have the method), "too_few" (fewer
        than `metrics.MIN_PER_CLASS` of either class),
        "higher_is_uncertain", "cost_s", "cost_fwd",
        ...}}, "base_rate", "n_incorrect", "comparisons", "spearman", "second_labelling"
        (AUROCs under token F1 >= 0.5 when every row has ``correct_f1``, else None), ...}``.
        "comparisons", "spearman", ...}``.
    """
    y, cols, orient, notes = score_columns(rows, methods, seed=seed, folds=folds, combine=combine)
    column = PAPER_COLUMN.get(dataset or "")
    out: dict[str, Any] = {
        "model": model, "dataset": dataset, "n": len(rows),
        "accuracy": M.accuracy(1 - y), "n_incorrect": int(y.sum()),
        "base_rate": float(y.mean()),
        "y_true": "1 = incorrect answer; scores oriented so that higher = more uncertain",
        "seed": seed, "n_boot": n_boot, "folds": folds, "combine": combine,
        "command": command, "paper_column": column,
    }
    if "combined" in cols and combine and "epistemic" in cols:
        out["combined_definition"] = COMBINED_DEFINITION.format(folds=folds, seed=seed)
    res: dict[str, dict[str, Any]] = {}
    oriented: dict[str, np.ndarray] = {}
    for m, raw in cols.items():
        ok = ~np.isnan(raw)
        s = raw if orient[m] else -raw
        oriented[m] = s
        entry: dict[str, Any] = {"label": method_label(m, labels), "higher_is_uncertain": orient[m],
                                 "n": int(ok.sum()), "n_missing": int((~ok).sum()),
                                 "n_incorrect": int(y[ok].sum())}
        yy, ss = y[ok], s[ok]
        entry["too_few"] = M.too_few(yy)
        if 0 < yy.sum() < len(yy):
            mean, std = M.bootstrap_auroc(yy, ss, n=n_boot, seed=seed)
            entry.update(auroc_mean=mean, auroc_std=std, auroc=M.auroc(yy, ss),
                         prr=_finite(M.prr(yy, ss)), aurc=M.aurc(yy, ss),
                         aurac=M.aurac(yy, ss))
        else:
            entry.update(auroc_mean=None, auroc_std=None, auroc=None, prr=None,
                         aurc=M.aurc(yy, ss) if len(yy) else None,
                         aurac=M.aurac(yy, ss) if len(yy) else None)
        src = ("epistemic", "aleatoric") if m in ("combined", "combined_logreg_cv") and combine else (m,)
        if m in PASS_SIGNALS:
            src = ("epistemic",)
        for kind in ("s", "fwd"):
            own = _cost(rows, m, kind)
            parts = [_cost(rows, k, kind) for k in src]
            # both terms (and the other signals of that pass) come from the same forward and
            # backward: a combination costs the larger, a signal of the pass what the pass costs
            derived = max(parts) if src != (m,) and all(p is not None for p in parts) else None
            entry[f"cost_{kind}"] = own if own is not None else derived
        if column and m in PAPER_TABLE2:
            entry["paper_auroc_mean"], entry["paper_auroc_std"] = PAPER_TABLE2[m][column]
        res[m] = entry
    out["methods"] = res
    out["comparisons"] = _comparisons(y, oriented, n_boot, seed)
    for c in out["comparisons"]["results"]:
        res[c["method"]]["p_vs_combined"] = c["p"]
        res[c["method"]]["p_vs_combined_bh"] = c["p_bh"]
        res[c["method"]]["delta_vs_combined"] = c["delta_auroc"]
    out["spearman"] = _spearman(cols, oriented)
    out["second_labelling"] = second_labelling(rows, y, oriented, n_boot=n_boot, seed=seed)
    out["notes"] = notes
    if extra:
        out.update(dict(extra))
    return out


def _comparisons(y: np.ndarray, oriented: Mapping[str, np.ndarray], n_boot: int, seed: int) -> dict:
    """Paired bootstrap of AUROC(combined) vs each other method, BH-corrected over the family."""
    results: list[dict[str, Any]] = []
    if REFERENCE in oriented:
        ref = oriented[REFERENCE]
        for m, s in oriented.items():
            if m == REFERENCE or m.startswith("combined"):
                continue
            ok = ~np.isnan(ref) & ~np.isnan(s)
            yy = y[ok]
            if not 0 < yy.sum() < len(yy):
                continue
            results.append({
                "method": m, "n": int(ok.sum()),
                "delta_auroc": M.auroc(yy, ref[ok]) - M.auroc(yy, s[ok]),
                "p": M.paired_bootstrap(yy, ref[ok], s[ok], n=n_boot, seed=seed),
            })
        if results:
            adj = M.benjamini_hochberg([r["p"] for r in results])
            for r, a in zip(results, adj):
                r["p_bh"] = float(a)
    return {"reference": REFERENCE, "results": results,
            "test": f"paired bootstrap of AUROC difference, {n_boot} resamples, two-sided, "
                    "Benjamini-Hochberg over the listed methods"}


def _spearman(cols: Mapping[str, np.ndarray], oriented: Mapping[str, np.ndarray]) -> dict:
    def rho(a: np.ndarray, b: np.ndarray) -> float | None:
        ok = ~np.isnan(a) & ~np.isnan(b)
        return _finite(M.spearman(a[ok], b[ok])) if ok.sum() > 2 else None

    out: dict[str, Any] = {}
    if "epistemic" in cols and "p_true" in cols:
        out["epistemic_vs_p_true"] = rho(cols["epistemic"], cols["p_true"])  # raw values, as the paper
    names = list(oriented)
    out["oriented"] = {a: {b: rho(oriented[a], oriented[b]) for b in names} for a in names}
    return out


def oriented_columns(rows: Sequence[Mapping[str, Any]], metrics: Mapping[str, Any],
                     ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(y_true [N], name -> [N] score oriented so that higher = more uncertain) of every method
    in ``metrics``, the combined scores recomputed with its seed and folds (not read from rows)."""
    meth = metrics["methods"]
    derived = bool(metrics.get("combine")) and "epistemic" in meth and "aleatoric" in meth
    methods = {m: e["higher_is_uncertain"] for m, e in meth.items()
               if not (derived and m in ("combined", "combined_logreg_cv"))}
    y, cols, orient, _ = score_columns(rows, methods, seed=metrics.get("seed", 0),
                                       folds=metrics.get("folds", 5),
                                       combine=bool(metrics.get("combine")))
    return y, {m: (c if orient[m] else -c) for m, c in cols.items()}


def alternative_metrics(rows: Sequence[Mapping[str, Any]], prediction: str,
                        predictions: Sequence[str], *, seed: int = 0,
                        n_boot: int = 300) -> dict[str, Any]:
    """AUROC (on the rows; bootstrap mean and std) of epistemic / aleatoric / combined under
    each definition of p in ``predictions`` whose fields every row has.

    The run's own ``prediction`` is read from the headline fields (``epistemic``, ...), the
    others from suffixed ones (``epistemic_<prediction>``, ...).
    """
    y = np.array([0 if r["correct"] else 1 for r in rows])
    out: dict[str, Any] = {}
    if not 0 < y.sum() < len(y):
        return out
    for pred in predictions:
        suf = "" if pred == prediction else f"_{pred}"
        if not all(r.get(f"epistemic{suf}") is not None for r in rows):
            continue
        e = np.array([r[f"epistemic{suf}"] for r in rows], dtype=float)
        a = np.array([r[f"aleatoric{suf}"] for r in rows], dtype=float)
        c = rank_mean({"epistemic": e, "aleatoric": a})
        out[pred] = {n: {**dict(zip(("auroc_mean", "auroc_std"),
                                    M.bootstrap_auroc(y, v, n=n_boot, seed=seed))),
                         "auroc": M.auroc(y, v), "too_few": M.too_few(y)}
                     for n, v in (("epistemic", e), ("aleatoric", a), ("combined", c))}
    return out
