"""From scores.jsonl rows to metrics.json, report.md (the paper's Table 2 layout) and roc.png.

Rows are dicts with ``correct`` (bool) and one raw value per method (None/NaN = not available
for that row). ``methods`` maps each name to ``higher_is_uncertain``; the target is
``y_true = not correct`` and every score is oriented so that higher predicts an error.
When ``epistemic`` and ``aleatoric`` are both listed, the combined scores are (re)computed over
the evaluated rows (see :mod:`isograd.evaluate.combine`): ``combined`` (rank mean, unsupervised)
and ``combined_logreg_cv`` (out-of-fold logistic regression, supervised).
Everything is seeded: the same rows give the same numbers.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics as M
from .combine import log_features, logistic_cv, rank_mean

# Grünefeld, Frellsen & Hardmeier 2026 (arXiv 2603.29466), Table 2: AUROC mean ± std over 300
# bootstrap resamples, averaged over 4 LLMs (two Llama models, OLMo, Phi-4).
PAPER_TABLE2: dict[str, dict[str, tuple[float, float]]] = {
    "p_true": {"TriviaQA": (0.69, 0.06), "TruthfulQA": (0.55, 0.06)},
    "semantic_entropy": {"TriviaQA": (0.55, 0.03), "TruthfulQA": (0.54, 0.08)},
    "naive_entropy": {"TriviaQA": (0.52, 0.04), "TruthfulQA": (0.51, 0.08)},
    "aleatoric": {"TriviaQA": (0.60, 0.04), "TruthfulQA": (0.60, 0.09)},
    "epistemic": {"TriviaQA": (0.52, 0.07), "TruthfulQA": (0.55, 0.07)},
    "combined": {"TriviaQA": (0.61, 0.05), "TruthfulQA": (0.63, 0.08)},
}
PAPER_COLUMN = {"triviaqa": "TriviaQA", "triviaqa-150": "TriviaQA", "truthfulqa-gen": "TruthfulQA", "truthfulqa-mc1": "TruthfulQA"}
LABELS = {
    "p_true": "P(True)", "semantic_entropy": "semantic entropy", "naive_entropy": "naive entropy",
    "aleatoric": "aleatoric p(1−p)", "epistemic": "epistemic ‖g‖²",
    "combined": "epistemic & aleatoric combined (rank mean)",
    "combined_logreg_cv": "epistemic & aleatoric, logistic regression (CV, supervised)",
    "msp": "maximum sequence probability", "mean_token_entropy": "mean token entropy",
}
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
             extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """All metrics of a QA run (the content of metrics.json).

    Args:
        rows: scores.jsonl records (``correct`` plus one raw field per method; optional
            ``cost_<method>_s`` / ``cost_<method>_fwd`` per-question costs).
        methods: name -> higher_is_uncertain.
        seed: seed of every bootstrap and of the CV folds. n_boot: bootstrap resamples.
        folds: CV folds of ``combined_logreg_cv``. combine: add the combined scores.
        model, dataset, command: recorded as given. extra: more top-level fields (e.g. grading).

    Returns:
        ``{"model", "dataset", "n", "accuracy", "methods": {NAME: {"auroc_mean", "auroc_std",
        "auroc", "prr", "aurc", "n", "higher_is_uncertain", "cost_s", "cost_fwd", ...}},
        "comparisons", "spearman", ...}``.
    """
    y, cols, orient, notes = score_columns(rows, methods, seed=seed, folds=folds, combine=combine)
    column = PAPER_COLUMN.get(dataset or "")
    out: dict[str, Any] = {
        "model": model, "dataset": dataset, "n": len(rows),
        "accuracy": M.accuracy(1 - y), "n_incorrect": int(y.sum()),
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
        entry: dict[str, Any] = {"label": LABELS.get(m, m), "higher_is_uncertain": orient[m],
                                 "n": int(ok.sum()), "n_missing": int((~ok).sum())}
        yy, ss = y[ok], s[ok]
        if 0 < yy.sum() < len(yy):
            mean, std = M.bootstrap_auroc(yy, ss, n=n_boot, seed=seed)
            entry.update(auroc_mean=mean, auroc_std=std, auroc=M.auroc(yy, ss),
                         prr=_finite(M.prr(yy, ss)), aurc=M.aurc(yy, ss))
        else:
            entry.update(auroc_mean=None, auroc_std=None, auroc=None, prr=None,
                         aurc=M.aurc(yy, ss) if len(yy) else None)
        src = ("epistemic", "aleatoric") if m in ("combined", "combined_logreg_cv") and combine else (m,)
        for kind in ("s", "fwd"):
            own = _cost(rows, m, kind)
            parts = [_cost(rows, k, kind) for k in src]
            # both terms come from the same forward/backward pass: the combination costs the larger
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


# ----------------------------------------------------------------------------- writing


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def _fmt(x: float | None, nd: int = 2) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def _order(names: Sequence[str], *, all_paper: bool = False) -> list[str]:
    """Paper's Table 2 order first (all its rows when ``all_paper``), then the others."""
    paper = [m for m in PAPER_TABLE2 if all_paper or m in names]
    return paper + [m for m in names if m not in PAPER_TABLE2]


