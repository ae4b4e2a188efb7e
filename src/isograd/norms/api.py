"""The front door for per-example squared gradient norms: `sq_grad_norms`."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .._choice import Choice
from ._common import (
    EngineFallbackWarning,
    GhostUnsupported,
    ParamSelection,
    fsdp_sharded,
    infer_batch_size,
    model_state_guard,
    select_params,
    slice_batch,
    warn_non_finite,
)
from ._common import (
    memory_budget as resolve_budget,
)
from .loop import loop_sq_grad_norms

Result = tuple[torch.Tensor, "dict[str, torch.Tensor] | None", torch.Tensor]
"""total [B], per-parameter norms (with `by_param`), mask [B] of non-finite outputs."""

# fp16 gradients overflow above 65504: the output is scaled by 2^-s, the norms by 4^s (exact)
_FP16_SCALES = (0, 12, 24)


class Method(Choice):
    """How per-example norms are computed."""

    LOOP = "loop"
    """Reference engine: one backward per example; exact for any model."""
    GHOST = "ghost"
    """Batched engine: all examples in one backward, exact per-layer rules, no weight gradient."""
    AUTO = "auto"
    """"ghost" when every selected parameter has an exact rule, else "loop"; a batch on which
    "ghost" cannot give an exact number (`GhostUnsupported`) is recomputed by "loop", with an
    `EngineFallbackWarning` naming the reason. Other errors are raised. On a model sharded
    with FSDP2 always "ghost", without fallback (the only exact engine there)."""


class OnOOM(Choice):
    """What a CUDA out-of-memory error in the forward/backward does."""

    RAISE = "raise"
    """Raise it (default: `fn` may record per-call values that a split would cut in parts)."""
    SPLIT = "split"
    """Split the batch in halves and retry, recursively down to one example. `fn` is then called
    once per part on a sliced batch (every tensor whose dim 0 is B), so it must be pure."""


def sq_grad_norms(
    model: nn.Module,
    fn: Callable[[nn.Module, Any], torch.Tensor],
    batch: Any,
    *,
    method: str | Method = Method.LOOP,
    params: ParamSelection = None,
    by_param: bool = False,
    memory_budget: int | str | None = None,
    on_oom: str | OnOOM = OnOOM.RAISE,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-example squared norms ‖∂ fn(model, batch)_i / ∂θ‖² over the selected parameters.

    The model runs with eval semantics (dropout off); afterwards its modes, hooks, `.grad`
    fields and `requires_grad` flags are exactly as before, also when this raises. The forward
    and backward run in the model's dtype; every squared term and sum is accumulated in float32
    or float64. With float16 parameters, gradients that overflow are recomputed with the output
    scaled down by a power of two (exact), at most twice.

    Args:
        model: any `torch.nn.Module`, used as is (never wrapped), on any device(s).
        fn: ``fn(model, batch) -> Tensor[B]``, one differentiable scalar per example.
        batch: whatever `fn` takes; its first tensor's leading dimension is the batch size B.
        method: a `Method` or its value ("loop", "ghost", "auto").
        params: which parameters θ covers: None (all, including frozen ones), names,
            a predicate ``(name, param) -> bool``, or parameter tensors. Parameters of a
            non-floating dtype (integer, quantised) are left out with a warning.
        by_param: also return a dict name -> Tensor[B] per parameter tensor (sums to the total).
        memory_budget: bytes (or "512MiB", "2GiB") the ghost engine may use at once for one
            layer's Gram or materialised terms; examples are processed in slices to stay under
            it. Default: $ISOGRAD_MEMORY_BUDGET, else 2 GiB.
        on_oom: an `OnOOM` or its value ("raise", "split").

    Returns:
        Tensor[B] float64 on the CPU of squared norms, or ``(total, per_param)`` when
        `by_param`. An example whose output is not finite gets NaN, one whose gradient is not
        (a NaN/inf input that the output does not show) NaN or inf; one
        `NonFiniteOutputWarning` names exactly those examples, and the others stay exact
        (the loop engine reruns alone an example that another's NaN reached through a layout
        it cannot locate, when the model does not mix examples; else it stays NaN and named).

    Raises:
        ValueError: empty batch, empty selection, `fn` output of the wrong shape or not
            differentiable, unknown method; on an FSDP2-sharded model: ``method="loop"``,
            ``on_oom="split"`` or float16 (their reruns would leave the ranks out of step).
        GhostUnsupported: ``method="ghost"`` (or "auto" on an FSDP2-sharded model) on a model
            or batch it cannot handle exactly.
    """
    m = Method.parse(method)
    oom = OnOOM.parse(on_oom)
    if infer_batch_size(batch) == 0:
        raise ValueError("the batch is empty (batch size 0)")
    selected = select_params(model, params)
    budget = resolve_budget(memory_budget)
    half = any(p.dtype == torch.float16 for p in selected.values())
    if fsdp_sharded(model, selected):
        _check_sharded(m, oom, half)
        m = Method.GHOST  # exact with each rank's own activations; no fallback to loop

    def run(f: Callable[[nn.Module, Any], torch.Tensor]) -> Result:
        return _split_on_oom(model, f, batch, m, selected, by_param, budget, oom)

    total, per, bad_out = run(fn) if not half else _fp16_rescaled(fn, run)
    warn_non_finite(total, bad_out)
    return (total, per) if by_param else total


