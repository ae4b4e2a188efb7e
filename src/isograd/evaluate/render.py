"""Rendering of a metrics table: report.md text (the paper's Table 2 layout) and the ROC plot.

Pure text in, text out, except :func:`plot_roc`, which writes the figure it draws.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics as M
from .curves import finish, line_style, pyplot
from .labellings import labellings_markdown
from .metrics import MIN_PER_CLASS
from .paper import PAPER_SOURCE, PAPER_TABLE2, method_label, paper_order
from .table import REFERENCE


def _fmt(x: float | None, nd: int = 2) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def auroc_text(e: Mapping[str, Any], key: str = "auroc", std: str = "auroc_std") -> str:
    """The one way reports show an AUROC: on the rows, ± the bootstrap std; "too few to rank"
    when the method has fewer than `MIN_PER_CLASS` answers of either class."""
    if e.get("too_few"):
        n, w = e.get("n", 0), e.get("n_incorrect", 0)
        return f"too few to rank ({n - w} correct, {w} incorrect)"
    if e.get(key) is None:
        return "–"
    return f"{e[key]:.2f} ± {e[std]:.2f}"




def render_markdown(metrics: Mapping[str, Any], labels: Mapping[str, str] | None = None) -> str:
    """report.md text: the AUROC table in the layout of the paper's Table 2, paper numbers beside
    (`labels`: names of the paper's methods the run lacks, see `method_label`)."""
    col = metrics.get("paper_column")
    meth = metrics["methods"]
    lines = [f"# Predicting incorrect answers: {metrics.get('dataset') or '?'} · {metrics.get('model') or '?'}", ""]
    base = metrics.get("base_rate", 1 - metrics["accuracy"])
    lines.append(f"n = {metrics['n']} questions, accuracy = {metrics['accuracy']:.3f}; "
                 f"positives (incorrect answers) = {metrics['n_incorrect']}, base rate "
                 f"{base:.3f}. AUROC of each score for predicting an "
                 f"incorrect answer on the rows, ± its std over {metrics['n_boot']} bootstrap "
                 f"resamples (seed {metrics['seed']}); a method with fewer than "
                 f"{MIN_PER_CLASS} answers of either class is too few to rank.")
    if metrics.get("command"):
        lines += ["", "Command:", "", "```", str(metrics["command"]), "```"]
    # the paper column only for datasets the paper reports
    pcol = (f" paper, {col} |", " --- |") if col else ("", "")
    # a run with a subset (`isograd qa --subset`) evaluates some methods on fewer questions
    subset = any(e.get("n", metrics["n"]) != metrics["n"] for e in meth.values())
    ncol = (" n (incorrect) |", " --- |") if subset else ("", "")
    lines += ["", f"| method |{ncol[0]} AUROC (this run) |{pcol[0]} PRR | AURC | AURAC | combined − this: ΔAUROC (p, BH) | s / question | forward passes / question |",
              f"| --- |{ncol[1]} --- |{pcol[1]} --- | --- | --- | --- | --- | --- |"]
    for m in paper_order(list(meth), all_paper=bool(col)):
        e = meth.get(m)
        paper = PAPER_TABLE2.get(m, {}).get(col) if col else None
        ptxt = (f" {paper[0]:.2f} ± {paper[1]:.2f} |" if paper else " – |") if col else ""
        if e is None:
            lines.append(f"| {method_label(m, labels)} |{' |' if subset else ''} not run |{ptxt} | | | | | |")
            continue
        nv = f" {e['n']} ({e.get('n_incorrect', '?')}) |" if subset else ""
        au = auroc_text(e)
        pv = "–"
        if e.get("p_vs_combined_bh") is not None:
            pv = f"{e['delta_vs_combined']:+.2f} (p = {e['p_vs_combined_bh']:.2g})"
        elif m == REFERENCE:
            pv = "(reference)"
        lines.append(f"| {e.get('label', m)} |{nv} {au} |{ptxt} {_fmt(e.get('prr'))} | "
                     f"{_fmt(e.get('aurc'))} | {_fmt(e.get('aurac'))} | {pv} | {_fmt(e.get('cost_s'), 3)} | {_fmt(e.get('cost_fwd'), 1)} |")
    lines.append("")
    if col:
        lines.append("Paper column: " + PAPER_SOURCE.format(col=col))
    else:
        lines.append("The paper reports no numbers for this dataset.")
    sp = metrics.get("spearman", {}).get("epistemic_vs_p_true")
    if sp is not None:
        lines.append(f"\nSpearman(epistemic, P(True)) on raw scores = {sp:.2f} (paper: ≈ −0.2).")
    if subset:
        cfg = metrics.get("config") or {}
        ts = cfg.get("trace_subset")
        trace = f", the per-token trace on the first {ts} (`--trace-subset`)" if ts else ""
        per = cfg.get("method_subsets") or {}
        ran = (f"The costly methods ran on the first {cfg.get('subset') or metrics['n']} "
               "questions only (`--subset`)") if not per else (
            "Each costly method ran on its own first questions (`--method-subset`: "
            + ", ".join(f"{method_label(m, labels)} {n}" for m, n in per.items()) + ")")
        lines.append(f"\nn (incorrect): the questions each method was evaluated on. {ran}"
                     f"{trace}, the gradient scores on all {metrics['n']}; "
                     f"comparisons with the combined score use the questions both have.")
    if metrics.get("combined_definition"):
        lines.append(f"\n{metrics['combined_definition']}.")
    lines.append("\nPRR and AURC as LM-Polygraph defines them (PRR: 1 = oracle, 0 = random; "
                 "AURC: lower is better); AURAC = area under the rejection–accuracy curve = "
                 "1 − AURC (higher is better); risk_coverage.png draws the curve. p: paired bootstrap test of the AUROC difference "
                 "with the combined score, Benjamini–Hochberg corrected.")
    for n in metrics.get("notes", []):
        lines.append(f"\nNote: {n}.")
    return "\n".join(lines) + "\n"


def answers_markdown(rows: Sequence[Mapping[str, Any]], worst: np.ndarray, by: str,
                     p_error: bool) -> str:
    """answers.md: every question with its answer and verdict, worst first.

    Args:
        rows: the run's rows (``question``, ``answer``, ``correct``; ``p_error`` with a detector).
        worst: [N] the ordering score, higher = more likely wrong (NaN last).
        by: what `worst` is, for the heading.
        p_error: add the detector's ``p_error`` and ``abstain`` columns.
    """
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ").strip() or "(empty)"

    order = sorted(range(len(rows)), key=lambda i: (np.isnan(worst[i]), -np.nan_to_num(worst[i])))
    det = (" P(wrong) | abstains |", " --- | --- |") if p_error else ("", "")
    lines = ["# Every question, worst first", "",
             f"Ordered by {by} (most likely wrong first). Verdict: the run's grade.", "",
             f"| rank | question | answer | verdict |{det[0]}", f"| --- | --- | --- | --- |{det[1]}"]
    for k, i in enumerate(order, 1):
        r = rows[i]
        verdict = "correct" if r.get("correct") else "wrong"
        extra = (f" {r['p_error']:.3f} | {'yes' if r.get('abstain') else 'no'} |"
                 if p_error and r.get("p_error") is not None else (" – | – |" if p_error else ""))
        lines.append(f"| {k} | {cell(r.get('question', r.get('id', '')))} | "
                     f"{cell(r.get('answer', ''))} | {verdict} |{extra}")
    return "\n".join(lines) + "\n"


def plot_roc(path: str | Path, y: np.ndarray, oriented: Mapping[str, np.ndarray],
             title: str = "", labels: Mapping[str, str] | None = None) -> None:
    """ROC curve of each score (matplotlib, Agg backend); `labels` as in `method_label`."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.set_aspect("equal")
    try:
        ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls=(0, (1, 3)))
        for m in paper_order(list(oriented)):
            s = oriented[m]
            ok = ~np.isnan(s)
            if not 0 < y[ok].sum() < ok.sum():
                continue
            fpr, tpr = M.roc_curve(y[ok], s[ok])
            # a colour and a line style of its own: no two methods look alike
            ax.plot(fpr, tpr, lw=1.5, **line_style(plt, len(ax.get_lines()) - 1),
                    label=f"{method_label(m, labels)} ({M.auroc(y[ok], s[ok]):.2f})")
        finish(fig, ax, path, xlabel="false positive rate (correct answers flagged)",
               ylabel="true positive rate (incorrect answers flagged)",
               title=title or "ROC: predicting incorrect answers",
               legend={"fontsize": 7, "loc": "center left", "bbox_to_anchor": (1.02, 0.5)})
    finally:
        plt.close(fig)


def predictions_markdown(preds: Mapping[str, Any], default: str) -> str:
    """Markdown table: AUROC of epistemic / aleatoric / combined under each definition of p
    (``alternative_metrics``'s result); empty when fewer than two definitions were measured."""
    if len(preds) < 2:
        return ""
    lines = ["## The definition of p (same answers, same labels)", "",
             "| prediction p | epistemic | aleatoric | combined (rank mean) |",
             "| --- | --- | --- | --- |"]
    for pred, v in preds.items():
        cells = [auroc_text(v[n]) for n in ("epistemic", "aleatoric", "combined")]
        name = f"{pred} (this run's p)" if pred == default else pred
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "sequence = product of the answer tokens' probabilities; geometric = their "
              "geometric mean (length-normalised); first_token = the first token's probability. "
              "AUROC for predicting an incorrect answer on the rows, ± the bootstrap std.", ""]
    return "\n".join(lines)


def render_report(metrics: Mapping[str, Any], labels: Mapping[str, str] | None = None) -> str:
    """report.md: :func:`render_markdown`, then the definitions-of-p table when ``metrics`` holds
    ``predictions`` measured under more than one definition (the run's own from its config)."""
    text = render_markdown(metrics, labels)
    section2 = labellings_markdown(metrics, {m: e.get("label", m)
                                             for m, e in metrics["methods"].items()})
    if section2:
        text += "\n" + section2
    default = (metrics.get("config") or {}).get("prediction", "")
    section = predictions_markdown(metrics.get("predictions") or {}, default)
    text = text + "\n" + section if section else text
    det = metrics.get("detector")
    text = text + "\n" + detector_markdown(det) if det else text
    return text + ("\nEvery question with its answer and verdict"
                   + (", P(wrong)" if det else "") + ", worst first: [answers.md](answers.md).\n")


def detector_markdown(det: Mapping[str, Any]) -> str:
    """The detector section of report.md (``metrics["detector"]``): calibration and abstention."""
    t = det["threshold"]
    rule = (f"answer when P(wrong) <= {t:.2f}" if t is not None else
            f"no threshold met alpha = {det['alpha']:g}: every question abstains")
    err = det["error_answered"]
    lines = ["## Detector: P(wrong) and abstention", "",
             f"Features: {', '.join(det['features'])}. Threshold chosen on "
             f"{det['n_calibration']} calibration rows for an error rate among the answered "
             f"of at most alpha = {det['alpha']:g} with probability >= 1 - delta = "
             f"{1 - det['delta']:g}: {rule}.", "",
             "| n | ECE | Brier | log-loss | coverage (share answered) | error among answered |",
             "| --- | --- | --- | --- | --- | --- |",
             f"| {det['n']} | {det['ece']:.3f} | {det['brier']:.3f} | {det['log_loss']:.3f} | "
             f"{det['coverage']:.3f} | {_fmt(err, 3)} |", "",
             "Reliability diagram: reliability.png; risk–coverage with the alpha line and the "
             "chosen threshold: risk_coverage.png.", ""]
    return "\n".join(lines)
