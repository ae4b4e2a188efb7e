"""Generic exact rule: per-example vector-Jacobian products of the module, vectorised by vmap.

For a module whose own parameters have no dedicated rule, each example's input is run through
the module again (``functional_call`` on a batch of one) and its output gradient is pulled back
to the module's direct parameters with `torch.func.vjp`; `torch.func.vmap` batches this over
examples. The per-example gradients are materialised ([B, *shape] per parameter), so the rule
refuses, with the figure, when that would exceed the memory budget of the call (`BUDGET`,
set by the engine to ``memory_budget``). Exact whenever the module treats
examples independently (which the ghost engine assumes of the whole model anyway).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vjp, vmap
from torch.utils._pytree import tree_flatten, tree_unflatten

from .._common import GhostUnsupported, memory_budget
from .factors import Dense, Factor
from .provenance import current

BUDGET: ContextVar[int | None] = ContextVar("isograd_ghost_budget", default=None)
"""Bytes the materialised per-example gradients of one call may take (the engine sets it)."""


def capture_call(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
    """The call's arguments, which output leaves are tensors, and which argument leaves hold
    one row per example (from their provenance; references only)."""
    leaves, _ = tree_flatten(output)
    return args, kwargs, [isinstance(x, Tensor) for x in leaves], example_rows(module, args, kwargs)


def example_rows(module: nn.Module, args: tuple, kwargs: dict) -> list[bool] | None:
    """Per argument leaf: sliced per example (True) or passed whole (False); None outside the
    ghost forward (then a leading size equal to the batch decides)."""
    prov = current()
    if prov is None:
        return None
    rows = []
    for x in tree_flatten((args, kwargs))[0]:
        tag = prov.tag(x) if isinstance(x, Tensor) else None
        if tag is not None and tag != 1:
            raise GhostUnsupported(
                f"the generic rule for {type(module).__name__} got an argument of shape "
                f"{list(x.shape)} whose rows are not proven to be the examples; use method='loop'"
            )
        # batch-free leaves whose rows are all one (size 1, expanded under the broadcast
        # layout, or an expand's stride 0): slicing them is harmless
        rows.append(isinstance(x, Tensor) and (tag == 1 or (x.dim() > 0 and (
            x.shape[0] == 1 or x.stride(0) == 0))))
    return rows


def _output_tensors(out: Any, is_tensor: Sequence[bool]) -> tuple[Tensor, ...]:
    leaves, _ = tree_flatten(out)
    return tuple(x for x, t in zip(leaves, is_tensor) if t)


def generic_factors(
    module: nn.Module, ctx: Any, grads: Sequence[Tensor | None] | None, attrs: Sequence[str]
) -> dict[str, Factor]:
    """Per-example gradients of the module's own parameters `attrs`, each Dense [B, *shape]."""
    if grads is None or all(g is None for g in grads):
        return {}
    args, kwargs, is_tensor, rows = ctx
    n = next(g.shape[0] for g in grads if g is not None)
    own = dict(module.named_parameters(recurse=False))
    size = sum(own[a].numel() * own[a].element_size() for a in attrs) * n
    limit = BUDGET.get()
    limit = memory_budget() if limit is None else limit
    if size > limit:
        raise GhostUnsupported(
            f"the generic per-example rule for {type(module).__name__} would materialise "
            f"{size:,} bytes of per-example gradients, over the memory budget of {limit:,} "
            "bytes (memory_budget= or $ISOGRAD_MEMORY_BUDGET); select fewer parameters or use "
            "method='loop'"
        )
    flat, spec = tree_flatten((args, kwargs))
    batched = [
        i for i, x in enumerate(flat) if isinstance(x, Tensor) and x.dim() > 0 and x.shape[0] == n
        and (rows is None or rows[i])
    ]
    fixed = {k: v.detach() for k, v in own.items() if k not in attrs}
    primals = {a: own[a].detach() for a in attrs}
    present = [j for j, g in enumerate(grads) if g is not None]

    def one(p: dict[str, Tensor], ex: list[Tensor], g_ex: list[Tensor]):
        leaves = list(flat)
        for i, x in zip(batched, ex):
            leaves[i] = x.unsqueeze(0)
        a, kw = tree_unflatten(leaves, spec)

        def f(q: dict[str, Tensor]) -> tuple[Tensor, ...]:
            return _output_tensors(functional_call(module, {**fixed, **q}, tuple(a), kw), is_tensor)

        y, pull = vjp(f, p)
        cot = [torch.zeros_like(yi) for yi in y]
        for j, gj in zip(present, g_ex):
            cot[j] = gj.unsqueeze(0).to(y[j].dtype)
        return pull(tuple(cot))[0]

    ex = [flat[i].detach() for i in batched]
    g_in = [grads[j].detach() for j in present]
    try:
        with torch.no_grad():  # torch.func still differentiates; plain autograd records nothing
            per = vmap(one, in_dims=(None, 0, 0))(primals, ex, g_in)
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as e:  # an op vmap cannot batch (data-dependent control flow, .item())
        raise GhostUnsupported(
            f"the generic per-example rule cannot run {type(module).__name__} under vmap "
            f"({str(e).splitlines()[0][:200]}); use method='loop'"
        ) from e
    return {a: Dense(per[a]) for a in attrs}
