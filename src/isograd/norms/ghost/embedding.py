"""nn.Embedding: example b's gradient scatters its output gradients into the rows of its tokens.

``G_b = Σ_t e_{id_t} ⊗ g_t`` with one-hot rows: an `Outer` factor whose left side is an `Index`,
so repeated tokens (their rows add up) and ties with an output head are exact without ever
forming a V×d matrix. Positions holding `padding_idx` get no gradient, as in autograd.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .factors import Factor, Index, Outer


def refuse(module: nn.Module) -> str | None:
    """Why this embedding has no exact per-example rule, or None."""
    if module.scale_grad_by_freq:
        return "scale_grad_by_freq couples the examples of a batch (frequencies are per batch)"
    return None


def embedding_factors(
    module: nn.Module, ids: Tensor, grads: Sequence[Tensor | None] | None, attrs: Sequence[str]
) -> dict[str, Factor]:
    """weight [V, d] = Σ_t onehot(id_t) ⊗ g_t."""
    if "weight" not in attrs:
        return {}
    if ids.dim() < 1:
        raise ValueError("ghost needs a batch dimension first; nn.Embedding got a scalar id")
    ids = ids.reshape(ids.shape[0], -1)
    if module.padding_idx is not None:
        ids = torch.where(ids == module.padding_idx, torch.full_like(ids, -1), ids)
    g = None if grads is None else grads[0]
    right = None if g is None else g.reshape(g.shape[0], ids.shape[1], -1)
    return {"weight": Outer(Index(ids, module.num_embeddings), right, grad="right")}
