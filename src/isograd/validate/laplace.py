"""The Laplace comparator: Var[p(x)] ≈ gᵀ (H + σ_p⁻² I)⁻¹ g at θ*, g = ∇_θ p(x).

H is the curvature of the summed negative log-likelihood of the training set:
- "ggn" (the study's choice): the generalised Gauss-Newton Jᵀ Λ J (Λ: Hessian of the loss in the
  network outputs: p(1−p) for a sigmoid, diag(π) − ππᵀ for a softmax, 1/σ_n² for Gaussian noise).
  Always positive semi-definite, so the posterior precision is invertible at any θ*. Computed by
  Woodbury in the N·K-dimensional output space, never forming a P × P matrix:
  gᵀ(σ⁻² I + ĴᵀĴ)⁻¹g = σ²‖g‖² − σ² uᵀ(σ⁻² I + ĴĴᵀ)⁻¹u, Ĵ = Λ^½ J, u = Ĵ g.
  The first term is the GN estimate itself: Laplace = GN minus what the training data explain.
- "hessian": the exact Hessian of the loss, dense (P × P), for small nets only (tests, checks);
  it equals the GGN when the net is linear in θ or the residuals vanish.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, hessian, jacrev, vmap

from .nets import TorchMLP

MAX_DENSE_PARAMS = 4000  # 4000² float64 = 128 MB: beyond that the dense Hessian is refused


def flat_fn(model: nn.Module):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    theta0 = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])

    def call(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(theta, sizes)
        params = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes, strict=True)}
        return functional_call(model, params, (x,))

    return call, theta0


def _scored(out: torch.Tensor, task: str, label: torch.Tensor) -> torch.Tensor:
    """p of the scored class per example (regression: the mean): [B]."""
    if task == "binary":
        z = out[:, 0]
        return torch.sigmoid(torch.where(label == 1, z, -z))
    if task == "classification":
        return out.softmax(-1).gather(1, label[:, None])[:, 0]
    return out[:, 0]


def prob_grads(
    model: TorchMLP, x: torch.Tensor, task: str, label: torch.Tensor, chunk: int = 256
) -> torch.Tensor:
    """g = ∇_θ p(x) for each row of x: [M, P] float64 (computed `chunk` rows at a time)."""
    call, theta0 = flat_fn(model)

    def one(theta, xi, li):
        return _scored(call(theta, xi[None]), task, li[None])[0]

    g = vmap(jacrev(one), in_dims=(None, 0, 0))
    return torch.cat([g(theta0, x[i : i + chunk], label[i : i + chunk]) for i in range(0, len(x), chunk)])


def sqrt_lambda(out: torch.Tensor, task: str, noise_var: float | None) -> torch.Tensor:
    """Λ^½ per training example: [N, K, K] (symmetric square root of the output-space Hessian)."""
    n, k = out.shape
    if task == "binary":
        p = torch.sigmoid(out[:, 0])
        return (p * (1 - p)).sqrt()[:, None, None]
    if task == "classification":
        pi = out.softmax(-1)
        lam = torch.diag_embed(pi) - pi[:, :, None] * pi[:, None, :]
        w, v = torch.linalg.eigh(lam)
        return v @ torch.diag_embed(w.clamp_min(0).sqrt()) @ v.transpose(1, 2)
    if noise_var is None:
        raise ValueError("regression needs noise_var")
    return torch.full((n, 1, 1), noise_var**-0.5, dtype=out.dtype)


def laplace_variance(
    model: TorchMLP, x_train: torch.Tensor, y_train: torch.Tensor, x_eval: torch.Tensor,
    task: str, label: torch.Tensor, *, sigma_p: float = 1.0, noise_var: float | None = None,
    curvature: str = "ggn",
) -> torch.Tensor:
    """Laplace predictive variance of the scored p at each evaluation point.

    Args:
        model: the MAP net θ*.
        x_train, y_train: [N, D], [N] (y_train is used by the exact Hessian only).
        x_eval: [M, D].  label: [M] scored class (ignored for regression).
        curvature: "ggn" (Woodbury, any size) or "hessian" (dense, P <= MAX_DENSE_PARAMS).

    Returns:
        [M] float64 variances.
    """
    model = model.double()
    g = prob_grads(model, x_eval.double(), task, label)  # [M, P]
    s2 = sigma_p**2
    call, theta0 = flat_fn(model)
    if curvature == "ggn":
        with torch.no_grad():
            out = call(theta0, x_train.double())
        jac = jacrev(lambda t: call(t, x_train.double()))(theta0)  # [N, K, P]
        jhat = (sqrt_lambda(out, task, noise_var) @ jac).reshape(-1, jac.shape[-1])  # [NK, P]
        kmat = jhat @ jhat.T + torch.eye(jhat.shape[0], dtype=jhat.dtype) / s2
        chol = torch.linalg.cholesky(kmat)
        u = jhat @ g.T  # [NK, M]
        w = torch.cholesky_solve(u, chol)
        return s2 * g.square().sum(1) - s2 * (u * w).sum(0)
    if curvature == "hessian":
        n_params = theta0.numel()
        if n_params > MAX_DENSE_PARAMS:
            raise ValueError(f"dense Hessian refused: {n_params} parameters > {MAX_DENSE_PARAMS}")

        def nll(t: torch.Tensor) -> torch.Tensor:
            out = call(t, x_train.double())
            if task == "binary":
                return nn.functional.binary_cross_entropy_with_logits(
                    out[:, 0], y_train.double(), reduction="sum"
                )
            if task == "classification":
                return nn.functional.cross_entropy(out, y_train, reduction="sum")
            return 0.5 * (out[:, 0] - y_train).square().sum() / noise_var

        prec = hessian(nll)(theta0) + torch.eye(n_params, dtype=torch.float64) / s2
        sol = torch.linalg.solve(prec, g.T)  # indefinite precision (non-convex θ*) is not hidden
        return (g.T * sol).sum(0)
    raise ValueError(f"unknown curvature {curvature!r}; allowed: 'ggn', 'hessian'")


def closed_form_linear_regression(
    x_train: np.ndarray, x_eval: np.ndarray, *, sigma_p: float, noise_var: float
) -> np.ndarray:
    """Exact posterior variance of the mean for the depth-0 net (features [x/√D, 1]): [M].

    Prior θ ~ N(0, σ_p² I), y = φ(x)ᵀθ + ε, ε ~ N(0, σ_n²): Var[f(x)] = φᵀ(ΦᵀΦ/σ_n² + I/σ_p²)⁻¹φ.
    """
    d = x_train.shape[1]

    def phi(x: np.ndarray) -> np.ndarray:
        return np.concatenate([x / np.sqrt(d), np.ones((len(x), 1))], 1)

    f_tr, f_ev = phi(x_train), phi(x_eval)
    prec = f_tr.T @ f_tr / noise_var + np.eye(d + 1) / sigma_p**2
    return np.einsum("md,md->m", f_ev, np.linalg.solve(prec, f_ev.T).T)
