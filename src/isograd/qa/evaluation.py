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
from ..rows.stagefiles import RunMismatchError, read_config, rows_by_id
from .options import QAConfig
from .stages import headline, join_row


def method_labels() -> dict[str, str]:
    """How reports name each baseline (its class's ``label``), for `isograd.evaluate`."""
    from .baselines import BASELINES

    return {**{name: cls.label for name, cls in BASELINES.items()}, "p_error": DETECTOR_LABEL}


DETECTOR_LABEL = "detector P(wrong)"
"""How reports name a detector's ``p_error`` (``isograd qa --detector``)."""


def run_methods(rows: Sequence[dict[str, Any]], config: dict[str, Any]) -> dict[str, bool]:
    """Method name -> higher_is_uncertain of a run: the paper's two terms, the other signals of
    the same pass that the rows hold (`isograd.evaluate.paper.SIGNALS`: runs made before them
    lack them), then the run's baselines."""
    from ..evaluate.paper import SIGNALS
    from .baselines import BASELINES

    methods = {"epistemic": True, "aleatoric": True}
    methods.update({m: True for m in SIGNALS if any(r.get(m) is not None for r in rows)})
    methods.update({m: BASELINES[m].higher_is_uncertain for m in config["methods"]})
    if any(r.get("p_error") is not None for r in rows):  # applied by ``--detector``
        methods["p_error"] = True
    return methods


def detector_metrics(rows: Sequence[dict[str, Any]], detector: Any) -> dict[str, Any]:
    """The detector section of metrics.json: its file's threshold, α, δ and features; on these
    rows its Brier, log-loss and ECE, the share answered (coverage) and the error among the
    answered (None when it answers none)."""
    import numpy as np

    from ..evaluate.calibration import calibration_summary, reliability

    wrong = np.array([0 if r["correct"] else 1 for r in rows])
    pe = np.array([r["p_error"] for r in rows], dtype=np.float64)
    answered = ~np.array([r["abstain"] for r in rows], dtype=bool)
    t, rel = detector.threshold, reliability(wrong, pe)
    return {
        "threshold": t.threshold, "alpha": t.alpha, "delta": t.delta,
        "n_calibration": t.n_calibration, "features": detector.feature_names,
        "model_id": detector.model_id, "fingerprint": detector.fingerprint, "n": len(rows),
        "coverage": float(answered.mean()),
        "error_answered": float(wrong[answered].mean()) if answered.any() else None,
        **calibration_summary(wrong, pe),
        "reliability": {"mean_prob": rel.mean_prob.tolist(), "error_rate": rel.error_rate.tolist(),
                        "count": rel.count.tolist()},
    }


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
                 score_prediction: str, command: str | None = None,
                 detector: Any = None) -> dict[str, Any]:
    """The evaluate stage: join the stage rows of `ids`, compute the metrics, write
    metrics.json, report.md, roc.png, config.json and the joined view scores.jsonl.

    With `detector` (an `isograd.detect.Detector`), every row gets its ``p_error`` and
    ``abstain``, the detector is a method of the table and metrics.json has its section
    (`detector_metrics`); a row lacking one of its features stops before any file is written.
    """
    from ..evaluate import score_columns, write_report

    rows = join_rows(out, config, ids, score_prediction=score_prediction)
    if detector is not None:
        rows = detector.annotate(rows)
    metrics = run_metrics(rows, config, command=command)
    if detector is not None:
        metrics["detector"] = detector_metrics(rows, detector)
    _, cols, _, _ = score_columns(rows, run_methods(rows, config), seed=config.get("seed", 0))
    view = [{**r, "combined": float(c)} for r, c in zip(rows, cols["combined"])]
    rewrite_rows(out / "scores.jsonl", view)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    write_report(out, metrics, rows, labels=method_labels())
    return metrics


def recorded_prediction(out: Path, config: dict[str, Any]) -> str:
    """The definition of p the run's score rows hold as their headline (its score stage's)."""
    score = read_config(out, "score")
    return score.options["prediction"] if score else config["prediction"]


def join_rows(out: Path, config: dict[str, Any], ids: Sequence[str], *,
              score_prediction: str) -> list[dict[str, Any]]:
    """The one join of a run's stage rows: one row per id of `ids` (every stage's fields, the
    headline p under ``config["prediction"]``); only reads.

    Raises:
        RunMismatchError: a question lacks the rows of a stage that covers it.
    """
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
    return rows


def print_table(metrics: dict[str, Any]) -> None:
    """Print the report's AUROC table (as report.md renders it)."""
    from ..evaluate import render_markdown

    print(render_markdown(metrics, labels=method_labels()))
