"""Scores derived from the per-parameter norms of the same backward as `score`: no extra pass.

`score` always asks the norm engine for ‖∇_j log p‖² per parameter tensor j. From those
numbers alone follow the isotropic epistemic term, its by-block breakdown, the last-k-blocks
term and the layer-scaled term; the input-embedding gradient is read by a tensor hook during
that same backward (`capture_embedding_grad`). Nothing here runs the model.
"""

from __future__ import annotations

import contextlib
import re
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

LAST_LAYERS = 5
"""Default k of `epistemic_last_layers`. Chosen before looking at any isograd result: Grad Detect
(arXiv 2606.24790) reports that the final five layers hold over 97% of the discriminative
gradient signal, in ablations over eleven models from four architecture families."""

_BLOCK = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer|decoder_layers)\.(\d+)\.")
_EMBED = re.compile(r"(embed|wte|wpe|word_embeddings|position_embeddings)")
_PREFIX = re.compile(r"^(model|transformer|gpt_neox|base_model)\.")


def layer_group(name: str) -> str:
    """Group of a parameter name: ``block.<i>`` for transformer block i, ``embed`` for
    embeddings, else the name without its model prefix and ``.weight``/``.bias`` suffix."""
    m = _BLOCK.search(name)
    if m:
        return f"block.{int(m.group(1))}"
    if _EMBED.search(name):
        return "embed"
    base = _PREFIX.sub("", name)
    return re.sub(r"\.(weight|bias)$", "", base)


def group_norms(per_param: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sum per-parameter norms ``name -> [B]`` into groups ``layer_group(name) -> [B]``."""
    out: dict[str, torch.Tensor] = {}
    for name, v in per_param.items():
        g = layer_group(name)
        out[g] = out[g] + v if g in out else v.clone()
    return out


def n_blocks(model: nn.Module) -> int:
    """Number of transformer blocks, from the model's parameter names (0 when none match)."""
    idx = [int(m.group(1)) for n, _ in model.named_parameters(remove_duplicate=False)
           if (m := _BLOCK.search(n))]
    return max(idx) + 1 if idx else 0


def last_blocks(model: nn.Module, k: int) -> list[str]:
    """Group names ``block.<i>`` of the model's last `k` blocks (all of them when k >= count).

    Raises:
        ValueError: k < 1, or the model has no recognisable blocks.
    """
    if k < 1:
        raise ValueError(f"last_layers must be >= 1, got {k}")
    n = n_blocks(model)
    if n == 0:
        raise ValueError("last_layers: no transformer blocks found among the parameter names "
                         "(expected e.g. 'model.layers.<i>.' or 'transformer.h.<i>.')")
    return [f"block.{i}" for i in range(max(0, n - k), n)]


_SCALES: weakref.WeakKeyDictionary[nn.Module, tuple[Any, dict[str, float]]] = (
    weakref.WeakKeyDictionary())


def model_layer_variances(model: nn.Module, names: Sequence[str], rule: str) -> dict[str, float]:
    """`isograd.layer_scale.layer_variances` of `model` over the parameters `names`, cached.

    The weight-variance rule reads every weight (about a second for a 135M model), and QA runs
    score one question per call; the cache holds the last result per model and is used only
    while the same tensors are unchanged (same storage and in-place version counters).
    """
    from ..layer_scale import layer_variances

    named = dict(model.named_parameters())
    key = (rule, tuple(names),
           tuple((named[n].data_ptr(), named[n]._version) for n in names if n in named))
    hit = _SCALES.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    scales = layer_variances(model, rule=rule, params=list(names))
    _SCALES[model] = (key, scales)
    return scales


class EmbeddingGrad:
    """Per-example squared norm of the gradient reaching the input-embedding output, float64 [B].

    Filled by the hooks of `capture_embedding_grad`; reset at every forward, so a batch
    recomputed by another engine (the auto fallback) starts from zero.

    By default one embedding row is one example. With `owner` (int64 [R], the example of each
    row) and `shared` (int64 [R], how many leading positions of the row are its example's
    shared prompt), several rows make one example, as in multiple choice with one row per
    option: the prompt's positions are one input seen by every option, so their gradients are
    summed over the rows before squaring, and each option's own positions are squared alone.
    """

    def __init__(self, owner: torch.Tensor | None = None,
                 shared: torch.Tensor | None = None) -> None:
        self.sq: torch.Tensor | None = None
        self.fired = False
        self.owner = None if owner is None else owner.cpu()
        self.shared = None if shared is None else shared.cpu()

    def _reset(self, rows: int) -> None:
        n = rows if self.owner is None else int(self.owner.max()) + 1
        self.sq = torch.zeros(n, dtype=torch.float64, device="cpu")
        self.fired = False

    def result(self, norms: torch.Tensor) -> torch.Tensor | None:
        """The per-example values ([B] float64), NaN where `norms` is NaN; None if never reached."""
        if self.sq is None or not self.fired:
            return None
        return self.sq.masked_fill(torch.isnan(norms.double().cpu()), float("nan"))

    def _add(self, grad: torch.Tensor) -> None:
        # examples are independent: example i's scalar reaches only example i's rows, so summing
        # over every backward (loop engine: one per example) gives each example its own norm
        self.fired = True
        g = grad.detach().to(torch.float64).cpu()
        if self.owner is None:
            self.sq += g.square().flatten(1).sum(1)
            return
        for q in range(len(self.sq)):
            rows = (self.owner == q).nonzero().flatten()
            n = int(self.shared[rows[0]])
            self.sq[q] += g[rows, :n].sum(0).square().sum() + g[rows, n:].square().sum()


@contextlib.contextmanager
def capture_embedding_grad(model: nn.Module, owner: torch.Tensor | None = None,
                           shared: torch.Tensor | None = None) -> Iterator[EmbeddingGrad]:
    """Record ‖∂ out_i / ∂ e_i‖² with e = the output of ``model.get_input_embeddings()``.

    A forward hook on the input-embedding module puts a tensor hook on its output; whichever
    backward the norm engine runs then passes the gradient through it. Both hooks exist only
    inside this context (removed in ``finally``); the model is otherwise untouched.
    `owner`, `shared`: several rows per example (see `EmbeddingGrad`). Without a ``get_input_embeddings`` module, or when no backward reaches the embedding
    output (its weight not in the selected parameters), the result stays None.
    """
    acc = EmbeddingGrad(owner, shared)
    emb = _input_embeddings(model)
    if emb is None:
        yield acc
        return

    def fwd_hook(_m: nn.Module, _inp: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor) and out.requires_grad and out.dim() >= 2:
            acc._reset(out.shape[0])
            out.register_hook(acc._add)

    handle = emb.register_forward_hook(fwd_hook)
    try:
        yield acc
    finally:
        handle.remove()


def _input_embeddings(model: nn.Module) -> nn.Module | None:
    get = getattr(model, "get_input_embeddings", None)
    if get is None:
        return None
    try:
        emb = get()
    except NotImplementedError:
        return None
    return emb if isinstance(emb, nn.Module) else None
