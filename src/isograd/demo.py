"""`make demo` / `isograd demo`: an end-to-end estimate() on a built-in synthetic problem.

A small MLP is trained (seeded) on two Gaussian blobs; points far from the data get a large
epistemic term, points on the class boundary a large aleatoric term.
"""

from __future__ import annotations

import torch
from torch import nn

from .estimate import estimate


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


def run_demo() -> None:
    """Print a table of p, epistemic, aleatoric and total for a few probe points."""
    model = _train_blobs()
    probes = {
        "inside class 0": (-1.5, 0.0),
        "inside class 1": (1.5, 0.0),
        "on the boundary": (0.0, 0.0),
        "far, off-data": (0.0, 6.0),
        "very far": (8.0, 8.0),
    }
    x = torch.tensor(list(probes.values()))
    u = estimate(model, x, task="classification")
    print(f"{'point':<18} {'x':>12} {'class':>5} {'p':>7} {'epistemic':>10} {'aleatoric':>10} {'total':>8}")
    for i, (name, xy) in enumerate(probes.items()):
        print(f"{name:<18} {str(xy):>12} {int(u.label[i]):>5} {u.p[i]:7.4f} "
              f"{u.epistemic[i]:10.4f} {u.aleatoric[i]:10.4f} {u.total[i]:8.4f}")
