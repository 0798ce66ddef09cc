r"""Caffe: the original center-loss layer and the BVLC ``ContrastiveLoss`` layer.

* :func:`center_loss` reproduces ``CenterLossLayer`` of Wen et al.'s
  ydwen/caffe-face (``src/caffe/layers/center_loss_layer.cpp``): the value
  :math:`\tfrac{1}{2M}\sum_i\lVert x_i - c_{y_i}\rVert^2` and, as the
  "gradient" of the centers, the layer's ``center_diff`` — the paper's Eq. 4
  step, which the Caffe solver then applies to the center blob.
* :func:`contrastive_loss` reproduces Caffe's ``ContrastiveLossLayer``
  (``src/caffe/layers/contrastive_loss_layer.cpp``, the BVLC layer, copied in
  the same fork): label non-zero = similar, ``1/(2N)`` scaling, the
  ``legacy_version`` hinge, and the ``d + 1e-4`` denominator of its backward.

Both are thin parameterisations of the core (``refloss.center`` statistics,
``refloss.distances`` paired distances) with their own analytic VJP.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import device as _device

from .. import _checks
from ..center import _check_batch, class_counts, class_sums
from ..reductions import as_array
from ..vjp import defvjp
from ._meta import PresetInfo, preset

__all__ = ["center_loss", "contrastive_loss"]

# The denominator guard of ContrastiveLossLayer::Backward_cpu (and the CUDA kernel).
CAFFE_BACKWARD_EPS = 1e-4


# --------------------------------------------------------------------------
# CenterLossLayer


def _center_loss_fwd(x, labels, centers, *, check=True):
    fetch = _checks.Fetch(None, check=_checks.check_flag("check", check))
    xp, labels = _check_batch(x, labels, centers, fetch=fetch)
    num_classes = centers.shape[0]
    fetch.label_range("labels", labels, num_classes)
    fetch.done()
    dtype = x.dtype
    cdt = _checks.compute_dtype(xp, dtype)
    # Forward_cpu: D(i,:) = X(i,:) - C(y(i),:); loss = dot(D, D) / M / 2
    distance = xp.astype(x, cdt) - xp.take(xp.astype(centers, cdt), labels, axis=0)
    m = x.shape[0]
    if m == 0:
        value = xp.zeros((), dtype=cdt, device=_device(x))
    else:
        value = xp.sum(distance * distance) / m / 2.0
    return as_array(xp, xp.astype(value, dtype)), (xp, dtype, distance, labels, num_classes, m)


def _center_loss_bwd(residuals, g):
    xp, dtype, distance, labels, num_classes, m = residuals
    # bottom diff: distance scaled by top_diff / M
    gx = (g / max(m, 1)) * distance
    # center diff: variation_sum_j = sum_{y_i = j} -(x_i - c_j), times 1 / (count_j + 1);
    # neither top_diff (the loss weight) nor 1/M enters
    variation_sum = class_sums(xp, -distance, labels, num_classes)
    count = xp.astype(class_counts(xp, labels, num_classes), distance.dtype)[:, None]
    center_diff = (1.0 / (count + 1.0)) * variation_sum
    return xp.astype(gx, dtype), None, xp.astype(center_diff, dtype)


@preset(
    PresetInfo(
        implementation="Caffe CenterLoss layer (Wen et al., original)",
        distance="‖x − c_y‖² (D = x − c_y)",
        squared="yes",
        margin="n/a",
        reduction="½·sum / M (M = batch size)",
        labels="integer class index in [0, C) (Caffe casts its float label blob to int)",
        edge_cases=(
            "center 'gradient' is the layer's center_diff = Eq. 4 Σ(c − x)/(1 + n): "
            "not × loss weight, not / M, not the derivative; absent class 0; empty batch 0"
        ),
        epsilon="none",
        source=(
            "ydwen/caffe-face @ 48ff38e : src/caffe/layers/center_loss_layer.cpp "
            "(CenterLossLayer Forward_cpu / Backward_cpu)"
        ),
    )
)
@defvjp(_center_loss_fwd, _center_loss_bwd)
def center_loss(x: Any, labels: Any, centers: Any, *, check: bool = True) -> Any:
    r"""Wen et al.'s original Caffe ``CenterLoss`` layer.

    .. math::

        L = \frac{1}{2M}\sum_{i=1}^{M}\lVert x_i - c_{y_i}\rVert^2
        \qquad(\texttt{dot(D, D) / M / 2},\ M = \text{batch size}),

    the reference ``refloss.center_loss(x, labels, centers, reduction="mean")``.

    Backward (through :func:`refloss.vjp`, upstream gradient g = the layer's
    ``top_diff``, i.e. the ``loss_weight`` λ):

    * ``x``: :math:`g\,(x_i - c_{y_i})/M` — the true derivative;
    * ``centers``: the layer's ``center_diff``,
      :math:`\Delta c_j = \sum_{i: y_i=j}(c_j - x_i)\,/\,(1 + n_j)` (the paper's
      Eq. 4), **not** scaled by g and not divided by M. It is the step the
      Caffe solver applies to the center blob
      (:math:`c \leftarrow c - \mathrm{lr}\cdot\mathrm{lr\_mult}\cdot\Delta c`, plus
      the solver's momentum and weight decay), not the derivative of L.

    Differences from the reference:
        * The center "gradient" is Eq. 4's ``center_diff``, not
          :math:`-g\sum_{y_i=j}(x_i - c_j)/M`: finite differences and autograd
          disagree with it by design, and it does not scale with the upstream
          gradient. ``c - alpha * grads[2]`` equals
          ``refloss.update_centers(c, x, labels, rule="wen", alpha=alpha)``.
        * The value is summed as ``dot(D, D) / M / 2`` (the reference halves
          each term first): equal up to rounding.
        * Caffe flattens ``bottom[0]`` from ``axis`` on and takes float labels;
          the preset takes a 2-D ``x`` and integer labels in ``[0, C)``.
        * An empty batch gives 0 (the layer would compute 0/0); the centers are
          an argument here, not a layer blob (``center_filler``), and
          momentum / weight decay of the solver are not part of the preset.

    Args:
        x: ``[M, D]`` floating features (``bottom[0]``).
        labels: ``[M]`` integer labels (``bottom[1]``).
        centers: ``[C, D]`` centers (the layer's ``blobs_[0]``), dtype of ``x``.
        check: check the values (finite inputs, labels in range) in one read
            (default True); ``check=False`` reads nothing (docs/errors.md,
            "Checks and syncs").

    Returns:
        A 0-d array in the namespace, device and dtype of ``x``.

    Source:
        ydwen/caffe-face @ 48ff38e, ``src/caffe/layers/center_loss_layer.cpp``
        (``CenterLossLayer::Forward_cpu`` / ``Backward_cpu``).
    """
    return _center_loss_fwd(x, labels, centers, check=check)[0]


# --------------------------------------------------------------------------
# ContrastiveLossLayer


def _check_contrastive(a, b, similar, margin, legacy_version, check):
    xp = _checks.namespace(a=a, b=b, similar=similar)
    for name, arr in (("a", a), ("b", b)):
        _checks.check_float(xp, name, arr)
        _checks.check_rank(name, arr, 2, "a 2-D array (batch, dim)")
    if b.shape[1] != a.shape[1]:
        raise ValueError(f"b: expected {a.shape[1]} columns (as a), got {b.shape[1]}")
    _checks.check_same_rows("b", b, "a", a)
    if b.dtype != a.dtype:
        raise TypeError(f"b: expected the dtype of a ({a.dtype}), got {b.dtype}")
    if not (similar.dtype == xp.bool or xp.isdtype(similar.dtype, "integral")):
        raise TypeError(
            f"similar: expected an integer or boolean array (Caffe's label: non-zero "
            f"= similar), got {similar.dtype}"
        )
    if similar.ndim != 1:
        raise ValueError(f"similar: expected a 1-D array, got shape {tuple(similar.shape)}")
    if similar.shape[0] != a.shape[0]:
        raise ValueError(
            f"similar: expected {a.shape[0]} entries (one per row of a), "
            f"got {similar.shape[0]}"
        )
    margin = _checks.check_margin("margin", margin)
    if not isinstance(legacy_version, bool):
        raise TypeError(
            f"legacy_version: expected True or False, got {type(legacy_version).__name__}"
        )
    fetch = _checks.Fetch(xp, check=_checks.check_flag("check", check))
    fetch.finite("a", a)
    fetch.finite("b", b)
    fetch.done()
    return xp, margin


def _contrastive_fwd(a, b, similar, *, margin=1.0, legacy_version=False, check=True):
    xp, margin = _check_contrastive(a, b, similar, margin, legacy_version, check)
    dtype = a.dtype
    cdt = _checks.compute_dtype(xp, dtype)
    sim = similar if similar.dtype == xp.bool else similar != 0
    diff = xp.astype(a, cdt) - xp.astype(b, cdt)  # diff_ = a - b
    dist_sq = xp.sum(diff * diff, axis=1)
    zero = xp.zeros_like(dist_sq)
    if legacy_version:
        dist = None
        mdist = margin - dist_sq
        dissimilar = xp.where(mdist > 0, mdist, zero)  # max(margin - d², 0)
    else:
        dist = xp.sqrt(dist_sq)
        mdist = margin - dist
        hinge = xp.where(mdist > 0, mdist, zero)  # max(margin - d, 0)
        dissimilar = hinge * hinge
    terms = xp.where(sim, dist_sq, dissimilar)
    n = a.shape[0]
    if n == 0:
        value = xp.zeros((), dtype=cdt, device=_device(a))
    else:
        value = xp.sum(terms) / n / 2.0
    return as_array(xp, xp.astype(value, dtype)), (xp, dtype, sim, diff, dist, mdist, n)


def _contrastive_bwd(residuals, g):
    xp, dtype, sim, diff, dist, mdist, n = residuals
    # Backward_cpu, bottom 0 (sign +1): alpha = top_diff / num
    alpha = g / max(n, 1)
    if dist is None:  # legacy: beta = -alpha
        beta = -alpha * xp.ones_like(mdist)
    else:  # beta = -alpha * mdist / (dist + 1e-4)
        beta = -alpha * mdist / (dist + CAFFE_BACKWARD_EPS)
    coef = xp.where(sim, alpha * xp.ones_like(mdist),
                    xp.where(mdist > 0, beta, xp.zeros_like(mdist)))
    ga = coef[:, None] * diff
    # bottom 1 (sign -1) negates alpha, hence every coefficient
    return xp.astype(ga, dtype), xp.astype(-ga, dtype), None


@preset(
    PresetInfo(
        implementation="Caffe ContrastiveLoss layer (BVLC)",
        distance="L2 sqrt(Σ(a − b)²) per pair",
        squared="similar d²; dissimilar [m − d]_+² (legacy_version: [m − d²]_+, not squared)",
        margin="1.0",
        reduction="sum / (2N)",
        labels="integer / bool, non-zero = similar (opposite of Hadsell)",
        edge_cases="hinge exactly 0 → gradient 0; d = 0 dissimilar → gradient 0; empty batch 0",
        epsilon="backward divides by d + 1e-4 (dissimilar pairs, non-legacy)",
        source=(
            "BVLC/caffe (copy in ydwen/caffe-face @ 48ff38e) : "
            "src/caffe/layers/contrastive_loss_layer.cpp (ContrastiveLossLayer)"
        ),
    )
)
@defvjp(_contrastive_fwd, _contrastive_bwd)
def contrastive_loss(
    a: Any, b: Any, similar: Any, *, margin: float = 1.0, legacy_version: bool = False,
    check: bool = True,
) -> Any:
    r"""Caffe's ``ContrastiveLoss`` layer (``contrastive_loss_param``: margin, legacy_version).

    .. math::

        L = \frac{1}{2N}\sum_{i=1}^{N}\begin{cases}
            d_i^2 & \text{similar}_i \ne 0\\
            [m - d_i]_+^2 & \text{otherwise}\end{cases}
        \qquad d_i = \lVert a_i - b_i\rVert_2,

    and with ``legacy_version=True`` the dissimilar term is
    :math:`[m - d_i^2]_+` (the first Caffe implementation; not Hadsell's).

    Backward exactly as ``Backward_cpu``, with :math:`\alpha = g/N` (g = the
    ``top_diff``): similar pairs :math:`\alpha\,(a_i - b_i)`; dissimilar pairs
    with :math:`m - d_i > 0` (resp. :math:`m - d_i^2 > 0`)
    :math:`-\alpha\,\frac{m - d_i}{d_i + 10^{-4}}\,(a_i - b_i)` (resp.
    :math:`-\alpha\,(a_i - b_i)`), else 0; the gradient for ``b`` is the
    negation.

    Differences from the reference:
        * Label convention: ``similar`` is an integer (or boolean) array and
          any non-zero value means similar (Caffe casts its float label to
          int); the reference takes a boolean ``same``.
        * The value is ½ of the reference ``refloss.contrastive_loss(a, b,
          same, margin=margin, reduction="mean")``; legacy_version has no
          reference counterpart.
        * The gradient of a dissimilar pair inside the margin (non-legacy) is
          the exact one times :math:`d_i/(d_i + 10^{-4})`: biased towards 0,
          most for small distances, and 0 (finite) at :math:`d_i = 0`. The
          similar-pair and legacy gradients are exact.
        * ``margin`` must be finite and >= 0 (Caffe accepts any float); an
          empty batch gives 0 (the layer would compute 0/0).

    Args:
        a: ``[N, D]`` floating embeddings (``bottom[0]``).
        b: ``[N, D]`` floating embeddings of the same dtype (``bottom[1]``).
        similar: ``[N]`` integer or boolean labels (``bottom[2]``), non-zero = similar.
        margin: the margin m (default 1.0, as in ``caffe.proto``).
        legacy_version: use :math:`[m - d^2]_+` for dissimilar pairs.
        check: check the values (finite inputs) in one read (default
            True); ``check=False`` reads nothing (docs/errors.md, "Checks and syncs").

    Returns:
        A 0-d array in the namespace, device and dtype of ``a``.

    Source:
        BVLC/caffe ``src/caffe/layers/contrastive_loss_layer.cpp``
        (``ContrastiveLossLayer::Forward_cpu`` / ``Backward_cpu``), as copied in
        ydwen/caffe-face @ 48ff38e; defaults from ``src/caffe/proto/caffe.proto``.
    """
    return _contrastive_fwd(
        a, b, similar, margin=margin, legacy_version=legacy_version, check=check
    )[0]
