"""Synthetic score rows with the field names of `isograd qa` score rows, and their labels."""

from __future__ import annotations

import numpy as np


def synthetic_rows(n: int = 400, seed: int = 0, blocks: int = 3) -> tuple[list[dict], np.ndarray]:
    """`n` rows whose answer is wrong more often when ‖∇ log p‖² is large and p small.

    Returns:
        (rows, correct) with correct a bool [n] array.
    """
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    log_p = -np.log1p(np.exp(0.3 * z + rng.normal(0.0, 0.5, n)))  # <= 0
    p = np.exp(log_p)
    glp = np.exp(3.0 + 1.2 * z + 0.3 * rng.normal(size=n))
    logit = 1.5 * z - 1.0 * log_p - 0.5
    wrong = rng.uniform(size=n) < 1 / (1 + np.exp(-logit))
    rows = []
    for i in range(n):
        share = rng.dirichlet(np.ones(blocks + 1))
        epi = p[i] ** 2 * glp[i]
        by_layer = {"embed": float(share[0] * epi)}
        by_layer.update({f"block.{b}": float(share[b + 1] * epi) for b in range(blocks)})
        rows.append({
            "id": f"q{i}", "p": float(p[i]), "log_p": float(log_p[i]), "grad_log_p": float(glp[i]),
            "epistemic": float(epi), "aleatoric": float(p[i] * (1 - p[i])),
            "embedding_grad": float(glp[i] * rng.uniform(0.05, 0.2)),
            "n_tokens": int(rng.integers(1, 20)), "by_layer": by_layer, "msp": float(-log_p[i]),
        })
    return rows, ~wrong
