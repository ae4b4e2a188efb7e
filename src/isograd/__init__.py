"""isograd: per-prediction uncertainty from the gradient norm of the predicted probability.

epistemic = σ²·‖∇θ p(x)‖², aleatoric = p(1−p), total = their sum (arXiv 2603.29466).
"""

from ._version import __version__ as __version__
from .estimate import Task, Uncertainty, estimate
from .layer_scale import Covariance, LayerScale, layer_variances
from .norms import Method, NonFiniteOutputWarning, sq_grad_norms

__all__ = [
    "Covariance",
    "LayerScale",
    "Method",
    "NonFiniteOutputWarning",
    "Task",
    "Uncertainty",
    "estimate",
    "layer_variances",
    "sq_grad_norms",
]
