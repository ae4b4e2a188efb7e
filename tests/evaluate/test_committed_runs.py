"""The committed QA runs regenerate identically through the current evaluation code (no model):
same metrics.json, same report.md, from their scores.jsonl and config.json alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from isograd.evaluate import read_scores, render_report
from isograd.qa.pipeline import run_metrics

pytest.importorskip("sklearn")
RUNS = Path(__file__).parents[2] / "results" / "qa"


@pytest.mark.parametrize("name", ["truthfulqa-mc1", "triviaqa"])
def test_committed_run_regenerates(name):
    run = RUNS / name
    old = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    rows = [{k: v for k, v in r.items() if k != "combined"} for r in read_scores(run / "scores.jsonl")]
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    metrics = run_metrics(rows, config, command=old["command"])
    assert json.loads(json.dumps(metrics, allow_nan=True, default=float)) == old
    assert render_report(metrics) == (run / "report.md").read_text(encoding="utf-8")
