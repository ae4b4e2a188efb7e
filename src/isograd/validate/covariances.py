"""Explicit parameter covariances Σ [P, P] of the validation MLP, and how they compare.

Every Σ is in the coordinates of the NTK-parameterised `TorchMLP` (flat θ in
`named_parameters` order). The epistemic variance of the scored p at x is gᵀΣg, g = ∇θ p(x).

- Laplace form from any inputs D: Σ_D = (F_D + σ_p⁻² I)⁻¹ with F_D the GGN Σ_n Ĵ_nᵀĴ_n over D
  (label-free: the Fisher under the model's own predictive distribution), or the empirical
  Fisher Σ_n ∇ℓ_n ∇ℓ_nᵀ with given labels.
- Structured approximations of the training GGN: its diagonal, and KFAC (per layer
  G_l ⊗ A_l, G from the output-space-whitened pre-activation gradients, A from the layer's
  scaled inputs with a 1 appended for the bias), each with the same prior precision.
- Diagonal covariances: isotropic, layer-scaled, and their standard-parameterisation twins
  mapped into NTK coordinates (θ_sp = c ⊙ θ_ntk, c = 1/√fan_in on weights, 1 on biases, so
  Σ_ntk = diag(1/c) Σ_sp diag(1/c)).

Matrices stay dense: the study skips nets over a few thousand parameters.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.func import jacrev

from .laplace import flat_fn, sqrt_lambda
from .nets import TorchMLP

# the covariance study's Σ forms, name -> what it is (the order of the report's columns)
COVARIANCES: dict[str, str] = {
    "isotropic": "σ_p² I (GN, the paper's estimator)",
    "laplace-train": "(GGN(train) + σ_p⁻² I)⁻¹, the agreement study's Laplace",
    "efisher-train": "empirical Fisher of the training labels, same prior precision",
    "fresh-ggn": "GGN of fresh inputs from the training distribution (model's own labels)",
    "fresh-sampled": "empirical Fisher of fresh inputs, one label drawn from the model each",
    "shifted": "GGN of the training inputs shifted by +1 in every coordinate",
    "scaled": "GGN of the training inputs scaled by 2",
    "uniform": "GGN of uniform inputs over the whole evaluation box [-3, 3]^D",
    "eval-points": "GGN of the evaluation points themselves",
    "diagonal": "diagonal of the training GGN, same prior precision",
    "kfac": "KFAC (per-layer G ⊗ A) of the training GGN, same prior precision",
    "layer-scaled:weight-variance": "σ_p² blockdiag(s_l I), s_l ∝ Var(θ*_l), NTK net",
    "layer-scaled:fan-in": "σ_p² blockdiag(s_l I), s_l ∝ 1/fan_in, NTK net",
    "sp-isotropic": "σ̄² I in the standard parameterisation (W/√fan_in)",
    "sp-layer-scaled:weight-variance": "layer-scaled, weight-variance rule, on the SP twin",
    "sp-layer-scaled:fan-in": "layer-scaled, fan-in rule, on the SP twin",
}
NON_TRAINING = ("fresh-ggn", "fresh-sampled", "shifted", "scaled", "uniform", "eval-points")


def output_jacobian(
    model: TorchMLP, x: torch.Tensor, chunk: int = 128
) -> tuple[torch.Tensor, torch.Tensor]:
    """(outputs [N, K], Jacobian of the outputs in θ [N, K, P]) at θ*, `chunk` rows at a time."""
    call, theta0 = flat_fn(model)
    x = x.double()
    with torch.no_grad():
        out = call(theta0, x)
    jac = [jacrev(lambda t, xc=x[i : i + chunk]: call(t, xc))(theta0)
           for i in range(0, len(x), chunk)]
    return out, torch.cat(jac)


def whitened_jacobian(
    model: TorchMLP, x: torch.Tensor, task: str, noise_var: float | None
) -> torch.Tensor:
    """Ĵ = Λ^½ J per input: [N, K, P]; the GGN over x is Σ_n Ĵ_nᵀ Ĵ_n."""
    out, jac = output_jacobian(model, x)
    return sqrt_lambda(out, task, noise_var) @ jac


def ggn(model: TorchMLP, x: torch.Tensor, task: str, noise_var: float | None) -> torch.Tensor:
    """The GGN of the summed NLL over inputs x: [P, P] (labels do not enter)."""
    jh = whitened_jacobian(model, x, task, noise_var).reshape(-1, _n(model))
    return jh.T @ jh


def empirical_fisher(
    model: TorchMLP, x: torch.Tensor, y: torch.Tensor, task: str, noise_var: float | None
) -> torch.Tensor:
    """Σ_n ∇ℓ_n ∇ℓ_nᵀ with ℓ_n = −log p(y_n | x_n, θ) at θ*: [P, P]."""
    call, theta0 = flat_fn(model)
    x = x.double()

    def losses(t: torch.Tensor) -> torch.Tensor:
        out = call(t, x)
        if task == "binary":
            return nn.functional.binary_cross_entropy_with_logits(
                out[:, 0], y.double(), reduction="none")
        if task == "classification":
            return nn.functional.cross_entropy(out, y.long(), reduction="none")
        return 0.5 * (out[:, 0] - y.double()).square() / noise_var

    g = jacrev(losses)(theta0)  # [N, P]
    return g.T @ g


def model_labels(
    model: TorchMLP, x: torch.Tensor, task: str, noise_var: float | None, seed: int
) -> torch.Tensor:
    """One label per input drawn from the model's own predictive distribution at θ*."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        out = model(x.double())
    if task == "binary":
        return torch.bernoulli(torch.sigmoid(out[:, 0]), generator=gen).long()
    if task == "classification":
        return torch.multinomial(out.softmax(-1), 1, generator=gen)[:, 0]
    return out[:, 0] + math.sqrt(noise_var) * torch.randn(len(x), generator=gen, dtype=out.dtype)


