"""Shared plumbing of the norm engines: parameter selection, batch checks, the state guard.

Everything here is engine-agnostic; `api.py` calls it, engines receive its results.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

ParamSelection = None | Sequence[str] | Callable[[str, torch.Tensor], bool] | Iterable[torch.Tensor]


class NonFiniteOutputWarning(UserWarning):
    """Some examples' `fn` outputs or gradients were NaN or inf; their norms are not finite,
    the others are exact (the message names the examples)."""


class GhostUnsupported(ValueError):
    """The ghost engine cannot give an exact number for this model, selection or batch.

    Raised for every "ghost cannot" condition (a refused module, a parameter used outside the
    modules owning it, examples not on dimension 0, routed tokens, a per-example memory need over
    the budget); ``method="auto"`` catches exactly this type and recomputes with the loop engine.
    """


class EngineFallbackWarning(RuntimeWarning):
    """``method="auto"`` used the loop engine; the message names the reason."""


MEMORY_BUDGET_ENV = "ISOGRAD_MEMORY_BUDGET"
DEFAULT_MEMORY_BUDGET = 2 * 1024**3
"""Bytes the ghost engine may use at once for one layer's Gram or materialised terms."""

_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(raw: int | float | str, where: str = "size") -> int:
    """Bytes from a number of bytes or a size such as "512MiB", "1.5GB", "2G" (binary units).

    Raises:
        ValueError: naming `where`, for anything else or a size under 1 byte.
    """
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        n = float(raw)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kmgtKMGT]?)(?:i?[bB])?\s*",
                         str(raw))
        if m is None:
            raise ValueError(f"{where} must be a number of bytes or a size like '512MiB', "
                             f"'2GiB'; got {raw!r}")
        n = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not n >= 1:
        raise ValueError(f"{where} must be at least 1 byte, got {raw!r}")
    return int(n)


def memory_budget(value: int | str | None = None) -> int:
    """The ghost engine's memory budget in bytes: `value`, else $ISOGRAD_MEMORY_BUDGET, else 2 GiB
    (`parse_size`: a number of bytes or a size such as "512MiB")."""
    raw = value if value is not None else os.environ.get(MEMORY_BUDGET_ENV)
    if raw is None:
        return DEFAULT_MEMORY_BUDGET
    return parse_size(raw, "memory_budget" if value is not None else f"${MEMORY_BUDGET_ENV}")


def select_params(model: nn.Module, params: ParamSelection) -> dict[str, nn.Parameter]:
    """Resolve a parameter selection to an ordered ``{name: parameter}`` dict.

    Tied parameters appear once, under the first name `named_parameters` gives them.
    Parameters of a non-floating dtype (integer or quantised storage) are left out, with a
    warning naming them.

    Args:
        model: the model.
        params: None (every parameter, frozen or not), a sequence of names, a predicate
            ``(name, param) -> bool``, or an iterable of parameter tensors of the model.

    Raises:
        ValueError: unknown names, foreign tensors, or an empty selection.
    """
    named = dict(model.named_parameters())  # deduplicated by identity: tied params once
    if params is None:
        chosen = named
    elif callable(params):
        chosen = {n: p for n, p in named.items() if params(n, p)}
    else:
        items = list(params)
        if items and all(isinstance(x, str) for x in items):
            unknown = [n for n in items if n not in named]
            if unknown:
                all_named = dict(model.named_parameters(remove_duplicate=False))
                aliases = {n: all_named[n] for n in unknown if n in all_named}
                unknown = [n for n in unknown if n not in aliases]
                if unknown:
                    raise ValueError(
                        f"unknown parameter names {unknown[:5]}; the model has e.g. "
                        f"{list(named)[:5]}"
                    )
                # a tied alias (e.g. lm_head.weight) selects the shared tensor under its first name
                ids = {id(p) for p in aliases.values()}
                items = [n for n in items if n not in aliases] + [
                    n for n, p in named.items() if id(p) in ids
                ]
            wanted = set(items)
            chosen = {n: p for n, p in named.items() if n in wanted}
        elif all(isinstance(x, torch.Tensor) for x in items):
            ids = {id(x) for x in items}
            chosen = {n: p for n, p in named.items() if id(p) in ids}
            if len(chosen) != len(ids):
                raise ValueError("some selected tensors are not parameters of the model")
        else:
            raise TypeError(
                "params must be None, a sequence of names, a predicate (name, param) -> bool, "
                "or an iterable of parameter tensors"
            )
    frozen = [n for n, p in chosen.items() if not (p.is_floating_point() or p.is_complex())]
    if frozen:
        # integer / quantised storage (int8, uint8 packs) has no gradient: say which, go on
        shown = ", ".join(f"{n} ({chosen[n].dtype})" for n in frozen[:5])
        more = f" and {len(frozen) - 5} more" if len(frozen) > 5 else ""
        warnings.warn(f"left out of the selection: {len(frozen)} parameter(s) of a non-floating "
                      f"dtype, which have no gradient: {shown}{more}", UserWarning, stacklevel=3)
        chosen = {n: p for n, p in chosen.items() if n not in set(frozen)}
    if not chosen:
        raise ValueError("the parameter selection is empty: nothing to differentiate")
    return chosen


