"""Greedy answers: the model's own single-line answer to a prompt.

`greedy_answer` is ``sample_answers(..., k=1, temperature=0)``, so greedy and sampled answers
follow exactly the same decoding rules (`isograd.lm.sampling`): no processor from the model's
``generation_config``; stop *before* an end-of-sequence token or a token whose text contains a
newline, or after ``max_new_tokens``; the stop token is not part of the answer; text stripped.
"""

from __future__ import annotations

from typing import Any

from .sampling import Sample, sample_answers


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
    return sample_answers(
        model, tokenizer, prompt, k=1, temperature=0.0, max_new_tokens=max_new_tokens, seed=0
    )[0]
