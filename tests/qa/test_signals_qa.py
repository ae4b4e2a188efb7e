"""The other signals of the score pass in isograd qa / isograd score: recorded per row, evaluated
as methods of their own beside the paper's, the second labelling and the new figures."""

from __future__ import annotations

import json

import pytest

from isograd.evaluate.paper import SIGNALS
from isograd.qa.pipeline import run_qa
from isograd.qa.score_pairs import score_file
from isograd.qa.similarity import best_token_f1
from isograd.rows.files import read_rows

from .conftest import KW

pytest.importorskip("sklearn")


def test_full_run_records_and_evaluates_the_signals(full_run):
    out, metrics = full_run
    score_rows = read_rows(out / "score.jsonl")
    for r in score_rows:
        for m in ("grad_log_p", "epistemic_isotropic", "epistemic_layer_scaled",
                  "epistemic_last_layers", "embedding_grad"):
            assert isinstance(r[m], float), m
        assert r["epistemic"] == r["epistemic_isotropic"]  # the paper's term stays isotropic
        assert set(r["by_layer"]) == {"embed", "block.0", "block.1", "norm", "lm_head"}
        assert sum(r["by_layer"].values()) == pytest.approx(r["epistemic"], rel=1e-9)
        assert "token_epistemic" not in r  # no trace unless asked for
    meth = metrics["methods"]
    for m in ("epistemic", "aleatoric", "combined", "grad_log_p", "epistemic_layer_scaled",
              "epistemic_last_layers", "embedding_grad"):
        assert m in meth and meth[m]["aurac"] == pytest.approx(1 - meth[m]["aurc"]), m
    assert "epistemic_token_max" not in meth
    for m in ("grad_log_p", "epistemic_layer_scaled", "epistemic_last_layers", "embedding_grad"):
        # the same pass as epistemic: its cost, not a missing one
        assert meth[m]["cost_s"] == meth["epistemic"]["cost_s"] is not None, m
        assert meth[m]["cost_fwd"] == meth["epistemic"]["cost_fwd"] == 3.0, m
    assert metrics["base_rate"] == pytest.approx(metrics["n_incorrect"] / metrics["n"])
    # the report names the first labelling's grader beside the second
    methods_used = {r["grade_method"] for r in read_rows(out / "grade.jsonl")}
    assert metrics["grading"] == "grader " + ", ".join(sorted(methods_used))
    assert f"First: {metrics['grading']} (" in (out / "report.md").read_text()
    grades = read_rows(out / "grade.jsonl")
    answers = {r["id"]: r["answer"] for r in read_rows(out / "generate.jsonl")}
    for g in grades:
        assert g["correct_f1"] == (g["grade_f1"] >= 0.5)
        assert 0.0 <= g["grade_f1"] <= 1.0 and g["id"] in answers
    sec = metrics["second_labelling"]
    assert sec["n"] == metrics["n"] and set(sec["methods"]) == set(meth)
    report = (out / "report.md").read_text()
    assert "AURAC" in report and "Two labellings" in report and "base rate" in report
    assert (out / "risk_coverage.png").stat().st_size > 1000


def test_trace_run_adds_token_methods_and_profiles(lm, nq_file, tmp_path):
    out = tmp_path / "trace"
    kw = {**KW, "methods": ()}
    m = run_qa(out, dataset="nq-open", data=str(nq_file), loaded=lm, trace=True, last_layers=1,
               layer_scale="fan-in", **kw)
    rows = {r["id"]: r for r in read_rows(out / "score.jsonl")}
    traces = read_rows(out / "trace.jsonl")  # the trace is a stage of its own
    assert len(traces) == len(rows)
    for t in traces:
        r = rows[t["id"]]
        assert "token_epistemic" not in r
        assert len(t["token_epistemic"]) == len(t["token_aleatoric"]) == r["n_tokens"]
        assert t["epistemic_token_max"] == pytest.approx(max(t["token_epistemic"]), rel=1e-12)
        assert r["epistemic_last_layers"] == pytest.approx(r["by_layer"]["block.1"], rel=1e-12)
        # the first token's U_E is the first-token prediction's epistemic term (σ² = 1)
        assert t["token_epistemic"][0] == pytest.approx(r["epistemic_first_token"], rel=1e-8)
    joined = read_rows(out / "scores.jsonl")
    assert all(j["epistemic_token_max"] == pytest.approx(max(j["token_epistemic"]), rel=1e-12)
               for j in joined)
    assert {"epistemic_token_max", "epistemic_token_mean"} <= set(m["methods"])
    assert set(SIGNALS) <= set(m["methods"])
    assert "fan-in" in (out / "score.config.json").read_text()
    assert json.loads((out / "trace.config.json").read_text())["stage"] == "trace"
    assert (out / "token_profile.png").stat().st_size > 1000
    # redoing the trace leaves the score rows alone
    before = (out / "score.jsonl").read_text()
    run_qa(out, dataset="nq-open", data=str(nq_file), loaded=lm, trace=True, last_layers=1,
           layer_scale="fan-in", force_stages=["trace"], **kw)
    assert (out / "score.jsonl").read_text() == before
    assert len(read_rows(out / "trace.jsonl")) == len(rows)


