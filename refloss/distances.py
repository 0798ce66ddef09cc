r"""Pairwise and paired distances with analytic gradients.

Metrics (``d`` between rows ``u`` and ``v``):

==============  ===============================  ====================================
metric          d(u, v)                          ∂d/∂u
==============  ===============================  ====================================
"euclidean"     :math:`\lVert u - v\rVert_2`      :math:`(u - v)/d`; 0 where d = 0
"sqeuclidean"   :math:`\lVert u - v\rVert_2^2`    :math:`2(u - v)`
"cosine"        :math:`1 - \hat u\cdot\hat v`     :math:`-P_u \hat v/\lVert u\rVert`
==============  ===============================  ====================================

with :math:`P_u = I - \hat u\hat u^\top` and :math:`\hat u = u/\lVert u\rVert`.

Conventions:

* the euclidean gradient at d = 0 is 0 (a valid subgradient): identical
  embeddings never produce NaN or inf;
* identical rows have distance exactly 0 (for cosine: identical non-zero
  rows); a zero row has no direction, so its cosine distance to every row,
  itself included, is 1 (the value ``torch.nn.functional.cosine_similarity``
  and TFA's angular distance give) and its gradient is 0 (torch's is
  ~ -ŷ/eps there);
* bit-identical rows have bit-identical distances to every row, on every
  backend and dtype: each copy's row and column of the matrix are taken from
  its lowest-index copy (a GEMM may round one dot product differently at two
  positions), so ties between copies go to the lowest index everywhere;
* every scale of the dtype: euclidean and cosine distances are right to a
  few ulps for every finite input; squared distances where the true value is
  representable, inf past the largest float;
* with ``check=False`` on a library where a read waits for the device,
  the exact recomputation has a static capacity (:func:`_refine_static`)
  and copies get their 0 from the copy search: no read at all;
* the matrix form divides all rows by one power of two (no square
  overflows or underflows), runs one GEMM on the mean-centred rows
  (distances do not change under translation, and centring removes the
  cancellation a large common offset would cause), then recomputes exactly
  — from the raw rows, scaled by their largest difference as hypot does —
  every entry whose GEMM value is small against the rows' norms, where
  cancellation would spoil it. The result agrees with the direct difference
  to ~1e-12 relative in float64.

Gradients of the matrix form use the scatter-free identity: with
:math:`G = \partial L/\partial D` and :math:`K = G \oslash D` (euclidean,
0 where D = 0) or :math:`K = 2G` (sqeuclidean),
:math:`\partial L/\partial X = \mathrm{diag}(K\mathbf 1)X - KY` and
:math:`\partial L/\partial Y = \mathrm{diag}(K^\top\mathbf 1)Y - K^\top X`:
two GEMMs, O(B²) memory, deterministic.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
from array_api_compat import device as _device_of
from array_api_compat import is_numpy_namespace

from . import _checks, _ops
from .normalization import normalize_backward, normalize_forward, tree_sum
from .vjp import defvjp

METRICS = ("euclidean", "sqeuclidean", "cosine")

# Entries with GEMM value <= _REFINE_TOL * (scale of the rows) are recomputed
# exactly: below it, the GEMM's rounding (~ sqrt(dim) * eps * scale typical,
# dim * eps * scale worst case) could exceed ~1e-11 (float64) / ~1e-4
# (float32) of the squared distance. Measured: ~1e-12 relative up to dim 2048.
_REFINE_TOL = {64: 1e-3, 32: 1e-2}
# Elements held at once by the chunked exact recomputation.
_CHUNK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------
# validation


def _validate_pair_inputs(a, b, metric, a_name, b_name, same_rows, check=True):
    """``(xp, fetch)``: the namespace, and the call's :class:`~refloss._checks.Fetch`
    with the finiteness checks queued (read with the call's sizes)."""
    xp = _checks.namespace(optional=("y",), **{a_name: a, b_name: b})
    for name, arr in ((a_name, a), (b_name, b)):
        if arr is None:
            continue
        _checks.check_float(xp, name, arr)
        _checks.check_rank(name, arr, 2, "a 2-D array (batch, dim)")
    if b is not None:
        if b.shape[1] != a.shape[1]:
            raise ValueError(
                f"{b_name}: expected {a.shape[1]} columns (as {a_name}), "
                f"got {b.shape[1]}"
            )
        if same_rows:
            _checks.check_same_rows(b_name, b, a_name, a)
        if b.dtype != a.dtype:
            raise TypeError(
                f"{b_name}: expected the dtype of {a_name} ({a.dtype}), got {b.dtype}"
            )
    _checks.check_choice("metric", metric, METRICS)
    fetch = _checks.Fetch(xp, check=_checks.check_flag("check", check))
    for name, arr in ((a_name, a), (b_name, b)):
        if arr is not None:
            fetch.finite(name, arr)
    return xp, fetch


# --------------------------------------------------------------------------
# matrix form: forward and backward stages (inputs already in compute dtype)


class _Exact(NamedTuple):
    """The entries of a distance matrix computed exactly, for the backward."""

    flag: Any  # (B, B') bool: the entries computed exactly
    rows: Any  # row-major nonzero(flag), or None on the dense path
    cols: Any
    row_starts: Any  # (B + 1,) cumulative count of flags per row
    valid: Any = None  # static path: (K,) which of the K slots hold an entry
    chunk: int = 0  # entries per chunk of the exact gradients (0: the default)
    refined: Any = None  # static path: the recomputed part of ``flag`` (the
    # rest are copies: exactly 0, gradient 0)


def pairwise_forward(xp: Any, x: Any, y: Any, metric: str, fetch: Any = None):
    """``(D, residuals)`` with D[i, j] = d(x_i, y_j); ``y is None`` means x.

    ``fetch`` is the call's :class:`~refloss._checks.Fetch`: the sizes read
    here (exactly recomputed entries, repeated rows) join its one read. With
    a fetch of ``check=False`` on a library where a read waits for the
    device, nothing is read: the sizes are static (:func:`_refine_static`,
    copies found without the clash read).
    """
    static = _static_sizes(xp, fetch)
    if fetch is None:
        fetch = _checks.Fetch(xp, check=False)
    self_pairs = y is None
    if metric == "cosine":
        xhat, xres = normalize_forward(xp, x)
        yhat, yres = (xhat, xres) if self_pairs else normalize_forward(xp, y)
        d = _ops.clip(xp, 1.0 - xhat @ yhat.T, 0.0, 2.0)
        # ½‖x̂ − ŷ‖² = 1 − x̂·ŷ for unit rows; exact where the GEMM cancels.
        # A flagged entry has x̂·ŷ >= 1 − tol > 0, so both rows are non-zero.
        flag = d <= _tol(xp, x.dtype, x.shape[1])
        if self_pairs:
            eye = _eye(xp, x.shape[0], x.shape[0], x)
            d = xp.where(eye & xres[2][:, None], 0.0, d)
            flag = flag & ~eye
        search = _copy_search(xp, xhat, None if self_pairs else yhat, None, fetch, static)
        copies = None
        if static:  # copies are 0 by their group (a zero row stays at 1)
            copies = _copy_finish(xp, search, fetch)
            d, flag, _ = _zero_copies(xp, d, flag, copies, xres[2])
        d, _ = _refine(xp, d, flag, xhat, yhat, _half_square_gap, fetch, static)
        d = _canonical(xp, d, copies if static else _copy_finish(xp, search, fetch))
        # the gradient -G·ŷ has no cancellation: no exact part needed
        return d, (metric, self_pairs, d, xhat, yhat, xres, yres, None, None)

    self_y = x if self_pairs else y
    # one common power of two p (at most the largest |entry|, within 2x)
    # brings every entry into [-2, 2]: the GEMM's squares neither overflow
    # nor, for the rows that set the scale, underflow. Dividing by a power of
    # two is exact, so the centred GEMM keeps its accuracy, and
    # d(2^k·x) = 2^k·d(x) bit for bit wherever 2^k·x stays normal.
    peak = _peak(xp, x) if self_pairs else xp.maximum(_peak(xp, x), _peak(xp, y))
    p = _power_of_two_at_most(xp, peak)
    xs = x / p
    ys = xs if self_pairs else y / p
    n_rows = x.shape[0] + (0 if self_pairs else y.shape[0])
    total = xp.sum(xs, axis=0) if self_pairs else xp.sum(xs, axis=0) + xp.sum(ys, axis=0)
    mean = total / max(n_rows, 1)
    xc = xs - mean
    yc = xc if self_pairs else ys - mean
    nx = xp.sum(xc * xc, axis=1)
    ny = nx if self_pairs else xp.sum(yc * yc, axis=1)
    # in a few row blocks (_ops.row_ranges): the temporaries (scale, d2 and
    # their where passes) are a fraction of B×B (peak memory; on NumPy a
    # fresh B×B array also costs its page faults), only D and the flags whole
    tol = _tol(xp, x.dtype, x.shape[1])
    parts = [
        _gemm_block(xp, xc[r0:r1, :], yc, nx[r0:r1], ny, p, metric, tol)
        for r0, r1 in _ops.row_ranges(xc, xc.shape[0], yc.shape[0])
    ]
    if len(parts) == 1:
        d, flag = parts[0]
    elif parts:
        d = xp.concat([part[0] for part in parts], axis=0)
        flag = xp.concat([part[1] for part in parts], axis=0)
    else:  # no rows
        d = xp.zeros((0, yc.shape[0]), dtype=x.dtype, device=_device_of(x))
        flag = d > 0
    del parts
    if self_pairs:  # the diagonal is 0 and never flagged: once, not per block (ops)
        eye = _eye(xp, d.shape[0], d.shape[1], d)
        d, flag = xp.where(eye, 0.0, d), flag & ~eye
        del eye
    exact_value = _pair_square_distance if metric == "sqeuclidean" else _pair_distance
    search = _copy_search(xp, x, y, (xs, ys), fetch, static)
    copies = zero = None
    if static:  # copies are 0 by their group, outside the capacity
        copies = _copy_finish(xp, search, fetch)
        d, flag, zero = _zero_copies(xp, d, flag, copies, None)
    d, exact = _refine(xp, d, flag, x, self_y, exact_value, fetch, static, zero)
    d = _canonical(xp, d, copies if static else _copy_finish(xp, search, fetch))
    return d, (metric, self_pairs, d, xc, yc, x, self_y, exact, p)


def _gemm_block(xp, xb, yc, nxb, ny, p, metric, tol):
    """``(D, flag)`` of the rows ``xb`` (centred, divided by p) against ``yc``:
    the GEMM form, and the entries to recompute exactly (for y = x the
    caller zeroes and unflags the diagonal)."""
    if is_numpy_namespace(xp) and metric == "euclidean":
        return _gemm_block_numpy(xb, yc, nxb, ny, p, tol)
    scale = nxb[:, None] + ny[None, :]
    # one B×B temporary at a time beside scale and d2 (peak memory)
    d2 = (-2.0 * xb) @ yc.T
    d2 = scale + d2
    if metric == "sqeuclidean":
        d2 = _ops.clip(xp, d2, 0.0, None)
    # (the euclidean sqrt below gives 0 for d2 <= 0: no clip, two B×B
    # passes fewer, the same values; a negative d2 is flagged either way)
    # recomputed exactly: entries the GEMM's cancellation spoils, and pairs
    # of rows so small against p that their squares reach the subnormal range
    # (scale below the smallest normal s_n implies d2 <= 2·scale < 4·s_n)
    tiny = 4.0 * float(xp.finfo(xb.dtype).smallest_normal)
    flag = d2 <= tol * scale + tiny
    del scale
    if metric == "sqeuclidean":
        return (d2 * p) * p, flag  # inf past the largest float; its gradient needs no D
    d = _safe_sqrt(xp, d2) * p
    # a distance past the largest float is inf; its pair is differentiated
    # from the rows (unit vector), since K = G/D would lose it
    return d, flag | (d == float("inf"))


def _gemm_block_numpy(xb, yc, nxb, ny, p, tol):
    """:func:`_gemm_block` for the euclidean metric on NumPy, bit for bit:
    the same operations in the same order, written into the GEMM's and the
    scale's own arrays (no fresh B×B temporary per step: on NumPy each costs
    its allocation and page faults, about 15% of the forward)."""
    scale = nxb[:, None] + ny[None, :]
    d2 = (-2.0 * xb) @ yc.T
    d2 += scale  # scale + d2: never -0.0 (scale >= +0)
    scale *= tol
    scale += 4.0 * float(np.finfo(xb.dtype).smallest_normal)
    flag = d2 <= scale
    del scale
    # _safe_sqrt: 0 where d2 <= 0 or NaN (fmax keeps the 0 for a NaN)
    np.fmax(d2, 0.0, out=d2)
    np.sqrt(d2, out=d2)
    d2 *= p
    flag |= d2 == float("inf")
    return d2, flag


def pairwise_backward(xp: Any, residuals: Any, g: Any):
    """``(∂L/∂x, ∂L/∂y)`` from G = ∂L/∂D; for y = x the two are summed into the first.

    ``g`` is an array, or :class:`~refloss._ops.RowBlocks`: its blocks are
    made one at a time and folded into the GEMMs when they are this
    backward's own row blocks (euclidean metrics, no exactly recomputed
    pair), else joined.
    """
    metric, self_pairs, d, u, v, ures, vres, exact, p = residuals
    ranges = _ops.row_ranges(d, d.shape[0], d.shape[1])
    blocks = None
    if isinstance(g, _ops.RowBlocks):
        if metric != "cosine" and exact is None and g.ranges == ranges:
            blocks = g
        else:
            g = g.whole(xp)
    if metric == "cosine":
        gu = -(g @ v)
        gv = -(g.T @ u)
        if self_pairs:
            return normalize_backward(xp, ures, gu + gv), None
        return normalize_backward(xp, ures, gu), normalize_backward(xp, vres, gv)
    # u, v are the rows divided by p and centred: (x_i − y_j)/D_ij equals
    # (u_i − v_j)/(D_ij/p), so the euclidean K = G/(D/p) needs no rescaling
    # (D/p is exact, and not tiny outside the exactly recomputed entries);
    # the sqeuclidean 2G(x_i − y_j) is 2G(u_i − v_j)·p
    # pairs computed exactly in the forward are differentiated exactly too:
    # in the centred GEMM form their tiny differences u_i - v_j are lost
    x, y = ures, vres
    kx = ky = None
    if exact is not None:
        kx, ky = _exact_pair_grads(xp, g, exact, x, y, metric)
    # K in a few row blocks (_ops.row_ranges), each folded into its two
    # GEMMs at once: no B×B K (nor its temporaries) is ever held whole (peak
    # memory), and the block count does not grow with B
    row_sums, k_v = [], []
    col_sum = kt_u = None
    for r0, r1 in ranges:
        gb = g[r0:r1, :] if blocks is None else blocks.make(r0, r1)
        if metric == "sqeuclidean":
            kb = 2.0 * gb
        else:
            kb = _div_or_zero(xp, gb, d[r0:r1, :] / p)  # a fresh D/p block
        if exact is not None:
            kb = xp.where(exact.flag[r0:r1, :], 0.0, kb)
        row_sums.append(xp.sum(kb, axis=1))
        k_v.append(kb @ v)
        cs, ktu = xp.sum(kb, axis=0), kb.T @ u[r0:r1, :]
        col_sum = cs if col_sum is None else col_sum + cs
        kt_u = ktu if kt_u is None else kt_u + ktu
        del kb
    if not row_sums:  # no rows: K is empty
        row_sum = xp.zeros((0,), dtype=u.dtype, device=_device_of(u))
        col_sum = xp.zeros((v.shape[0],), dtype=u.dtype, device=_device_of(u))
        k_v = [xp.zeros((0, u.shape[1]), dtype=u.dtype, device=_device_of(u))]
        kt_u = xp.zeros(v.shape, dtype=u.dtype, device=_device_of(u))
    else:
        row_sum = xp.concat(row_sums) if len(row_sums) > 1 else row_sums[0]
    k_v = xp.concat(k_v, axis=0) if len(k_v) > 1 else k_v[0]
    if self_pairs:
        # u = v: (diag(rowsum + colsum) - K - Kᵀ) u
        gx = (row_sum + col_sum)[:, None] * u - k_v - kt_u
        if metric == "sqeuclidean":
            gx = gx * p
        return (gx if exact is None else gx + kx + ky), None
    gu = row_sum[:, None] * u - k_v
    gv = col_sum[:, None] * v - kt_u
    if metric == "sqeuclidean":
        gu, gv = gu * p, gv * p
    if exact is not None:
        gu, gv = gu + kx, gv + ky
    return gu, gv


# --------------------------------------------------------------------------
# one pair of rows at a time: exact, at every scale


def _pair_parts(xp, a, b):
    """``(q, m, r, c)`` with ``c·(a − b) = m·q``, ``max|q| = 1`` and ``r = ‖q‖``
    (q = 0, m = 0 for identical rows; r = 1 there, never used).

    c is 1, or 1/16 (exact) for pairs with an entry above max/16, whose raw
    difference could overflow (or, on XLA, whose m would have a subnormal
    reciprocal). Scaling the difference by its own largest entry m, as hypot
    does, keeps r in [1, sqrt(dim)]: no square underflows
    or overflows, so ‖a − b‖ = m·r/c is right to a few ulps at every scale.
    """
    if a.shape[-1] == 0:
        zero = xp.sum(a, axis=-1) + xp.sum(b, axis=-1)  # the broadcast shape, zeros
        one = zero + 1.0
        return xp.zeros((*zero.shape, 0), dtype=a.dtype, device=_device_of(a)), zero, one, one
    peak = xp.maximum(xp.max(xp.abs(a), axis=-1), xp.max(xp.abs(b), axis=-1))
    one = xp.ones_like(peak)
    c = xp.where(peak > _near_max(xp, a.dtype), 0.0625 * one, one)
    diff = a * c[..., None] - b * c[..., None]
    m = xp.max(xp.abs(diff), axis=-1)
    pos = m > 0
    # double where: no division by 0 and no sqrt at 0, so autograd through
    # this forward stays finite
    q = diff / xp.where(pos, m, one)[..., None]
    r = xp.sqrt(xp.where(pos, xp.sum(q * q, axis=-1), one))
    return q, m, r, c


def _pair_distance(xp, a, b):
    """‖a_k − b_k‖ along the last axis, right to a few ulps at every scale."""
    _, m, r, c = _pair_parts(xp, a, b)
    return (m * r) / c


def _pair_square_distance(xp, a, b):
    d = _pair_distance(xp, a, b)
    return d * d  # inf where the true square is past the largest float


def _half_square_gap(xp, a, b):
    """½‖â − b̂‖² for unit rows (no scaling needed)."""
    diff = a - b
    return 0.5 * xp.sum(diff * diff, axis=-1)


def _pair_grad(xp, a, b, w, metric):
    """w·∂d(a, b)/∂a along the last axis (the gradient for b is its negative):
    euclidean w·(a − b)/‖a − b‖ as the unit vector q/r (0 for identical rows),
    sqeuclidean 2w(a − b) as 2w·m·q/c."""
    q, m, r, c = _pair_parts(xp, a, b)
    if metric == "sqeuclidean":
        return (2.0 * w)[..., None] * ((m / c)[..., None] * q)
    return (w / r)[..., None] * q


# --------------------------------------------------------------------------
# bit-identical rows tie exactly


class _Copies(NamedTuple):
    """The outcome of a copy search (:func:`_copy_finish`)."""

    fx: Any  # (B,) lowest-index copy within x of each row of x, or None (no copy)
    fy: Any  # (B',) the same within y (``fx`` for y = x), or None
    gx: Any  # (B,) group of each row of x: equal rows (of x and y) share one
    gy: Any  # (B',)


def _canonical(xp, d, copies):
    """``d`` with the rows and columns of every copy of a row taken from its
    lowest-index copy, so that bit-identical rows have bit-identical
    distances to every row (a GEMM may round the same dot product
    differently at two positions: tiles, vector widths).

    ``copies`` is the finished copy search (:func:`_copy_finish`; None when
    no row has a copy). The values are unchanged but for rounding;
    torch autograd through this forward still reaches the entry's own rows.
    """
    if copies is None or (copies.fx is None and copies.fy is None):
        return d
    c = d if copies.fx is None else xp.take(d, copies.fx, axis=0)
    c = c if copies.fy is None else xp.take(c, copies.fy, axis=1)
    if getattr(d, "requires_grad", False) and hasattr(d, "detach"):
        # torch autograd through the forward: the value of the canonical
        # copy, the derivative of the entry itself (its own rows)
        return c.detach() + (d - d.detach())
    return c


def _zero_copies(xp, d, flag, copies, nonzero):
    """``(d, flag)`` with the entries of equal rows (one group) set to
    exactly 0 and left out of the exact recomputation (their exact value
    is 0, their gradient 0 either way); ``nonzero`` (cosine) keeps a zero
    row's distance 1."""
    if copies is None:
        return d, flag, None
    same = copies.gx[:, None] == copies.gy[None, :]
    if nonzero is not None:
        same = same & nonzero[:, None]
    # the flagged copies are differentiated as exact entries (gradient 0),
    # as the read path's recomputation does; the diagonal of y = x is not
    return xp.where(same, 0.0, d), flag & ~same, flag & same


def _first_copies(xp, key, rows):
    """``first[i]`` = the lowest i' with ``rows[i'] == rows[i]`` (all entries
    equal), or None when no row has an earlier copy.

    A standalone search (its own read): :func:`_copy_search` then
    :func:`_copy_finish`.
    """
    fetch = _checks.Fetch(xp, check=False)
    keys = None if key is None else (key, key)
    copies = _copy_finish(xp, _copy_search(xp, rows, None, keys, fetch, False), fetch)
    return None if copies is None else copies.fx


class _Search(NamedTuple):
    order: Any  # sorted order of the rows (x, then y)
    same: Any  # in sorted order: the row equals the one before
    rows: Any  # the rows searched (x, or x and y concatenated)
    n_x: int  # rows of x (the first n_x of ``rows``)
    self_pairs: bool
    tag: Any  # the fetch key of the outcome code, or None (no read)


def _copy_search(xp, x, y, keys, fetch, static, tag="copies"):
    """The device half of the search for equal rows among x (y None) or
    among x and y together; its outcome is queued in ``fetch`` under
    ``tag`` (bit 0: a row of x has an earlier copy in x; bit 1: the same in
    y; bit 2: a row of x equals a row of y; bit 3: a hash clash), unless
    ``static`` (no read: every outcome is assumed) or traced.

    Exact, O(n·dim + n log n): rows are sorted by a pair of hashes of their
    bit patterns (:func:`_row_hashes`: equal rows hash alike, rows that
    differ in one bit almost never do), and runs of equal adjacent rows are
    found by comparing the rows themselves, so a hash clash can only hide a
    copy, never invent one. On a clash (different rows with both hashes
    equal: odds about n²·2⁻⁶⁴) the read path sorts the rows
    lexicographically instead (one stable sort per column); the static path
    keeps the hash order (such copies are then found by the exact
    recomputation, not the search). Under ``jax.jit`` the rows are always
    sorted lexicographically. Within a run the stable sorts keep the
    original order, so the run's first entry is the lowest index.

    ``keys`` (``(key_x, key_y)``, entries in [-2, 2], equal for equal rows;
    None: the rows) serve a float hash where a library cannot view an
    array's bits (array-api-strict).
    """
    self_pairs = y is None
    rows = x if self_pairs else xp.concat([x, y], axis=0)
    n, dim = rows.shape
    if n < 2 or dim == 0:
        return None
    n_x = x.shape[0]
    if _checks.is_traced(rows):
        order = _lex_order(xp, rows)
        same, _ = _adjacent(xp, order, None, rows)
        return _Search(order, same, rows, n_x, self_pairs, None)
    hashes = _row_hashes(xp, rows)
    if hashes is None:
        if keys is None:
            key = rows
        else:
            key = keys[0] if self_pairs else xp.concat(list(keys), axis=0)
        dev = _device_of(rows)
        k = xp.arange(dim, dtype=key.dtype, device=dev)
        weights = 1.0 + (k * 0.6180339887498949) % 1.0
        hashes = (tree_sum(xp, key * weights),)  # |key| <= 2: no overflow
    order = xp.argsort(hashes[-1], stable=True)
    for h in hashes[-2::-1]:  # lexicographic in (h1, h2): stable sorts, last key first
        order = xp.take(order, xp.argsort(xp.take(h, order), stable=True))
    same, clash = _adjacent(xp, order, hashes, rows)
    if static:
        return _Search(order, same, rows, n_x, self_pairs, None)
    # read with the call's other sizes (bits as in the docstring)
    i32 = xp.int32
    code = 8 * xp.astype(xp.any(clash), i32)
    if self_pairs:
        code = code + xp.astype(xp.any(same), i32)
    else:
        is_y = order >= n_x
        before_y = xp.concat([is_y[:1], is_y[:-1]])
        code = code + xp.astype(xp.any(same & ~is_y), i32)
        code = code + 2 * xp.astype(xp.any(same & is_y & before_y), i32)
        code = code + 4 * xp.astype(xp.any(same & is_y & ~before_y), i32)
    fetch.want(tag, code, 15)
    return _Search(order, same, rows, n_x, self_pairs, tag)


def _copy_finish(xp, search, fetch):
    """The :class:`_Copies` of a started search (None when no row has a copy)."""
    if search is None:
        return None
    order, same, rows, n_x, self_pairs, tag = search
    want_x = want_y = True
    if tag is not None:
        code = fetch.value(tag)
        if code is None or code >= 8:  # a clash (or traced): copies may not be adjacent
            order = _lex_order(xp, rows)
            same, _ = _adjacent(xp, order, None, rows)
        elif code == 0:
            return None
        else:
            want_x, want_y = bool(code & 1), bool(code & 2)
    n = rows.shape[0]
    dev = _device_of(rows)
    idx = _checks.default_index_dtype(xp, dev)
    run = xp.cumulative_sum(xp.astype(~same, idx)) - 1  # group of each sorted row
    start = xp.searchsorted(run, run)  # first sorted position of each run
    inverse = xp.argsort(order)
    group = xp.take(run, inverse)
    first = xp.take(xp.take(order, start), inverse)
    if self_pairs:
        fx = first if want_x else None
        return _Copies(fx, fx, group, group)
    fx = first[:n_x] if want_x else None  # x comes first: its run's head is in x
    fy = None
    if want_y:
        # within a run the x rows come first, then the y rows: the run's
        # first y row is the first position with key 2·run + 1
        is_y = xp.astype(order >= n_x, idx)
        head_y = xp.searchsorted(2 * run + is_y, 2 * run + 1)
        head_y = _ops.clip(xp, head_y, 0, n - 1)
        fy = xp.take(xp.take(order, head_y) - n_x, inverse)[n_x:]
    return _Copies(fx, fy, group[:n_x], group[n_x:])


# fmix32 of MurmurHash3 (public domain): a bijection of 32-bit words whose
# every output bit depends on every input bit; constants as signed int32
_MIX = (-2048144789, -1028477387)  # 0x85ebca6b, 0xc2b2ae35


def _mix32(xp, h):
    """fmix32 on int32 words (wrapping products; logical shifts by masking)."""
    h = h ^ ((h >> 16) & 0xFFFF)
    h = h * _MIX[0]
    h = h ^ ((h >> 13) & 0x7FFFF)
    h = h * _MIX[1]
    return h ^ ((h >> 16) & 0xFFFF)


def _salts(n):
    """Two fixed tables of n pseudo-random int32 words (made on the host):
    per-position salts, and odd per-position weights."""
    k = np.arange(n, dtype=np.uint64)
    words = []
    for seed in (0x3C6EF372, 0x1B873593):
        h = (k * np.uint64(0x9E3779B9) + np.uint64(seed)) & np.uint64(0xFFFFFFFF)
        with np.errstate(over="ignore"):
            words.append(_mix32(np, h.astype(np.uint32).view(np.int32)))
    return words[0], words[1] | 1


def _row_hashes(xp, rows):
    """``(h1, h2)``: two hashes of each row's bit patterns, or None where
    the library cannot view an array's bits.

    Each 32-bit word w_k of a row (two per float64 entry) is salted by its
    position and mixed, ``M_k = mix(w_k ^ s_k)``; then ``h1 = Σ M_k`` and
    ``h2 = Σ c_k·M_k`` (c_k fixed odd weights), as integers (exact, or
    wrapping: the same for equal rows whatever the reduction order). Rows
    that differ anywhere differ in some word, and the bijective mix makes
    each sum nearly uniform: two different rows share one hash with odds
    about 2⁻³², both with about 2⁻⁶⁴, whatever the difference (one ulp, a
    swapped pair of columns, a power of two). −0.0 is made +0.0 first (the
    rows compare equal).
    """
    bits = rows + 0.0
    if hasattr(bits, "detach"):  # torch: the hash is not differentiated
        bits = bits.detach()
    try:
        bits = bits.view(xp.int32)
    except (AttributeError, TypeError, ValueError, RuntimeError):
        return None
    if bits.ndim != 2:
        return None
    dev = _device_of(rows)
    salt, weight = (xp.asarray(t, device=dev) for t in _salts(bits.shape[1]))
    mixed = _mix32(xp, bits ^ salt)
    return xp.sum(mixed, axis=1), xp.sum(mixed * weight, axis=1)


def _adjacent(xp, order, hashes, rows):
    """``(same, clash)`` in sorted order: row s equals row s − 1; equal
    hashes but different rows."""
    rs = xp.take(rows, order, axis=0)
    eq = xp.all(rs[1:, :] == rs[:-1, :], axis=1)
    head = xp.zeros((1,), dtype=xp.bool, device=_device_of(rows))
    if hashes is None:
        return xp.concat([head, eq]), None
    heq = None
    for h in hashes:
        hs = xp.take(h, order)
        e = hs[1:] == hs[:-1]
        heq = e if heq is None else heq & e
    return xp.concat([head, heq & eq]), heq & ~eq


def _lex_order(xp, rows):
    """Stable lexicographic order of the rows: one stable sort per column."""
    n, dim = rows.shape
    order = xp.arange(n, device=_device_of(rows))
    for j in range(dim - 1, -1, -1):
        order = xp.take(order, xp.argsort(xp.take(rows[:, j], order), stable=True))
    return order


# --------------------------------------------------------------------------
# exact recomputation of flagged entries


def _refine(xp, approx, flag, x, y, value, fetch, static=False, zero=None):
    """``approx`` with flagged entries replaced by ``value(xp, x_i, y_j)``.

    Returns ``(values, exact)`` (``exact`` is None when nothing is flagged).
    No scatter: the exact values are placed with a row-major rank (a
    cumulative sum of the flags), ``take`` and ``where``. The number of
    flagged entries is the one size read back (in ``fetch``'s one read);
    their positions come from it without another (:func:`_flag_positions`).
    With ``static``, nothing is read: :func:`_refine_static` (``zero``:
    the entries of copies, set to 0 and differentiated as exact ones).
    """
    if _checks.is_traced(flag):  # under jax.jit: every entry, no size
        return _refine_dense(xp, approx, flag, x, y, value)
    if static:
        return _refine_static(xp, approx, flag, x, y, value, zero)
    if not _checks.has_dynamic_shapes(xp):
        # JAX and strict without dynamic shapes
        if not _checks.any_true(xp, flag):
            return approx, None
        return _refine_dense(xp, approx, flag, x, y, value)
    n = fetch.value("refine", xp.count_nonzero(flag), math.prod(flag.shape))
    if n == 0:
        return approx, None
    rows, cols = _flag_positions(xp, flag, n)
    exact = []
    for s, e in _chunks(n, _CHUNK_ELEMENTS // max(x.shape[1], 1)):
        xa = xp.take(x, rows[s:e], axis=0)
        ya = xp.take(y, cols[s:e], axis=0)
        exact.append(value(xp, xa, ya))
    exact = xp.astype(xp.concat(exact) if len(exact) > 1 else exact[0], approx.dtype)

    idx = _checks.default_index_dtype(xp, _device_of(approx))
    starts = xp.cumulative_sum(xp.count_nonzero(flag, axis=1), include_initial=True)
    out = []
    for r0, r1 in _chunks(approx.shape[0], _CHUNK_ELEMENTS // max(approx.shape[1], 1)):
        fb = flag[r0:r1, :]
        first = starts[r0]  # stays on the device: no read per chunk
        rank = xp.cumulative_sum(xp.reshape(xp.astype(fb, idx), (-1,))) - 1 + first
        placed = xp.reshape(xp.take(exact, _ops.clip(xp, rank, 0, n - 1)), fb.shape)
        out.append(xp.where(fb, placed, approx[r0:r1, :]))
    values = xp.concat(out, axis=0) if len(out) > 1 else out[0]
    return values, _Exact(flag, rows, cols, starts)


# The static capacity: at most this many flagged entries per row of the
# larger side, on average, are recomputed exactly when no size may be read.
# Tight classes of up to 17 rows fit whole (each row has 16 near partners).
_CAPACITY_PER_ROW = 16


def _static_sizes(xp, fetch):
    """Whether the call's sizes must not be read: ``check=False`` on a
    library where a read waits for the device (torch, CuPy, JAX eager)."""
    return fetch is not None and not fetch.check and not _checks.reads_are_cheap(xp)


def _capacity(b, b2):
    """K = min(B·B', 16·max(B, B')) exactly recomputed entries at most."""
    return min(b * b2, _CAPACITY_PER_ROW * max(b, b2))


def _refine_static(xp, approx, flag, x, y, value, zero=None):
    """:func:`_refine` without reading the number of flagged entries: the
    first K (:func:`_capacity`) in row-major order are recomputed, where K
    depends on the shapes only.

    Their positions come from one search of 1..K in the running count of
    the flags (slots past the count hold a placeholder pair and no entry);
    the values are placed by rank as in :func:`_refine`. Where at most K
    entries are flagged the result equals the read path's bit for bit;
    flagged entries past the K-th keep the GEMM's value (documented in
    docs/errors.md, "Checks and syncs"). The work (K·dim per pass, one
    chunk while K·dim <= B·B') does not depend on the data.
    """
    b, b2 = flag.shape
    if b * b2 == 0:
        return approx, None
    k_cap = _capacity(b, b2)
    dev = _device_of(approx)
    # the running count in int32 where it fits: half the memory of int64
    idx = xp.int32 if b * b2 < 2**31 - 1 else _checks.default_index_dtype(xp, dev)
    running = xp.cumulative_sum(xp.reshape(xp.astype(flag, idx), (-1,)), dtype=idx)
    k = xp.arange(1, k_cap + 1, dtype=idx, device=dev)
    at = xp.searchsorted(running, k, side="left")  # b·b2 past the count
    valid = at < b * b2
    at = xp.where(valid, at, 0)
    rows, cols = at // b2, at % b2
    # chunks of at most a quarter of B·B' elements (a few at most): the
    # pair temporaries stay small beside the matrix
    chunk = max(_CHUNK_ELEMENTS, b * b2 // 4) // max(x.shape[1], 1)
    exact = []
    for s, e in _chunks(k_cap, chunk):
        xa = xp.take(x, rows[s:e], axis=0)
        ya = xp.take(y, cols[s:e], axis=0)
        exact.append(value(xp, xa, ya))
    exact = xp.astype(xp.concat(exact) if len(exact) > 1 else exact[0], approx.dtype)
    # slot 0 serves the entries before the first flag (never kept)
    exact = xp.concat([exact[:1], exact])
    running = xp.reshape(running, flag.shape)
    keep = flag & (running <= k_cap)
    placed = xp.take(exact, xp.reshape(_ops.clip(xp, running, None, k_cap), (-1,)))
    del running
    values = xp.where(keep, xp.reshape(placed, flag.shape), approx)
    starts = xp.cumulative_sum(xp.count_nonzero(keep, axis=1), include_initial=True)
    exact_set = keep if zero is None else keep | zero
    return values, _Exact(exact_set, rows, cols, starts, valid, chunk, keep)


def _flag_positions(xp, flag, n):
    """``(rows, cols)`` of the ``n`` True entries of ``flag`` in row-major
    order: ``nonzero`` on the host libraries; elsewhere (where ``nonzero``
    waits for the device to learn its output size) the k-th entry is found
    by a search of k + 1 in the running count of the flags, n known."""
    if _checks.reads_are_cheap(xp):
        return xp.nonzero(flag)
    width = flag.shape[1]
    idx = _checks.default_index_dtype(xp, _device_of(flag))
    running = xp.cumulative_sum(xp.reshape(xp.astype(flag, idx), (-1,)))
    k = xp.arange(1, n + 1, dtype=idx, device=_device_of(flag))
    at = xp.searchsorted(running, k, side="left")
    return at // width, at % width


def _refine_dense(xp, approx, flag, x, y, value):
    """The same without data-dependent shapes: exact row blocks, O(B²·dim) time."""
    if approx.shape[0] == 0:
        return approx, None
    out = []
    block = _CHUNK_ELEMENTS // (max(y.shape[0], 1) * max(x.shape[1], 1))
    for r0, r1 in _chunks(approx.shape[0], block):
        fb = flag[r0:r1, :]
        if not _checks.any_true(xp, fb):
            out.append(approx[r0:r1, :])
            continue
        exact = xp.astype(value(xp, x[r0:r1, None, :], y[None, :, :]), approx.dtype)
        out.append(xp.where(fb, exact, approx[r0:r1, :]))
    values = xp.concat(out, axis=0) if len(out) > 1 else out[0]
    return values, _Exact(flag, None, None, None)


def _exact_pair_grads(xp, g, exact, x, y, metric):
    r""":math:`\sum_j G_{ij}\,\partial d_{ij}/\partial x_i` for x and
    :math:`\sum_i G_{ij}\,\partial d_{ij}/\partial y_j` for y, over the flagged
    pairs only, from the raw rows (``_pair_grad``: no cancellation, no
    overflow or underflow).

    Segment sums without scatter: contributions in row-major order (sorted by
    row, and by column after a stable argsort) are prefix-summed in chunks and
    differenced at the segment boundaries.
    """
    flag = exact.flag
    if exact.rows is None:  # dense path
        gx = []
        gy = xp.zeros_like(y)
        block = _CHUNK_ELEMENTS // (max(y.shape[0], 1) * max(x.shape[1], 1))
        for r0, r1 in _chunks(x.shape[0], block):
            gb = xp.where(flag[r0:r1, :], g[r0:r1, :], xp.zeros_like(g[r0:r1, :]))
            contrib = _pair_grad(xp, x[r0:r1, None, :], y[None, :, :], gb, metric)
            gx.append(xp.sum(contrib, axis=1))
            gy = gy - xp.sum(contrib, axis=0)
        return (xp.concat(gx, axis=0) if len(gx) > 1 else gx[0]), gy

    rows, cols = exact.rows, exact.cols
    width = g.shape[1]
    w = xp.take(xp.reshape(g, (-1,)), rows * width + cols)
    chunk = exact.chunk or _CHUNK_ELEMENTS // max(x.shape[1], 1)
    col_key = cols
    if exact.valid is not None:  # static path: empty slots weigh 0 and sort last
        w = xp.where(exact.valid, w, 0.0)
        col_key = xp.where(exact.valid, cols, width)
    gx = _segment_sums(
        xp, w, rows, cols, x, y, exact.row_starts, x.shape[0], 1.0, metric, chunk
    )
    order = xp.argsort(col_key, stable=True)
    refined = flag if exact.refined is None else exact.refined
    col_starts = xp.cumulative_sum(xp.count_nonzero(refined, axis=0), include_initial=True)
    gy = _segment_sums(
        xp, xp.take(w, order), xp.take(rows, order), xp.take(cols, order),
        x, y, col_starts, y.shape[0], -1.0, metric, chunk,
    )
    return gx, gy


def _segment_sums(xp, w, rows, cols, x, y, starts, n_out, sign, metric, chunk):
    """out[s] = sign · Σ_{k in segment s} w_k ∂d(x[rows_k], y[cols_k])/∂x."""
    n = w.shape[0]
    out = xp.zeros((n_out, x.shape[1]), dtype=x.dtype, device=_device_of(x))
    lo_all, hi_all = starts[:-1], starts[1:]
    for s, e in _chunks(n, chunk):
        xa = xp.take(x, rows[s:e], axis=0)
        ya = xp.take(y, cols[s:e], axis=0)
        contrib = _pair_grad(xp, xa, ya, w[s:e], metric)
        prefix = xp.cumulative_sum(contrib, axis=0, include_initial=True)
        lo = _ops.clip(xp, lo_all, s, e) - s
        hi = _ops.clip(xp, hi_all, s, e) - s
        out = out + (xp.take(prefix, hi, axis=0) - xp.take(prefix, lo, axis=0))
    return sign * out


def _chunks(n, step):
    step = max(1, step)
    return [(s, min(s + step, n)) for s in range(0, n, step)]


# --------------------------------------------------------------------------
# paired form


def paired_forward(xp: Any, a: Any, b: Any, metric: str):
    """``(d, residuals)`` with d[i] = d(a_i, b_i)."""
    if metric == "cosine":
        ahat, ares = normalize_forward(xp, a)
        bhat, bres = normalize_forward(xp, b)
        diff = ahat - bhat
        both = ares[2] & bres[2]
        d = xp.where(both, 0.5 * xp.sum(diff * diff, axis=1), xp.ones_like(ares[1]))
        return d, (metric, diff, both, ares, bres)
    q, m, r, c = _pair_parts(xp, a, b)
    d = (m * r) / c
    if metric == "sqeuclidean":
        d = d * d
    return d, (metric, q, m, r, c)


def paired_backward(xp: Any, residuals: Any, g: Any):
    if residuals[0] == "cosine":
        _, diff, both, ares, bres = residuals
        k = xp.where(both, g, xp.zeros_like(g))
        ga = k[:, None] * diff
        return normalize_backward(xp, ares, ga), normalize_backward(xp, bres, -ga)
    metric, q, m, r, c = residuals
    # the same unit vector / scaled difference as _pair_grad, from the forward
    if metric == "sqeuclidean":
        ga = (2.0 * g)[:, None] * ((m / c)[:, None] * q)
    else:
        ga = (g / r)[:, None] * q
    return ga, -ga


# --------------------------------------------------------------------------
# helpers


def _tol(xp, dtype, dim):
    fi = xp.finfo(dtype)
    # identical rows must always be flagged (exact 0, gradient 0): their GEMM
    # value is at most ~2(dim + 2)·u times the scale, whatever the order
    return max(_REFINE_TOL[64 if fi.bits >= 64 else 32], 8.0 * (dim + 2) * float(fi.eps))


def _near_max(xp, dtype):
    """max/16 rounded down to a power of two: above it, rows are scaled by 1/16."""
    return 2.0 ** (math.frexp(float(xp.finfo(dtype).max))[1] - 5)


def _peak(xp, a):
    """max |a| as a 0-d array (0 for an empty array)."""
    if a.shape[0] == 0 or a.shape[1] == 0:
        return xp.zeros((), dtype=a.dtype, device=_device_of(a))
    return xp.max(xp.abs(a))


def _power_of_two_at_most(xp, v):
    """The largest power of two <= v (a 0-d array), clipped to
    [smallest normal, max/8]: the reciprocal stays normal (XLA on CPU divides
    by a broadcast scalar through its reciprocal, and flushes subnormals).

    Chosen from a table of the dtype's powers of two (NumPy's ``ldexp`` is
    exact), since a library's ``pow``/``exp2`` may round.
    """
    fi = xp.finfo(v.dtype)
    low = math.frexp(float(fi.smallest_normal))[1] - 1
    high = math.frexp(float(fi.max))[1] - 4
    table = xp.asarray(np.ldexp(1.0, np.arange(low, high + 1)), dtype=v.dtype,
                       device=_device_of(v))
    return xp.max(xp.where(table <= v, table, table[0]))


def _eye(xp, rows, cols, like):
    """The diagonal: a rows × cols bool array, True where row == column."""
    dev = _device_of(like)
    return xp.arange(rows, device=dev)[:, None] == xp.arange(cols, device=dev)[None, :]


def _safe_sqrt(xp, d2):
    # double where: sqrt is never evaluated at 0, so autograd through this
    # forward stays finite too
    pos = d2 > 0
    return xp.where(pos, xp.sqrt(xp.where(pos, d2, 1.0)), 0.0)


def _div_or_zero(xp, g, d):
    """``g / d``, 0 where d is not > 0 (g / inf is 0 for every finite g: one
    B×B temporary instead of three). ``d`` is the caller's fresh array: on
    NumPy the quotient is written into it (fresh B×B temporaries cost their
    allocation and page faults there, about 5x the arithmetic)."""
    if is_numpy_namespace(xp):
        d[~(d > 0)] = float("inf")
        return np.divide(g, d, out=d)
    return g / xp.where(d > 0, d, float("inf"))


# --------------------------------------------------------------------------
# public functions


def _pairwise_fwd(x, y=None, *, metric="euclidean", check=True):
    xp, fetch = _validate_pair_inputs(x, y, metric, "x", "y", same_rows=False, check=check)
    dtype = x.dtype
    cdt = _checks.compute_dtype(xp, dtype)
    xc = xp.astype(x, cdt)
    yc = None if y is None else xp.astype(y, cdt)
    d, res = pairwise_forward(xp, xc, yc, metric, fetch)
    fetch.done()
    return xp.astype(d, dtype), (xp, dtype, res)


def _pairwise_bwd(residuals, g):
    xp, dtype, res = residuals
    gx, gy = pairwise_backward(xp, res, g)
    return xp.astype(gx, dtype), (None if gy is None else xp.astype(gy, dtype))


@defvjp(_pairwise_fwd, _pairwise_bwd)
def pairwise_distances(
    x: Any, y: Any = None, *, metric: str = "euclidean", check: bool = True
) -> Any:
    r"""Distance matrix :math:`D_{ij} = d(x_i, y_j)` (``y=None`` means ``y = x``).

    Metrics: ``"euclidean"`` :math:`\lVert x_i - y_j\rVert`, ``"sqeuclidean"``
    :math:`\lVert x_i - y_j\rVert^2`, ``"cosine"`` :math:`1 - \hat x_i\cdot\hat y_j`.

    Gradient (through :func:`refloss.vjp`), with :math:`G = \partial L/\partial D`:
    :math:`\partial L/\partial X = \mathrm{diag}(K\mathbf 1)X - KY`,
    :math:`\partial L/\partial Y = \mathrm{diag}(K^\top\mathbf 1)Y - K^\top X`,
    with :math:`K = G/D` (0 where D = 0) for euclidean and :math:`K = 2G` for
    sqeuclidean; cosine goes through the normalisation (see
    :func:`refloss.l2_normalize`). For ``y=None`` both terms land on ``x``.

    Accuracy: one GEMM on rows scaled by a power of two and mean-centred,
    with the entries that cancellation would spoil recomputed exactly;
    identical rows give exactly 0 and the euclidean gradient there is 0;
    bit-identical rows have bit-identical distances to every row (ties go
    to the lowest index on every backend); right to a few ulps at every scale
    of the dtype, inf where a squared distance passes the largest float (see
    the module docstring and docs/errors.md, "Scale range").

    Args:
        x: ``[B, D]`` floating array.
        y: ``[B', D]`` floating array of the same dtype, or ``None``.
        metric: ``"euclidean"`` (default), ``"sqeuclidean"`` or ``"cosine"``.
        check: check that the inputs are finite (default True; see
            docs/errors.md, "Checks and syncs"). ``False`` also reads no
            size back on torch, CuPy and JAX: copies of a row get exactly
            0 from the copy search, and at most K = min(B·B', 16·max(B, B'))
            other flagged entries (the first in row-major order) are
            recomputed exactly — identical to ``True`` whenever no more are
            flagged; entries past the K-th keep the GEMM's value, off by at
            most (dim + 2)·ε·(‖x_i − μ‖² + ‖y_j − μ‖²) in the squared
            distance (μ the mean row; cosine: about (dim + 2)·ε), and are
            differentiated through it.

    Returns:
        ``[B, B']`` array in the namespace, device and dtype of ``x``
        (float16/bfloat16 computed in float32).

    References:
        TensorFlow Addons ``pairwise_distance`` and ``torch.cdist`` use the same
        GEMM expansion without the exact recomputation (docs/distances.md).
    """
    return _pairwise_fwd(x, y, metric=metric, check=check)[0]


def _paired_fwd(a, b, *, metric="euclidean", check=True):
    xp, fetch = _validate_pair_inputs(a, b, metric, "a", "b", same_rows=True, check=check)
    fetch.done()
    dtype = a.dtype
    cdt = _checks.compute_dtype(xp, dtype)
    d, res = paired_forward(xp, xp.astype(a, cdt), xp.astype(b, cdt), metric)
    return xp.astype(d, dtype), (xp, dtype, res)


def _paired_bwd(residuals, g):
    xp, dtype, res = residuals
    ga, gb = paired_backward(xp, res, g)
    return xp.astype(ga, dtype), xp.astype(gb, dtype)


@defvjp(_paired_fwd, _paired_bwd)
def paired_distances(a: Any, b: Any, *, metric: str = "euclidean", check: bool = True) -> Any:
    r"""Row-wise distances :math:`d_i = d(a_i, b_i)`.

    Computed directly from :math:`a_i - b_i`, scaled by its largest entry as
    hypot does (exact at every scale; no GEMM). For cosine,
    :math:`\tfrac12\lVert\hat a_i - \hat b_i\rVert^2`, which equals
    :math:`1 - \hat a_i\cdot\hat b_i` and keeps a relative error of about
    eps/‖â − b̂‖ for near-parallel rows (where 1 − â·b̂ loses everything);
    a zero row gives 1.

    Gradient (through :func:`refloss.vjp`), with :math:`g_i = \partial L/\partial d_i`:
    euclidean :math:`g_i (a_i - b_i)/d_i` (0 where :math:`d_i = 0`),
    sqeuclidean :math:`2 g_i (a_i - b_i)`, cosine
    :math:`g_i (I - \hat a_i\hat a_i^\top)(\hat a_i - \hat b_i)/\lVert a_i\rVert`;
    the gradient for ``b`` is the mirror image.

    Args:
        a: ``[B, D]`` floating array.
        b: ``[B, D]`` floating array of the same dtype.
        metric: ``"euclidean"`` (default), ``"sqeuclidean"`` or ``"cosine"``.
        check: check that the inputs are finite (default True; see
            docs/errors.md, "Checks and syncs").

    Returns:
        ``[B]`` array in the namespace, device and dtype of ``a``.

    References:
        Unlike ``torch.nn.functional.pairwise_distance``, no epsilon is added
        to the difference: d(x, x) = 0 exactly.
    """
    return _paired_fwd(a, b, metric=metric, check=check)[0]
