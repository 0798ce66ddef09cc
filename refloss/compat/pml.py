r"""pytorch-metric-learning (PML) 2.x: ``TripletMarginLoss`` and ``ContrastiveLoss``.

Each preset reproduces one PML pipeline called with a labeled batch,
``loss_fn(embeddings, labels[, miner(embeddings, labels)])``, with PML's
defaults:

======================================  =================================================
preset                                  PML pipeline
======================================  =================================================
:func:`triplet_margin_loss`             ``TripletMarginLoss()`` (every triplet)
:func:`batch_hard_triplet_margin_loss`  ``TripletMarginLoss()`` + ``BatchHardMiner()``
:func:`triplet_margin_miner_loss`       ``TripletMarginLoss()`` + ``TripletMarginMiner()``
:func:`semihard_triplet_margin_loss`    the same, ``type_of_triplets="semihard"``
:func:`contrastive_loss`                ``ContrastiveLoss()``
======================================  =================================================

The shared distance is PML's default ``LpDistance(normalize_embeddings=True,
p=2, power=1)``: ``torch.nn.functional.normalize`` (:math:`x/\max(\lVert x\rVert,
10^{-12})`, whose gradient is :math:`g/10^{-12}` for a zero row, reproduced
here), then ``torch.cdist``, raised to ``power``. For at most 25 rows
``torch.cdist`` forms each distance from the difference of the two rows;
the presets use the core's matrix (:func:`refloss.pairwise_distances`: one
GEMM, with every entry that cancellation would spoil recomputed from the
differences), which agrees with it to ~1e-12: identical rows are exactly 0
apart, with gradient 0. The rows and columns of duplicated rows are then
copied from their first copy, so that distances to copies tie bitwise, as
they do in torch's difference kernel, and ties between duplicates are
decided as in PML. Above 25 rows ``torch.cdist`` switches to the GEMM
formula :math:`\sqrt{\max(\lVert x\rVert^2 + \lVert y\rVert^2 - 2x\cdot y, 0)}`
without the recomputation, whose rounding gives duplicates tiny non-zero
distances (and huge gradients); the presets stay exact there and differ
from PML by that rounding.

Memory is O(B² + B·D) everywhere: no list of triplets is formed (PML builds a B×B×B mask and every
triplet's indices). The hinge without ``swap`` — PML's default — runs in
O(B² log B): each anchor's negative distances are sorted once, and each
positive pair's window of contributing negatives is located by a row-wise
binary search (:func:`refloss.mining.row_searchsorted`); the window sum of
:math:`d_{ap} + m - d_{an}` is a difference of prefix sums. ``smooth_loss``
(softplus has no prefix-sum shortcut) and ``swap`` (the min couples p and n)
are evaluated triplet by triplet in anchor blocks of at most max(B², 2²⁰)
elements: O(B³) time, O(B²) memory.

Conventions shared with PML: the hinge is ``relu`` (gradient 0 at exactly
0), ``AvgNonZeroReducer`` divides by the number of terms strictly above 0
(0 with zero gradient when there is none), ``torch.max/min`` ties go to the
lowest index, the elementwise ``torch.min`` of ``swap`` splits the gradient
½/½ on a tie, and ``softplus`` is torch's (the identity above 20).
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import device as _device

from .. import _checks
from ..distances import paired_backward, paired_forward, pairwise_backward, pairwise_forward
from ..mining import BatchHard, check_bool, label_masks, row_searchsorted
from ..reductions import as_array, reduce_backward, reduce_forward
from ..vjp import defvjp
from ._meta import PresetInfo, preset

__all__ = [
    "batch_hard_triplet_margin_loss",
    "contrastive_loss",
    "semihard_triplet_margin_loss",
    "triplet_margin_loss",
    "triplet_margin_miner_loss",
]

# torch.nn.functional.normalize's default eps: x / max(‖x‖, eps)
NORMALIZE_EPS = 1e-12
# torch.nn.functional.softplus's default threshold: softplus(z) = z for z > 20
SOFTPLUS_THRESHOLD = 20.0
# PML reducers: AvgNonZeroReducer (the default of both losses), MeanReducer, SumReducer
REDUCERS = ("avg_non_zero", "mean", "sum")
TYPES_OF_TRIPLETS = ("all", "hard", "semihard", "easy")
# Elements of one working block (anchor blocks of the triplet-by-triplet
# evaluation, row blocks of the difference-form backward); a block never
# exceeds max(this, one row's worth).
_BLOCK_ELEMENTS = 1 << 20

_INF = float("inf")


# --------------------------------------------------------------------------
# validation


def _check_batch(embeddings, labels):
    xp = _checks.namespace(embeddings=embeddings, labels=labels)
    _checks.check_float(xp, "embeddings", embeddings)
    _checks.check_rank("embeddings", embeddings, 2, "a 2-D array (batch, dim)")
    labels = _checks.check_labels(xp, "labels", labels, embeddings.shape[0], "embeddings")
    return xp, labels


def _check_power(power):
    power = _checks.check_real("power", power, "a finite number >= 1")
    if not math.isfinite(power) or power < 1.0:
        raise ValueError(f"power: expected a finite number >= 1, got {power!r}")
    return power


def _check_distance(normalize_embeddings, power):
    check_bool("normalize_embeddings", normalize_embeddings)
    return _check_power(power)


def _check_triplet_options(margin, swap, smooth_loss, reducer):
    margin = _checks.check_margin("margin", margin)
    check_bool("swap", swap)
    check_bool("smooth_loss", smooth_loss)
    _checks.check_choice("reducer", reducer, REDUCERS)
    return margin


# --------------------------------------------------------------------------
# LpDistance: F.normalize, then the exact distance matrix, then ** power


def _normalize_forward(xp, x):
    """``x / max(‖x‖, 1e-12)`` row-wise, as ``torch.nn.functional.normalize``."""
    if x.shape[1]:
        peak = xp.max(xp.abs(x), axis=1)
    else:
        peak = xp.zeros(x.shape[:1], dtype=x.dtype, device=_device(x))
    # the norm is taken on rows scaled by their largest entry, so that it
    # neither underflows nor overflows; it is the norm torch computes up to
    # rounding (torch's own overflows to inf beyond ~1e154 and gives a 0 row)
    live = peak > 0
    peak = xp.where(live, peak, 1.0)
    scaled = x / peak[:, None]
    norm = xp.where(live, peak * xp.sqrt(xp.sum(scaled * scaled, axis=1)), 0.0)
    # clamp_min's gradient passes where norm >= eps (inclusive)
    above = norm >= NORMALIZE_EPS
    denom = xp.where(above, norm, NORMALIZE_EPS)
    xhat = x / denom[:, None]
    return xhat, (xhat, denom, above)


def _normalize_backward(xp, residuals, g):
    # above the clamp: the projection (g - x̂ (x̂·g)) / ‖x‖; below it the
    # denominator is the constant eps, so the gradient is g / eps (1e12·g)
    xhat, denom, above = residuals
    radial = xp.sum(xhat * g, axis=1)
    g = xp.where(above[:, None], g - xhat * radial[:, None], g)
    return g / denom[:, None]


def _canonical(xp, d):
    """Copies of one row made bitwise identical: the rows and columns of every
    duplicate are taken from its lowest-index copy.

    The core's distances are exactly 0 between identical rows (GEMM entries
    that cancel are recomputed from the differences), so ``first[j]``, the
    lowest i with ``d[i, j] == 0``, is row j's first copy (the diagonal bounds
    it by j). Distances to copies must tie exactly, as they do in
    torch.cdist's difference kernel, so that torch.max/min's lowest-index
    rule, the swap's ½/½ and the miners' Δ = 0 decide as in PML; a GEMM's
    rounding does not promise that.
    """
    b = d.shape[0]
    rows = xp.arange(b, device=_device(d))
    first = xp.min(xp.where(d == 0.0, rows[:, None], b), axis=0)
    return xp.take(xp.take(d, first, axis=0), first, axis=1)


def _embed_forward(xp, x, normalize, power, fetch):
    """``(distances, residuals)``; ``fetch`` (the call's one read) also
    carries whether some row is below the normalisation's eps, which decides
    the backward's work (the backward reads nothing)."""
    nres = None
    if normalize:
        x, nres = _normalize_forward(xp, x)
        fetch.want("pml rows below eps", xp.any(~nres[2]), 1)
    d, dres = pairwise_forward(xp, x, None, "euclidean", fetch)
    d = _canonical(xp, d)
    # BaseDistance.forward: mat = mat ** power when power != 1
    mat = d if power == 1.0 else d**power
    below = fetch.value("pml rows below eps") if normalize else 0
    return mat, (x, dres, d, nres, power, below)


def _embed_backward(xp, residuals, g):
    # a canonical entry is the distance between its own two rows (copies are
    # one point), so G reaches those rows, as torch.cdist sends it
    x, dres, d, nres, power, any_below = residuals
    if power != 1.0:
        g = g * (power * d ** (power - 1.0))
    gx, _ = pairwise_backward(xp, dres, g)
    if nres is not None:
        below = ~nres[2]
        if any_below is None or any_below:  # None: traced, assume some
            # rows below the eps get gradient g / 1e-12, which would lift the
            # GEMM form's rounding (~1e-16 of the pair terms) to ~1e-4; their
            # pair terms are summed from the differences instead, where
            # cancellations are exact as in torch.cdist's backward
            gx = xp.where(below[:, None], _difference_backward(xp, x, g), gx)
        gx = _normalize_backward(xp, nres, gx)
    return gx


def _row_blocks(n_rows, per_row):
    step = max(1, _BLOCK_ELEMENTS // max(per_row, 1))
    return [(s, min(s + step, n_rows)) for s in range(0, n_rows, step)]


def _difference_backward(xp, x, g):
    """∂L/∂x from G = ∂L/∂D with every pair term formed from its difference:
    rows of x against all rows, block by block (the core's paired stage; no
    B²·D array is kept), each block's paired VJP summed over the other index."""
    b, dim = x.shape
    rows = []
    cols = xp.zeros_like(x)
    for r0, r1 in _row_blocks(b, b * dim):
        r = r1 - r0
        left = xp.reshape(xp.broadcast_to(x[r0:r1, None, :], (r, b, dim)), (r * b, dim))
        right = xp.reshape(xp.broadcast_to(x[None, :, :], (r, b, dim)), (r * b, dim))
        _, res = paired_forward(xp, left, right, "euclidean")
        gl, gr = paired_backward(xp, res, xp.reshape(g[r0:r1, :], (-1,)))
        rows.append(xp.sum(xp.reshape(gl, (r, b, dim)), axis=1))
        cols = cols + xp.sum(xp.reshape(gr, (r, b, dim)), axis=0)
    return (xp.concat(rows, axis=0) if len(rows) > 1 else rows[0]) + cols


# --------------------------------------------------------------------------
# per-term pieces: relu, torch's softplus, torch.min's tie rule


def _relu(xp, z):
    return xp.where(z > 0, z, 0.0)


def _softplus(xp, z):
    # F.softplus(z, beta=1, threshold=20): z itself above the threshold,
    # log1p(exp(z)) otherwise (exp never sees the large arguments)
    big = z > SOFTPLUS_THRESHOLD
    return xp.where(big, z, xp.log1p(xp.exp(xp.where(big, 0.0, z))))


def _softplus_grad(xp, z):
    # softplus_backward: 1 above the threshold, e / (e + 1) with e = exp(z) below
    big = z > SOFTPLUS_THRESHOLD
    e = xp.exp(xp.where(big, 0.0, z))
    return xp.where(big, 1.0, e / (e + 1.0))


def _term(xp, z, smooth):
    return _softplus(xp, z) if smooth else _relu(xp, z)


def _term_grad(xp, z, smooth):
    return _softplus_grad(xp, z) if smooth else xp.astype(z > 0, z.dtype)


def _an_share(xp, d_an, d_pn):
    """The share of ∂min(d_an, d_pn) that goes to d_an: 1, 0, or ½ on a tie
    (the derivative torch gives its elementwise ``min``/``minimum``)."""
    dtype = d_an.dtype
    return xp.astype(d_an < d_pn, dtype) + 0.5 * xp.astype(d_an == d_pn, dtype)


def _reduce(xp, terms, reducer, n_nonzero, n_terms):
    """PML's reducer on a term vector whose zeros are not terms; returns
    ``(value, residuals)``. ``n_nonzero`` counts the terms > 0 (AvgNonZero),
    ``n_terms`` every term (Mean)."""
    if reducer == "sum":
        return reduce_forward(xp, terms, "sum")
    count = n_nonzero if reducer == "avg_non_zero" else n_terms
    return reduce_forward(xp, terms, "mean", count)


def _scale(xp, rres, g):
    """The 0-d factor by which g reaches each counted term."""
    return reduce_backward(xp, rres, g, g)


# --------------------------------------------------------------------------
# TripletMarginMiner windows (hinge, no swap): O(B² log B)


def _after(xp, v):
    return xp.nextafter(v, xp.full_like(v, _INF))


def _before(xp, v):
    return xp.nextafter(v, xp.full_like(v, -_INF))


def _miner_bounds(xp, d, kind, miner_margin):
    """Inclusive bounds ``(low, high)`` on d_an (None: unbounded) of the
    triplets TripletMarginMiner keeps, with Δ = d_an − d_ap.

    all: Δ ≤ M; hard: Δ ≤ M and Δ ≤ 0; semihard: Δ ≤ M and Δ > 0; easy: Δ > M.
    A strict bound becomes inclusive at the neighbouring float (``nextafter``),
    which is exact.
    """
    if kind == "none":
        return None, None
    reach = d + miner_margin
    if kind == "all":
        return None, reach
    if kind == "hard":
        return None, xp.minimum(reach, d)
    if kind == "semihard":
        return _after(xp, d), reach
    return _after(xp, reach), None  # easy


def _window(xp, s, n_neg, low, high):
    """``(lo, hi)``: the sorted negatives ``s[lo:hi]`` lie in [low, high]."""
    b = s.shape[0]
    idx = _checks.default_index_dtype(xp, _device(s))
    if low is None:
        lo = xp.zeros((b, b), dtype=idx, device=_device(s))
    else:
        lo = row_searchsorted(xp, s, low, side="left")
    if high is None:
        hi = xp.broadcast_to(xp.astype(n_neg, idx)[:, None], (b, b))
    else:
        hi = xp.minimum(row_searchsorted(xp, s, high, side="right"),
                        xp.astype(n_neg, idx)[:, None])
    return lo, hi


def _window_count(xp, pos, lo, hi):
    return xp.where(pos & (hi > lo), hi - lo, 0)


def _sorted_terms_forward(xp, d, pos, neg, margin, kind, miner_margin):
    r"""Per positive pair, ``S_ap = Σ_n [d_ap + m − d_an]_+`` over the mined negatives.

    The contributing negatives of (a, p) are those of the miner's window
    with :math:`d_{an} < t = d_{ap} + m`: one contiguous run ``s[lo:hi]`` of
    the anchor's sorted negatives. With prefix sums P of :math:`s - s_0`,
    :math:`S = c\,(t - s_0) - (P[hi] - P[lo])`, c = hi − lo.
    """
    b = d.shape[0]
    cols = xp.arange(b, device=_device(d))
    n_neg = xp.count_nonzero(neg, axis=1)
    neg_d = xp.where(neg, d, _INF)
    s = xp.take_along_axis(neg_d, xp.argsort(neg_d, axis=1, stable=True), axis=1)
    del neg_d
    first = xp.where(n_neg > 0, s[:, 0], 0.0)
    inside = cols[None, :] < n_neg[:, None]
    prefix = xp.cumulative_sum(xp.where(inside, s - first[:, None], 0.0), axis=1,
                               include_initial=True)
    del inside
    t = d + margin
    low, high = _miner_bounds(xp, d, kind, miner_margin)
    mined = None
    if kind != "none":  # the Mean reducer counts every mined triplet
        mined = xp.sum(_window_count(xp, pos, *_window(xp, s, n_neg, low, high)))
    # a term is positive where d_an < t
    cut = _before(xp, t)
    high = cut if high is None else xp.minimum(high, cut)
    lo, hi = _window(xp, s, n_neg, low, high)
    count = _window_count(xp, pos, lo, hi)
    width = xp.astype(count, d.dtype)
    total = width * (t - first[:, None]) - (
        xp.take_along_axis(prefix, hi, axis=1) - xp.take_along_axis(prefix, lo, axis=1)
    )
    # each term is > 0; the where also guards the sign against rounding
    terms = xp.where((count > 0) & (total > 0), total, 0.0)
    if mined is None:
        mined = xp.sum(xp.where(pos, n_neg[:, None], 0))
    return terms, xp.sum(count), mined, (count, low, high)


def _sorted_terms_backward(xp, d, neg, state, scale):
    r"""``G_ap = c_ap`` and ``G_an = −#{p : n in the window of (a, p)}``, times scale.

    The window of (a, p) is [low_ap, high_ap]; for a pair with a non-empty
    window, ``[low ≤ d_an] − [high < d_an]`` is its indicator. Summed over p
    by two row-wise searches in the anchor's sorted bounds (pairs with an
    empty window pushed to +inf, where no finite d_an reaches them).
    """
    count, low, high = state
    live = count > 0
    if low is None:
        at_least_low = xp.count_nonzero(live, axis=1)[:, None]
    else:
        lows = xp.sort(xp.where(live, low, _INF), axis=1)
        at_least_low = row_searchsorted(xp, lows, d, side="right")
    highs = xp.sort(xp.where(live, high, _INF), axis=1)
    past_high = row_searchsorted(xp, highs, d, side="left")
    g_an = xp.where(neg, at_least_low - past_high, 0)
    return scale * (xp.astype(count, d.dtype) - xp.astype(g_an, d.dtype))


# --------------------------------------------------------------------------
# triplet by triplet, in anchor blocks (smooth_loss, swap): O(B³) time, O(B²) memory


def _triplet_block(xp, d, pos, neg, a0, a1, opts):
    """``(z, valid, share)`` for anchors a0:a1 as ``[A, B(p), B(n)]`` arrays."""
    margin, kind, miner_margin, swap = opts
    d_ap = d[a0:a1, :, None]
    d_an = d[a0:a1, None, :]
    valid = pos[a0:a1, :, None] & neg[a0:a1, None, :]
    if kind != "none":
        # TripletMarginMiner.mine: triplet_margin = an_dist - ap_dist
        delta = d_an - d_ap
        if kind == "easy":
            valid = valid & (delta > miner_margin)
        else:
            valid = valid & (delta <= miner_margin)
            if kind == "hard":
                valid = valid & (delta <= 0)
            elif kind == "semihard":
                valid = valid & (delta > 0)
    share = None
    d_neg = d_an
    if swap:
        d_pn = d[None, :, :]
        share = _an_share(xp, d_an, d_pn)
        d_neg = xp.where(d_pn < d_an, d_pn, d_an)
    # TripletMarginLoss.compute_loss: (ap - an) + margin
    z = (d_ap - d_neg) + margin
    return z, valid, share


def _triplet_blocks(b):
    per = max(1, _BLOCK_ELEMENTS // max(b * b, 1))
    return [(s, min(s + per, b)) for s in range(0, b, per)]


def _blockwise_forward(xp, d, pos, neg, opts, smooth):
    total = xp.zeros((), dtype=d.dtype, device=_device(d))
    n_nonzero = 0
    n_valid = 0
    for a0, a1 in _triplet_blocks(d.shape[0]):
        z, valid, _ = _triplet_block(xp, d, pos, neg, a0, a1, opts)
        terms = xp.where(valid, _term(xp, z, smooth), 0.0)
        total = total + xp.sum(terms)
        n_nonzero = n_nonzero + xp.count_nonzero(terms > 0)
        n_valid = n_valid + xp.count_nonzero(valid)
    return xp.reshape(total, (1,)), n_nonzero, n_valid


def _blockwise_backward(xp, d, pos, neg, opts, smooth, scale):
    b = d.shape[0]
    rows = []
    g_pn = xp.zeros_like(d)
    for a0, a1 in _triplet_blocks(b):
        z, valid, share = _triplet_block(xp, d, pos, neg, a0, a1, opts)
        w = xp.where(valid, _term_grad(xp, z, smooth), 0.0)
        g_ap = xp.sum(w, axis=2)
        if share is None:
            g_an = xp.sum(w, axis=1)
        else:
            g_an = xp.sum(w * share, axis=1)
            g_pn = g_pn - xp.sum(w * (1.0 - share), axis=0)
        rows.append(g_ap - g_an)
    g = xp.concat(rows, axis=0) if len(rows) > 1 else rows[0]
    return scale * (g + g_pn)


# --------------------------------------------------------------------------
# TripletMarginLoss, every triplet or TripletMarginMiner


def _mined_fwd(embeddings, labels, kind, miner_margin, margin, swap, smooth_loss,
               normalize_embeddings, power, reducer, check):
    check = _checks.check_flag("check", check)
    xp, labels = _check_batch(embeddings, labels)
    margin = _check_triplet_options(margin, swap, smooth_loss, reducer)
    power = _check_distance(normalize_embeddings, power)
    fetch = _checks.Fetch(xp, check=check)
    fetch.finite("embeddings", embeddings)
    dtype = embeddings.dtype
    x = xp.astype(embeddings, _checks.compute_dtype(xp, dtype))
    if x.shape[0] == 0:
        fetch.done()
        return _empty(xp, x, dtype)
    d, eres = _embed_forward(xp, x, normalize_embeddings, power, fetch)
    fetch.done()
    pos, neg, _ = label_masks(xp, labels, d)
    opts = (margin, kind, miner_margin, swap)
    if smooth_loss or swap:
        terms, n_nonzero, n_valid = _blockwise_forward(xp, d, pos, neg, opts, smooth_loss)
        state = None
    else:
        terms, n_nonzero, n_valid, state = _sorted_terms_forward(
            xp, d, pos, neg, margin, kind, miner_margin
        )
        terms = xp.reshape(terms, (-1,))
    value, rres = _reduce(xp, terms, reducer, n_nonzero, n_valid)
    res = (xp, dtype, (eres, d, pos, neg, opts, smooth_loss, state, rres))
    return as_array(xp, xp.astype(value, dtype)), res


def _mined_bwd(residuals, g):
    xp, dtype, res = residuals
    if not isinstance(res, tuple):  # empty batch: the zero gradient
        return res, None
    eres, d, pos, neg, opts, smooth, state, rres = res
    scale = _scale(xp, rres, g)
    if state is None:
        gd = _blockwise_backward(xp, d, pos, neg, opts, smooth, scale)
    else:
        gd = _sorted_terms_backward(xp, d, neg, state, scale)
    return xp.astype(_embed_backward(xp, eres, gd), dtype), None


def _empty(xp, x, dtype):
    value = xp.zeros((), dtype=x.dtype, device=_device(x))
    return as_array(xp, xp.astype(value, dtype)), (xp, dtype, xp.astype(xp.zeros_like(x), dtype))


def _triplet_fwd(embeddings, labels, *, margin=0.05, swap=False, smooth_loss=False,
                 normalize_embeddings=True, power=1.0, reducer="avg_non_zero", check=True):
    return _mined_fwd(embeddings, labels, "none", 0.0, margin, swap, smooth_loss,
                      normalize_embeddings, power, reducer, check)


_TRIPLET_DISTANCE = (
    "LpDistance(p=2): ‖x̂_i − x̂_j‖ on x̂ = F.normalize(x) = x / max(‖x‖, 1e-12) "
    "(normalize_embeddings=False: raw x), as torch.cdist's difference kernel (≤ 25 rows)"
)
_TRIPLET_SQUARED = "no (power=1); power=q gives d^q (LpDistance power)"
_TRIPLET_EPSILON = (
    "F.normalize eps 1e-12: a zero row stays 0 with gradient g/1e-12; d = 0 has gradient 0 "
    "(cdist); > 25 rows PML's cdist uses the GEMM formula (duplicates ≈ 1e-8 apart), "
    "the preset stays exact"
)
_PML_SOURCE = "KevinMusgrave/pytorch-metric-learning v2.9.0 : src/pytorch_metric_learning/"


@preset(
    PresetInfo(
        implementation="pytorch-metric-learning TripletMarginLoss (no miner: every triplet)",
        distance=_TRIPLET_DISTANCE,
        squared=_TRIPLET_SQUARED,
        margin="0.05",
        reduction="AvgNonZeroReducer: sum / #(terms > 0) over every triplet",
        labels="integer class labels; every ordered (a, p ≠ a, n), y_p = y_a ≠ y_n",
        edge_cases=(
            "no triplet, or every term 0 → 0 with zero gradient; hinge at exactly 0: "
            "relu, gradient 0, not counted; smooth_loss = torch softplus(d_ap − d_an + m) "
            "(margin kept, identity above 20); swap: min(d_an, d_pn), a tie splits ½/½"
        ),
        epsilon=_TRIPLET_EPSILON,
        source=_PML_SOURCE + "losses/triplet_margin_loss.py (TripletMarginLoss.compute_loss), "
        "utils/loss_and_miner_utils.py (get_all_triplets_indices), "
        "reducers/threshold_reducer.py, distances/lp_distance.py",
    )
)
@defvjp(_triplet_fwd, _mined_bwd)
def triplet_margin_loss(
    embeddings: Any,
    labels: Any,
    *,
    margin: float = 0.05,
    swap: bool = False,
    smooth_loss: bool = False,
    normalize_embeddings: bool = True,
    power: float = 1.0,
    reducer: str = "avg_non_zero",
    check: bool = True,
) -> Any:
    r"""PML's ``TripletMarginLoss(margin, swap, smooth_loss)(embeddings, labels)``.

    Every ordered triplet (a, p, n) of the batch — :math:`p \ne a`,
    :math:`y_p = y_a`, :math:`y_n \ne y_a` — gives the term

    .. math:: l_{apn} = [\,(d_{ap} - d_{an}) + m\,]_+
       \quad\text{or, with smooth\_loss,}\quad
       \mathrm{softplus}\big((d_{ap} - d_{an}) + m\big),

    with :math:`d` PML's default distance (module docstring) and, with
    ``swap``, :math:`d_{an} \leftarrow \min(d_{an}, d_{pn})`. The default
    reducer averages the terms strictly above 0:
    :math:`L = \sum l / \#\{l > 0\}`, and 0 when no term is positive.

    Gradient (through :func:`refloss.vjp`): each counted term weighs
    :math:`s = g/\#\{l > 0\}` ("avg_non_zero"), :math:`g/\#\text{triplets}`
    ("mean") or :math:`g` ("sum"), times the hinge's derivative
    :math:`[z > 0]` (torch's softplus derivative with ``smooth_loss``); it
    adds that weight to :math:`\partial L/\partial d_{ap}` and subtracts it
    from :math:`\partial L/\partial d_{an}` (shared with :math:`d_{pn}` by
    the swap's min, ½/½ on a tie). Then the distance's chain rule: power,
    :math:`(x̂_i - x̂_j)/d_{ij}` (0 at d = 0), and F.normalize's Jacobian.

    Mapping: ``TripletMarginLoss(margin=margin, swap=swap, smooth_loss=smooth_loss,
    distance=LpDistance(normalize_embeddings=normalize_embeddings, p=2, power=power),
    reducer=AvgNonZeroReducer() | MeanReducer() | SumReducer())`` called as
    ``loss_fn(embeddings, labels)``; ``triplets_per_anchor="all"`` (the
    default; the random sampling of an integer value is not reproduced).

    Differences:
        * Margins must be >= 0 (PML accepts negative ones), and non-finite
          embeddings are refused (PML propagates NaN).
        * Batches of more than 25 rows: ``torch.cdist`` switches to its
          GEMM formula, whose rounding moves duplicated and nearly equal rows
          off 0 (with gradients of size 1/d); the preset keeps the exact
          distances of the ≤ 25-row kernel (docs/compat-torch.md).
        * Only ``LpDistance(p=2)`` (``power`` ≥ 1 allowed) — no other p, no
          ``CosineSimilarity``, no ``ref_emb``/``indices_tuple``, no
          embedding regularizer.
        * float16/bfloat16 embeddings are computed in float32 (PML's
          float16 path uses ``pairwise_distance``, eps 1e-6 added to the
          differences). A row whose squared norm overflows (entries beyond
          ~1e154) becomes a zero row in torch's ``normalize``; the preset's
          norm does not overflow and normalises it.
        * A zero row is at distance 1 from every normalised row only up to
          rounding: a tie, or a hinge exactly at 1, is decided by the last
          bit there, which PML and the preset may round differently.
        * At a margin boundary decided by rounding (e.g. d_an − d_ap equal
          to m up to the last bit) the count may differ from PML's, which
          forms :math:`(d_{ap} - d_{an}) + m` where this hinge path compares
          :math:`d_{an}` with :math:`d_{ap} + m`.
        * O(B² log B) time and O(B²) memory for the hinge without swap; PML
          builds a B×B×B mask and the list of all triplets.

    Args:
        embeddings: ``[B, D]`` floating embeddings.
        labels: ``[B]`` integer class labels.
        margin: m >= 0 (PML's default 0.05).
        swap: use min(d_an, d_pn) (Balntas et al. 2016).
        smooth_loss: torch's softplus instead of relu (the margin is kept).
        normalize_embeddings: LpDistance's normalisation (default True).
        power: LpDistance's power, >= 1 (default 1).
        reducer: ``"avg_non_zero"`` (default), ``"mean"`` or ``"sum"``.
        check: check the values (finite inputs) in one read (default
            True); ``check=False`` reads nothing (docs/errors.md, "Checks and syncs").

    Returns:
        A 0-d array in the namespace, device and dtype of ``embeddings``.

    Source:
        KevinMusgrave/pytorch-metric-learning v2.9.0,
        ``src/pytorch_metric_learning/losses/triplet_margin_loss.py``
        (``TripletMarginLoss.compute_loss``),
        ``reducers/threshold_reducer.py`` (``AvgNonZeroReducer``),
        ``distances/lp_distance.py``.
    """
    return _triplet_fwd(
        embeddings, labels, margin=margin, swap=swap, smooth_loss=smooth_loss,
        normalize_embeddings=normalize_embeddings, power=power, reducer=reducer, check=check
    )[0]


def _miner_fwd(embeddings, labels, *, type_of_triplets="all", miner_margin=0.2, margin=0.05,
               swap=False, smooth_loss=False, normalize_embeddings=True, power=1.0,
               reducer="avg_non_zero", check=True):
    _checks.check_choice("type_of_triplets", type_of_triplets, TYPES_OF_TRIPLETS)
    miner_margin = _checks.check_margin("miner_margin", miner_margin)
    return _mined_fwd(embeddings, labels, type_of_triplets, miner_margin, margin, swap,
                      smooth_loss, normalize_embeddings, power, reducer, check)


@preset(
    PresetInfo(
        implementation="pytorch-metric-learning TripletMarginLoss + TripletMarginMiner",
        distance=_TRIPLET_DISTANCE + "; the miner uses the same distance",
        squared=_TRIPLET_SQUARED,
        margin="loss 0.05, miner 0.2 (independent)",
        reduction="AvgNonZeroReducer: sum / #(terms > 0) over the mined triplets",
        labels="integer class labels; the miner filters every ordered (a, p ≠ a, n)",
        edge_cases=(
            "type_of_triplets on Δ = d_an − d_ap: all Δ ≤ M, hard Δ ≤ M ∧ Δ ≤ 0, semihard "
            "0 < Δ ≤ M (every such triplet, not TensorFlow's one per pair), easy Δ > M; "
            "nothing mined → 0; relu gradient 0 at 0"
        ),
        epsilon=_TRIPLET_EPSILON,
        source=_PML_SOURCE + "miners/triplet_margin_miner.py (TripletMarginMiner.mine), "
        "losses/triplet_margin_loss.py (TripletMarginLoss.compute_loss)",
    )
)
@defvjp(_miner_fwd, _mined_bwd)
def triplet_margin_miner_loss(
    embeddings: Any,
    labels: Any,
    *,
    type_of_triplets: str = "all",
    miner_margin: float = 0.2,
    margin: float = 0.05,
    swap: bool = False,
    smooth_loss: bool = False,
    normalize_embeddings: bool = True,
    power: float = 1.0,
    reducer: str = "avg_non_zero",
    check: bool = True,
) -> Any:
    r"""PML's ``TripletMarginLoss`` on the triplets of ``TripletMarginMiner``.

    ``loss_fn(embeddings, labels, miner(embeddings, labels))`` with
    ``miner = TripletMarginMiner(margin=miner_margin, type_of_triplets=...)``
    and ``loss_fn = TripletMarginLoss(margin=margin, swap=swap,
    smooth_loss=smooth_loss)``, both on the same distance. The miner keeps
    the ordered triplets (a, p, n) whose :math:`\Delta = d_{an} - d_{ap}`
    satisfies

    ==============  ==========================================
    type            kept triplets
    ==============  ==========================================
    ``"all"``       :math:`\Delta \le M`
    ``"hard"``      :math:`\Delta \le M` and :math:`\Delta \le 0`
    ``"semihard"``  :math:`0 < \Delta \le M`
    ``"easy"``      :math:`\Delta > M`
    ==============  ==========================================

    and the loss is :func:`triplet_margin_loss`'s term on each of them,
    :math:`[(d_{ap} - d_{an}) + m]_+` (``smooth_loss``: torch's softplus;
    ``swap``: :math:`\min(d_{an}, d_{pn})` in the loss only — the miner
    looks at :math:`d_{an}`), reduced by ``reducer`` over the mined triplets.

    Hinge without swap: the contributing negatives of each positive pair
    form one run of the anchor's sorted negatives,
    :math:`\max(L_{ap}, \cdot) \le d_{an} \le \min(U_{ap}, d_{ap} + m)` (strict
    bounds moved to the neighbouring float), found by row-wise binary
    searches: O(B² log B) time, O(B²) memory. Gradient:
    :math:`\partial L/\partial d_{ap} = s\,c_{ap}` (c the run's length) and
    :math:`\partial L/\partial d_{an} = -s\,\#\{p : n \text{ in the run of } (a, p)\}`,
    counted by two more searches; the selection itself is piecewise constant
    and carries no gradient (PML's miner runs under ``no_grad``). With
    ``smooth_loss`` or ``swap``: triplet by triplet in anchor blocks, as
    :func:`triplet_margin_loss`.

    Mapping: PML's miner takes its own ``distance``; the preset applies the
    loss's distance to both (as PML's defaults do).

    Differences:
        As :func:`triplet_margin_loss`; in addition, margins must be >= 0,
        and a miner boundary decided by rounding (Δ equal to M up to the last
        bit) may fall the other way (PML forms :math:`d_{an} - d_{ap}` and
        compares it with M; the hinge path compares :math:`d_{an}` with
        :math:`d_{ap} + M`). Exact ties (Δ = 0 between duplicates) are
        decided exactly as in PML.

    Args:
        embeddings: ``[B, D]`` floating embeddings.
        labels: ``[B]`` integer class labels.
        type_of_triplets: ``"all"`` (default), ``"hard"``, ``"semihard"`` or ``"easy"``.
        miner_margin: M >= 0, the miner's margin (PML's default 0.2).
        margin, swap, smooth_loss, normalize_embeddings, power, reducer: as
            :func:`triplet_margin_loss`.
        check: check the values (finite inputs) in one read (default
            True); ``check=False`` reads nothing (docs/errors.md, "Checks and syncs").

    Returns:
        A 0-d array in the namespace, device and dtype of ``embeddings``.

    Source:
        KevinMusgrave/pytorch-metric-learning v2.9.0,
        ``src/pytorch_metric_learning/miners/triplet_margin_miner.py``
        (``TripletMarginMiner.mine``) and ``losses/triplet_margin_loss.py``.
    """
    return _miner_fwd(
        embeddings, labels, type_of_triplets=type_of_triplets, miner_margin=miner_margin,
        margin=margin, swap=swap, smooth_loss=smooth_loss,
        normalize_embeddings=normalize_embeddings, power=power, reducer=reducer, check=check
    )[0]


def _semihard_fwd(embeddings, labels, *, miner_margin=0.2, margin=0.05, swap=False,
                  smooth_loss=False, normalize_embeddings=True, power=1.0,
                  reducer="avg_non_zero", check=True):
    return _miner_fwd(
        embeddings, labels, type_of_triplets="semihard", miner_margin=miner_margin,
        margin=margin, swap=swap, smooth_loss=smooth_loss,
        normalize_embeddings=normalize_embeddings, power=power, reducer=reducer, check=check,
    )


@preset(
    PresetInfo(
        implementation=(
            "pytorch-metric-learning TripletMarginLoss + "
            "TripletMarginMiner(type_of_triplets='semihard')"
        ),
        distance=_TRIPLET_DISTANCE + "; the miner uses the same distance",
        squared=_TRIPLET_SQUARED,
        margin="loss 0.05, miner 0.2 (independent)",
        reduction="AvgNonZeroReducer: sum / #(terms > 0) over the mined triplets",
        labels="integer class labels; every ordered (a, p ≠ a, n) with 0 < d_an − d_ap ≤ M",
        edge_cases=(
            "every triplet with d_ap < d_an ≤ d_ap + M (FaceNet's wording), not TensorFlow's "
            "one negative per positive pair with its fallback; Δ = 0 (duplicates) not mined; "
            "with the default margins only Δ < 0.05 counts; nothing mined → 0"
        ),
        epsilon=_TRIPLET_EPSILON,
        source=_PML_SOURCE + "miners/triplet_margin_miner.py (TripletMarginMiner.mine, "
        "type_of_triplets='semihard'), losses/triplet_margin_loss.py",
    )
)
@defvjp(_semihard_fwd, _mined_bwd)
def semihard_triplet_margin_loss(
    embeddings: Any,
    labels: Any,
    *,
    miner_margin: float = 0.2,
    margin: float = 0.05,
    swap: bool = False,
    smooth_loss: bool = False,
    normalize_embeddings: bool = True,
    power: float = 1.0,
    reducer: str = "avg_non_zero",
    check: bool = True,
) -> Any:
    r"""PML's ``TripletMarginLoss()`` on ``TripletMarginMiner(type_of_triplets="semihard")``.

    :func:`triplet_margin_miner_loss` with ``type_of_triplets="semihard"``:
    every ordered triplet with :math:`0 < d_{an} - d_{ap} \le M` (M =
    ``miner_margin``, default 0.2) is mined, and the loss averages
    :math:`[(d_{ap} - d_{an}) + m]_+` (m = ``margin``, default 0.05) over the
    mined terms above 0:

    .. math:: L = \frac{\sum_{0 < \Delta_{apn} \le M} [m - \Delta_{apn}]_+}
                       {\#\{0 < \Delta_{apn} \le M,\ \Delta_{apn} < m\}},
       \qquad \Delta_{apn} = d_{an} - d_{ap}.

    With the default margins only the triplets with :math:`\Delta < 0.05`
    contribute; the miner's 0.2 widens nothing.

    Gradient: as :func:`triplet_margin_miner_loss` (each contributing
    triplet adds s to :math:`\partial L/\partial d_{ap}` and −s to
    :math:`\partial L/\partial d_{an}`).

    Differences:
        * This is **not** :func:`refloss.semihard_triplet_loss` (TensorFlow's
          definition): PML keeps *every* negative inside the band, with no
          fallback, and averages over the non-zero terms; TensorFlow picks
          one negative per positive pair (the closest one farther than the
          positive, else the farthest) and averages over the positive pairs.
        * As :func:`triplet_margin_miner_loss` otherwise.

    Args:
        embeddings: ``[B, D]`` floating embeddings.
        labels: ``[B]`` integer class labels.
        miner_margin: M >= 0 (PML's TripletMarginMiner default 0.2).
        margin, swap, smooth_loss, normalize_embeddings, power, reducer: as
            :func:`triplet_margin_loss`.
        check: check the values (finite inputs) in one read (default
            True); ``check=False`` reads nothing (docs/errors.md, "Checks and syncs").

    Returns:
        A 0-d array in the namespace, device and dtype of ``embeddings``.

    Source:
        KevinMusgrave/pytorch-metric-learning v2.9.0,
        ``src/pytorch_metric_learning/miners/triplet_margin_miner.py``
        (``TripletMarginMiner.mine``, ``type_of_triplets == "semihard"``).
    """
    return _semihard_fwd(
        embeddings, labels, miner_margin=miner_margin, margin=margin, swap=swap,
        smooth_loss=smooth_loss, normalize_embeddings=normalize_embeddings, power=power,
        reducer=reducer, check=check
    )[0]


# --------------------------------------------------------------------------
# TripletMarginLoss + BatchHardMiner


def _batch_hard_fwd(embeddings, labels, *, margin=0.05, swap=False, smooth_loss=False,
                    normalize_embeddings=True, power=1.0, reducer="avg_non_zero", check=True):
    check = _checks.check_flag("check", check)
    xp, labels = _check_batch(embeddings, labels)
    margin = _check_triplet_options(margin, swap, smooth_loss, reducer)
    power = _check_distance(normalize_embeddings, power)
    fetch = _checks.Fetch(xp, check=check)
    fetch.finite("embeddings", embeddings)
    dtype = embeddings.dtype
    x = xp.astype(embeddings, _checks.compute_dtype(xp, dtype))
    b = x.shape[0]
    if b == 0:
        fetch.done()
        return _empty(xp, x, dtype)
    d, eres = _embed_forward(xp, x, normalize_embeddings, power, fetch)
    fetch.done()
    # BatchEasyHardMiner(hard, hard): argmax over positives, argmin over
    # negatives (first index on ties, as torch.max/min(dim=1)); anchors
    # lacking either are dropped
    sel = BatchHard(xp, d, labels)
    share = None
    d_neg = sel.d_an
    if swap:
        d_pn = xp.take(xp.reshape(d, (-1,)), sel.pos * b + sel.neg)
        share = _an_share(xp, sel.d_an, d_pn)
        d_neg = xp.where(d_pn < sel.d_an, d_pn, sel.d_an)
    z = (sel.d_ap - d_neg) + margin
    terms = xp.where(sel.valid, _term(xp, z, smooth_loss), 0.0)
    value, rres = _reduce(xp, terms, reducer, xp.count_nonzero(terms > 0),
                          xp.count_nonzero(sel.valid))
    res = (xp, dtype, (eres, sel, z, share, smooth_loss, rres))
    return as_array(xp, xp.astype(value, dtype)), res


def _batch_hard_bwd(residuals, g):
    xp, dtype, res = residuals
    if not isinstance(res, tuple):  # empty batch
        return res, None
    eres, sel, z, share, smooth, rres = res
    w = xp.where(sel.valid, _term_grad(xp, z, smooth), 0.0) * _scale(xp, rres, g)
    b = z.shape[0]
    cols = xp.arange(b, dtype=sel.pos.dtype, device=_device(z))
    onehot_p = xp.astype(cols[None, :] == sel.pos[:, None], z.dtype)
    onehot_n = xp.astype(cols[None, :] == sel.neg[:, None], z.dtype)
    if share is None:
        gd = w[:, None] * (onehot_p - onehot_n)
    else:
        # d_pn sits at (p_a, n_a), off the anchor's row: Σ_a w_a e_{p_a} e_{n_a}ᵀ
        # as one GEMM of one-hot matrices (no scatter)
        gd = w[:, None] * onehot_p - (w * share)[:, None] * onehot_n
        gd = gd - ((w * (1.0 - share))[:, None] * onehot_p).T @ onehot_n
    return xp.astype(_embed_backward(xp, eres, gd), dtype), None


@preset(
    PresetInfo(
        implementation="pytorch-metric-learning TripletMarginLoss + BatchHardMiner",
        distance=_TRIPLET_DISTANCE + "; the miner uses the same distance",
        squared=_TRIPLET_SQUARED,
        margin="0.05 (the miner has none)",
        reduction="AvgNonZeroReducer: mean over the anchors whose hinge is > 0",
        labels="integer class labels; one triplet per anchor with a positive and a negative",
        edge_cases=(
            "hardest positive argmax d_ap, hardest negative argmin d_an, ties to the lowest "
            "index (torch.max/min); anchors without a positive or a negative dropped, not "
            "counted; nothing mined or every hinge 0 → 0"
        ),
        epsilon=_TRIPLET_EPSILON,
        source=_PML_SOURCE + "miners/batch_hard_miner.py, miners/batch_easy_hard_miner.py "
        "(BatchEasyHardMiner.mine, get_x_per_row), losses/triplet_margin_loss.py",
    )
)
@defvjp(_batch_hard_fwd, _batch_hard_bwd)
def batch_hard_triplet_margin_loss(
    embeddings: Any,
    labels: Any,
    *,
    margin: float = 0.05,
    swap: bool = False,
    smooth_loss: bool = False,
    normalize_embeddings: bool = True,
    power: float = 1.0,
    reducer: str = "avg_non_zero",
    check: bool = True,
) -> Any:
    r"""PML's ``TripletMarginLoss()(embeddings, labels, BatchHardMiner()(embeddings, labels))``.

    Per anchor a with at least one positive and one negative, the miner
    takes the hardest positive :math:`p_a = \arg\max_p d_{ap}` and the
    hardest negative :math:`n_a = \arg\min_n d_{an}` (ties: the lowest
    index, as ``torch.max/min(dim=1)``), and the loss averages the non-zero

    .. math:: l_a = [\,(d_{a p_a} - d_{a n_a}) + m\,]_+

    (``smooth_loss``: torch's softplus; ``swap``:
    :math:`\min(d_{a n_a}, d_{p_a n_a})`): with the default reducer,
    :math:`L = \sum_a l_a / \#\{a : l_a > 0\}`.

    Gradient: with :math:`w_a` the counted anchor's weight (g over the count)
    times the hinge's derivative, :math:`G_{a p_a} = w_a` and
    :math:`G_{a n_a} = -w_a` (with swap, the share of :math:`d_{p_a n_a}` goes
    to :math:`G_{p_a n_a}`, built as a product of one-hot matrices), then the
    distance's chain rule. The selection carries no gradient (PML's miner
    runs under ``no_grad`` and the loss recomputes the distances).

    Mapping: ``BatchHardMiner()`` = ``BatchEasyHardMiner(pos_strategy="hard",
    neg_strategy="hard")``; the preset applies the loss's distance to the
    miner too (PML's defaults agree).

    Differences:
        * From :func:`refloss.batch_hard_triplet_loss`: PML's default divides
          by the number of anchors whose hinge is non-zero (reducer
          ``"avg_non_zero"``), the reference by every valid anchor; the
          distances are normalised Euclidean.
        * As :func:`triplet_margin_loss` (margins >= 0, exact distances above
          25 rows, float16 in float32, LpDistance(p=2) only).

    Args:
        embeddings: ``[B, D]`` floating embeddings.
        labels: ``[B]`` integer class labels.
        margin, swap, smooth_loss, normalize_embeddings, power, reducer: as
            :func:`triplet_margin_loss`.
        check: check the values (finite inputs) in one read (default
            True); ``check=False`` reads nothing (docs/errors.md, "Checks and syncs").

    Returns:
        A 0-d array in the namespace, device and dtype of ``embeddings``.

    Source:
        KevinMusgrave/pytorch-metric-learning v2.9.0,
        ``src/pytorch_metric_learning/miners/batch_easy_hard_miner.py``
        (``BatchEasyHardMiner.mine``, ``get_x_per_row``),
        ``miners/batch_hard_miner.py``, ``losses/triplet_margin_loss.py``.
    """
    return _batch_hard_fwd(
        embeddings, labels, margin=margin, swap=swap, smooth_loss=smooth_loss,
        normalize_embeddings=normalize_embeddings, power=power, reducer=reducer, check=check
    )[0]


# --------------------------------------------------------------------------
# ContrastiveLoss


def _contrastive_fwd(embeddings, labels, *, pos_margin=0.0, neg_margin=1.0,
                     normalize_embeddings=True, power=1.0, reducer="avg_non_zero", check=True):
    check = _checks.check_flag("check", check)
    xp, labels = _check_batch(embeddings, labels)
    pos_margin = _checks.check_margin("pos_margin", pos_margin)
    neg_margin = _checks.check_margin("neg_margin", neg_margin)
    _checks.check_choice("reducer", reducer, REDUCERS)
    power = _check_distance(normalize_embeddings, power)
    fetch = _checks.Fetch(xp, check=check)
    fetch.finite("embeddings", embeddings)
    dtype = embeddings.dtype
    x = xp.astype(embeddings, _checks.compute_dtype(xp, dtype))
    if x.shape[0] == 0:
        fetch.done()
        return _empty(xp, x, dtype)
    d, eres = _embed_forward(xp, x, normalize_embeddings, power, fetch)
    fetch.done()
    pos, neg, _ = label_masks(xp, labels, d)
    # ContrastiveLoss.pos_calc / neg_calc: relu(d - pos_margin), relu(neg_margin - d)
    pos_terms = xp.reshape(xp.where(pos, _relu(xp, d - pos_margin), 0.0), (-1,))
    neg_terms = xp.reshape(xp.where(neg, _relu(xp, neg_margin - d), 0.0), (-1,))
    # MultipleReducers: each sub-loss reduced on its own, then summed
    pos_value, pos_rres = _reduce(xp, pos_terms, reducer, xp.count_nonzero(pos_terms > 0),
                                  xp.count_nonzero(pos))
    neg_value, neg_rres = _reduce(xp, neg_terms, reducer, xp.count_nonzero(neg_terms > 0),
                                  xp.count_nonzero(neg))
    res = (xp, dtype, (eres, d, pos, neg, pos_margin, neg_margin, pos_rres, neg_rres))
    return as_array(xp, xp.astype(pos_value + neg_value, dtype)), res


def _contrastive_bwd(residuals, g):
    xp, dtype, res = residuals
    if not isinstance(res, tuple):  # empty batch
        return res, None
    eres, d, pos, neg, pos_margin, neg_margin, pos_rres, neg_rres = res
    pull = xp.astype(pos & (d - pos_margin > 0), d.dtype) * _scale(xp, pos_rres, g)
    push = xp.astype(neg & (neg_margin - d > 0), d.dtype) * _scale(xp, neg_rres, g)
    return xp.astype(_embed_backward(xp, eres, pull - push), dtype), None


@preset(
    PresetInfo(
        implementation="pytorch-metric-learning ContrastiveLoss",
        distance=_TRIPLET_DISTANCE,
        squared="no: linear hinges [d − m₊]_+ and [m₋ − d]_+ (power=q gives d^q)",
        margin="pos_margin 0, neg_margin 1",
        reduction=(
            "AvgNonZero(positive-pair terms) + AvgNonZero(negative-pair terms), "
            "each over ordered pairs"
        ),
        labels="integer class labels; every ordered pair i ≠ j, positive iff y_i = y_j",
        edge_cases=(
            "a sub-loss with no pair or no term > 0 gives 0; a positive pair at d = 0 is "
            "not counted; one sample or an empty batch → 0; relu gradient 0 at 0"
        ),
        epsilon=_TRIPLET_EPSILON,
        source=_PML_SOURCE + "losses/contrastive_loss.py (ContrastiveLoss), "
        "losses/generic_pair_loss.py, reducers/multiple_reducers.py",
    )
)
@defvjp(_contrastive_fwd, _contrastive_bwd)
def contrastive_loss(
    embeddings: Any,
    labels: Any,
    *,
    pos_margin: float = 0.0,
    neg_margin: float = 1.0,
    normalize_embeddings: bool = True,
    power: float = 1.0,
    reducer: str = "avg_non_zero",
    check: bool = True,
) -> Any:
    r"""PML's ``ContrastiveLoss(pos_margin, neg_margin)(embeddings, labels)``.

    Over every ordered pair (i, j), i ≠ j, of the batch:

    .. math::

        L = \operatorname*{AvgNonZero}_{y_i = y_j} [d_{ij} - m_+]_+
          + \operatorname*{AvgNonZero}_{y_i \ne y_j} [m_- - d_{ij}]_+,

    two separate means over the terms strictly above 0 (each 0 when it has
    none), summed. Linear hinges, no square, no ½.

    Gradient: each positive pair with :math:`d_{ij} > m_+` adds
    :math:`g/n_+` to :math:`\partial L/\partial d_{ij}` and each negative pair
    with :math:`d_{ij} < m_-` adds :math:`-g/n_-` (:math:`n_\pm` the two
    non-zero counts; "mean": the pair counts; "sum": 1), then the distance's
    chain rule.

    Mapping: ``ContrastiveLoss(pos_margin=pos_margin, neg_margin=neg_margin,
    distance=LpDistance(normalize_embeddings=..., p=2, power=power),
    reducer=...)`` — a reducer applies to each sub-loss, as PML's
    MultipleReducers does.

    Differences:
        * From :func:`refloss.contrastive_loss_all_pairs` with ``power=1``:
          PML reduces the positive and negative terms separately and sums the
          two means; one ``"mean_nonzero"`` over all pair terms is another
          number. PML counts ordered pairs (each unordered pair twice, which
          leaves the means unchanged).
        * Margins must be >= 0. PML's ``all(len(x) <= 1 ...)`` shortcut
          (a loss of 0 when every index list has at most one entry) never
          triggers with labels except for a batch of at most one sample,
          which gives 0 here too.
        * As :func:`triplet_margin_loss` for the distance (exact above 25
          rows: PML's GEMM distances make duplicated positives ≈ 1e-8 apart,
          so it counts them as non-zero terms), float16 and LpDistance(p=2).

    Args:
        embeddings: ``[B, D]`` floating embeddings.
        labels: ``[B]`` integer class labels.
        pos_margin: :math:`m_+ \ge 0` (default 0).
        neg_margin: :math:`m_- \ge 0` (default 1).
        normalize_embeddings, power, reducer: as :func:`triplet_margin_loss`.
        check: check the values (finite inputs) in one read (default
            True); ``check=False`` reads nothing (docs/errors.md, "Checks and syncs").

    Returns:
        A 0-d array in the namespace, device and dtype of ``embeddings``.

    Source:
        KevinMusgrave/pytorch-metric-learning v2.9.0,
        ``src/pytorch_metric_learning/losses/contrastive_loss.py``
        (``ContrastiveLoss``), ``losses/generic_pair_loss.py``
        (``pair_based_loss``), ``reducers/multiple_reducers.py``.
    """
    return _contrastive_fwd(
        embeddings, labels, pos_margin=pos_margin, neg_margin=neg_margin,
        normalize_embeddings=normalize_embeddings, power=power, reducer=reducer, check=check
    )[0]