def render_markdown(metrics: Mapping[str, Any]) -> str:
    """report.md text: the AUROC table in the layout of the paper's Table 2, paper numbers beside."""
    col = metrics.get("paper_column")
    meth = metrics["methods"]
    lines = [f"# Predicting incorrect answers: {metrics.get('dataset') or '?'} · {metrics.get('model') or '?'}", ""]
    lines.append(f"n = {metrics['n']} questions, accuracy = {metrics['accuracy']:.3f} "
                 f"({metrics['n_incorrect']} incorrect). AUROC of each score for predicting an "
                 f"incorrect answer, mean ± std over {metrics['n_boot']} bootstrap resamples "
                 f"(seed {metrics['seed']}).")
    if metrics.get("command"):
        lines += ["", "Command:", "", "```", str(metrics["command"]), "```"]
    paper_hdr = f"paper, {col}" if col else "paper"
    lines += ["", f"| method | AUROC (this run) | {paper_hdr} | PRR | AURC | combined − this: ΔAUROC (p, BH) | s / question | forward passes / question |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for m in _order(list(meth), all_paper=True):
        e = meth.get(m)
        paper = PAPER_TABLE2.get(m, {}).get(col) if col else None
        ptxt = f"{paper[0]:.2f} ± {paper[1]:.2f}" if paper else "–"
        if e is None:
            lines.append(f"| {LABELS.get(m, m)} | not run | {ptxt} | | | | | |")
            continue
        au = (f"{e['auroc_mean']:.2f} ± {e['auroc_std']:.2f}" if e.get("auroc_mean") is not None else "–")
        pv = "–"
        if e.get("p_vs_combined_bh") is not None:
            pv = f"{e['delta_vs_combined']:+.2f} (p = {e['p_vs_combined_bh']:.2g})"
        elif m == REFERENCE:
            pv = "(reference)"
        lines.append(f"| {e.get('label', m)} | {au} | {ptxt} | {_fmt(e.get('prr'))} | "
                     f"{_fmt(e.get('aurc'))} | {pv} | {_fmt(e.get('cost_s'), 3)} | {_fmt(e.get('cost_fwd'), 1)} |")
    lines.append("")
    if col:
        lines.append(f"Paper column: Grünefeld, Frellsen & Hardmeier 2026 (arXiv 2603.29466), Table 2, "
                     f"{col}: AUROC mean ± std over 300 bootstrap resamples, averaged over four "
                     "LLMs (two Llama models, OLMo, Phi-4); not the model of this run.")
    else:
        lines.append("The paper reports no numbers for this dataset.")
    sp = metrics.get("spearman", {}).get("epistemic_vs_p_true")
    if sp is not None:
        lines.append(f"\nSpearman(epistemic, P(True)) on raw scores = {sp:.2f} (paper: ≈ −0.2).")
    if metrics.get("combined_definition"):
        lines.append(f"\n{metrics['combined_definition']}.")
    lines.append("\nPRR and AURC as LM-Polygraph defines them (PRR: 1 = oracle, 0 = random; "
                 "AURC: lower is better). p: paired bootstrap test of the AUROC difference "
                 "with the combined score, Benjamini–Hochberg corrected.")
    for n in metrics.get("notes", []):
        lines.append(f"\nNote: {n}.")
    return "\n".join(lines) + "\n"


def plot_roc(path: str | Path, y: np.ndarray, oriented: Mapping[str, np.ndarray],
             title: str = "") -> None:
    """ROC curve of each score (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    try:
        ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--")
        for m in _order(list(oriented)):
            s = oriented[m]
            ok = ~np.isnan(s)
            if not 0 < y[ok].sum() < ok.sum():
                continue
            fpr, tpr = M.roc_curve(y[ok], s[ok])
            ax.plot(fpr, tpr, lw=1.5, label=f"{LABELS.get(m, m)} ({M.auroc(y[ok], s[ok]):.2f})")
        ax.set_xlabel("false positive rate (correct answers flagged)")
        ax.set_ylabel("true positive rate (incorrect answers flagged)")
        ax.set_title(title or "ROC: predicting incorrect answers", fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)


def write_report(out_dir: str | Path, metrics: Mapping[str, Any],
                 rows: Sequence[Mapping[str, Any]]) -> list[Path]:
    """Write metrics.json, report.md and roc.png (roc.png skipped with a warning without matplotlib).

    Returns:
        The paths written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    p = out / "metrics.json"
    p.write_text(json.dumps(_jsonable(dict(metrics)), indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    written.append(p)
    p = out / "report.md"
    p.write_text(render_markdown(metrics), encoding="utf-8")
    written.append(p)
    meth = metrics["methods"]
    derived = bool(metrics.get("combine")) and "epistemic" in meth and "aleatoric" in meth
    # derived combined scores are recomputed (same seed and folds), not read from the rows
    methods = {m: e["higher_is_uncertain"] for m, e in meth.items()
               if not (derived and m in ("combined", "combined_logreg_cv"))}
    y, cols, orient, _ = score_columns(rows, methods, seed=metrics.get("seed", 0),
                                       folds=metrics.get("folds", 5),
                                       combine=bool(metrics.get("combine")))
    oriented = {m: (c if orient[m] else -c) for m, c in cols.items()}
    try:
        p = out / "roc.png"
        plot_roc(p, y, oriented, f"{metrics.get('dataset') or ''} · {metrics.get('model') or ''}")
        written.append(p)
    except ImportError:
        warnings.warn("matplotlib not installed (extra 'eval'): roc.png not written", stacklevel=2)
    return written


def read_scores(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a scores.jsonl file (errors name the line)."""
    rows = []
    with Path(path).open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: invalid JSON line: {e.msg}") from e
    return rows
