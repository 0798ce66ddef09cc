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

    flag: Any  # (B, B') bool
    rows: Any  # row-major nonzero(flag), or None on the dense path
    cols: Any
    row_starts: Any  # (B + 1,) cumulative count of flags per row


def pairwise_forward(xp: Any, x: Any, y: Any, metric: str, fetch: Any = None):
    """``(D, residuals)`` with D[i, j] = d(x_i, y_j); ``y is None`` means x.

    ``fetch`` is the call's :class:`~refloss._checks.Fetch`: the sizes read
    here (exactly recomputed entries, repeated rows) join its one read.
    """
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
            eye = _eye(xp, x.shape[0], x)
            d = xp.where(eye & xres[2][:, None], 0.0, d)
            flag = flag & ~eye
        cx = _copy_search(xp, xhat, xhat, fetch, "copies x")
        cy = cx if self_pairs else _copy_search(xp, yhat, yhat, fetch, "copies y")
        d, _ = _refine(xp, d, flag, xhat, yhat, _half_square_gap, fetch)
        d = _canonical(xp, d, cx, cy, fetch)
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
    scale = nx[:, None] + ny[None, :]
    # one B×B temporary at a time beside scale and d2 (peak memory)
    d2 = (-2.0 * xc) @ yc.T
    d2 = scale + d2
    d2 = _ops.clip(xp, d2, 0.0, None)
    # recomputed exactly: entries the GEMM's cancellation spoils, and pairs
    # of rows so small against p that their squares reach the subnormal range
    # (scale below the smallest normal s_n implies d2 <= 2·scale < 4·s_n)
    tiny = 4.0 * float(xp.finfo(x.dtype).smallest_normal)
    flag = d2 <= _tol(xp, x.dtype, x.shape[1]) * scale + tiny
    del scale
    if self_pairs:
        eye = _eye(xp, x.shape[0], x)
        d2 = xp.where(eye, 0.0, d2)
        flag = flag & ~eye
    if metric == "sqeuclidean":
        d = (d2 * p) * p  # inf past the largest float; its gradient needs no D
        exact_value = _pair_square_distance
    else:
        d = _safe_sqrt(xp, d2) * p
        # a distance past the largest float is inf; its pair is differentiated
        # from the rows (unit vector), since K = G/D would lose it
        flag = flag | (d == float("inf"))
        exact_value = _pair_distance
    del d2
    cx = _copy_search(xp, xs, x, fetch, "copies x")
    cy = cx if self_pairs else _copy_search(xp, ys, y, fetch, "copies y")
    d, exact = _refine(xp, d, flag, x, self_y, exact_value, fetch)
    d = _canonical(xp, d, cx, cy, fetch)
    return d, (metric, self_pairs, d, xc, yc, x, self_y, exact, p)


def pairwise_backward(xp: Any, residuals: Any, g: Any):
    """``(∂L/∂x, ∂L/∂y)`` from G = ∂L/∂D; for y = x the two are summed into the first."""
    metric, self_pairs, d, u, v, ures, vres, exact, p = residuals
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
    k = 2.0 * g if metric == "sqeuclidean" else _div_or_zero(xp, g, d / p)
    # pairs computed exactly in the forward are differentiated exactly too:
    # in the centred GEMM form their tiny differences u_i - v_j are lost
    x, y = ures, vres
    if exact is not None:
        kx, ky = _exact_pair_grads(xp, g, exact, x, y, metric)
        k = xp.where(exact.flag, 0.0, k)
    if self_pairs:
        # u = v: (diag(rowsum + colsum) - K - Kᵀ) u, as two GEMMs so that no
        # B×B K + Kᵀ is formed (peak memory)
        gx = (xp.sum(k, axis=1) + xp.sum(k, axis=0))[:, None] * u - k @ u - k.T @ u
        if metric == "sqeuclidean":
            gx = gx * p
        return (gx if exact is None else gx + kx + ky), None
    gu = xp.sum(k, axis=1)[:, None] * u - k @ v
    gv = xp.sum(k, axis=0)[:, None] * v - k.T @ u
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


def _canonical(xp, d, cx, cy, fetch):
    """``d`` with the rows and columns of every copy of a row taken from its
    lowest-index copy, so that bit-identical rows have bit-identical
    distances to every row (a GEMM may round the same dot product
    differently at two positions: tiles, vector widths).

    ``cx``/``cy`` are the copy searches of the rows of x and y
    (:func:`_copy_search`; ``cy is cx`` for y = x), finished here with the
    fetch's read. The values are unchanged but for rounding;
    torch autograd through this forward still reaches the entry's own rows.
    """
    fx = _copy_finish(xp, cx, fetch)
    fy = fx if cy is cx else _copy_finish(xp, cy, fetch)
    if fx is None and fy is None:
        return d
    c = d if fx is None else xp.take(d, fx, axis=0)
    c = c if fy is None else xp.take(c, fy, axis=1)
    if getattr(d, "requires_grad", False) and hasattr(d, "detach"):
        # torch autograd through the forward: the value of the canonical
        # copy, the derivative of the entry itself (its own rows)
        return c.detach() + (d - d.detach())
    return c


