"""Per-example squared gradient norms of per-example scalars (torch only)."""

from ._common import NonFiniteOutputWarning
from .api import Method, sq_grad_norms

__all__ = ["Method", "NonFiniteOutputWarning", "sq_grad_norms"]
