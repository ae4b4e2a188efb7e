"""The committed QA runs regenerate identically through the current code (no model): converted
from their single-file format into stage files and evaluated, they give byte-identical
metrics.json and report.md."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from isograd.qa.legacy import convert_run

pytest.importorskip("sklearn")
RUNS = Path(__file__).parents[2] / "results" / "qa"


@pytest.mark.parametrize("name", ["truthfulqa-mc1", "triviaqa-150"])
def test_committed_run_regenerates(name, tmp_path):
    run = RUNS / name
    for f in ("scores.jsonl", "config.json", "metrics.json"):
        shutil.copy(run / f, tmp_path / f)
    convert_run(tmp_path)
    for f in ("metrics.json", "report.md", "config.json"):
        assert (tmp_path / f).read_bytes() == (run / f).read_bytes(), f
    assert (tmp_path / "generate.jsonl").exists() and (tmp_path / "roc.png").exists()
