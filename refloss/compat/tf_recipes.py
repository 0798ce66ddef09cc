r"""Two classic TensorFlow center-loss recipes (besides facenet's, ``compat.facenet``).

* :func:`running_mean_update` — the Stack Overflow answer "How to Implement
  Center Loss and Other Running Averages of Labeled Embeddings" (2016,
  ``get_new_centers``): ``scatter_add`` the embeddings into a ``sums``
  variable and ones into a ``cts`` variable, centers = sums / cts. A class
  never seen has 0/0 = NaN as its center.
* :func:`unique_with_counts_update` and :func:`center_loss` — the TensorFlow
  tutorial "implement center loss using tensorflow" (text classification,
  ``center_loss(features, labels, alpha=0.0)``): ``tf.unique_with_counts``
  gives each sample its class count n, the per-sample step is
  ``alpha·((1 − alpha)·(c_y − x)/(1 + n))``, applied by ``scatter_sub``; the
  loss is ``tf.nn.l2_loss(features - centers_batch)``.

The update functions are presets too: their VJPs are the exact derivatives
of their (first) output, which the TensorFlow originals never take (their
variables are not trainable).
"""

from __future__ import annotations

import math
from typing import Any

from .. import _checks
from ..center import (
    _center_loss_bwd,
    _center_loss_fwd,
    _check_batch,
    class_counts,
    class_sums,
)
from ..vjp import defvjp
from ._meta import PresetInfo, preset

__all__ = ["center_loss", "running_mean_update", "unique_with_counts_update"]

_SO_ANSWER = (
    "Stack Overflow 2016 'How to Implement Center Loss and Other Running Averages "
    "of Labeled Embeddings', answer get_new_centers"
)
_TUTORIAL = (
    "TensorFlow tutorial 'implement center loss using tensorflow' (text classification): "
    "center_loss(features, labels, alpha=0.0)"
)


# --------------------------------------------------------------------------
# running mean from sums / cts variables


def _check_running(sums, cts, x, labels, check):
    fetch = _checks.Fetch(None, check=_checks.check_flag("check", check))
    xp = _checks.namespace(sums=sums, cts=cts, x=x, labels=labels)
    _checks.check_float(xp, "sums", sums)
    _checks.check_rank("sums", sums, 2, "a 2-D array (nclass, ndims)")
    if not (xp.isdtype(cts.dtype, "integral") or xp.isdtype(cts.dtype, "real floating")):
        raise TypeError(f"cts: expected an integer or floating dtype, got {cts.dtype}")
    if tuple(cts.shape) != (sums.shape[0],):
        raise ValueError(
            f"cts: expected shape ({sums.shape[0]},) (one per row of sums), "
            f"got {tuple(cts.shape)}"
        )
    _checks.check_float(xp, "x", x)
    _checks.check_rank("x", x, 2, "a 2-D array (batch, ndims)")
    if x.shape[1] != sums.shape[1]:
        raise ValueError(
            f"x: expected {sums.shape[1]} columns (the dim of sums), got {x.shape[1]}"
        )
    if x.dtype != sums.dtype:
        raise TypeError(f"x: expected the dtype of sums ({sums.dtype}), got {x.dtype}")
    labels = _checks.check_labels(xp, "labels", labels, x.shape[0], "x")
    if sums.shape[0] < 1:
        raise ValueError("sums: expected at least one class (row), got 0")
    fetch.xp = xp
    fetch.finite("sums", sums)
    if xp.isdtype(cts.dtype, "real floating"):
        fetch.finite("cts", cts)
    if cts.shape[0]:
        fetch.require(lambda: ~xp.any(cts < 0), lambda: _check_not_negative(xp, cts))
    fetch.finite("x", x)
    fetch.label_range("labels", labels, sums.shape[0])
    fetch.done()
    return xp, labels


def _check_not_negative(xp, cts):
    negative = xp.any(cts < 0)
    if not _checks.is_traced(negative) and bool(negative):
        raise ValueError("cts: expected non-negative counts, got a negative one")


