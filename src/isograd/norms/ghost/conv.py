"""nn.Conv1d / nn.Conv2d with groups=1: a Linear layer applied to unfolded input patches.

Example b's weight gradient is ``Σ_p g_p ⊗ patch_p`` over output positions p, with the weight
viewed as [out, in·k...]: an `Outer` factor (Gram or materialised, whichever is cheaper).
Other convolutions (groups > 1, 3-d, transposed) go through the generic rule.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .factors import Dense, Factor, Outer, work_dtype
from .layout import require_batch_dim


def matches(module: nn.Module) -> bool:
    """Conv1d/Conv2d (not subclasses with their own forward) with groups=1."""
    return (
        type(module).forward in (nn.Conv1d.forward, nn.Conv2d.forward)
        and isinstance(module, (nn.Conv1d, nn.Conv2d))
        and module.groups == 1
    )


def _patches(module: nn.Conv1d | nn.Conv2d, a: Tensor) -> Tensor:
    """Unfolded input [B, positions, in·k...], exactly the windows the convolution saw."""
    one_d = isinstance(module, nn.Conv1d)
    want = 3 if one_d else 4
    require_batch_dim(module, a, want, exact=True)
    if one_d:
        a = a.unsqueeze(2)
    kernel, stride, dilation = module.kernel_size, module.stride, module.dilation
    if one_d:
        kernel, stride, dilation = (1, *kernel), (1, *stride), (1, *dilation)
    if isinstance(module.padding, str) or module.padding_mode != "zeros":
        # same as the module: explicit (possibly asymmetric or non-zero) padding, then none
        pad = module._reversed_padding_repeated_twice
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        if one_d:
            a = F.pad(a.squeeze(2), pad, mode=mode).unsqueeze(2)
        else:
            a = F.pad(a, pad, mode=mode)
        padding: tuple[int, ...] = (0, 0)
    else:
        padding = (0, *module.padding) if one_d else tuple(module.padding)
    cols = F.unfold(a, kernel, dilation=dilation, padding=padding, stride=stride)
    return cols.transpose(1, 2)


def conv_factors(
    module: nn.Module, a: Tensor, grads: Sequence[Tensor | None] | None, attrs: Sequence[str]
) -> dict[str, Factor]:
    """weight [out, in, k...] = Σ_p g_p ⊗ patch_p; bias [out] = Σ_p g_p."""
    g = None if grads is None else grads[0]
    g2 = None if g is None else g.reshape(g.shape[0], g.shape[1], -1).transpose(1, 2)
    out: dict[str, Factor] = {}
    if "weight" in attrs:
        out["weight"] = Outer(g2, _patches(module, a))
    if "bias" in attrs and g2 is not None:
        out["bias"] = Dense(g2.sum(1, dtype=work_dtype(g2)))
    return out
