"""Finished ``isograd qa`` run folders as a detector's labelled rows: `run_rows`.

A finished run folder holds the joined rows its evaluate step wrote (``scores.jsonl``: every
stage's fields per question, ``correct`` from the grade stage) and the run's options
(``config.json``: the ``model`` and, when recorded, its ``revision``). `run_rows` reads them
for `isograd.detect.fit_detector`; it never reads the stage files or runs a model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..detect import DetectorError
from ..evaluate.report import read_scores

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
