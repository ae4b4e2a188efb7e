"""Seeded synthetic problems for the MCMC agreement study (paper §4.1, Table 1).

Every generator is a pure function of a `numpy.random.Generator`; `make_problem(name, seed)`
draws the training set, a held-out set from the same distribution and an evaluation grid.
Classification inputs are 2-D in roughly [-2, 2]²; the grid covers [-3, 3]² so it also probes
the region with no data. Regression inputs are 1-D; the nonlinear problem has a gap in its
data (x ∈ [-0.5, 0.5] unseen) so that epistemic variance has structure inside the data range.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# regression noise standard deviation: known, fixed in the likelihood (homoscedastic)
NOISE_STD = 0.1


@dataclass(frozen=True)
class Problem:
    """One synthetic problem, all arrays float64 (labels int64).

    Attributes:
        name: registry name, e.g. "binary_xor".
        task: "binary", "classification" or "regression" (`isograd.estimate`'s task values).
        n_classes: 2 (binary), C (classification) or 1 (regression).
        x_train: [N, D] training inputs.  y_train: [N] labels or targets.
        x_eval: [M, D] evaluation inputs: the grid first, then the held-out points.
        n_grid: how many leading rows of `x_eval` are grid points.
        grid_shape: (rows, cols) for 2-D maps, (n,) for 1-D regression.
        y_heldout: [M - n_grid] labels / targets of the held-out points.
        noise_var: regression noise variance of the likelihood (None for classification).
    """

    name: str
    task: str
    n_classes: int
    x_train: np.ndarray
    y_train: np.ndarray
    x_eval: np.ndarray
    n_grid: int
    grid_shape: tuple[int, ...]
    y_heldout: np.ndarray
    noise_var: float | None

    @property
    def in_dim(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def out_dim(self) -> int:
        """Network outputs: one logit (binary), C logits, or one mean (regression)."""
        return self.n_classes if self.task == "classification" else 1


Sampler = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _binary_linear(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    # logistic labels around the line x1 + 0.5 x2 = 0: a band of genuine label noise
    x = rng.uniform(-2, 2, size=(n, 2))
    y = rng.random(n) < _sigmoid(3.0 * (x[:, 0] + 0.5 * x[:, 1]))
    return x, y.astype(np.int64)


def _binary_xor(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(-2, 2, size=(n, 2))
    y = rng.random(n) < _sigmoid(4.0 * x[:, 0] * x[:, 1])
    return x, y.astype(np.int64)


def _rings(rng: np.random.Generator, n: int, radii: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, len(radii), size=n)
    r = np.asarray(radii)[y] + 0.2 * rng.standard_normal(n)
    a = rng.uniform(0, 2 * np.pi, size=n)
    return np.stack([r * np.cos(a), r * np.sin(a)], 1), y.astype(np.int64)


def _binary_rings(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return _rings(rng, n, (0.7, 1.7))


def _multi_rings(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return _rings(rng, n, (0.5, 1.2, 1.9))


def _clusters(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    centres = np.array([[-1.2, -0.8], [1.2, -0.8], [0.0, 1.3]])
    y = rng.integers(0, 3, size=n)
    return centres[y] + 0.5 * rng.standard_normal((n, 2)), y.astype(np.int64)


def _spirals(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    # three interleaved arms, radius growing with the angle, Gaussian jitter
    y = rng.integers(0, 3, size=n)
    t = rng.uniform(0.15, 1.0, size=n)
    a = 3.0 * t + 2 * np.pi * y / 3
    r = 2.0 * t
    x = np.stack([r * np.cos(a), r * np.sin(a)], 1) + 0.12 * rng.standard_normal((n, 2))
    return x, y.astype(np.int64)


def _reg_linear(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(-2, 2, size=(n, 1))
    return x, 0.8 * x[:, 0] + 0.3 + NOISE_STD * rng.standard_normal(n)


def _reg_nonlinear(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    # two clusters of data with a gap between them: the classic "in-between" uncertainty test
    side = rng.integers(0, 2, size=n)
    x = np.where(side == 0, rng.uniform(-2, -0.5, size=n), rng.uniform(0.5, 2, size=n))[:, None]
    return x, np.sin(2.0 * x[:, 0]) + 0.3 * x[:, 0] + NOISE_STD * rng.standard_normal(n)


@dataclass(frozen=True)
class _Spec:
    task: str
    n_classes: int
    sampler: Sampler
    doc: str


PROBLEMS: dict[str, _Spec] = {
    "binary_linear": _Spec("binary", 2, _binary_linear, "uniform [-2,2]², logistic labels on a line"),
    "binary_xor": _Spec("binary", 2, _binary_xor, "uniform [-2,2]², logistic labels of x1·x2"),
    "binary_rings": _Spec("binary", 2, _binary_rings, "two concentric rings, radii 0.7 / 1.7"),
    "multiclass_clusters": _Spec("classification", 3, _clusters, "three Gaussian blobs, std 0.5"),
    "multiclass_spirals": _Spec("classification", 3, _spirals, "three interleaved spiral arms"),
    "multiclass_rings": _Spec("classification", 3, _multi_rings, "three concentric rings"),
    "regression_linear": _Spec("regression", 1, _reg_linear, "y = 0.8x + 0.3 + noise, x in [-2,2]"),
    "regression_nonlinear": _Spec(
        "regression", 1, _reg_nonlinear, "y = sin 2x + 0.3x + noise, gap in [-0.5,0.5]"
    ),
}


def make_problem(
    name: str, *, seed: int = 0, n_train: int | None = None, n_heldout: int = 200,
    grid: int | None = None,
) -> Problem:
    """Draw a problem's training set, held-out set and evaluation grid.

    Args:
        name: a key of `PROBLEMS`.
        seed: the only source of randomness (training and held-out draws use separate streams).
        n_train: training points (default 100 for 2-D problems, 40 for regression).
        n_heldout: held-out points appended after the grid in `x_eval`.
        grid: points per axis of the 2-D grid (default 25); a 1-D grid has grid² points, the
            same number of evaluation points.

    Returns:
        A `Problem`.
    """
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem {name!r}; allowed: {', '.join(PROBLEMS)}")
    spec = PROBLEMS[name]
    regression = spec.task == "regression"
    n_train = n_train or (40 if regression else 100)
    train_rng, held_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    x_tr, y_tr = spec.sampler(train_rng, n_train)
    x_ho, y_ho = spec.sampler(held_rng, n_heldout)
    if regression:
        g = (grid or 25) ** 2
        xg = np.linspace(-3, 3, g)[:, None]
        shape: tuple[int, ...] = (g,)
    else:
        g = grid or 25
        u = np.linspace(-3, 3, g)
        xx, yy = np.meshgrid(u, u)  # row i: y = u[i]; column j: x = u[j]
        xg = np.stack([xx.ravel(), yy.ravel()], 1)
        shape = (g, g)
    return Problem(
        name=name, task=spec.task, n_classes=spec.n_classes,
        x_train=x_tr.astype(np.float64), y_train=y_tr,
        x_eval=np.concatenate([xg, x_ho]).astype(np.float64), n_grid=len(xg), grid_shape=shape,
        y_heldout=y_ho, noise_var=NOISE_STD**2 if regression else None,
    )
