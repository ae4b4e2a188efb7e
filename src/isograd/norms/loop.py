"""Reference engine: one backward pass per example, the ground truth for the faster engines.

A single forward pass over the batch builds the graph; each example's scalar is then
back-propagated alone (``retain_graph``). Squared norms are accumulated per parameter as each
gradient arrives (a post-accumulate-grad hook that squares, sums in float64 and frees the
gradient), so no full gradient copy is ever held: peak memory stays near one batched
forward + backward. Tied parameters are handled by autograd itself: the hook sees the gradient
after all uses have been summed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ._common import check_output, infer_batch_size, warn_non_finite


def loop_sq_grad_norms(
    model: nn.Module,
    fn: Callable[[nn.Module, Any], torch.Tensor],
    batch: Any,
    selected: Mapping[str, nn.Parameter],
    by_param: bool,
) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """Per-example squared gradient norms, one backward per example.

    Must run inside `model_state_guard` (selected params require grad, nothing else does).

    Returns:
        total [B] float64, and with `by_param` a dict name -> [B] float64 that sums to it.
    """
    out = check_output(fn(model, batch), infer_batch_size(batch))
    n = out.shape[0]
    names = list(selected)
    params = list(selected.values())
    per = torch.zeros(len(params), n, dtype=torch.float64)
    current = [0]  # index of the example being back-propagated

    def make_hook(j: int):
        def hook(p: torch.Tensor) -> None:
            g = p.grad
            per[j, current[0]] += g.detach().to(torch.float64).square().sum().cpu()
            p.grad = None  # free at once: no full gradient copy is kept

        return hook

    handles = [p.register_post_accumulate_grad_hook(make_hook(j)) for j, p in enumerate(params)]
    try:
        finite = torch.isfinite(out.detach())
        for i in range(n):
            if not finite[i]:
                per[:, i] = float("nan")
                continue
            current[0] = i
            torch.autograd.backward(out[i], inputs=params, retain_graph=i < n - 1)
    finally:
        for h in handles:
            h.remove()
        for p in params:
            p.grad = None
    warn_non_finite(~finite)
    total = per.sum(0)
    return total, ({nm: per[j] for j, nm in enumerate(names)} if by_param else None)
