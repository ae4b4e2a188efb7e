"""The same tanh MLP in torch (for isograd's estimates) and in JAX (for NumPyro's sampler).

Parameterisation (NTK style): each layer computes ``W (h / sqrt(fan_in)) + b``, tanh between
layers, a linear output. Every parameter has the same isotropic prior N(0, σ_p² I), exactly the
covariance the GN estimate σ_p²‖∇p‖² assumes; the 1/sqrt(fan_in) factor, part of the
architecture, keeps the prior over functions of the same scale at every width, so a width sweep
compares like with like (with a plain parameterisation and σ_p = 1 a width-128 net would have
prior logits of standard deviation ~11).

Both nets read one flat parameter vector θ in torch's `named_parameters` order
([W0, b0, W1, b1, ...], W as [out, in]); `test_nets.py` checks they agree to float64 precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class MLPSpec:
    """Architecture: `depth` hidden tanh layers of `width` units (depth 0: a linear model)."""

    in_dim: int
    width: int
    depth: int
    out_dim: int

    @property
    def sizes(self) -> list[int]:
        return [self.in_dim] + [self.width] * self.depth + [self.out_dim]

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """Parameter shapes in flat-vector order: W0 [out, in], b0 [out], W1, b1, ..."""
        s = self.sizes
        out: list[tuple[int, ...]] = []
        for a, b in zip(s[:-1], s[1:], strict=True):
            out += [(b, a), (b,)]
        return out

    @property
    def n_params(self) -> int:
        return int(sum(math.prod(s) for s in self.shapes))


class TorchMLP(nn.Module):
    """The torch twin: `forward(x [B, in_dim]) -> [B, out_dim]` (float64 by default)."""

    def __init__(self, spec: MLPSpec, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.spec = spec
        s = spec.sizes
        self.layers = nn.ModuleList(
            nn.Linear(a, b, dtype=dtype) for a, b in zip(s[:-1], s[1:], strict=True)
        )
        self.scales = [1.0 / math.sqrt(a) for a in s[:-1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        last = len(self.layers) - 1
        for i, (layer, c) in enumerate(zip(self.layers, self.scales, strict=True)):
            h = layer(h * c)
            if i < last:
                h = torch.tanh(h)
        return h

    def get_flat(self) -> np.ndarray:
        """θ as a float64 numpy vector [n_params]."""
        return torch.cat([p.detach().reshape(-1) for p in self.parameters()]).double().numpy()

    def set_flat(self, theta: np.ndarray | torch.Tensor) -> None:
        """Load θ [n_params] into the parameters (in place)."""
        t = torch.as_tensor(np.asarray(theta))
        if t.numel() != self.spec.n_params:
            raise ValueError(f"θ has {t.numel()} entries; the net has {self.spec.n_params}")
        i = 0
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(t[i : i + p.numel()].reshape(p.shape).to(p.dtype))
                i += p.numel()


def jax_apply(spec: MLPSpec, theta, x):
    """The JAX twin: θ [n_params], x [B, in_dim] -> [B, out_dim]; traceable and vmappable."""
    import jax.numpy as jnp

    sizes = spec.sizes
    h, i = x, 0
    n_layers = len(sizes) - 1
    for layer, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        w = theta[i : i + a * b].reshape(b, a)
        i += a * b
        bias = theta[i : i + b]
        i += b
        h = (h / math.sqrt(a)) @ w.T + bias
        if layer < n_layers - 1:
            h = jnp.tanh(h)
    return h


def neg_log_posterior(
    model: TorchMLP, x: torch.Tensor, y: torch.Tensor, task: str, sigma_p: float,
    noise_var: float | None,
) -> torch.Tensor:
    """Summed negative log-likelihood + ‖θ‖² / (2σ_p²) (constants dropped): the MAP loss."""
    out = model(x)
    if task == "binary":
        nll = nn.functional.binary_cross_entropy_with_logits(out[:, 0], y.double(), reduction="sum")
    elif task == "classification":
        nll = nn.functional.cross_entropy(out, y, reduction="sum")
    else:
        if noise_var is None:
            raise ValueError("regression needs noise_var")
        nll = 0.5 * (out[:, 0] - y).square().sum() / noise_var
    prior = sum(p.square().sum() for p in model.parameters()) / (2 * sigma_p**2)
    return nll + prior


def fit_map(
    spec: MLPSpec, x: np.ndarray, y: np.ndarray, task: str, *, sigma_p: float = 1.0,
    noise_var: float | None = None, seed: int = 0, max_iter: int = 1500,
) -> tuple[TorchMLP, dict[str, float]]:
    """θ* = argmax of the posterior (the prior acting as weight decay), by full-batch L-BFGS.

    Starts from a draw of the prior (seeded). Returns the model (eval mode) and a dict with the
    final loss and gradient norm, so a bad optimum is visible rather than silent.
    """
    gen = torch.Generator().manual_seed(seed)
    model = TorchMLP(spec)
    model.set_flat(sigma_p * torch.randn(spec.n_params, generator=gen, dtype=torch.float64))
    xt = torch.as_tensor(x, dtype=torch.float64)
    yt = torch.as_tensor(y)
    opt = torch.optim.LBFGS(
        model.parameters(), lr=1.0, max_iter=max_iter, tolerance_grad=1e-6,
        tolerance_change=1e-13, history_size=50, line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = neg_log_posterior(model, xt, yt, task, sigma_p, noise_var)
        loss.backward()
        return loss

    opt.step(closure)
    loss = closure().detach()
    gnorm = math.sqrt(sum(float(p.grad.square().sum()) for p in model.parameters()))
    for p in model.parameters():
        p.grad = None
    model.eval()
    return model, {"map_loss": float(loss), "map_grad_norm": gnorm}
