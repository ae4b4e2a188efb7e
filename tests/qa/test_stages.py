"""Stages of `isograd qa` run alone: another judge regrades without a gradient, a new baseline
computes only itself, a changed option redoes its stage and what reads it and nothing else,
another definition of p is taken from the rows; batched rows equal batch-size-1 rows."""

from __future__ import annotations

import json
import shutil

import pytest

import isograd.qa.stages as S
from isograd.qa.pipeline import run_qa
from isograd.rows.files import read_rows
from isograd.rows.stagefiles import RunMismatchError

from .conftest import KW, METHODS, QUESTIONS, no_cost

pytest.importorskip("sklearn")


def _forbid(monkeypatch, *names):
    """Make the named stage functions and every gradient computation raise."""
    import importlib

    def boom(*a, **kw):
        raise AssertionError("recomputed")

    for n in names:
        monkeypatch.setattr(S, n, boom)
    for mod in ("isograd.norms.api", "isograd.lm.score", "isograd.lm.choices"):
        monkeypatch.setattr(importlib.import_module(mod), "sq_grad_norms", boom)


def _copy(full_run, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(full_run[0], out)
    return out


def test_another_judge_regrades_without_recomputing_a_gradient(lm, nq_file, full_run,
                                                               tmp_path, monkeypatch):
    out = _copy(full_run, tmp_path)
    before = {s: (out / f"{s}.jsonl").read_bytes() for s in ("generate", "score", "samples")}
    _forbid(monkeypatch, "generate_rows", "score_rows", "sample_rows", "baseline_rows")
    kw = {**KW, "judge": "exact"}
    with pytest.raises(RunMismatchError, match=r"grade stage .*judge: 'auto' -> 'exact'.*"
                                               r"--force-stage grade"):
        run_qa(out, dataset="nq-open", data=str(nq_file), loaded=lm, stage="grade", **kw)
    assert run_qa(out, dataset="nq-open", data=str(nq_file), loaded=lm, stage="grade",
                  force_stages=["grade"], **kw) is None
    grades = read_rows(out / "grade.jsonl")
    assert len(grades) == len(QUESTIONS) and {g["grade_method"] for g in grades} != {
        g["grade_method"] for g in read_rows(full_run[0] / "grade.jsonl")}
    m = run_qa(out, dataset="nq-open", data=str(nq_file), loaded=lm, **kw)  # evaluate only
    assert m["n"] == len(QUESTIONS)
    assert {s: (out / f"{s}.jsonl").read_bytes() for s in before} == before
    view = read_rows(out / "scores.jsonl")
    assert [r["correct"] for r in view] == [g["correct"] for g in grades]
    assert [r["epistemic"] for r in view] == [
        r["epistemic"] for r in read_rows(full_run[0] / "scores.jsonl")]


def test_adding_a_baseline_computes_only_that_baseline(lm, nq_file, tmp_path, monkeypatch):
    kw = {**KW, "methods": ("msp",)}
    run_qa(tmp_path, dataset="nq-open", data=str(nq_file), loaded=lm, limit=3, **kw)
    files = sorted(p.name for p in tmp_path.glob("*.jsonl"))
    real = S.baseline_rows
    seen = []

    def spy(env, name, *a, **k):
        seen.append(name)
        return real(env, name, *a, **k)

    _forbid(monkeypatch, "generate_rows", "grade_rows", "score_rows", "sample_rows")
    monkeypatch.setattr(S, "baseline_rows", spy)
    m = run_qa(tmp_path, dataset="nq-open", data=str(nq_file), loaded=lm, limit=3,
               **{**kw, "methods": ("msp", "mean_token_entropy")})
    assert set(seen) == {"mean_token_entropy"} and len(seen) == 3
    assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == sorted(
        [*files, "baseline-mean_token_entropy.jsonl"])
    assert m["methods"]["mean_token_entropy"]["n"] == 3


def test_a_changed_option_redoes_its_stage_and_dependents_only(lm, nq_file, full_run, tmp_path,
                                                               monkeypatch):
    out = _copy(full_run, tmp_path)
    kept = {s: (out / f"{s}.jsonl").read_bytes()
            for s in ("generate", "grade", "score", "baseline-p_true", "baseline-msp")}
    _forbid(monkeypatch, "generate_rows", "grade_rows", "score_rows")
    kw = {**KW, "k": 3}
    with pytest.raises(RunMismatchError, match=r"samples stage .*k: 2 -> 3"):
        run_qa(out, dataset="nq-open", data=str(nq_file), loaded=lm, **kw)
    m = run_qa(out, dataset="nq-open", data=str(nq_file), loaded=lm, force_stages=["samples"],
               **kw)
    assert {s: (out / f"{s}.jsonl").read_bytes() for s in kept} == kept
    assert all(len(r["samples"]) == 3 for r in read_rows(out / "samples.jsonl"))
    assert all(r["cost_naive_entropy_fwd"] == 3.0 for r in read_rows(out / "baseline-naive_entropy.jsonl"))
    assert m["config"]["k"] == 3
    with pytest.raises(ValueError, match="--force-stage 'nope': allowed: generate"):
        run_qa(out, dataset="nq-open", data=str(nq_file), loaded=lm, force_stages=["nope"], **kw)


def test_another_prediction_is_taken_from_the_rows(lm, nq_file, full_run, tmp_path, monkeypatch):
    """--prediction sequence on a finished geometric run: the headline columns swap in the
    joined view; no gradient is recomputed and the score stage is untouched."""
    out = _copy(full_run, tmp_path)
    score_file = (out / "score.jsonl").read_bytes()
    _forbid(monkeypatch, "generate_rows", "grade_rows", "score_rows", "sample_rows", "baseline_rows")
    before = read_rows(full_run[0] / "scores.jsonl")
    m = run_qa(out, dataset="nq-open", data=str(nq_file), loaded=None,
               **{**KW, "prediction": "sequence"})
    rows = read_rows(out / "scores.jsonl")
    for a, b in zip(before, rows):
        assert b["p"] == a["p_sequence"] and b["p_geometric"] == a["p"]
        assert b["log_p"] == pytest.approx(a["log_p"] * a["n_tokens"])
        assert b["epistemic"] == a["epistemic_sequence"] and b["total"] == pytest.approx(
            b["epistemic"] + b["aleatoric"])
    assert m["config"]["prediction"] == "sequence" and (out / "score.jsonl").read_bytes() == score_file
    run_qa(out, dataset="nq-open", data=str(nq_file), loaded=None, **KW)  # and back
    assert no_cost(read_rows(out / "scores.jsonl")) == no_cost(before)


def test_another_prediction_refused_without_the_fields(lm, nq_file, tmp_path):
    kw = {**KW, "methods": ("msp",), "alternatives": False}
    run_qa(tmp_path, dataset="nq-open", data=str(nq_file), loaded=lm, limit=2, **kw)
    with pytest.raises(RunMismatchError, match="lack 'first_token'"):
        run_qa(tmp_path, dataset="nq-open", data=str(nq_file), loaded=lm, limit=2,
               **{**kw, "prediction": "first_token"})


def test_stage_alone_needs_its_input(lm, nq_file, tmp_path):
    with pytest.raises(RunMismatchError, match="lack generate rows.*--stage generate"):
        run_qa(tmp_path, dataset="nq-open", data=str(nq_file), loaded=lm, stage="score", **KW)
    assert run_qa(tmp_path, dataset="nq-open", data=str(nq_file), loaded=lm, stage="generate",
                  limit=2, **KW) is None
    assert len(read_rows(tmp_path / "generate.jsonl")) == 2
    assert not (tmp_path / "score.jsonl").exists() and not (tmp_path / "metrics.json").exists()
    with pytest.raises(ValueError, match="unknown stage|allowed"):
        run_qa(tmp_path, dataset="nq-open", data=str(nq_file), loaded=lm, stage="nope", **KW)


def test_stage_configs_are_json(full_run):
    cfg = json.loads((full_run[0] / "score.config.json").read_text())
    assert cfg["options"] == {"prediction": "geometric", "alternatives": True, "norm_method": "auto"}
    # one config per baseline of the run, holding that baseline's own options
    assert sorted(p.name for p in full_run[0].glob("baseline-*.config.json")) == sorted(
        f"baseline-{m}.config.json" for m in METHODS)
    se = json.loads((full_run[0] / "baseline-semantic_entropy.config.json").read_text())
    assert se["options"]["entailment"] == "ngram" and se["options"]["k"] == 2  # OPTS, KW
    assert se["upstream"].keys() == {"generate", "samples"}


def test_cli_runs_one_stage_and_refuses_a_locked_dir(model_dir, nq_file, tmp_path):
    import os

    from typer.testing import CliRunner

    from isograd.cli import app

    args = ["qa", "--model", str(model_dir), "--dataset", "nq-open", "--data", str(nq_file),
            "--out", str(tmp_path), "--limit", "2", "--methods", "none", "--max-new-tokens", "4"]
    res = CliRunner().invoke(app, [*args, "--stage", "generate"])
    assert res.exit_code == 0, res.output
    assert "stage generate done" in res.output and len(read_rows(tmp_path / "generate.jsonl")) == 2
    (tmp_path / "run.lock").write_text(f"{os.getppid()}\n")  # a live process holds the lock
    res = CliRunner().invoke(app, [*args, "--quiet"])
    assert res.exit_code == 2 and "in use by process" in res.output
    assert not (tmp_path / "score.jsonl").exists()
