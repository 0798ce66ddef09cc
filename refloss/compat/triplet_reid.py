r"""Hermans, Beyer, Leibe's official code: VisualComputingInstitute/triplet-reid
``loss.py`` (``cdist`` and ``batch_hard``), as ``train.py`` uses it.

``train.py`` computes ``dists = cdist(emb, emb, metric=args.metric)`` and
``losses = batch_hard(dists, pids, args.margin)`` and minimises
``tf.reduce_mean(losses)``, with the defaults ``--margin soft`` and
``--metric euclidean``. :func:`batch_hard` takes the embeddings and does the
three steps; ``reduction="none"`` returns ``batch_hard``'s per-anchor vector.

``cdist`` forms all pairwise differences (exact, no GEMM expansion) and for
"euclidean" puts its epsilon **inside** the square root,
:math:`\sqrt{\sum_k (a_k - b_k)^2 + 10^{-12}}`: no distance is ever 0 (the
diagonal is 1e-6) and the gradient is finite everywhere.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

from array_api_compat import device as _device

from .. import _checks
from ..mining import label_masks
from ..reductions import as_array
from ..vjp import defvjp
from . import tfa
from ._meta import PresetInfo, preset

__all__ = ["batch_hard"]

METRICS = ("euclidean", "sqeuclidean", "cityblock")
REDUCTIONS = ("mean", "none")
# cdist 'euclidean': the fudge factor added under the square root
CDIST_EPSILON = 1e-12
# elements of one row block of the differences (rows × B × D)
_CHUNK_ELEMENTS = 1 << 20
SOURCE = "VisualComputingInstitute/triplet-reid @ a538696 : loss.py"


# --------------------------------------------------------------------------
# validation


def _check_margin(margin):
    """A number, 'soft' or 'none' (any case), as ``apply_margin`` reads it."""
    if isinstance(margin, Real) and not isinstance(margin, bool):
        return _checks.check_margin("margin", margin)
    if margin == "soft":
        return "soft"
    if isinstance(margin, str) and margin.lower() == "none":
        return "none"
    raise ValueError(
        f"margin: expected a number >= 0, 'soft' or 'none', got {margin!r}"
    )


def _check(embeddings, pids, margin, metric, reduction, check):
    xp = _checks.namespace(embeddings=embeddings, pids=pids)
    tfa.check_embeddings(xp, "embeddings", embeddings)
    pids = _checks.check_labels(xp, "pids", pids, embeddings.shape[0], "embeddings")
    margin = _check_margin(margin)
    _checks.check_choice("metric", metric, METRICS)
    _checks.check_choice("reduction", reduction, REDUCTIONS)
    fetch = _checks.Fetch(xp, check=_checks.check_flag("check", check))
    fetch.finite("embeddings", embeddings)
    fetch.done()
    return xp, margin, pids


# --------------------------------------------------------------------------
# cdist


def _chunks(n, step):
    step = max(1, step)
    return [(s, min(s + step, n)) for s in range(0, n, step)]


def _row_blocks(x):
    b, dim = x.shape
    return _chunks(b, _CHUNK_ELEMENTS // max(b * dim, 1))


def _cdist_forward(xp, x, metric):
    """``cdist(x, x, metric)`` from the differences themselves, in row blocks:
    exact where the original is (equal distances stay equal, so ties split
    the gradient as in TF), O(block·B·D) memory."""
    parts = []
    for r0, r1 in _row_blocks(x):
        diffs = x[r0:r1, None, :] - x[None, :, :]
        if metric == "cityblock":
            parts.append(xp.sum(xp.abs(diffs), axis=-1))
        else:
            parts.append(xp.sum(diffs * diffs, axis=-1))
    d = xp.concat(parts, axis=0) if len(parts) > 1 else parts[0]
    if metric == "euclidean":
        d = xp.sqrt(d + CDIST_EPSILON)
    return d, (metric, x)


def _cdist_backward(xp, state, d, g):
    """∂/∂x_i = Σ_j (K_ij + K_ji) ∂d_ij/∂(x_i - x_j), through the differences as
    the original's graph goes: near duplicates (d = 1e-6, K ~ 1e6) multiply an
    exactly-zero difference instead of cancelling in a GEMM expansion."""
    metric, x = state
    if metric == "euclidean":
        g = g / d  # 2 (x_i - x_j) · 0.5 / d; d >= 1e-6, no zero to guard
    elif metric == "sqeuclidean":
        g = 2.0 * g
    k = g + g.T
    parts = []
    for r0, r1 in _row_blocks(x):
        diffs = x[r0:r1, None, :] - x[None, :, :]
        if metric == "cityblock":  # sign(0) = 0, as TF's abs gradient
            diffs = xp.sign(diffs)
        parts.append(xp.sum(k[r0:r1, :, None] * diffs, axis=1))
    return xp.concat(parts, axis=0) if len(parts) > 1 else parts[0]


# --------------------------------------------------------------------------
# batch_hard


def _fwd(embeddings, pids, margin="soft", *, metric="euclidean", reduction="mean", check=True):
    xp, margin, pids = _check(embeddings, pids, margin, metric, reduction, check)
    dtype = embeddings.dtype
    b = embeddings.shape[0]
    if b == 0:
        shape = () if reduction == "mean" else (0,)
        return xp.zeros(shape, dtype=dtype, device=_device(embeddings)), (
            xp, dtype, embeddings, None)
    x = xp.astype(embeddings, _checks.compute_dtype(xp, dtype))
    d, cres = _cdist_forward(xp, x, metric)
    pos, neg, _ = label_masks(xp, pids, d)
    posf = xp.astype(pos, d.dtype)
    positive_d = d * posf
    positive = xp.max(positive_d, axis=1)  # 0 without a positive
    negative = xp.min(xp.where(neg, d, math.inf), axis=1)  # reduce_min of nothing: +inf
    diff = positive - negative
    if margin == "soft":  # tf.nn.softplus, stable: 0 at -inf
        up = xp.where(diff > 0, diff, 0.0)
        down = xp.where(diff > 0, 0.0, diff)
        terms = up + xp.log1p(xp.exp(down - up))
        e = xp.exp(-xp.abs(diff))
        slope = xp.where(diff >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    elif margin == "none":
        terms = diff
        slope = xp.ones_like(diff)
    else:
        z = diff + margin
        terms = xp.where(z > 0, z, 0.0)
        slope = xp.astype(z >= 0, d.dtype)  # tf.maximum passes at 0
    value = terms if reduction == "none" else xp.sum(terms) / b
    state = (cres, d, posf, neg, positive_d, positive, negative, slope, reduction == "none")
    return as_array(xp, xp.astype(value, dtype)), (xp, dtype, embeddings, state)


def _bwd(residuals, g):
    xp, dtype, embeddings, state = residuals
    if state is None:
        return tfa.empty_grad(xp, embeddings), None, None
    cres, d, posf, neg, positive_d, positive, negative, slope, per_anchor = state
    b = d.shape[0]
    u = (g if per_anchor else g / b) * slope
    # reduce_max over d·mask splits among every tied entry (masked zeros too)
    hit = xp.astype(positive_d == positive[:, None], d.dtype)
    gd = u[:, None] * (hit / xp.sum(hit, axis=1)[:, None]) * posf
    # reduce_min over boolean_mask splits among the tied negatives only
    near = xp.astype(neg & (d == negative[:, None]), d.dtype)
    count = xp.sum(near, axis=1)
    gd = gd - u[:, None] * near / xp.where(count > 0, count, 1.0)[:, None]
    return xp.astype(_cdist_backward(xp, cres, d, gd), dtype), None, None


@preset(
    PresetInfo(
        implementation="Hermans et al. official batch_hard (triplet-reid, TensorFlow)",
        distance="cdist 'euclidean' sqrt(Σ(a − b)² + 1e-12) on exact differences "
                 "('sqeuclidean', 'cityblock')",
        squared="no",
        margin="'soft' (softplus, margin-free); a number → [x + m]_+; 'none' → x",
        reduction="mean over all B anchors (train.py); reduction='none': batch_hard's vector",
        labels="pids: integer [B]",
        edge_cases=(
            "anchor without positive: hardest positive 0, counted; without negative: "
            "min over nothing = +inf → soft / hinge term 0, 'none' −inf; ties split; "
            "empty batch 0"
        ),
        epsilon="1e-12 inside the sqrt: d ≥ 1e-6, never 0, gradient finite",
        source=f"{SOURCE} (cdist, batch_hard, apply_margin); train.py defaults",
    )
)
@defvjp(_fwd, _bwd)
def batch_hard(
    embeddings: Any,
    pids: Any,
    margin: Any = "soft",
    *,
    metric: str = "euclidean",
    reduction: str = "mean",
    check: bool = True,
) -> Any:
    r"""Hermans et al.'s ``batch_hard(cdist(embeddings, embeddings, metric), pids, margin)``.

    With :math:`D` = ``cdist`` (default "euclidean":
    :math:`D_{ij} = \sqrt{\lVert x_i - x_j\rVert^2 + 10^{-12}}`),

    .. math::

        p_a = \max_j D_{aj}\,[y_j = y_a,\ j \ne a],\qquad
        n_a = \min_{j:\ y_j \ne y_a} D_{aj},\qquad
        l_a = \mathrm{softplus}(p_a - n_a)

    (``margin="soft"``, the default), :math:`[p_a - n_a + m]_+` for a number
    m, or :math:`p_a - n_a` for ``"none"``; :math:`L = \frac1B\sum_a l_a`
    (``train.py``'s ``reduce_mean``) or the ``[B]`` vector for
    ``reduction="none"``. An anchor without positive has :math:`p_a = 0`;
    one without negative has :math:`n_a = +\infty` (soft and hinge terms 0,
    "none" :math:`-\infty`).

    Gradient (TF's autodiff, written out): :math:`u_a` = upstream weight ×
    :math:`\sigma(p_a - n_a)` (soft), :math:`[p_a - n_a + m \ge 0]` (hinge)
    or 1; :math:`+u_a` to the hardest positive and :math:`-u_a` to the
    hardest negative, split evenly among ties; then ``cdist``'s gradient
    (euclidean :math:`(x_i - x_j)/D_{ij}`, finite everywhere; cityblock
    :math:`\mathrm{sign}(x_i - x_j)`).

    Differences from the reference (:func:`refloss.batch_hard_triplet_loss`
    with ``soft=True``):
        * The distance never vanishes: :math:`D \ge 10^{-6}`, and for near
          duplicates :math:`\sqrt{d^2 + 10^{-12}}` differs from d (the
          reference's d is exact and its gradient at 0 is 0).
        * Every anchor is counted in the mean: one without a positive
          contributes softplus(:math:`-n_a`) and pushes its nearest negative
          away; one without a negative contributes 0 (soft) — the reference
          drops both and averages over the rest.
        * Ties split the gradient; a number margin is a hinge that passes
          gradient at exactly 0.
        * ``pids`` are integers (the original compares any dtype, strings
          included); a number margin must be finite and >= 0; the
          differences are formed in row blocks (the original forms all B×B×D
          at once); an empty batch gives 0 (TF: NaN).

    Args:
        embeddings: ``[B, D]`` floating embeddings.
        pids: ``[B]`` integer identities.
        margin: ``"soft"`` (default), a number >= 0, or ``"none"``.
        metric: ``"euclidean"`` (default), ``"sqeuclidean"`` or ``"cityblock"``.
        reduction: ``"mean"`` (default, ``train.py``) or ``"none"`` (``batch_hard``'s
            per-anchor losses).
        check: check the values (finite inputs) in one read (default
            True); ``check=False`` reads nothing (docs/errors.md, "Checks and syncs").

    Returns:
        A 0-d array (``[B]`` for ``"none"``) in the namespace, device and dtype
        of ``embeddings``.

    Source:
        VisualComputingInstitute/triplet-reid @ a538696, ``loss.py`` (``cdist``,
        ``batch_hard``, ``apply_margin``) and ``train.py`` (defaults, ``reduce_mean``).
        Hermans, Beyer, Leibe. In Defense of the Triplet Loss for Person
        Re-Identification. arXiv:1703.07737, 2017.
    """
    return _fwd(embeddings, pids, margin, metric=metric, reduction=reduction, check=check)[0]
