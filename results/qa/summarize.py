"""Print the cross-dataset AUROC table of the committed QA runs (markdown), beside the paper.

Usage: .venv/bin/python results/qa/summarize.py [--readme]   (reads results/qa/<dataset>/
metrics.json and scores.jsonl). ``--readme`` writes the table into README.md between its
``<!-- qa-table -->`` markers instead of printing it (tests/test_readme.py holds every cell to
the metrics.json files), the two-model table between ``<!-- models-table -->`` and the
findings' verdicts on each model between ``<!-- findings -->`` and the prompt table (TriviaQA's
first 500 questions in each model and prompt) between ``<!-- prompt-table -->``. Also prints diagnostics: AUROC of ‖∇log p‖² alone, of p, of the answer
length; the ways of combining epistemic and aleatoric, measured on the same rows; and, when
results/qa/prompts/ holds runs (results/qa/prompts/run.sh), the prompt-style comparison.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
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
MODELS_MARK = ("<!-- models-table -->", "<!-- /models-table -->")
FINDINGS_MARK = ("<!-- findings -->", "<!-- /findings -->")
PROMPT_MARK = ("<!-- prompt-table -->", "<!-- /prompt-table -->")
# the two model families (issue 24): run folder prefix of each, and the datasets run on both
MODELS = {"smollm2-135m": ("SmolLM2", ""), "gemma3-270m": ("Gemma 3", "gemma3-270m-")}
BOTH = ["triviaqa", "truthfulqa-gen", "truthfulqa-mc1", "arc-easy-test"]
TITLES_BOTH = {**TITLES, "arc-easy-test": "ARC-Easy test"}


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


ROWS = paper_order(["combined_logreg_cv", *BASELINES, *SIGNALS], all_paper=True)
"""The tables' method rows: the paper's, our supervised combination, the baselines the paper
lacks, the signals."""


def size_rows(metrics, tail: str = "") -> list[str]:
    """The two rows on top of a table: questions (accuracy) and positives of each run."""
    ms = list(metrics)
    return ["| questions (accuracy) | " + " | ".join(f"{m['n']} ({m['accuracy']:.3f})"
                                                  for m in ms) + tail + " |",
            "| incorrect answers (positives) | " + " | ".join(str(m["n_incorrect"])
                                                           for m in ms) + tail + " |"]


def runs() -> dict[str, dict]:
    return {d: json.loads((HERE / d / "metrics.json").read_text())
            for d in DATASETS if (HERE / d / "metrics.json").exists()}


def table() -> list[str]:
    """The README table: every run's AUROCs, the paper's beside (one line per row)."""
    rs = runs()
    heads = [f"[{TITLES[d]}](results/qa/{d}/report.md)" for d in rs]
    out = ["| method | " + " | ".join(heads) + " | TriviaQA, paper | TruthfulQA, paper |",
           "| --- |" + " --- |" * (len(rs) + 2), *size_rows(rs.values(), " | |")]
    for name in ROWS:
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


def run_folder(model: str, dataset: str) -> Path:
    """results/qa/<prefix><dataset>: SmolLM2's runs unprefixed, Gemma's under gemma3-270m-."""
    return HERE / (MODELS[model][1] + dataset)


def _link(model: str, dataset: str) -> str:
    return run_folder(model, dataset).relative_to(README.parent).as_posix() + "/report.md"


def model_runs() -> dict[tuple[str, str], dict]:
    """(dataset, model) -> metrics.json of each finished run of `BOTH`, dataset by dataset."""
    return {(d, m): json.loads((run_folder(m, d) / "metrics.json").read_text())
            for d in BOTH for m in MODELS if (run_folder(m, d) / "metrics.json").exists()}


def models_table() -> list[str]:
    """The README's two-model table: each method's AUROC on every finished run of `BOTH` on
    either model (n, accuracy and positives on top), then the runs not finished yet."""
    rs = model_runs()
    heads = [f"[{TITLES_BOTH[d]}, {MODELS[m][0]}]({_link(m, d)})" for d, m in rs]
    out = ["| method | " + " | ".join(heads) + " |", "| --- |" + " --- |" * len(rs),
           *size_rows(rs.values())]
    for name in ROWS:
        cells = [cell(m["methods"].get(name), m["n"]) for m in rs.values()]
        if any(c != "–" for c in cells):
            out.append(f"| {method_label(name, LABELS)} | " + " | ".join(cells) + " |")
    missing = [f"{MODELS[m][0]} on {TITLES_BOTH[d]}" for d in BOTH for m in MODELS
               if (d, m) not in rs]
    if missing:
        out += ["", "Not finished yet: " + ", ".join(missing) + "."]
    return out


PROMPT_BASE = "triviaqa-base-500"
"""SmolLM2 in the base-model prompt on TriviaQA's first 500 questions: the questions of the
prompt table."""
PROMPT_RUNS = (("SmolLM2, chat prompt (`short`)", "triviaqa"),
               ("SmolLM2, `--prompt base`", PROMPT_BASE),
               ("Gemma 3, `--prompt base`", "gemma3-270m-triviaqa"))
"""The prompt table's columns: (title, results/qa folder), each read on `PROMPT_BASE`'s questions."""
PROMPT_METHODS = ("p_true", "aleatoric", "epistemic", "grad_log_p", "embedding_grad", "msp",
                  "mean_token_entropy")


def auroc_cell(rows: list[dict], name: str, higher_is_uncertain: bool) -> str:
    """AUROC ± bootstrap std of one score on the rows that hold it (1 = incorrect; their number
    when some rows lack it), or "too few to rank" as the reports say it."""
    import numpy as np

    from isograd.evaluate.metrics import too_few

    n = len(rows)
    rows = [r for r in rows if r.get(name) is not None]
    if not rows:
        return "–"
    y = np.array([0 if r["correct"] else 1 for r in rows])
    if too_few(y):
        return f"too few to rank ({len(y) - int(y.sum())} correct of {len(y)})"
    s = np.array([r[name] for r in rows], dtype=float) * (1 if higher_is_uncertain else -1)
    tail = f" (n = {len(rows)})" if len(rows) != n else ""
    return _boot(y, s) + tail


def prompt_table() -> list[str]:
    """The prompt's share of a difference between the models: TriviaQA's first 500 questions
    (those of `PROMPT_BASE`) under each (model, prompt) of `PROMPT_RUNS`, each cell computed on
    those questions' rows; runs not finished yet are named under the table."""
    import numpy as np

    from isograd.lm.prompts import BASE_EXAMPLES
    from isograd.qa.evaluation import run_methods
    from isograd.qa.grading import copies

    shots = [a for _, a in BASE_EXAMPLES]
    if not (HERE / PROMPT_BASE / "metrics.json").exists():
        return [f"Not finished yet: {PROMPT_BASE}."]
    ids = [r["id"] for r in read_scores(HERE / PROMPT_BASE / "scores.jsonl")]
    cols, missing = [], []
    for title, folder in PROMPT_RUNS:
        d = HERE / folder
        if not (d / "metrics.json").exists():
            missing.append(title)
            continue
        by_id = {r["id"]: r for r in read_scores(d / "scores.jsonl")}
        rows = [by_id[i] for i in ids]
        config = json.loads((d / "metrics.json").read_text())["config"]
        cols.append((f"[{title}]({d.relative_to(README.parent).as_posix()}/report.md)", rows,
                     run_methods(rows, config)))
    out = ["| method | " + " | ".join(c[0] for c in cols) + " |", "| --- |" + " --- |" * len(cols),
           "| correct answers (of the questions) | "
           + " | ".join(f"{sum(bool(r['correct']) for r in c[1])} of {len(c[1])}" for c in cols) + " |",
           "| answer tokens (mean) | "
           + " | ".join(f"{np.mean([r['n_tokens'] for r in c[1]]):.1f}" for c in cols) + " |",
           "| answer is a `base` shot's answer | "
           + " | ".join(str(sum(copies(r["answer"], shots) for r in c[1])) for c in cols) + " |"]
    for name in PROMPT_METHODS:
        cells = [auroc_cell(rows, name, orient[name]) if name in orient else "–"
                 for _, rows, orient in cols]
        out.append(f"| {method_label(name, LABELS)} | " + " | ".join(cells) + " |")
    if missing:
        out += ["", "Not finished yet: " + ", ".join(missing) + "."]
    return out


