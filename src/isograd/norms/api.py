"""The front door for per-example squared gradient norms: `sq_grad_norms`."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .._choice import Choice
from ._common import ParamSelection, infer_batch_size, model_state_guard, select_params
from .loop import loop_sq_grad_norms


class Method(Choice):
    """How per-example norms are computed."""

    LOOP = "loop"
    """Reference engine: one backward per example; exact for any model."""
    GHOST = "ghost"
    """Batched engine: all examples in one backward, exact per-layer rules, no weight gradient."""
    AUTO = "auto"
    """"ghost" when every selected parameter has an exact rule, else "loop"; a batch on which
    "ghost" fails (RuntimeError) is recomputed by "loop", with a RuntimeWarning."""


def sq_grad_norms(
    model: nn.Module,
    fn: Callable[[nn.Module, Any], torch.Tensor],
    batch: Any,
    *,
    method: str | Method = Method.LOOP,
    params: ParamSelection = None,
    by_param: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-example squared norms ‖∂ fn(model, batch)_i / ∂θ‖² over the selected parameters.

    The model runs with eval semantics (dropout off); afterwards its modes, hooks, `.grad`
    fields and `requires_grad` flags are exactly as before, also when this raises.

    Args:
        model: any `torch.nn.Module`, used as is (never wrapped).
        fn: ``fn(model, batch) -> Tensor[B]``, one differentiable scalar per example.
        batch: whatever `fn` takes; its first tensor's leading dimension is the batch size B.
        method: a `Method` or its value ("loop", "ghost", "auto").
        params: which parameters θ covers: None (all, including frozen ones), names,
            a predicate ``(name, param) -> bool``, or parameter tensors.
        by_param: also return a dict name -> Tensor[B] per parameter tensor (sums to the total).

    Returns:
        Tensor[B] float64 of squared norms (NaN for examples whose output is not finite, with a
        `NonFiniteOutputWarning`), or ``(total, per_param)`` when `by_param`.

    Raises:
        ValueError: empty batch, empty selection, `fn` output of the wrong shape or not
            differentiable, unknown method.
    """
    m = Method.parse(method)
    if infer_batch_size(batch) == 0:
        raise ValueError("the batch is empty (batch size 0)")
    selected = select_params(model, params)
    engine = loop_sq_grad_norms
    if m is not Method.LOOP:
        from .ghost import ghost_sq_grad_norms, unsupported_params

        if m is Method.GHOST or not unsupported_params(model, selected):
            engine = ghost_sq_grad_norms
    try:
        with model_state_guard(model, selected):
            total, per = engine(model, fn, batch, selected, by_param)
    except RuntimeError as e:
        if m is not Method.AUTO or engine is loop_sq_grad_norms:
            raise
        # a long run is not lost to one odd batch: the reference engine recomputes it
        warnings.warn(f"batched norm engine failed ({type(e).__name__}: {str(e)[:200]}); "
                      "using the loop engine for this batch", RuntimeWarning, stacklevel=2)
        with model_state_guard(model, selected):
            total, per = loop_sq_grad_norms(model, fn, batch, selected, by_param)
    return (total, per) if by_param else total
