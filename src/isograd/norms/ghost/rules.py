"""The one explicit table of per-layer rules of the ghost engine.

A rule says, for one module call, what to keep from the forward pass (`capture`) and how the
per-example gradients of the module's own parameters factor once the output gradient is known
(`factors`, see `factors.py`). The first matching entry wins. A parameterised module matched
by no entry goes through `GENERIC` (exact per-example vjp via vmap) when ``method="ghost"``;
``method="auto"`` then prefers the loop engine (`unsupported_params`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from . import conv, embedding, generic, linear, norms
from .factors import Factor

Capture = Callable[[nn.Module, tuple, dict, Any], Any]
Factors = Callable[[nn.Module, Any, Sequence[Tensor | None] | None, Sequence[str]], dict[str, Factor]]


@dataclass(frozen=True)
class Rule:
    """How one kind of module yields per-example gradient factors of its own parameters."""

    name: str
    matches: Callable[[nn.Module], bool]
    capture: Capture
    """(module, args, kwargs, output) -> ctx: references to what `factors` needs."""
    factors: Factors
    """(module, ctx, output grads or None, selected attrs) -> {attr: Factor}; with grads None,
    only the forward-time sides (used to prepare cross terms of tied parameters)."""
    refuse: Callable[[nn.Module], str | None] = lambda m: None
    """Why this particular module instance cannot be handled exactly (None: it can)."""
    rows: bool = False
    """All dimensions between the first and the last are positions to the rule, so a flattened
    input [B·k, ...] proven example-major may be viewed as [B, k, ...] (see `layout.py`)."""


def capture_input(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Tensor:
    """The layer's input (a reference: autograd keeps it alive anyway); the token ids of an
    embedding."""
    return args[0] if args else kwargs["input"]


def _exactly(*classes: type) -> Callable[[nn.Module], bool]:
    """Instances of `classes` (or subclasses) that keep the class's own forward."""
    forwards = {c.forward for c in classes}
    return lambda m: isinstance(m, classes) and type(m).forward in forwards


def _hf_conv1d(m: nn.Module) -> bool:
    mod = sys.modules.get("transformers.pytorch_utils")  # no transformers import: no Conv1D
    cls = getattr(mod, "Conv1D", None)
    return cls is not None and isinstance(m, cls) and type(m).forward is cls.forward


def _hf_rms_norm(m: nn.Module) -> bool:
    # the many RMSNorm classes of transformers (Llama, Qwen, Mistral, Gemma's 1+w, T5LayerNorm):
    # formulas differ in casts and offsets: the per-example broadcast rerun handles them all
    name = type(m).__name__
    own = dict(m.named_parameters(recurse=False))
    return (
        type(m).__module__.startswith("transformers.")
        and (name.endswith("RMSNorm") or name == "T5LayerNorm")
        and set(own) <= {"weight", "bias"}
        and not list(m.children())
    )


_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

RULES: tuple[Rule, ...] = (
    Rule("linear", _exactly(nn.Linear), capture_input, linear.linear_factors, rows=True),
    Rule("conv1d-transposed-linear", _hf_conv1d, capture_input, linear.conv1d_hf_factors,
         rows=True),
    Rule("embedding", _exactly(nn.Embedding), capture_input, embedding.embedding_factors,
         embedding.refuse, rows=True),
    Rule("scaled-embedding", embedding.scaled_matches, embedding.capture_scaled,
         embedding.scaled_factors, embedding.refuse, rows=True),
    Rule("derived-embedding", embedding.derived_matches, embedding.capture_derived,
         embedding.derived_factors, embedding.refuse),
    Rule("conv", conv.matches, capture_input, conv.conv_factors),
    Rule("layer-norm", _exactly(nn.LayerNorm), capture_input, norms.layer_norm_factors,
         rows=True),
    Rule("rms-norm", _exactly(nn.RMSNorm), capture_input, norms.rms_norm_factors, rows=True),
    Rule("group-norm", _exactly(nn.GroupNorm), capture_input, norms.group_norm_factors),
    Rule("batch-norm", _exactly(*_BATCH_NORMS), capture_input, norms.batch_norm_factors,
         norms.batch_norm_refuse),
    Rule("hf-rms-norm", _hf_rms_norm, norms.capture_call, norms.broadcast_factors, rows=True),
)
"""Dedicated rules, first match wins."""

GENERIC = Rule("generic (vjp)", lambda m: True, generic.capture_call, generic.generic_factors)
"""Fallback for any other module with parameters (``method="ghost"`` only)."""


def rule_for(module: nn.Module) -> Rule | None:
    """The dedicated rule for `module`, or None when only the generic fallback applies."""
    return next((r for r in RULES if r.matches(module)), None)
