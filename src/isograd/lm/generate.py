"""Greedy answers: the model's own single-line answer to a prompt, alone or in batches.

`greedy_answer` and `greedy_answers` decode with ``temperature=0`` through the same loop as
`sample_answers` (`isograd.lm.sampling.decode`), so greedy and sampled answers follow exactly
the same rules: no processor from the model's ``generation_config``; stop *before* an
end-of-sequence token or a token whose text contains a newline, or after ``max_new_tokens``;
the stop token is not part of the answer; text stripped.

`greedy_answers` left-pads ``batch_size`` prompts into one batch (attention mask and position
ids count real tokens only), and each row stops at its own stop token: every answer has the
token ids of `greedy_answer` on that prompt alone, and log-probabilities equal up to float
rounding (tested within 1e-5 in fp32).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .batching import encode_prompt
from .sampling import Sample, decode


def greedy_answer(model: Any, tokenizer: Any, prompt: str, *, max_new_tokens: int = 32) -> Sample:
    """The greedy (argmax) one-line answer to `prompt`, with its token log-probabilities.

    Args:
        model: a causal LM.
        tokenizer: its tokenizer.
        prompt: full prompt text (e.g. `qa_prompt`), tokenized without added special tokens.
        max_new_tokens: cap on answer tokens.

    Returns:
        A `Sample` (text stripped; token_ids and token_logprobs exclude the stop token; an
        answer that stops at once has no tokens and text "").
    """
    return greedy_answers(model, tokenizer, [prompt], max_new_tokens=max_new_tokens)[0]


def greedy_answers(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 32,
    batch_size: int = 8,
) -> list[Sample]:
    """Greedy one-line answers to many prompts, ``batch_size`` at a time (left padding).

    Args:
        model: a causal LM; left in its train/eval mode.
        tokenizer: its tokenizer.
        prompts: N prompt texts, tokenized without added special tokens.
        max_new_tokens: cap on answer tokens.
        batch_size: prompts decoded together.

    Returns:
        N `Sample`s in prompt order, each as `greedy_answer` would give it.

    Raises:
        ValueError: batch_size or max_new_tokens < 1, or a prompt without tokens (names it).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ids = [encode_prompt(tokenizer, p) for p in prompts]
    for i, x in enumerate(ids):
        if not x:
            raise ValueError(f"prompt {i} tokenizes to no token; give a non-empty prompt")
    out: list[Sample] = []
    for start in range(0, len(ids), batch_size):
        out += decode(model, tokenizer, ids[start:start + batch_size], temperature=0.0,
                      max_new_tokens=max_new_tokens)
    return out
