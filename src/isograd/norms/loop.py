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
        total [B] float64 on the CPU, and with `by_param` a dict name -> [B] float64 that sums
        to it.
    """
    out = check_output(fn(model, batch), infer_batch_size(batch))
    n = out.shape[0]
    names = list(selected)
    params = list(selected.values())
    # each parameter's sums stay on its own device (no sync per example; several devices under
    # a device_map work as is); they are gathered on the CPU once at the end
    acc = [torch.zeros(n, dtype=torch.float64, device=p.device) for p in params]
    current = [0]  # index of the example being back-propagated

    def make_hook(j: int):
        def hook(p: torch.Tensor) -> None:
            g = p.grad.detach()
            # squares in at least float32 (exact for half-precision values), summed in float64
            sq = g.to(torch.promote_types(g.dtype, torch.float32)).square()
            acc[j][current[0]] += sq.sum(dtype=torch.float64)
            p.grad = None  # free at once: no full gradient copy is kept

        return hook

    handles = [p.register_post_accumulate_grad_hook(make_hook(j)) for j, p in enumerate(params)]
    try:
        finite = torch.isfinite(out.detach()).cpu()
        for i in range(n):
            if not finite[i]:
                continue
            current[0] = i
            torch.autograd.backward(out[i], inputs=params, retain_graph=i < n - 1)
    finally:
        for h in handles:
            h.remove()
        for p in params:
            p.grad = None
    per = torch.stack([a.cpu() for a in acc]) if acc else torch.zeros(0, n, dtype=torch.float64,
                                                                       device="cpu")
    per[:, ~finite] = float("nan")
    warn_non_finite(~finite)
    total = per.sum(0)
    return total, ({nm: per[j] for j, nm in enumerate(names)} if by_param else None)