def _running_fwd(sums, cts, x, labels, *, check=True):
    xp, labels = _check_running(sums, cts, x, labels, check)
    num_classes = sums.shape[0]
    dtype = sums.dtype
    cdt = _checks.compute_dtype(xp, dtype)
    new_sums = xp.astype(sums, cdt) + class_sums(xp, xp.astype(x, cdt), labels, num_classes)
    new_cts = cts + xp.astype(class_counts(xp, labels, num_classes), cts.dtype)
    # tf.div(num, denom): IEEE division, 0/0 = NaN for a class never seen, ±inf
    # for a non-zero sum over a zero count; spelled out so that no backend warns
    den = xp.astype(new_cts, cdt)[:, None]
    seen = den != 0
    quotient = new_sums / xp.where(seen, den, xp.ones_like(den))
    signed_inf = xp.copysign(xp.full_like(new_sums, math.inf), new_sums) * xp.copysign(
        xp.ones_like(den), den
    )
    unseen = xp.where(new_sums == 0, xp.full_like(new_sums, math.nan), signed_inf)
    centers = xp.where(seen, quotient, unseen)
    value = (xp.astype(new_sums, dtype), new_cts, xp.astype(centers, dtype))
    float_cts = xp.isdtype(cts.dtype, "real floating")
    return value, (xp, dtype, labels, cts if float_cts else None)


def _running_bwd(residuals, g):
    xp, dtype, labels, cts = residuals
    g_cts = None if cts is None else xp.zeros_like(cts)
    return xp.astype(g, dtype), g_cts, xp.astype(xp.take(g, labels, axis=0), dtype), None


@preset(
    PresetInfo(
        implementation="TensorFlow running-mean snippet (sums / cts variables)",
        distance="n/a (center update)",
        squared="n/a",
        margin="n/a",
        reduction="cumulative mean S_j / N_j of everything seen",
        labels="integer class index in [0, C)",
        edge_cases=(
            "returns (new_sums, new_cts, centers); a class never seen: 0/0 = NaN; "
            "VJP of new_sums"
        ),
        epsilon="none",
        source=f"{_SO_ANSWER} (tf.scatter_add into center/sums, center/cts)",
    )
)
@defvjp(_running_fwd, _running_bwd)
def running_mean_update(
    sums: Any, cts: Any, x: Any, labels: Any, *, check: bool = True
) -> tuple[Any, Any, Any]:
    r"""One step of the ``sums`` / ``cts`` running-mean snippet.

    .. math::

        S'_j = S_j + \sum_{i: y_i = j} x_i,\qquad N'_j = N_j + n_j,\qquad
        c_j = S'_j / N'_j,

    the answer's ``tf.scatter_add(center_sums, indices, embeddings)`` and
    ``tf.scatter_add(center_cts, indices, ones)`` (duplicates accumulate),
    then ``tf.div(num, denom)``. Start from zeros: ``sums`` ``[C, D]``, ``cts``
    ``[C]`` (the snippet keeps float32 counts).

    Returns ``(new_sums, new_cts, centers)``; ``centers`` holds every class
    (the snippet gathers the rows of the classes asked for). The VJP
    (:func:`refloss.vjp`) differentiates ``new_sums``, the first output: the
    upstream gradient for ``sums``, zeros for a floating ``cts`` (None for an
    integer one), ``g[labels]`` for ``x``.

    Differences from the reference:
        * A class never seen has center 0/0 = NaN (exactly as the snippet,
          and without a floating-point warning on any backend); the reference
          ``RunningCenters(rule="mean")`` keeps its initial center. Seen
          classes agree with it.
        * The snippet has no step size (its alpha is "not included"): the
          centers are the plain cumulative mean, which tracks drifting
          embeddings ever more slowly.
        * The snippet's ``get_new_centers`` returns the centers of the batch's
          labels (with duplicates); the preset returns all C rows and the new
          state, which the caller keeps (no TensorFlow variables).

    Args:
        sums: ``[C, D]`` floating running sums (``center/sums``).
        cts: ``[C]`` non-negative counts, integer or floating (``center/cts``).
        x: ``[B, D]`` embeddings, dtype of ``sums``.
        labels: ``[B]`` integer labels in ``[0, C)``.
        check: check the values (finite inputs, labels in range) in one read
            (default True); ``check=False`` reads nothing (docs/errors.md,
            "Checks and syncs").

    Returns:
        ``(new_sums, new_cts, centers)`` in the namespace and device of the
        inputs; ``new_cts`` keeps the dtype of ``cts``, the others that of ``sums``.

    Source:
        Stack Overflow (2016), "How to Implement Center Loss and Other Running
        Averages of Labeled Embeddings", the answer defining ``get_new_centers``
        (copy in the project's ``sources/center-loss-running-averages-qa.txt``).
    """
    return _running_fwd(sums, cts, x, labels, check=check)[0]


