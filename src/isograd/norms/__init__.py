"""Per-example squared gradient norms of per-example scalars (torch only)."""

from ._common import (
    DEFAULT_MEMORY_BUDGET,
    EngineFallbackWarning,
    GhostUnsupported,
    NonFiniteOutputWarning,
)
from .api import Method, OnOOM, sq_grad_norms

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "EngineFallbackWarning",
    "GhostUnsupported",
    "Method",
    "NonFiniteOutputWarning",
    "OnOOM",
    "sq_grad_norms",
]
