"""Fixtures shared by the LM and QA tests: the char-level tokenizer and tiny GPT-2 / Llama models."""

from __future__ import annotations

import pytest

from tests.lm.tiny_lm import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    """The tiny chat tokenizer."""
    return tiny_tokenizer()


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def model(request):
    """A tiny float64 Llama, then a tiny GPT-2 (tied embeddings)."""
    return tiny_model(request.param)
