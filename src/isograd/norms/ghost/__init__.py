"""Batched "ghost" engine: exact per-example squared gradient norms in one weightless backward.

`engine.py` drives one forward and one backward; `plan.py` picks each module's rule;
`provenance.py` and `layout.py` find where the examples sit; `rules.py` is the table of
per-layer rules (one file per rule: linear, embedding, conv, norms, generic); `factors.py` holds
the exact norm algebra shared by the rules (Gram matrices, tied parameters' cross terms).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from .._common import GhostUnsupported, ParamSelection, select_params
from . import plan
from .engine import ghost_sq_grad_norms
from .plan import unsupported_params
from .rules import GENERIC, RULES, Rule

__all__ = ["GENERIC", "RULES", "GhostUnsupported", "Rule", "coverage", "ghost_sq_grad_norms",
           "unsupported_params"]


def coverage(model: nn.Module, params: ParamSelection = None) -> Mapping[str, str]:
    """Which ghost rule each selected parameter goes through, ``{name: rule name}``.

    "generic (vjp)" marks parameters without a dedicated rule (``method="auto"`` then uses
    the loop engine); "a+b" a parameter owned by two modules (tied); "refused: ..." one that
    ghost cannot handle exactly.
    """
    return plan.coverage(model, select_params(model, params))
