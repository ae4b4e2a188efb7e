"""The agreement study: MAP net -> GN / Laplace / aleatoric estimates vs the NUTS reference.

For each problem × depth × width: fit θ* (MAP), score each evaluation point's predicted class
at θ* (classification: the MAP argmax; its probability is the scored p, documented in the
README), compute the estimates through `isograd.estimate` (GN = σ_p²‖∇p‖², aleatoric p(1−p)) and
`laplace_variance` (GGN), sample the posterior with NUTS, and correlate. Each configuration
writes DIR/runs/<id>.json (its rows) and DIR/runs/<id>.npz (the arrays behind the maps); a rerun
with the same settings skips finished configurations, so an interrupted run resumes.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._choice import Choice
from .mcmc import McmcSettings, configure_jax
from .problems import PROBLEMS, Problem, make_problem

ESTIMATORS = ("gn", "laplace", "aleatoric")
RHAT_OK = 1.05


@dataclass(frozen=True)
class StudyConfig:
    """Everything that determines the numbers (saved with every result)."""

    problems: tuple[str, ...] = tuple(PROBLEMS)
    widths: tuple[int, ...] = (4, 8, 16, 32, 64, 128)
    depths: tuple[int, ...] = (1, 2)
    reference: tuple[int, int] = (2, 32)
    """(depth, width) reported in the Table-1 layout (fixed before any result was seen)."""
    sigma_p: float = 2.0
    """Prior std of every weight. 1.0 underfits (NTK scaling: prior logit std ≈ 1.2; on xor the
    MAP's p stayed in [0.2, 0.8]); 2.0 gives logit std ≈ 2.5."""
    max_params: int = 5000
    """Configurations with more parameters are skipped (NUTS cost), and listed as skipped."""
    n_train: int | None = None
    grid: int | None = None
    n_heldout: int = 200
    mcmc: McmcSettings = field(default_factory=lambda: McmcSettings(300, 300, 4, 8))
    seed: int = 0

    def fingerprint(self) -> dict[str, Any]:
        """The settings one configuration's numbers depend on (not the sweep lists)."""
        d = asdict(self)
        for k in ("problems", "widths", "depths", "reference", "max_params"):
            d.pop(k)
        return d


QUICK = StudyConfig(
    widths=(8,), depths=(1,), reference=(1, 8), grid=15, n_heldout=100,
    mcmc=McmcSettings(150, 150, 2, 7),
)


class Study(Choice):
    """Which validation study `isograd validate` runs."""

    AGREEMENT = "agreement"
    """GN, Laplace and aleatoric against the MCMC reference (the paper's Table 1)."""
    COVARIANCE = "covariance"
    """Every covariance Σ in gᵀΣg against MCMC, alignment with the posterior, spectra."""


COVARIANCE_STUDY = replace(
    StudyConfig(), widths=(4, 8, 16, 32), reference=(2, 16), max_params=2500,
    mcmc=McmcSettings(200, 200, 2, 8),
)
"""The covariance study's full-run defaults, sized for under an hour on a shared 2-core machine:
widths up to 32 (dense P × P covariances), 2 chains × 200 draws after 200 warm-up."""


def study_config(
    *, study: str | Study = Study.AGREEMENT, quick: bool = False, problems: list[str] | None = None, widths: list[int] | None = None,
    depths: list[int] | None = None, chains: int | None = None, warmup: int | None = None,
    samples: int | None = None, seed: int = 0, sigma_p: float | None = None,
) -> StudyConfig:
    """`StudyConfig()` (or `QUICK`) with the given overrides; None keeps the default.

    When the reference architecture is not in the sweep, the deepest depth and the middle
    width of the sweep take its place.
    """
    cfg = QUICK if quick else (
        COVARIANCE_STUDY if Study.parse(study) is Study.COVARIANCE else StudyConfig())
    m = cfg.mcmc
    m = replace(m, num_chains=chains or m.num_chains, num_warmup=warmup or m.num_warmup,
                num_samples=samples or m.num_samples)
    cfg = replace(
        cfg, problems=tuple(problems or cfg.problems), widths=tuple(widths or cfg.widths),
        depths=tuple(depths or cfg.depths), mcmc=m, seed=seed, sigma_p=sigma_p or cfg.sigma_p,
    )
    if cfg.reference[0] not in cfg.depths or cfg.reference[1] not in cfg.widths:
        ws = sorted(cfg.widths)
        cfg = replace(cfg, reference=(max(cfg.depths), ws[len(ws) // 2]))
    return cfg


def correlations(est: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """Pearson r and Spearman ρ over the finite pairs (NaN when either side is constant)."""
    from scipy.stats import spearmanr

    ok = np.isfinite(est) & np.isfinite(ref)
    a, b = est[ok], ref[ok]
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan"), float("nan")
    return float(np.corrcoef(a, b)[0, 1]), float(spearmanr(a, b).statistic)


def _scored_labels(model: torch.nn.Module, x: torch.Tensor, task: str) -> torch.Tensor:
    with torch.no_grad():
        out = model(x)
    if task == "binary":
        return (out[:, 0] > 0).long()
    if task == "classification":
        return out.argmax(1)
    return torch.zeros(len(x), dtype=torch.long)


@dataclass(frozen=True)
class FittedConfig:
    """One problem × architecture at its MAP point θ*, shared by every study on it.

    Attributes:
        spec: the architecture.  model: the MAP net (float64, eval mode).
        info: MAP diagnostics (final loss, gradient norm).
        label: int64 [M] scored class per evaluation point (the MAP argmax; regression zeros).
        seed: the seed of the MAP initialisation and of the NUTS chains.
    """

    spec: Any
    model: torch.nn.Module
    info: dict
    label: torch.Tensor
    seed: int


def fit_config(pb: Problem, depth: int, width: int, cfg: StudyConfig) -> FittedConfig:
    """The MAP net of one configuration and its scored labels (deterministic in the seed)."""
    from .nets import MLPSpec, fit_map

    spec = MLPSpec(pb.in_dim, width, depth, pb.out_dim)
    seed = cfg.seed * 100_003 + depth * 1009 + width
    model, info = fit_map(
        spec, pb.x_train, pb.y_train, pb.task, sigma_p=cfg.sigma_p, noise_var=pb.noise_var,
        seed=seed,
    )
    label = _scored_labels(model, torch.as_tensor(pb.x_eval), pb.task)
    return FittedConfig(spec, model, info, label, seed)


def run_config(pb: Problem, depth: int, width: int, cfg: StudyConfig) -> tuple[list[dict], dict]:
    """One problem × architecture: MAP, estimates, NUTS, correlations.

    Returns:
        (rows, arrays): one row per estimator (regression has no aleatoric row: its noise
        variance is a constant), and the per-point arrays for the maps.
    """
    import isograd

    from .laplace import laplace_variance
    from .mcmc import mcmc_reference

    fit = fit_config(pb, depth, width, cfg)
    spec, model, info, label, seed = fit.spec, fit.model, fit.info, fit.label, fit.seed
    x_tr = torch.as_tensor(pb.x_train)
    x_ev = torch.as_tensor(pb.x_eval)

    t = time.perf_counter()
    u = isograd.estimate(
        model, x_ev, task=pb.task, target=None if pb.task == "regression" else label,
        sigma2=cfg.sigma_p**2, noise_var=pb.noise_var,
    )
    gn_seconds = time.perf_counter() - t
    t = time.perf_counter()
    lap = laplace_variance(
        model, x_tr, torch.as_tensor(pb.y_train), x_ev, pb.task, label, sigma_p=cfg.sigma_p,
        noise_var=pb.noise_var, curvature="ggn",
    ).numpy()
    lap_seconds = time.perf_counter() - t
    ref = mcmc_reference(
        spec, pb.task, pb.x_train, pb.y_train, pb.x_eval, label.numpy(), sigma_p=cfg.sigma_p,
        noise_var=pb.noise_var, settings=cfg.mcmc, seed=seed,
    )
    gn = u.epistemic.numpy()
    alea = None if pb.task == "regression" else u.aleatoric.numpy()
    pairs = {"gn": (gn, ref.var, gn_seconds), "laplace": (lap, ref.var, lap_seconds)}
    if alea is not None:
        pairs["aleatoric"] = (alea, ref.alea, gn_seconds)  # one estimate() call gives both
    held = slice(pb.n_grid, None)
    rows = []
    for name, (est, target, secs) in pairs.items():
        r, rho = correlations(est, target)
        r_ho, rho_ho = correlations(est[held], target[held])
        rows.append({
            "problem": pb.name, "task": pb.task, "width": width, "depth": depth,
            "n_params": spec.n_params, "estimator": name, "pearson": r, "spearman": rho,
            "pearson_heldout": r_ho, "spearman_heldout": rho_ho, "rhat_max": ref.rhat_max,
            "converged": bool(ref.rhat_max <= RHAT_OK), "ess_min": ref.ess_min,
            "divergences": ref.divergences, "mean_steps": ref.mean_steps, "n_draws": ref.n_draws,
            "n_eval": len(est), "seconds": secs, "mcmc_seconds": ref.seconds,
            "curvature": "ggn" if name == "laplace" else None, **info,
        })
    arrays = {
        "x_train": pb.x_train, "y_train": pb.y_train, "x_eval": pb.x_eval,
        "n_grid": np.int64(pb.n_grid), "grid_shape": np.asarray(pb.grid_shape),
        "label": label.numpy(), "p_map": u.p.numpy(), "gn": gn, "laplace": lap,
        "aleatoric": alea if alea is not None else np.full_like(gn, np.nan),
        "mcmc_mean": ref.mean, "mcmc_var": ref.var,
        "mcmc_alea": ref.alea if ref.alea is not None else np.full_like(gn, np.nan),
        "rhat": ref.rhat, "ess": ref.ess,
    }
    return rows, arrays


def conjugate_check(settings: McmcSettings, *, seed: int = 0, sigma_p: float = 1.0) -> dict:
    """The harness on Bayesian linear regression (depth-0 net): NUTS vs the closed form.

    z = (MCMC variance − exact) / its Monte Carlo standard error, exact·sqrt(2/ESS) per point.
    """
    from .laplace import closed_form_linear_regression
    from .mcmc import mcmc_reference
    from .nets import MLPSpec

    pb = make_problem("regression_linear", seed=seed, n_train=10, grid=50, n_heldout=0)
    spec = MLPSpec(pb.in_dim, 0, 0, 1)
    s = replace(settings, num_samples=max(settings.num_samples, 500))
    ref = mcmc_reference(
        spec, "regression", pb.x_train, pb.y_train, pb.x_eval, np.zeros(len(pb.x_eval), int),
        sigma_p=sigma_p, noise_var=pb.noise_var, settings=s, seed=seed,
    )
    exact = closed_form_linear_regression(
        pb.x_train, pb.x_eval, sigma_p=sigma_p, noise_var=pb.noise_var
    )
    z = (ref.var - exact) / (exact * np.sqrt(2.0 / ref.ess))
    return {
        "n_points": len(exact), "max_abs_z": float(np.abs(z).max()),
        "mean_z": float(z.mean()), "max_rel_err": float(np.abs(ref.var / exact - 1).max()),
        "ess_min": ref.ess_min, "rhat_max": ref.rhat_max, "n_draws": ref.n_draws,
        "passed": bool(np.abs(z).max() < 4.0), "seconds": ref.seconds,
    }


def n_params(problem: str, depth: int, width: int) -> int:
    from .nets import MLPSpec

    spec = PROBLEMS[problem]
    d = 1 if spec.task == "regression" else 2
    out = spec.n_classes if spec.task == "classification" else 1
    return MLPSpec(d, width, depth, out).n_params


def _run_id(problem: str, depth: int, width: int) -> str:
    return f"{problem}-d{depth}-w{width}"


@contextlib.contextmanager
def study_setup(cfg: StudyConfig, out: Path) -> Iterator[tuple[Path, dict[str, Any], float]]:
    """The shared start of a study run: check `cfg`'s problem names, set up JAX, create
    ``out/runs`` and pin torch to one thread (chains and workers share the cores; torch work
    here is small), restored on exit whatever happens.

    Yields:
        (the runs folder, ``cfg.fingerprint()``, the start time for the report's seconds).
    """
    for p in cfg.problems:
        if p not in PROBLEMS:
            raise ValueError(f"unknown problem {p!r}; allowed: {', '.join(PROBLEMS)}")
    configure_jax(2)
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield runs, cfg.fingerprint(), time.perf_counter()
    finally:
        torch.set_num_threads(threads)


def run_configs(todo: list[tuple[str, int, int]], runs: Path, fp: dict, cfg: Any,
                compute: Callable[[Problem, int, int], tuple[dict, dict]], *, desc: str,
                progress: bool, summary: Callable[[dict], str]) -> list[dict]:
    """Each (problem, depth, width) of `todo` once, resumable: a record saved under `runs` with
    the settings `fp` is reused, else ``compute(problem, depth, width) -> (record, arrays)`` runs
    and is saved as ``<id>.npz`` then ``<id>.json`` (written last: a configuration counts as done
    only with both files). Returns the records, each ``{"settings": fp, **record}``."""
    from tqdm.auto import tqdm

    records: list[dict] = []
    bar = tqdm(todo, desc=desc, disable=not progress)
    for name, depth, width in bar:
        rid = _run_id(name, depth, width)
        bar.set_postfix_str(rid)
        jpath = runs / f"{rid}.json"
        if jpath.exists():
            saved = json.loads(jpath.read_text())
            if saved.get("settings") == fp:
                records.append(saved)
                continue
        pb = make_problem(name, seed=cfg.seed, n_train=cfg.n_train,
                          n_heldout=cfg.n_heldout, grid=cfg.grid)
        record, arrays = compute(pb, depth, width)
        np.savez_compressed(runs / f"{rid}.npz", **arrays)
        record = {"settings": fp, **record}
        jpath.write_text(json.dumps(record, indent=1))
        records.append(record)
        if progress:
            tqdm.write(summary(record))
    return records


def run_study(
    out: str | Path, cfg: StudyConfig | None = None, *, progress: bool = True,
    command: str | None = None,
) -> list[dict]:
    """Run (or resume) the whole study and write the report into `out`.

    Writes out/agreement.json (all rows), out/conjugate.json, out/table.md, out/trend.png,
    out/maps/<problem>.png and out/runs/ (per-configuration rows and arrays).

    Returns:
        The rows of agreement.json.
    """
    from tqdm.auto import tqdm

    from .report import write_report

    cfg = cfg or StudyConfig()
    out = Path(out)
    with study_setup(cfg, out) as (runs, fp, t_start):
        conj_path = out / "conjugate.json"
        conj = json.loads(conj_path.read_text()) if conj_path.exists() else None
        if conj is None or conj.get("settings") != fp:
            conj = {**conjugate_check(cfg.mcmc, seed=cfg.seed, sigma_p=cfg.sigma_p), "settings": fp}
            conj_path.write_text(json.dumps(conj, indent=1))
        if progress:
            tqdm.write(f"conjugate check: max |z| = {conj['max_abs_z']:.2f} "
                       f"({'passed' if conj['passed'] else 'FAILED'})")
        todo = [(p, d, w) for p in cfg.problems for d in cfg.depths for w in cfg.widths
                if n_params(p, d, w) <= cfg.max_params]

        def compute(pb: Problem, depth: int, width: int) -> tuple[dict, dict]:
            new, arrays = run_config(pb, depth, width, cfg)
            return {"rows": new}, arrays

        records = run_configs(todo, runs, fp, cfg, compute, desc="validate", progress=progress,
                              summary=lambda rec: _summary(rec["rows"]))
        rows = [r for rec in records for r in rec["rows"]]
        (out / "agreement.json").write_text(json.dumps(rows, indent=1))
        write_report(out, rows, cfg, conj, command=command,
                     seconds=time.perf_counter() - t_start)
    return rows


def _summary(rows: list[dict]) -> str:
    r0 = rows[0]
    est = " ".join(f"{r['estimator']} r={r['pearson']:.2f} ρ={r['spearman']:.2f}" for r in rows)
    flag = "" if r0["converged"] else "  NOT CONVERGED"
    return (f"{r0['problem']} d{r0['depth']} w{r0['width']} P={r0['n_params']}: {est} | "
            f"R-hat {r0['rhat_max']:.3f} ESS {r0['ess_min']:.0f} | MCMC {r0['mcmc_seconds']:.1f} s, "
            f"GN {rows[0]['seconds']:.2f} s{flag}")
