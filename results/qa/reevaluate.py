"""Regenerate the reports of every committed QA run through the evaluate stage only: no model
is loaded and no stage row is recomputed (metrics.json, report.md, answers.md and the figures).

Usage: .venv/bin/python results/qa/reevaluate.py   (then results/qa/summarize.py --readme for
the README table). A staged run folder is evaluated in place (`isograd.qa.evaluation.evaluate_run`
over its stage files); a run of the earlier single-file format is converted in a temporary copy
(`isograd.qa.legacy.convert_run`, as tests/evaluate/test_committed_runs.py does) and its report
files are copied back, so the folder keeps its format.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from isograd.qa.evaluation import evaluate_run, recorded_prediction
from isograd.qa.legacy import convert_run, is_legacy
from isograd.rows.files import read_rows

HERE = Path(__file__).parent
REPORTS = ("metrics.json", "report.md", "answers.md", "roc.png", "risk_coverage.png",
           "token_profile.png", "reliability.png")


def reevaluate(run: Path) -> None:
    """Rewrite `run`'s reports from its rows."""
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    if is_legacy(run):
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            for f in ("scores.jsonl", "config.json", "metrics.json"):
                shutil.copy(run / f, t / f)
            convert_run(t)
            for f in REPORTS:
                if (t / f).exists():
                    shutil.copy(t / f, run / f)
        return
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    evaluate_run(run, config, [r["id"] for r in read_rows(run / "scores.jsonl")],
                 score_prediction=recorded_prediction(run, config),
                 command=metrics.get("command"))


def main() -> None:
    for m in sorted(HERE.glob("**/metrics.json")):
        print(f"evaluating {m.parent.relative_to(HERE)}", flush=True)
        reevaluate(m.parent)


if __name__ == "__main__":
    main()
