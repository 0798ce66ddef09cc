r"""Contrastive loss (Hadsell, Chopra, LeCun 2006), paired and over every pair of a batch.

Per pair, with :math:`d` the distance under ``metric`` and ``same`` a boolean
("the two embeddings should be close"):

.. math::

    l = \mathrm{same}\cdot[d - m_+]_+^{\,p}
        + (1 - \mathrm{same})\cdot[m - d]_+^{\,p},
    \qquad p \in \{1, 2\},

where :math:`m_+` is ``pos_margin`` (default 0), :math:`m` is ``margin``
(default 1) and :math:`[z]_+ = \max(z, 0)`. Its derivative with respect to
the distance is

.. math::

    \frac{\partial l}{\partial d}
      = \mathrm{same}\cdot p\,[d - m_+]_+^{\,p-1}
        - (1 - \mathrm{same})\cdot p\,[m - d]_+^{\,p-1},

with :math:`[z]_+^0` read as the indicator :math:`z > 0`: the subgradient of a
hinge at exactly 0 is 0 (relu). The gradient with respect to the embeddings
is this times :math:`\partial d/\partial(\cdot)` (see :mod:`refloss.distances`,
where the euclidean gradient at d = 0 is 0), chained through the L2
normalisation when ``normalize=True``.

Every term (and so its gradient) is multiplied by ``scale`` (default 1).

Conventions: the default (p = 2, :math:`m_+ = 0`, euclidean) is Hadsell's
:math:`D^2 + [m - D]_+^2` **without** the factor ½ (TensorFlow Addons'
``contrastive_loss`` has no ½ either); ``scale=0.5`` is Hadsell's Eq. 4
:math:`\tfrac12 D^2 + \tfrac12[m - D]_+^2` as written; p = 1 is the linear hinge of
pytorch-metric-learning's ``ContrastiveLoss``. ``same`` must be boolean: the
numeric label conventions in the wild are opposite (Hadsell: 0 = similar;
TFA, tf.contrib and Caffe: 1 = similar).

:func:`contrastive_loss_all_pairs` takes a labeled batch and uses every
unordered pair i < j, with same = (y_i == y_j), through the B×B distance
matrix and an upper-triangle mask: O(B² + B·D) memory, no scatter, no
data-dependent shapes. With ``anchor_rows=(start, stop)`` it takes only the
pairs whose lower index i is in start..stop-1 (the "anchor" of an unordered
pair), from the b×B block of distances (O(b·B)): ``"none"`` gives those
pairs in the same row-major order, ``"sum"`` their sum, ``"mean"`` their
sum over B(B−1)/2, the pairs of the whole batch, so that the blocks of a
partition of the rows add up (concatenate) to the full loss; the gradient
reaches both ends of every pair (as anchor blocks in :mod:`refloss.triplet`).
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

from array_api_compat import device as _device

from . import _checks, _ops
from .distances import (
    METRICS,
    paired_backward,
    paired_forward,
    pairwise_backward,
    pairwise_forward,
)
from .mining import block_grad
from .normalization import normalize_backward, normalize_forward
from .reductions import REDUCTIONS, nonzero_tolerance, reduce_backward, reduce_forward
from .vjp import defvjp

__all__ = ["contrastive_loss", "contrastive_loss_all_pairs"]

POWERS = (1, 2)


# --------------------------------------------------------------------------
# validation


def _check_options(margin, pos_margin, power, metric, normalize, reduction, scale):
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize: expected True or False, got {type(normalize).__name__}")
    margin = _checks.check_margin("margin", margin)
    pos_margin = _checks.check_margin("pos_margin", pos_margin)
    if isinstance(power, bool) or not isinstance(power, Integral):
        raise TypeError(f"power: expected the integer 1 or 2, got {type(power).__name__}")
    if int(power) not in POWERS:
        raise ValueError(f"power: expected 1 (linear hinge) or 2 (squared), got {power!r}")
    _checks.check_choice("metric", metric, METRICS)
    _checks.check_choice("reduction", reduction, REDUCTIONS)
    scale = _checks.check_positive("scale", scale)
    return margin, pos_margin, int(power), scale


def _check_embeddings(xp, name, a):
    _checks.check_float(xp, name, a)
    _checks.check_rank(name, a, 2, "a 2-D array (batch, dim)")


def _check_same(xp, same, rows):
    if same.dtype != xp.bool:
        raise TypeError(
            f"same: expected a boolean array (True where the pair should be close), "
            f"got {same.dtype}; numeric labels are refused because the conventions in "
            f"the wild are opposite (Hadsell 2006: 0 = similar; TensorFlow Addons, "
            f"Caffe: 1 = similar) — pass e.g. `y == 1` or `y == 0` explicitly"
        )
    if same.ndim != 1:
        raise ValueError(f"same: expected a 1-D array, got shape {tuple(same.shape)}")
    if same.shape[0] != rows:
        raise ValueError(
            f"same: expected {rows} entries (one per row of a), got {same.shape[0]}"
        )


# --------------------------------------------------------------------------
# per-term stage (compute dtype)


def _relu(xp, z):
    return xp.where(z > 0, z, 0.0)


def _own_hinge(xp, d, same, margin, pos_margin):
    """Each pair's hinge of its own branch: [d - m+]_+ for same-label pairs,
    [m - d]_+ otherwise (one temporary of the size of d at a time)."""
    return _relu(xp, xp.where(same, d - pos_margin, margin - d))


def terms_forward(xp, d, same, margin, pos_margin, power, scale=1.0):
    """Per-pair terms from distances ``d`` and the boolean ``same`` (same shape),
    each multiplied by ``scale``.

    The residuals are the options only: the backward recomputes the hinge
    from ``d``, so a B×B call keeps no B×B float beyond ``d`` itself.
    """
    h = _own_hinge(xp, d, same, margin, pos_margin)
    terms = h * h if power == 2 else h
    if scale != 1.0:  # skipped at 1: the default stays bit-identical
        terms = scale * terms
    return terms, (same, margin, pos_margin, power, scale)


def terms_backward(xp, residuals, d, w):
    """``∂L/∂d`` from the upstream weight ``w`` of each term: ±2·hinge
    (power 2) or ±[hinge > 0] (power 1), + for same-label pairs, times ``scale``."""
    same, margin, pos_margin, power, scale = residuals
    h = _own_hinge(xp, d, same, margin, pos_margin)
    h = (2.0 * scale) * h if power == 2 else scale * xp.astype(h > 0, h.dtype)
    return w * xp.where(same, h, -h)


# --------------------------------------------------------------------------
# paired


def _contrastive_fwd(
    a,
    b,
    same,
    *,
    margin=1.0,
    pos_margin=0.0,
    power=2,
    metric="euclidean",
    normalize=False,
    reduction="mean",
    scale=1.0,
    check=True,
):
    xp = _checks.namespace(a=a, b=b, same=same)
    _check_embeddings(xp, "a", a)
    _check_embeddings(xp, "b", b)
    if b.shape[1] != a.shape[1]:
        raise ValueError(f"b: expected {a.shape[1]} columns (as a), got {b.shape[1]}")
    _checks.check_same_rows("b", b, "a", a)
    if b.dtype != a.dtype:
        raise TypeError(f"b: expected the dtype of a ({a.dtype}), got {b.dtype}")
    _check_same(xp, same, a.shape[0])
    margin, pos_margin, power, scale = _check_options(
        margin, pos_margin, power, metric, normalize, reduction, scale
    )
    fetch = _checks.Fetch(xp, check=_checks.check_flag("check", check))
    fetch.finite("a", a)
    fetch.finite("b", b)
    fetch.done()  # one read for both

    dtype = a.dtype
    cdt = _checks.compute_dtype(xp, dtype)
    ac, bc = xp.astype(a, cdt), xp.astype(b, cdt)
    nres = None
    if normalize:
        ac, ares = normalize_forward(xp, ac)
        bc, bres = normalize_forward(xp, bc)
        nres = (ares, bres)
    d, dres = paired_forward(xp, ac, bc, metric)
    terms, tres = terms_forward(xp, d, same, margin, pos_margin, power, scale)
    # the terms are scaled by c, so is the rounding noise they may carry
    tol = nonzero_tolerance(xp, reduction, d, max(margin, pos_margin), power) * scale
    value, rres = reduce_forward(xp, terms, reduction, tol=tol)
    return xp.astype(value, dtype), (xp, dtype, nres, dres, d, tres, rres, terms)


def _contrastive_bwd(residuals, g):
    xp, dtype, nres, dres, d, tres, rres, terms = residuals
    w = reduce_backward(xp, rres, g, terms)
    ga, gb = paired_backward(xp, dres, terms_backward(xp, tres, d, w))
    if nres is not None:
        ga = normalize_backward(xp, nres[0], ga)
        gb = normalize_backward(xp, nres[1], gb)
    return xp.astype(ga, dtype), xp.astype(gb, dtype), None


@defvjp(_contrastive_fwd, _contrastive_bwd)
def contrastive_loss(
    a: Any,
    b: Any,
    same: Any,
    *,
    margin: float = 1.0,
    pos_margin: float = 0.0,
    power: int = 2,
    metric: str = "euclidean",
    normalize: bool = False,
    reduction: str = "mean",
    scale: float = 1.0,
    check: bool = True,
) -> Any:
    r"""Contrastive loss of explicit pairs :math:`(a_i, b_i)`.

    .. math::

        l_i = c\,\big(s_i\,[d_i - m_+]_+^{\,p} + (1 - s_i)\,[m - d_i]_+^{\,p}\big),
        \qquad d_i = d(a_i, b_i),

    with :math:`s_i` = ``same[i]``, :math:`m` = ``margin``, :math:`m_+` =
    ``pos_margin``, :math:`p` = ``power`` and :math:`c` = ``scale``; reduced
    by ``reduction``.

    Gradient (through :func:`refloss.vjp`), with :math:`w_i` the upstream
    weight of term i after the reduction:

    .. math::

        \frac{\partial L}{\partial d_i} = c\,w_i\big(s_i\,p\,[d_i - m_+]_+^{\,p-1}
            - (1 - s_i)\,p\,[m - d_i]_+^{\,p-1}\big),

    where :math:`[z]_+^0` is the indicator :math:`z > 0` (a hinge exactly at
    0 has subgradient 0), chained through :func:`refloss.paired_distances`
    (euclidean: :math:`(a_i - b_i)/d_i`, 0 at :math:`d_i = 0`) and, with
    ``normalize=True``, through :func:`refloss.l2_normalize`.
    ``"mean_nonzero"`` treats its count as a constant.

    Conventions: the default is Hadsell et al.'s
    :math:`D^2 + [m - D]_+^2` without their factor ½ (as TensorFlow Addons);
    ``scale=0.5`` is their Eq. 4 with the ½ (as the common PyTorch
    re-implementations ``0.5 * (same * d**2 + (1 - same) * relu(m - d)**2)``
    write it); ``power=1`` is pytorch-metric-learning's linear hinge (its default
    reduction, non-zero means of the positive and negative terms summed, is a
    different number from ``"mean_nonzero"`` here). ``same`` is boolean on
    purpose: Hadsell uses 0 = similar, TFA / tf.contrib / Caffe 1 = similar.
    An empty batch gives 0.

    Args:
        a: ``[B, D]`` floating embeddings.
        b: ``[B, D]`` floating embeddings, same dtype as ``a``.
        same: ``[B]`` boolean, True where the pair should be close.
        margin: :math:`m \ge 0`, the distance below which a dissimilar pair is
            pushed apart.
        pos_margin: :math:`m_+ \ge 0`, the distance above which a similar pair
            is pulled together.
        power: 2 (squared hinge, default) or 1 (linear hinge).
        metric: ``"euclidean"`` (default), ``"sqeuclidean"`` or ``"cosine"``.
        normalize: L2-normalise ``a`` and ``b`` first (gradient included).
        reduction: ``"mean"`` (default), ``"sum"``, ``"mean_nonzero"`` or
            ``"none"``.
        scale: :math:`c > 0` (finite), the factor on every term (default 1;
            0.5 for Hadsell's ½ form). ``"mean_nonzero"`` counts the same
            terms whatever the scale.
        check: check that ``a`` and ``b`` are finite (default True;
            docs/errors.md, "Checks and syncs").

    Returns:
        A 0-d array (``[B]`` for ``"none"``) in the namespace, device and
        dtype of ``a`` (float16/bfloat16 computed in float32).

    Example:
        >>> import numpy as np, refloss as rl
        >>> a = np.array([[0.0, 0.0], [0.0, 0.0]])
        >>> b = np.array([[0.3, 0.4], [0.3, 0.4]])
        >>> rl.contrastive_loss(a, b, np.array([True, False]), reduction="none")
        array([0.25, 0.25])

    References:
        Hadsell, Chopra, LeCun. Dimensionality Reduction by Learning an
        Invariant Mapping. CVPR 2006, Eq. 4. TensorFlow Addons
        ``losses/contrastive.py``; pytorch-metric-learning
        ``losses/contrastive_loss.py``.
    """
    return _contrastive_fwd(
        a,
        b,
        same,
        margin=margin,
        pos_margin=pos_margin,
        power=power,
        metric=metric,
        normalize=normalize,
        reduction=reduction,
        scale=scale,
        check=check,
    )[0]


# --------------------------------------------------------------------------
# every pair of a labeled batch


# Row blocks of the pair packing: at most this many, each of at least
# _PAIR_BLOCK_FLOOR elements, so that its int64 index arrays stay a fraction of
# one B×B float matrix (of the b×B block with anchor_rows; peak memory) and
# their number does not grow with B.
_PAIR_BLOCKS = 4
_PAIR_BLOCK_FLOOR = 1 << 22


def _pair_row_blocks(n_rows, rows=None):
    """``[(r0, r1), ...]``: row blocks of rows start..stop-1 (``rows``, default
    every row) of at most max(b·B/4, 2²²) entries, b = stop - start."""
    start, stop = (0, n_rows) if rows is None else rows
    cells = (stop - start) * n_rows
    per = max(1, max(-(-cells // _PAIR_BLOCKS), _PAIR_BLOCK_FLOOR) // max(n_rows, 1))
    return [(r0, min(r0 + per, stop)) for r0 in range(start, stop, per)]


def _pair_starts(xp, n_rows, dev):
    """Row-major rank of the first pair of each row i: s_i = i(2B - i - 1)/2."""
    idx = _checks.default_index_dtype(xp, dev)
    r = xp.arange(n_rows, dtype=idx, device=dev)
    return r, r * (2 * n_rows - r - 1) // 2


def _first_pair(n_rows, i):
    """The row-major rank s_i of row i's first pair (B(B-1)/2 for i = B)."""
    return i * (2 * n_rows - i - 1) // 2


def _pack_upper(xp, tmat, n_rows, dev, rows=None):
    r"""The entries (i, j > i) of ``tmat`` in row-major order (``[B(B-1)/2]``),
    gathered in row blocks: pair k of rows r0..r1-1 is row
    :math:`i = \#\{s \le k\} - 1` (a 1-D ``searchsorted`` in the row starts
    s) and column :math:`j = k - s_i + i + 1`. With ``rows=(start, stop)``
    ``tmat`` is the b×B block of those rows and only their pairs are packed
    (the same order, k from s_start)."""
    start = 0 if rows is None else rows[0]
    r, starts = _pair_starts(xp, n_rows, dev)
    parts = []
    for r0, r1 in _pair_row_blocks(n_rows, rows):
        k0, k1 = _first_pair(n_rows, r0), _first_pair(n_rows, r1)
        if k1 <= k0:
            continue
        k = xp.arange(k0, k1, dtype=r.dtype, device=dev)
        i = xp.searchsorted(starts, k, side="right") - 1
        j = k - xp.take(starts, i) + i + 1
        flat = (i - r0) * n_rows + j
        del k, i, j
        parts.append(xp.take(xp.reshape(tmat[r0 - start : r1 - start, :], (-1,)), flat))
    return xp.concat(parts) if len(parts) > 1 else parts[0]


def _unpack_rows(xp, w, n_rows, dev, r0, r1, origin):
    """Rows r0..r1-1 (``[r1 - r0, B]``) of the matrix holding pair k's
    ``w[k - s_origin]`` at its (i, j > i), garbage elsewhere (to be masked):
    a gather at the rank :math:`s_i + j - i - 1 - s_{origin}`."""
    r, starts = _pair_starts(xp, n_rows, dev)
    rank = starts[r0:r1, None] - _first_pair(n_rows, origin) + (r[None, :] - r[r0:r1, None] - 1)
    rank = _ops.clip(xp, rank, 0, max(w.shape[0] - 1, 0))
    return xp.reshape(xp.take(w, xp.reshape(rank, (-1,))), (r1 - r0, n_rows))


def _all_pairs_fwd(
    x,
    labels,
    *,
    margin=1.0,
    pos_margin=0.0,
    power=2,
    metric="euclidean",
    normalize=False,
    reduction="mean",
    scale=1.0,
    check=True,
    anchor_rows=None,
):
    xp = _checks.namespace(x=x, labels=labels)
    _check_embeddings(xp, "x", x)
    labels = _checks.check_labels(xp, "labels", labels, x.shape[0], "x")
    margin, pos_margin, power, scale = _check_options(
        margin, pos_margin, power, metric, normalize, reduction, scale
    )
    block = _checks.check_anchor_rows(anchor_rows, x.shape[0], reduction)
    fetch = _checks.Fetch(xp, check=_checks.check_flag("check", check))
    fetch.finite("x", x)

    dtype = x.dtype
    cdt = _checks.compute_dtype(xp, dtype)
    dev = _device(x)
    n_rows = x.shape[0]
    n_pairs = n_rows * (n_rows - 1) // 2
    xc = xp.astype(x, cdt)
    nres = None
    if normalize:
        xc, nres = normalize_forward(xp, xc)
    start, stop = (0, n_rows) if block is None else block
    if stop == start:
        # nothing to measure (and pairwise_forward's dense exact path, taken
        # for JAX arrays, does not handle an empty batch)
        dmat, dres = xp.zeros((0, n_rows), dtype=cdt, device=dev), xc
    elif block is None:
        dmat, dres = pairwise_forward(xp, xc, None, metric, fetch)
    else:  # the anchor rows' pairs only: a b×B block
        dmat, dres = pairwise_forward(xp, xc[start:stop, :], xc, metric, fetch)
    fetch.done()
    r = xp.arange(n_rows, device=dev)
    upper = r[start:stop, None] < r[None, :]
    same = labels[start:stop, None] == labels[None, :]
    tmat, tres = terms_forward(xp, dmat, same, margin, pos_margin, power, scale)
    tmat = xp.where(upper, tmat, 0.0)
    if reduction == "none":
        if _first_pair(n_rows, stop) == _first_pair(n_rows, start):  # no pair in these rows
            terms, packed = xp.zeros((0,), dtype=cdt, device=dev), False
        else:
            terms, packed = _pack_upper(xp, tmat, n_rows, dev, block), True
        value, rres = reduce_forward(xp, terms, reduction)
    else:
        packed = False
        tol = nonzero_tolerance(xp, reduction, dmat, max(margin, pos_margin), power)
        value, rres = reduce_forward(
            xp, xp.reshape(tmat, (-1,)), reduction, count=n_pairs, tol=tol
        )
        terms = xp.zeros((), dtype=cdt, device=dev)  # the per-term weight is one scalar
    del tmat, upper, same
    # the masks are rebuilt from the labels per row block in the backward:
    # not held through the distance VJP (peak memory)
    tres = (None, *tres[1:])
    res = (xp, dtype, nres, dres, dmat, tres, rres, terms, labels, packed, block)
    return xp.astype(value, dtype, copy=False), res


def _all_pairs_bwd(residuals, g):
    xp, dtype, nres, dres, dmat, tres, rres, terms, labels, packed, block = residuals
    w = reduce_backward(xp, rres, g, terms)
    n_cols = dmat.shape[1]
    dev = _device(dmat)
    start = 0 if block is None else block[0]
    if dmat.shape[0] == 0:
        gx = xp.zeros_like(dres)  # dres is the input itself (no row to measure)
    else:
        r = xp.arange(n_cols, device=dev)
        w_flat = xp.reshape(w, (-1,)) if packed else None
        parts = []
        for r0, r1 in _pair_row_blocks(n_cols, block):  # dL/dD by row blocks
            upper = r[r0:r1, None] < r[None, :]
            if packed:
                # gather, not scatter: entry (i, j > i) reads the weight of its rank
                wm = xp.where(upper, _unpack_rows(xp, w_flat, n_cols, dev, r0, r1, start), 0.0)
            elif terms.ndim == 0:  # a scalar reduction: one weight for every pair
                wm = xp.where(upper, w, 0.0)
            else:  # "none" with no pairs
                wm = xp.zeros(upper.shape, dtype=terms.dtype, device=dev)
            del upper
            same = labels[r0:r1, None] == labels[None, :]
            parts.append(terms_backward(
                xp, (same, *tres[1:]), dmat[r0 - start : r1 - start, :], wm
            ))
            del wm, same
        wmat = xp.concat(parts, axis=0) if len(parts) > 1 else parts[0]
        del parts, w_flat
        gx, gy = pairwise_backward(xp, dres, wmat)
        if block is not None:
            gx = block_grad(xp, gx, gy, block)
    if nres is not None:
        gx = normalize_backward(xp, nres, gx)
    return xp.astype(gx, dtype), None


@defvjp(_all_pairs_fwd, _all_pairs_bwd)
def contrastive_loss_all_pairs(
    x: Any,
    labels: Any,
    *,
    margin: float = 1.0,
    pos_margin: float = 0.0,
    power: int = 2,
    metric: str = "euclidean",
    normalize: bool = False,
    reduction: str = "mean",
    scale: float = 1.0,
    check: bool = True,
    anchor_rows: tuple[int, int] | None = None,
) -> Any:
    r"""Contrastive loss over every unordered pair i < j of a labeled batch.

    .. math::

        L = \mathrm{reduce}_{i<j}\; c\,\big(s_{ij}\,[d_{ij} - m_+]_+^{\,p}
            + (1 - s_{ij})\,[m - d_{ij}]_+^{\,p}\big),
        \qquad s_{ij} = (y_i = y_j),

    i.e. :func:`contrastive_loss` on the B(B−1)/2 explicit pairs
    :math:`(x_i, x_j)`, i < j, computed from the ``[B, B]`` distance matrix
    (:func:`refloss.pairwise_distances`) with an upper-triangle mask:
    O(B² + B·D) memory, no pair list.

    Reductions: ``"mean"`` divides by B(B−1)/2 (0 when B < 2), ``"sum"``,
    ``"mean_nonzero"`` divides by the number of terms above rounding noise,
    > τ = (16 ε (max(margin, pos_margin) + max d))^power (0 when there are
    none; :mod:`refloss.reductions`), and ``"none"`` returns the B(B−1)/2 terms in
    row-major order (0,1), (0,2), …, (0,B−1), (1,2), …

    Gradient (through :func:`refloss.vjp`): with :math:`w_{ij}` the upstream
    weight of pair (i, j), the matrix
    :math:`G_{ij} = w_{ij}\,\partial l/\partial d_{ij}` for i < j (0 elsewhere),
    :math:`\partial l/\partial d = c\,(s\,p\,[d - m_+]_+^{\,p-1} - (1 - s)\,p\,[m - d]_+^{\,p-1})`,
    goes through the scatter-free matrix backward of
    :func:`refloss.pairwise_distances` (and :func:`refloss.l2_normalize` with
    ``normalize=True``). A hinge exactly at 0 has subgradient 0; identical
    embeddings under euclidean get the finite subgradient 0 of d.

    Conventions as :func:`contrastive_loss` (Hadsell without ½, or with it
    through ``scale=0.5``; ``power=1`` is pytorch-metric-learning's linear
    hinge). PML counts ordered pairs
    (each twice) and reduces positives and negatives separately, so its
    default differs from every reduction here.

    Args:
        x: ``[B, D]`` floating embeddings.
        labels: ``[B]`` integer labels.
        margin, pos_margin, power, metric, normalize, scale, check: as
            :func:`contrastive_loss`.
        reduction: ``"mean"`` (default), ``"sum"``, ``"mean_nonzero"`` or
            ``"none"``.
        anchor_rows: None (default) or ``(start, stop)``: only the pairs
            (i, j), i < j, whose lower index i is in start..stop-1 (module
            docstring; not with ``"mean_nonzero"``).

    Returns:
        A 0-d array (``[B(B-1)/2]`` for ``"none"``; with ``anchor_rows`` the
        block's pairs, in the same row-major order) in the namespace, device
        and dtype of ``x``.

    Example:
        >>> import numpy as np, refloss as rl
        >>> x = np.array([[0.0, 0.0], [0.6, 0.8], [0.0, -0.5]])
        >>> rl.contrastive_loss_all_pairs(x, np.array([0, 0, 1]), reduction="none")
        array([1.  , 0.25, 0.  ])

    References:
        Hadsell, Chopra, LeCun. Dimensionality Reduction by Learning an
        Invariant Mapping. CVPR 2006. pytorch-metric-learning
        ``losses/contrastive_loss.py`` (all pairs of a labeled batch).
    """
    return _all_pairs_fwd(
        x,
        labels,
        margin=margin,
        pos_margin=pos_margin,
        power=power,
        metric=metric,
        normalize=normalize,
        reduction=reduction,
        scale=scale,
        check=check,
        anchor_rows=anchor_rows,
    )[0]