def test_subset_runs_the_costly_stages_on_the_first_questions(lm, nq_file, tmp_path):
    """--subset N: trace, samples and baselines on the first N questions, the rest on all; each
    method is evaluated on the questions that have it, and a larger N later adds only rows."""
    from isograd.evaluate import auroc

    out = tmp_path / "subset"
    m = run_qa(out, dataset="nq-open", data=str(nq_file), loaded=lm, trace=True, subset=3, **KW)
    n = len(read_rows(out / "generate.jsonl"))
    assert n == 6 and len(read_rows(out / "score.jsonl")) == n
    ids = [r["id"] for r in read_rows(out / "generate.jsonl")]
    for stage in ("trace", "samples", *(f"baseline-{b}" for b in KW["methods"])):
        assert [r["id"] for r in read_rows(out / f"{stage}.jsonl")] == ids[:3], stage
    meth = m["methods"]
    assert meth["epistemic"]["n"] == n and meth["grad_log_p"]["n"] == n
    rows = read_rows(out / "scores.jsonl")
    for name in ("p_true", "semantic_entropy", "epistemic_token_max"):
        e = meth[name]
        assert e["n"] == 3 and e["n_missing"] == n - 3, name
        have = [r for r in rows if r.get(name) is not None]
        assert [r["id"] for r in have] == ids[:3]
        assert e["n_incorrect"] == sum(not r["correct"] for r in have)
        y = [0 if r["correct"] else 1 for r in have]
        if 0 < sum(y) < len(y):  # the metric is the AUROC over those rows alone
            sign = 1 if e["higher_is_uncertain"] else -1
            assert e["auroc"] == pytest.approx(auroc(y, [sign * r[name] for r in have]))
    assert m["config"]["subset"] == 3
    report = (out / "report.md").read_text()
    assert "n (incorrect)" in report and "first 3 questions" in report
    # growing the subset computes only the new rows: the old ones stay byte for byte
    old = (out / "baseline-p_true.jsonl").read_text()
    m2 = run_qa(out, dataset="nq-open", data=str(nq_file), loaded=lm, trace=True, subset=5, **KW)
    assert (out / "baseline-p_true.jsonl").read_text().startswith(old)
    assert m2["methods"]["p_true"]["n"] == 5 and m2["methods"]["epistemic_token_max"]["n"] == 5
    with pytest.raises(ValueError, match="subset must be >= 1"):
        run_qa(out, dataset="nq-open", data=str(nq_file), loaded=lm, subset=0, **KW)
    with pytest.raises(ValueError, match="stage 'trace' runs only with trace=True"):
        run_qa(out, dataset="nq-open", data=str(nq_file), loaded=lm, stage="trace", **KW)
    with pytest.raises(ValueError, match="needs trace=True"):
        run_qa(out, dataset="nq-open", data=str(nq_file), loaded=lm, trace_subset=2, **KW)


def test_trace_subset_is_the_trace_stages_own(lm, nq_file, tmp_path):
    out = tmp_path / "trace-subset"
    m = run_qa(out, dataset="nq-open", data=str(nq_file), loaded=lm, trace=True, subset=4,
               trace_subset=2, **KW)
    ids = [r["id"] for r in read_rows(out / "generate.jsonl")]
    assert [r["id"] for r in read_rows(out / "trace.jsonl")] == ids[:2]
    assert [r["id"] for r in read_rows(out / "baseline-msp.jsonl")] == ids[:4]
    assert m["methods"]["epistemic_token_mean"]["n"] == 2 and m["methods"]["msp"]["n"] == 4
    assert "first 2 (`--trace-subset`)" in (out / "report.md").read_text()


