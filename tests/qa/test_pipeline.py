"""run_qa end to end on a tiny random Llama: rows, report, determinism, resume after a kill."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from isograd.lm import greedy_answer, load_model, qa_prompt, score
from isograd.qa.pipeline import RunMismatchError, read_rows, run_qa, score_file

from ..lm.tiny_lm import save_tiny

pytest.importorskip("sklearn")
QUESTIONS = [f"Question number {i}: what is {i} plus {i}?" for i in range(6)]
METHODS = ("p_true", "msp", "mean_token_entropy", "naive_entropy", "semantic_entropy")
OPTS = {"semantic_entropy": {"entailment": "ngram"}}
KW = dict(methods=METHODS, k=2, max_new_tokens=6, baseline_options=OPTS, progress=False)


def _no_cost(rows):
    """Rows without wall-clock timings (the only fields allowed to differ between runs)."""
    return [{k: v for k, v in r.items() if not (k.startswith("cost_") and k.endswith("_s"))}
            for r in rows]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random Llama saved like a hub model, so a subprocess can load the same one."""
    return save_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def lm(model_dir):
    # loaded from disk in every run: BLAS may round an in-memory copy differently (~1e-8)
    return load_model(str(model_dir))


@pytest.fixture(scope="module")
def nq_file(lm, tmp_path_factory):
    """An NQ-open style file whose reference is the model's own answer for even questions."""
    model, tok = lm
    path = tmp_path_factory.mktemp("data") / "nq.jsonl"
    with path.open("w") as f:
        for i, q in enumerate(QUESTIONS):
            own = greedy_answer(model, tok, qa_prompt(tok, q), max_new_tokens=6).text
            ref = own if i % 2 == 0 and own else "zzzz qqqq"
            f.write(json.dumps({"question": q, "answer": [ref]}) + "\n")
    return path


