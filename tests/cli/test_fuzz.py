"""Bad input to `isograd score`, `isograd qa` and `isograd validate`: exit status 2, one line on
stderr naming the file, line and field or the option, no traceback, and every file that
existed before is byte-identical afterwards (no new file either).

The malformed inputs are the files of tests/cli/fuzz/ (copied to a temporary folder first);
commands run in process through `isograd.cli.main`, two of them in a real subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from isograd.cli import main
from isograd.qa.options import QAConfig
from isograd.qa.stagerules import stage_configs
from isograd.rows.stagefiles import write_config

from ..lm.tiny_lm import save_tiny

CORPUS = Path(__file__).with_name("fuzz")
NO_CUDA = not torch.cuda.is_available()

# (id, arguments, substrings the one-line message must hold); placeholders: {F} the corpus
# copy, {M} a tiny model folder, {RUN} an existing qa run of other options, {SCORED} an
# existing `isograd score --out` file of another model, {PAIRS} / {QS} valid inputs,
# {BLOCK} a regular file (so {BLOCK}/x cannot be created), {NOTMODEL} a folder that is no model,
# {G} a tiny GPT-2 (512 learned positions)
SCORE = ["score", "--quiet", "--model", "{M}"]
QA = ["qa", "--quiet", "--model", "{M}", "--out", "{T}/new-run"]
# {DONE}: a finished run of the tiny model on {DONE_QS}, copied into the test's folder
DONE = ["qa", "--quiet", "--model", "{M}", "--dataset", "{DONE_QS}", "--methods", "none",
        "--max-new-tokens", "4", "--out", "{DONE}"]
CASES: list[tuple[str, list[str], list[str]]] = [
    # ---- isograd score: the --input file
    ("score-truncated-jsonl", [*SCORE, "--input", "{F}/pairs_truncated.jsonl", "--out", "{T}/o.jsonl"],
     ["pairs_truncated.jsonl:2", "invalid JSON"]),
    ("score-invalid-jsonl", [*SCORE, "--input", "{F}/pairs_invalid.jsonl", "--out", "{T}/o.jsonl"],
     ["pairs_invalid.jsonl:2", "invalid JSON"]),
    ("score-non-utf8", [*SCORE, "--input", "{F}/pairs_non_utf8.jsonl", "--out", "{T}/o.jsonl"],
     ["pairs_non_utf8.jsonl:2", "not UTF-8"]),
    ("score-empty-file", [*SCORE, "--input", "{F}/pairs_empty.jsonl", "--out", "{T}/o.jsonl"],
     ["pairs_empty.jsonl", "no pairs"]),
    ("score-missing-field", [*SCORE, "--input", "{F}/pairs_missing_answer.jsonl", "--out", "{T}/o.jsonl"],
     ["pairs_missing_answer.jsonl:2", "'answer'"]),
    ("score-mistyped-field", [*SCORE, "--input", "{F}/pairs_answer_not_string.jsonl", "--out", "{T}/o.jsonl"],
     ["pairs_answer_not_string.jsonl:1", "'answer'"]),
    ("score-duplicate-ids", [*SCORE, "--input", "{F}/pairs_duplicate_ids.jsonl", "--out", "{T}/o.jsonl"],
     ["pairs_duplicate_ids.jsonl:2", "'id'", "duplicate id 'a'"]),
    ("score-row-not-object", [*SCORE, "--input", "{F}/pairs_not_object.jsonl", "--out", "{T}/o.jsonl"],
     ["pairs_not_object.jsonl:1", "object"]),
    ("score-input-missing", [*SCORE, "--input", "{T}/absent.jsonl", "--out", "{T}/o.jsonl"],
     ["absent.jsonl"]),
    # ---- isograd score: --out and conflicts
    ("score-out-of-another-model", ["score", "--quiet", "--input", "{PAIRS}", "--out", "{SCORED}"],
     ["scored.jsonl", "model='other-model'"]),
    ("score-out-is-a-folder", [*SCORE, "--input", "{PAIRS}", "--out", "{RUN}"],
     ["'--out'", "run is a folder"]),
    ("score-out-not-writable", [*SCORE, "--input", "{PAIRS}", "--out", "{BLOCK}/o.jsonl"],
     ["'--out'", "blocker is a file"]),
    ("score-out-is-the-input", [*SCORE, "--input", "{PAIRS}", "--out", "{PAIRS}"], ["'--out'"]),
    ("score-out-dev-null", [*SCORE, "--input", "{PAIRS}", "--out", "/dev/null"],
     ["'--out'", "/dev/null", "special file"]),
    ("score-out-dev-full", [*SCORE, "--input", "{PAIRS}", "--out", "/dev/full"],
     ["'--out'", "/dev/full", "special file"]),
    ("score-out-dev-stdout", [*SCORE, "--input", "{PAIRS}", "--out", "/dev/stdout"],
     ["'--out'", "/dev/stdout", "special file"]),
    ("score-input-is-a-folder", [*SCORE, "--input", "{RUN}", "--out", "{T}/o.jsonl"],
     ["'--input'", "not a regular file"]),
    ("score-prompt-longer-than-context", ["score", "--quiet", "--model", "{G}", "--input",
                                          "{F}/pairs_prompt_too_long.jsonl", "--out", "{T}/o.jsonl"],
     ["pairs_prompt_too_long.jsonl", "pair 'long'", "context of 512 positions"]),
    ("score-pair-over-memory-budget", [*SCORE, "--input", "{PAIRS}", "--out", "{T}/o.jsonl",
                                       "--memory-budget", "1000"],
     ["pair 'a'", "memory budget", "--memory-budget"]),
    ("score-memory-budget-zero", [*SCORE, "--input", "{PAIRS}", "--out", "{T}/o.jsonl",
                                  "--memory-budget", "0"], ["'--memory-budget'"]),
    ("score-fsdp-with-trace", [*SCORE, "--input", "{PAIRS}", "--out", "{T}/o.jsonl", "--shard",
                               "fsdp", "--trace"], ["--shard fsdp", "--trace"]),
    ("score-prompt-without-as-question", [*SCORE, "--input", "{PAIRS}", "--out", "{T}/o.jsonl",
                                          "--prompt", "plain"], ["'--prompt'", "--as-question"]),
    # ---- isograd score: options
    ("score-model-not-a-model", ["score", "--input", "{PAIRS}", "--out", "{T}/o.jsonl", "--model",
                                 "{NOTMODEL}"], ["'--model'", "not a model folder", "weights"]),
    ("score-model-is-a-file", ["score", "--input", "{PAIRS}", "--out", "{T}/o.jsonl", "--model",
                               "{PAIRS}"], ["'--model'", "is a file"]),
    ("score-model-missing", ["score", "--input", "{PAIRS}", "--out", "{T}/o.jsonl", "--model",
                             "{T}/no/such/model"], ["'--model'", "no model folder"]),
    ("score-unknown-dtype", [*SCORE, "--input", "{PAIRS}", "--out", "{T}/o.jsonl", "--dtype", "fp8"],
     ["--dtype", "fp8"]),
    ("score-unknown-device", [*SCORE, "--input", "{PAIRS}", "--out", "{T}/o.jsonl", "--device", "gpu0"],
     ["--device", "gpu0"]),
    ("score-unknown-prediction", [*SCORE, "--input", "{PAIRS}", "--out", "{T}/o.jsonl",
                                  "--prediction", "mean"], ["'--prediction'", "geometric"]),
    ("score-unknown-norm-method", [*SCORE, "--input", "{PAIRS}", "--out", "{T}/o.jsonl",
                                   "--norm-method", "fast"], ["'--norm-method'", "ghost"]),
    ("score-batch-size-zero", [*SCORE, "--input", "{PAIRS}", "--out", "{T}/o.jsonl",
                               "--batch-size", "0"], ["'--batch-size'"]),
    ("score-batch-size-not-int", [*SCORE, "--input", "{PAIRS}", "--out", "{T}/o.jsonl",
                                  "--batch-size", "eight"], ["'--batch-size'"]),
    ("score-unknown-option", [*SCORE, "--input", "{PAIRS}", "--out", "{T}/o.jsonl", "--bogus"],
     ["--bogus"]),
    ("score-missing-out", [*SCORE, "--input", "{PAIRS}"], ["'--out'"]),
    # ---- isograd qa: a user's dataset file
    ("qa-truncated-jsonl", [*QA, "--dataset", "{F}/questions_truncated.jsonl"],
     ["questions_truncated.jsonl:2", "invalid JSON"]),
    ("qa-invalid-jsonl", [*QA, "--dataset", "{F}/questions_invalid.jsonl"],
     ["questions_invalid.jsonl:2", "invalid JSON"]),
    ("qa-non-utf8-jsonl", [*QA, "--dataset", "{F}/questions_non_utf8.jsonl"],
     ["questions_non_utf8.jsonl:2", "not UTF-8"]),
    ("qa-empty-file", [*QA, "--dataset", "{F}/questions_empty.jsonl"],
     ["questions_empty.jsonl", "no questions"]),
    ("qa-missing-field", [*QA, "--dataset", "{F}/questions_missing_answers.jsonl"],
     ["questions_missing_answers.jsonl:2", "'answers'"]),
    ("qa-answers-not-a-list", [*QA, "--dataset", "{F}/questions_answers_not_list.jsonl"],
     ["questions_answers_not_list.jsonl:1", "'answers'", "list"]),
    ("qa-question-not-a-string", [*QA, "--dataset", "{F}/questions_question_not_string.jsonl"],
     ["questions_question_not_string.jsonl:1", "'question'"]),
    ("qa-label-not-an-int", [*QA, "--dataset", "{F}/questions_label_not_int.jsonl"],
     ["questions_label_not_int.jsonl:1", "'label'"]),
    ("qa-label-out-of-range", [*QA, "--dataset", "{F}/questions_label_out_of_range.jsonl"],
     ["questions_label_out_of_range.jsonl:2", "'label'", "out of range"]),
    ("qa-duplicate-ids", [*QA, "--dataset", "{F}/questions_duplicate_ids.jsonl"],
     ["questions_duplicate_ids.jsonl:2", "'id'", "duplicate id 'q1'"]),
    ("qa-mixed-kinds", [*QA, "--dataset", "{F}/questions_mixed_kinds.jsonl"],
     ["questions_mixed_kinds.jsonl:2", "one kind"]),
    ("qa-csv-without-question-column", [*QA, "--dataset", "{F}/questions_no_question_column.csv"],
     ["questions_no_question_column.csv:1", "'question'"]),
    ("qa-csv-bad-json-list", [*QA, "--dataset", "{F}/questions_bad_json_list.csv"],
     ["questions_bad_json_list.csv:2", "'answers'"]),
    ("qa-csv-non-utf8", [*QA, "--dataset", "{F}/questions_non_utf8.csv"],
     ["questions_non_utf8.csv:2", "not UTF-8"]),
    ("qa-registered-dataset-bad-copy", [*QA, "--dataset", "nq-open", "--data",
                                        "{F}/nq_open_mistyped_answer.jsonl"],
     ["nq_open_mistyped_answer.jsonl:2", "'answer'"]),
    # ---- isograd qa: names, --out, conflicts
    ("qa-unknown-dataset", [*QA, "--dataset", "squad"], ["'--dataset'", "squad", "triviaqa"]),
    ("qa-dataset-file-missing", [*QA, "--dataset", "{T}/mine.jsonl"], ["'--dataset'", "mine.jsonl"]),
    ("qa-user-file-with-data", [*QA, "--dataset", "{QS}", "--data", "{F}"], ["--data"]),
    ("qa-out-of-other-options", ["qa", "--quiet", "--dataset", "{QS}", "--out", "{RUN}"],
     ["run", "other options", "model"]),
    ("qa-out-not-writable", ["qa", "--quiet", "--dataset", "{QS}", "--out", "{BLOCK}/run"],
     ["'--out'", "blocker is a file"]),
    ("qa-out-is-a-file", ["qa", "--quiet", "--dataset", "{QS}", "--out", "{PAIRS}"],
     ["'--out'", "is a file"]),
    ("qa-unknown-method", [*QA, "--dataset", "{QS}", "--methods", "msp,oracle"],
     ["'--methods'", "oracle"]),
    ("qa-option-for-a-method-not-run", [*QA, "--dataset", "{QS}", "--methods", "msp", "--option",
                                        "semantic_entropy.entailment=ngram"], ["'--option'", "semantic_entropy"]),
    ("qa-malformed-option", [*QA, "--dataset", "{QS}", "--option", "semantic_entropy"],
     ["'--option'", "METHOD.KEY=VALUE"]),
    ("qa-llm-judge-unconfigured", [*QA, "--dataset", "{QS}", "--judge", "llm"],
     ["judge='llm'", "ISOGRAD_JUDGE_URL", "--judge"]),
    ("qa-prompt-longer-than-context", ["qa", "--quiet", "--model", "{G}", "--out", "{T}/new-run",
                                       "--dataset", "{F}/questions_prompt_too_long.jsonl"],
     ["question 'long'", "context of 512 positions"]),
    ("qa-out-dev-null", ["qa", "--quiet", "--dataset", "{QS}", "--out", "/dev/null"],
     ["'--out'", "special file"]),
    ("qa-unknown-judge", [*QA, "--dataset", "{QS}", "--judge", "vibes"], ["'--judge'", "vibes"]),
    ("qa-unknown-prompt", [*QA, "--dataset", "{QS}", "--prompt", "long"], ["'--prompt'", "short"]),
    ("qa-unknown-dtype", [*QA, "--dataset", "{QS}", "--dtype", "int4"], ["--dtype", "int4"]),
    ("qa-unknown-device", [*QA, "--dataset", "{QS}", "--device", "tpu"], ["--device", "tpu"]),
    ("qa-limit-zero", [*QA, "--dataset", "{QS}", "--limit", "0"], ["'--limit'"]),
    ("qa-k-zero", [*QA, "--dataset", "{QS}", "--k", "0"], ["'--k'"]),
    ("qa-subset-zero", [*QA, "--dataset", "{QS}", "--subset", "0"], ["'--subset'"]),
    ("qa-method-subset-of-a-cheap-method", [*QA, "--dataset", "{QS}", "--method-subset", "msp=3"],
     ["'--method-subset'", "'msp'", "every question"]),
    ("qa-method-subset-not-a-number", [*QA, "--dataset", "{QS}", "--method-subset", "p_true=many"],
     ["'--method-subset'", "positive integer"]),
    ("qa-trace-subset-without-trace", [*QA, "--dataset", "{QS}", "--trace-subset", "3"],
     ["trace_subset", "needs trace=True"]),
    ("qa-trace-stage-without-trace", [*QA, "--dataset", "{QS}", "--stage", "trace"],
     ["stage 'trace'", "--trace"]),
    ("qa-temperature-zero", [*QA, "--dataset", "{QS}", "--temperature", "0"], ["'--temperature'"]),
    ("qa-hub-model-offline", ["qa", "--dataset", "{QS}", "--out", "{T}/r", "--model",
                              "no-such-org/no-such-model"], ["'--model'", "offline"]),
    ("qa-model-not-a-model", ["qa", "--dataset", "{QS}", "--out", "{T}/r", "--model", "{NOTMODEL}"],
     ["'--model'", "not a model folder"]),
    ("qa-missing-dataset", ["qa", "--out", "{T}/r"], ["'--dataset'"]),
    # ---- detectors: isograd qa --detector on a finished run, isograd score --detector,
    # isograd fit-detector
    *[(f"qa-detector-{name}", [*DONE, "--detector", f"{{F}}/{file}"], expect)
      for name, file, expect in (
          ("corrupt", "detector_corrupt.json", ["corrupt detector file"]),
          ("future-version", "detector_future_version.json", ["format 99", "newer"]),
          ("missing-feature", "detector_missing_feature.json", ["'no_such_field'", "missing"]),
          ("other-model", "detector_other_model.json", ["'other-model'", "allow_model_mismatch"]))],
    ("score-detector-corrupt", [*SCORE, "--input", "{PAIRS}", "--out", "{T}/o.jsonl",
                                "--detector", "{F}/detector_corrupt.json"], ["corrupt detector file"]),
    ("score-detector-missing-feature", [*SCORE, "--input", "{PAIRS}", "--out", "{T}/o.jsonl",
                                        "--detector", "{F}/detector_missing_feature.json"],
     ["'no_such_field'", "isograd score rows"]),
    ("score-detector-other-model", [*SCORE, "--input", "{PAIRS}", "--out", "{T}/o.jsonl",
                                    "--detector", "{F}/detector_other_model.json"], ["'other-model'"]),
    ("fit-detector-unlabelled-run", ["fit-detector", "{F}/run_unlabelled", "--out", "{T}/d.json"],
     ["run_unlabelled", "no 'correct' label"]),
    ("fit-detector-missing-feature", ["fit-detector", "{F}/run_missing_feature", "--out",
                                      "{T}/d.json", "--features", "model-agnostic"],
     ["'grad_log_p'", "missing"]),
    ("fit-detector-not-a-run", ["fit-detector", "{T}", "--out", "{T}/d.json"], ["no scores.jsonl"]),
    ("fit-detector-alpha-above-one", ["fit-detector", "{F}/run_missing_feature", "--out",
                                      "{T}/d.json", "--alpha", "1.5"], ["alpha"]),
    ("fit-detector-unknown-features", ["fit-detector", "{F}/run_missing_feature", "--out",
                                       "{T}/d.json", "--features", "all"], ["'--features'", "model-agnostic"]),
    # ---- isograd validate
    ("validate-unknown-problem", ["validate", "--out", "{T}/v", "--problems", "binary_linear,moons"],
     ["'--problems'", "moons", "binary_xor"]),
    ("validate-width-zero", ["validate", "--out", "{T}/v", "--widths", "0"], ["'--widths'"]),
    ("validate-negative-sigma", ["validate", "--out", "{T}/v", "--sigma-p", "-1"], ["'--sigma-p'"]),
    ("validate-chains-zero", ["validate", "--out", "{T}/v", "--chains", "0"], ["'--chains'"]),
]
if NO_CUDA:
    CASES.append(("qa-cuda-unavailable", [*QA, "--dataset", "{QS}", "--device", "cuda"],
                  ["--device", "CUDA is not available"]))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def finished(model_dir, tmp_path_factory):
    """A finished `isograd qa` run of the tiny model (the questions file, the run folder)."""
    from isograd.qa.pipeline import run_qa

    root = tmp_path_factory.mktemp("finished")
    qs = root / "qs.jsonl"
    qs.write_text("".join(json.dumps({"question": f"What is {i} plus {i}?", "answers": [str(2 * i)]})
                          + "\n" for i in range(4)))
    run_qa(root / "run", model=str(model_dir), dataset=str(qs), methods=(), max_new_tokens=4,
           progress=False)
    return qs, root / "run"


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """A tiny GPT-2: a learned table of 512 positions, so a longer sequence cannot run."""
    return save_tiny(tmp_path_factory.mktemp("gpt2"), kind="gpt2")


@pytest.fixture
def world(tmp_path, model_dir, gpt2_dir, finished):
    """The corpus copy, valid inputs and the existing outputs a failing command must not touch."""
    corpus = tmp_path / "fuzz"
    shutil.copytree(CORPUS, corpus)
    run = tmp_path / "run"
    run.mkdir()
    other = stage_configs(QAConfig(model="other-model"), {})["generate"]  # a staged run
    write_config(run, other)
    (run / "generate.jsonl").write_text('{"id": "old", "answer": "x"}\n')
    (run / "config.json").write_text(json.dumps(QAConfig(model="other-model").to_json()))
    scored = tmp_path / "scored.jsonl"
    scored.write_text(json.dumps({"id": "a", "p": 0.5, "model": "other-model",
                                  "prediction": "geometric", "prompt_style": None}))  # no newline
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"id": "a", "prompt": "Why?", "answer": " no"}\n')
    qs = tmp_path / "qs.jsonl"
    qs.write_text('{"question": "Capital of France?", "answers": ["Paris"]}\n')
    (tmp_path / "blocker").write_text("a file, not a folder\n")
    notmodel = tmp_path / "notmodel"
    notmodel.mkdir()
    (notmodel / "config.json").write_text('{"model_type": "llama"}')
    shutil.copytree(finished[1], tmp_path / "done")
    return {"F": str(corpus), "T": str(tmp_path), "M": str(model_dir), "G": str(gpt2_dir),
            "RUN": str(run),
            "DONE": str(tmp_path / "done"), "DONE_QS": str(finished[0]),
            "SCORED": str(scored), "PAIRS": str(pairs), "QS": str(qs),
            "BLOCK": str(tmp_path / "blocker"), "NOTMODEL": str(notmodel)}


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _check(code: int | None, err: str, expect: list[str]) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert code == 2, (code, err)
    assert "Traceback" not in err, err
    assert len(errors) == 1, err  # one line; any other line is a one-line warning
    assert all(ln.startswith(("error: ", "warning: ")) for ln in lines), err
    for s in expect:
        assert s in errors[0], (s, errors[0])


def test_corpus_is_large_enough():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)
    used = {Path(a).name for _, args, _ in CASES for a in args if a.startswith("{F}/")}
    assert used == {p.name for p in CORPUS.iterdir()}, "every corpus file is used, and exists"


@pytest.mark.parametrize("args, expect", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_one_line_exit_2_nothing_changed(world, tmp_path, monkeypatch, capsys, args, expect):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("ISOGRAD_DEBUG", raising=False)
    for var in ("ISOGRAD_JUDGE_URL", "ISOGRAD_JUDGE_MODEL"):  # the LLM judge unconfigured
        monkeypatch.delenv(var, raising=False)
    before = _snapshot(tmp_path)
    with pytest.raises(SystemExit) as ei:
        main([a.format(**world) for a in args])
    _check(ei.value.code, capsys.readouterr().err, expect)
    assert _snapshot(tmp_path) == before  # every file byte-identical, and no new file


@pytest.mark.parametrize("case", ["score-truncated-jsonl", "qa-registered-dataset-bad-copy",
                                  "fit-detector-unlabelled-run"])
def test_real_process(world, tmp_path, case):
    """The installed entry point as a user runs it (a warning, if any, is one line too)."""
    args, expect = next(c[1:] for c in CASES if c[0] == case)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ISOGRAD_DEBUG": "",
           "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    before = _snapshot(tmp_path)
    proc = subprocess.run([sys.executable, "-c", "from isograd.cli import main; main()",
                           *[a.format(**world) for a in args]],
                          env=env, capture_output=True, text=True, timeout=300)
    _check(proc.returncode, proc.stderr, expect)
    assert _snapshot(tmp_path) == before
