"""nn.Embedding: example b's gradient scatters its output gradients into the rows of its tokens.

``G_b = Σ_t e_{id_t} ⊗ g_t`` with one-hot rows: an `Outer` factor whose left side is an `Index`,
so repeated tokens (their rows add up) and ties with an output head are exact without ever
forming a V×d matrix. Positions holding `padding_idx` get no gradient, as in autograd.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .._common import GhostUnsupported
from .factors import Factor, Index, Outer
from .layout import require_batch_dim


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
    require_batch_dim(module, ids, 1)
    ids = ids.reshape(ids.shape[0], -1)
    if module.padding_idx is not None:
        ids = torch.where(ids == module.padding_idx, torch.full_like(ids, -1), ids)
    g = None if grads is None else grads[0]
    right = None if g is None else g.reshape(g.shape[0], ids.shape[1], -1)
    return {"weight": Outer(Index(ids, module.num_embeddings), right, grad="right")}


def scaled_matches(module: nn.Module) -> bool:
    """transformers' ``*ScaledWordEmbedding`` (Gemma's): ``embedding(ids) * embed_scale``."""
    return (
        isinstance(module, nn.Embedding)
        and type(module).__module__.startswith("transformers.")
        and type(module).__name__.endswith("ScaledWordEmbedding")
        and hasattr(module, "embed_scale")
    )


def capture_scaled(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
    """The token ids and the output (references)."""
    return (args[0] if args else kwargs["input_ids"]), output


def scaled_factors(
    module: nn.Module, ctx: Any, grads: Sequence[Tensor | None] | None, attrs: Sequence[str]
) -> dict[str, Factor]:
    """weight [V, d] = Σ_t onehot(id_t) ⊗ (s·g_t), checked: the output is exactly s·E[ids]."""
    ids, y = ctx
    if grads is None or grads[0] is None:
        return embedding_factors(module, ids, grads, attrs)
    scale = module.embed_scale
    scale = scale.to(module.weight.dtype) if isinstance(scale, Tensor) else scale
    again = F.embedding(ids, module.weight, module.padding_idx) * scale
    if not (isinstance(y, Tensor) and again.shape == y.shape and torch.equal(again, y)):
        raise GhostUnsupported(
            f"{type(module).__name__}'s output is not embedding(ids) * embed_scale; no exact rule"
        )
    return embedding_factors(module, ids, [grads[0] * scale], attrs)


def derived_matches(module: nn.Module) -> bool:
    """An nn.Embedding subclass with its own forward that derives the ids from its arguments
    (OPT's learned positions: ids from the attention mask, plus an offset)."""
    return (
        isinstance(module, nn.Embedding)
        and type(module).forward is not nn.Embedding.forward
        and not scaled_matches(module)
    )


def capture_derived(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
    """The call's arguments and output (references)."""
    return args, kwargs, output


def _looked_up_ids(module: nn.Module, ctx: Any) -> Tensor:
    """The ids the forward looked up: rerun it with row i of the table holding the number i,
    then check that looking those ids up in the real table gives the recorded output exactly."""
    args, kwargs, y = ctx
    w = module.weight
    table = torch.arange(w.shape[0], dtype=torch.float64, device=w.device)[:, None]
    with torch.no_grad():
        rows = functional_call(module, {"weight": table.expand(w.shape)}, args, kwargs)
    label = type(module).__name__
    if not isinstance(rows, Tensor) or not isinstance(y, Tensor) or rows.shape != y.shape:
        raise GhostUnsupported(f"{label}: its forward is not a table lookup; no exact rule")
    ids = rows[..., 0].round().long()
    again = F.embedding(ids, w.detach(), module.padding_idx)
    if not torch.equal(again, y.detach()):
        raise GhostUnsupported(f"{label}: its output is not rows of its table; no exact rule")
    return ids


def derived_factors(
    module: nn.Module, ctx: Any, grads: Sequence[Tensor | None] | None, attrs: Sequence[str]
) -> dict[str, Factor]:
    """weight [V, d] = Σ_t onehot(id_t) ⊗ g_t, with the ids the forward derived (checked)."""
    return embedding_factors(module, _looked_up_ids(module, ctx), grads, attrs)