@dataclass(frozen=True)
class Finding:
    """A claim of "Which signal works where", as a difference of two AUROCs on one dataset.

    It *holds* on a model when the paired bootstrap 95% interval of AUROC(s1) − AUROC(s2)
    (`isograd.evaluate.paired_difference`, on the rows that hold both scores) excludes 0 with
    the sign the claim gives; otherwise it is *not shown* there.
    """

    text: str  # the claim, as the README words it
    dataset: str
    s1: str
    s2: str | None  # None: chance (a constant score, whose AUROC is 0.5 on every resample)
    sign: int  # +1: s1 ranks the wrong answers higher than s2 does; -1: lower
    label: str = "correct"  # the labelling: the run's grader, or "correct_f1" (token F1 >= 0.5)


FINDINGS = [
    Finding("MSP ranks wrong TriviaQA answers better than ‖∇log p‖²", "triviaqa", "msp",
            "grad_log_p", +1),
    Finding("on TriviaQA, ‖∇log p‖² ranks wrong answers better than the paper's epistemic",
            "triviaqa", "grad_log_p", "epistemic", +1),
    Finding("the paper's epistemic is below chance on TriviaQA", "triviaqa", "epistemic", None, -1),
    Finding("the paper's epistemic is above chance on TruthfulQA generation", "truthfulqa-gen",
            "epistemic", None, +1),
    Finding("MSP is below chance on TruthfulQA generation", "truthfulqa-gen", "msp", None, -1),
    Finding("under the first labelling, epistemic ranks TruthfulQA answers better than MSP",
            "truthfulqa-gen", "epistemic", "msp", +1),
    Finding("under token F1 ≥ 0.5, MSP ranks TruthfulQA answers better than epistemic",
            "truthfulqa-gen", "msp", "epistemic", +1, "correct_f1"),
    Finding("on MC1, P(True) ranks better than epistemic", "truthfulqa-mc1", "p_true",
            "epistemic", +1),
    Finding("the per-token trace (its max) ranks TruthfulQA answers worse than the answer's "
            "own epistemic", "truthfulqa-gen", "epistemic", "epistemic_token_max", +1),
    Finding("on ARC-Easy, epistemic ranks wrong picks better than MSP", "arc-easy-test",
            "epistemic", "msp", +1),
]
FINDING_RESAMPLES = 1000


