"""Shared fixtures of the QA pipeline tests: a tiny random Llama saved like a hub model, an
NQ-open style file it answers half right, and one complete run of every stage."""

from __future__ import annotations

import json

import pytest

from isograd.lm import greedy_answer, load_model, qa_prompt
from isograd.qa.pipeline import run_qa
from isograd.rows.files import read_rows

from ..lm.tiny_lm import save_tiny

QUESTIONS = [f"Question number {i}: what is {i} plus {i}?" for i in range(6)]
METHODS = ("p_true", "msp", "mean_token_entropy", "naive_entropy", "semantic_entropy")
OPTS = {"semantic_entropy": {"entailment": "ngram"}}
KW = dict(methods=METHODS, k=2, max_new_tokens=6, baseline_options=OPTS, progress=False)
STAGE_FILES = ("generate", "grade", "score", "samples", *(f"baseline-{m}" for m in METHODS))


def no_cost(rows):
    """Rows without wall-clock timings (the only fields allowed to differ between runs)."""
    return [{k: v for k, v in r.items() if not (k.startswith("cost_") and k.endswith("_s"))}
            for r in rows]


def no_fp(rows):
    """Rows without their input fingerprints (which hold the options as given, e.g. a model
    by name or by folder, and which rows written before they existed lack)."""
    return [{k: v for k, v in r.items() if k != "input_fp"} for r in rows]


def stage_rows(out):
    """Every stage file's rows (timings and fingerprints dropped), and the joined view's."""
    return {s: no_fp(no_cost(read_rows(out / f"{s}.jsonl"))) for s in (*STAGE_FILES, "scores")}


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A tiny random Llama saved like a hub model, so a subprocess can load the same one."""
    return save_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def lm(model_dir):
    # loaded from disk in every run: BLAS may round an in-memory copy differently (~1e-8)
    return load_model(str(model_dir))


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
def full_run(lm, nq_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    metrics = run_qa(out, dataset="nq-open", data=str(nq_file), loaded=lm, **KW)
    return out, metrics
