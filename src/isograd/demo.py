"""`make demo` / `isograd demo`: the main job on the embedded default, and a synthetic example.

* `run_qa_demo`: `isograd qa` on the first 20 TruthfulQA generation questions with the
  embedded SmolLM2-135M-Instruct (gradient scores, P(True), MSP, mean token entropy; 16 answer
  tokens), then the AUROC table. Resumable like any `isograd qa` run.
* `synthetic_table` (`isograd demo --synthetic`): `estimate()` on a small MLP trained (seeded)
  on two Gaussian blobs, at five probe points. It shows both sides of the method: the boundary
  point gets the large aleatoric and epistemic terms, and points far off the data get almost
  none, because the saturated tanh network's output no longer moves with its parameters there
  (the blind spot measured against MCMC in docs/validation.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .estimate import Uncertainty, estimate

# the settings of the main job (README: `make demo`)
QA_DEMO: dict[str, Any] = dict(dataset="truthfulqa-gen", limit=20,
                               methods=("p_true", "msp", "mean_token_entropy"),
                               max_new_tokens=16, alternatives=False)
PROBES = {
    "inside class 0": (-1.5, 0.0),
    "inside class 1": (1.5, 0.0),
    "on the boundary": (0.0, 0.0),
    "far, off-data": (0.0, 6.0),
    "very far": (8.0, 8.0),
}


def run_qa_demo(out: str | Path = "runs/demo", *, threads: int | None = None,
                progress: bool = True, command: str | None = None) -> dict[str, Any]:
    """`isograd qa` with the `QA_DEMO` settings on the embedded default; returns the metrics."""
    from .qa.pipeline import run_qa

    return run_qa(out, model="smollm2-135m", threads=threads, progress=progress,
                  command=command, **QA_DEMO)


def _train_blobs(seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    n = 200
    x = torch.cat([torch.randn(n, 2, generator=g) * 0.6 + torch.tensor([-1.5, 0.0]),
                   torch.randn(n, 2, generator=g) * 0.6 + torch.tensor([1.5, 0.0])])
    y = torch.cat([torch.zeros(n), torch.ones(n)]).long()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.05, weight_decay=1e-3)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def synthetic_table(seed: int = 0) -> Uncertainty:
    """`estimate()` at the `PROBES` points (in that order) of the seeded two-blob MLP."""
    model = _train_blobs(seed)
    return estimate(model, torch.tensor(list(PROBES.values())), task="classification")


def run_synthetic() -> None:
    """Print p, epistemic, aleatoric and total at the probe points."""
    u = synthetic_table()
    print(f"{'point':<18} {'x':>12} {'class':>5} {'p':>7} {'epistemic':>10} {'aleatoric':>10} {'total':>8}")
    for i, (name, xy) in enumerate(PROBES.items()):
        print(f"{name:<18} {str(xy):>12} {int(u.label[i]):>5} {u.p[i]:7.4f} "
              f"{u.epistemic[i]:10.4f} {u.aleatoric[i]:10.4f} {u.total[i]:8.4f}")
