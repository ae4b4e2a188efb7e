"""Normalisation layers with elementwise affine parameters: ``y = w ⊙ x̂ + b``.

x̂ is recomputed from the saved input exactly as the layer computes it, and example b's
gradients are ``Σ g ⊙ x̂`` and ``Σ g`` over its positions, materialised (they are small).
BatchNorm is exact only with running statistics (eval mode): batch statistics would couple
the examples, so it is refused then.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .._common import GhostUnsupported
from . import generic
from .factors import Dense, Factor, work_dtype
from .layout import require_batch_dim


def _affine(g: Tensor, xhat: Tensor, keep: Sequence[int], attrs: Sequence[str]) -> dict:
    """Sum g⊙x̂ and g over every dimension except 0 (examples) and those in `keep`."""
    dims = [d for d in range(1, g.dim()) if d not in keep]
    work = work_dtype(g)  # products and sums over positions never in half precision
    g = g.to(work)
    out: dict[str, Factor] = {}
    if "weight" in attrs:
        prod = g * xhat.to(work)
        out["weight"] = Dense(prod.sum(dims) if dims else prod)
    if "bias" in attrs:
        out["bias"] = Dense(g.sum(dims) if dims else g)
    return out


def _trailing(module: nn.Module, a: Tensor, grads: Sequence[Tensor | None] | None,
              attrs: Sequence[str], normalise: Callable[[Tensor, tuple[int, ...]], Tensor]
              ) -> dict[str, Factor]:
    """A layer normalising over its trailing `normalized_shape` dimensions."""
    if grads is None or grads[0] is None:
        return {}
    shape = tuple(module.normalized_shape)
    require_batch_dim(module, a, len(shape) + 1)
    keep = range(a.dim() - len(shape), a.dim())
    return _affine(grads[0], normalise(a, shape), list(keep), attrs)


def layer_norm_factors(
    module: nn.Module, a: Tensor, grads: Sequence[Tensor | None] | None, attrs: Sequence[str]
) -> dict[str, Factor]:
    """nn.LayerNorm: weight, bias [*normalized_shape]."""
    return _trailing(module, a, grads, attrs,
                     lambda x, shape: F.layer_norm(x, shape, None, None, module.eps))


def rms_norm_factors(
    module: nn.Module, a: Tensor, grads: Sequence[Tensor | None] | None, attrs: Sequence[str]
) -> dict[str, Factor]:
    """nn.RMSNorm: weight [*normalized_shape]."""
    return _trailing(module, a, grads, attrs,
                     lambda x, shape: F.rms_norm(x, shape, None, module.eps))


def group_norm_factors(
    module: nn.Module, a: Tensor, grads: Sequence[Tensor | None] | None, attrs: Sequence[str]
) -> dict[str, Factor]:
    """nn.GroupNorm: weight, bias [C] (channel dimension 1)."""
    if grads is None or grads[0] is None:
        return {}
    require_batch_dim(module, a, 2)
    xhat = F.group_norm(a, module.num_groups, None, None, module.eps)
    return _affine(grads[0], xhat, [1], attrs)


def batch_norm_refuse(module: nn.Module) -> str | None:
    """BatchNorm with batch statistics couples the examples: no per-example gradient.

    (The engine always runs in eval mode, so running statistics are used when they exist.)
    """
    if module.running_mean is None or module.running_var is None:
        return "it normalises with batch statistics (no running statistics), coupling examples"
    return None


def batch_norm_factors(
    module: nn.Module, a: Tensor, grads: Sequence[Tensor | None] | None, attrs: Sequence[str]
) -> dict[str, Factor]:
    """nn.BatchNorm{1,2,3}d with running statistics: weight, bias [C]."""
    if grads is None or grads[0] is None:
        return {}
    require_batch_dim(module, a, 2)
    shape = [1, -1] + [1] * (a.dim() - 2)
    mean = module.running_mean.view(shape)
    rstd = torch.rsqrt(module.running_var.view(shape) + module.eps)
    xhat = (a - mean) * rstd
    return _affine(grads[0], xhat, [1], attrs)


def capture_call(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
    """Arguments and output of the call (references), and the generic rule's argument rows
    (or why it could not take them: only needed when the broadcast rerun fails)."""
    try:
        rows: Any = generic.example_rows(module, args, kwargs)
    except GhostUnsupported as e:
        rows = e
    return args, kwargs, output, rows


def broadcast_factors(
    module: nn.Module, ctx: Any, grads: Sequence[Tensor | None] | None, attrs: Sequence[str]
) -> dict[str, Factor]:
    """Norm layers of other libraries (HF's RMSNorm variants): 1-D parameters broadcast.

    The layer is run again on the batch with each 1-D parameter replaced by a per-position copy
    [B, ..., d] (an expanded view); autograd then returns each position's gradient, whatever
    the layer's formula (casts, Gemma's 1 + w), and the sum over an example's positions is
    taken here in float32 or float64 (autograd would sum in the parameter's dtype). Only when
    that rerun reproduces the recorded output bit for bit; otherwise the generic vmap rule
    takes over.
    """
    if grads is None or grads[0] is None:
        return {}
    args, kwargs, y, rows = ctx
    g = grads[0]
    a = args[0] if args else None
    own = dict(module.named_parameters(recurse=False))
    fits = (
        isinstance(a, Tensor) and isinstance(y, Tensor) and a.dim() >= 2
        and all(own[k].dim() == 1 and own[k].shape[0] == a.shape[-1] for k in attrs)
    )
    if fits:
        leaves = {k: own[k].detach().expand(*a.shape[:-1], -1).requires_grad_() for k in attrs}
        fixed = {k: p.detach() for k, p in own.items() if k not in leaves}
        with torch.enable_grad():
            y2 = functional_call(module, {**fixed, **leaves}, (a.detach(), *args[1:]), kwargs)
        if isinstance(y2, Tensor) and y2.shape == y.shape and torch.equal(y2, y):
            got = torch.autograd.grad(y2, list(leaves.values()), g)
            return {k: Dense(v.reshape(v.shape[0], -1, v.shape[-1]).sum(1, dtype=work_dtype(v)))
                    for k, v in zip(leaves, got)}
    if isinstance(rows, GhostUnsupported):
        raise rows
    return generic.generic_factors(module, (args, kwargs, [True], rows), grads, attrs)
