"""Causal language models: loading, prompts, answer probability, generation, scoring."""

from .models import DEFAULT_MODEL, load_model

__all__ = ["DEFAULT_MODEL", "load_model"]
