r"""Triplet losses: explicit triplets, batch-all, batch-hard and semi-hard.

For a triplet (a, p, n) with distances :math:`d_{ap}`, :math:`d_{an}`:

* hinge (Schroff et al. 2015): :math:`l = [d_{ap} - d_{an} + m]_+`,
  evaluated as :math:`\max((d_{ap} + m) - d_{an},\, 0)`;
* soft margin (Hermans et al. 2017): :math:`l = \mathrm{softplus}(d_{ap} - d_{an})
  = \log(1 + e^{d_{ap} - d_{an}})`, computed stably as
  :math:`\max(z, 0) + \log1p(e^{-|z|})`; the margin is ignored.

The hinge's subgradient at exactly 0 is 0 (relu): a triplet exactly at the
margin neither pulls nor counts in "mean_nonzero". Softplus' derivative is
the logistic :math:`\sigma(z)`.

Labeled-batch losses (``batch_all_triplet_loss``, ``batch_hard_triplet_loss``,
``semihard_triplet_loss``) compose: optional L2 normalisation → the B×B
distance matrix D → mining and per-term loss → reduction. Their backward
builds :math:`G = \partial L/\partial D` (B×B) without scatter — mined
positions enter as ``cols == index[:, None]`` masks or through sorted-order
prefix sums — and then applies the distance VJP (two GEMMs). Memory is
O(B² + B·D) throughout; nothing of size B³ is formed (the soft batch-all
loss, O(B²·W) work with W the largest class, runs in blocks of at most
max(B²/4, 2²²) triplets).
Row-wise work over B×B runs in at most four row blocks of B²/4 elements
(never fewer than 2²² on the CPU, 2²⁴ on an accelerator), so the number of
ops per call does not grow with B.

Conventions shared by the labeled losses: a positive of a is :math:`p \ne a`
with :math:`y_p = y_a`, a negative has :math:`y_n \ne y_a`; anchors (or
pairs) without a positive or a negative give no term and are not counted;
no valid term at all gives the loss 0 and the gradient 0; ties in a max/min
go to the lowest index on every backend (see :mod:`refloss.mining`).

Anchor blocks (``anchor_rows=(start, stop)``, ints with
:math:`0 \le start \le stop \le B`; also on
:func:`refloss.contrastive_loss_all_pairs`): the loss keeps only the terms
whose anchor a is in :math:`A = \{start, \dots, stop-1\}` (b = stop − start
anchors). Positives and negatives still range over the whole batch, the
anchor's own column a is never its own positive (but for batch-hard's
``anchor_as_positive``, at distance 0), and every max/min/semi-hard choice is
made over the whole batch — so each term is the full batch's term of that
anchor. Only the b×B block :math:`D_{ij} = d(x_{start+i}, x_j)` is formed:
O(b·B) distances and memory instead of O(B²) (its row-block work in blocks
of b·B/4 entries; the same one device→host read as a full call).
Reductions: ``"none"`` gives the block's rows of the full result (``[b]``
batch-hard, ``[b, B]`` batch-all and semi-hard); ``"sum"`` the sum of the block's terms;
``"mean"`` that sum divided by N, the number of terms of the **whole**
batch (valid anchors, counted positive pairs, valid triplets), counted from
the labels alone. Hence for any partition of the rows into blocks
:math:`\sum_{blocks} L_A = L` ("sum", "mean") and the blocks' ``"none"``
concatenate to the full one. ``"mean_nonzero"`` is refused (its count and τ
depend on every term). Gradient: :math:`G = \partial L_A/\partial D` (b×B,
the same construction as above) goes through the rectangular distance VJP,
:math:`\partial L_A/\partial X = (\text{row part placed at rows } A) +
\text{column part}`: the anchors *and* every positive and negative row of
the batch receive gradient, and :math:`\sum_{blocks} \partial L_A/\partial X
= \partial L/\partial X`. The block's distances are
``pairwise_distances(x[start:stop], x)``, equal to the full matrix's rows to
rounding (~1e-16 relative), not bit for bit: the identities hold to rounding,
and where two candidates tie exactly in exact arithmetic the block may pick
the other one.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from array_api_compat import device as _device
from array_api_compat import is_numpy_namespace, is_torch_namespace

from . import _checks, _ops
from .distances import METRICS, paired_backward, paired_forward
from .mining import (
    BatchHard,
    PositiveTable,
    SemiHard,
    check_bool,
    check_labeled_batch,
    class_sizes,
    class_width,
    compact_ok,
    count_and_sum_by_key,
    embed_backward,
    embed_forward,
    label_masks,
    packs_rows,
    row_keys,
    row_searchsorted,
    search_rows_at,
    semihard_by_buckets,
    stable_row_sort,
    sum_by_column,
)
from .normalization import normalize_backward, normalize_forward
from .reductions import REDUCTIONS, nonzero_tolerance, reduce_backward, reduce_forward
from .vjp import defvjp

__all__ = [
    "batch_all_triplet_loss",
    "batch_hard_triplet_loss",
    "semihard_triplet_loss",
    "triplet_margin_loss",
]

# Largest class size W for which the compact paths loop over the W columns of
# the positive table (W passes over B×B) instead of searching or sorting B×B.
_LOOP_WIDTH = 8
# Wide classes: most distinct tied semi-hard values in one row that are
# resolved by index (one B×B pass each) before the dense sorted-order path
# (two B×B argsorts, int64 B×B arrays) is used.
_TIED_PASSES = 64
# Anchor-positive pairs of batch-all: every ordered (a, p), or each {a, p} once.
PAIRS = ("ordered", "unordered")


# --------------------------------------------------------------------------
# per-term pieces


def _hinge(xp, z, soft):
    if soft:
        return _softplus(xp, z)
    return xp.where(z > 0, z, 0.0)


def _hinge_grad(xp, z, soft):
    if soft:
        return _sigmoid(xp, z)
    return xp.astype(z > 0, z.dtype)


def _softplus(xp, z):
    # max(z, 0) + log1p(exp(-|z|)), written with wheres so that autograd
    # through it gives sigma(z) everywhere (0.5 at z = 0) and exp never overflows
    up = xp.where(z > 0, z, 0.0)
    down = xp.where(z > 0, 0.0, z)
    return up + xp.log1p(xp.exp(down - up))


def _sigmoid(xp, z):
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _argument(d_ap, d_an, margin, soft):
    """The hinge argument (d_ap + m) - d_an, or d_ap - d_an for the soft margin."""
    return d_ap - d_an if soft else (d_ap + margin) - d_an


def _reduce(xp, terms, reduction, count, tol=0.0):
    """Reduce a term vector or B×B term matrix; ``count`` is the "mean" divisor,
    ``tol`` the "mean_nonzero" tolerance (:func:`_tol`)."""
    if reduction == "none":
        return reduce_forward(xp, terms, "none")
    flat = xp.reshape(terms, (-1,))
    if reduction == "mean":
        return reduce_forward(xp, flat, "mean", count)
    return reduce_forward(xp, flat, reduction, tol=tol)


def _tol(xp, reduction, d, margin, soft):
    """τ of "mean_nonzero": 16 ulps of (margin + max d) for the hinge; 0 for
    the soft margin, whose softplus terms have no exact zeros to round (a
    tiny one is accurate to its own ulps, not noise)."""
    return 0.0 if soft else nonzero_tolerance(xp, reduction, d, margin)


def _upstream(xp, rres, g, mask, dtype):
    """``(weights, scale)``: the upstream weight of each term as ``weights * scale``.

    For a scalar reduction ``weights`` is the 0/1 ``mask`` (so prefix sums of
    it are exact counts) and ``scale`` the 0-d factor g/denominator; for
    "none" ``weights`` is g on the mask and ``scale`` is None.
    """
    if rres[0] == "none":
        return xp.where(mask, g, 0.0), None
    return xp.astype(mask, dtype), reduce_backward(xp, rres, g, g)


def _scaled(g, scale):
    return g if scale is None else scale * g


# --------------------------------------------------------------------------
# validation


def _check_options(margin, soft, reduction):
    margin = _checks.check_margin("margin", margin)
    check_bool("soft", soft)
    _checks.check_choice("reduction", reduction, REDUCTIONS)
    return margin


def _labeled_forward(
    x, labels, margin, metric, soft, normalize, reduction, check=True, table=False,
    anchor_rows=None,
):
    """Validation and distances of a labeled loss, with the call's one read
    (checks, distance sizes and, with ``table``, the positive table's
    width W: an int, or None where the table does not apply). With
    ``anchor_rows=(start, stop)`` D is the b×B block of those anchors'
    rows (the same one read; W is still the whole batch's largest class).

    With ``check=False`` where a read waits for the device, the hinge
    losses take the B×B path (exact, O(B²) memory: no W to read); the soft
    margin keeps the table and its read of W, since without it the work is
    B³ instead of B²·W (docs/errors.md, "Checks and syncs")."""
    xp, labels, fetch = check_labeled_batch(x, labels, metric, normalize, check)
    margin = _check_options(margin, soft, reduction)
    rows = _checks.check_anchor_rows(anchor_rows, x.shape[0], reduction)
    if not check and not soft and not _checks.reads_are_cheap(xp):
        table = False
    table = table and labels.shape[0] > 0 and compact_ok(xp, labels)
    dtype = x.dtype
    xc = xp.astype(x, _checks.compute_dtype(xp, dtype))
    if rows is not None and rows[0] == rows[1]:  # no anchor: nothing to measure
        fetch.done()  # the checks still run
        d = xp.zeros((0, x.shape[0]), dtype=xc.dtype, device=_device(x))
        return xp, dtype, margin, d, None, labels, None
    if table:
        fetch.want("width", class_width(xp, labels), labels.shape[0])
    d, eres = embed_forward(xp, xc, metric, normalize, fetch, rows)
    fetch.done()
    width = fetch.value("width") if table else None
    return xp, dtype, margin, d, eres, labels, width


def _batch_count(xp, labels, kind, *, anchor_as_positive=False, upper=False):
    """The number of terms of the whole batch, from its labels alone: the
    "mean" divisor of an anchor block (so that the blocks' means add up to
    the batch's). ``kind``: "hard" (valid anchors), "semihard" (counted
    positive pairs) or "all" (valid triplets)."""
    count, rank = class_sizes(xp, labels)
    n = labels.shape[0]
    has_neg = count < n
    if kind == "hard":
        return xp.count_nonzero(((count > 1) | anchor_as_positive) & has_neg)
    positives = count - 1 - rank if upper else count - 1  # upper: p > a only
    if kind == "semihard":
        return xp.sum(xp.where(has_neg, positives, 0))
    return xp.sum(positives * (n - count))


def _empty(xp, x, d, reduction, shape):
    """``(value, residuals)`` of an empty batch: the loss 0 (or no terms), gradient 0."""
    terms = xp.zeros(shape, dtype=d.dtype, device=_device(d))
    value, _ = _reduce(xp, terms, reduction, 0)
    return xp.astype(value, x.dtype), (xp, x.dtype, xp.zeros_like(x))


# --------------------------------------------------------------------------
# explicit triplets


def _triplet_fwd(
    anchor, positive, negative, *, margin=1.0, metric="euclidean", soft=False,
    swap=False, normalize=False, reduction="mean", check=True,
):
    xp = _checks.namespace(anchor=anchor, positive=positive, negative=negative)
    arrays = {"anchor": anchor, "positive": positive, "negative": negative}
    for name, arr in arrays.items():
        _checks.check_float(xp, name, arr)
        _checks.check_rank(name, arr, 2, "a 2-D array (batch, dim)")
    for name in ("positive", "negative"):
        arr = arrays[name]
        if tuple(arr.shape) != tuple(anchor.shape):
            raise ValueError(
                f"{name}: expected shape {tuple(anchor.shape)} (as anchor), "
                f"got {tuple(arr.shape)}"
            )
        if arr.dtype != anchor.dtype:
            raise TypeError(
                f"{name}: expected the dtype of anchor ({anchor.dtype}), got {arr.dtype}"
            )
    margin = _check_options(margin, soft, reduction)
    check_bool("swap", swap)
    check_bool("normalize", normalize)
    _checks.check_choice("metric", metric, METRICS)
    fetch = _checks.Fetch(xp, check=_checks.check_flag("check", check))
    for name, arr in arrays.items():
        fetch.finite(name, arr)
    fetch.done()  # one read for the three

    dtype = anchor.dtype
    cdt = _checks.compute_dtype(xp, dtype)
    a, p, n = (xp.astype(v, cdt) for v in (anchor, positive, negative))
    nres = (None, None, None)
    if normalize:
        (a, ra), (p, rp), (n, rn) = (normalize_forward(xp, v) for v in (a, p, n))
        nres = (ra, rp, rn)
    d_ap, r_ap = paired_forward(xp, a, p, metric)
    d_an, r_an = paired_forward(xp, a, n, metric)
    use_pn, r_pn = None, None
    d_neg = d_an
    if swap:
        d_pn, r_pn = paired_forward(xp, p, n, metric)
        use_pn = d_pn < d_an  # a tie keeps d_an
        d_neg = xp.where(use_pn, d_pn, d_an)
    z = _argument(d_ap, d_neg, margin, soft)
    terms = _hinge(xp, z, soft)
    tol = _tol(xp, reduction, xp.maximum(d_ap, d_neg), margin, soft)
    value, rres = reduce_forward(xp, terms, reduction, tol=tol)
    res = (xp, dtype, soft, z, terms, rres, r_ap, r_an, r_pn, use_pn, nres)
    return xp.astype(value, dtype, copy=False), res


def _triplet_bwd(residuals, g):
    xp, dtype, soft, z, terms, rres, r_ap, r_an, r_pn, use_pn, nres = residuals
    w = reduce_backward(xp, rres, g, terms) * _hinge_grad(xp, z, soft)
    ga, gp = paired_backward(xp, r_ap, w)
    if use_pn is None:
        ga2, gn = paired_backward(xp, r_an, -w)
        ga = ga + ga2
    else:
        ga2, gn = paired_backward(xp, r_an, xp.where(use_pn, 0.0, -w))
        gp2, gn2 = paired_backward(xp, r_pn, xp.where(use_pn, -w, 0.0))
        ga, gp, gn = ga + ga2, gp + gp2, gn + gn2
    grads = [ga, gp, gn]
    for i, r in enumerate(nres):
        if r is not None:
            grads[i] = normalize_backward(xp, r, grads[i])
    return tuple(xp.astype(v, dtype) for v in grads)


@defvjp(_triplet_fwd, _triplet_bwd)
def triplet_margin_loss(
    anchor: Any,
    positive: Any,
    negative: Any,
    *,
    margin: float = 1.0,
    metric: str = "euclidean",
    soft: bool = False,
    swap: bool = False,
    normalize: bool = False,
    reduction: str = "mean",
    check: bool = True,
) -> Any:
    r"""Triplet loss on explicit triplets :math:`(a_i, p_i, n_i)`.

    .. math:: l_i = [d(a_i, p_i) - d(a_i, n_i) + m]_+
       \quad\text{or, with soft=True,}\quad
       l_i = \log\bigl(1 + e^{d(a_i, p_i) - d(a_i, n_i)}\bigr)

    The hinge is evaluated as :math:`\max((d_{ap} + m) - d_{an}, 0)`; the
    soft margin ignores ``margin``. ``swap=True`` (Balntas et al. 2016)
    replaces :math:`d_{an}` by :math:`\min(d_{an}, d_{pn})`; on a tie
    :math:`d_{an}` is used (and receives the gradient).

    Gradient (through :func:`refloss.vjp`): with :math:`w_i` the upstream
    weight of term i times the hinge's derivative (:math:`[z_i > 0]`, 0 at
    exactly 0; :math:`\sigma(z_i)` for the soft margin),
    :math:`\partial L/\partial d_{ap,i} = w_i` and
    :math:`\partial L/\partial d_{an,i} = -w_i` (or :math:`d_{pn,i}` when
    swapped), then the paired-distance VJP (see
    :func:`refloss.paired_distances`) and, with ``normalize=True``, the
    normalisation's.

    Args:
        anchor, positive, negative: ``[N, D]`` floating arrays, one dtype.
        margin: :math:`m \ge 0` (default 1.0, as PyTorch and TensorFlow Addons).
        metric: ``"euclidean"`` (default), ``"sqeuclidean"`` or ``"cosine"``.
        soft: soft margin (softplus) instead of the hinge.
        swap: distance swap (Balntas et al. 2016).
        normalize: L2-normalise the three inputs first.
        reduction: ``"mean"`` (over the N triplets, default), ``"sum"``,
            ``"mean_nonzero"`` (over terms > τ, the rounding-noise
            tolerance of :mod:`refloss.reductions`) or ``"none"`` (the ``[N]`` terms).
        check: check that the inputs are finite (default True; docs/errors.md,
            "Checks and syncs").

    Returns:
        A 0-d array (``[N]`` for ``"none"``) in the namespace, device and dtype
        of ``anchor``. An empty batch gives 0.

    Differences from ``torch.nn.functional.triplet_margin_loss``: no epsilon
    is added to the differences (d(x, x) = 0 exactly), and the hinge's
    gradient at exactly 0 is 0 (torch's ``clamp_min`` passes 1).

    References:
        Schroff, Kalenichenko, Philbin. FaceNet. CVPR 2015. Hermans, Beyer,
        Leibe. In Defense of the Triplet Loss. 2017 (soft margin). Balntas,
        Riba, Ponsa, Mikolajczyk. Learning local feature descriptors with
        triplets and shallow convolutional neural networks. BMVC 2016 (swap).
    """
    return _triplet_fwd(
        anchor, positive, negative, margin=margin, metric=metric, soft=soft,
        swap=swap, normalize=normalize, reduction=reduction, check=check,
    )[0]


# --------------------------------------------------------------------------
# batch-hard


def _batch_hard_fwd(
    x, labels, *, margin=1.0, metric="euclidean", soft=False, normalize=False,
    reduction="mean", anchor_as_positive=False, check=True, anchor_rows=None,
):
    xp, dtype, margin, d, eres, labels, _ = _labeled_forward(
        x, labels, margin, metric, soft, normalize, reduction, check,
        anchor_rows=anchor_rows,
    )
    check_bool("anchor_as_positive", anchor_as_positive)
    offset = 0 if anchor_rows is None else int(anchor_rows[0])
    b = d.shape[0]
    if b == 0:
        return _empty(xp, x, d, reduction, (0,))
    sel = BatchHard(xp, d, labels, anchor_as_positive=anchor_as_positive, offset=offset)
    z = _argument(sel.d_ap, sel.d_an, margin, soft)
    terms = xp.where(sel.valid, _hinge(xp, z, soft), 0.0)
    tol = _tol(xp, reduction, d, margin, soft)
    count = xp.count_nonzero(sel.valid) if anchor_rows is None else _batch_count(
        xp, labels, "hard", anchor_as_positive=anchor_as_positive)
    value, rres = _reduce(xp, terms, reduction, count, tol)
    res = (xp, dtype, (eres, sel, z, soft, terms, rres, (offset, d.shape[1])))
    return xp.astype(value, dtype, copy=False), res


def _batch_hard_bwd(residuals, g):
    xp, dtype, res = residuals
    if not isinstance(res, tuple):  # empty batch
        return res, None
    eres, sel, z, soft, terms, rres, (offset, n) = res
    w = reduce_backward(xp, rres, g, terms)
    w = xp.where(sel.valid, w * _hinge_grad(xp, z, soft), 0.0)
    cols = xp.arange(n, dtype=sel.pos.dtype, device=_device(terms))
    own = cols[offset : offset + terms.shape[0]]  # each anchor's own column
    # +w at (a, p_a), -w at (a, n_a): p_a != n_a, so two nested wheres; the
    # anchor as its own positive (p_a = a, anchor_as_positive) has the
    # constant distance 0 and gets nothing
    gd = xp.where(cols[None, :] == sel.neg[:, None], -w[:, None], 0.0)
    hit = (cols[None, :] == sel.pos[:, None]) & (cols[None, :] != own[:, None])
    gd = xp.where(hit, w[:, None], gd)
    gx = embed_backward(xp, eres, gd)
    return xp.astype(gx, dtype), None


@defvjp(_batch_hard_fwd, _batch_hard_bwd)
def batch_hard_triplet_loss(
    x: Any,
    labels: Any,
    *,
    margin: float = 1.0,
    metric: str = "euclidean",
    soft: bool = False,
    normalize: bool = False,
    reduction: str = "mean",
    anchor_as_positive: bool = False,
    check: bool = True,
    anchor_rows: tuple[int, int] | None = None,
) -> Any:
    r"""Batch-hard triplet loss (Hermans et al. 2017): one term per valid anchor.

    .. math:: l_a = \bigl[\max_{p} d_{ap} - \min_{n} d_{an} + m\bigr]_+
       \quad\text{(soft: } \mathrm{softplus}(\max_p d_{ap} - \min_n d_{an})\text{)}

    over positives :math:`p \ne a`, :math:`y_p = y_a`, and negatives
    :math:`y_n \ne y_a`. An anchor is *valid* when it has at least one
    positive and one negative; invalid anchors give no term and are not
    counted. Ties in the max/min go to the lowest index (see
    :func:`refloss.mine_batch_hard`, whose triplets give the same loss through
    :func:`refloss.triplet_margin_loss`).

    Gradient: with :math:`w_a` the upstream weight of term a times the hinge's
    derivative (0 for invalid anchors), :math:`G = \partial L/\partial D` has
    :math:`G_{a p_a} = w_a` and :math:`G_{a n_a} = -w_a` — built as
    ``w[:, None] * (onehot(p) - onehot(n))``, no scatter — then the
    distance VJP. Only the selected pairs receive gradient.

    ``anchor_as_positive=True`` is the re-identification convention where the
    positive mask is ``labels == labels.T`` *including* the diagonal: the
    anchor is one of its own positives, at distance exactly 0, so
    :math:`\max_p d_{ap}` runs over :math:`\{a\} \cup` positives (ties to
    the lowest index, the anchor itself being index a). Every anchor with a
    negative is then valid; one whose class has no other sample contributes
    :math:`[0 - \min_n d_{an} + m]_+` (soft: :math:`\mathrm{softplus}(-\min_n
    d_{an})`), whose gradient reaches its hardest negative only (the
    self-distance is a constant).

    Args:
        x: ``[B, D]`` floating embeddings.
        labels: ``[B]`` integer labels.
        margin: :math:`m \ge 0` (ignored when ``soft``).
        metric: ``"euclidean"`` (default), ``"sqeuclidean"`` or ``"cosine"``.
        soft: soft margin (Hermans et al.) instead of the hinge.
        normalize: L2-normalise the embeddings first.
        reduction: ``"mean"`` over valid anchors (default; 0 when there is
            none), ``"sum"``, ``"mean_nonzero"`` (over terms > τ, the rounding-noise
            tolerance of :mod:`refloss.reductions`), or
            ``"none"``: the ``[B]`` terms, **0 for invalid anchors**.
        anchor_as_positive: count the anchor as its own positive (distance
            0), default False.
        check: check that ``x`` is finite (default True; docs/errors.md,
            "Checks and syncs").
        anchor_rows: None (default: every row is an anchor) or
            ``(start, stop)``: only the anchors start..stop-1, against the
            whole batch ("Anchor blocks" in :mod:`refloss.triplet`).

    Returns:
        A 0-d array (``[B]`` for ``"none"``) in the namespace, device and
        dtype of ``x``.

    Unlike TensorFlow Addons' ``triplet_hard_loss`` and omoindrot's version,
    anchors without a positive or a negative are not counted (they are in
    theirs, with a made-up positive distance 0); see ``refloss.compat``.

    References:
        Hermans, Beyer, Leibe. In Defense of the Triplet Loss for Person
        Re-Identification. arXiv:1703.07737, 2017.
    """
    return _batch_hard_fwd(
        x, labels, margin=margin, metric=metric, soft=soft, normalize=normalize,
        reduction=reduction, anchor_as_positive=anchor_as_positive, check=check,
        anchor_rows=anchor_rows,
    )[0]


# --------------------------------------------------------------------------
# semi-hard


def _semihard_fwd(
    x, labels, *, margin=1.0, metric="euclidean", normalize=False, reduction="mean",
    check=True, anchor_rows=None,
):
    xp, dtype, margin, d, eres, labels, width = _labeled_forward(
        x, labels, margin, metric, False, normalize, reduction, check,
        table=True, anchor_rows=anchor_rows,
    )
    offset = 0 if anchor_rows is None else int(anchor_rows[0])
    b = d.shape[0]
    if b == 0:
        return _empty(xp, x, d, reduction, (0, d.shape[1]))
    count = None if anchor_rows is None else _batch_count(xp, labels, "semihard")
    if width is not None:
        # positives from the B×W table, negatives by value: one value sort;
        # "none" too (its B×B terms spread from the table at the end: the
        # dense selection would hold int64 B×B sort orders and slots)
        tab = PositiveTable(xp, d, labels, width=width, offset=offset)
        pos, neg, _ = label_masks(xp, labels, d, offset)
        valid, d_an, tied, n_star = _semihard_compact(xp, d, neg, tab)
        z = _argument(tab.d, d_an, margin, False)
        terms = xp.where(valid, _hinge(xp, z, False), 0.0)
        if reduction == "none":
            terms = tab.to_dense(xp, terms, pos)
        value, rres = _reduce(
            xp, terms, reduction, xp.count_nonzero(valid) if count is None else count,
            _tol(xp, reduction, d, margin, False),
        )
        del terms
        active = valid & (z > 0)
        # a tied n* matters only where its term is active (non-zero weight)
        tied = None if tied is None else tied & active
        # the masks and the table are rebuilt in the backward (cheap), so
        # that they are not held through the distance VJP (peak memory)
        sel = (width, d_an, tied, (labels, offset), n_star)
        res = (xp, dtype, (eres, d, sel, active, rres))
        return xp.astype(value, dtype, copy=False), res
    sel = SemiHard(xp, d, labels, offset=offset)
    z = _argument(d, sel.d_an, margin, False)
    terms = xp.where(sel.valid, _hinge(xp, z, False), 0.0)
    tol = _tol(xp, reduction, d, margin, False)
    count = xp.count_nonzero(sel.valid) if count is None else count
    value, rres = _reduce(xp, terms, reduction, count, tol)
    active = sel.valid & (z > 0)
    del z
    # the backward needs the sorted order, not d_an* (one B×B float less)
    order = SimpleNamespace(order=sel.order, sorted_neg=sel.sorted_neg, n_neg=sel.n_neg,
                            fallback=sel.fallback, valid=sel.valid)
    del sel
    res = (xp, dtype, (eres, d, order, active, rres))
    return xp.astype(value, dtype, copy=False), res


def _semihard_compact(xp, d, neg, tab):
    r"""``(valid, d_an*, tied, n*)`` on the B×W positive table, from sorted negative values.

    The semi-hard negative's distance is the first sorted negative value
    strictly above d_ap (``searchsorted`` side "right"), else the largest.
    For classes wider than the loop width: on the host libraries ``tied``
    (B×W) marks the pairs whose d_an* is shared by more than one negative,
    where n* must be chosen by index (the lowest), and n* is None; elsewhere
    (and on NumPy float32, whose stable order costs about two value sorts:
    :func:`~refloss.mining.stable_row_sort`) ``tied`` is None and n* (B×W)
    is the lowest-index negative at d_an*, read off a stable sort (the first
    of its run of equal values), so that the backward needs no count read
    back and no row-wise search (:func:`_semihard_grad_compact`).
    Rows are independent: the sorts run in a few row blocks
    (:func:`~refloss._ops.row_ranges`), so no B×B sorted array or order is ever held
    whole (peak memory, and on the CPU fewer fresh B×B allocations).
    """
    with_order = tab.width > _LOOP_WIDTH and (
        not _checks.reads_are_cheap(xp) or packs_rows(xp, d)
    )
    # per-row quantities once, outside the blocks (ops per call)
    n_neg = xp.count_nonzero(neg, axis=1)
    last = _ops.clip(xp, n_neg - 1, 0, None)  # n_neg <= B: the upper bound holds
    valid = tab.valid & (n_neg > 0)[:, None]
    blocks = [
        _semihard_compact_rows(
            xp, d[r0:r1, :], neg[r0:r1, :], tab.d[r0:r1, :], valid[r0:r1, :],
            n_neg[r0:r1, None], last[r0:r1, None], tab.width, with_order,
        )
        for r0, r1 in _ops.row_ranges(d, d.shape[0], d.shape[1])
    ]
    return tuple(
        None if blocks[0][i] is None else _concat_rows(xp, [blk[i] for blk in blocks])
        for i in range(4)
    )


def _semihard_compact_rows(xp, d, neg, tab_d, valid, n_neg, last, width, with_order):
    """:func:`_semihard_compact` on a block of rows (``tab_d``, ``valid`` the
    table's rows, ``n_neg`` and ``last`` = max(n_neg - 1, 0) as columns)."""
    if packs_rows(xp, d):
        return semihard_by_buckets(d, neg, tab_d, valid)
    b = d.shape[1]  # the columns: positions in a sorted row
    order = None
    if with_order:
        sorted_neg, order = stable_row_sort(xp, xp.where(neg, d, float("inf")))
    else:
        # values only: an unstable sort gives the same array, several times faster
        sorted_neg = xp.sort(xp.where(neg, d, float("inf")), axis=1, stable=False)
    largest = xp.take_along_axis(sorted_neg, last, axis=1)
    slot = row_searchsorted(xp, sorted_neg, tab_d, side="right")
    above = xp.take_along_axis(sorted_neg, _ops.clip(xp, slot, None, b - 1), axis=1)
    d_an = xp.where(valid, xp.where(slot < n_neg, above, largest), 0.0)
    tied, n_star = None, None
    if order is not None:
        first = row_searchsorted(xp, sorted_neg, d_an, side="left")
        n_star = xp.take_along_axis(order, _ops.clip(xp, first, None, b - 1), axis=1)
    elif width > _LOOP_WIDTH:
        first = row_searchsorted(xp, sorted_neg, d_an, side="left")
        after = row_searchsorted(xp, sorted_neg, d_an, side="right")
        tied = valid & (after - first > 1)
    return valid, d_an, tied, n_star


def _semihard_grad_compact(xp, d, tab, masks, d_an, weights, tied, labels, n_star=None,
                           scale=None):
    r"""``G = scale · ∂L/∂D`` for the table path (row blocks,
    :class:`~refloss._ops.RowBlocks`, or one array): +W_ap at (a, p), and
    -W_ap at (a, n*), n* the lowest-index negative at distance d_an*.

    Up to the loop width, n* is found by index for every table column
    (:func:`_by_index_rows`). Where the forward kept n* (wide classes off
    the host libraries, and NumPy float32), the weights are summed by n*:
    one ``numpy.add.at`` on NumPy (:func:`~refloss.mining.sum_by_column`), else
    by value with the column index as the value. Other wide classes match by value: where
    d_an* is held by one negative only, n* is *the* negative at that
    distance (:func:`_by_value_rows`); the few pairs whose d_an* is
    shared by several negatives (exact float ties, common in float32 at
    large B) are then found by index, one pass per distinct tied value of
    the row that has the most (:func:`_distinct_tied_values`). When some
    row has more than ``_TIED_PASSES`` of them, the dense sorted-order path
    is cheaper. ``masks(r0, r1)`` gives the positive and negative masks of
    rows r0..r1-1: made per block where nothing needs them whole (peak memory).
    """
    by_count = n_star is not None and is_numpy_namespace(xp)
    pos = neg = None
    if not by_count:  # these paths index the masks across rows
        pos, neg = masks(0, d.shape[0])
    if by_count:
        # n* known per pair: the weights summed by n* in one scatter-add
        b = d.shape[1]
        parts = [lambda r0, r1: sum_by_column(n_star[r0:r1, :], weights[r0:r1, :], b)]
    elif tab.width <= _LOOP_WIDTH:
        parts = [_by_index_rows(xp, d, neg, d_an, weights)]
    elif n_star is not None:
        # n* known per pair (off the host libraries, where reading the tie
        # passes' count back would stall the backward): the weights summed
        # by n* as by value, with the column index as the value (exact in
        # floating point: n* < B)
        parts = [_by_value_rows(xp, None, neg, xp.astype(n_star, d.dtype), weights, like=d)]
    else:
        values, w_tied = _distinct_tied_values(
            xp, d_an, xp.where(tied, weights, 0.0), tied
        )
        if values.shape[1] > _TIED_PASSES:
            dense_w = tab.to_dense(xp, weights, pos)
            sel = SemiHard(xp, d, labels[0], offset=labels[1])
            return _scaled(dense_w - _semihard_negative_weights(xp, d, sel, dense_w), scale)
        parts = [_by_value_rows(xp, d, neg, d_an, xp.where(tied, 0.0, weights))]
        if values.shape[1]:
            parts.append(_by_index_rows(xp, d, neg, values, w_tied))

    def block(r0, r1):  # G's rows r0..r1-1: its B×B temporaries stay blocks
        pos_rows = masks(r0, r1)[0] if pos is None else pos[r0:r1, :]
        out = tab.to_dense(xp, weights[r0:r1, :], pos_rows)
        for rows in parts:
            out = out - rows(r0, r1)
        return out

    return _by_row_blocks(xp, block, d.shape[0], d.shape[1], d, scale=scale, joined=False)


def _distinct_tied_values(xp, values, weights, tied):
    """Per row, the distinct ``values`` flagged ``tied`` with their summed
    ``weights``, packed to the left: ``(V, W)``, both B×R with R the most
    distinct tied values of any row (past a row's own count W is 0).

    Positives that share a tied d_an* share its n*, so one index pass per
    distinct value suffices.
    """
    b = values.shape[0]
    keys, run = _sorted_runs(xp, xp.where(tied, values, float("inf")), weights)
    before = xp.full((b, 1), -float("inf"), dtype=keys.dtype, device=_device(keys))
    opens = (keys < float("inf")) & (keys != xp.concat([before, keys[:, :-1]], axis=1))
    n_runs = xp.count_nonzero(opens, axis=1)
    width = int(xp.max(n_runs)) if b else 0
    first = xp.argsort(xp.astype(opens, xp.int8), axis=1, descending=True, stable=True)
    first = first[:, :width]
    packed_w = xp.take_along_axis(xp.where(opens, run, 0.0), first, axis=1)
    return xp.take_along_axis(keys, first, axis=1), packed_w


def _sorted_runs(xp, keys, weights):
    """``(keys, run)``: each row's keys sorted (stably), and at every sorted
    position the sum of the weights from there to the end of its run of
    equal keys — so the first entry of a run holds the run's total."""
    keys, order = stable_row_sort(xp, keys)
    cw = xp.cumulative_sum(
        xp.take_along_axis(weights, order, axis=1), axis=1, include_initial=True
    )
    end = row_searchsorted(xp, keys, keys, side="right")
    return keys, xp.take_along_axis(cw, end, axis=1) - cw[:, :-1]


def _by_index_rows(xp, d, neg, values, weights):
    r"""``rows(r0, r1)``: rows r0..r1-1 of ``H[a, n] = Σ_j weights[a, j] [n = n_j(a)]``,
    n_j(a) the lowest-index negative of a at distance ``values[a, j]``: per
    column j one ``argmax`` of a B×B equality mask (ties go to the lowest
    index), then the weights summed by n_j(a) by value, with the column index
    as the value (:func:`_by_value_rows`): no B×B sum is carried through the
    loop."""
    if not values.shape[1]:
        return lambda r0, r1: xp.zeros_like(d[r0:r1, :])
    n_star = [
        xp.argmax(xp.astype(neg & (d == values[:, j : j + 1]), xp.int8), axis=1)
        for j in range(values.shape[1])
    ]
    n_star = xp.astype(xp.stack(n_star, axis=1), d.dtype)  # exact: n* < B
    return _by_value_rows(xp, None, neg, n_star, weights, like=d)


def _by_value_rows(xp, d, neg, values, weights, like=None):
    r"""``rows(r0, r1)``: rows r0..r1-1 of ``H[a, n] = Σ_j weights[a, j] [d_an = values[a, j]]``
    over the negatives.

    Each row's (value, weight) pairs are sorted by value and the weights of
    a run of equal values summed onto its first entry (prefix sums, and a
    search of each value's run end: B×W work); then one row-wise search
    (side "left") of every d_an finds the run that d_an opens, if any.
    Zero weights are left out (their value may be anything). ``d=None``
    matches the column index n instead of d_an (built per row block, shaped
    as ``like``): H then sums the weights by the negative's index.
    """
    if d is None:
        cols = xp.astype(xp.arange(like.shape[1], device=_device(like)), like.dtype)
    else:
        like = d
    b = like.shape[0]
    keys, run = _sorted_runs(xp, xp.where(weights != 0, values, float("inf")), weights)
    # one +inf column: a d_an above every value lands on it and matches nothing
    pad = xp.full((b, 1), float("inf"), dtype=keys.dtype, device=_device(like))
    keys = xp.concat([keys, pad], axis=1)
    run = xp.concat([run, xp.zeros((b, 1), dtype=run.dtype, device=_device(like))], axis=1)

    def block(r0, r1):
        if d is None:
            q = xp.zeros((r1 - r0, like.shape[1]), dtype=like.dtype, device=_device(like))
            q = q + cols[None, :]
        else:
            q = d[r0:r1, :]
        at = row_searchsorted(xp, keys[r0:r1, :], q, side="left")
        hit = neg[r0:r1, :] & (xp.take_along_axis(keys[r0:r1, :], at, axis=1) == q)
        return xp.where(hit, xp.take_along_axis(run[r0:r1, :], at, axis=1), 0.0)

    return block


def _semihard_bwd(residuals, g):
    xp, dtype, res = residuals
    if not isinstance(res, tuple):  # empty batch
        return res, None
    eres, d, sel, active, rres = res
    if isinstance(sel, tuple):
        width, d_an, tied, labels, n_star = sel
        tab = PositiveTable(xp, d, labels[0], width=width, offset=labels[1])

        def masks(r0, r1):  # the label masks of rows r0..r1-1
            return label_masks(xp, labels[0], d[r0:r1, :], labels[1] + r0)[:2]

        if rres[0] == "none":  # g is B×B, the table B×W
            g_tab = xp.take_along_axis(g, tab.members, axis=1)
            weights, scale = xp.where(active, g_tab, 0.0), None
            del g_tab
        else:
            weights, scale = _upstream(xp, rres, g, active, d.dtype)
        gd = _semihard_grad_compact(
            xp, d, tab, masks, d_an, weights, tied, labels, n_star, scale
        )
        del tab, weights
        gx = embed_backward(xp, eres, gd)
        return xp.astype(gx, dtype), None
    weights, scale = _upstream(xp, rres, g, active, d.dtype)
    gd = weights - _semihard_negative_weights(xp, d, sel, weights)
    del weights
    gd = _scaled(gd, scale)
    gx = embed_backward(xp, eres, gd)
    return xp.astype(gx, dtype), None


def _semihard_negative_weights(xp, d, sel, weights):
    r"""``H[a, n] = Σ_{p : n*_{ap} = n} W_{ap}`` without scatter, in O(B² log B).

    n*_{ap} sits at sorted position ``slot = #{negatives <= d_ap}`` (or the
    fallback slot). Sorting each anchor's positives by d_ap and prefix-summing
    their weights, the weight landing on slot j < n_neg is
    ``CW(d_ap < s_j) - CW(d_ap < s_{j-1})`` (s the sorted negatives); the rest
    (d_ap >= the largest negative) lands on the fallback slot. The inverse
    permutation of the negatives' sort maps slots back to columns.
    """
    b = d.shape[1]  # the columns (d may be a block of anchor rows)
    cols = xp.arange(b, dtype=sel.order.dtype, device=_device(d))

    def block(r0, r1):  # rows are independent: a few row blocks (peak memory)
        valid, n_neg = sel.valid[r0:r1, :], sel.n_neg[r0:r1]
        pos_d = xp.where(valid, d[r0:r1, :], float("inf"))
        sorted_p, order_p = stable_row_sort(xp, pos_d)
        del pos_d
        cw = xp.cumulative_sum(
            xp.take_along_axis(weights[r0:r1, :], order_p, axis=1), axis=1,
            include_initial=True,
        )
        del order_p
        below = row_searchsorted(xp, sorted_p, sel.sorted_neg[r0:r1, :], side="left")
        del sorted_p
        cl = xp.take_along_axis(cw, below, axis=1)  # weight of the positives with d_ap < s_j
        del below
        zero = xp.zeros((r1 - r0, 1), dtype=d.dtype, device=_device(d))
        in_range = cols[None, :] < n_neg[:, None]
        direct = xp.where(in_range, cl - xp.concat([zero, cl[:, :-1]], axis=1), 0.0)
        del in_range
        last = _ops.clip(xp, n_neg - 1, 0, b - 1)
        fall = cw[:, b] - xp.take_along_axis(cl, last[:, None], axis=1)[:, 0]
        del cl, cw
        fall = xp.where(n_neg > 0, fall, 0.0)
        hit = cols[None, :] == sel.fallback[r0:r1, None]
        by_slot = direct + xp.where(hit, fall[:, None], 0.0)
        del direct, hit
        rank = xp.argsort(sel.order[r0:r1, :], axis=1, stable=True)  # inverse permutation
        return xp.take_along_axis(by_slot, rank, axis=1)

    return _by_row_blocks(xp, block, d.shape[0], b, d)


@defvjp(_semihard_fwd, _semihard_bwd)
def semihard_triplet_loss(
    x: Any,
    labels: Any,
    *,
    margin: float = 1.0,
    metric: str = "euclidean",
    normalize: bool = False,
    reduction: str = "mean",
    check: bool = True,
    anchor_rows: tuple[int, int] | None = None,
) -> Any:
    r"""Semi-hard triplet loss (FaceNet, as TensorFlow defines it): one term per positive pair.

    For every ordered positive pair (a, p) (:math:`p \ne a`, :math:`y_p = y_a`)
    whose anchor has a negative:

    .. math:: l_{ap} = [d_{ap} - d_{an^*} + m]_+, \qquad
       n^* = \arg\min\{d_{an} : y_n \ne y_a,\ d_{an} > d_{ap}\}

    (strictly greater), and when no negative is farther than the positive,
    :math:`n^*` is the farthest negative. Ties go to the lowest index. No
    upper bound :math:`d_{ap} + m` restricts the candidates (TensorFlow
    Addons' definition; its docstring says otherwise).

    O(B² log B) time, O(B²) memory: each anchor's negatives are sorted once
    and each :math:`d_{ap}` is located by a row-wise binary search
    (:func:`refloss.mining.row_searchsorted`): :math:`n^*` is the sorted
    negative at position :math:`\#\{n : d_{an} \le d_{ap}\}`.

    Gradient: with :math:`w_{ap}` the upstream weight times :math:`[z_{ap} > 0]`,
    :math:`G_{ap} = w_{ap}` and :math:`G_{an} = -\sum_{p:\,n^*_{ap} = n} w_{ap}`.
    The second sum is computed without scatter: n* is monotone in
    :math:`d_{ap}`, so the weights landing on each sorted negative are
    differences of prefix sums over the anchor's positives sorted by distance
    (a second row-wise search), mapped back to columns by the inverse
    permutation. The choice of n* is piecewise constant, so it carries no
    gradient.

    Args:
        x: ``[B, D]`` floating embeddings.
        labels: ``[B]`` integer labels.
        margin: :math:`m \ge 0` (default 1.0, as TensorFlow Addons).
        metric: ``"euclidean"`` (default), ``"sqeuclidean"`` or ``"cosine"``.
        normalize: L2-normalise the embeddings first.
        reduction: ``"mean"`` over the counted positive pairs (default; 0 when
            there is none), ``"sum"``, ``"mean_nonzero"`` (over terms > τ, the rounding-noise
            tolerance of :mod:`refloss.reductions`), or
            ``"none"``: the ``[B, B]`` matrix of :math:`l_{ap}`, **0 where (a, p)
            is not a counted positive pair**.
        check: check that ``x`` is finite (default True; docs/errors.md,
            "Checks and syncs").
        anchor_rows: None (default) or ``(start, stop)``: only the anchors
            start..stop-1 against the whole batch ("Anchor blocks" in
            :mod:`refloss.triplet`; not with ``"mean_nonzero"``).

    Returns:
        A 0-d array (``[B, B]`` for ``"none"``) in the namespace, device and
        dtype of ``x``.

    Differences from ``tfa.losses.triplet_semihard_loss``: a batch without
    positive pairs gives 0 (TFA: NaN), and anchors without negatives give no
    term (TFA: :math:`m + d_{ap}`); see ``refloss.compat.tfa``.

    References:
        Schroff, Kalenichenko, Philbin. FaceNet: A Unified Embedding for Face
        Recognition and Clustering. CVPR 2015. TensorFlow Addons
        ``tensorflow_addons/losses/triplet.py``.
    """
    return _semihard_fwd(
        x, labels, margin=margin, metric=metric, normalize=normalize, reduction=reduction,
        check=check,
        anchor_rows=anchor_rows,
    )[0]


# --------------------------------------------------------------------------
# batch-all


def _batch_all_fwd(
    x, labels, *, margin=1.0, metric="euclidean", soft=False, normalize=False,
    reduction="mean_nonzero", pairs="ordered", check=True, anchor_rows=None,
):
    xp, dtype, margin, d, eres, labels, width = _labeled_forward(
        x, labels, margin, metric, soft, normalize, reduction, check,
        table=True, anchor_rows=anchor_rows,
    )
    _checks.check_choice("pairs", pairs, PAIRS)
    upper = pairs == "unordered"
    offset = 0 if anchor_rows is None else int(anchor_rows[0])
    b = d.shape[0]
    if b == 0:
        return _empty(xp, x, d, reduction, (0, d.shape[1]))
    pos, neg, cols = _batch_all_masks(xp, labels, d, offset, upper)
    n_pos = xp.count_nonzero(pos, axis=1)
    n_neg = xp.count_nonzero(neg, axis=1)
    n_valid = xp.sum(n_pos * n_neg) if anchor_rows is None else _batch_count(
        xp, labels, "all", upper=upper)
    # "mean_nonzero" counts the triplets with l_apn > τ, i.e. d_an < t_ap - τ
    tol = _tol(xp, reduction, d, margin, soft)
    if soft:
        # the positives as the B×W table: B·W·B triplets instead of B³
        tab = None
        if width is not None:
            tab = PositiveTable(xp, d, labels, upper=upper, width=width, offset=offset)
        terms, n_nonzero = _batch_all_soft(xp, d, pos, neg, tol, tab)
        if reduction == "none" and tab is not None:
            terms = tab.to_dense(xp, terms, pos)
        state = ("soft",)
    elif width is not None:
        # the per-pair sums in the B×W table ("none" spreads them to B×B at
        # the end: the dense path would sort B×B thresholds in the backward)
        tab = PositiveTable(xp, d, labels, upper=upper, width=width, offset=offset)
        buckets = None
        if is_numpy_namespace(xp):
            # "none" does not keep the buckets: its backward searches again
            # (its caller's B×B terms and cotangent leave no room: peak memory)
            terms, k, n_nonzero, buckets = _batch_all_by_buckets(
                xp, d, tab, neg, n_neg, margin, tol, keep=reduction != "none"
            )
        else:
            terms, k, n_nonzero = _batch_all_hinge_compact(xp, d, tab, neg, n_neg, margin, tol)
        if reduction == "none":
            terms = tab.to_dense(xp, terms, pos)
        state = (xp.astype(k, d.dtype), margin, buckets)  # exact: k <= B < 2^24
    else:
        terms, k, n_nonzero = _batch_all_hinge(xp, d, pos, neg, n_neg, cols, margin, tol)
        state = (k, margin)
    if reduction == "mean_nonzero":
        value, rres = _reduce(xp, terms, "mean", n_nonzero)
    else:
        value, rres = _reduce(xp, terms, reduction, n_valid)
    del terms
    # the masks and the table are rebuilt from the labels in the backward
    # (O(B²) cheap ops): they are not held through the distance VJP (peak memory)
    res = (xp, dtype, (eres, d, (labels, offset, upper, width), state, rres))
    return xp.astype(value, dtype, copy=False), res


def _batch_all_masks(xp, labels, d, offset, upper):
    """``(pos, neg, cols)`` of batch-all (:func:`label_masks`), the positives
    restricted to p > a for ``pairs="unordered"``."""
    pos, neg, cols = label_masks(xp, labels, d, offset)
    if upper:  # each unordered pair once, the lower index as anchor
        pos = pos & (cols[offset : offset + d.shape[0], None] < cols[None, :])
    return pos, neg, cols


def _batch_all_bwd(residuals, g):
    xp, dtype, res = residuals
    if not isinstance(res, tuple):  # empty batch
        return res, None
    eres, d, (labels, offset, upper, width), state, rres = res
    tab = None
    if width is not None:
        tab = PositiveTable(xp, d, labels, upper=upper, width=width, offset=offset)
    soft = isinstance(state[0], str)
    if tab is not None and not soft:
        k, margin, buckets = state

        def masks(r0, r1):  # G's rows r0..r1-1 only: no B×B mask is held (peak memory)
            return _batch_all_masks(xp, labels, d[r0:r1, :], offset + r0, upper)[:2]

        if rres[0] == "none":  # g is B×B, the table B×W
            weights = xp.where(tab.valid, xp.take_along_axis(g, tab.members, axis=1), 0.0)
            gd = _batch_all_hinge_grad_compact(xp, d, masks, k, margin, tab, weights)
        else:  # scalar reductions: unit weights, scaled per row block
            gd = _batch_all_hinge_grad_compact(
                xp, d, masks, k, margin, tab, scale=reduce_backward(xp, rres, g, g),
                buckets=buckets,
            )
        return xp.astype(embed_backward(xp, eres, gd), dtype), None
    pos, neg, _ = _batch_all_masks(xp, labels, d, offset, upper)
    if soft:
        if tab is not None and rres[0] == "none":  # g is B×B, the table B×W
            weights = xp.where(tab.valid, xp.take_along_axis(g, tab.members, axis=1), 0.0)
            scale = None
        else:
            weights, scale = _upstream(xp, rres, g, pos if tab is None else tab.valid, d.dtype)
        gd = _batch_all_soft_grad(xp, d, pos, neg, weights, tab)
        del weights, pos, neg, tab
        gd = _scaled(gd, scale)
        return xp.astype(embed_backward(xp, eres, gd), dtype), None
    k, margin = state
    if rres[0] == "none":
        gd = _batch_all_hinge_grad(xp, d, pos, neg, k, margin, g)
        scale = None
    else:
        gd = _batch_all_hinge_grad(xp, d, pos, neg, k, margin, None)
        scale = reduce_backward(xp, rres, g, g)
    del pos, neg, tab
    gd = _scaled(gd, scale)  # rebound: the unscaled G is freed
    gx = embed_backward(xp, eres, gd)
    return xp.astype(gx, dtype), None


def _batch_all_hinge(xp, d, pos, neg, n_neg, cols, margin, tol):
    r"""Per positive pair, ``S_ap = Σ_n [t_ap - d_an]_+`` with t = d_ap + m, k_ap
    (in the float dtype: exact below 2²⁴), and the count Σ_ap #{n : s_n < t_ap - tol}
    of terms above ``tol``.

    Sorted negatives s_0 <= s_1 <= ... of anchor a, shifted by s_0 (which
    keeps the prefix sums small and their cancellation harmless), prefix sums
    P; with k = #{n : s_n < t}: ``S = k (t - s_0) - P[k]``. Rows are
    independent: the work runs in a few row blocks (:func:`~refloss._ops.row_ranges`), so
    that its sort orders and index arrays never exist at full B×B size.
    """
    s_parts, k_parts, n_nonzero = [], [], 0
    for r0, r1 in _ops.row_ranges(d, d.shape[0], d.shape[1]):
        dr, pr, nr = d[r0:r1, :], pos[r0:r1, :], neg[r0:r1, :]
        neg_d = xp.where(nr, dr, float("inf"))
        # values only: an unstable sort gives the same array
        sorted_neg = xp.sort(neg_d, axis=1, stable=False)
        del neg_d
        first = xp.where(n_neg[r0:r1] > 0, sorted_neg[:, 0], 0.0)
        in_range = cols[None, :] < n_neg[r0:r1, None]
        shifted = xp.where(in_range, sorted_neg - first[:, None], 0.0)
        del in_range
        prefix = xp.cumulative_sum(shifted, axis=1, include_initial=True)
        del shifted
        t = dr + margin
        k = xp.where(pr, row_searchsorted(xp, sorted_neg, t, side="left"), 0)
        n_nonzero = n_nonzero + _count_above(xp, sorted_neg, t, tol, pr, k)
        del sorted_neg
        kf = xp.astype(k, d.dtype)
        s = kf * (t - first[:, None]) - xp.take_along_axis(prefix, k, axis=1)
        del k, prefix, t
        # s >= t - s_0 > 0 wherever k > 0 up to rounding; the where guards the sign
        s_parts.append(xp.where(s > 0, s, 0.0))
        k_parts.append(kf)
    return _concat_rows(xp, s_parts), _concat_rows(xp, k_parts), n_nonzero


def _count_above(xp, sorted_neg, t, tol, valid, k):
    """Σ #{n : s_n < t - tol} over the valid entries (Σ k when tol is 0)."""
    if isinstance(tol, float) and tol == 0.0:
        return xp.sum(k)
    return xp.sum(xp.where(valid, row_searchsorted(xp, sorted_neg, t - tol, side="left"), 0))


def _sorted_negatives(xp, d, neg, n_neg):
    """``(sorted_neg, first, prefix)``: each row's negative distances sorted
    (+inf past them), the smallest s_0, and the inclusive prefix sums of
    s - s_0, ``prefix[i] = Σ_{j <= i} (s_j - s_0)``: +inf past the negatives,
    where no count k = #{s < t} of a threshold t reaches (k <= n_neg)."""
    sorted_neg = xp.sort(xp.where(neg, d, float("inf")), axis=1, stable=False)
    first = xp.where(n_neg > 0, sorted_neg[:, 0], 0.0)
    prefix = xp.cumulative_sum(sorted_neg - first[:, None], axis=1)
    return sorted_neg, first, prefix


def _sum_below(xp, prefix, k):
    """``Σ_{j < k} (s_j - s_0)`` from the inclusive prefix sums (0 for k = 0)."""
    at = xp.take_along_axis(prefix, _ops.clip(xp, k - 1, 0, None), axis=1)
    return xp.where(k > 0, at, 0.0)


def _batch_all_hinge_compact(xp, d, tab, neg, n_neg, margin, tol):
    r""":func:`_batch_all_hinge` on the positive table: ``(S, k, count)``, S and k B×W.

    Only sorted *values* are needed (the sum over the k smallest negatives
    does not care which columns they are), so the row-wise work is one
    ``sort``, one ``cumulative_sum`` and B·W searches, in a few row blocks
    (:func:`~refloss._ops.row_ranges`: no B×B sorted array or prefix sum held whole).
    """
    s_parts, k_parts, n_nonzero = [], [], 0
    for r0, r1 in _ops.row_ranges(d, d.shape[0], d.shape[1]):
        sorted_neg, first, prefix = _sorted_negatives(
            xp, d[r0:r1, :], neg[r0:r1, :], n_neg[r0:r1]
        )
        t, valid = tab.d[r0:r1, :] + margin, tab.valid[r0:r1, :]
        k = xp.where(valid, row_searchsorted(xp, sorted_neg, t, side="left"), 0)
        n_nonzero = n_nonzero + _count_above(xp, sorted_neg, t, tol, valid, k)
        del sorted_neg
        s = xp.astype(k, d.dtype) * (t - first[:, None]) - _sum_below(xp, prefix, k)
        del prefix
        s_parts.append(xp.where(s > 0, s, 0.0))
        k_parts.append(k)
    return _concat_rows(xp, s_parts), _concat_rows(xp, k_parts), n_nonzero


def _batch_all_by_buckets(xp, d, tab, neg, n_neg, margin, tol, *, keep):
    r"""NumPy: :func:`_batch_all_hinge_compact` without sorting B×B:
    ``(S, k, count, buckets)``, S and k B×W.

    Each anchor's thresholds t = d_ap + m are sorted (B×W, -inf off the
    positives) and every negative falls in the bucket
    ``β_n = #{q : t_(q) <= d_an}`` (one row-wise search of B×B queries among
    W, :func:`~refloss.mining.row_searchsorted`): d_an < t_(q) exactly for
    q >= β_n. Per bucket, the number of negatives and the sum of d_an - s_0
    (s_0 the row's smallest negative) come from one set of scatter-adds
    (:func:`~refloss.mining.count_and_sum_by_key`; non-negatives go to
    bucket W, which no threshold reads); their prefix sums over the buckets
    are ``k_(q) = #{n : d_an < t_(q)}`` and ``P_(q) = Σ_{d_an < t_(q)} (d_an - s_0)``,
    so ``S_(q) = k_(q) (t_(q) - s_0) - P_(q)`` as in the sorted form. With
    ``keep`` the buckets are returned for the backward, where
    ``#{p : t_ap > d_an} = W - β_n`` needs no search (int16 where W < 2¹⁵,
    else int32; None without ``keep``).

    The count of terms above τ, ``Σ #{(p, n) : d_an < t_ap - τ}``, is Σ k
    less, for the few negatives within τ below a threshold
    (``t_(β_n) - τ <= d_an``), the thresholds q >= β_n with
    ``t_(q) - τ <= d_an``: those are searched one by one
    (:func:`~refloss.mining.search_rows_at`). O(B² log W) time, no B×B sort;
    the B×B work runs in row blocks of 2²⁰ elements (a NumPy loop: no
    kernel launches to count, and every temporary a fraction of B×B).
    """
    w = tab.width
    inf = float("inf")
    t = xp.where(tab.valid, tab.d + margin, -inf)
    sorted_t = xp.sort(t, axis=1, stable=False)
    # NumPy only: blocks of 2^20 elements whatever B (their temporaries,
    # int64 bincount keys among them, stay small: peak memory and cache)
    step = max(1, (1 << 20) // max(d.shape[1], 1))
    blocks = [(r0, min(r0 + step, d.shape[0])) for r0 in range(0, d.shape[0], step)]
    lowest = [xp.min(xp.where(neg[r0:r1, :], d[r0:r1, :], inf), axis=1) for r0, r1 in blocks]
    first = xp.where(n_neg > 0, _concat_rows(xp, lowest), 0.0)
    del lowest
    near_zero = not (isinstance(tol, float) and tol == 0.0)
    if near_zero:  # t - τ, and +inf at bucket W (no threshold above the last)
        cut = xp.concat([sorted_t - tol, xp.full_like(sorted_t[:, :1], inf)], axis=1)
    bucket_dtype = xp.int16 if w < (1 << 15) else xp.int32
    # B×W, in the float dtype (counts exact below 2^24 > B), filled per block
    k_sorted = xp.empty(sorted_t.shape, dtype=d.dtype)
    p_sorted = xp.empty(sorted_t.shape, dtype=d.dtype)
    excess = n_terms = 0
    # filled block by block (no list of blocks joined at the end: peak memory)
    kept = xp.empty(d.shape, dtype=bucket_dtype) if keep else None
    for r0, r1 in blocks:
        dr = d[r0:r1, :]
        beta = row_searchsorted(xp, sorted_t[r0:r1, :], dr, side="right", narrow=True)
        beta = xp.where(neg[r0:r1, :], beta, w)
        keys = row_keys(beta, w + 1)
        count, total = count_and_sum_by_key(keys, dr - first[r0:r1, None], (r1 - r0) * (w + 1))
        below = xp.cumulative_sum(xp.reshape(count, (r1 - r0, w + 1))[:, :w], axis=1)
        n_terms = n_terms + xp.sum(below)  # in integers: Σk passes 2^24
        k_sorted[r0:r1, :] = below
        p_sorted[r0:r1, :] = xp.cumulative_sum(xp.reshape(total, (r1 - r0, w + 1))[:, :w], axis=1)
        del count, total, below
        if near_zero:
            flat_d = xp.reshape(dr, (-1,))
            (near,) = xp.nonzero(xp.take(xp.reshape(cut[r0:r1, :], (-1,)), keys) <= flat_d)
            if near.shape[0]:
                rows = near // d.shape[1] + r0
                at = search_rows_at(cut, rows, xp.take(flat_d, near), "right")
                excess = excess + xp.sum(at - xp.astype(xp.take(keys, near) % (w + 1), at.dtype))
            del near, flat_d
        del keys
        if keep:
            kept[r0:r1, :] = beta
        del beta
    if near_zero:
        del cut
    # k = 0 at the -inf thresholds: a 0 there instead of 0·inf
    gap = xp.where(k_sorted > 0, sorted_t - first[:, None], 0.0)
    s = k_sorted * gap - p_sorted
    del gap, p_sorted
    s = xp.where(s > 0, s, 0.0)  # s >= 0 up to rounding
    # each threshold's place among the sorted ones (equal thresholds have
    # equal k and S: no bucket lies between them)
    place = row_keys(row_searchsorted(xp, sorted_t, t, side="left", narrow=True), w)
    # flat takes: one set of keys, about 0.4x the time of take_along_axis
    k = xp.reshape(xp.take(xp.reshape(k_sorted, (-1,)), place), t.shape)
    s = xp.reshape(xp.take(xp.reshape(s, (-1,)), place), t.shape)
    del place, k_sorted, sorted_t, t
    n_nonzero = n_terms - excess
    return s, k, n_nonzero, kept


def _batch_all_hinge_grad_compact(xp, d, masks, k, margin, tab, weights=None, scale=None,
                                  buckets=None):
    r"""``G_ap = W_ap k_ap`` and ``G_an = -Σ_{p : d_ap + m > d_an} W_ap`` over the
    B×W table, times ``scale`` (None: 1), as row blocks
    (:class:`~refloss._ops.RowBlocks`; ``masks(r0, r1)`` the blocks'
    positive and negative masks), W the upstream weights (``weights``,
    B×W and 0 off the positives, for "none"; 1 for a scalar reduction,
    ``weights`` None) — with unit weights and the forward's ``buckets``
    β_n = #{t <= d_an} (:func:`_batch_all_by_buckets`) the count is W - β_n;
    else W passes of a comparison for small classes, or a row-wise search of
    every d_an among the sorted thresholds, with prefix sums of their
    weights (``Σ_{t > d_an} W = CW[W] - CW[#{t <= d_an}]``)."""
    dt = d.dtype
    kw = xp.astype(k, dt) if weights is None else weights * xp.astype(k, dt)
    if buckets is not None and weights is None:
        # the forward set β = W off the negatives, so -(W - β) is already 0
        # there: no negative mask and no where of its own (B×B passes)
        kws = _scaled(kw, scale)

        def joined(r0, r1):
            pos = masks(r0, r1)[0]
            g_an = _scaled(xp.astype(buckets[r0:r1, :], dt) - tab.width, scale)
            return tab.to_dense(xp, kws[r0:r1, :], pos, fill=g_an)

        return _by_row_blocks(xp, joined, d.shape[0], d.shape[1], d, joined=False)
    t = xp.where(tab.valid, tab.d + margin, -float("inf"))
    if tab.width <= _LOOP_WIDTH:

        def above(r0, r1):
            dr, total = d[r0:r1, :], None
            for j in range(tab.width):
                hit = t[r0:r1, j : j + 1] > dr
                if weights is None:
                    term = xp.astype(hit, dt)
                else:
                    term = xp.where(hit, weights[r0:r1, j : j + 1], 0.0)
                total = term if total is None else total + term
            return xp.zeros_like(dr) if total is None else total

    elif weights is None:
        sorted_t = xp.sort(t, axis=1, stable=False)

        def above(r0, r1):  # int32 counts: half the memory of the block's int64 ones
            at_most = row_searchsorted(
                xp, sorted_t[r0:r1, :], d[r0:r1, :], side="right", narrow=True
            )
            return tab.width - xp.astype(at_most, dt)

    else:
        sorted_t, order_t = stable_row_sort(xp, t)
        cw = xp.cumulative_sum(
            xp.take_along_axis(weights, order_t, axis=1), axis=1, include_initial=True
        )
        del order_t

        # int32 counts where take_along_axis takes them (torch's gather wants int64)
        narrow = not is_torch_namespace(xp)

        def above(r0, r1):
            at_most = row_searchsorted(
                xp, sorted_t[r0:r1, :], d[r0:r1, :], side="right", narrow=narrow
            )
            cr = cw[r0:r1, :]
            return cr[:, tab.width][:, None] - xp.take_along_axis(cr, at_most, axis=1)

    def block(r0, r1):  # G's rows r0..r1-1: its B×B temporaries stay blocks
        pos, neg = masks(r0, r1)
        g_an = xp.where(neg, above(r0, r1), 0.0)
        return tab.to_dense(xp, kw[r0:r1, :], pos) - g_an

    return _by_row_blocks(xp, block, d.shape[0], d.shape[1], d, scale=scale, joined=False)


def _by_row_blocks(xp, block, rows, width, like, *, scale=None, joined=True):
    """``concat([scale * block(r0, r1), ...])`` over :func:`~refloss._ops.row_ranges`
    (``scale`` None: 1), or with ``joined=False`` the blocks made on demand,
    :class:`~refloss._ops.RowBlocks`: the index arrays of a row-wise search
    (int64, twice a float32) then never exist at full B×B size (peak
    memory), and the number of blocks does not grow with B."""
    blocks = _ops.RowBlocks(
        _ops.row_ranges(like, rows, width), lambda r0, r1: _scaled(block(r0, r1), scale)
    )
    return blocks.whole(xp) if joined else blocks


def _batch_all_hinge_grad(xp, d, pos, neg, k, margin, g):
    r"""``G_ap = W_ap k_ap`` and ``G_an = -Σ_{p : t_ap > d_an} W_ap``, W the
    upstream weights: ``g`` on the positives for "none" (``g`` B×B), else 1
    (``g`` None; the caller scales G).

    The second sum: sort each anchor's thresholds t_ap (non-positives at
    -inf, weight 0), prefix-sum their weights CW, and count with a row-wise
    search (side "right") how many thresholds are <= d_an:
    ``Σ_{t > d_an} W = CW[B] - CW[#{t <= d_an}]``. In row blocks, as the forward.
    """
    b = d.shape[1]  # the columns (d may be a block of anchor rows)
    parts = []
    for r0, r1 in _ops.row_ranges(d, d.shape[0], b):
        dr, pr = d[r0:r1, :], pos[r0:r1, :]
        if g is None:
            weights = xp.astype(pr, d.dtype)
        else:
            weights = xp.where(pr, g[r0:r1, :], 0.0)
        thresholds = xp.where(weights != 0, dr + margin, -float("inf"))
        sorted_t, order_t = stable_row_sort(xp, thresholds)
        del thresholds
        cw = xp.cumulative_sum(
            xp.take_along_axis(weights, order_t, axis=1), axis=1, include_initial=True
        )
        del order_t
        at_most = row_searchsorted(xp, sorted_t, dr, side="right")
        del sorted_t
        above = cw[:, b][:, None] - xp.take_along_axis(cw, at_most, axis=1)
        del at_most, cw
        parts.append(weights * k[r0:r1, :] - xp.where(neg[r0:r1, :], above, 0.0))
        del weights, above
    return _concat_rows(xp, parts)


def _soft_blocks(like, rows, per_row):
    """Anchor blocks ``[(a0, a1), ...]`` of at most :func:`~refloss._ops.block_elements`
    triplets (``per_row`` triplets per anchor), at least one anchor each."""
    per = max(1, _ops.block_elements(like, like.shape[0] * like.shape[1]) // max(per_row, 1))
    return [(s, min(s + per, rows)) for s in range(0, rows, per)]


def _soft_candidates(xp, d, pos, neg, tab, a0, a1):
    """``(z, valid)`` of the triplets of anchors a0..a1-1: z = d_ap - d_an.

    With the positive table ``tab`` the positives are its W columns (rows ×
    W × B), else every column (rows × B × B)."""
    if tab is None:
        da = d[a0:a1, :]
        return da[:, :, None] - da[:, None, :], pos[a0:a1, :, None] & neg[a0:a1, None, :]
    z = tab.d[a0:a1, :, None] - d[a0:a1, None, :]
    return z, tab.valid[a0:a1, :, None] & neg[a0:a1, None, :]


def _batch_all_soft(xp, d, pos, neg, tol, tab):
    r"""``S_ap = Σ_n softplus(d_ap - d_an)`` over valid triplets and the
    number of those terms > ``tol``: ``(S, count)``, S B×W on the positive
    table ``tab`` (B×B without one).

    A sum of softplus has no O(B²) closed form (unlike the hinge's prefix
    sums): the B·W·B triplets are evaluated in a few large anchor blocks
    (:func:`_soft_blocks`), each holding a fraction of one B×B matrix.
    """
    width = d.shape[1] if tab is None else tab.width
    parts = []
    n_nonzero = 0
    for a0, a1 in _soft_blocks(d, d.shape[0], width * d.shape[1]):
        z, valid = _soft_candidates(xp, d, pos, neg, tab, a0, a1)
        sp = xp.where(valid, _softplus(xp, z), 0.0)
        del z, valid
        parts.append(xp.sum(sp, axis=2))
        n_nonzero = n_nonzero + xp.count_nonzero(sp > tol)
        del sp
    return _concat_rows(xp, parts), n_nonzero


def _batch_all_soft_grad(xp, d, pos, neg, weights, tab):
    """``G_ap = W_ap Σ_n σ(z_apn)`` and ``G_an = -Σ_p W_ap σ(z_apn)`` in anchor
    blocks; ``weights`` (and G_ap) B×W on the positive table ``tab``."""
    width = d.shape[1] if tab is None else tab.width
    g_ap, g_an = [], []
    for a0, a1 in _soft_blocks(d, d.shape[0], width * d.shape[1]):
        z, valid = _soft_candidates(xp, d, pos, neg, tab, a0, a1)
        sg = xp.where(valid, _sigmoid(xp, z), 0.0)
        del z, valid
        wa = weights[a0:a1, :]
        g_ap.append(wa * xp.sum(sg, axis=2))
        g_an.append(xp.sum(wa[:, :, None] * sg, axis=1))
        del sg
    g_ap = _concat_rows(xp, g_ap)
    if tab is not None:
        g_ap = tab.to_dense(xp, g_ap, pos)
    return g_ap - _concat_rows(xp, g_an)


def _concat_rows(xp, parts):
    return xp.concat(parts, axis=0) if len(parts) > 1 else parts[0]


@defvjp(_batch_all_fwd, _batch_all_bwd)
def batch_all_triplet_loss(
    x: Any,
    labels: Any,
    *,
    margin: float = 1.0,
    metric: str = "euclidean",
    soft: bool = False,
    normalize: bool = False,
    reduction: str = "mean_nonzero",
    pairs: str = "ordered",
    check: bool = True,
    anchor_rows: tuple[int, int] | None = None,
) -> Any:
    r"""Batch-all triplet loss: every valid triplet (a, p, n) of a labeled batch.

    .. math:: L = \sum_{a}\sum_{p \ne a,\, y_p = y_a}\ \sum_{n:\, y_n \ne y_a}
       [d_{ap} - d_{an} + m]_+ \quad\text{(soft: } \mathrm{softplus}(d_{ap} - d_{an})\text{)}

    Hinge: O(B² log B) time and O(B²) memory, never a list of triplets. Each
    anchor's negative distances are sorted once (with prefix sums P of the
    sorted values); for each positive, with :math:`t = d_{ap} + m` and
    :math:`k = \#\{n : d_{an} < t\}` found by a row-wise binary search,
    :math:`\sum_n [t - d_{an}]_+ = k\,t - P[k]`. Gradient:
    :math:`\partial L/\partial d_{ap} = w\,k_{ap}` and
    :math:`\partial L/\partial d_{an} = -w\,\#\{p : t_{ap} > d_{an}\}` (a second
    search over the anchor's sorted thresholds; weighted prefix sums for
    ``"none"``). Soft margin: a sum of softplus has no such shortcut; the
    B·W·B triplets (W the largest class, the positives taken from the
    class-sorted table of :class:`refloss.mining.PositiveTable`; B³ under
    ``jax.jit``, where the table is unavailable) are evaluated in anchor
    blocks of at most max(B²/4, 2²²) triplets (2²⁴ on an accelerator):
    O(B²·W) time, O(B²) memory, and about 4·W blocks, so the op count grows
    with the class width (≈ 20 ops per block; 2,387 ops per call at
    B = 4096 with 4 per class, against 53,411 at B = 1024 before).

    ``pairs="unordered"`` counts each unordered positive pair {a, p} once,
    with the lower index as anchor (a < p: the ``triu`` mask of many
    implementations): the sums above run over p > a only, the positive
    mask is restricted to the upper triangle before anything else, and the
    same algorithm, gradient and reductions apply to that smaller set
    ("mean" then divides by :math:`\sum_a \#\{p > a\}\,\#neg(a)`).

    Args:
        x: ``[B, D]`` floating embeddings.
        labels: ``[B]`` integer labels.
        margin: :math:`m \ge 0` (ignored when ``soft``).
        metric: ``"euclidean"`` (default), ``"sqeuclidean"`` or ``"cosine"``.
        soft: soft margin instead of the hinge.
        normalize: L2-normalise the embeddings first.
        reduction: ``"mean_nonzero"`` (default: the sum over the number of
            triplets whose term is > τ = 16 ε (margin + max d), rounding
            noise left out (:mod:`refloss.reductions`) — for the hinge,
            :math:`\sum_{ap} \#\{n: d_{an} < t_{ap} - \tau\}`; Hermans et
            al.'s :math:`L_{BA\ne0}`, pytorch-metric-learning's
            AvgNonZeroReducer up to τ), ``"mean"`` (over all
            valid triplets, :math:`\sum_a \#pos(a)\,\#neg(a)`), ``"sum"``, or
            ``"none"``: the ``[B, B]`` matrix of per-pair sums
            :math:`S_{ap} = \sum_n l_{apn}` (**0 where (a, p) is not a
            positive pair**), whose total is the ``"sum"`` value.
            No valid (or no non-zero) triplet gives 0.
        pairs: ``"ordered"`` (default: every positive pair (a, p), p ≠ a) or
            ``"unordered"`` (only a < p; ``"none"`` is then upper triangular).
        check: check that ``x`` is finite (default True; docs/errors.md,
            "Checks and syncs").
        anchor_rows: None (default) or ``(start, stop)``: only the anchors
            start..stop-1 against the whole batch ("Anchor blocks" in
            :mod:`refloss.triplet`; not with ``"mean_nonzero"``).

    Returns:
        A 0-d array (``[B, B]`` for ``"none"``) in the namespace, device and
        dtype of ``x``.

    References:
        Hermans, Beyer, Leibe. In Defense of the Triplet Loss for Person
        Re-Identification. 2017 (batch-all, :math:`L_{BA\ne0}`). omoindrot's
        ``batch_all_triplet_loss`` forms the O(B³) tensor instead.
    """
    return _batch_all_fwd(
        x, labels, margin=margin, metric=metric, soft=soft, normalize=normalize,
        reduction=reduction, pairs=pairs, check=check, anchor_rows=anchor_rows,
    )[0]
