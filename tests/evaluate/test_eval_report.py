"""report.evaluate / write_report on synthetic scores.jsonl rows (no model, no network)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from isograd.evaluate import (
    PAPER_TABLE2,
    evaluate,
    read_scores,
    render_markdown,
    write_report,
)
from isograd.evaluate import metrics as M

METHODS = {"epistemic": True, "aleatoric": True, "p_true": False, "naive_entropy": True}


def make_rows(n: int = 160, seed: int = 0, sigma2: float = 1.0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        correct = bool(rng.random() < 0.45)
        p = rng.uniform(0.3, 0.95) if correct else rng.uniform(0.0, 0.7)
        rows.append({
            "id": f"q{i}", "question": f"question {i}?", "answer": "a", "correct": correct, "p": p,
            "epistemic": sigma2 * float(rng.lognormal(0, 1) * (1.0 if correct else 1.6)),
            "aleatoric": p * (1 - p),
            "p_true": float(np.clip(rng.normal(0.6 if correct else 0.4, 0.2), 0, 1)),
            "naive_entropy": float(rng.normal()),
            "cost_epistemic_s": 0.3, "cost_epistemic_fwd": 2.0,
            "cost_aleatoric_s": 0.1, "cost_aleatoric_fwd": 1.0,
            "cost_p_true_s": 0.2 + 0.01 * (i % 2), "cost_p_true_fwd": 1.0,
        })
    return rows


@pytest.fixture(scope="module")
def rows():
    return make_rows()


@pytest.fixture(scope="module")
def metrics(rows):
    return evaluate(rows, METHODS, model="tiny", dataset="truthfulqa-gen", command="isograd qa --x")


def test_schema_and_basic_numbers(rows, metrics):
    y = np.array([0 if r["correct"] else 1 for r in rows])
    assert metrics["model"] == "tiny" and metrics["dataset"] == "truthfulqa-gen"
    assert metrics["n"] == len(rows) and metrics["accuracy"] == pytest.approx(1 - y.mean())
    assert set(metrics["methods"]) == {*METHODS, "combined", "combined_logreg_cv"}
    for name, e in metrics["methods"].items():
        for key in ("auroc_mean", "auroc_std", "auroc", "prr", "aurc", "n", "higher_is_uncertain"):
            assert key in e, (name, key)
    pt = np.array([r["p_true"] for r in rows])
    assert metrics["methods"]["p_true"]["auroc"] == pytest.approx(M.auroc(y, -pt))  # oriented
    mean, std = M.bootstrap_auroc(y, -pt, n=300, seed=0)
    assert metrics["methods"]["p_true"]["auroc_mean"] == mean and metrics["methods"]["p_true"]["auroc_std"] == std
    assert metrics["methods"]["p_true"]["paper_auroc_mean"] == PAPER_TABLE2["p_true"]["TruthfulQA"][0]


def test_costs_are_averaged(metrics):
    e = metrics["methods"]
    assert e["p_true"]["cost_s"] == pytest.approx(0.205) and e["p_true"]["cost_fwd"] == 1.0
    assert e["naive_entropy"]["cost_s"] is None
    assert e["combined"]["cost_s"] == pytest.approx(0.3) and e["combined"]["cost_fwd"] == 2.0


def test_comparisons_and_spearman(rows, metrics):
    comp = metrics["comparisons"]
    assert comp["reference"] == "combined"
    names = [c["method"] for c in comp["results"]]
    assert names == ["epistemic", "aleatoric", "p_true", "naive_entropy"]
    ps = [c["p"] for c in comp["results"]]
    np.testing.assert_allclose([c["p_bh"] for c in comp["results"]], M.benjamini_hochberg(ps))
    assert all(c["p_bh"] >= c["p"] for c in comp["results"])
    epi = [r["epistemic"] for r in rows]
    pt = [r["p_true"] for r in rows]
    assert metrics["spearman"]["epistemic_vs_p_true"] == pytest.approx(M.spearman(epi, pt))
    assert metrics["spearman"]["oriented"]["p_true"]["p_true"] == pytest.approx(1.0)


def test_deterministic(rows, metrics):
    again = evaluate(rows, METHODS, model="tiny", dataset="truthfulqa-gen", command="isograd qa --x")
    assert json.dumps(again, sort_keys=True) == json.dumps(metrics, sort_keys=True)


def test_sigma2_changes_nothing(metrics):
    scaled = evaluate(make_rows(sigma2=1e-7), METHODS, model="tiny", dataset="truthfulqa-gen",
                      command="isograd qa --x")
    for m in ("epistemic", "combined", "combined_logreg_cv"):
        for k in ("auroc", "auroc_mean", "auroc_std", "prr", "aurc"):
            assert scaled["methods"][m][k] == pytest.approx(metrics["methods"][m][k], abs=1e-9), (m, k)
    assert scaled["comparisons"] == metrics["comparisons"]


def test_missing_values_per_method():
    rows = make_rows(80, seed=1)
    for r in rows[:10]:
        r["p_true"] = None
    rows[10]["naive_entropy"] = float("nan")
    m = evaluate(rows, METHODS, dataset="triviaqa")
    assert m["methods"]["p_true"]["n"] == 70 and m["methods"]["p_true"]["n_missing"] == 10
    assert m["methods"]["naive_entropy"]["n"] == 79
    p_true_cmp = [c for c in m["comparisons"]["results"] if c["method"] == "p_true"][0]
    assert p_true_cmp["n"] == 70
    assert m["methods"]["combined"]["paper_auroc_mean"] == PAPER_TABLE2["combined"]["TriviaQA"][0]


def test_row_combined_values_are_replaced_and_noted():
    rows = make_rows(60)
    for r in rows:
        r["combined"] = 0.0
    m = evaluate(rows, {**METHODS, "combined": True})
    assert m["methods"]["combined"]["auroc"] != 0.5 and any("replaced" in n for n in m["notes"])


def test_input_errors():
    rows = make_rows(20)
    with pytest.raises(ValueError, match="no value in any row"):
        evaluate(rows, {"semantic_entropy": True})
    bad = [dict(r) for r in rows]
    bad[3]["correct"] = "yes"
    with pytest.raises(ValueError, match="row 3"):
        evaluate(bad, METHODS)
    with pytest.raises(ValueError, match="no rows"):
        evaluate([], METHODS)


def test_single_class_gives_no_auroc_but_no_crash():
    rows = make_rows(30)
    for r in rows:
        r["correct"] = True
    m = evaluate(rows, METHODS, combine=False)
    assert m["accuracy"] == 1.0 and m["methods"]["epistemic"]["auroc_mean"] is None
    assert "combined" not in m["methods"]


def test_write_report(tmp_path, rows, metrics):
    # the caller names the baselines (evaluate imports no qa): here a hand-written label
    written = write_report(tmp_path, metrics, rows, labels={"semantic_entropy": "SE, by hand"})
    assert [p.name for p in written] == ["metrics.json", "report.md", "answers.md", "roc.png",
                                         "risk_coverage.png"]
    loaded = json.loads((tmp_path / "metrics.json").read_text())  # strict JSON: NaN would fail below
    assert loaded["n"] == metrics["n"] and "NaN" not in (tmp_path / "metrics.json").read_text()
    assert loaded["methods"]["combined"]["auroc_mean"] == pytest.approx(metrics["methods"]["combined"]["auroc_mean"])
    md = (tmp_path / "report.md").read_text()
    assert "0.63 ± 0.08" in md and "0.55 ± 0.06" in md  # the paper's TruthfulQA column
    assert "Grünefeld" in md and "isograd qa --x" in md
    assert "| SE, by hand | not run" in md  # every Table-2 row shown, under the given label
    c = metrics["methods"]["combined"]
    # one AUROC everywhere: the plain AUROC on the rows, ± the bootstrap std
    assert f"| {c['label']} | {c['auroc']:.2f} ± {c['auroc_std']:.2f} |" in md
    assert (tmp_path / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_markdown_for_dataset_without_paper_numbers(rows):
    m = evaluate(rows, METHODS, dataset="nq-open")
    md = render_markdown(m)
    assert "reports no numbers" in md and "0.63 ± 0.08" not in md
    assert "paper_auroc_mean" not in m["methods"]["combined"]
    header = next(ln for ln in md.splitlines() if ln.startswith("| method |"))
    assert "paper" not in header  # no column the paper cannot fill
    assert all(ln.count("|") == header.count("|") for ln in md.splitlines()
               if ln.startswith("| ") and "---" not in ln and "AUROC" not in ln)


def test_too_few_of_either_class_is_not_ranked():
    rows = make_rows(200, seed=3)
    for i, r in enumerate(rows):  # p_true only on the first 40 rows: few of one class at most
        if i >= 40:
            r["p_true"] = None
    m = evaluate(rows, METHODS, dataset="truthfulqa-gen")
    y = [not r["correct"] for r in rows[:40]]
    few = min(sum(y), 40 - sum(y)) < 30  # 40 rows cannot hold 30 of each class
    assert few and m["methods"]["p_true"]["too_few"] is True
    assert m["methods"]["epistemic"]["too_few"] is False  # 200 rows, both classes >= 30
    md = render_markdown(m)
    line = next(ln for ln in md.splitlines() if ln.startswith("| p_true |"))
    assert f"too few to rank ({40 - sum(y)} correct, {sum(y)} incorrect)" in line
    assert "± 0.00" not in line


def test_answers_worst_first_and_roc_styles(tmp_path, rows, metrics, monkeypatch):
    import isograd.evaluate.render as R

    seen = {}
    real = R.finish

    def spy(fig, ax, path, **kw):
        name = Path(path).name
        seen[name] = [(str(ln.get_color()), ln.get_linestyle()) for ln in ax.get_lines()[1:]]
        seen["legend"] = kw["legend"]
        real(fig, ax, path, **kw)

    import isograd.evaluate.curves as C

    monkeypatch.setattr(R, "finish", spy)
    monkeypatch.setattr(C, "finish", spy)
    judged = [{**r, "p_error": float(k % 7) / 7} for k, r in enumerate(rows)]
    write_report(tmp_path, metrics, judged)
    for fig in ("roc.png", "risk_coverage.png"):  # no two curves alike, the legend outside
        assert len(set(seen[fig])) == len(seen[fig]) >= 4 and len({s for _, s in seen[fig]}) > 1
    assert seen["legend"]["bbox_to_anchor"][0] > 1
    table = [ln.split(" | ") for ln in (tmp_path / "answers.md").read_text().splitlines()
             if ln.startswith("| ") and ln[2].isdigit()]
    assert len(table) == len(rows)
    # without a detector in the metrics the order is the combined score's (worst first)
    from isograd.evaluate.table import oriented_columns

    _, cols = oriented_columns(rows, metrics)
    want = [rows[i]["question"] for i in np.argsort(-cols["combined"], kind="stable")]
    assert [t[1] for t in table] == want
    assert {t[3].strip(" |") for t in table} == {"correct", "wrong"}


def test_read_scores(tmp_path, rows):
    p = tmp_path / "scores.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows[:5]) + "\n")
    assert read_scores(p) == rows[:5]
    p.write_text(json.dumps(rows[0]) + "\n{oops\n")
    with pytest.raises(ValueError, match=":2:"):
        read_scores(p)
