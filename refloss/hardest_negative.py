r"""All positives, hardest negative: one triplet per positive pair, the nearest negative.

For every ordered positive pair (a, p) of a labeled batch (:math:`p \ne a`,
:math:`y_p = y_a`) whose anchor has a negative,

.. math::

    l_{ap} = [d_{ap} - d_{an^*} + m]_+ \quad(\text{soft: } \mathrm{softplus}(d_{ap} - d_{an^*})),
    \qquad n^* = \arg\min_{n:\,y_n \ne y_a} d_{an},

ties to the lowest index. n* depends on the anchor only (the hardest
negative of batch-hard), while every positive is used (as batch-all does):
"all positives, hardest negative". Selection, distances and reductions are
the stages of :mod:`refloss.triplet` and :mod:`refloss.mining`; nothing of
size B³ is formed: O(B²) time after the distance matrix, O(B²) memory.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import device as _device

from .mining import _empty_triplets, _prepare, arg_extreme, embed_backward, label_masks
from .triplet import (
    _argument,
    _empty,
    _hinge,
    _hinge_grad,
    _labeled_forward,
    _reduce,
    _scaled,
    _tol,
    _upstream,
)
from .vjp import defvjp

__all__ = ["hardest_negative_triplet_loss", "mine_hardest_negative"]


def _select(xp, d, labels):
    """``(valid, neg, d_an)``: the counted pairs (B×B: p a positive of a and a
    has a negative), each anchor's hardest negative (index, lowest on ties)
    and its distance (0 for an anchor without negatives)."""
    pos, neg_mask, cols = label_masks(xp, labels, d)
    d_an, neg, has_n = arg_extreme(xp, d, neg_mask, cols, largest=False)
    return pos & has_n[:, None], neg, d_an


def _hardest_negative_fwd(
    x, labels, *, margin=1.0, metric="euclidean", soft=False, normalize=False,
    reduction="mean", check=True,
):
    xp, dtype, margin, d, eres, labels, _ = _labeled_forward(
        x, labels, margin, metric, soft, normalize, reduction, check
    )
    if d.shape[0] == 0:
        return _empty(xp, x, d, reduction, (0, 0))
    valid, neg, d_an = _select(xp, d, labels)
    z = _argument(d, d_an[:, None], margin, soft)
    terms = xp.where(valid, _hinge(xp, z, soft), 0.0)
    value, rres = _reduce(
        xp, terms, reduction, xp.count_nonzero(valid), _tol(xp, reduction, d, margin, soft)
    )
    res = (xp, dtype, (eres, valid, neg, z, soft, rres))
    return xp.astype(value, dtype), res


def _hardest_negative_bwd(residuals, g):
    xp, dtype, res = residuals
    if not isinstance(res, tuple):  # empty batch
        return res, None
    eres, valid, neg, z, soft, rres = res
    weights, scale = _upstream(xp, rres, g, valid, z.dtype)
    w = xp.where(valid, weights * _hinge_grad(xp, z, soft), 0.0)
    # +w_ap at every (a, p); -Σ_p w_ap at (a, n*_a): one column per row, a
    # mask instead of a scatter (n*_a is a negative, never one of the p)
    cols = xp.arange(z.shape[0], dtype=neg.dtype, device=_device(neg))
    gd = w - xp.where(cols[None, :] == neg[:, None], xp.sum(w, axis=1)[:, None], 0.0)
    del w
    gd = _scaled(gd, scale)
    return xp.astype(embed_backward(xp, eres, gd), dtype), None


@defvjp(_hardest_negative_fwd, _hardest_negative_bwd)
def hardest_negative_triplet_loss(
    x: Any,
    labels: Any,
    *,
    margin: float = 1.0,
    metric: str = "euclidean",
    soft: bool = False,
    normalize: bool = False,
    reduction: str = "mean",
    check: bool = True,
) -> Any:
    r"""Triplet loss over every positive pair with the anchor's hardest negative.

    For each ordered positive pair (a, p), :math:`p \ne a`, :math:`y_p = y_a`,
    whose anchor has at least one negative:

    .. math:: l_{ap} = [d_{ap} - d_{an^*_a} + m]_+
       \quad\text{(soft: } \mathrm{softplus}(d_{ap} - d_{an^*_a})\text{)},
       \qquad n^*_a = \arg\min_{n:\,y_n \ne y_a} d_{an}

    with ties to the lowest index. Pairs whose anchor has no negative give no
    term and are not counted; no counted pair gives 0 with gradient 0.
    :func:`refloss.mine_hardest_negative` returns the same triplets, and
    :func:`refloss.triplet_margin_loss` on them gives the same loss.

    Gradient (through :func:`refloss.vjp`): with :math:`w_{ap}` the upstream
    weight of term (a, p) times the hinge's derivative (:math:`[z > 0]`, 0 at
    exactly 0; soft: :math:`\sigma(z)`), :math:`G = \partial L/\partial D` has
    :math:`G_{ap} = w_{ap}` and :math:`G_{a n^*_a} = -\sum_p w_{ap}`, built
    with a column mask (no scatter), then the distance VJP (and the
    normalisation's with ``normalize=True``). The choice of n* is piecewise
    constant and carries no gradient.

    Conventions: the positive set is batch-all's (ordered pairs, the anchor
    excluded), the negative batch-hard's. pytorch-metric-learning's
    ``BatchEasyHardMiner(pos_strategy="all", neg_strategy="hard")`` with
    ``TripletMarginLoss`` selects these triplets; siamese-triplet style
    ``HardestNegativeTripletSelector`` code keeps each unordered pair
    (``itertools.combinations``) once and only the triplets with a positive
    loss, usually on squared distances (``metric="sqeuclidean"``,
    ``reduction="mean_nonzero"`` gives its mean on ordered pairs).

    Args:
        x: ``[B, D]`` floating embeddings.
        labels: ``[B]`` integer labels.
        margin: :math:`m \ge 0` (ignored when ``soft``).
        metric: ``"euclidean"`` (default), ``"sqeuclidean"`` or ``"cosine"``.
        soft: soft margin (softplus) instead of the hinge.
        normalize: L2-normalise the embeddings first.
        reduction: ``"mean"`` over the counted pairs (default; 0 when there
            is none), ``"sum"``, ``"mean_nonzero"`` (over the terms above
            the rounding tolerance τ of :mod:`refloss.reductions`), or
            ``"none"``: the ``[B, B]`` matrix of :math:`l_{ap}`, **0 where
            (a, p) is not a counted pair**.
        check: check that ``x`` is finite (default True; docs/errors.md,
            "Checks and syncs").

    Returns:
        A 0-d array (``[B, B]`` for ``"none"``) in the namespace, device and
        dtype of ``x`` (float16/bfloat16 computed in float32).

    Example:
        >>> import numpy as np, refloss as rl
        >>> x = np.array([[0.0], [1.0], [2.0], [2.5]])
        >>> rl.hardest_negative_triplet_loss(x, np.array([0, 0, 0, 1]), reduction="none")
        array([[0. , 0. , 0.5, 0. ],
               [0.5, 0. , 0.5, 0. ],
               [2.5, 1.5, 0. , 0. ],
               [0. , 0. , 0. , 0. ]])

    References:
        Hermans, Beyer, Leibe. In Defense of the Triplet Loss for Person
        Re-Identification. arXiv:1703.07737, 2017 (batch-hard, batch-all).
        pytorch-metric-learning ``miners/batch_easy_hard_miner.py``.
    """
    return _hardest_negative_fwd(
        x, labels, margin=margin, metric=metric, soft=soft, normalize=normalize,
        reduction=reduction, check=check,
    )[0]


def mine_hardest_negative(
    x: Any, labels: Any, *, metric: str = "euclidean", normalize: bool = False,
    check: bool = True,
) -> tuple[Any, Any, Any]:
    r"""The triplets of :func:`hardest_negative_triplet_loss`: ``(a, p, n*_a)`` per positive pair.

    One triplet per ordered pair (a, p), :math:`p \ne a`, :math:`y_p = y_a`,
    whose anchor has a negative, with :math:`n^*_a = \arg\min_n d_{an}` over
    the negatives (ties to the lowest index). Pairs whose anchor has no
    negative yield nothing.

    ``triplet_margin_loss(x[a], x[p], x[n], ...)`` on the returned indices
    equals :func:`refloss.hardest_negative_triplet_loss` with the same options.

    Args:
        x: ``[B, D]`` floating embeddings.
        labels: ``[B]`` integer labels.
        metric: ``"euclidean"`` (default), ``"sqeuclidean"`` or ``"cosine"``.
        normalize: L2-normalise the embeddings first.
        check: check that ``x`` is finite (default True; docs/errors.md,
            "Checks and syncs").

    Returns:
        Three ``[T]`` integer arrays (anchor, positive, negative) in row-major
        order of (a, p), in the namespace and on the device of ``x``; T is
        data dependent (this function uses ``nonzero``).

    Example:
        >>> import numpy as np, refloss as rl
        >>> x = np.array([[0.0], [1.0], [2.0], [2.5]])
        >>> [t.tolist() for t in rl.mine_hardest_negative(x, np.array([0, 0, 0, 1]))]
        [[0, 0, 1, 1, 2, 2], [1, 2, 0, 2, 0, 1], [3, 3, 3, 3, 3, 3]]

    References:
        Hermans, Beyer, Leibe. In Defense of the Triplet Loss for Person
        Re-Identification. arXiv:1703.07737, 2017.
    """
    xp, d, labels, _ = _prepare(x, labels, metric, normalize, check)
    if d.shape[0] == 0:
        return _empty_triplets(xp, x)
    valid, neg, _ = _select(xp, d, labels)
    anchor, positive = xp.nonzero(valid)
    return anchor, positive, xp.take(neg, anchor)
