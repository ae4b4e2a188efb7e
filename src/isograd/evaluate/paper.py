"""The one table of reported scores: the paper's numbers and the name each score gets in reports.

Baselines name themselves (each class's ``label``, ``isograd.qa.baselines``): their labels are
passed in by the caller (``labels=``), so this package imports neither qa nor torch; the scores
of this package (the two terms and their combinations) are named here. The paper's Table 2 is the only
copy of its numbers in the package: reports, plots and ``results/qa`` scripts read it from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# Grünefeld, Frellsen & Hardmeier 2026 (arXiv 2603.29466), Table 2: AUROC mean ± std over 300
# bootstrap resamples, averaged over 4 LLMs (two Llama models, OLMo, Phi-4). Row order = the
# paper's, which reports follow.
PAPER_TABLE2: dict[str, dict[str, tuple[float, float]]] = {
    "p_true": {"TriviaQA": (0.69, 0.06), "TruthfulQA": (0.55, 0.06)},
    "semantic_entropy": {"TriviaQA": (0.55, 0.03), "TruthfulQA": (0.54, 0.08)},
    "naive_entropy": {"TriviaQA": (0.52, 0.04), "TruthfulQA": (0.51, 0.08)},
    "aleatoric": {"TriviaQA": (0.60, 0.04), "TruthfulQA": (0.60, 0.09)},
    "epistemic": {"TriviaQA": (0.52, 0.07), "TruthfulQA": (0.55, 0.07)},
    "combined": {"TriviaQA": (0.61, 0.05), "TruthfulQA": (0.63, 0.08)},
}
# our dataset id -> the paper's column
PAPER_COLUMN = {"triviaqa": "TriviaQA", "triviaqa-150": "TriviaQA", "truthfulqa-gen": "TruthfulQA",
                "truthfulqa-mc1": "TruthfulQA"}
PAPER_SOURCE = ("Grünefeld, Frellsen & Hardmeier 2026 (arXiv 2603.29466), Table 2, {col}: AUROC "
                "mean ± std over 300 bootstrap resamples, averaged over four LLMs (two Llama "
                "models, OLMo, Phi-4); not the model of this run.")

# the scores this package computes itself (the baselines carry their own labels)
SCORE_LABELS = {
    "aleatoric": "aleatoric p(1−p)",
    "epistemic": "epistemic ‖g‖²",
    "combined": "epistemic & aleatoric combined (rank mean)",
    "combined_logreg_cv": "epistemic & aleatoric, logistic regression (CV, supervised)",
    "grad_log_p": "‖∇ log p‖² (no p² factor)",
    "epistemic_layer_scaled": "epistemic, layer-scaled covariance",
    "epistemic_last_layers": "epistemic, last blocks only",
    "embedding_grad": "‖∂ log p / ∂ input embeddings‖²",
    "epistemic_token_max": "per-token epistemic, max over tokens",
    "epistemic_token_mean": "per-token epistemic, mean over tokens",
}
# the other signals of the same pass as epistemic (isograd.lm.score): added methods under their
# own names beside the paper's, never in place of one; higher = more uncertain for all
PASS_SIGNALS = ("grad_log_p", "epistemic_layer_scaled", "epistemic_last_layers", "embedding_grad")
"""The signals computed by the very pass of ``epistemic`` (they cost what it costs)."""
SIGNALS = (*PASS_SIGNALS, "epistemic_token_max", "epistemic_token_mean")


def method_label(name: str, labels: Mapping[str, str] | None = None) -> str:
    """How reports name score ``name``: ours from `SCORE_LABELS`, another (a baseline) from
    `labels` (the caller's names, e.g. each baseline class's ``label``); else as it is."""
    if name in SCORE_LABELS:
        return SCORE_LABELS[name]
    return (labels or {}).get(name, name)


def paper_order(names: Iterable[str], *, all_paper: bool = False) -> list[str]:
    """The paper's Table 2 order first (all its rows when ``all_paper``), then the others."""
    names = list(names)
    paper = [m for m in PAPER_TABLE2 if all_paper or m in names]
    return paper + [m for m in names if m not in PAPER_TABLE2]
