"""A second, independent labelling of the same answers: SQuAD-style token F1 against the references.

The run's own label (``correct``: alias containment, ROUGE margin, ...) decides what "an error"
is; a score that predicts errors should not depend on that one rule. Rows graded with
references also carry ``correct_f1`` (best token F1 ≥ 0.5, `isograd.qa.grading.F1_CORRECT`);
this module reports each score's AUROC under both labels, side by side, and how often the two
labels agree. Pure: rows and oriented columns in, numbers and text out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import metrics as M

SECOND = "correct_f1"
"""Row field of the second label (bool), written by the grade stage where references exist."""


def second_labelling(rows: Sequence[Mapping[str, Any]], y_first: np.ndarray,
                     oriented: Mapping[str, np.ndarray], *, n_boot: int = 300,
                     seed: int = 0) -> dict[str, Any] | None:
    """AUROC of every score under the first label and under ``correct_f1``.

    Args:
        rows: the run's rows (in the order of `y_first` and the columns).
        y_first: int [N], 1 = incorrect under the run's own label.
        oriented: name -> float [N], higher = more uncertain (NaN = missing).
        n_boot: bootstrap resamples. seed: their seed.

    Returns:
        None when some row lacks ``correct_f1``; else ``{"label", "n", "n_incorrect",
        "agreement", "methods": {name: {"n" (rows with the method), "auroc_first",
        "auroc_second", "auroc_second_mean", "auroc_second_std", "too_few_first",
        "too_few_second" (`metrics.too_few`)}}}``.
    """
    vals = [r.get(SECOND) for r in rows]
    if not rows or any(v not in (True, False, 0, 1) for v in vals):
        return None
    y2 = np.array([0 if v else 1 for v in vals], dtype=np.int64)
    out: dict[str, Any] = {
        "label": "token F1 >= 0.5 against the references (SQuAD normalisation)",
        "n": len(rows), "n_incorrect": int(y2.sum()),
        "agreement": float(np.mean(y2 == np.asarray(y_first))),
        "methods": {},
    }
    for m, s in oriented.items():
        ok = ~np.isnan(s)
        entry: dict[str, Any] = {"n": int(ok.sum())}
        for key, y in (("first", np.asarray(y_first)), ("second", y2)):
            yy = y[ok]
            entry[f"too_few_{key}"] = M.too_few(yy)
            has_both = 0 < yy.sum() < len(yy)
            entry[f"auroc_{key}"] = M.auroc(yy, s[ok]) if has_both else None
            if key == "second":
                mean, std = (M.bootstrap_auroc(yy, s[ok], n=n_boot, seed=seed) if has_both
                             else (None, None))
                entry.update(auroc_second_mean=mean, auroc_second_std=std)
        out["methods"][m] = entry
    return out


def labellings_markdown(metrics: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    """The report section comparing the two labellings; empty without a second labelling."""
    sec = metrics.get("second_labelling")
    if not sec:
        return ""
    first = metrics.get("grading") or "the run's grader"
    lines = ["## Two labellings of the same answers", "",
             f"First: {first} ({metrics.get('n_incorrect')} incorrect of {metrics.get('n')}). "
             f"Second: {sec['label']} ({sec['n_incorrect']} incorrect of {sec['n']}). "
             f"The two labels agree on {sec['agreement']:.1%} of the answers.", "",
             ]
    subset = any(e.get("n", sec["n"]) != sec["n"] for e in sec["methods"].values())
    lines += ["| method | n | AUROC, first label | AUROC, token F1 (± bootstrap std) |",
              "| --- | --- | --- | --- |"] if subset else [
              "| method | AUROC, first label | AUROC, token F1 (± bootstrap std) |",
              "| --- | --- | --- |"]

    def f(x: float | None, few: bool | None) -> str:
        return "too few to rank" if few else "–" if x is None else f"{x:.2f}"

    for m, e in sec["methods"].items():
        second = ("too few to rank" if e.get("too_few_second") else
                  f"{e['auroc_second']:.2f} ± {e['auroc_second_std']:.2f}"
                  if e.get("auroc_second") is not None else "–")
        nv = f" {e.get('n', '?')} |" if subset else ""
        lines.append(f"| {labels.get(m, m)} |{nv} {f(e['auroc_first'], e.get('too_few_first'))} "
                     f"| {second} |")
    return "\n".join(lines) + "\n"
