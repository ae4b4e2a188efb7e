"""Which row fields a detector reads, and how each becomes one column of its feature matrix.

A row is a mapping with the field names of `isograd.lm.score` / `isograd qa` score rows
(``log_p``, ``grad_log_p``, ``epistemic``, ``aleatoric``, ``embedding_grad``, ``n_tokens``,
``by_layer`` = {group: value}, baselines such as ``msp``). A feature is named by its field;
``by_layer/<group>`` names one entry of the per-block vector, and ``by_layer`` alone stands
for every group of the fitting rows.

Heavy-tailed non-negative signals (squared gradient norms, p(1−p), lengths) enter as logs:
their values span many orders of magnitude, and a logistic regression on the raw values would
be driven by a few extreme rows. Zeros are replaced by the smallest positive value seen while
fitting (stored with the detector), so a value that underflows stays finite.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._choice import Choice

BLOCKS = "by_layer"
"""The row field of the per-block vector (`isograd.lm.LMScores.by_layer`), and the feature name
that stands for all of its groups."""

SCALAR_FEATURES = ("log_p", "grad_log_p", "epistemic", "aleatoric", "embedding_grad", "n_tokens")
"""The signals of the generation and the one score pass that every row has: log p, ‖∇θ log p‖²,
the paper's epistemic and aleatoric terms, ‖∂ log p / ∂e‖² of the input embeddings, and the
answer length in tokens. No sampling baseline: they cost K more generations."""

LOG_FIELDS = frozenset({
    "grad_log_p", "epistemic", "aleatoric", "total", "embedding_grad", "n_tokens",
    "epistemic_isotropic", "epistemic_layer_scaled", "epistemic_last_layers",
    "epistemic_token_max", "epistemic_token_mean", "epistemic_sequence", "aleatoric_sequence",
    "epistemic_first_token", "aleatoric_first_token",
})
"""Fields that enter as logs (non-negative, heavy-tailed); every other field enters as is."""


class FeatureSet(Choice):
    """A named feature set of `isograd.detect.fit_detector` (or pass a list of field names)."""

    DEFAULT = "default"
    """`SCALAR_FEATURES` plus the per-block vector (every ``by_layer`` group of the rows)."""
    MODEL_AGNOSTIC = "model-agnostic"
    """`SCALAR_FEATURES` only: no per-block vector, whose width differs between models, so the
    detector can be applied to another model's rows (with ``allow_model_mismatch``)."""

    @classmethod
    def noun(cls) -> str:
        return "feature set"


class DetectorError(ValueError):
    """A detector cannot be fitted, loaded or applied; the message is one line."""


class MissingFeatureError(DetectorError):
    """A row lacks a feature the detector needs (or its value is not a finite number)."""


class Transform(Choice):
    """How a row value becomes a feature value."""

    IDENTITY = "identity"
    """The value itself."""
    LOG = "log"
    """log(value); a value <= 0 (an underflow) takes log(floor), floor = the smallest positive
    value seen while fitting."""


@dataclass(frozen=True)
class Feature:
    """One column: the row field (``by_layer/<group>`` for a group), transform and log floor."""

    name: str
    transform: Transform
    floor: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the detector file's ``features`` entries)."""
        return {"name": self.name, "transform": self.transform.value, "floor": self.floor}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Feature:
        """Inverse of `to_dict`."""
        return cls(str(d["name"]), Transform.parse(d["transform"]), float(d["floor"]))


def _field(name: str) -> str:
    return BLOCKS if name.startswith(BLOCKS + "/") else name


def transform_of(name: str) -> Transform:
    """The transform a field gets: LOG for `LOG_FIELDS` and the per-block vector, else IDENTITY."""
    return Transform.LOG if _field(name) in LOG_FIELDS or _field(name) == BLOCKS else Transform.IDENTITY


def block_groups(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The ``by_layer`` groups every row has, in the first row's order.

    Raises:
        DetectorError: the rows carry no per-block vector.
    """
    common: list[str] | None = None
    for r in rows:
        groups = r.get(BLOCKS)
        if not isinstance(groups, Mapping) or not groups:
            raise DetectorError(f"rows lack the per-block vector {BLOCKS!r}; use the "
                                f"{FeatureSet.MODEL_AGNOSTIC.value!r} feature set or name the features")
        common = list(groups) if common is None else [g for g in common if g in groups]
    return common or []


def feature_names(rows: Sequence[Mapping[str, Any]],
                  features: str | FeatureSet | Sequence[str]) -> list[str]:
    """The column names of a feature set (or list of field names) on these rows.

    Args:
        rows: the fitting rows (``by_layer`` expands to the groups they all have).
        features: a `FeatureSet` value, or field names (``"by_layer"`` = every group).

    Returns:
        Column names, each a row field or ``by_layer/<group>``.
    """
    if isinstance(features, str):
        fs = FeatureSet.parse(features)
        names: Sequence[str] = (*SCALAR_FEATURES, BLOCKS) if fs is FeatureSet.DEFAULT else SCALAR_FEATURES
    else:
        names = list(features)
    if not names:
        raise DetectorError("no features given")
    out: list[str] = []
    for n in names:
        if n == BLOCKS:
            out.extend(f"{BLOCKS}/{g}" for g in block_groups(rows))
        else:
            out.append(str(n))
    if len(set(out)) != len(out):
        raise DetectorError(f"features named twice: {sorted({n for n in out if out.count(n) > 1})}")
    return out


def raw_matrix(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> NDArray[np.float64]:
    """[N, F] row values of the named fields, before any transform.

    Raises:
        MissingFeatureError: a row lacks a field, or its value is not a finite number.
    """
    X = np.empty((len(rows), len(names)), dtype=np.float64)
    for i, r in enumerate(rows):
        for j, n in enumerate(names):
            if n.startswith(BLOCKS + "/"):
                groups = r.get(BLOCKS)
                v = groups.get(n[len(BLOCKS) + 1:]) if isinstance(groups, Mapping) else None
            else:
                v = r.get(n)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
                what = "missing" if v is None else f"not a finite number ({v!r})"
                raise MissingFeatureError(f"feature {n!r} is {what} in row {i}"
                                    + (f" (id {r['id']!r})" if "id" in r else ""))
            X[i, j] = float(v)
    return X


def make_features(names: Sequence[str], raw: NDArray[np.float64]) -> list[Feature]:
    """The `Feature`s of fitting columns `raw` [N, F]: each field's transform and log floor.

    Raises:
        DetectorError: a LOG feature has negative values, or no positive one.
    """
    out = []
    for j, n in enumerate(names):
        t = transform_of(n)
        floor = 0.0
        if t is Transform.LOG:
            col = raw[:, j]
            if (col < 0).any() or not (col > 0).any():
                raise DetectorError(f"feature {n!r} enters as a log but has negative values or "
                                    "no positive one")
            floor = float(col[col > 0].min())
        out.append(Feature(n, t, floor))
    return out


def transform(features: Sequence[Feature], raw: NDArray[np.float64]) -> NDArray[np.float64]:
    """Apply each feature's transform to its column of `raw` [N, F]."""
    X = raw.copy()
    for j, f in enumerate(features):
        if f.transform is Transform.LOG:
            col = raw[:, j]
            X[:, j] = np.log(np.where(col > 0, col, f.floor))
    return X
