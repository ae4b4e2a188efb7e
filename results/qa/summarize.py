"""Print the cross-dataset AUROC table of the committed QA runs (markdown), beside the paper.

Usage: .venv/bin/python results/qa/summarize.py [--readme]   (reads results/qa/<dataset>/
metrics.json and scores.jsonl). ``--readme`` writes the table into README.md between its
``<!-- qa-table -->`` markers instead of printing it (tests/test_readme.py holds every cell to
the metrics.json files). Also prints diagnostics: AUROC of ‖∇log p‖² alone, of p, of the answer
length; the ways of combining epistemic and aleatoric, measured on the same rows; and, when
results/qa/prompts/ holds runs (results/qa/prompts/run.sh), the prompt-style comparison.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from isograd.evaluate import PAPER_TABLE2, method_label, paper_order, read_scores
from isograd.evaluate.paper import SIGNALS
from isograd.evaluate.render import auroc_text
from isograd.qa.baselines import BASELINES
from isograd.qa.evaluation import method_labels

LABELS = method_labels()

HERE = Path(__file__).parent
README = HERE.parents[1] / "README.md"
DATASETS = ["triviaqa", "truthfulqa-gen", "truthfulqa-mc1", "nq-open"]
TITLES = {"triviaqa": "TriviaQA", "truthfulqa-gen": "TruthfulQA gen",
          "truthfulqa-mc1": "TruthfulQA MC1", "nq-open": "NQ-open"}
MARK = ("<!-- qa-table -->", "<!-- /qa-table -->")


def cell(e: dict | None, n: int | None = None) -> str:
    """The report's AUROC (on the rows ± bootstrap std, or "too few to rank"); with `n` (the
    run's questions), the method's own n when it differs."""
    if not e or (e.get("auroc") is None and not e.get("too_few")):
        return "–"
    own = e.get("n")
    if e.get("too_few"):  # fewer than 30 answers of either class: no rank given
        return f"too few to rank ({own - e['n_incorrect']} correct of {own})"
    tail = f" (n = {own})" if n is not None and own is not None and own != n else ""
    return auroc_text(e) + tail


def runs() -> dict[str, dict]:
    return {d: json.loads((HERE / d / "metrics.json").read_text())
            for d in DATASETS if (HERE / d / "metrics.json").exists()}


def table() -> list[str]:
    """The README table: every run's AUROCs, the paper's beside (one line per row)."""
    rs = runs()
    heads = [f"[{TITLES[d]}](results/qa/{d}/report.md)" for d in rs]
    out = ["| method | " + " | ".join(heads) + " | TriviaQA, paper | TruthfulQA, paper |",
           "| --- |" + " --- |" * (len(rs) + 2),
           "| questions (accuracy) | " + " | ".join(f"{m['n']} ({m['accuracy']:.3f})"
                                                 for m in rs.values()) + " | | |",
           "| incorrect answers (positives) | " + " | ".join(str(m["n_incorrect"])
                                                          for m in rs.values()) + " | | |"]
    # the paper's rows, our supervised combination, the baselines the paper lacks, the signals
    for name in paper_order(["combined_logreg_cv", *BASELINES, *SIGNALS], all_paper=True):
        cells = [cell(m["methods"].get(name), m["n"]) for m in rs.values()]
        paper = PAPER_TABLE2.get(name, {})
        pc = [f"{paper[c][0]:.2f} ± {paper[c][1]:.2f}" if c in paper else "–"
              for c in ("TriviaQA", "TruthfulQA")]
        out.append(f"| {method_label(name, LABELS)} | " + " | ".join(cells + pc) + " |")
    sp = []
    for m in rs.values():
        v = m.get("spearman", {}).get("epistemic_vs_p_true")
        sp.append("–" if v is None else f"{v:+.2f}".replace("-", "−"))
    out.append("| Spearman(epistemic, P(True)) | " + " | ".join(sp) + " | ≈ −0.2 | ≈ −0.2 |")
    return out


def write_readme(lines: list[str] | None = None, mark: tuple[str, str] = MARK) -> None:
    """Write `lines` (default: the QA table) into README.md between the `mark` comments (also
    used by results/trust/study.py)."""
    text = README.read_text(encoding="utf-8")
    a, b = text.index(mark[0]) + len(mark[0]), text.index(mark[1])
    body = "\n".join(table() if lines is None else lines)
    README.write_text(text[:a] + "\n" + body + "\n" + text[b:], encoding="utf-8")


def main() -> None:
    print("\n".join(table()))
    rs = runs()
    print()
    print("| dataset | prediction p | epistemic | aleatoric | combined |")
    print("| --- | --- | --- | --- | --- |")
    for d, m in rs.items():
        for pred, v in m.get("predictions", {}).items():
            print(f"| {d} | {pred} | " + " | ".join(cell(v[n]) for n in
                                                  ("epistemic", "aleatoric", "combined")) + " |")
    print()
    print("| dataset | method | AUROC, first label | AUROC, token F1 ≥ 0.5 |")
    print("| --- | --- | --- | --- |")
    for d, m in rs.items():
        sec = m.get("second_labelling") or {}
        for name, e in sec.get("methods", {}).items():
            first = "–" if e["auroc_first"] is None else f"{e['auroc_first']:.2f}"
            second = ("–" if e.get("auroc_second_mean") is None
                      else f"{e['auroc_second_mean']:.2f} ± {e['auroc_second_std']:.2f}")
            print(f"| {d} | {method_label(name, LABELS)} | {first} | {second} |")
    print()
    for d, m in rs.items():
        cost = {k: v.get("cost_s") for k, v in m["methods"].items() if v.get("cost_s") is not None}
        print(f"{d}: s/question: " + ", ".join(f"{k} {v:.2f}" for k, v in cost.items()))


def diagnostics() -> None:
    """What drives the gradient terms: ‖∇log p‖² alone, p itself, answer length (AUROC)."""
    import numpy as np

    from isograd.evaluate.metrics import auroc, spearman

    print()
    print("| dataset | ‖∇log p‖² (epistemic / p²) | p (higher = more uncertain) | answer tokens | "
          "Spearman(epistemic, p) |")
    print("| --- | --- | --- | --- | --- |")
    for d in DATASETS:
        path = HERE / d / "scores.jsonl"
        if not (HERE / d / "metrics.json").exists():
            continue
        rows = read_scores(path)
        y = np.array([0 if r["correct"] else 1 for r in rows])
        p = np.array([r["p"] for r in rows], dtype=float)
        e = np.array([r["epistemic"] for r in rows], dtype=float)
        n = np.array([r["n_tokens"] for r in rows], dtype=float)
        g = e / np.maximum(p, 1e-300) ** 2
        print(f"| {d} | {auroc(y, g):.2f} | {auroc(y, p):.2f} | {auroc(y, n):.2f} | "
              f"{spearman(e, p):.2f} |")


def _boot(y, s) -> str:
    """The plain AUROC ± its bootstrap std (the reports' one AUROC)."""
    from isograd.evaluate.metrics import auroc, bootstrap_auroc

    _, std = bootstrap_auroc(y, s, n=300, seed=0)
    return f"{auroc(y, s):.2f} ± {std:.2f}"


def combinations() -> None:
    """The combined score is the paper's, the way to combine is not: each way on the same rows."""
    import numpy as np

    from isograd.evaluate.combine import zscore_mean

    print()
    print("| dataset | rank mean (reported) | z-score mean of logs | total e + a (σ² = 1) | "
          "product e·a | logistic regression, CV |")
    print("| --- | --- | --- | --- | --- | --- |")
    for d in DATASETS:
        if not (HERE / d / "metrics.json").exists():
            continue
        rows = read_scores(HERE / d / "scores.jsonl")
        m = json.loads((HERE / d / "metrics.json").read_text())
        y = np.array([0 if r["correct"] else 1 for r in rows])
        sc = {k: np.array([r[k] for r in rows], dtype=float) for k in ("epistemic", "aleatoric")}
        cells = [cell(m["methods"].get("combined")), _boot(y, zscore_mean(sc, log=True)),
                 _boot(y, sc["epistemic"] + sc["aleatoric"]),
                 _boot(y, sc["epistemic"] * sc["aleatoric"]),
                 cell(m["methods"].get("combined_logreg_cv"))]
        print(f"| {d} | " + " | ".join(cells) + " |")


def prompts() -> None:
    """Prompt styles: `short` = the runs on the same questions (triviaqa-150, truthfulqa-gen-200);
    the others from results/qa/prompts/<ds>-<style>."""
    import numpy as np

    runs = {}
    for d, short in (("triviaqa-150", "triviaqa-150"), ("truthfulqa-gen", "truthfulqa-gen-200")):
        for style, path in [("short", HERE / short),
                            *((st, HERE / "prompts" / f"{d}-{st}") for st in ("plain", "fewshot"))]:
            if (path / "metrics.json").exists():
                runs[(d, style)] = path
    if len(runs) <= 2:
        return
    names = ("p_true", "aleatoric", "epistemic", "combined")
    print()
    print("| dataset | prompt | n | accuracy | answer tokens (mean) | "
          + " | ".join(method_label(n, LABELS) for n in names) + " |")
    print("| --- | --- | --- | --- | --- |" + " --- |" * len(names))
    for (d, style), path in runs.items():
        m = json.loads((path / "metrics.json").read_text())
        toks = np.mean([r["n_tokens"] for r in read_scores(path / "scores.jsonl")])
        print(f"| {d} | {style} | {m['n']} | {m['accuracy']:.3f} | {toks:.1f} | "
              + " | ".join(cell(m["methods"].get(n)) for n in names) + " |")


if __name__ == "__main__":
    if "--readme" in sys.argv[1:]:
        write_readme()
        sys.exit(0)
    main()
    diagnostics()
    combinations()
    prompts()
