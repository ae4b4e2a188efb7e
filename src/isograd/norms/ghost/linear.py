"""Linear layers: ``y = a Wᵀ + b`` (nn.Linear) and ``y = a W + b`` (GPT-2's transposed Conv1D).

Example b's weight gradient is ``Σ_t g_t a_tᵀ`` over every position t of that example (all
dimensions between the first and the last are positions), so it is an `Outer` factor; the bias
gradient ``Σ_t g_t`` is small and materialised.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .factors import Dense, Factor, Outer, work_dtype
from .layout import require_batch_dim


def _rows(x: Tensor, module: nn.Module) -> Tensor:
    require_batch_dim(module, x, 2)
    return x.reshape(x.shape[0], -1, x.shape[-1])


def _factors(module: nn.Module, a: Tensor, grads: Sequence[Tensor | None] | None,
             attrs: Sequence[str], transposed: bool) -> dict[str, Factor]:
    g = None if grads is None else grads[0]
    g2 = None if g is None else _rows(g, module)
    out: dict[str, Factor] = {}
    if "weight" in attrs:
        a2 = _rows(a, module)
        out["weight"] = Outer(a2, g2, grad="right") if transposed else Outer(g2, a2)
    if "bias" in attrs and g2 is not None:
        out["bias"] = Dense(g2.sum(1, dtype=work_dtype(g2)))  # positions summed in fp32+
    return out


def linear_factors(
    module: nn.Module, a: Tensor, grads: Sequence[Tensor | None] | None, attrs: Sequence[str]
) -> dict[str, Factor]:
    """nn.Linear: weight [out, in] = Σ_t g_t ⊗ a_t; bias [out] = Σ_t g_t."""
    return _factors(module, a, grads, attrs, transposed=False)


def conv1d_hf_factors(
    module: nn.Module, a: Tensor, grads: Sequence[Tensor | None] | None, attrs: Sequence[str]
) -> dict[str, Factor]:
    """transformers' Conv1D (weight [in, out], y = a W + b): weight = Σ_t a_t ⊗ g_t."""
    return _factors(module, a, grads, attrs, transposed=True)
