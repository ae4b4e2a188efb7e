"""ARC-Easy end to end on the tiny model: the multiple-choice path picks the likeliest option,
the grade is pick == answerKey, and the rows carry the signals a detector reads."""

from __future__ import annotations

import json

import numpy as np

from isograd.detect import SCALAR_FEATURES
from isograd.qa.datasets import PACKAGED_DATA, load_dataset
from isograd.qa.pipeline import run_qa
from isograd.rows.files import read_rows


def test_arc_easy_questions_through_the_multiple_choice_path(lm, tmp_path):
    metrics = run_qa(tmp_path, dataset="arc-easy-test", limit=5, methods=(), loaded=lm,
                     progress=False)
    raw = [json.loads(x) for x in
           (PACKAGED_DATA / "arc_easy" / "ARC-Easy-test.jsonl").read_text().splitlines()[:5]]
    rows = read_rows(tmp_path / "scores.jsonl")
    assert [r["id"] for r in rows] == [f"arc-{r['id']}" for r in raw]
    for r, rec in zip(rows, raw):
        keys = rec["choices"]["label"]
        assert r["label"] == keys.index(rec["answerKey"])
        logl = r["option_logliks"]
        assert len(logl) == len(keys) and r["pick"] == int(np.argmax(logl))  # the likeliest
        assert r["correct"] is (r["pick"] == r["label"])
        assert r["answer"] == rec["choices"]["text"][r["pick"]]
        assert all(isinstance(r[f], (int, float)) for f in SCALAR_FEATURES)  # detector-ready
        assert r["by_layer"]
    assert metrics["n"] == 5 and metrics["dataset"] == "arc-easy-test"
    assert metrics["accuracy"] == np.mean([r["correct"] for r in rows])
    assert metrics["paper_column"] is None  # the paper reports no ARC numbers
    assert len(load_dataset("arc-easy-test", limit=5)) == 5