def _first_copies(xp, key, rows):
    """``first[i]`` = the lowest i' with ``rows[i'] == rows[i]`` (all entries
    equal), or None when no row has an earlier copy.

    A standalone search (its own read): :func:`_copy_search` then
    :func:`_copy_finish`.
    """
    fetch = _checks.Fetch(xp, check=False)
    return _copy_finish(xp, _copy_search(xp, key, rows, fetch, "copies"), fetch)


def _copy_search(xp, key, rows, fetch, tag):
    """The device half of the copy search; its outcome (no copy, copies, a
    hash clash) is queued in ``fetch`` under ``tag``.

    Exact, O(n·dim + n log n): rows are sorted by a hash (a fixed-order sum
    of ``key`` times fixed weights, so copies hash alike bit for bit), and
    runs of equal adjacent rows are found by comparing the rows themselves.
    If two different rows share a hash value (rows equal to ~eps), the
    rows are sorted lexicographically instead (one stable sort per column),
    so that copies are always adjacent. Within a run the stable sort keeps
    the original order, so the run's first entry is the lowest index.
    """
    n, dim = rows.shape
    if n < 2 or dim == 0:
        return None
    dev = _device_of(rows)
    k = xp.arange(dim, dtype=key.dtype, device=dev)
    weights = 1.0 + (k * 0.6180339887498949) % 1.0
    h = tree_sum(xp, key * weights)  # |key| <= 1: no overflow
    if _checks.is_traced(rows):
        order = _lex_order(xp, rows)
        same, _ = _adjacent(xp, order, None, rows)
        return order, same, rows, None
    order = xp.argsort(h, stable=True)
    same, clash = _adjacent(xp, order, h, rows)
    # read with the call's other sizes: 2 = a hash clash, 1 = some row has a copy
    code = 2 * xp.astype(xp.any(clash), xp.int32) + xp.astype(xp.any(same), xp.int32)
    fetch.want(tag, code, 3)
    return order, same, rows, tag


def _copy_finish(xp, search, fetch):
    """``first`` of :func:`_first_copies` from a started search."""
    if search is None:
        return None
    order, same, rows, tag = search
    if tag is not None:
        code = fetch.value(tag)
        if code is None or code >= 2:  # a clash (or traced): copies may not be adjacent
            order = _lex_order(xp, rows)
            same, _ = _adjacent(xp, order, None, rows)
        elif code == 0:
            return None
    idx = _checks.default_index_dtype(xp, _device_of(rows))
    run = xp.cumulative_sum(xp.astype(~same, idx)) - 1
    start = xp.searchsorted(run, run)  # first sorted position of each run
    first_sorted = xp.take(order, start)
    return xp.take(first_sorted, xp.argsort(order))


def _adjacent(xp, order, h, rows):
    """``(same, clash)`` in sorted order: row s equals row s − 1; equal hash
    but different rows."""
    rs = xp.take(rows, order, axis=0)
    eq = xp.all(rs[1:, :] == rs[:-1, :], axis=1)
    head = xp.zeros((1,), dtype=xp.bool, device=_device_of(rows))
    if h is None:
        return xp.concat([head, eq]), None
    hs = xp.take(h, order)
    heq = hs[1:] == hs[:-1]
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


def _refine(xp, approx, flag, x, y, value, fetch):
    """``approx`` with flagged entries replaced by ``value(xp, x_i, y_j)``.

    Returns ``(values, exact)`` (``exact`` is None when nothing is flagged).
    No scatter: the exact values are placed with a row-major rank (a
    cumulative sum of the flags), ``take`` and ``where``. The number of
    flagged entries is the one size read back (in ``fetch``'s one read);
    their positions come from it without another (:func:`_flag_positions`).
    """
    if not _checks.has_dynamic_shapes(xp) or _checks.is_traced(flag):
        # JAX (jit or not) and strict without dynamic shapes
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
    gx = _segment_sums(xp, w, rows, cols, x, y, exact.row_starts, x.shape[0], 1.0, metric)
    order = xp.argsort(cols, stable=True)
    col_starts = xp.cumulative_sum(xp.count_nonzero(flag, axis=0), include_initial=True)
    gy = _segment_sums(
        xp, xp.take(w, order), xp.take(rows, order), xp.take(cols, order),
        x, y, col_starts, y.shape[0], -1.0, metric,
    )
    return gx, gy


def _segment_sums(xp, w, rows, cols, x, y, starts, n_out, sign, metric):
    """out[s] = sign · Σ_{k in segment s} w_k ∂d(x[rows_k], y[cols_k])/∂x."""
    n = w.shape[0]
    out = xp.zeros((n_out, x.shape[1]), dtype=x.dtype, device=_device_of(x))
    lo_all, hi_all = starts[:-1], starts[1:]
    for s, e in _chunks(n, _CHUNK_ELEMENTS // max(x.shape[1], 1)):
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


def _eye(xp, n, like):
    r = xp.arange(n, device=_device_of(like))
    return r[:, None] == r[None, :]


def _safe_sqrt(xp, d2):
    # double where: sqrt is never evaluated at 0, so autograd through this
    # forward stays finite too
    pos = d2 > 0
    return xp.where(pos, xp.sqrt(xp.where(pos, d2, 1.0)), 0.0)


def _div_or_zero(xp, g, d):
    # g / inf is 0 for every finite g: one B×B temporary instead of three
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
            docs/errors.md, "Checks and syncs").

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
