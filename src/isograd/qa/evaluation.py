"""The evaluate stage of ``isograd qa``: join the stage rows of a run, compute the metrics
(`isograd.evaluate`, given each method's orientation and label), write the reports.

It only reads the stage files, never writes into one: metrics are recomputed offline from them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..rows.files import rewrite_rows
from ..rows.stagefiles import RunMismatchError, rows_by_id
from .options import QAConfig
from .stages import headline, join_row


def method_labels() -> dict[str, str]:
    """How reports name each baseline (its class's ``label``), for `isograd.evaluate`."""
    from .baselines import BASELINES

    return {name: cls.label for name, cls in BASELINES.items()}


def run_methods(rows: Sequence[dict[str, Any]], config: dict[str, Any]) -> dict[str, bool]:
    """Method name -> higher_is_uncertain of a run: the paper's two terms, the other signals of
    the same pass that the rows hold (`isograd.evaluate.paper.SIGNALS`: runs made before them
    lack them), then the run's baselines."""
    from ..evaluate.paper import SIGNALS
    from .baselines import BASELINES

    methods = {"epistemic": True, "aleatoric": True}
    methods.update({m: True for m in SIGNALS if any(r.get(m) is not None for r in rows)})
    methods.update({m: BASELINES[m].higher_is_uncertain for m in config["methods"]})
    return methods


def run_metrics(rows: Sequence[dict[str, Any]], config: dict[str, Any], *,
                command: str | None = None) -> dict[str, Any]:
    """The metrics table of a run's rows under its `config` (a ``QAConfig.to_json()`` dict,
    recorded as given): the gradient terms, each baseline in ``config["methods"]``, their
    combinations and the AUROC under each definition of p. Pure: reads and writes nothing."""
    from ..evaluate import alternative_metrics, evaluate
    from ..lm.score import Prediction

    seed = config.get("seed", 0)
    methods = run_methods(rows, config)
    graders = sorted({str(r["grade_method"]) for r in rows if r.get("grade_method")})
    extra = {"config": dict(config),
             "predictions": alternative_metrics(rows, config["prediction"],
                                                [p.value for p in Prediction], seed=seed),
             "grading": f"grader {', '.join(graders)}" if graders else None}
    return evaluate(rows, methods, seed=seed, model=config.get("model"),
                    dataset=config.get("dataset"), command=command, extra=extra,
                    labels=method_labels())


def evaluate_run(out: Path, config: dict[str, Any], ids: Sequence[str], *,
                 score_prediction: str, command: str | None = None) -> dict[str, Any]:
    """The evaluate stage: join the stage rows of `ids`, compute the metrics, write
    metrics.json, report.md, roc.png, config.json and the joined view scores.jsonl."""
    from ..evaluate import score_columns, write_report

    base = [f"baseline-{m}" for m in config["methods"]]
    stages = ["generate", "grade", "score", *(["trace"] if config.get("trace") else []), *base]
    parts = {s: rows_by_id(out, s) for s in stages}
    samples = rows_by_id(out, "samples")
    cfg = QAConfig.from_json(config)
    covers = {s: set(ids[:cfg.subset_of(s)]) for s in stages}  # `run_qa`'s ``subset``
    rows = []
    for qid in ids:
        need = [s for s in stages if qid in covers[s]]
        lack = [s for s in need if qid not in parts[s]]
        if lack:
            raise RunMismatchError(f"{out}: question {qid} lacks {', '.join(lack)} rows; run "
                                   "those stages first (--stage all does)")
        row = join_row(parts["generate"][qid], parts["grade"][qid], parts["score"][qid],
                         samples.get(qid), [parts[b][qid] for b in base if qid in parts[b]],
                         trace=parts["trace"].get(qid) if "trace" in parts else None)
        rows.append(headline(row, score_prediction, config["prediction"]))
    metrics = run_metrics(rows, config, command=command)
    _, cols, _, _ = score_columns(rows, run_methods(rows, config), seed=config.get("seed", 0))
    view = [{**r, "combined": float(c)} for r, c in zip(rows, cols["combined"])]
    rewrite_rows(out / "scores.jsonl", view)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    write_report(out, metrics, rows, labels=method_labels())
    return metrics


def print_table(metrics: dict[str, Any]) -> None:
    """Print the report's AUROC table (as report.md renders it)."""
    from ..evaluate import render_markdown

    print(render_markdown(metrics, labels=method_labels()))