def test_f1_labels_follow_the_references(full_run, nq_file):
    out, _ = full_run
    refs = [json.loads(line)["answer"] for line in nq_file.read_text().splitlines()]
    answers = [r["answer"] for r in read_rows(out / "generate.jsonl")]
    grades = read_rows(out / "grade.jsonl")
    for a, ref, g in zip(answers, refs, grades):
        assert g["grade_f1"] == pytest.approx(best_token_f1(a, ref))


def test_score_file_writes_signals_and_profiles(lm, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"<s>q{i}", "answer": "abc"[: i + 1]}) + "\n"
                             for i in range(3)))
    out = tmp_path / "scored.jsonl"
    assert score_file(pairs, out, loaded=lm, trace=True, covariance="layer-scaled",
                      progress=False) == 3
    for r in read_rows(out):
        assert r["epistemic"] == r["epistemic_layer_scaled"] and r["covariance"] == "layer-scaled"
        assert len(r["token_epistemic"]) == r["n_tokens"] and "by_layer" in r
    with pytest.raises(ValueError, match="covariance=.layer-scaled."):
        score_file(pairs, out, loaded=lm, progress=False)  # other options into the same file


def test_method_subsets_give_each_costly_method_its_own_n(lm, nq_file, tmp_path):
    """--method-subset: each listed baseline on its own first N, the samples on the largest N of
    the methods that read them, every other method (MSP, mean token entropy) on all."""
    from isograd.qa.options import QAConfig, method_subsets

    out = tmp_path / "per-method"
    per = {"p_true": 2, "semantic_entropy": 3, "naive_entropy": 1}
    m = run_qa(out, dataset="nq-open", data=str(nq_file), loaded=lm, method_subsets=per, **KW)
    ids = [r["id"] for r in read_rows(out / "generate.jsonl")]
    assert len(ids) == 6 and len(read_rows(out / "score.jsonl")) == 6

    def stage_ids(stage):
        return [r["id"] for r in read_rows(out / f"{stage}.jsonl")]

    for name, n in per.items():
        assert stage_ids(f"baseline-{name}") == ids[:n] and m["methods"][name]["n"] == n
    assert stage_ids("samples") == ids[:3]  # naive (1) and semantic entropy (3) read them
    for cheap in ("msp", "mean_token_entropy"):
        assert stage_ids(f"baseline-{cheap}") == ids and m["methods"][cheap]["n"] == 6
    assert m["methods"]["epistemic"]["n"] == 6
    assert m["config"]["method_subsets"] == per
    assert QAConfig.from_json(m["config"]).method_subsets == per
    assert "`--method-subset`: P(True) 2" in (out / "report.md").read_text()
    # a larger N for one method computes only its new rows; the others stay byte for byte
    before = {s: (out / f"{s}.jsonl").read_text() for s in ("baseline-p_true", "samples",
                                                            "baseline-semantic_entropy")}
    m2 = run_qa(out, dataset="nq-open", data=str(nq_file), loaded=lm,
                method_subsets={**per, "p_true": 5}, **KW)
    assert stage_ids("baseline-p_true") == ids[:5] and m2["methods"]["p_true"]["n"] == 5
    assert (out / "baseline-p_true.jsonl").read_text().startswith(before["baseline-p_true"])
    for s in ("samples", "baseline-semantic_entropy"):
        assert (out / f"{s}.jsonl").read_text() == before[s]
    assert method_subsets("p_true=500, semantic_entropy=20") == {"p_true": 500,
                                                                  "semantic_entropy": 20}
    for bad, msg in (("msp=3", "always covers every question"), ("p_true=0", "positive"),
                     ("p_true=x", "positive"), ("oracle=3", "allowed: p_true"),
                     ("p_true", "METHOD=N")):
        with pytest.raises(ValueError, match=msg):
            method_subsets(bad)
    with pytest.raises(ValueError, match="does not run"):
        run_qa(out, dataset="nq-open", data=str(nq_file), loaded=lm,
               method_subsets={"p_true": 2}, **{**KW, "methods": ("msp",)})