# --------------------------------------------------------------------------
# the tutorial: unique_with_counts update and l2_loss


def _uwc_fwd(centers, x, labels, alpha, *, check=True):
    fetch = _checks.Fetch(None, check=_checks.check_flag("check", check))
    xp, labels = _check_batch(x, labels, centers, fetch=fetch)
    alpha = _checks.check_alpha(alpha)
    num_classes = centers.shape[0]
    fetch.label_range("labels", labels, num_classes)
    fetch.done()
    dtype = centers.dtype
    cdt = _checks.compute_dtype(xp, dtype)
    cc, xc = xp.astype(centers, cdt), xp.astype(x, cdt)
    centers_batch = xp.take(cc, labels, axis=0)
    diff = (1.0 - alpha) * (centers_batch - xc)
    # unique_with_counts + gather: the count of each sample's own label
    appear_times = xp.take(
        xp.astype(class_counts(xp, labels, num_classes), cdt), labels, axis=0
    )[:, None]
    diff = diff / (1.0 + appear_times)
    diff = alpha * diff
    new = cc - class_sums(xp, diff, labels, num_classes)  # scatter_sub
    return xp.astype(new, dtype), (xp, dtype, labels, num_classes, alpha)


def _uwc_bwd(residuals, g):
    xp, dtype, labels, num_classes, alpha = residuals
    k = alpha * (1.0 - alpha)
    n = xp.astype(class_counts(xp, labels, num_classes), g.dtype)[:, None]
    g_centers = g * (1.0 - k * n / (1.0 + n))
    g_x = xp.take(g * (k / (1.0 + n)), labels, axis=0)
    return xp.astype(g_centers, dtype), xp.astype(g_x, dtype), None, None