def verdict(f: Finding, model: str) -> dict:
    """`f` on `model`'s run: ``verdict`` ("holds", "not shown", "too few" or "not run") and,
    where measured, the rows, the correct answers among them and the difference with its
    interval."""
    import numpy as np

    from isograd.evaluate.metrics import paired_difference, too_few
    from isograd.qa.evaluation import run_methods

    folder = run_folder(model, f.dataset)
    if not (folder / "metrics.json").exists():
        return {"verdict": "not run"}
    config = json.loads((folder / "metrics.json").read_text())["config"]
    rows = read_scores(folder / "scores.jsonl")
    orient = run_methods(rows, config)
    names = [f.s1] + ([f.s2] if f.s2 else [])
    if any(n not in orient for n in names):
        return {"verdict": "not run"}
    rows = [r for r in rows if all(r.get(k) is not None for k in [*names, f.label])]
    y = np.array([0 if r[f.label] else 1 for r in rows])
    out = {"n": len(rows), "correct": int(len(y) - y.sum())}
    if not rows or too_few(y):
        return {**out, "verdict": "too few"}
    s = [np.array([r[k] for r in rows], dtype=float) * (1 if orient[k] else -1) for k in names]
    d = paired_difference(y, s[0], s[1] if f.s2 else np.zeros(len(rows)),
                          n=FINDING_RESAMPLES, seed=0)
    return {**out, "difference": d.difference, "low": d.low, "high": d.high,
            "verdict": "holds" if d.excludes_zero() == f.sign else "not shown"}


def _signed(x: float) -> str:
    return f"{x:+.2f}".replace("-", "−")


def verdict_text(v: dict, model: str) -> str:
    name = MODELS[model][0]
    if v["verdict"] == "not run":
        return f"not run on {name} yet"
    if v["verdict"] == "too few":
        return f"too few to test on {name} ({v['correct']} correct of {v['n']})"
    return (f"{v['verdict']} on {name} ({_signed(v['difference'])} "
            f"[{_signed(v['low'])}, {_signed(v['high'])}], n = {v['n']})")


def findings() -> list[str]:
    """One line per finding: its verdict on each model (the README's findings block)."""
    return [f"- {f.text}: " + "; ".join(verdict_text(verdict(f, m), m) for m in MODELS) + "."
            for f in FINDINGS]


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
        write_readme(models_table(), MODELS_MARK)
        write_readme(findings(), FINDINGS_MARK)
        write_readme(prompt_table(), PROMPT_MARK)
        sys.exit(0)
    main()
    diagnostics()
    combinations()
    prompts()
