"""`Question`, what every dataset parser returns, and the id helpers they share (registered
datasets, `isograd.qa.datasets`, and a user's own file, `isograd.qa.user_datasets`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Question:
    """One question with its references.

    Attributes:
        id: stable id, unique within the dataset (independent of ``limit`` and file order).
        dataset: dataset id (a key of ``DATASETS``).
        question: the question text.
        answers: correct references / aliases (MC1: the one correct option).
        incorrect: TruthfulQA incorrect references (MC1: the wrong options).
        options: MC1 options in file order (upstream lists the correct one first).
        label: MC1 index of the correct option in ``options``.
    """

    id: str
    dataset: str
    question: str
    answers: tuple[str, ...]
    incorrect: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    label: int | None = None


def question_hash(text: str) -> str:
    """10 hex digits of the question text (stripped): the stable part of an id."""
    return hashlib.sha1(text.strip().encode("utf-8")).hexdigest()[:10]


def unique_ids(prefix: str, questions: list[str]) -> list[str]:
    """Ids from the question text (so they survive reordering); repeats get ``-2``, ``-3``..."""
    seen: dict[str, int] = {}
    out = []
    for q in questions:
        base = f"{prefix}-{question_hash(q)}"
        seen[base] = seen.get(base, 0) + 1
        out.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return out


def dedupe(items: list[str]) -> tuple[str, ...]:
    """The non-empty items, first occurrence kept, in order."""
    return tuple(dict.fromkeys(s for s in items if s))
