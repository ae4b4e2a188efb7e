"""Per-prediction uncertainty of classifiers and regressors: `estimate` -> `Uncertainty`.

epistemic = σ²·‖∇θ p(x)‖² (isotropic first-order variance of the predicted probability),
aleatoric = p(1−p) (Bernoulli variance of the point prediction), total = their sum
(the two terms of the law of total variance of the indicator of the scored class).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._choice import Choice
from .layer_scale import Covariance, LayerScale, layer_scaled_sq_norms, layer_variances
from .norms.api import Method, sq_grad_norms


class Task(Choice):
    """What the model's output means."""

    CLASSIFICATION = "classification"
    """Logits [B, C]; p = softmax probability of the scored class."""
    BINARY = "binary"
    """One logit [B] or [B, 1]; p = sigmoid probability of the scored class (0 or 1)."""
    REGRESSION = "regression"
    """Mean [B] / [B, 1], or [B, 2] = (mean, log-variance); p = the predicted mean."""


@dataclass(frozen=True)
class Uncertainty:
    """Per-example uncertainty; every field is a float64 tensor of shape [B] on the CPU unless noted.

    Attributes:
        p: predicted probability of the scored class (regression: predicted mean).
        epistemic: sigma2 · ‖∇θ p‖² (layer-scaled: sigma2 · Σ_l s_l ‖∇_{θ_l} p‖²).
        aleatoric: p(1−p) (regression: predicted or given noise variance).
        total: epistemic + aleatoric.
        label: scored class, int64 [B] (regression: None).
        sq_grad_norm: ‖∇θ p‖², the raw squared gradient norm (σ² = 1).
        sigma2: the prior variance σ² used.
        covariance: "isotropic" or "layer-scaled" (with its rule, e.g. "layer-scaled:fan-in").
    """

    p: torch.Tensor
    epistemic: torch.Tensor
    aleatoric: torch.Tensor
    total: torch.Tensor
    label: torch.Tensor | None
    sq_grad_norm: torch.Tensor
    sigma2: float
    covariance: str = Covariance.ISOTROPIC.value


def _target(target: Any, out: torch.Tensor) -> torch.Tensor:
    """The given classes as int64 on the output's device (a list, array or tensor anywhere)."""
    return torch.as_tensor(target, device=out.device).long()


def _checked_sigma2(sigma2: Any) -> float:
    """σ² as a float; a non-numeric, non-finite or negative value raises, naming it."""
    scalar = isinstance(sigma2, numbers.Real) or (
        isinstance(sigma2, torch.Tensor) and sigma2.numel() == 1 and not sigma2.is_complex())
    if isinstance(sigma2, bool) or not scalar:
        raise TypeError(f"sigma2 must be a real number (the prior variance), got {sigma2!r}")
    value = float(sigma2)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"sigma2 must be a finite number >= 0, got {sigma2!r}")
    return value


def _forward(model: nn.Module, x: Any) -> torch.Tensor:
    out = model(**x) if isinstance(x, Mapping) else model(x)
    if not isinstance(out, torch.Tensor):
        out = getattr(out, "logits", None)
        if out is None:
            raise TypeError("model output must be a tensor or have a .logits tensor")
    return out