def laplace_form(curvature: torch.Tensor, sigma_p: float) -> torch.Tensor:
    """(F + σ_p⁻² I)⁻¹: [P, P]."""
    prec = curvature + torch.eye(len(curvature), dtype=curvature.dtype) / sigma_p**2
    return torch.cholesky_inverse(torch.linalg.cholesky(prec))


def diagonal_laplace(curvature: torch.Tensor, sigma_p: float) -> torch.Tensor:
    """1 / (diag F + σ_p⁻²): the diagonal approximation's covariance, as a vector [P]."""
    return 1.0 / (curvature.diagonal() + 1.0 / sigma_p**2)


def _n(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _layer_inputs(model: TorchMLP, x: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's scaled input h/√fan_in with a column of ones appended: [N, in + 1]."""
    h, out = x.double(), []
    last = len(model.layers) - 1
    with torch.no_grad():
        for i, (layer, c) in enumerate(zip(model.layers, model.scales, strict=True)):
            out.append(torch.cat([h * c, torch.ones(len(h), 1, dtype=h.dtype)], 1))
            h = layer(h * c)
            if i < last:
                h = torch.tanh(h)
    return out


def kfac_laplace(
    model: TorchMLP, x: torch.Tensor, task: str, noise_var: float | None, sigma_p: float
) -> torch.Tensor:
    """Block-diagonal KFAC Laplace covariance of the training GGN: [P, P].

    Per layer the GGN block of the augmented weight [W | b] ([out, in + 1], row-major) is
    approximated by G ⊗ A, G = Σ_{n,k} ĝ ĝᵀ (ĝ = ∂(Λ^½ f)_k / ∂s, read off the bias columns of
    Ĵ since ∂s/∂b = I) and A = mean_n ã ãᵀ; each block is inverted with the prior precision.
    """
    jh = whitened_jacobian(model, x, task, noise_var)  # [N, K, P]
    inputs = _layer_inputs(model, x)
    sigma = torch.zeros(_n(model), _n(model), dtype=torch.float64)
    start = 0
    for layer, a_aug in zip(model.layers, inputs, strict=True):
        n_out, n_in = layer.weight.shape
        nw = n_out * n_in
        gb = jh[:, :, start + nw : start + nw + n_out].reshape(-1, n_out)  # ĝ per (n, k)
        g_mat = gb.T @ gb
        a_mat = a_aug.T @ a_aug / len(a_aug)
        block = torch.kron(g_mat, a_mat)  # index o·(in+1) + i
        # our flat order is W (o·in + i) then b (o): map it into the augmented index
        idx = torch.cat([
            (torch.arange(n_out)[:, None] * (n_in + 1) + torch.arange(n_in)[None]).reshape(-1),
            torch.arange(n_out) * (n_in + 1) + n_in,
        ])
        block = block[idx][:, idx]
        size = nw + n_out
        sigma[start : start + size, start : start + size] = laplace_form(block, sigma_p)
        start += size
    return sigma


def sp_scale(model: TorchMLP) -> torch.Tensor:
    """c [P]: θ_sp = c ⊙ θ_ntk (1/√fan_in on every weight entry, 1 on biases)."""
    parts = []
    for layer, c in zip(model.layers, model.scales, strict=True):
        parts += [torch.full((layer.weight.numel(),), c, dtype=torch.float64),
                  torch.ones(layer.bias.numel(), dtype=torch.float64)]
    return torch.cat(parts)


def sp_twin(model: TorchMLP) -> nn.Sequential:
    """The same function in the standard parameterisation: Linear layers with W/√fan_in."""
    mods: list[nn.Module] = []
    last = len(model.layers) - 1
    for i, (layer, c) in enumerate(zip(model.layers, model.scales, strict=True)):
        lin = nn.Linear(layer.in_features, layer.out_features, dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(layer.weight * c)
            lin.bias.copy_(layer.bias)
        mods.append(lin)
        if i < last:
            mods.append(nn.Tanh())
    return nn.Sequential(*mods).eval()


def sp_prior_mean_variance(model: TorchMLP, sigma_p: float) -> float:
    """Parameter-count-weighted mean of the SP prior variances (σ_p² c²): the SP σ²."""
    return float((sigma_p**2 * sp_scale(model).square()).mean())


def quad_diag(g: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """gᵀΣg per row of g [M, P], Σ dense [P, P] or a diagonal [P]: [M]."""
    if sigma.dim() == 1:
        return (g.square() * sigma).sum(1)
    return ((g @ sigma) * g).sum(1)


# ---------------------------------------------------------------- posterior samples


def align_chain(draws: np.ndarray, sizes: list[int], ref: np.ndarray) -> np.ndarray:
    """Map one chain's draws [S, P] into the mode of `ref` [P] by a signed permutation.

    Hidden tanh units are exchangeable and odd, so (permutation, sign flip) of a hidden layer's
    units leaves the function unchanged. Layer by layer, the chain's mean units (incoming
    weights, after the previous layer's map, and bias) are matched to the reference's by the
    largest |cosine| (Hungarian), the sign by the cosine's sign; the map is then applied to
    every draw. One fixed map per chain: within-chain covariances are only rotated by it.
    """
    from scipy.optimize import linear_sum_assignment

    out = draws.copy()
    mean = draws.mean(0)
    prev_perm, prev_sign = np.arange(sizes[0]), np.ones(sizes[0])
    i = 0
    n_layers = len(sizes) - 1
    for li, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        wi, bi = slice(i, i + a * b), slice(i + a * b, i + a * b + b)
        w = out[:, wi].reshape(-1, b, a)[:, :, prev_perm] * prev_sign  # columns follow inputs
        bias = out[:, bi]
        if li == n_layers - 1:  # output units are not exchangeable
            out[:, wi] = w.reshape(len(out), -1)
            break
        wm = mean[wi].reshape(b, a)[:, prev_perm] * prev_sign
        units = np.concatenate([wm, mean[bi][:, None]], 1)
        refu = np.concatenate([ref[wi].reshape(b, a), ref[bi][:, None]], 1)
        cos = (refu @ units.T) / (np.linalg.norm(refu, axis=1)[:, None]
                                  * np.linalg.norm(units, axis=1)[None] + 1e-300)
        rows, cols = linear_sum_assignment(-np.abs(cos))
        perm = cols[np.argsort(rows)]  # reference unit r takes chain unit perm[r]
        sign = np.sign(cos[np.arange(b), perm])
        sign[sign == 0] = 1
        out[:, wi] = (w[:, perm, :] * sign[None, :, None]).reshape(len(out), -1)
        out[:, bi] = bias[:, perm] * sign
        prev_perm, prev_sign = perm, sign
        i += a * b + b
    return out


def posterior_covariance(theta: np.ndarray, sizes: list[int], ref: np.ndarray) -> tuple[np.ndarray, float]:
    """Pooled within-chain covariance of mode-aligned draws [chains, S, P] -> ([P, P], distance).

    distance: median over chains of ‖aligned chain mean − ref‖ / ‖ref‖ (near 0: the chains
    explore θ*'s own mode; near or above 1: another mode, and the alignment is only nominal).
    """
    covs, dists = [], []
    for chain in theta:
        al = align_chain(chain, sizes, ref)
        covs.append(np.cov(al, rowvar=False))
        dists.append(np.linalg.norm(al.mean(0) - ref) / np.linalg.norm(ref))
    return np.mean(covs, 0), float(np.median(dists))


# ---------------------------------------------------------------- comparisons


def participation_ratio(eig: np.ndarray) -> float:
    """(Σλ)² / Σλ²: the effective rank (P for an isotropic matrix, 1 for rank one)."""
    eig = np.clip(eig, 0, None)
    return float(eig.sum() ** 2 / np.square(eig).sum())


def spectrum_stats(eig: np.ndarray, prefix: str) -> dict[str, float]:
    """Effective rank, its fraction of P, numerical rank and condition number of a spectrum."""
    eig = np.sort(np.clip(eig, 0, None))[::-1]
    tol = eig[0] * 1e-10
    pos = eig[eig > tol]
    return {
        f"{prefix}_eff_rank": participation_ratio(eig),
        f"{prefix}_eff_rank_frac": participation_ratio(eig) / len(eig),
        f"{prefix}_num_rank": int(len(pos)),
        f"{prefix}_cond": float(pos[0] / pos[-1]),
        f"{prefix}_top": float(eig[0]),
    }


def alignment(sigma: np.ndarray, post_vecs: np.ndarray, post_eig: np.ndarray, post_cov: np.ndarray,
              k: int = 10) -> dict[str, float]:
    """How Σ (dense [P, P] or diagonal [P]) lines up with the posterior covariance C.

    Returns:
        align_cos: ⟨Σ, C⟩_F / (‖Σ‖_F ‖C‖_F) (1: proportional).
        align_topk: share of tr Σ on C's top-k eigendirections (C's own share: post_topk).
        align_dir_spearman: Spearman between uᵢᵀΣuᵢ and λᵢ over all of C's eigenpairs (NaN
            for a Σ that is constant along them, e.g. isotropic).
    """
    from scipy.stats import spearmanr

    dense = np.diag(sigma) if sigma.ndim == 1 else sigma
    cos = float((dense * post_cov).sum() / (np.linalg.norm(dense) * np.linalg.norm(post_cov)))
    along = np.einsum("pi,pq,qi->i", post_vecs, dense, post_vecs)
    order = np.argsort(post_eig)[::-1]
    topk = float(along[order[:k]].sum() / np.trace(dense))
    rho = float("nan") if np.ptp(along) < 1e-12 * np.abs(along).max() else float(
        spearmanr(along, post_eig).statistic)
    return {"align_cos": cos, "align_topk": topk, "align_dir_spearman": rho}


def near_mask(x_eval: np.ndarray, x_train: np.ndarray) -> np.ndarray:
    """Evaluation points within twice the median nearest-neighbour spacing of the training set."""
    d_tr = np.linalg.norm(x_train[:, None] - x_train[None], axis=-1)
    np.fill_diagonal(d_tr, np.inf)
    radius = 2.0 * np.median(d_tr.min(1))
    d = np.linalg.norm(x_eval[:, None] - x_train[None], axis=-1).min(1)
    return d <= radius


def distortion(est: np.ndarray, ref: np.ndarray, near: np.ndarray) -> dict[str, float]:
    """log10(estimate / MCMC variance), median near the data and far from it, and their gap.

    far_minus_near > 0: the covariance overstates far-from-data variance relative to
    near-data variance (compared with MCMC); < 0: understates it. Scale-free, unlike the two
    medians.
    """
    ok = np.isfinite(est) & np.isfinite(ref) & (est > 0) & (ref > 0)
    lr = np.full(len(est), np.nan)
    lr[ok] = np.log10(est[ok] / ref[ok])
    near_v = float(np.nanmedian(lr[near])) if np.isfinite(lr[near]).any() else float("nan")
    far_v = float(np.nanmedian(lr[~near])) if np.isfinite(lr[~near]).any() else float("nan")
    return {"log_ratio_near": near_v, "log_ratio_far": far_v, "far_minus_near": far_v - near_v}
