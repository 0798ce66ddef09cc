r"""Hadsell, Chopra, LeCun (CVPR 2006) contrastive loss, as the classic
TensorFlow answer writes it.

The Stack Overflow answer "Implementing contrastive loss and triplet loss in
Tensorflow" (2016; copy in the project's
``sources/contrastive-and-triplet-tensorflow-qa-zh.txt``) is the form most
TensorFlow code copied::

    d = tf.reduce_sum(tf.square(left_output - right_output), 1)
    d_sqrt = tf.sqrt(d)
    loss = label * tf.square(tf.maximum(0., margin - d_sqrt)) + (1 - label) * d
    loss = 0.5 * tf.reduce_mean(loss)

with ``label`` 0 for a similar pair and 1 for a dissimilar one and
``margin = 0.2`` — the paper's Eq. 4,
:math:`L = (1 - Y)\tfrac12 D_W^2 + Y\tfrac12\{\max(0, m - D_W)\}^2`, averaged
over the pairs. (The answer's third solution, ``compute_contrastive_loss``,
is the same formula.)
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

__all__ = ["contrastive_loss"]

SOURCE = (
    "Hadsell, Chopra, LeCun, CVPR 2006, Eq. 4; Stack Overflow 2016 'Implementing "
    "contrastive loss and triplet loss in Tensorflow', answer 1 (sources/"
    "contrastive-and-triplet-tensorflow-qa-zh.txt)"
)


def _fwd(left_feature, right_feature, label, margin=0.2, *, reproduce_nan=True, check=True):
    xp = _checks.namespace(left_feature=left_feature, right_feature=right_feature, label=label)
    fetch = _checks.Fetch(xp, check=_checks.check_flag("check", check))
    tfa.check_embeddings(xp, "left_feature", left_feature)
    tfa.check_embeddings(xp, "right_feature", right_feature)
    a, b = left_feature, right_feature
    if tuple(b.shape) != tuple(a.shape):
        raise ValueError(
            f"right_feature: expected shape {tuple(a.shape)} (as left_feature), "
            f"got {tuple(b.shape)}"
        )
    if b.dtype != a.dtype:
        raise TypeError(
            f"right_feature: expected the dtype of left_feature ({a.dtype}), got {b.dtype}"
        )
    tfa.pair_labels(xp, "label", label, (a.shape[0],), "one per row of left_feature", fetch)
    margin = _checks.check_margin("margin", margin)
    check_bool("reproduce_nan", reproduce_nan)
    fetch.finite("left_feature", a)
    fetch.finite("right_feature", b)
    fetch.done()

    dtype = a.dtype
    cdt = _checks.compute_dtype(xp, dtype)
    diff = xp.astype(a, cdt) - xp.astype(b, cdt)
    d = xp.sum(diff * diff, axis=1)  # squared distance
    d_sqrt = xp.sqrt(d)
    y = xp.astype(label, cdt)
    gap = margin - d_sqrt
    hinge = xp.where(gap > 0, gap, 0.0)  # tf.maximum(0., margin - d_sqrt)
    terms = y * (hinge * hinge) + (1.0 - y) * d
    n = a.shape[0]
    value = 0.5 * (xp.sum(terms) / n) if n else xp.zeros((), dtype=cdt, device=_device(a))
    res = (xp, dtype, diff, d, d_sqrt, y, hinge, n, reproduce_nan,
           tfa.is_float(xp, label), label.dtype)
    return as_array(xp, xp.astype(value, dtype)), res


def _bwd(residuals, g):
    xp, dtype, diff, d, d_sqrt, y, hinge, n, reproduce_nan, float_label, ldtype = residuals
    c = 0.5 * g / max(n, 1)
    g_sqrt = -2.0 * c * y * hinge
    # d_sqrt = sqrt(d) is in the graph for every pair: at d = 0 its gradient
    # 0.5 / 0 meets g_sqrt (inf, or 0/0) and TF returns NaN, whatever the label
    live = d_sqrt > 0
    via_sqrt = xp.where(live, 0.5 * g_sqrt / xp.where(live, d_sqrt, 1.0),
                        math.nan if reproduce_nan else 0.0)
    g_d = c * (1.0 - y) + via_sqrt
    ga = 2.0 * g_d[:, None] * diff
    gy = xp.astype(c * (hinge * hinge - d), ldtype) if float_label else None
    return xp.astype(ga, dtype), xp.astype(-ga, dtype), gy, None


@preset(
    PresetInfo(
        implementation="Hadsell et al. 2006 contrastive loss (classic TensorFlow answer)",
        distance="L2 per pair: d² = Σ(l − r)², d = sqrt(d²), no epsilon",
        squared="similar d²; dissimilar [m − d]_+²",
        margin="0.2 (the answer's margin; the paper leaves m free)",
        reduction="½ · mean over the pairs",
        labels="label 0 = similar, 1 = dissimilar (Hadsell's Y; opposite of TFA / Caffe)",
        edge_cases=(
            "d = 0 → NaN gradient for the pair's rows, any label (sqrt in the graph); "
            "empty batch 0"
        ),
        epsilon="none",
        source=SOURCE,
    )
)
@defvjp(_fwd, _bwd)
def contrastive_loss(
    left_feature: Any,
    right_feature: Any,
    label: Any,
    margin: float = 0.2,
    *,
    reproduce_nan: bool = True,
    check: bool = True,
) -> Any:
    r"""The paper's contrastive loss as the classic TensorFlow answer computes it.

    .. math::

        L = \frac{1}{2B}\sum_{i=1}^{B} Y_i\,[m - D_i]_+^2 + (1 - Y_i)\,D_i^2,
        \qquad D_i = \lVert l_i - r_i\rVert_2,

    with :math:`Y = 0` for a similar pair and :math:`Y = 1` for a dissimilar
    one (Hadsell et al.'s convention).

    Gradient (TF's autodiff of the answer's graph):
    :math:`\partial L/\partial l_i
    = \frac{1}{B}\bigl((1 - Y_i) - Y_i [m - D_i]_+/D_i\bigr)(l_i - r_i)`,
    the negation for :math:`r_i`; at :math:`D_i = 0` the ``tf.sqrt`` in the graph
    makes it **NaN** for both rows, whatever the label. For floating labels also
    :math:`\partial L/\partial Y_i = ([m - D_i]_+^2 - D_i^2)/(2B)`.

    Differences from the reference (:func:`refloss.contrastive_loss`):
        * Half the value: ``0.5 * rl.contrastive_loss(l, r, label == 0,
          margin=m)`` (the reference follows TFA and has no ½).
        * The label is flipped: 1 means **dissimilar** (TFA, tf.contrib and
          Caffe use 1 = similar); numeric labels are cast to float, so a value
          outside {0, 1} enters linearly. The reference takes a boolean ``same``.
        * NaN gradient for a pair with :math:`D = 0`, by default;
          ``reproduce_nan=False`` gives the reference's subgradient there.
        * The answer's placeholder has shape ``[None, 1]``, which TensorFlow
          would broadcast against the ``[None]`` distances into a B×B matrix;
          the preset takes ``[B]`` labels (the evident intent). The margin
          default is the answer's 0.2 (the paper leaves m free) and must be a
          finite number >= 0; an empty batch gives 0 (TF: NaN).

    Args:
        left_feature: ``[B, D]`` floating embeddings.
        right_feature: ``[B, D]`` floating embeddings, same dtype.
        label: ``[B]`` labels (integer, boolean or floating), 1 = dissimilar.
        margin: the margin m (default 0.2).
        reproduce_nan: keep the NaN gradient at :math:`D = 0`.
        check: check the values (finite inputs) in one read (default
            True); ``check=False`` reads nothing (docs/errors.md, "Checks and syncs").

    Returns:
        A 0-d array in the namespace, device and dtype of ``left_feature``.

    Source:
        Hadsell, Chopra, LeCun. Dimensionality Reduction by Learning an
        Invariant Mapping. CVPR 2006, Eq. 4. Stack Overflow (2016),
        "Implementing contrastive loss and triplet loss in Tensorflow",
        answer 1 (and answer 3's ``compute_contrastive_loss``).
    """
    return _fwd(
        left_feature, right_feature, label, margin, reproduce_nan=reproduce_nan, check=check
    )[0]