def _check_sharded(m: Method, oom: OnOOM, half: bool) -> None:
    """Refuse what cannot be exact, or would desynchronise the ranks, under FSDP2."""
    if m is Method.LOOP:
        raise ValueError(
            "method='loop' cannot be exact on a model sharded with FSDP2 (fully_shard): FSDP "
            "reduce-scatters parameter gradients across ranks, so no rank sees one example's "
            "gradient alone; use method='ghost' or 'auto' (exact there: they need only each "
            "rank's own activations)"
        )
    # FSDP2 gathers weights collectively: a rerun on one rank alone would wait forever
    if oom is OnOOM.SPLIT:
        raise ValueError("on_oom='split' is not available on an FSDP2-sharded model (a split "
                         "on one rank leaves the others waiting); pass smaller batches")
    if half:
        raise ValueError("float16 on an FSDP2-sharded model is not supported (its overflow "
                         "rerun would run on one rank alone); use bfloat16")


def _dispatch(model: nn.Module, fn: Callable, batch: Any, m: Method, selected: dict,
              by_param: bool, budget: int) -> Result:
    """One engine on the whole batch; under "auto", the loop engine where ghost cannot."""
    if m is Method.LOOP:
        with model_state_guard(model, selected):
            return loop_sq_grad_norms(model, fn, batch, selected, by_param)
    from .ghost import ghost_sq_grad_norms, unsupported_params
    from .ghost.plan import coverage

    why = ""
    if m is Method.AUTO:
        missing = unsupported_params(model, selected)
        if missing:
            cov = coverage(model, selected)
            shown = "; ".join(f"{n}: {cov[n]}" for n in missing[:3])
            why = f"{len(missing)} selected parameter(s) have no exact ghost rule ({shown})"
    if not why:
        try:
            with model_state_guard(model, selected):
                return ghost_sq_grad_norms(model, fn, batch, selected, by_param, budget)
        except GhostUnsupported as e:
            if m is not Method.AUTO:
                raise
            why = str(e)
    # a long run is not lost to one odd model or batch: the reference engine computes it
    warnings.warn(f"using the loop engine: {why[:300]}", EngineFallbackWarning, stacklevel=5)
    with model_state_guard(model, selected):
        return loop_sq_grad_norms(model, fn, batch, selected, by_param)


def _split_on_oom(model: nn.Module, fn: Callable, batch: Any, m: Method, selected: dict,
                  by_param: bool, budget: int, oom: OnOOM) -> Result:
    try:
        return _dispatch(model, fn, batch, m, selected, by_param, budget)
    except torch.OutOfMemoryError:
        n = infer_batch_size(batch)
        if oom is OnOOM.RAISE or n is None or n < 2:
            raise
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    half = n // 2
    parts = [
        _split_on_oom(model, fn, slice_batch(batch, n, a, b), m, selected, by_param, budget, oom)
        for a, b in ((0, half), (half, n))
    ]
    total = torch.cat([t for t, _, _ in parts])
    per = {k: torch.cat([p[k] for _, p, _ in parts]) for k in parts[0][1]} if by_param else None
    return total, per, torch.cat([b for _, _, b in parts])


def _fp16_rescaled(fn: Callable, run: Callable[[Callable], Result]) -> Result:
    """Run; where a norm is not finite, rerun with the output scaled by 2^-s, norms by 4^s.

    An overflow shows as inf or as NaN (inf - inf): both are rerun, and an example whose output
    is finite but whose norm stays NaN or inf after the last scale raises.
    """
    total, per, bad_out = run(fn)
    for s in _FP16_SCALES[1:]:
        bad = ~torch.isfinite(total) & ~bad_out
        if not bad.any():
            return total, per, bad_out
        scale, back = 2.0**-s, 4.0**s

        def scaled(model: nn.Module, batch: Any, scale: float = scale) -> torch.Tensor:
            return fn(model, batch) * scale

        t2, p2, _ = run(scaled)
        fix = bad & torch.isfinite(t2)
        total = torch.where(fix, t2 * back, total)
        if per is not None and p2 is not None:
            per = {k: torch.where(fix, p2[k] * back, v) for k, v in per.items()}
    left = ~torch.isfinite(total) & ~bad_out
    if left.any():
        idx = torch.nonzero(left).flatten().tolist()[:10]
        raise FloatingPointError(
            f"float16 gradients overflow (inf or NaN) for example(s) {idx} even with the output "
            f"scaled by 2^-{_FP16_SCALES[-1]} (or a NaN/inf input or activation that the output "
            "does not show); run the model in bfloat16 or float32"
        )
    return total, per, bad_out
