"""Evaluation of uncertainty scores as predictors of incorrect answers (numpy; sklearn and
matplotlib only where needed, imported lazily).

Convention everywhere: ``y_true = 1`` for an incorrect answer, scores oriented so that
higher = more uncertain.
"""

from .combine import log_features, logistic_cv, rank_mean, zscore_mean
from .metrics import (
    accuracy,
    aurc,
    auroc,
    benjamini_hochberg,
    bootstrap_auroc,
    paired_bootstrap,
    prr,
    rankdata,
    roc_curve,
    spearman,
)
from .report import evaluate, read_scores, render_markdown, write_report

__all__ = [
    "accuracy", "aurc", "auroc", "benjamini_hochberg", "bootstrap_auroc", "evaluate",
    "log_features", "logistic_cv", "paired_bootstrap", "prr", "rank_mean", "rankdata",
    "read_scores", "render_markdown", "roc_curve", "spearman", "write_report", "zscore_mean",
]
