"""The other signals of the score pass in isograd qa / isograd score: recorded per row, evaluated
as methods of their own beside the paper's, the second labelling and the new figures."""

from __future__ import annotations

import json

import pytest

from isograd.evaluate.paper import SIGNALS
from isograd.qa.grading import best_token_f1
from isograd.qa.pipeline import read_rows, run_qa, score_file

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
    assert metrics["base_rate"] == pytest.approx(metrics["n_incorrect"] / metrics["n"])
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
    rows = read_rows(out / "score.jsonl")
    for r in rows:
        assert len(r["token_epistemic"]) == len(r["token_aleatoric"]) == r["n_tokens"]
        assert r["epistemic_token_max"] == pytest.approx(max(r["token_epistemic"]), rel=1e-12)
        assert r["epistemic_last_layers"] == pytest.approx(r["by_layer"]["block.1"], rel=1e-12)
    assert {"epistemic_token_max", "epistemic_token_mean"} <= set(m["methods"])
    assert set(SIGNALS) <= set(m["methods"])
    cfg = json.loads((out / "score.config.json").read_text())
    assert "trace" in json.dumps(cfg) and "fan-in" in json.dumps(cfg)
    assert (out / "token_profile.png").stat().st_size > 1000


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