def estimate(
    model: nn.Module,
    x: Any,
    *,
    task: str | Task = Task.CLASSIFICATION,
    target: torch.Tensor | None = None,
    sigma2: float = 1.0,
    noise_var: float | torch.Tensor | None = None,
    method: str | Method = Method.AUTO,
    params: Any = None,
    covariance: str | Covariance = Covariance.ISOTROPIC,
    layer_scale: str | LayerScale = LayerScale.WEIGHT_VARIANCE,
) -> Uncertainty:
    """Epistemic, aleatoric and total uncertainty of each prediction, one forward + backward.

    Args:
        model: a classifier (logits), binary classifier (one logit) or regressor.
        x: the input batch: a tensor (``model(x)``) or a mapping (``model(**x)``).
        task: "classification", "binary" or "regression".
        target: int [B]: the class to score instead of the predicted one (classification,
            binary).
        sigma2: isotropic parameter variance σ² (a finite real number >= 0); scales epistemic
            only (no rank metric changes).
        noise_var: regression noise variance when the model does not predict one.
        method: norm engine, see `Method`.
        params: parameter selection, see `sq_grad_norms`.
        covariance: "isotropic" (σ²I) or "layer-scaled" (σ² blockdiag(s_l I), data-free s_l
            from the selected weights by `layer_variances`; same backward, no extra pass).
        layer_scale: the rule of s_l under "layer-scaled": "weight-variance" or "fan-in".

    Returns:
        An `Uncertainty` of float64 [B] tensors.

    Raises:
        TypeError: a non-numeric `sigma2`.
        ValueError: a non-finite or negative `sigma2`; a one-logit model under
            ``task="classification"`` (use "binary"); an output of the wrong shape for `task`.
    """
    t = Task.parse(task)
    cov = Covariance.parse(covariance)
    rule = LayerScale.parse(layer_scale)
    sigma2 = _checked_sigma2(sigma2)
    saved: dict[str, torch.Tensor] = {}

    def fn(m: nn.Module, batch: Any) -> torch.Tensor:
        out = _forward(m, batch)
        if t is Task.REGRESSION:
            if out.dim() == 2 and out.shape[1] == 2:
                saved["noise"] = out[:, 1].detach().double().exp()
                out = out[:, 0]
            elif out.dim() == 2 and out.shape[1] == 1:
                out = out[:, 0]
            elif out.dim() != 1:
                raise ValueError(f"regression output must be [B], [B,1] or [B,2]; got {list(out.shape)}")
            saved["p"] = out.detach().double()
            return out
        if t is Task.BINARY:
            z = out.reshape(out.shape[0], -1)
            if z.shape[1] != 1:
                raise ValueError(f"binary task needs one logit per example; got {list(out.shape)}")
            z = z[:, 0]
            label = (z.detach() > 0).long() if target is None else _target(target, z)
            logp = nn.functional.logsigmoid(torch.where(label == 1, z, -z))
        else:
            if out.dim() != 2:
                raise ValueError(f"classification output must be logits [B, C]; got {list(out.shape)}")
            if out.shape[1] == 1:
                raise ValueError(
                    "classification needs logits [B, C] with C >= 2; this model returns one logit "
                    "per example ([B, 1]), whose softmax is always 1 (p = 1, no uncertainty). "
                    "For a one-logit binary classifier use task='binary' (p = sigmoid(logit))"
                )
            label = out.detach().argmax(1) if target is None else _target(target, out)
            logp = out.log_softmax(1).gather(1, label[:, None])[:, 0]
        saved["label"] = label.cpu()
        saved["p"] = logp.detach().double().exp().cpu()
        # differentiate log p, then ‖∇p‖² = p²‖∇log p‖²: stable where p itself underflows
        return logp

    scaled = cov is Covariance.LAYER_SCALED
    res = sq_grad_norms(model, fn, x, method=method, params=params, by_param=scaled)
    norms, weighted = res, res
    if scaled:
        norms, per = res
        weighted = layer_scaled_sq_norms(per, layer_variances(model, rule=rule, params=per))
    p = saved["p"].cpu()
    if t is Task.REGRESSION:
        g2, w2 = norms, weighted
        if "noise" in saved:
            alea = saved["noise"].cpu()
        elif noise_var is not None:
            alea = torch.as_tensor(noise_var, dtype=torch.float64, device="cpu")
            alea = alea.expand_as(p).clone()
        else:
            raise ValueError("regression needs noise_var when the model predicts no variance")
        label = None
    else:
        g2, w2 = p.square() * norms, p.square() * weighted
        alea = p * (1 - p)
        label = saved["label"]
    epi = sigma2 * w2.cpu()
    return Uncertainty(
        p=p, epistemic=epi, aleatoric=alea, total=epi + alea, label=label,
        sq_grad_norm=g2, sigma2=float(sigma2),
        covariance=f"{cov.value}:{rule.value}" if scaled else cov.value,
    )
