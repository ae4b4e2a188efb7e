"""`isograd qa` under torchrun (gloo, CPU, 2 processes): the merged run equals one process's.

The two-process command is the README's (its CPU variant)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .launch import cpu_variant, readme_commands, run

pytest.importorskip("sklearn")
QUESTIONS = [f"Question number {i}: what is {i} plus {i}?" for i in range(5)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    from tests.lm.tiny_lm import tiny_model, tiny_tokenizer

    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer(chat=True).save_pretrained(folder)
    data = tmp_path_factory.mktemp("data") / "nq.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": ["two"]}) + "\n"
                            for q in QUESTIONS))
    return folder, data


OPTIONS = ["--methods", "msp,naive_entropy", "--k", "2", "--max-new-tokens", "6", "--quiet"]


def qa_args(folder: Path, data: Path, out: Path) -> list[str]:
    return ["isograd", "qa", "--model", str(folder), "--dtype", "fp64", "--dataset", "nq-open",
            "--data", str(data), "--out", str(out), *OPTIONS]


def rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "scores.jsonl").read_text().splitlines()]


def test_two_processes_equal_one(setup, tmp_path):
    folder, data = setup
    one, two = tmp_path / "one", tmp_path / "two"
    p1 = run(qa_args(folder, data, one))
    assert p1.returncode == 0, p1.stderr[-3000:]
    line = next(x for x in readme_commands() if " isograd qa " in x)
    p2 = run(cpu_variant(line, nproc=2, replace={"--dataset": "nq-open", "--out": str(two),
                                                 "--model": str(folder), "--dtype": "fp64"},
                         extra=["--data", str(data), *OPTIONS]))
    assert p2.returncode == 0, p2.stderr[-3000:]
    a, b = rows(one), rows(two)
    assert [r["id"] for r in a] == [r["id"] for r in b] and len(a) == len(QUESTIONS)
    for r, s in zip(a, b):
        assert r["answer"] == s["answer"]
        for k in ("p", "epistemic", "aleatoric", "naive_entropy"):
            assert abs(r[k] - s[k]) <= 1e-9 * abs(r[k]), (r["id"], k, r[k], s[k])
    assert (two / "metrics.json").exists() and (two / "report.md").exists()
    assert not list(two.glob("scores.jsonl.part*"))
