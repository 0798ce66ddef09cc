"""refloss: exact, proven deep metric-learning losses on any array-API backend.

The core imports NumPy and array-api-compat only; it runs unchanged on NumPy,
CuPy, PyTorch, JAX and array-api-strict arrays and returns results in the
caller's namespace, on the caller's device, in the caller's floating dtype.
"""

from .center import (
    RunningCenters,
    center_loss,
    center_stats,
    update_centers,
    update_centers_from_stats,
)
from .distances import paired_distances, pairwise_distances
from .normalization import l2_normalize
from .vjp import value_and_grad, vjp

__version__ = "0.1.0"

__all__ = [
    "RunningCenters",
    "center_loss",
    "center_stats",
    "l2_normalize",
    "paired_distances",
    "pairwise_distances",
    "update_centers",
    "update_centers_from_stats",
    "value_and_grad",
    "vjp",
]