def fsdp_sharded(model: nn.Module, selected: Mapping[str, nn.Parameter]) -> bool:
    """Whether `model` (or a submodule) is sharded by FSDP2's ``fully_shard``.

    Under FSDP2 a rank holds only a shard of each parameter and FSDP reduce-scatters parameter
    gradients across ranks, so only the activation-based engine (ghost) sees a rank's own
    examples exactly. Other DTensor parameters (tensor parallel) are refused: a layer's
    activations are then split across ranks too.

    Raises:
        ValueError: selected parameters are DTensors of a model not sharded by FSDP2.
    """
    # no import: a model can only be sharded if the user imported these modules already
    fsdp = getattr(sys.modules.get("torch.distributed.fsdp"), "FSDPModule", None)
    if fsdp is not None and any(isinstance(m, fsdp) for m in model.modules()):
        return True
    dtensor = getattr(sys.modules.get("torch.distributed.tensor"), "DTensor", None)
    bad = [n for n, p in selected.items() if dtensor is not None and isinstance(p, dtensor)]
    if bad:
        raise ValueError(
            f"parameters {bad[:3]} are DTensors sharded outside FSDP2 (e.g. tensor parallel), "
            "where a layer's activations are split across ranks; per-example norms support "
            "torch.distributed.fsdp.fully_shard, or an unsharded model (device_map)"
        )
    return False


def infer_batch_size(batch: Any) -> int | None:
    """Leading dimension of the first tensor found in `batch` (tensor, mapping or sequence)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() > 0 else None
    if isinstance(batch, Mapping):
        values: Iterable[Any] = batch.values()
    elif isinstance(batch, (list, tuple)):
        values = batch
    else:
        return None
    for v in values:
        b = infer_batch_size(v)
        if b is not None:
            return b
    return None


def slice_batch(batch: Any, size: int, start: int, stop: int) -> Any:
    """Examples ``start:stop`` of `batch`: every tensor whose dim 0 is `size` is sliced.

    Mappings (rebuilt as their own type when it takes a dict), lists and tuples are walked;
    anything else is passed as is.
    """
    if isinstance(batch, torch.Tensor):
        return batch[start:stop] if batch.dim() > 0 and batch.shape[0] == size else batch
    if isinstance(batch, Mapping):
        items = {k: slice_batch(v, size, start, stop) for k, v in batch.items()}
        try:
            return type(batch)(items)
        except TypeError:
            return items
    if isinstance(batch, (list, tuple)):
        parts = [slice_batch(v, size, start, stop) for v in batch]
        return type(batch)(*parts) if hasattr(batch, "_fields") else type(batch)(parts)
    return batch


def check_output(out: Any, batch_size: int | None) -> torch.Tensor:
    """Validate `fn`'s output: a differentiable tensor of shape [B]."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"fn must return a torch.Tensor of shape [B], got {type(out).__name__}")
    if out.dim() != 1 or (batch_size is not None and out.shape[0] != batch_size):
        expected = f"[{batch_size}]" if batch_size is not None else "[B]"
        raise ValueError(
            f"fn must return one scalar per example, shape {expected}; got {list(out.shape)}"
        )
    if not out.requires_grad:
        raise ValueError(
            "fn's output is not differentiable with respect to the selected parameters "
            "(it does not require grad: was it computed under torch.no_grad() or detached?)"
        )
    if not (out.is_floating_point() or out.is_complex()):
        raise TypeError(f"fn must return floating-point values, got {out.dtype}")
    return out


def _shown(mask: torch.Tensor) -> tuple[int, list]:
    idx = torch.nonzero(mask).flatten().tolist()
    return len(idx), idx[:10] + (["..."] if len(idx) > 10 else [])


def warn_non_finite(total: torch.Tensor, bad_out: torch.Tensor, stacklevel: int = 3) -> None:
    """One warning naming exactly the examples whose norms are not finite: those whose `fn`
    output was NaN/inf (norm NaN) and those whose gradient was although the output was finite
    (a non-finite input or activation that the output does not show)."""
    bad_grad = ~torch.isfinite(total) & ~bad_out
    parts = []
    if bad_out.any():
        n, shown = _shown(bad_out)
        parts.append(f"fn returned NaN/inf for {n} example(s) {shown}; their norms are NaN")
    if bad_grad.any():
        n, shown = _shown(bad_grad)
        parts.append(f"the gradients of {n} example(s) {shown} are not finite although fn's "
                     "output is (a NaN/inf input or activation); their norms are NaN/inf")
    if parts:
        warnings.warn("; ".join(parts) + ". The other examples' norms are exact",
                      NonFiniteOutputWarning, stacklevel=stacklevel)


def _hook_dicts(module: nn.Module) -> list[dict]:
    names = [
        "_forward_hooks",
        "_forward_pre_hooks",
        "_backward_hooks",
        "_backward_pre_hooks",
        "_state_dict_hooks",
        "_load_state_dict_pre_hooks",
    ]
    return [getattr(module, n) for n in names if isinstance(getattr(module, n, None), dict)]


@contextlib.contextmanager
def model_state_guard(
    model: nn.Module, selected: Mapping[str, nn.Parameter]
) -> Iterator[None]:
    """Run a computation with eval semantics and only `selected` requiring grad, then restore.

    On exit, normal or not: every module's train/eval mode, every parameter's `requires_grad`
    and `.grad`, and the module hook dicts are exactly as on entry (hooks added inside are
    removed; the caller's hooks are kept, in order).
    """
    modules = list(model.modules())
    training = [m.training for m in modules]
    all_params = list(dict(model.named_parameters()).values())
    flags = [p.requires_grad for p in all_params]
    grads = [p.grad for p in all_params]
    hooks = [(d, dict(d)) for m in modules for d in _hook_dicts(m)]
    chosen = {id(p) for p in selected.values()}
    try:
        model.eval()
        for p in all_params:
            p.grad = None
            p.requires_grad_(id(p) in chosen)
        with torch.enable_grad():
            yield
    finally:
        for m, t in zip(modules, training):
            m.training = t
        for p, f, g in zip(all_params, flags, grads):
            p.requires_grad_(f)
            p.grad = g
        for d, saved in hooks:
            if list(d.items()) != list(saved.items()):
                d.clear()
                d.update(saved)