@pytest.fixture(scope="module")
def full_run(lm, nq_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    metrics = run_qa(out, dataset="nq-open", data=str(nq_file), loaded=lm, **KW)
    return out, metrics


def test_rows_and_report(full_run):
    out, metrics = full_run
    rows = read_rows(out / "scores.jsonl")
    assert [r["id"] for r in rows] == sorted({r["id"] for r in rows}, key=[r["id"] for r in rows].index)
    assert len(rows) == len(QUESTIONS)
    for r in rows:
        for key in ("id", "question", "answer", "correct", "p", "epistemic", "aleatoric",
                    "combined", "p_sequence", "epistemic_first_token", *METHODS):
            assert key in r, key
        assert r["aleatoric"] == pytest.approx(r["p"] * (1 - r["p"]))
        assert r["p_sequence"] == pytest.approx(math.exp(r["log_p"] * r["n_tokens"]))
        assert r["epistemic"] >= 0 and 0 <= r["combined"] <= 1
        assert r["cost_epistemic_fwd"] == 3.0 and r["cost_naive_entropy_fwd"] == 2.0
    assert {r["correct"] for r in rows} == {True, False}
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == len(QUESTIONS) and m["dataset"] == "nq-open"
    assert m["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / len(rows))
    assert {"epistemic", "aleatoric", "combined", *METHODS} <= set(m["methods"])
    assert set(m["predictions"]) == {"sequence", "geometric", "first_token"}
    report = (out / "report.md").read_text()
    assert report.count("|") > 20 and (out / "roc.png").exists()
    assert "| first_token |" in report and "| geometric (this run's p) |" in report
    assert json.loads((out / "config.json").read_text())["methods"] == list(METHODS)


def test_same_command_twice_same_numbers(lm, nq_file, full_run, tmp_path):
    run_qa(tmp_path, dataset="nq-open", data=str(nq_file), loaded=lm, **KW)
    a = _no_cost(read_rows(full_run[0] / "scores.jsonl"))
    assert a == _no_cost(read_rows(tmp_path / "scores.jsonl"))
    assert json.loads((tmp_path / "metrics.json").read_text())["methods"]["combined"][
        "auroc_mean"] == full_run[1]["methods"]["combined"]["auroc_mean"]


def test_resume_after_failure_and_truncated_line(lm, nq_file, full_run, tmp_path, monkeypatch):
    import isograd.qa.pipeline as P

    real, calls = P._question_row, []

    def failing(env, q):
        if len(calls) == 3:
            raise KeyboardInterrupt  # as a Ctrl-C after 3 questions
        calls.append(q.id)
        return real(env, q)

    monkeypatch.setattr(P, "_question_row", failing)
    with pytest.raises(KeyboardInterrupt):
        run_qa(tmp_path, dataset="nq-open", data=str(nq_file), loaded=lm, **KW)
    monkeypatch.setattr(P, "_question_row", real)
    path = tmp_path / "scores.jsonl"
    assert len(read_rows(path)) == 3
    with path.open("a") as f:  # a write cut short by a kill: no newline
        f.write('{"id": "nq-half", "question": "Quest')
    run_qa(tmp_path, dataset="nq-open", data=str(nq_file), loaded=lm, **KW)
    assert _no_cost(read_rows(path)) == _no_cost(read_rows(full_run[0] / "scores.jsonl"))


def test_other_options_into_same_dir_refused(lm, nq_file, full_run, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(full_run[0], out)
    with pytest.raises(RunMismatchError, match="seed: 0 -> 1"):
        run_qa(out, dataset="nq-open", data=str(nq_file), loaded=lm, **{**KW, "seed": 1})
    # a larger or smaller limit is the same run: nothing recomputed, metrics over the subset
    m = run_qa(out, dataset="nq-open", data=str(nq_file), loaded=None, limit=4, **KW)
    assert m["n"] == 4 and len(read_rows(out / "scores.jsonl")) == len(QUESTIONS)


def test_prompt_style_is_used_and_guarded(lm, nq_file, full_run, tmp_path, monkeypatch):
    import isograd.lm as L

    seen, real = [], L.greedy_answer

    def spy(model, tok, prompt, **kw):
        seen.append(prompt)
        return real(model, tok, prompt, **kw)

    monkeypatch.setattr(L, "greedy_answer", spy)
    kw = {**KW, "methods": ()}
    run_qa(tmp_path, dataset="nq-open", data=str(nq_file), loaded=lm, prompt="fewshot", **kw)
    _, tok = lm
    assert seen == [qa_prompt(tok, q, "fewshot") for q in QUESTIONS]
    assert json.loads((tmp_path / "config.json").read_text())["prompt"] == "fewshot"
    with pytest.raises(RunMismatchError, match="prompt: 'fewshot' -> 'short'"):
        run_qa(tmp_path, dataset="nq-open", data=str(nq_file), loaded=lm, **kw)
    with pytest.raises(ValueError, match="unknown prompt style"):
        run_qa(tmp_path / "x", dataset="nq-open", data=str(nq_file), loaded=lm, prompt="?", **kw)


def test_config_written_before_an_option_existed_is_accepted(lm, nq_file, full_run, tmp_path):
    out = tmp_path / "old"
    shutil.copytree(full_run[0], out)
    cfg = json.loads((out / "config.json").read_text())
    del cfg["prompt"]  # as written before --prompt existed: the default was in force
    (out / "config.json").write_text(json.dumps(cfg))
    m = run_qa(out, dataset="nq-open", data=str(nq_file), loaded=None, **KW)
    assert m["n"] == len(QUESTIONS)
    with pytest.raises(RunMismatchError, match="prompt: 'short' -> 'plain'"):
        run_qa(out, dataset="nq-open", data=str(nq_file), loaded=lm, prompt="plain", **KW)


def test_malformed_row_named(tmp_path):
    p = tmp_path / "scores.jsonl"
    p.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(ValueError, match="scores.jsonl:2: malformed row"):
        read_rows(p)


def test_mc1_scores_options(lm, tmp_path):
    mc = [{"question": "Pick one?", "mc1_targets": {"yes": 1, "no": 0, "maybe": 0}},
          {"question": "Which?", "mc1_targets": {"a b": 0, "c": 1}},
          {"question": "Third?", "mc1_targets": {"x": 0, "yy": 0, "zzz": 1}}]
    data = tmp_path / "mc_task.json"
    data.write_text(json.dumps(mc))
    m = run_qa(tmp_path / "out", dataset="truthfulqa-mc1", data=str(data), loaded=lm,
               methods=("p_true", "msp"), progress=False)
    rows = read_rows(tmp_path / "out" / "scores.jsonl")
    assert len(rows) == 3 and m["n"] == 3
    for r, q in zip(rows, mc):
        opts = list(q["mc1_targets"])
        assert r["pick"] == max(range(len(opts)), key=lambda i: r["option_logliks"][i])
        assert r["correct"] == (r["pick"] == r["label"]) and r["answer"] == opts[r["pick"]]
        assert r["msp"] == pytest.approx(-r["option_logliks"][r["pick"]], rel=1e-5)


def test_score_file(lm, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "<s>user\\nhi</s>\\n<s>assistant\\n", "answer": "yo", "id": "a"}\n'
                     '{"prompt": "Why?", "answer": " no"}\n')
    out = tmp_path / "scored.jsonl"
    assert score_file(pairs, out, loaded=lm, progress=False) == 2
    rows = read_rows(out)
    assert [r["id"] for r in rows] == ["a", "line-2"]
    assert rows[0]["aleatoric"] == pytest.approx(rows[0]["p"] * (1 - rows[0]["p"]))
    assert len(rows[1]["token_logprobs"]) == rows[1]["n_tokens"] == 3
    assert score_file(pairs, out, loaded=lm, progress=False) == 0  # resumed: nothing left
    assert rows[0]["prompt_style"] is None
    with pytest.raises(RunMismatchError, match="prediction='geometric'"):
        score_file(pairs, out, loaded=lm, progress=False, prediction="sequence")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "answer": "b"}\n{"prompt": "a"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2: field 'answer' missing"):
        score_file(bad, tmp_path / "x.jsonl", loaded=lm, progress=False)


def test_killed_subprocess_resumes_to_the_same_file(lm, model_dir, nq_file, full_run, tmp_path):
    """SIGKILL a real `isograd qa` process mid-run, rerun it: same rows as uninterrupted."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "isograd.cli", "qa", "--model", str(model_dir),
           "--dataset", "nq-open", "--data", str(nq_file), "--out", str(out), "--quiet",
           "--methods", ",".join(METHODS), "--k", "2", "--max-new-tokens", "6",
           "--option", "semantic_entropy.entailment=ngram"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    path = out / "scores.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and path.read_bytes().count(b"\n") >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_killed = len(read_rows(path))
    assert 2 <= n_killed < len(QUESTIONS)
    # the rerun, in process (same options, so config.json accepts it)
    run_qa(out, model=str(model_dir), dataset="nq-open", data=str(nq_file), loaded=lm, **KW)
    assert _no_cost(read_rows(path)) == _no_cost(read_rows(full_run[0] / "scores.jsonl"))


def test_prediction_can_be_reheadlined(lm, nq_file, full_run, tmp_path):
    """Another --prediction on a finished run swaps the headline columns; nothing recomputed."""
    out = tmp_path / "copy"
    shutil.copytree(full_run[0], out)
    before = read_rows(out / "scores.jsonl")
    run_qa(out, dataset="nq-open", data=str(nq_file), loaded=None, **{**KW, "prediction": "sequence"})
    rows = read_rows(out / "scores.jsonl")
    for a, b in zip(before, rows):
        assert b["p"] == a["p_sequence"] and b["p_geometric"] == a["p"]
        assert b["log_p"] == pytest.approx(a["log_p"] * a["n_tokens"])
        assert b["epistemic"] == a["epistemic_sequence"] and b["total"] == pytest.approx(
            b["epistemic"] + b["aleatoric"])
    assert json.loads((out / "config.json").read_text())["prediction"] == "sequence"
    run_qa(out, dataset="nq-open", data=str(nq_file), loaded=None, **KW)  # and back
    assert _no_cost(read_rows(out / "scores.jsonl")) == _no_cost(before)


def test_reheadline_refused_without_the_fields(lm, nq_file, tmp_path):
    kw = {**KW, "methods": ("msp",), "alternatives": False}
    run_qa(tmp_path, dataset="nq-open", data=str(nq_file), loaded=lm, limit=2, **kw)
    with pytest.raises(RunMismatchError, match="lack 'first_token'"):
        run_qa(tmp_path, dataset="nq-open", data=str(nq_file), loaded=lm, limit=2,
               **{**kw, "prediction": "first_token"})


def test_score_file_wraps_questions_in_the_chosen_prompt(lm, tmp_path):
    model, tok = lm
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"question": "x", "prompt": "Why?", "answer": " no", "id": "q"}\n')
    out = tmp_path / "scored.jsonl"
    score_file(pairs, out, loaded=lm, progress=False, as_question=True, prompt="fewshot")
    (row,) = read_rows(out)
    direct = score(model, tok, [qa_prompt(tok, "Why?", "fewshot")], [" no"])
    assert row["prompt_style"] == "fewshot" and row["p"] == pytest.approx(float(direct.p[0]))
    assert row["epistemic"] == pytest.approx(float(direct.epistemic[0]), rel=1e-6)
    with pytest.raises(RunMismatchError, match="prompt_style='fewshot'"):
        score_file(pairs, out, loaded=lm, progress=False, as_question=True)
