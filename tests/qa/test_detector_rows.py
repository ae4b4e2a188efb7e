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
    # split on "\n" only: str.splitlines would also split at U+2028 and friends inside a question
    lines = [json.loads(x) for x in (run / "scores.jsonl").read_text().split("\n") if x.strip()]
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


def synthetic_run(tmp_path, name, n, seed):
    from ..detect.rows import synthetic_rows

    rows, correct = synthetic_rows(n, seed=seed)
    return make_run(tmp_path, name, [{**r, "correct": bool(c)} for r, c in zip(rows, correct)]), rows, correct


def test_fit_detector_command_writes_what_fit_detector_fits(tmp_path, capsys):
    from isograd.cli import main
    from isograd.detect import load_detector

    run, rows, correct = synthetic_run(tmp_path, "fit", 400, 0)
    cal, crows, ccorrect = synthetic_run(tmp_path, "cal", 300, 1)
    out = tmp_path / "det.json"
    with pytest.raises(SystemExit) as e:
        main(["fit-detector", str(run), "--out", str(out), "--calibration", str(cal),
              "--alpha", "0.45", "--delta", "0.2", "--features", "model-agnostic"])
    assert e.value.code == 0
    want = fit_detector(rows, correct, features="model-agnostic", calibration_rows=crows,
                        calibration_labels=ccorrect, alpha=0.45, delta=0.2, model_id="tiny")
    got = load_detector(out)
    assert got.to_dict() == want.to_dict()
    assert got.threshold.n_calibration == 300 and got.threshold.threshold is not None
    line = capsys.readouterr().out.strip()
    assert f"P(wrong) <= {want.threshold.threshold:.2f}" in line and "\n" not in line


def test_fit_detector_defaults_and_no_threshold_line(tmp_path, capsys):
    from isograd.cli import main
    from isograd.detect import CALIBRATION_SHARE, load_detector
    from isograd.qa.detector_rows import FIT, fit_runs

    assert (FIT["alpha"].default, FIT["delta"].default) == (0.3, 0.1)
    run, rows, correct = synthetic_run(tmp_path, "fit", 400, 0)
    with pytest.raises(SystemExit) as e:
        main(["fit-detector", str(run), "--out", str(tmp_path / "d.json"), "--alpha", "0.01"])
    assert e.value.code == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "no threshold" in err[0] and "alpha=0.01" in err[0]
    det = load_detector(tmp_path / "d.json")
    assert det.threshold.threshold is None and det.predict(rows).abstain.all()
    assert det.threshold.n_calibration == round(CALIBRATION_SHARE * 400)
    again = fit_runs(run, tmp_path / "d2.json", alpha=0.01)
    assert again.to_dict() == det.to_dict()
