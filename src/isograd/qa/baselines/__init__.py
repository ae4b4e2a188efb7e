"""Correctness-prediction baselines computed on the same generations as the gradient scores.

One small module per method, all behind the `Baseline` interface (``base.py``); the registry
below is the one table of names. Use ``make_baseline(name, **options)``.

| name | module | needs samples | higher is uncertain | cost (FPE) |
| --- | --- | --- | --- | --- |
| p_true | p_true.py | no (yes with brainstorm=True) | no | 1 |
| naive_entropy | entropy.py | yes | yes | K |
| semantic_entropy | semantic.py | yes | yes | K + judge |
| msp | entropy.py | no | yes | 0 |
| mean_token_entropy | entropy.py | no | yes | 1 |
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..._choice import Choice
from .base import Baseline, BaselineResult, QAContext
from .entropy import MSP, MeanTokenEntropy, NaiveEntropy
from .p_true import PTrue
from .semantic import Entailment, SemanticEntropy, SEVariant


class BaselineName(Choice):
    """The registered baselines."""

    P_TRUE = "p_true"
    """Kadavath et al.'s P(True): the model judges its own answer."""
    NAIVE_ENTROPY = "naive_entropy"
    """Length-normalised predictive entropy of K samples."""
    SEMANTIC_ENTROPY = "semantic_entropy"
    """Entropy over meanings of K samples clustered by bidirectional entailment."""
    MSP = "msp"
    """−log p of the greedy answer (maximum sequence probability)."""
    MEAN_TOKEN_ENTROPY = "mean_token_entropy"
    """Mean next-token entropy over the greedy answer's tokens."""


BASELINES: dict[str, Callable[..., Baseline]] = {
    BaselineName.P_TRUE.value: PTrue,
    BaselineName.NAIVE_ENTROPY.value: NaiveEntropy,
    BaselineName.SEMANTIC_ENTROPY.value: SemanticEntropy,
    BaselineName.MSP.value: MSP,
    BaselineName.MEAN_TOKEN_ENTROPY.value: MeanTokenEntropy,
}


def make_baseline(name: str, **options: Any) -> Baseline:
    """Build the baseline ``name`` with its options (see each class's attributes).

    Raises:
        ValueError: unknown name (the message lists the allowed ones) or unknown option.
    """
    key = name.value if isinstance(name, Choice) else name
    if key not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; allowed: {', '.join(BASELINES)}")
    try:
        return BASELINES[key](**options)
    except TypeError as e:
        raise ValueError(f"bad options for baseline {key!r}: {e}") from None


__all__ = [
    "BASELINES",
    "Baseline",
    "BaselineName",
    "BaselineResult",
    "Entailment",
    "QAContext",
    "SEVariant",
    "make_baseline",
]
