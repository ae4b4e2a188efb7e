"""Finished ``isograd qa`` run folders as a detector's labelled rows (`run_rows`), and the
``isograd fit-detector`` front door (`fit_runs`, its options `FIT`).

A finished run folder holds its stage files, the questions its evaluate stage covered
(``scores.jsonl``) and the run's options (``config.json``: the ``model`` and, when recorded, its
``revision``). `run_rows` joins those questions' stage rows through the evaluate stage's own
join (`isograd.qa.evaluation.join_rows`: every stage's fields, ``correct`` from the grade
stage), or, for a run of the earlier single-file format, reads ``scores.jsonl``; it never runs
a model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..detect import CALIBRATION_SHARE, Detector, DetectorError, FeatureSet
from ..detect.abstain import ALPHA, DELTA
from ..evaluate.report import read_scores
from ..options import Option, Options

SCORES = "scores.jsonl"
CONFIG = "config.json"


class RunLabelsError(DetectorError):
    """A run folder cannot give labelled rows: not a finished run, or its answers are ungraded."""


@dataclass(frozen=True)
class RunRows:
    """Labelled rows of one or more run folders.

    Attributes:
        rows: the joined rows, in folder then question order.
        correct: bool [N], the grade stage's verdicts (True = the answer is correct).
        model_id: the runs' model (``config.json`` ``model``), None when not recorded.
        revision: the runs' model revision, None when not recorded.
    """

    rows: list[dict[str, Any]]
    correct: NDArray[np.bool_]
    model_id: str | None
    revision: str | None


def _one(run_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    scores = run_dir / SCORES
    if not scores.is_file():
        raise RunLabelsError(f"{run_dir}: no {SCORES}; not a finished isograd qa run folder "
                             "(rerun isograd qa on it to evaluate)")
    cfg_path = run_dir / CONFIG
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
    except json.JSONDecodeError as e:
        raise RunLabelsError(f"{cfg_path}: invalid JSON: {e.msg}") from None
    rows = read_scores(scores)
    if rows and (run_dir / "generate.config.json").is_file():
        # a staged run: its questions joined afresh from the stage files (the evaluate
        # stage's one join), so a regrade not yet evaluated still gives its labels
        from .evaluation import join_rows, recorded_prediction

        rows = join_rows(run_dir, cfg, [r["id"] for r in rows],
                         score_prediction=recorded_prediction(run_dir, cfg))
    if not rows:
        raise RunLabelsError(f"{scores}: no rows")
    bad = [r.get("id", i) for i, r in enumerate(rows) if not isinstance(r.get("correct"), bool)]
    if bad:
        raise RunLabelsError(f"{run_dir}: {len(bad)} of {len(rows)} rows have no 'correct' label "
                             f"(first: {bad[0]!r}); the run folder has no labels")
    return rows, cfg


def run_rows(run_dirs: str | Path | Sequence[str | Path]) -> RunRows:
    """The labelled rows of finished run folders, for `isograd.detect.fit_detector`.

    Args:
        run_dirs: one run folder or several (their rows are concatenated).

    Returns:
        `RunRows` (pass ``rows``, ``correct``, ``model_id`` and ``revision`` to `fit_detector`).

    Raises:
        RunLabelsError: a folder without ``scores.jsonl``, with an ungraded row, or folders
            of different models.
    """
    dirs = [Path(run_dirs)] if isinstance(run_dirs, (str, Path)) else [Path(d) for d in run_dirs]
    if not dirs:
        raise RunLabelsError("no run folders given")
    rows: list[dict[str, Any]] = []
    models: set[tuple[str | None, str | None]] = set()
    for d in dirs:
        r, cfg = _one(d)
        rows += r
        models.add((cfg.get("model"), cfg.get("revision")))
    if len(models) > 1:
        raise RunLabelsError(f"run folders of different models: {sorted(models, key=str)}")
    model_id, revision = models.pop()
    return RunRows(rows, np.array([r["correct"] for r in rows], dtype=bool), model_id, revision)


FIT = Options((
    Option("run_dirs", ..., "Finished isograd qa run folders to fit on (their scores.jsonl "
           "and config.json).", type=list[str], positional=True),
    Option("out", ..., "The detector file to write (JSON)."),
    Option("calibration_runs", (), "A run folder to choose the threshold on (repeatable); "
           f"default: a held-back {CALIBRATION_SHARE:.0%} of the fitting rows.", type=list[str],
           flag="--calibration", cli_default=None, coerce=lambda v: tuple(map(str, v))),
    Option("alpha", ALPHA, "Target error rate among the answered questions.", type=float,
           positive=True),
    Option("delta", DELTA, "The threshold's guarantee holds with probability >= 1 - delta.",
           type=float, positive=True),
    Option("features", FeatureSet.DEFAULT.value, "Feature set", choice=FeatureSet),
    Option("seed", 0, "Seed of the held-back split and the inner folds.", type=int),
))
"""The options of `fit_runs` and ``isograd fit-detector``."""


def fit_runs(run_dirs: str | Path | Sequence[str | Path], out: str | Path,
             **options: Any) -> Detector:
    """Fit a detector on finished run folders and write its JSON file (`Detector.save`).

    Args:
        run_dirs: the run folders to fit on.
        out: the detector file.
        **options: those of `FIT` (``calibration_runs``, ``alpha``, ``delta``, ``features``,
            ``seed``): the threshold is chosen on the rows of ``calibration_runs`` when given,
            else on `isograd.detect.CALIBRATION_SHARE` of the fitting rows held back.

    Returns:
        The fitted `Detector` (its ``threshold.threshold`` is None when none met ``alpha``).

    Raises:
        RunLabelsError: a folder that is no finished, graded run, or folders of different models.
        DetectorError: the rows cannot give the features or a fit.
    """
    from ..detect import fit_detector

    o = FIT.without("run_dirs", "out").resolve(options)
    fit = run_rows(run_dirs)
    cal = run_rows(o["calibration_runs"]) if o["calibration_runs"] else None
    if cal is not None and (cal.model_id, cal.revision) != (fit.model_id, fit.revision):
        raise RunLabelsError(f"calibration runs are of model {cal.model_id!r}, the fitting runs "
                             f"of {fit.model_id!r}")
    det = fit_detector(fit.rows, fit.correct, features=o["features"],
                       calibration_rows=cal.rows if cal else None,
                       calibration_labels=cal.correct if cal else None, alpha=o["alpha"],
                       delta=o["delta"], model_id=fit.model_id, revision=fit.revision,
                       seed=o["seed"])
    det.save(out)
    return det
