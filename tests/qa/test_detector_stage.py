"""``--detector`` on ``isograd qa`` and ``isograd score``: p_error and abstain on every row, the
detector's report, and on a finished run no recomputation at all."""

from __future__ import annotations

import importlib
import json
import shutil

import numpy as np
import pytest

from isograd.cli import main
from isograd.detect import fit_detector, load_detector
from isograd.qa.pipeline import run_qa
from isograd.qa.score_pairs import score_file
from isograd.rows.files import read_rows

from ..detect.rows import synthetic_rows
from .conftest import KW

pytest.importorskip("sklearn")


def detector_file(path, alpha=0.45, model_id=None):
    """A model-agnostic detector fitted on synthetic rows (every scalar feature a qa row has)."""
    rows, correct = synthetic_rows(400, seed=1)
    det = fit_detector(rows, correct, features="model-agnostic", alpha=alpha, model_id=model_id)
    det.save(path)
    return det


def refuse(*_a, **_k):
    raise AssertionError("recomputed: the norm engine or a stage ran")


def no_recomputation(monkeypatch):
    """The norm engine (where every module takes it from) and every computing stage raise."""
    import isograd.qa.stages as S

    for name in ("isograd.norms.api", "isograd.lm.score", "isograd.lm.choices"):
        monkeypatch.setattr(importlib.import_module(name), "sq_grad_norms", refuse)
    for fn in ("generate_rows", "grade_rows", "score_rows", "sample_rows", "baseline_rows"):
        monkeypatch.setattr(S, fn, refuse)
    monkeypatch.setattr("isograd.lm.load_model", refuse)


def test_detector_stage_on_a_finished_run_computes_nothing_else(full_run, nq_file, tmp_path,
                                                                 monkeypatch):
    src, _ = full_run
    out = tmp_path / "run"
    shutil.copytree(src, out)
    stage_files = {p.name: p.read_bytes() for p in out.glob("*.jsonl") if p.name != "scores.jsonl"}
    before = read_rows(out / "scores.jsonl")
    det = detector_file(tmp_path / "det.json")
    no_recomputation(monkeypatch)
    metrics = run_qa(out, dataset="nq-open", data=str(nq_file), detector=str(tmp_path / "det.json"),
                     **KW)
    after = read_rows(out / "scores.jsonl")
    want = det.predict(before)
    np.testing.assert_allclose([r["p_error"] for r in after], want.p_error, rtol=1e-12)
    assert [r["abstain"] for r in after] == want.abstain.tolist()
    # every other field of the joined rows is as it was, and no stage file changed
    assert [{k: v for k, v in r.items() if k not in ("p_error", "abstain")} for r in after] == before
    assert {p.name: p.read_bytes() for p in out.glob("*.jsonl") if p.name != "scores.jsonl"} == stage_files
    d = metrics["detector"]
    wrong = np.array([not r["correct"] for r in after])
    assert d["brier"] == pytest.approx(np.mean((want.p_error - wrong) ** 2))
    assert d["coverage"] == pytest.approx(np.mean(~want.abstain))
    assert d["threshold"] == det.threshold.threshold and d["alpha"] == 0.45
    assert "p_error" in metrics["methods"]
    assert json.loads((out / "metrics.json").read_text())["detector"]["n"] == len(after)
    report = (out / "report.md").read_text()
    assert "## Detector: P(wrong) and abstention" in report and f"{d['ece']:.3f}" in report
    assert (out / "reliability.png").stat().st_size > 0


def test_score_detector_adds_p_error_to_every_row(lm, tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"id": f"a{i}", "prompt": f"Q{i}? A:", "answer": " yes"})
                             + "\n" for i in range(3)))
    det = detector_file(tmp_path / "det.json", alpha=0.01)  # no threshold meets 0.01
    assert det.threshold.threshold is None
    score_file(pairs, tmp_path / "plain.jsonl", loaded=lm, progress=False)
    score_file(pairs, tmp_path / "o.jsonl", loaded=lm, progress=False,
               detector=str(tmp_path / "det.json"))
    plain, judged = read_rows(tmp_path / "plain.jsonl"), read_rows(tmp_path / "o.jsonl")
    np.testing.assert_allclose([r["p_error"] for r in judged], det.predict(plain).p_error,
                               rtol=1e-9)
    assert all(r["abstain"] is True for r in judged)  # threshold null: every row abstains


def test_model_check_and_its_override(lm, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "Q? A:", "answer": " no"}) + "\n")
    detector_file(tmp_path / "det.json", model_id="other-model")
    with pytest.raises(ValueError, match="fitted on model 'other-model'"):
        score_file(pairs, tmp_path / "o.jsonl", loaded=lm, progress=False,
                   detector=str(tmp_path / "det.json"))
    assert not (tmp_path / "o.jsonl").exists()
    score_file(pairs, tmp_path / "o.jsonl", loaded=lm, progress=False,
               detector=str(tmp_path / "det.json"), allow_model_mismatch=True)
    assert "p_error" in read_rows(tmp_path / "o.jsonl")[0]
    assert load_detector(tmp_path / "det.json", allow_model_mismatch=True).model_id == "other-model"


def test_cli_says_in_one_line_when_every_row_abstains(full_run, nq_file, tmp_path, monkeypatch,
                                                     capsys):
    src, _ = full_run
    out = tmp_path / "run"
    shutil.copytree(src, out)
    detector_file(tmp_path / "det.json", alpha=0.01)
    no_recomputation(monkeypatch)
    args = ["qa", "--dataset", "nq-open", "--data", str(nq_file), "--out", str(out), "--quiet",
            "--methods", ",".join(KW["methods"]), "--k", "2", "--max-new-tokens", "6",
            "--option", "semantic_entropy.entailment=ngram", "--detector", str(tmp_path / "det.json")]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "no threshold" in err[0] and "abstain: true" in err[0]
    assert all(r["abstain"] for r in read_rows(out / "scores.jsonl"))


def test_run_rows_join_the_stage_files_of_a_staged_run(full_run, tmp_path):
    """run_rows takes the evaluate stage's join: a regrade not yet evaluated gives its labels."""
    from isograd.qa.detector_rows import run_rows
    from isograd.rows.files import rewrite_rows

    src, _ = full_run
    out = tmp_path / "run"
    shutil.copytree(src, out)
    joined = read_rows(out / "scores.jsonl")
    rr = run_rows(out)
    assert [r["id"] for r in rr.rows] == [r["id"] for r in joined]
    assert rr.correct.tolist() == [r["correct"] for r in joined]
    assert all(r[k] == j[k] for r, j in zip(rr.rows, joined) for k in r)  # the same join
    grades = read_rows(out / "grade.jsonl")
    grades[0] = {**grades[0], "correct": not grades[0]["correct"]}
    rewrite_rows(out / "grade.jsonl", grades)
    assert run_rows(out).correct[0] == (not joined[0]["correct"])
    assert read_rows(out / "scores.jsonl") == joined  # only read
