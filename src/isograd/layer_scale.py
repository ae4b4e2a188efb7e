"""The data-free layer-scaled covariance: Σ = σ²·blockdiag(s_l I), one scale per parameter tensor.

An isotropic σ²I in raw parameters depends on the parameterisation: under the standard
parameterisation of pretrained networks, layers differ in scale by orders of magnitude, so one
σ² overstates the uncertainty of small-scale layers relative to large-scale ones. The
layer-scaled covariance takes each block's relative scale s_l from the network itself, with no
data, and the epistemic term becomes

    σ² · Σ_l s_l ‖∇_{θ_l} p‖²

from the per-parameter squared norms of the same backward pass (`sq_grad_norms(...,
by_param=True)`): no extra pass. The scales are normalised so that their parameter-count-weighted
mean is 1; "layer-scaled" and "isotropic" then sit on the same σ² scale (equal when all s_l = 1).

Blocks and the 1-D rule. One block per parameter tensor. A tensor with two or more dimensions (a
weight matrix, a conv kernel, an embedding table) gets its own scale. A tensor with fewer (bias,
norm gain, scalar) is not a sample of one initialisation distribution: a gain starts at all ones
and a bias at all zeros, so its empirical variance is ~0 and says nothing about its scale. It
therefore takes the scale of its own module's weight (the parameter-count-weighted mean over the
module's tensors of two or more dimensions: a Linear's bias shares the Linear's scale, as in
PyTorch's default bias initialisation). A module with no such tensor (LayerNorm, RMSNorm, a
standalone scalar) acts elementwise: its tensors get the mean square E[θ²] under
"weight-variance" (the scale the gain operates at: 1 for a gain of ones) and 1/fan_in = 1 under
"fan-in". Modules are read from the names (the prefix before the last "."), so a dict of named
tensors works as well as a model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ._choice import Choice

_CHUNK = 1 << 20  # elements per float64 accumulation chunk: no full-size float64 copy of a table


class Covariance(Choice):
    """The parameter covariance behind the epistemic term gᵀΣg."""

    ISOTROPIC = "isotropic"
    """Σ = σ² I: epistemic = σ² ‖∇θ p‖² (the paper's estimator)."""
    LAYER_SCALED = "layer-scaled"
    """Σ = σ² blockdiag(s_l I), s_l from the weights (see `LayerScale`): σ² Σ_l s_l ‖∇_l p‖²."""


class LayerScale(Choice):
    """How the data-free per-tensor scale s_l is taken from the network."""

    WEIGHT_VARIANCE = "weight-variance"
    """s_l ∝ the empirical variance of tensor l's entries at θ* (1-D tensors: see module doc)."""
    FAN_IN = "fan-in"
    """s_l ∝ 1/fan_in, torch's convention (shape[1] · kernel size); elementwise tensors: 1."""

    @classmethod
    def noun(cls) -> str:
        return "layer scale rule"


def _moments(t: torch.Tensor) -> tuple[float, float]:
    """(mean, mean square) of the entries, accumulated in float64 chunk by chunk."""
    if t.device.type == "meta":
        raise ValueError("the weight-variance rule needs the weights' values; they are on the "
                         "meta device (the fan-in rule needs only shapes)")
    local = getattr(t, "to_local", None)  # a DTensor (FSDP2 shard): this rank's entries
    flat = (local() if local is not None else t).detach().reshape(-1)
    s = torch.zeros((), dtype=torch.float64, device=flat.device)
    s2 = torch.zeros((), dtype=torch.float64, device=flat.device)
    for i in range(0, flat.numel(), _CHUNK):
        c = flat[i : i + _CHUNK].double()
        s += c.sum()
        s2 += c.square().sum()
    n = torch.tensor(float(flat.numel()), dtype=torch.float64, device=flat.device)
    if local is not None:  # sums over every rank's entries (replicas scale all three alike)
        import torch.distributed as dist

        both = torch.stack([s, s2, n])
        for group in t.device_mesh.get_all_groups():
            dist.all_reduce(both, group=group)
        s, s2, n = both
    n = max(float(n), 1.0)
    return float(s) / n, float(s2) / n


def _fan_in(t: torch.Tensor, owner: nn.Module | None) -> int:
    """Inputs each output of the layer reads: torch's convention unless the module says better."""
    if isinstance(owner, nn.Embedding):
        return 1  # a lookup: each output is one entry of the table
    if type(owner).__name__ == "Conv1D" and type(owner).__module__.startswith("transformers"):
        return int(t.shape[0])  # GPT-2's Conv1D stores its weight as [in, out]
    return int(t.shape[1] * (t[0][0].numel() if t.dim() > 2 else 1))


def _own_scale(t: torch.Tensor, rule: LayerScale, owner: nn.Module | None) -> float:
    """The scale of a tensor of two or more dimensions under `rule` (not yet normalised)."""
    if rule is LayerScale.FAN_IN:
        return 1.0 / _fan_in(t, owner)
    mean, sq = _moments(t)
    return max(sq - mean * mean, 0.0)


def _owners(model: nn.Module, named: Mapping[str, torch.Tensor]) -> dict[str, nn.Module]:
    out: dict[str, nn.Module] = {}
    for mname, mod in model.named_modules():
        for pname, _ in mod.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            if full in named:
                out.setdefault(full, mod)
    return out


def _named(model_or_named_params: Any) -> dict[str, torch.Tensor]:
    if isinstance(model_or_named_params, nn.Module):
        return dict(model_or_named_params.named_parameters())  # tied tensors once
    if isinstance(model_or_named_params, Mapping):
        items = dict(model_or_named_params)
    elif isinstance(model_or_named_params, Iterable):
        items = dict(model_or_named_params)
    else:
        raise TypeError("layer_variances takes a module, a {name: tensor} mapping or "
                        "(name, tensor) pairs")
    bad = [n for n, t in items.items() if not isinstance(n, str) or not isinstance(t, torch.Tensor)]
    if bad:
        raise TypeError(f"layer_variances needs str names and tensors; bad entries: {bad[:5]}")
    return items


def layer_variances(
    model_or_named_params: nn.Module | Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
    *,
    rule: str | LayerScale = LayerScale.WEIGHT_VARIANCE,
    params: Iterable[str] | None = None,
) -> dict[str, float]:
    """Data-free relative variance s_l of each parameter tensor, normalised to weighted mean 1.

    Args:
        model_or_named_params: a module (its `named_parameters()`, tied tensors once) or the
            named tensors that θ covers (a mapping or (name, tensor) pairs). From a module,
            the fan-in rule also reads the layer type (an embedding has fan-in 1; GPT-2's
            Conv1D stores [in, out]); from bare tensors it takes torch's convention.
        rule: "weight-variance" or "fan-in" (see `LayerScale`).
        params: only these names (θ is a selection); the normalisation runs over them.

    Returns:
        ``{name: s_l}`` with Σ_l numel_l·s_l / Σ_l numel_l = 1; a tensor whose block has zero
        scale (an all-constant weight under "weight-variance") gets 0 and contributes nothing.

    Raises:
        ValueError: unknown rule, no tensors, every scale zero, or weight values on the meta
            device under "weight-variance".
    """
    r = LayerScale.parse(rule)
    named = _named(model_or_named_params)
    if params is not None:
        wanted = list(params)
        unknown = [n for n in wanted if n not in named]
        if unknown:
            raise ValueError(f"layer_variances: unknown parameter names {unknown[:5]}")
        named = {n: named[n] for n in wanted}
    owners = (_owners(model_or_named_params, named)
              if isinstance(model_or_named_params, nn.Module) else {})
    if not named:
        raise ValueError("layer_variances: no parameter tensors given")
    raw: dict[str, float] = {}
    groups: dict[str, list[str]] = {}
    for name, t in named.items():
        groups.setdefault(name.rpartition(".")[0], []).append(name)
        if t.dim() >= 2:
            raw[name] = _own_scale(t, r, owners.get(name))
    for names in groups.values():
        mats = [n for n in names if n in raw]
        if mats:
            # a bias or gain inside a layer with a weight matrix shares that layer's scale
            share = sum(raw[n] * named[n].numel() for n in mats) / sum(named[n].numel() for n in mats)
        for n in names:
            if n in raw:
                continue
            if mats:
                raw[n] = share
            elif r is LayerScale.FAN_IN:
                raw[n] = 1.0  # elementwise: each output reads one entry
            else:
                raw[n] = _moments(named[n])[1]
    counts = {n: named[n].numel() for n in named}
    total = sum(counts.values())
    mean = sum(raw[n] * counts[n] for n in named) / total
    if not mean > 0:
        raise ValueError(f"layer_variances: every tensor has zero scale under rule {r.value!r}")
    return {n: raw[n] / mean for n in named}


def layer_scaled_sq_norms(
    per_param: Mapping[str, torch.Tensor], scales: Mapping[str, float]
) -> torch.Tensor:
    """Σ_l s_l ‖∇_{θ_l} f‖² per example, from per-parameter squared norms.

    Args:
        per_param: ``{name: Tensor[B]}``, e.g. the second output of
            ``sq_grad_norms(..., by_param=True)``.
        scales: ``{name: s_l}`` from `layer_variances` over the same tensors.

    Returns:
        Tensor[B] float64.

    Raises:
        ValueError: a tensor of `per_param` has no scale.
    """
    missing = [n for n in per_param if n not in scales]
    if missing:
        raise ValueError(f"no layer scale for parameters {missing[:5]}; compute the scales over "
                         "the same parameter selection as the norms")
    if not per_param:
        raise ValueError("layer_scaled_sq_norms: no per-parameter norms given")
    return sum(per_param[n].double() * float(scales[n]) for n in per_param)