@preset(
    PresetInfo(
        implementation="TensorFlow tutorial center update (tf.unique_with_counts)",
        distance="n/a (center update)",
        squared="n/a",
        margin="n/a",
        reduction="per-sample step α·(1 − α)·(c_y − x)/(1 + n), summed by scatter_sub",
        labels="integer class index in [0, C) (the tutorial argmaxes one-hot labels)",
        edge_cases=(
            "= Eq. 4 with step α(1 − α) (≤ 1/4); tutorial default alpha = 0 never moves; "
            "absent classes do not move"
        ),
        epsilon="none",
        source=f"{_TUTORIAL} (centers_update_op)",
    )
)
@defvjp(_uwc_fwd, _uwc_bwd)
def unique_with_counts_update(
    centers: Any, x: Any, labels: Any, alpha: float, *, check: bool = True
) -> Any:
    r"""The tutorial's ``centers_update_op``: new centers after one batch.

    .. math::

        c'_j = c_j - \sum_{i: y_i = j} \alpha\,\frac{(1 - \alpha)(c_j - x_i)}{1 + n_j}
             = c_j - \alpha(1-\alpha)\,\frac{n_j c_j - s_j}{1 + n_j},

    computed as the tutorial does: ``diff = (1 - alpha) * (centers_batch -
    features)``, divided by ``1 + appear_times`` (``tf.unique_with_counts``),
    times ``alpha``, then ``tf.scatter_sub`` (duplicate labels accumulate).

    The VJP (:func:`refloss.vjp`) is the exact derivative of the new centers
    (a linear map): :math:`\partial c'_j/\partial c_j = 1 - \alpha(1-\alpha)\,n_j/(1+n_j)`,
    :math:`\partial c'_{y_i}/\partial x_i = \alpha(1-\alpha)/(1+n_{y_i})`.

    Differences from the reference:
        * It is the reference ``refloss.update_centers(centers, x, labels,
          rule="wen", alpha=alpha * (1 - alpha))``: the step is α(1 − α), never
          more than 1/4, so α and 1 − α give the same update; the tutorial's
          default ``alpha=0.0`` (kept out of this signature on purpose) never
          moves the centers.
        * The tutorial takes one-hot labels (``tf.argmax(labels, 1)``); the
          preset takes integer labels in ``[0, C)``. Per-class sums are formed
          before the subtraction (TensorFlow subtracts row by row): equal up
          to rounding.

    Args:
        centers: ``[C, D]`` current centers (the tutorial's ``doc_centers``).
        x: ``[B, D]`` features, dtype of ``centers``.
        labels: ``[B]`` integer labels in ``[0, C)``.
        alpha: in [0, 1].
        check: check the values (finite inputs, labels in range) in one read
            (default True); ``check=False`` reads nothing (docs/errors.md,
            "Checks and syncs").

    Returns:
        ``[C, D]`` new centers in the namespace, device and dtype of ``centers``.

    Source:
        TensorFlow tutorial "implement center loss using tensorflow" (text
        classification), ``center_loss(features, labels, alpha=0.0)``'s
        ``centers_update_op`` (copy in the project's
        ``sources/center-loss-tensorflow-tutorial.txt``).
    """
    return _uwc_fwd(centers, x, labels, alpha, check=check)[0]


def _l2_fwd(x, labels, centers, *, check=True):
    return _center_loss_fwd(x, labels, centers, reduction="sum", check=check)


@preset(
    PresetInfo(
        implementation="TensorFlow tutorial center loss (tf.nn.l2_loss)",
        distance="‖x − c_y‖²",
        squared="yes",
        margin="n/a",
        reduction="½·sum (tf.nn.l2_loss)",
        labels="integer class index in [0, C) (the tutorial argmaxes one-hot labels)",
        edge_cases="centers gathered before the update; empty batch 0",
        epsilon="none",
        source=f"{_TUTORIAL} (loss)",
    )
)
@defvjp(_l2_fwd, _center_loss_bwd)
def center_loss(x: Any, labels: Any, centers: Any, *, check: bool = True) -> Any:
    r"""The tutorial's loss, ``tf.nn.l2_loss(features - centers_batch)``.

    .. math::

        L = \tfrac12\sum_{i=1}^{B}\lVert x_i - c_{y_i}\rVert^2

    (``tf.nn.l2_loss(t) = sum(t ** 2) / 2``), with ``centers_batch`` gathered
    before ``centers_update_op`` runs: pass the old centers. Gradients are
    the true derivatives, as TensorFlow's (the centers are not trainable
    there, so only the features' gradient is used).

    Differences from the reference:
        * None in value or gradient: it is ``refloss.center_loss(x, labels,
          centers, reduction="sum")`` (the same forward and backward). The
          tutorial's function also creates the centers variable and returns
          the update op; here those are :func:`unique_with_counts_update`.
        * The tutorial takes one-hot labels; the preset takes integer labels.

    Args:
        x: ``[B, D]`` floating features.
        labels: ``[B]`` integer labels in ``[0, C)``.
        centers: ``[C, D]`` centers, dtype of ``x``.
        check: check the values (finite inputs, labels in range) in one read
            (default True); ``check=False`` reads nothing (docs/errors.md,
            "Checks and syncs").

    Returns:
        A 0-d array in the namespace, device and dtype of ``x``.

    Source:
        TensorFlow tutorial "implement center loss using tensorflow",
        ``center_loss(features, labels, alpha=0.0)`` (its ``loss``).
    """
    return _l2_fwd(x, labels, centers, check=check)[0]
