"""run_qa end to end on a tiny random Llama: stage files, report, determinism, resume after a
kill in any stage, the run lock, old run folders; `score_file`."""

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

import numpy as np
import pytest
import torch

import isograd.qa.stages as S
from isograd.lm import mc_prompt, qa_prompt, score
from isograd.qa.legacy import convert_run
from isograd.qa.pipeline import run_qa
from isograd.qa.score_pairs import pair_id, score_file
from isograd.rows.files import read_rows
from isograd.rows.lock import RunLockedError, run_lock
from isograd.rows.stagefiles import RunMismatchError

from .conftest import KW, METHODS, QUESTIONS, STAGE_FILES, no_cost, no_fp, stage_rows

pytest.importorskip("sklearn")


def test_stage_files_and_report(full_run):
    out, metrics = full_run
    for s in STAGE_FILES:
        rows = read_rows(out / f"{s}.jsonl")
        assert [r["id"] for r in rows] == [r["id"] for r in read_rows(out / "generate.jsonl")], s
        cfg = json.loads((out / f"{s}.config.json").read_text())
        assert cfg["stage"] == s and len(cfg["fingerprint"]) == 16
    gen_fp = json.loads((out / "generate.config.json").read_text())["fingerprint"]
    assert json.loads((out / "grade.config.json").read_text())["upstream"] == {"generate": gen_fp}
    assert set(json.loads((out / "baseline-naive_entropy.config.json").read_text())["upstream"]) == {
        "generate", "samples"}
    score_rows = read_rows(out / "score.jsonl")
    # every per-row scalar of lm.score's result, without naming them in the stage
    assert all({"grad_log_p", "epistemic_layer_scaled"} <= set(r) and "combined" not in r
               for r in score_rows)
    rows = read_rows(out / "scores.jsonl")  # the joined view
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
    assert not (out / "run.lock").exists()


def test_same_command_twice_same_numbers(lm, nq_file, full_run, tmp_path):
    run_qa(tmp_path, dataset="nq-open", data=str(nq_file), loaded=lm, **KW)
    assert stage_rows(tmp_path) == stage_rows(full_run[0])
    assert json.loads((tmp_path / "metrics.json").read_text())["methods"]["combined"][
        "auroc_mean"] == full_run[1]["methods"]["combined"]["auroc_mean"]


@pytest.mark.parametrize("fn", ["generate_rows", "grade_rows", "score_rows", "sample_rows",
                                "baseline_rows"])
def test_a_kill_inside_any_stage_loses_nothing(fn, lm, nq_file, full_run, tmp_path, monkeypatch):
    """Interrupt each stage after 3 rows (as a Ctrl-C would), rerun: the same files as a run
    never interrupted, and the rerun computes only the rows that were missing."""
    real, calls = getattr(S, fn), []

    def failing(*a, **kw):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(S, fn, failing)
    with pytest.raises(KeyboardInterrupt):
        run_qa(tmp_path, dataset="nq-open", data=str(nq_file), loaded=lm, **KW)
    assert not (tmp_path / "run.lock").exists()  # the lock is released on the way out
    counted = []

    def counting(*a, **kw):
        rows = real(*a, **kw)
        counted.extend(r["id"] for r in rows)
        return rows

    monkeypatch.setattr(S, fn, counting)
    run_qa(tmp_path, dataset="nq-open", data=str(nq_file), loaded=lm, **KW)
    assert stage_rows(tmp_path) == stage_rows(full_run[0])
    per_call = len(METHODS) if fn == "baseline_rows" else 1  # one stage file per baseline
    assert len(counted) == len(QUESTIONS) * per_call - 3


def test_truncated_last_write_is_redone(lm, nq_file, full_run, tmp_path):
    run_qa(tmp_path, dataset="nq-open", data=str(nq_file), loaded=lm, limit=3, **KW)
    with (tmp_path / "score.jsonl").open("a") as f:  # a write cut short by a kill: no newline
        f.write('{"id": "nq-half", "p": 0.')
    run_qa(tmp_path, dataset="nq-open", data=str(nq_file), loaded=lm, **KW)
    assert stage_rows(tmp_path) == stage_rows(full_run[0])


