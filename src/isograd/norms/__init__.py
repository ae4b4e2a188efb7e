"""Per-example squared gradient norms of per-example scalars (torch only)."""

from ._common import (
    DEFAULT_MEMORY_BUDGET,
    EngineFallbackWarning,
    GhostUnsupported,
    NonFiniteOutputWarning,
    parse_size,
)
from .api import Method, OnOOM, sq_grad_norms

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "EngineFallbackWarning",
    "GhostUnsupported",
    "Method",
    "NonFiniteOutputWarning",
    "OnOOM",
    "parse_size",
    "sq_grad_norms",
]
