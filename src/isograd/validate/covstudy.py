"""The covariance study: which Σ in gᵀΣg tracks the MCMC variance, and why isotropy might.

Same problems, nets, MAP points θ* and NUTS chains as the agreement study (`study.fit_config`,
`mcmc.sample_posterior` with the same seeds): per problem × depth × width, the epistemic
variance under each covariance of `COVARIANCES`, compared with the MCMC variance (Pearson,
Spearman, distortion near / far from the data) and, in parameter space, with the posterior
covariance of the mode-aligned NUTS draws (alignment). Per configuration also the spectra of
that posterior covariance and of the training GGN (`spectra` records). Each configuration
writes DIR/runs/<id>.json and .npz; a rerun with the same settings skips it (resumable).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from .covariances import COVARIANCES
from .problems import Problem, make_problem
from .study import (
    COVARIANCE_STUDY,
    RHAT_OK,
    StudyConfig,
    correlations,
    fit_config,
    n_params,
    run_configs,
    study_setup,
)


def _data_sets(pb: Problem, model, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """The non-training inputs (and labels where the form needs them)."""
    from .covariances import model_labels

    n = len(pb.x_train)
    fresh = torch.as_tensor(make_problem(pb.name, seed=seed + 7919, n_train=n, n_heldout=1,
                                         grid=2).x_train)
    rng = np.random.default_rng(seed + 31)
    box = torch.as_tensor(rng.uniform(-3, 3, size=(n, pb.in_dim)))
    x_tr = torch.as_tensor(pb.x_train)
    return {
        "fresh-ggn": (fresh, None),
        "fresh-sampled": (fresh, model_labels(model, fresh, pb.task, pb.noise_var, seed)),
        "shifted": (x_tr + 1.0, None),
        "scaled": (x_tr * 2.0, None),
        "uniform": (box, None),
        "eval-points": (torch.as_tensor(pb.x_eval), None),
    }


def _named_vector(scales: dict[str, float], module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([torch.full((p.numel(),), scales[n], dtype=torch.float64)
                      for n, p in module.named_parameters()])


def covariance_matrices(pb: Problem, model, sigma_p: float, seed: int) -> dict[str, torch.Tensor]:
    """Every Σ of `COVARIANCES` in NTK coordinates: dense [P, P] or a diagonal [P]."""
    from ..layer_scale import layer_variances
    from .covariances import (
        diagonal_laplace,
        empirical_fisher,
        ggn,
        kfac_laplace,
        laplace_form,
        sp_prior_mean_variance,
        sp_scale,
        sp_twin,
    )

    x_tr, y_tr = torch.as_tensor(pb.x_train), torch.as_tensor(pb.y_train)
    p = sum(q.numel() for q in model.parameters())
    f_train = ggn(model, x_tr, pb.task, pb.noise_var)
    out: dict[str, torch.Tensor] = {
        "isotropic": torch.full((p,), sigma_p**2, dtype=torch.float64),
        "laplace-train": laplace_form(f_train, sigma_p),
        "efisher-train": laplace_form(empirical_fisher(model, x_tr, y_tr, pb.task, pb.noise_var),
                                      sigma_p),
    }
    for name, (x, y) in _data_sets(pb, model, seed).items():
        f = ggn(model, x, pb.task, pb.noise_var) if y is None else empirical_fisher(
            model, x, y, pb.task, pb.noise_var)
        out[name] = laplace_form(f, sigma_p)
    out["diagonal"] = diagonal_laplace(f_train, sigma_p)
    out["kfac"] = kfac_laplace(model, x_tr, pb.task, pb.noise_var, sigma_p)
    sp = sp_twin(model)
    c2 = sp_scale(model).square()
    s2_sp = sp_prior_mean_variance(model, sigma_p)
    for rule in ("weight-variance", "fan-in"):
        out[f"layer-scaled:{rule}"] = sigma_p**2 * _named_vector(layer_variances(model, rule=rule),
                                                                 model)
        out[f"sp-layer-scaled:{rule}"] = s2_sp * _named_vector(layer_variances(sp, rule=rule),
                                                               sp) / c2
    out["sp-isotropic"] = s2_sp / c2
    return {k: out[k] for k in COVARIANCES}


def front_door_variances(pb: Problem, model, label: torch.Tensor, sigma_p: float) -> dict[str, np.ndarray]:
    """The diagonal covariances through `isograd.estimate` itself (NTK net and its SP twin)."""
    import isograd

    from .covariances import sp_prior_mean_variance, sp_twin

    x = torch.as_tensor(pb.x_eval)
    kw = {"task": pb.task, "target": None if pb.task == "regression" else label,
          "noise_var": pb.noise_var}
    sp = sp_twin(model)
    s2_sp = sp_prior_mean_variance(model, sigma_p)
    out = {"isotropic": isograd.estimate(model, x, sigma2=sigma_p**2, **kw).epistemic,
           "sp-isotropic": isograd.estimate(sp, x, sigma2=s2_sp, **kw).epistemic}
    for rule in ("weight-variance", "fan-in"):
        out[f"layer-scaled:{rule}"] = isograd.estimate(
            model, x, sigma2=sigma_p**2, covariance="layer-scaled", layer_scale=rule, **kw).epistemic
        out[f"sp-layer-scaled:{rule}"] = isograd.estimate(
            sp, x, sigma2=s2_sp, covariance="layer-scaled", layer_scale=rule, **kw).epistemic
    return {k: v.numpy() for k, v in out.items()}


def run_covariance_config(pb: Problem, depth: int, width: int, cfg: StudyConfig) -> tuple[list[dict], dict, dict]:
    """One problem × architecture: every covariance against NUTS.

    Returns:
        (rows, spectra, arrays): one row per covariance; one spectra record; per-point arrays.
    """
    from .covariances import (
        alignment,
        distortion,
        ggn,
        near_mask,
        posterior_covariance,
        quad_diag,
        spectrum_stats,
    )
    from .laplace import prob_grads
    from .mcmc import reference_from_draws, sample_posterior

    fit = fit_config(pb, depth, width, cfg)
    model, label, spec = fit.model, fit.label, fit.spec
    t0 = time.perf_counter()
    g = prob_grads(model, torch.as_tensor(pb.x_eval), pb.task, label)  # [M, P]
    sigmas = covariance_matrices(pb, model, cfg.sigma_p, fit.seed)
    est = {k: quad_diag(g, s).numpy() for k, s in sigmas.items()}
    # the diagonal ones again through the library's front door: the study measures what users get
    for k, v in front_door_variances(pb, model, label, cfg.sigma_p).items():
        if not np.allclose(v, est[k], rtol=1e-8, atol=1e-300):
            raise RuntimeError(f"{k}: estimate() and the explicit gᵀΣg disagree")
        est[k] = v
    cov_seconds = time.perf_counter() - t0
    theta, stats = sample_posterior(
        spec, pb.task, pb.x_train, pb.y_train, sigma_p=cfg.sigma_p, noise_var=pb.noise_var,
        settings=cfg.mcmc, seed=fit.seed,
    )
    ref = reference_from_draws(spec, pb.task, theta, stats, pb.x_eval, label.numpy())
    theta_map = model.get_flat()
    post, mode_dist = posterior_covariance(theta, spec.sizes, theta_map)
    post_eig, post_vecs = np.linalg.eigh(post)
    near = near_mask(pb.x_eval, pb.x_train)
    held = slice(pb.n_grid, None)
    base = {"problem": pb.name, "task": pb.task, "depth": depth, "width": width,
            "n_params": spec.n_params, "rhat_max": ref.rhat_max,
            "converged": bool(ref.rhat_max <= RHAT_OK), "ess_min": ref.ess_min,
            "mode_distance": mode_dist}
    rows = []
    for name, v in est.items():
        r, rho = correlations(v, ref.var)
        r_ho, rho_ho = correlations(v[held], ref.var[held])
        sig = sigmas[name].numpy()
        rows.append({**base, "covariance": name, "pearson": r, "spearman": rho,
                     "pearson_heldout": r_ho, "spearman_heldout": rho_ho,
                     **distortion(v, ref.var, near), **alignment(sig, post_vecs, post_eig, post)})
    gm = g.numpy()
    f_eig = np.linalg.eigvalsh(ggn(model, torch.as_tensor(pb.x_train), pb.task,
                                   pb.noise_var).numpy())
    lap_eig = np.linalg.eigvalsh(sigmas["laplace-train"].numpy())
    spectra = {**base, **spectrum_stats(post_eig, "post"), **spectrum_stats(f_eig, "ggn"),
               **spectrum_stats(lap_eig, "laplace"), "n_draws": ref.n_draws,
               "ggn_top_times_prior": float(f_eig.max() * cfg.sigma_p**2),
               "covariance_seconds": cov_seconds, "mcmc_seconds": ref.seconds}
    for tag, mat in (("post", post), ("laplace", sigmas["laplace-train"].numpy())):
        v_full = np.einsum("mp,pq,mq->m", gm, mat, gm)
        v_iso = np.trace(mat) / len(mat) * np.square(gm).sum(1)
        spectra[f"iso_explained_{tag}"] = correlations(v_iso, v_full)[0] ** 2
        spectra[f"iso_share_{tag}"] = float(v_iso.sum() / v_full.sum())
    spectra["mcmc_explained_by_post"] = correlations(
        np.einsum("mp,pq,mq->m", gm, post, gm), ref.var)[0] ** 2
    arrays = {"x_train": pb.x_train, "x_eval": pb.x_eval, "n_grid": np.int64(pb.n_grid),
              "grid_shape": np.asarray(pb.grid_shape), "near": near, "mcmc_var": ref.var,
              "post_eig": post_eig, "ggn_eig": f_eig,
              **{f"est/{k}": v for k, v in est.items()}}
    return rows, spectra, arrays


def run_covariance_study(
    out: str | Path, cfg: StudyConfig | None = None, *, progress: bool = True,
    command: str | None = None,
) -> list[dict]:
    """Run (or resume) the covariance study and write its report into `out`.

    Writes out/covariance.json (one record per problem × depth × width × covariance),
    out/spectra.json, out/covariance.md, out/spectra.png, out/maps/<problem>.png and out/runs/.

    Returns:
        The records of covariance.json.
    """
    cfg = cfg or COVARIANCE_STUDY
    out = Path(out)
    with study_setup(cfg, out) as (runs, fp, t_start):
        # smallest nets first, every problem at each size: an interrupted run covers all problems
        todo = [(p, d, w) for w in sorted(cfg.widths) for d in sorted(cfg.depths)
                for p in cfg.problems if n_params(p, d, w) <= cfg.max_params]
        skipped = [(p, d, w) for p in cfg.problems for d in cfg.depths for w in cfg.widths
                   if n_params(p, d, w) > cfg.max_params]

        def compute(pb: Problem, depth: int, width: int) -> tuple[dict, dict]:
            new, spec_row, arrays = run_covariance_config(pb, depth, width, cfg)
            return {"rows": new, "spectra": spec_row}, arrays

        def summary(rec: dict) -> str:
            iso = next(r for r in rec["rows"] if r["covariance"] == "isotropic")
            lap = next(r for r in rec["rows"] if r["covariance"] == "laplace-train")
            return (f"{iso['problem']} d{iso['depth']} w{iso['width']}: isotropic "
                    f"ρ={iso['spearman']:.2f} laplace ρ={lap['spearman']:.2f} | R-hat "
                    f"{iso['rhat_max']:.3f} | MCMC {rec['spectra']['mcmc_seconds']:.0f} s")

        records = run_configs(todo, runs, fp, cfg, compute, desc="covariance",
                              progress=progress, summary=summary)
        rows = [r for rec in records for r in rec["rows"]]
        spectra = [rec["spectra"] for rec in records]
        from .covreport import write_covariance_report

        (out / "covariance.json").write_text(json.dumps(rows, indent=1))
        (out / "spectra.json").write_text(json.dumps(spectra, indent=1))
        write_covariance_report(out, rows, spectra, cfg, command=command, skipped=skipped,
                                seconds=time.perf_counter() - t_start)
    return rows