def test_killed_subprocess_resumes_to_the_same_files(lm, model_dir, nq_file, full_run, tmp_path):
    """SIGKILL a real `isograd qa` process mid-run, rerun it: same rows as uninterrupted, and
    the dead process's lock is taken over."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "isograd.cli", "qa", "--model", str(model_dir),
           "--dataset", "nq-open", "--data", str(nq_file), "--out", str(out), "--quiet",
           "--methods", ",".join(METHODS), "--k", "2", "--max-new-tokens", "6",
           "--option", "semantic_entropy.entailment=ngram"]
    # the sources under test, not whatever copy the interpreter has installed
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    path = out / "score.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and path.read_bytes().count(b"\n") >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # killed mid-run: no report yet, the lock left behind, and some stage still short of rows
    # (the score stage may write a whole batch at once, so which stage is short depends on timing)
    assert len(read_rows(path)) >= 2 and (out / "run.lock").exists()
    assert not (out / "metrics.json").exists()
    assert any(not (out / f"{s}.jsonl").exists()
               or len(read_rows(out / f"{s}.jsonl")) < len(QUESTIONS) for s in STAGE_FILES)
    run_qa(out, model=str(model_dir), dataset="nq-open", data=str(nq_file), loaded=lm, **KW)
    # the killed process's rows came from another process (its own memory budget and thread
    # pool): the same rows, numbers equal up to float32 summation order
    assert_same_rows(stage_rows(out), stage_rows(full_run[0]), rel=1e-6)


def assert_same_rows(got, want, *, rel):
    """Equal structure and values; floats equal within `rel` (relative)."""
    if isinstance(want, float) and isinstance(got, float):
        assert math.isclose(got, want, rel_tol=rel, abs_tol=0), (got, want)
    elif isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), (got, want)
        for k in want:
            assert_same_rows(got[k], want[k], rel=rel)
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (got, want)
        for g, w in zip(got, want):
            assert_same_rows(g, w, rel=rel)
    else:
        assert got == want


def test_lock_refuses_a_second_live_run_and_takes_over_a_dead_one(tmp_path, nq_file, capfd):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "run.lock").write_text(f"{sleeper.pid}\n")
        with pytest.raises(RunLockedError, match=f"in use by process {sleeper.pid}"):
            run_qa(tmp_path, dataset="nq-open", data=str(nq_file), **KW)
        assert not (tmp_path / "generate.jsonl").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    with run_lock(tmp_path):  # the holder is dead now
        assert (tmp_path / "run.lock").read_text().strip() == str(os.getpid())
    assert "taking over the lock of process" in capfd.readouterr().err
    assert not (tmp_path / "run.lock").exists()


def test_other_options_into_same_dir_refused(lm, nq_file, full_run, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(full_run[0], out)
    with pytest.raises(RunMismatchError, match=r"samples stage .*seed: 0 -> 1.*--force-stage samples"):
        run_qa(out, dataset="nq-open", data=str(nq_file), loaded=lm, **{**KW, "seed": 1})
    with pytest.raises(RunMismatchError, match=r"generate stage .*max_new_tokens: 6 -> 5"):
        run_qa(out, dataset="nq-open", data=str(nq_file), loaded=lm, **{**KW, "max_new_tokens": 5})
    # a larger or smaller limit is the same run: nothing recomputed, metrics over the subset
    m = run_qa(out, dataset="nq-open", data=str(nq_file), loaded=None, limit=4, **KW)
    assert m["n"] == 4 and len(read_rows(out / "score.jsonl")) == len(QUESTIONS)
    assert len(read_rows(out / "scores.jsonl")) == 4


def test_prompt_style_is_used_and_guarded(lm, nq_file, tmp_path, monkeypatch):
    from isograd.lm import generate

    seen, real = [], generate.greedy_answers

    def spy(model, tok, prompts, **kw):
        seen.extend(prompts)
        return real(model, tok, prompts, **kw)

    monkeypatch.setattr(generate, "greedy_answers", spy)
    kw = {**KW, "methods": ()}
    run_qa(tmp_path, dataset="nq-open", data=str(nq_file), loaded=lm, prompt="fewshot", **kw)
    _, tok = lm
    assert seen == [qa_prompt(tok, q, "fewshot") for q in QUESTIONS]
    assert json.loads((tmp_path / "generate.config.json").read_text())["options"]["prompt"] == "fewshot"
    with pytest.raises(RunMismatchError, match="prompt: 'fewshot' -> 'short'"):
        run_qa(tmp_path, dataset="nq-open", data=str(nq_file), loaded=lm, **kw)
    with pytest.raises(ValueError, match="unknown prompt style"):
        run_qa(tmp_path / "x", dataset="nq-open", data=str(nq_file), loaded=lm, prompt="?", **kw)


def test_a_base_model_in_an_instruction_prompt_is_told_of_the_base_style(lm, nq_file, tmp_path):
    """A tokenizer without a chat template in the default `short` style: the run goes on, with
    one warning naming --prompt base; in the base style, or with a chat template, no warning."""
    import warnings

    from tests.lm.tiny_lm import tiny_tokenizer

    model, _ = lm
    base = (model, tiny_tokenizer(chat=False))
    kw = {**KW, "methods": (), "limit": 1, "stage": "generate"}
    with pytest.warns(UserWarning, match="no chat template .*'short'.*--prompt base") as got:
        run_qa(tmp_path / "a", dataset="nq-open", data=str(nq_file), loaded=base, **kw)
    assert sum("no chat template" in str(w.message) for w in got) == 1
    assert len(read_rows(tmp_path / "a" / "generate.jsonl")) == 1
    for out, loaded, extra in (("b", base, {"prompt": "base"}), ("c", lm, {})):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            run_qa(tmp_path / out, dataset="nq-open", data=str(nq_file), loaded=loaded, **kw, **extra)
        assert not any("no chat template" in str(w.message) for w in seen), out


def test_old_single_file_run_is_refused_then_converted(lm, nq_file, full_run, tmp_path):
    """A run folder of the earlier format (scores.jsonl + config.json) is converted without
    recomputing: same metrics, and the converted folder runs on."""
    out = tmp_path / "old"
    out.mkdir()
    for name in ("scores.jsonl", "config.json", "metrics.json"):
        shutil.copy(full_run[0] / name, out / name)
    cfg = json.loads((out / "config.json").read_text())
    del cfg["prompt"]  # as written before --prompt existed: the default was in force
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RunMismatchError, match="isograd qa --convert"):
        run_qa(out, dataset="nq-open", data=str(nq_file), loaded=lm, **KW)
    m = convert_run(out)

    def plain(x):
        return json.loads(json.dumps({k: v for k, v in x.items() if k != "config"}, default=float))

    assert plain(m) == plain(full_run[1]) and m["config"] == full_run[1]["config"]
    assert json.loads((out / "config.json").read_text()) == cfg  # left as it was
    for s in ("grade", "score", *(f"baseline-{x}" for x in METHODS)):
        assert no_cost(read_rows(out / f"{s}.jsonl")) == no_fp(no_cost(
            read_rows(full_run[0] / f"{s}.jsonl"))), s
    m2 = run_qa(out, dataset="nq-open", data=str(nq_file), loaded=None, **KW)  # nothing to do
    assert m2["methods"]["combined"]["auroc"] == full_run[1]["methods"]["combined"]["auroc"]


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
    model, tok = lm
    for r, q in zip(rows, mc):
        opts = list(q["mc1_targets"])
        # the reference: each option's log-likelihood from one plain forward of prompt + option
        brute = [_option_loglik(model, tok, mc_prompt(tok, q["question"], "short"), o)
                 for o in opts]
        assert r["option_logliks"] == pytest.approx(brute, rel=1e-4, abs=1e-5)
        assert r["pick"] == int(np.argmax(brute))
        assert r["correct"] == (r["pick"] == r["label"]) and r["answer"] == opts[r["pick"]]
        assert r["msp"] == pytest.approx(-brute[r["pick"]], rel=1e-4)


def _option_loglik(model, tok, prompt, option):
    """log p(option | prompt): the option's tokens scored by one forward of the joint text."""
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    ids = tok(prompt + option, add_special_tokens=False)["input_ids"]
    assert ids[:len(p_ids)] == p_ids
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    return float(sum(logp[t - 1, ids[t]] for t in range(len(p_ids), len(ids))))


def test_score_file(lm, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "<s>user\\nhi</s>\\n<s>assistant\\n", "answer": "yo", "id": "a"}\n'
                     '{"prompt": "Why?", "answer": " no"}\n')
    out = tmp_path / "scored.jsonl"
    assert score_file(pairs, out, loaded=lm, progress=False) == 2
    rows = read_rows(out)
    assert [r["id"] for r in rows] == ["a", pair_id("Why?", " no")]
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

