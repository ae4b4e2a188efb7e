"""P(True): the model judges its own answer (Kadavath et al. 2022, "Language Models (Mostly)
Know What They Know", §3).

The same model reads the question and its greedy answer and is asked whether the answer is
true. Zero-shot by default; the prompt (Kadavath's format) is ::

    Question: {question}
    Proposed Answer: {answer}
    Is the proposed answer:
     (A) True
     (B) False
    The proposed answer is:

With a chat template, everything up to "(B) False" is the user message and the reply is
prefilled with "The proposed answer is:". The score is P(True) = p(" (A") / (p(" (A") + p(" (B")),
the next-token probabilities of the two options' decision tokens, renormalised over the two
(Kadavath read p("(A)") alone; renormalising removes the mass on other tokens, which a small
model spreads widely). One forward pass. ``higher_is_uncertain = False``.

Options: ``brainstorm=True`` inserts the K sampled answers as "brainstormed ideas" before the
proposed answer (Kadavath §3.3, who found it helps); ``shots`` adds few-shot examples
(question, answer, is_true) in the same format, with their verdict, before the target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ._lm import option_probs, render
from .base import BaselineResult, QAContext, get_samples, question_text

OPTIONS = (" (A", " (B")
VERDICT = "The proposed answer is:"


def _block(question: str, answer: str, ideas: Sequence[str] = ()) -> str:
    lines = [f"Question: {question.strip()}"]
    if ideas:
        lines.append("Here are some brainstormed ideas:")
        lines.extend(i.strip() or "(empty)" for i in ideas)
    lines += [f"Proposed Answer: {answer.strip()}", "Is the proposed answer:",
              " (A) True", " (B) False"]
    return "\n".join(lines)


def p_true_prompt(
    tokenizer: Any,
    question: str,
    answer: str,
    *,
    ideas: Sequence[str] = (),
    shots: Sequence[tuple[str, str, bool]] = (),
) -> str:
    """The P(True) prompt text, ending with "The proposed answer is:" (module docstring)."""
    parts = [f"{_block(q, a)}\n{VERDICT} {'(A) True' if ok else '(B) False'}"
             for q, a, ok in shots]
    parts.append(_block(question, answer, ideas))
    return render(tokenizer, "\n\n".join(parts), VERDICT)


@dataclass(frozen=True)
class PTrue:
    """P(True) self-evaluation of the greedy answer (module docstring).

    Attributes:
        brainstorm: show the K samples as brainstormed ideas (then needs samples).
        shots: few-shot examples (question, answer, is_true).
        k, temperature, max_new_tokens, seed: sampling options when brainstorming without
            ``ctx.samples``.
    """

    brainstorm: bool = False
    shots: tuple[tuple[str, str, bool], ...] = ()
    k: int = 10
    temperature: float = 1.0
    max_new_tokens: int = 32
    seed: int = 0

    name: ClassVar[str] = "p_true"
    label: ClassVar[str] = "P(True)"
    higher_is_uncertain: ClassVar[bool] = False

    @property
    def needs_samples(self) -> bool:  # type: ignore[override]
        return self.brainstorm

    def __call__(self, model: Any, tokenizer: Any, ctx: QAContext) -> BaselineResult:
        cost = 1.0
        ideas: Sequence[str] = ()
        if self.brainstorm:
            samples, c = get_samples(model, tokenizer, ctx, k=self.k, temperature=self.temperature,
                                     max_new_tokens=self.max_new_tokens, seed=self.seed)
            ideas, cost = [s.text for s in samples], cost + c
        prompt = p_true_prompt(tokenizer, question_text(ctx.question), ctx.answer.text,
                               ideas=ideas, shots=self.shots)
        probs = option_probs(model, tokenizer, [prompt], OPTIONS)
        return BaselineResult(value=float(probs[0, 0]), forward_passes=cost)
