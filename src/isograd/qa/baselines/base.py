"""The baseline interface: what a method receives (`QAContext`), returns (`BaselineResult`), is.

Every baseline is a small frozen dataclass of its options with three class attributes and one
call (see `Baseline`). The registry of names lives in ``isograd.qa.baselines`` (``__init__``).

Cost unit, ``forward_passes`` (forward-pass equivalents, FPE): one forward pass of the language
model over one sequence of about prompt + answer length. Counted per sequence, not per token:
- generating K answers with a KV cache processes each token once, so it costs K;
- one forward over a batch of N sequences costs N (the P(True) prompt, an entailment query);
- the greedy answer, shared by every method (the gradient scores included), is not counted;
- a sampling method counts the K samples even when they were reused from ``ctx.samples``:
  the number is what running that method alone would cost.
A backward pass is not used by any baseline (the gradient scores count it as 2 FPE).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ...lm.sampling import Sample, sample_answers


@dataclass(frozen=True)
class QAContext:
    """Everything a baseline may use about one question.

    Attributes:
        question: the question (an ``isograd.qa.datasets.Question``; only ``.question``, the
            text, is read by the baselines).
        prompt: the QA prompt the answers continue (chat template applied), tokenized with
            ``add_special_tokens=False``.
        answer: the greedy answer, with token ids and untempered log-probabilities.
        samples: K sampled answers to the same prompt (``sample_answers``), or None: then a
            sampling method draws its own with its options.
    """

    question: Any
    prompt: str
    answer: Sample
    samples: tuple[Sample, ...] | None = None


@dataclass(frozen=True)
class BaselineResult:
    """One baseline's score of one answer.

    Attributes:
        value: the raw score (its orientation is the method's ``higher_is_uncertain``).
        forward_passes: its cost in forward-pass equivalents (module docstring).
    """

    value: float
    forward_passes: float


@runtime_checkable
class Baseline(Protocol):
    """A correctness-prediction baseline.

    Attributes:
        name: registry name.
        label: how reports name it (metrics.json, report.md, plots).
        needs_samples: uses K sampled answers (the pipeline then passes ``ctx.samples``).
        higher_is_uncertain: True when a higher value means a more likely wrong answer.
    """

    name: str
    label: str
    needs_samples: bool
    higher_is_uncertain: bool

    def __call__(self, model: Any, tokenizer: Any, ctx: QAContext) -> BaselineResult:
        """Score ``ctx.answer`` (and/or ``ctx.samples``) with ``model``."""
        ...


def question_text(question: Any) -> str:
    """The question's text: ``question.question``, or the object itself when it is a str."""
    return question if isinstance(question, str) else str(question.question)


def get_samples(
    model: Any,
    tokenizer: Any,
    ctx: QAContext,
    *,
    k: int,
    temperature: float,
    max_new_tokens: int,
    seed: int,
) -> tuple[Sequence[Sample], float]:
    """The samples to use and their cost: ``ctx.samples`` when given, else K fresh ones.

    Returns:
        (samples, forward_passes) with forward_passes = number of samples.
    """
    if ctx.samples is not None:
        if len(ctx.samples) == 0:
            raise ValueError("ctx.samples is empty; pass None to let the method sample")
        return ctx.samples, float(len(ctx.samples))
    samples = sample_answers(model, tokenizer, ctx.prompt, k=k, temperature=temperature,
                             max_new_tokens=max_new_tokens, seed=seed)
    return samples, float(k)
