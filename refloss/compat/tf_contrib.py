r"""TensorFlow 1.x ``tf.contrib.losses.metric_learning``: ``triplet_semihard_loss``
and ``contrastive_loss``.

The contrib module is where TensorFlow Addons' metric-learning losses came
from. Two things differ from today's TFA defaults, and both change numbers
silently when a project moves from one to the other:

* the semi-hard loss always uses **squared** Euclidean distances (TFA ≥ 0.11
  defaults to plain ones; TFA ≤ 0.10 was squared too);
* ``contrastive_loss`` takes the two embedding batches, computes
  :math:`d = \sqrt{\sum_k (a_k - p_k)^2}` **without an epsilon**, and averages
  — so an identical pair gives a NaN gradient.

The semi-hard algorithm is TFA's (:func:`refloss.compat.tfa.triplet_semihard_loss`
shares its code: same masked extremes, same NaN without positive pairs, same
gradients), on the squared GEMM distance.
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import device as _device

from .. import _checks
from ..mining import check_bool
from ..reductions import as_array
from ..vjp import defvjp
from . import tfa
from ._meta import PresetInfo, preset

__all__ = ["contrastive_loss", "triplet_semihard_loss"]

SOURCE = (
    "tensorflow/tensorflow @ 07ca580 (TF 1.x) : "
    "tensorflow/contrib/losses/python/metric_learning/metric_loss_ops.py"
)


# --------------------------------------------------------------------------
# triplet_semihard_loss


def _semihard_fwd(labels, embeddings, margin=1.0, *, reproduce_nan=True, check=True):
    xp, labels_1d, margin = tfa.check_triplet_input(
        labels, embeddings, margin, "squared-L2", names=("labels", "embeddings"),
        column_ok=False, check=check,
    )
    check_bool("reproduce_nan", reproduce_nan)
    value, res = tfa.semihard_loss_fwd(
        xp, embeddings, labels_1d, margin, "squared-L2", reproduce_nan
    )
    return value, (res, embeddings)


def _semihard_bwd(residuals, g):
    res, embeddings = residuals
    gx = tfa.semihard_loss_bwd(res, g)
    if gx is None:
        gx = tfa.empty_grad(res[0], embeddings)
    return None, gx, None


@preset(
    PresetInfo(
        implementation="tf.contrib.losses.metric_learning triplet_semihard_loss (TF 1.x)",
        distance="squared L2 by the GEMM expansion (pairwise_distance(squared=True))",
        squared="yes (always)",
        margin="1.0",
        reduction="Σ terms / #ordered positive pairs (zero terms counted)",
        labels="integer, 1-D [B] only (asserted)",
        edge_cases=(
            "as TFA semi-hard: no positive pair → NaN value and gradient; anchor without "
            "negatives → m + d²_ap; hinge at 0 passes gradient; ties split; empty batch 0"
        ),
        epsilon="none on the squared path (D² <= 0 → 0, gradient 0); masked min/max "
                "offset by the row max/min",
        source=f"{SOURCE} (triplet_semihard_loss)",
    )
)
@defvjp(_semihard_fwd, _semihard_bwd)
def triplet_semihard_loss(
    labels: Any, embeddings: Any, margin: float = 1.0, *, reproduce_nan: bool = True,
    check: bool = True,
) -> Any:
    r"""tf.contrib's ``triplet_semihard_loss(labels, embeddings, margin=1.0)``.

    TFA's semi-hard loss (see :func:`refloss.compat.tfa.triplet_semihard_loss`)
    on **squared** GEMM distances :math:`D^2_{ij}`:

    .. math::

        L = \frac{1}{\#\{(a, p)\}}\sum_{(a, p)}\bigl[m + (D^2_{ap} - D^2_{an^*})\bigr]_+,

    with :math:`n^*` the negative with the smallest :math:`D^2_{an} > D^2_{ap}`
    (the farthest negative when none is farther, the row minimum when the
    anchor has no negative). Same O(B² log B) algorithm and the same
    TensorFlow gradients as the TFA preset.

    Differences from the reference (:func:`refloss.semihard_triplet_loss`):
        * Squared Euclidean distances, always (the reference's default and
          TFA ≥ 0.11's are plain): ``tfa.triplet_semihard_loss(...,
          distance_metric="squared-L2")`` gives the same number, the TFA
          default does not. The margin is in squared units.
        * No positive pair: NaN value and gradient by default
          (TF #20253); ``reproduce_nan=False`` gives 0. Empty batch: 0.
        * An anchor without negatives gives :math:`[m + D^2_{ap}]_+`; zero
          terms are counted in the mean; the hinge passes gradient at 0; ties
          split the gradient; the GEMM expansion cancels for near-duplicates.
        * ``labels`` must be 1-D (contrib asserts it; TFA also takes
          ``[B, 1]``). ``margin`` must be a finite number >= 0.

    Args:
        labels: ``[B]`` integer labels.
        embeddings: ``[B, D]`` floating embeddings.
        margin: the margin, in squared-distance units (default 1.0).
        reproduce_nan: keep the NaN of a batch without positive pairs.
        check: check the values (finite inputs) in one read (default
            True); ``check=False`` reads nothing (docs/errors.md, "Checks and syncs").

    Returns:
        A 0-d array in the namespace, device and dtype of ``embeddings``.

    Source:
        tensorflow/tensorflow @ 07ca580 (TF 1.x),
        ``tensorflow/contrib/losses/python/metric_learning/metric_loss_ops.py``
        (``triplet_semihard_loss``, ``masked_minimum``, ``masked_maximum``,
        ``pairwise_distance``).
    """
    return _semihard_fwd(labels, embeddings, margin, reproduce_nan=reproduce_nan, check=check)[0]


# --------------------------------------------------------------------------
# contrastive_loss


def _contrastive_fwd(labels, embeddings_anchor, embeddings_positive, margin=1.0, *,
                     reproduce_nan=True, check=True):
    xp = _checks.namespace(
        labels=labels, embeddings_anchor=embeddings_anchor,
        embeddings_positive=embeddings_positive,
    )
    fetch = _checks.Fetch(xp, check=_checks.check_flag("check", check))
    tfa.check_embeddings(xp, "embeddings_anchor", embeddings_anchor)
    tfa.check_embeddings(xp, "embeddings_positive", embeddings_positive)
    a, p = embeddings_anchor, embeddings_positive
    if tuple(p.shape) != tuple(a.shape):
        raise ValueError(
            f"embeddings_positive: expected shape {tuple(a.shape)} (as embeddings_anchor), "
            f"got {tuple(p.shape)}"
        )
    if p.dtype != a.dtype:
        raise TypeError(
            f"embeddings_positive: expected the dtype of embeddings_anchor ({a.dtype}), "
            f"got {p.dtype}"
        )
    tfa.pair_labels(xp, "labels", labels, (a.shape[0],), "one per row of embeddings_anchor",
                    fetch)
    margin = _checks.check_margin("margin", margin)
    check_bool("reproduce_nan", reproduce_nan)
    fetch.finite("embeddings_anchor", a)
    fetch.finite("embeddings_positive", p)
    fetch.done()

    dtype = a.dtype
    cdt = _checks.compute_dtype(xp, dtype)
    diff = xp.astype(a, cdt) - xp.astype(p, cdt)
    d = xp.sqrt(xp.sum(diff * diff, axis=1))  # no epsilon
    y = xp.astype(labels, cdt)
    gap = margin - d
    hinge = xp.where(gap > 0, gap, 0.0)
    terms = y * (d * d) + (1.0 - y) * (hinge * hinge)
    b = a.shape[0]
    value = xp.sum(terms) / b if b else xp.zeros((), dtype=cdt, device=_device(a))
    float_labels = tfa.is_float(xp, labels)
    res = (xp, dtype, diff, d, y, hinge, b, reproduce_nan, float_labels, labels.dtype)
    return as_array(xp, xp.astype(value, dtype)), res


def _contrastive_bwd(residuals, g):
    xp, dtype, diff, d, y, hinge, b, reproduce_nan, float_labels, ldtype = residuals
    c = g / max(b, 1)
    gd = c * (2.0 * y * d - 2.0 * (1.0 - y) * hinge)
    # sqrt's gradient 0.5 / d: at d = 0 TF multiplies inf (or 0/0) by the zero
    # difference, NaN in every coordinate of the pair
    live = d > 0
    gsq = xp.where(live, 0.5 * gd / xp.where(live, d, 1.0), math.nan if reproduce_nan else 0.0)
    ga = 2.0 * gsq[:, None] * diff
    gy = xp.astype(c * (d * d - hinge * hinge), ldtype) if float_labels else None
    return gy, xp.astype(ga, dtype), xp.astype(-ga, dtype), None


@preset(
    PresetInfo(
        implementation="tf.contrib.losses.metric_learning contrastive_loss (TF 1.x)",
        distance="sqrt(Σ(a − p)²) per pair, no epsilon",
        squared="y·d² and (1 − y)·[m − d]_+²",
        margin="1.0",
        reduction="mean over the pairs",
        labels="y = 1 similar, 0 dissimilar (to_float; other values enter linearly)",
        edge_cases="identical pair (d = 0) → NaN gradient for both rows; no ½; empty batch 0",
        epsilon="none (the cause of the NaN)",
        source=f"{SOURCE} (contrastive_loss)",
    )
)
@defvjp(_contrastive_fwd, _contrastive_bwd)
def contrastive_loss(
    labels: Any,
    embeddings_anchor: Any,
    embeddings_positive: Any,
    margin: float = 1.0,
    *,
    reproduce_nan: bool = True,
    check: bool = True,
) -> Any:
    r"""tf.contrib's ``contrastive_loss(labels, embeddings_anchor, embeddings_positive, margin)``.

    .. math::

        L = \frac1B\sum_i y_i\,d_i^2 + (1 - y_i)\,[m - d_i]_+^2,\qquad
        d_i = \sqrt{\textstyle\sum_k (a_{ik} - p_{ik})^2},

    ``y = 1`` similar.

    Gradient (TF's): :math:`\partial L/\partial a_i = \frac{2}{B}\bigl(y_i d_i
    - (1 - y_i)[m - d_i]_+\bigr)\frac{a_i - p_i}{d_i}`, the negation for
    :math:`p_i`; at :math:`d_i = 0` the square root's gradient is infinite
    and TF returns **NaN** in every coordinate of both rows (whatever the
    label). For floating labels also
    :math:`\partial L/\partial y_i = (d_i^2 - [m - d_i]_+^2)/B`.

    Differences from the reference (:func:`refloss.contrastive_loss` with
    ``same = (labels == 1)``, whose value it equals for 0/1 labels):
        * NaN gradient for a pair with :math:`d = 0` (identical embeddings),
          by default; ``reproduce_nan=False`` gives the reference's
          subgradient (0 for that pair).
        * Numeric labels, 1 = similar (cast to float: a label outside {0, 1}
          enters linearly); the reference takes a boolean ``same``.
        * An empty batch gives 0 (TF: the mean of nothing, NaN); ``margin``
          must be a finite number >= 0.

    Args:
        labels: ``[B]`` labels (integer, boolean or floating), 1 = similar.
        embeddings_anchor: ``[B, D]`` floating embeddings.
        embeddings_positive: ``[B, D]`` floating embeddings, same dtype.
        margin: the margin (default 1.0).
        reproduce_nan: keep the NaN gradient at :math:`d = 0`.
        check: check the values (finite inputs) in one read (default
            True); ``check=False`` reads nothing (docs/errors.md, "Checks and syncs").

    Returns:
        A 0-d array in the namespace, device and dtype of ``embeddings_anchor``.

    Source:
        tensorflow/tensorflow @ 07ca580 (TF 1.x),
        ``tensorflow/contrib/losses/python/metric_learning/metric_loss_ops.py``
        (``contrastive_loss``).
    """
    return _contrastive_fwd(
        labels, embeddings_anchor, embeddings_positive, margin, reproduce_nan=reproduce_nan,
        check=check,
    )[0]
