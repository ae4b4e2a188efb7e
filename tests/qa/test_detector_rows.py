"""Run folders as a detector's labelled rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from isograd.detect import DetectorError, fit_detector
from isograd.qa.detector_rows import RunLabelsError, run_rows

RESULTS = Path(__file__).resolve().parents[2] / "results" / "qa"


def make_run(tmp_path: Path, name: str, rows: list[dict], model: str = "tiny") -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "config.json").write_text(json.dumps({"model": model, "dataset": "x"}))
    return d


def test_committed_run_gives_rows_labels_and_model(tmp_path):
    run = RESULTS / "triviaqa"
    rr = run_rows(run)
    lines = [json.loads(x) for x in (run / "scores.jsonl").read_text().splitlines() if x.strip()]
    assert len(rr.rows) == len(lines) == len(rr.correct)
    assert rr.correct.tolist() == [r["correct"] for r in lines]
    assert rr.model_id == json.loads((run / "config.json").read_text())["model"]
    det = fit_detector(rr.rows, rr.correct, features="model-agnostic", model_id=rr.model_id)
    assert det.predict(rr.rows).p_error.shape == (len(lines),)


def test_several_folders_concatenate(tmp_path):
    a = make_run(tmp_path, "a", [{"id": "1", "correct": True}, {"id": "2", "correct": False}])
    b = make_run(tmp_path, "b", [{"id": "3", "correct": False}])
    rr = run_rows([a, b])
    assert [r["id"] for r in rr.rows] == ["1", "2", "3"]
    np.testing.assert_array_equal(rr.correct, [True, False, False])
    c = make_run(tmp_path, "c", [{"id": "4", "correct": True}], model="other")
    with pytest.raises(RunLabelsError, match="different models"):
        run_rows([a, c])


def test_folders_without_labels_are_refused(tmp_path):
    ungraded = make_run(tmp_path, "u", [{"id": "1", "p": 0.5}, {"id": "2", "correct": True}])
    with pytest.raises(RunLabelsError, match="1 of 2 rows have no 'correct' label") as e:
        run_rows(ungraded)
    assert "\n" not in str(e.value) and isinstance(e.value, DetectorError)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RunLabelsError, match="no scores.jsonl"):
        run_rows(empty)
    copy = tmp_path / "copy"
    shutil.copytree(RESULTS / "triviaqa-150", copy, ignore=shutil.ignore_patterns("*.png"))
    (copy / "config.json").write_text("{broken")
    with pytest.raises(RunLabelsError, match="invalid JSON"):
        run_rows(copy)
