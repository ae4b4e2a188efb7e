"""Prompts for question answering, in four measured styles (`PromptStyle`).

``short`` (the default) is one user message ::

    Answer the question in a few words, without explanation.
    Question: {question}

rendered by ``tokenizer.apply_chat_template(..., add_generation_prompt=True)`` when the
tokenizer has a chat template (the model's own default system prompt, if its template adds one,
is kept, since that is how it was tuned); without a template (base models such as GPT-2) the
same text is followed by ``\nAnswer:`` and preceded by the BOS token text when the tokenizer
adds BOS by default.

``plain`` is the question alone (``Question: {question}`` / ``\nAnswer:`` without a template);
``fewshot`` is ``short`` preceded by three worked examples (fixed general-knowledge questions
that occur in none of the datasets), as earlier chat turns with a template, as text blocks
without. The paper does not give its prompt; how the choice moves the scores is measured in
results/qa/prompts (docs/qa-data-and-evaluation.md).

``base`` is for base models, which have no chat template (Gemma 3 270M): plain text, never the
chat template, even where the tokenizer has one (so one prompt can be put to both kinds) ::

    Q: {shot question}
    A: {shot answer}

    ... (the six `BASE_EXAMPLES`) ...

    Q: {question}
    A:

The answer stops at the first newline, as every answer does (`isograd.lm.sampling.decode`),
so the model's next ``Q:`` is never part of it. The shots were chosen before any full run, on
the first 100 NQ-open dev questions with Gemma 3 270M, among seven prompts (isograd's `short`
and `fewshot`, ``Q: ... A:`` text with 3, 5, 6 or 8 shots, with and without the instruction):
most correct (7/100; the others 4-6) and no answer copying a shot's (the 5 and 8 shots with a
year or a person as an answer were copied 2 and 3 times); results/qa/prompts/base.

The returned text already contains every special token, so it must be tokenized with
``add_special_tokens=False`` (see `encode_prompt`).

Multiple choice (TruthfulQA MC1) uses the same prompt: each option is scored as the answer
to it (its log-likelihood as a continuation), TruthfulQA's own MC protocol; the model "picks"
the option with the highest summed log-likelihood.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._choice import Choice
from .batching import encode_answer, encode_prompt  # noqa: F401 - re-exported: prompts' encoders

INSTRUCTION = "Answer the question in a few words, without explanation."
# worked examples of `fewshot`: general knowledge found in none of the four datasets' questions
EXAMPLES = (
    ("How many legs does a spider have?", "Eight"),
    ("What is the chemical symbol for gold?", "Au"),
    ("In which city is the Brandenburg Gate?", "Berlin"),
)

# worked examples of `base`: six kinds of answer (number, symbol, city, colour, object,
# planet), none a person or a year: with a person and a year among eight shots, Gemma 3 270M
# answered "who"/"when" questions with them ("Herman Melville", "1989"); found in no dataset
BASE_EXAMPLES = (
    ("How many legs does a spider have?", "Eight"),
    ("What is the chemical symbol for gold?", "Au"),
    ("In which city is the Brandenburg Gate?", "Berlin"),
    ("What colour is a ripe banana?", "Yellow"),
    ("Which musical instrument has 88 keys?", "The piano"),
    ("What is the largest planet in the Solar System?", "Jupiter"),
)


class PromptStyle(Choice):
    """How a question is put to the model."""

    SHORT = "short"
    """An instruction to answer in a few words, then the question (the default)."""
    PLAIN = "plain"
    """The question alone."""
    FEWSHOT = "fewshot"
    """`short` preceded by three worked question/answer examples."""
    BASE = "base"
    """Few-shot ``Q: ... A: ...`` text for base models, never through a chat template."""

    @classmethod
    def noun(cls) -> str:
        return "prompt style"


def has_chat_template(tokenizer: Any) -> bool:
    """Does the tokenizer carry a chat template (then prompts are rendered through it)?"""
    return bool(getattr(tokenizer, "chat_template", None))


def qa_prompt(tokenizer: Any, question: str, style: str | PromptStyle = "short") -> str:
    """The QA prompt text for `question` (the module docstring gives the texts).

    Args:
        tokenizer: a Hugging Face tokenizer; its chat template is used when it has one.
        question: the question.
        style: "short" (default) | "plain" | "fewshot" | "base" (`PromptStyle`).

    Returns:
        Prompt text to tokenize with ``add_special_tokens=False``; the answer follows it directly.

    Raises:
        ValueError: unknown style (the message lists the allowed ones).
    """
    style = PromptStyle.parse(style)
    if style is PromptStyle.BASE:
        return base_prompt(tokenizer, question)
    lead = "" if style is PromptStyle.PLAIN else f"{INSTRUCTION}\n"
    shots = EXAMPLES if style is PromptStyle.FEWSHOT else ()
    turns = [(f"{lead}Question: {q}", a) for q, a in shots]
    user = f"{lead}Question: {question.strip()}"
    if has_chat_template(tokenizer):
        messages = []
        for u, a in turns:
            messages += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
        messages.append({"role": "user", "content": user})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    blocks = [f"{u}\nAnswer: {a}\n\n" for u, a in turns]
    return bos_text(tokenizer) + "".join(blocks) + user + "\nAnswer:"


def base_prompt(tokenizer: Any, question: str,
                shots: Sequence[tuple[str, str]] = BASE_EXAMPLES) -> str:
    """The `base` style's text (BOS text first when the tokenizer adds BOS by default).

    Args:
        tokenizer: a Hugging Face tokenizer (its chat template, if any, is not used).
        question: the question.
        shots: (question, answer) worked examples, in order (default `BASE_EXAMPLES`).

    Returns:
        Prompt text to tokenize with ``add_special_tokens=False``.
    """
    blocks = [f"Q: {q}\nA: {a}\n\n" for q, a in shots]
    return bos_text(tokenizer) + "".join(blocks) + f"Q: {question.strip()}\nA:"


def mc_prompt(tokenizer: Any, question: str, style: str | PromptStyle = "short") -> str:
    """The multiple-choice prompt: identical to `qa_prompt`; options are scored as answers."""
    return qa_prompt(tokenizer, question, style)


def bos_text(tokenizer: Any) -> str:
    """BOS token text if the tokenizer would add it by default (Llama-style), else ''."""
    bos = getattr(tokenizer, "bos_token", None)
    if not bos:
        return ""
    try:
        ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    except Exception:  # noqa: BLE001 - an exotic tokenizer: just do not add BOS
        return ""
    return bos if ids and ids[0] == tokenizer.bos_token_id else ""
