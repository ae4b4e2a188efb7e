"""The reference: NumPyro NUTS over the JAX twin of the MLP, and the predictive moments.

For every posterior draw θ_s the scored probability p_s(x) (classification: of the class the
MAP net predicts at x; regression: the predicted mean) is computed on the evaluation points;
the reference epistemic variance is Var_s[p_s(x)] over all chains pooled, the reference
aleatoric term is E_s[p_s(1 − p_s)]. Split R-hat and effective sample size are computed per
evaluation point on these predictive quantities (not on θ: a BNN's weights are never
identified, permutations and sign flips of hidden units leave the function unchanged).
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass

import numpy as np

from .nets import MLPSpec, jax_apply


def configure_jax(n_devices: int = 2, cache_dir: str | None = None) -> None:
    """CPU only, float64, `n_devices` host devices (one chain each) with one thread per device.

    Also turns on JAX's persistent compilation cache (`cache_dir`, default
    $ISOGRAD_JAX_CACHE or ~/.cache/isograd/jax): a NUTS program takes seconds to compile and
    is reused for the second batch of chains and by reruns. Must run before JAX initialises its
    backend (first array op); the device count cannot change after that.
    """
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        flags += f" --xla_force_host_platform_device_count={n_devices}"
    # single-threaded Eigen per device: the cores are shared, chains are the parallel unit
    if "xla_cpu_multi_thread_eigen" not in flags:
        flags += " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    os.environ["XLA_FLAGS"] = flags.strip()
    import jax

    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_enable_x64", True)
    cache = cache_dir or os.environ.get("ISOGRAD_JAX_CACHE") or os.path.expanduser(
        "~/.cache/isograd/jax"
    )
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@dataclass(frozen=True)
class McmcSettings:
    """NUTS settings (dual-averaging step size, diagonal mass matrix adapted in warm-up)."""

    num_warmup: int = 300
    num_samples: int = 300
    num_chains: int = 4
    max_tree_depth: int = 8
    target_accept: float = 0.8
    chain_method: str = "parallel"
    """"parallel": batches of as many chains as there are host devices; "sequential": one by
    one."""


@dataclass(frozen=True)
class McmcResult:
    """Predictive moments on the evaluation points [M] and the sampler's diagnostics.

    Attributes:
        mean: E_s[p_s(x)] [M].
        var: Var_s[p_s(x)] [M], the reference epistemic variance.
        alea: E_s[p_s(1 − p_s)] [M] (None for regression).
        rhat: split R-hat per point [M], max over the predictive quantities.
        ess: effective sample size per point [M], min over the predictive quantities.
        rhat_max: nanmax of `rhat`; > 1.05 means not converged.
        ess_min: nanmin of `ess`.
        divergences: divergent transitions after warm-up, all chains.
        mean_steps: mean leapfrog steps per draw (2^max_tree_depth - 1 is the cap).
        seconds: sampling wall time (compilation included), predictive moments excluded.
        n_draws: draws pooled over chains.
    """

    mean: np.ndarray
    var: np.ndarray
    alea: np.ndarray | None
    rhat: np.ndarray
    ess: np.ndarray
    rhat_max: float
    ess_min: float
    divergences: int
    mean_steps: float
    seconds: float
    n_draws: int


def potential(spec: MLPSpec, task: str, sigma_p: float, noise_var: float | None):
    """U(θ; x, y) = −log p(y | x, θ) − log N(θ; 0, σ_p² I), constants dropped (JAX).

    The same function as `nets.neg_log_posterior` (the MAP loss); a test checks they agree.
    """
    import jax
    import jax.numpy as jnp

    def u(theta, x, y):
        out = jax_apply(spec, theta, x)
        if task == "binary":
            ll = jax.nn.log_sigmoid(jnp.where(y == 1, out[:, 0], -out[:, 0])).sum()
        elif task == "classification":
            ll = jnp.take_along_axis(jax.nn.log_softmax(out, -1), y[:, None], 1).sum()
        else:
            ll = -0.5 * jnp.square(out[:, 0] - y).sum() / noise_var
        return -ll + 0.5 * jnp.square(theta).sum() / sigma_p**2

    return u


def _chain_fn(spec: MLPSpec, task: str, sigma_p: float, noise_var: float | None,
              settings: McmcSettings):
    """One NUTS chain as a pure function (key, x, y) -> (draws [S, P], diverging [S], steps [S]).

    Data are arguments, not constants, so the compiled program depends only on the task and the
    shapes: problems of one task share it through the persistent compilation cache.
    """
    import jax
    from jax import lax
    from numpyro.infer.hmc import hmc

    u = potential(spec, task, sigma_p, noise_var)
    init_kernel, sample_kernel = hmc(potential_fn_gen=lambda x, y: lambda t: u(t, x, y), algo="NUTS")

    def chain(key, x, y):
        k_init, k_run = jax.random.split(key)
        # independent draws from the prior as starting points: chains may disagree, R-hat shows it
        theta0 = sigma_p * jax.random.normal(k_init, (spec.n_params,), dtype=x.dtype)
        state = init_kernel(
            theta0, settings.num_warmup, target_accept_prob=settings.target_accept,
            max_tree_depth=settings.max_tree_depth, model_args=(x, y), rng_key=k_run,
        )

        def step(st, _):
            st = sample_kernel(st, model_args=(x, y))
            return st, (st.z, st.diverging, st.num_steps)

        state, _ = lax.scan(lambda st, _: (sample_kernel(st, model_args=(x, y)), None), state,
                            None, length=settings.num_warmup)
        _, out = lax.scan(step, state, None, length=settings.num_samples)
        return out

    return chain


def scored_prob(spec: MLPSpec, task: str, theta, x, label):
    """p(x) of the scored class under θ (regression: the mean): [M]. JAX, traceable."""
    import jax
    import jax.numpy as jnp

    out = jax_apply(spec, theta, x)
    if task == "binary":
        z = out[:, 0]
        return jax.nn.sigmoid(jnp.where(label == 1, z, -z))
    if task == "classification":
        return jnp.take_along_axis(jax.nn.softmax(out, -1), label[:, None], 1)[:, 0]
    return out[:, 0]


@functools.lru_cache(maxsize=8)
def _pmapped_chain(spec: MLPSpec, task: str, sigma_p: float, noise_var: float | None,
                   settings: McmcSettings):
    import jax

    return jax.pmap(_chain_fn(spec, task, sigma_p, noise_var, settings), in_axes=(0, None, None))


def sample_posterior(
    spec: MLPSpec, task: str, x_train: np.ndarray, y_train: np.ndarray, *, sigma_p: float,
    noise_var: float | None, settings: McmcSettings, seed: int = 0,
) -> tuple[np.ndarray, dict[str, float]]:
    """Run NUTS; return θ draws [chains, samples, n_params] and sampler statistics.

    Chains run in batches of as many as there are host devices (`jax.pmap`); the second batch
    reuses the first one's compiled program.
    """
    import jax
    import jax.numpy as jnp

    if settings.chain_method == "sequential":
        batch = 1
    else:
        batch = max(1, min(settings.num_chains, jax.local_device_count()))
    run = _pmapped_chain(spec, task, sigma_p, noise_var, settings)
    x, y = jnp.asarray(x_train), jnp.asarray(y_train)
    keys = jax.random.split(jax.random.PRNGKey(seed), settings.num_chains)
    t0 = time.perf_counter()
    parts = []
    for i in range(0, settings.num_chains, batch):
        k = keys[i : i + batch]
        parts.append([np.asarray(a) for a in run(k, x, y)])
    theta, diverging, steps = (np.concatenate([p[j] for p in parts], 0) for j in range(3))
    stats = {
        "divergences": int(diverging.sum()),
        "mean_steps": float(steps.mean()),
        "seconds": time.perf_counter() - t0,
    }
    return theta, stats


@functools.lru_cache(maxsize=8)
def _probs_fn(spec: MLPSpec, task: str, chunk: int):
    """jit of (draws [S, P], x [M, D], label [M]) -> p [S, M]; inputs are arguments, not constants."""
    import jax

    def f(thetas, x, lab):
        return jax.lax.map(lambda th: scored_prob(spec, task, th, x, lab), thetas, batch_size=chunk)

    return jax.jit(f)


def predictive_moments(
    spec: MLPSpec, task: str, theta: np.ndarray, x_eval: np.ndarray, label: np.ndarray,
    chunk: int = 64,
) -> dict[str, np.ndarray]:
    """Per-draw p_s(x) reduced to moments and per-point diagnostics.

    Args:
        theta: [chains, samples, n_params] draws.
        x_eval: [M, D].  label: [M] scored class (ignored for regression).
        chunk: draws evaluated at once (bounds memory: chunk × M × width floats).
    """
    import jax.numpy as jnp
    from numpyro.diagnostics import effective_sample_size, split_gelman_rubin

    c, s, p = theta.shape
    f = _probs_fn(spec, task, chunk)
    probs = np.asarray(f(jnp.asarray(theta.reshape(c * s, p)), jnp.asarray(x_eval),
                         jnp.asarray(label)))
    probs = probs.reshape(c, s, -1)
    quantities = [probs] if task == "regression" else [probs, probs * (1 - probs)]
    rhat = np.nanmax([_safe(split_gelman_rubin, q) for q in quantities], 0)
    ess = np.nanmin([_safe(effective_sample_size, q) for q in quantities], 0)
    flat = probs.reshape(c * s, -1)
    return {
        "mean": flat.mean(0),
        "var": flat.var(0, ddof=1),
        "alea": None if task == "regression" else (flat * (1 - flat)).mean(0),
        "rhat": rhat,
        "ess": ess,
    }


def _safe(fn, q: np.ndarray) -> np.ndarray:
    # constant quantities (p saturated at exactly 0 or 1) give 0/0: report NaN, not a warning storm
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(fn(q), dtype=np.float64)


def mcmc_reference(
    spec: MLPSpec, task: str, x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray,
    label: np.ndarray, *, sigma_p: float = 1.0, noise_var: float | None = None,
    settings: McmcSettings | None = None, seed: int = 0,
) -> McmcResult:
    """NUTS posterior of the Bayesian MLP and its predictive moments on `x_eval`.

    Args:
        spec: the architecture; prior N(0, σ_p² I) on its flat θ.
        task: "binary", "classification" or "regression" (Gaussian noise of `noise_var`).
        x_train, y_train: [N, D], [N].  x_eval: [M, D].  label: [M] scored class.
        settings: NUTS settings (default `McmcSettings()`).

    Returns:
        A `McmcResult`.
    """
    settings = settings or McmcSettings()
    theta, stats = sample_posterior(
        spec, task, x_train, y_train, sigma_p=sigma_p, noise_var=noise_var, settings=settings,
        seed=seed,
    )
    return reference_from_draws(spec, task, theta, stats, x_eval, label)


def reference_from_draws(
    spec: MLPSpec, task: str, theta: np.ndarray, stats: dict[str, float], x_eval: np.ndarray,
    label: np.ndarray,
) -> McmcResult:
    """The `McmcResult` of draws [chains, samples, n_params] from `sample_posterior`."""
    m = predictive_moments(spec, task, theta, x_eval, label)
    return McmcResult(
        mean=m["mean"], var=m["var"], alea=m["alea"], rhat=m["rhat"], ess=m["ess"],
        rhat_max=float(np.nanmax(m["rhat"])), ess_min=float(np.nanmin(m["ess"])),
        divergences=stats["divergences"], mean_steps=stats["mean_steps"],
        seconds=stats["seconds"], n_draws=int(theta.shape[0] * theta.shape[1]),
    )
