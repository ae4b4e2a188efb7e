"""Evaluation of uncertainty scores as predictors of incorrect answers (numpy; sklearn and
matplotlib only where needed, imported lazily).

Convention everywhere: ``y_true = 1`` for an incorrect answer, scores oriented so that
higher = more uncertain. Layout: ``metrics``, ``calibration`` and ``combine`` (numbers), ``table`` (rows -> the
metrics table, pure), ``paper`` (the paper's numbers and the reports' names of scores),
``render`` (markdown, plots), ``report`` (files).
"""

from .calibration import brier, ece, log_loss, plot_reliability, reliability
from .combine import log_features, logistic_cv, rank_mean, zscore_mean
from .metrics import (
    PairedDifference,
    accuracy,
    aurc,
    auroc,
    benjamini_hochberg,
    bootstrap_auroc,
    paired_bootstrap,
    paired_difference,
    prr,
    rankdata,
    roc_curve,
    spearman,
)
from .paper import PAPER_COLUMN, PAPER_TABLE2, method_label, paper_order
from .render import plot_roc, predictions_markdown, render_markdown, render_report
from .report import read_scores, write_report
from .table import alternative_metrics, evaluate, score_columns

__all__ = [
    "PAPER_COLUMN", "PAPER_TABLE2", "accuracy", "alternative_metrics", "aurc", "auroc",
    "benjamini_hochberg", "bootstrap_auroc", "brier", "ece", "log_loss", "plot_reliability",
    "reliability", "evaluate", "log_features", "logistic_cv",
    "method_label", "PairedDifference", "paired_bootstrap", "paired_difference", "paper_order", "plot_roc", "predictions_markdown", "prr",
    "rank_mean", "rankdata", "read_scores", "render_markdown", "render_report", "roc_curve", "score_columns",
    "spearman", "write_report", "zscore_mean",
]
