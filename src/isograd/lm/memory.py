"""How many tokens a score pass may hold at once: the memory budget, the bytes per token of a
model's forward+backward, and the batches that fit (pairs grouped by length).

The score pass keeps, per token, every layer's activations for the backward and the logits
over the vocabulary. `per_token_units` counts them as ``n_layers · hidden + vocab`` values;
`BYTES_PER_TOKEN_UNIT` is the bytes each unit cost, measured as peak resident memory on the
embedded SmolLM2 (``benchmarks/score_memory.py``, docs/performance.md).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

BYTES_PER_TOKEN_UNIT = 25.0
"""Peak bytes per token per unit of `per_token_units`, float32: measured 24.1 on SmolLM2-135M
(1.60 MB per token; 66,432 units) by ``benchmarks/score_memory.py``, rounded up."""

MEMORY_FRACTION = 0.5
"""The share of the available memory the default budget takes (the rest: the model, the
Python heap, other processes)."""


def per_token_units(model: Any) -> int:
    """``n_layers · hidden + vocab`` of the model's config (the values a token keeps)."""
    cfg = getattr(model, "config", None)

    def get(*names: str, default: int) -> int:
        for n in names:
            v = getattr(cfg, n, None)
            if isinstance(v, int) and v > 0:
                return v
        return default

    layers = get("num_hidden_layers", "n_layer", "num_layers", default=12)
    hidden = get("hidden_size", "n_embd", "d_model", default=768)
    vocab = get("vocab_size", default=32000)
    return layers * hidden + vocab


def bytes_per_token(model: Any) -> float:
    """Estimated peak bytes per token of the score pass (float32 scale; half precision halves
    the activations, not the float32 logits, so the estimate stays on the safe side)."""
    return BYTES_PER_TOKEN_UNIT * per_token_units(model)


def available_memory(device: Any = "cpu") -> int:
    """Bytes free for the pass: the GPU's free memory on CUDA, else MemAvailable (Linux)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def token_budget(model: Any, memory_budget: float | None = None, device: Any = "cpu") -> int:
    """Padded tokens (batch × longest pair) one score pass may hold.

    Args:
        model: the causal LM. device: where the pass runs.
        memory_budget: bytes the pass may use; None: `MEMORY_FRACTION` of `available_memory`.
    """
    budget = memory_budget if memory_budget is not None else (
        MEMORY_FRACTION * available_memory(device))
    return max(1, int(budget / bytes_per_token(model)))


def plan_batches(lengths: Sequence[int], batch_size: int, max_tokens: int,
                 names: Sequence[str], budget_text: str = "") -> list[list[int]]:
    """Index groups of at most `batch_size` pairs whose padded size (count × longest) fits
    `max_tokens`. Groups follow the input order while they fit; a group that does not is
    sorted by length and split, so short pairs share a pass and a long one goes alone.

    Raises:
        ValueError: a pair too large on its own (named, with the budget).
    """
    for i, n in enumerate(lengths):
        if n > max_tokens:
            raise ValueError(f"{names[i]} is {n} tokens, more than the memory budget allows in "
                             f"one pass ({max_tokens} tokens{budget_text}); raise "
                             "--memory-budget, or shorten or leave out the pair")
    out: list[list[int]] = []
    for start in range(0, len(lengths), batch_size):
        group = list(range(start, min(start + batch_size, len(lengths))))
        if len(group) * max(lengths[i] for i in group) <= max_tokens:
            out.append(group)
            continue
        cur: list[int] = []
        for i in sorted(group, key=lambda i: lengths[i]):  # ascending: i is the longest yet
            if cur and (len(cur) + 1) * lengths[i] > max_tokens:
                out.append(cur)
                cur = []
            cur.append(i)
        out.append(cur)
    return out
