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
from .contrastive import contrastive_loss, contrastive_loss_all_pairs
from .distances import paired_distances, pairwise_distances
from .hardest_negative import hardest_negative_triplet_loss, mine_hardest_negative
from .mining import mine_batch_hard, mine_semihard
from .normalization import l2_normalize
from .triplet import (
    batch_all_triplet_loss,
    batch_hard_triplet_loss,
    semihard_triplet_loss,
    triplet_margin_loss,
)
from .vjp import value_and_grad, vjp

__version__ = "0.1.0"

__all__ = [
    "RunningCenters",
    "batch_all_triplet_loss",
    "batch_hard_triplet_loss",
    "center_loss",
    "center_stats",
    "contrastive_loss",
    "contrastive_loss_all_pairs",
    "hardest_negative_triplet_loss",
    "l2_normalize",
    "mine_batch_hard",
    "mine_hardest_negative",
    "mine_semihard",
    "paired_distances",
    "pairwise_distances",
    "semihard_triplet_loss",
    "triplet_margin_loss",
    "update_centers",
    "update_centers_from_stats",
    "value_and_grad",
    "vjp",
]
