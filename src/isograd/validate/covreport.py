"""The covariance study's report: covariance.md (each covariance a column, the paper's three
claims beside what was measured), spectra.png (isotropy measures against width) and
maps/<problem>.png (where each covariance over- or under-states the MCMC variance)."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from .covariances import COVARIANCES, NON_TRAINING
from .report import fmt2, kendall

MAP_COVARIANCES = ("isotropic", "laplace-train", "fresh-ggn", "uniform", "eval-points", "kfac",
                   "layer-scaled:weight-variance", "sp-isotropic")


def _median(xs: list[float]) -> float:
    v = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.median(v)) if v else float("nan")


def _by(rows: list[dict], *keys: str) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        out[tuple(r[k] for k in keys)].append(r)
    return out


def _table(rows: list[dict], field: str, problems: list[str]) -> list[str]:
    covs = [c for c in COVARIANCES if any(r["covariance"] == c for r in rows)]
    head = "| problem | " + " | ".join(covs) + " |"
    lines = [head, "|" + " --- |" * (len(covs) + 1)]
    idx = _by(rows, "problem", "covariance")
    for p in problems + ["all"]:
        cells = []
        for c in covs:
            sel = [r for (pp, cc), rs in idx.items() if cc == c and (p == "all" or pp == p)
                   for r in rs]
            cells.append(fmt2(_median([r[field] for r in sel])))
        lines.append(f"| {'**all**' if p == 'all' else p} | " + " | ".join(cells) + " |")
    return lines


def _trend(spectra: list[dict], rows: list[dict]) -> dict[str, Any]:
    """Per depth: widths, median over problems of the isotropy measures, Kendall τ vs width."""
    out: dict[str, Any] = {}
    iso = [r for r in rows if r["covariance"] == "isotropic"]
    for d in sorted({s["depth"] for s in spectra}):
        ws = sorted({s["width"] for s in spectra if s["depth"] == d})
        t: dict[str, list[float]] = defaultdict(list)
        for w in ws:
            sel = [s for s in spectra if s["depth"] == d and s["width"] == w]
            for k in ("post_eff_rank_frac", "laplace_eff_rank_frac", "ggn_eff_rank",
                      "iso_explained_post", "iso_explained_laplace", "post_cond", "ggn_cond",
                      "mcmc_explained_by_post"):
                t[k].append(_median([s[k] for s in sel]))
            t["gn_spearman"].append(_median([r["spearman"] for r in iso
                                             if r["depth"] == d and r["width"] == w]))
        tau = {k: (kendall(ws, v) if len(ws) > 1 else float("nan")) for k, v in t.items()}
        out[d] = {"widths": ws, "values": dict(t), "tau": tau}
    return out


def covariance_md(rows: list[dict], spectra: list[dict], cfg: Any, *, command: str | None,
                  skipped: list, seconds: float) -> str:
    problems = [p for p in cfg.problems if any(r["problem"] == p for r in rows)]
    n_conf = len(spectra)
    conv = sum(1 for s in spectra if s["converged"])
    m = cfg.mcmc
    lines = ["# Which covariance Σ in gᵀΣg tracks the MCMC variance (the paper's case for isotropy)",
             ""]
    if command:
        lines += ["Command:", "", f"    {command}", ""]
    lines += [
        f"Settings: prior N(0, {cfg.sigma_p:g}² I) on the NTK-parameterised tanh MLP; NUTS "
        f"{m.num_chains} chains × {m.num_samples} draws after {m.num_warmup} warm-up (max tree "
        f"depth {m.max_tree_depth}); {n_conf} configurations ({conv} with R-hat ≤ 1.05), "
        f"{len(skipped)} skipped over {cfg.max_params} parameters; wall time of this invocation "
        f"{seconds / 60:.1f} min. Medians over depths × widths unless stated.",
        "",
        "Covariances (every one with the prior precision σ_p⁻² of the MAP loss where it is a "
        "Laplace form):",
        "",
    ]
    lines += [f"- `{k}`: {v}" for k, v in COVARIANCES.items()]
    lines += ["", "## Spearman ρ with the MCMC variance (grid and held-out points)", ""]
    lines += _table(rows, "spearman", problems)
    lines += ["", "## Spearman ρ on the held-out points only", ""]
    lines += _table(rows, "spearman_heldout", problems)
    lines += ["", "## Structured distortion: log10(Σ-variance / MCMC variance), far minus near",
              "", "Positive: overstates the variance far from the data relative to near it; "
              "negative: understates it. Near = within twice the training set's median "
              "nearest-neighbour spacing.", ""]
    lines += _table(rows, "far_minus_near", problems)
    lines += ["", "## Alignment with the posterior covariance of the parameters", "",
              "cos(Σ, C) = ⟨Σ, C⟩_F / (‖Σ‖_F ‖C‖_F), C the pooled within-chain covariance of the "
              "NUTS draws mapped into θ*'s mode (hidden units matched by a signed permutation). "
              f"Median relative distance of the aligned chain means from θ*: "
              f"{fmt2(_median([s['mode_distance'] for s in spectra]))} (near 1: the chains sit in "
              "other modes, so parameter-space alignment is weak evidence).", ""]
    lines += _table(rows, "align_cos", problems)
    trend = _trend(spectra, rows)
    lines += ["", "## Spectra against width (median over problems)", "",
              "| depth | width | posterior eff. rank / P | Laplace eff. rank / P | GGN eff. rank | "
              "R²(‖g‖², gᵀCg) | R²(gᵀCg, MCMC) | posterior cond. | isotropic ρ vs MCMC |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for d, t in trend.items():
        v = t["values"]
        for i, w in enumerate(t["widths"]):
            lines.append(f"| {d} | {w} | {fmt2(v['post_eff_rank_frac'][i])} | "
                         f"{fmt2(v['laplace_eff_rank_frac'][i])} | {fmt2(v['ggn_eff_rank'][i])} | "
                         f"{fmt2(v['iso_explained_post'][i])} | "
                         f"{fmt2(v['mcmc_explained_by_post'][i])} | {v['post_cond'][i]:.3g} | "
                         f"{fmt2(v['gn_spearman'][i])} |")
    lines += ["", "Effective rank: (Σλ)²/Σλ² (P for an isotropic matrix); divided by P it is the "
              "share of the matrix's Frobenius energy in its isotropic part. R²(‖g‖², gᵀCg): the "
              "squared Pearson correlation, over the evaluation points, of the isotropic term "
              "with the linearised posterior variance under C: the fraction of its variation "
              "that the isotropic term explains. R²(gᵀCg, MCMC): how well that linearised variance "
              "itself tracks the MCMC variance (low: C, gathered in other modes and linearised at "
              "θ*, is a poor stand-in for the posterior, so the parameter-space measures are "
              "weak evidence). The sample covariance has rank at most chains × (draws − 1), "
              "which bounds its effective rank at large P.", ""]
    lines += ["## The paper's three claims, measured", ""]
    by_cov = _by(rows, "covariance")

    def med(c: str, f: str) -> float:
        return _median([r[f] for r in by_cov.get((c,), [])])

    nt = ", ".join(f"{c} {fmt2(med(c, 'spearman'))} / {fmt2(med(c, 'far_minus_near'))}"
                   for c in NON_TRAINING)
    lines += [
        "1. *Covariances estimated from non-training data introduce structured distortions that "
        "an isotropic covariance avoids.* Median Spearman ρ / far-minus-near distortion: "
        f"isotropic {fmt2(med('isotropic', 'spearman'))} / {fmt2(med('isotropic', 'far_minus_near'))}"
        f"; training-data Laplace {fmt2(med('laplace-train', 'spearman'))} / "
        f"{fmt2(med('laplace-train', 'far_minus_near'))}; non-training data: {nt}.",
    ]
    parts = []
    for d, t in trend.items():
        tau = t["tau"]
        parts.append(f"depth {d}: Kendall τ against width of the posterior's effective-rank "
                     f"fraction {fmt2(tau['post_eff_rank_frac'])}, of the Laplace covariance's "
                     f"{fmt2(tau['laplace_eff_rank_frac'])}, of R²(‖g‖², gᵀCg) "
                     f"{fmt2(tau['iso_explained_post'])}")
    lines += ["2. *Spectral results make isotropy a better approximation at scale.* "
              + "; ".join(parts) + " (τ > 0: more isotropic as width grows)."]
    parts = [f"depth {d}: τ = {fmt2(t['tau']['gn_spearman'])} (median ρ "
             + " → ".join(fmt2(x) for x in t["values"]["gn_spearman"]) + " over widths "
             + ", ".join(str(w) for w in t["widths"]) + ")" for d, t in trend.items()]
    lines += ["3. *Agreement with MCMC improves with model size.* Kendall τ of the isotropic "
              "estimate's median Spearman ρ against width: " + "; ".join(parts) + ".", ""]
    if skipped:
        lines += ["Skipped (too many parameters for dense covariances and NUTS): "
                  + ", ".join(f"{p} d{d} w{w}" for p, d, w in skipped), ""]
    lines += [f"Not converged (R-hat > 1.05): {n_conf - conv} of {n_conf} configurations; they "
              "are kept in the medians and flagged by `converged` in covariance.json.", ""]
    return "\n".join(lines)


def plot_spectra(spectra: list[dict], rows: list[dict], path: Path) -> None:
    from ..evaluate.curves import pyplot

    plt = pyplot()

    trend = _trend(spectra, rows)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for d, t in trend.items():
        ls = "-" if d == min(trend) else "--"
        v, ws = t["values"], t["widths"]
        axes[0].plot(ws, v["post_eff_rank_frac"], "o" + ls, c="C0", label=f"posterior, depth {d}")
        axes[0].plot(ws, v["laplace_eff_rank_frac"], "s" + ls, c="C1", label=f"Laplace, depth {d}")
        axes[1].plot(ws, v["iso_explained_post"], "o" + ls, c="C2", label=f"posterior C, depth {d}")
        axes[1].plot(ws, v["iso_explained_laplace"], "s" + ls, c="C3", label=f"Laplace, depth {d}")
        axes[2].plot(ws, v["gn_spearman"], "o" + ls, c="C4", label=f"depth {d}")
    titles = ["effective rank / P (1 = isotropic)", "R²(‖g‖², gᵀΣg): isotropic term explains",
              "isotropic estimate: Spearman ρ vs MCMC"]
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("width")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle("Median over problems", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_distortion(arrays: dict, title: str, path: Path) -> None:
    """log10(Σ-variance / MCMC variance) on the grid for `MAP_COVARIANCES` (training points)."""
    from ..evaluate.curves import pyplot

    plt = pyplot()

    n_grid = int(arrays["n_grid"])
    shape = tuple(int(s) for s in arrays["grid_shape"])
    ref = arrays["mcmc_var"][:n_grid]
    covs = [c for c in MAP_COVARIANCES if f"est/{c}" in arrays]
    fig, axes = plt.subplots(2, 4, figsize=(16, 7.5))
    for ax, c in zip(axes.ravel(), covs, strict=False):
        est = arrays[f"est/{c}"][:n_grid]
        with np.errstate(divide="ignore", invalid="ignore"):
            lr = np.log10(est / ref)
        if len(shape) == 2:
            im = ax.imshow(lr.reshape(shape), origin="lower", extent=(-3, 3, -3, 3), cmap="RdBu_r",
                           vmin=-2, vmax=2)
            xt = arrays["x_train"]
            ax.scatter(xt[:, 0], xt[:, 1], s=3, c="k")
            fig.colorbar(im, ax=ax, fraction=0.046)
        else:
            x = arrays["x_eval"][:n_grid, 0]
            ax.plot(x, lr, lw=1)
            ax.axhline(0, c="k", lw=0.5)
            ax.plot(arrays["x_train"][:, 0], np.zeros(len(arrays["x_train"])), "k|")
            ax.set_ylim(-3, 5)
        ax.set_title(c, fontsize=9)
    fig.suptitle(f"{title}: log10(estimate / MCMC variance); red overstates, blue understates",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_covariance_report(out: Path, rows: list[dict], spectra: list[dict], cfg: Any, *,
                            command: str | None, skipped: list, seconds: float) -> None:
    """covariance.md, spectra.png and maps/<problem>.png (at the reference depth and width)."""
    (out / "covariance.md").write_text(covariance_md(rows, spectra, cfg, command=command,
                                                     skipped=skipped, seconds=seconds))
    if not rows:
        return
    plot_spectra(spectra, rows, out / "spectra.png")
    maps = out / "maps"
    maps.mkdir(exist_ok=True)
    present = {(s["problem"], s["depth"], s["width"]) for s in spectra}
    for p in cfg.problems:
        done = sorted((d, w) for pp, d, w in present if pp == p)
        if not done:
            continue
        d, w = cfg.reference if (p, *cfg.reference) in present else done[-1]
        arrays = dict(np.load(out / "runs" / f"{p}-d{d}-w{w}.npz"))
        plot_distortion(arrays, f"{p} depth {d} width {w}", maps / f"{p}.png")
