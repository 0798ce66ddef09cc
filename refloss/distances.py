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
* the matrix form uses one GEMM on mean-centred rows (distances do not
  change under translation, and centring removes the cancellation a large
  common offset would cause), then recomputes exactly — as
  :math:`\sum_k (u_k - v_k)^2` from the raw rows — every entry whose GEMM
  value is small against the rows' norms, where cancellation would spoil
  it. The result agrees with the direct difference to ~1e-12 relative in
  float64.

Gradients of the matrix form use the scatter-free identity: with
:math:`G = \partial L/\partial D` and :math:`K = G \oslash D` (euclidean,
0 where D = 0) or :math:`K = 2G` (sqeuclidean),
:math:`\partial L/\partial X = \mathrm{diag}(K\mathbf 1)X - KY` and
:math:`\partial L/\partial Y = \mathrm{diag}(K^\top\mathbf 1)Y - K^\top X`:
two GEMMs, O(B²) memory, deterministic.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from array_api_compat import device as _device_of

from . import _checks
from .normalization import normalize_backward, normalize_forward
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


def _validate_pair_inputs(a, b, metric, a_name, b_name, same_rows):
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
    for name, arr in ((a_name, a), (b_name, b)):
        if arr is not None:
            _checks.check_finite(xp, name, arr)
    return xp


# --------------------------------------------------------------------------
# matrix form: forward and backward stages (inputs already in compute dtype)


class _Exact(NamedTuple):
    """The entries of a distance matrix computed exactly, for the backward."""

    flag: Any  # (B, B') bool
    rows: Any  # row-major nonzero(flag), or None on the dense path
    cols: Any
    row_starts: Any  # (B + 1,) cumulative count of flags per row


def pairwise_forward(xp: Any, x: Any, y: Any, metric: str):
    """``(D, residuals)`` with D[i, j] = d(x_i, y_j); ``y is None`` means x."""
    self_pairs = y is None
    if metric == "cosine":
        xhat, xres = normalize_forward(xp, x)
        yhat, yres = (xhat, xres) if self_pairs else normalize_forward(xp, y)
        d = xp.clip(1.0 - xhat @ yhat.T, 0.0, 2.0)
        # ½‖x̂ − ŷ‖² = 1 − x̂·ŷ for unit rows; exact where the GEMM cancels.
        # A flagged entry has x̂·ŷ >= 1 − tol > 0, so both rows are non-zero.
        flag = d <= _tol(xp, x.dtype)
        if self_pairs:
            eye = _eye(xp, x.shape[0], x)
            d = xp.where(eye & xres[2][:, None], 0.0, d)
            flag = flag & ~eye
        d, _ = _refine(xp, d, flag, xhat, yhat, scale=0.5)
        # the gradient -G·ŷ has no cancellation: no exact part needed
        return d, (metric, self_pairs, d, xhat, yhat, xres, yres, None)

    self_y = x if self_pairs else y
    n_rows = x.shape[0] + (0 if self_pairs else y.shape[0])
    total = xp.sum(x, axis=0) if self_pairs else xp.sum(x, axis=0) + xp.sum(y, axis=0)
    mean = total / max(n_rows, 1)
    xc = x - mean
    yc = xc if self_pairs else y - mean
    nx = xp.sum(xc * xc, axis=1)
    ny = nx if self_pairs else xp.sum(yc * yc, axis=1)
    scale = nx[:, None] + ny[None, :]
    # one B×B temporary at a time beside scale and d2 (peak memory)
    d2 = (-2.0 * xc) @ yc.T
    d2 = scale + d2
    d2 = xp.clip(d2, 0.0, None)
    flag = d2 <= _tol(xp, x.dtype) * scale
    del scale
    if self_pairs:
        eye = _eye(xp, x.shape[0], x)
        d2 = xp.where(eye, 0.0, d2)
        flag = flag & ~eye
    d2, exact = _refine(xp, d2, flag, x, self_y, scale=1.0)
    d = d2 if metric == "sqeuclidean" else _safe_sqrt(xp, d2)
    return d, (metric, self_pairs, d, xc, yc, x, self_y, exact)


def pairwise_backward(xp: Any, residuals: Any, g: Any):
    """``(∂L/∂x, ∂L/∂y)`` from G = ∂L/∂D; for y = x the two are summed into the first."""
    metric, self_pairs, d, u, v, ures, vres, exact = residuals
    if metric == "cosine":
        gu = -(g @ v)
        gv = -(g.T @ u)
        if self_pairs:
            return normalize_backward(xp, ures, gu + gv), None
        return normalize_backward(xp, ures, gu), normalize_backward(xp, vres, gv)
    k = 2.0 * g if metric == "sqeuclidean" else _div_or_zero(xp, g, d)
    # pairs computed exactly in the forward are differentiated exactly too:
    # in the centred GEMM form their tiny differences u_i - v_j are lost
    x, y = ures, vres
    if exact is not None:
        kx, ky = _exact_pair_grads(xp, k, exact, x, y)
        k = xp.where(exact.flag, 0.0, k)
    if self_pairs:
        # u = v: (diag(rowsum + colsum) - K - Kᵀ) u, as two GEMMs so that no
        # B×B K + Kᵀ is formed (peak memory)
        gx = (xp.sum(k, axis=1) + xp.sum(k, axis=0))[:, None] * u - k @ u - k.T @ u
        return (gx if exact is None else gx + kx + ky), None
    gu = xp.sum(k, axis=1)[:, None] * u - k @ v
    gv = xp.sum(k, axis=0)[:, None] * v - k.T @ u
    if exact is not None:
        gu, gv = gu + kx, gv + ky
    return gu, gv


def _refine(xp, approx, flag, x, y, scale):
    """``approx`` with flagged entries replaced by scale·‖x_i − y_j‖², exactly.

    Returns ``(values, exact)`` (``exact`` is None when nothing is flagged).
    No scatter: the exact values are placed with a row-major rank (a
    cumulative sum of the flags), ``take`` and ``where``.
    """
    if not _checks.any_true(xp, flag):
        return approx, None
    if not _checks.has_dynamic_shapes(xp) or _checks.is_traced(flag):
        # JAX (jit or not) and strict without dynamic shapes
        return _refine_dense(xp, approx, flag, x, y, scale)
    rows, cols = xp.nonzero(flag)
    n = rows.shape[0]
    exact = []
    for s, e in _chunks(n, _CHUNK_ELEMENTS // max(x.shape[1], 1)):
        diff = xp.take(x, rows[s:e], axis=0) - xp.take(y, cols[s:e], axis=0)
        exact.append(scale * xp.sum(diff * diff, axis=1))
    exact = xp.astype(xp.concat(exact) if len(exact) > 1 else exact[0], approx.dtype)

    idx = _checks.default_index_dtype(xp, _device_of(approx))
    starts = xp.cumulative_sum(xp.count_nonzero(flag, axis=1), include_initial=True)
    out = []
    for r0, r1 in _chunks(approx.shape[0], _CHUNK_ELEMENTS // max(approx.shape[1], 1)):
        fb = flag[r0:r1, :]
        first = int(starts[r0])
        if int(starts[r1]) == first:
            out.append(approx[r0:r1, :])
            continue
        rank = xp.cumulative_sum(xp.reshape(xp.astype(fb, idx), (-1,))) - 1 + first
        placed = xp.reshape(xp.take(exact, xp.clip(rank, 0, n - 1)), fb.shape)
        out.append(xp.where(fb, placed, approx[r0:r1, :]))
    values = xp.concat(out, axis=0) if len(out) > 1 else out[0]
    return values, _Exact(flag, rows, cols, starts)


def _refine_dense(xp, approx, flag, x, y, scale):
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
        diff = x[r0:r1, None, :] - y[None, :, :]
        exact = xp.astype(scale * xp.sum(diff * diff, axis=-1), approx.dtype)
        out.append(xp.where(fb, exact, approx[r0:r1, :]))
    values = xp.concat(out, axis=0) if len(out) > 1 else out[0]
    return values, _Exact(flag, None, None, None)


def _exact_pair_grads(xp, k, exact, x, y):
    r""":math:`\sum_j K_{ij}(x_i - y_j)` for x and :math:`-\sum_i K_{ij}(x_i - y_j)`
    for y, over the flagged pairs only, from the raw rows.

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
            kb = xp.where(flag[r0:r1, :], k[r0:r1, :], xp.zeros_like(k[r0:r1, :]))
            contrib = kb[:, :, None] * (x[r0:r1, None, :] - y[None, :, :])
            gx.append(xp.sum(contrib, axis=1))
            gy = gy - xp.sum(contrib, axis=0)
        return (xp.concat(gx, axis=0) if len(gx) > 1 else gx[0]), gy

    rows, cols = exact.rows, exact.cols
    width = k.shape[1]
    w = xp.take(xp.reshape(k, (-1,)), rows * width + cols)
    gx = _segment_sums(xp, w, rows, cols, x, y, exact.row_starts, x.shape[0], 1.0)
    order = xp.argsort(cols, stable=True)
    col_starts = xp.cumulative_sum(xp.count_nonzero(flag, axis=0), include_initial=True)
    gy = _segment_sums(
        xp, xp.take(w, order), xp.take(rows, order), xp.take(cols, order),
        x, y, col_starts, y.shape[0], -1.0,
    )
    return gx, gy


def _segment_sums(xp, w, rows, cols, x, y, starts, n_out, sign):
    """out[s] = sign · Σ_{k in segment s} w_k (x[rows_k] − y[cols_k])."""
    n = w.shape[0]
    out = xp.zeros((n_out, x.shape[1]), dtype=x.dtype, device=_device_of(x))
    lo_all, hi_all = starts[:-1], starts[1:]
    for s, e in _chunks(n, _CHUNK_ELEMENTS // max(x.shape[1], 1)):
        diff = xp.take(x, rows[s:e], axis=0) - xp.take(y, cols[s:e], axis=0)
        prefix = xp.cumulative_sum(w[s:e, None] * diff, axis=0, include_initial=True)
        lo = xp.clip(lo_all, s, e) - s
        hi = xp.clip(hi_all, s, e) - s
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
        return d, (metric, d, diff, both, ares, bres)
    diff = a - b
    d2 = xp.sum(diff * diff, axis=1)
    d = d2 if metric == "sqeuclidean" else _safe_sqrt(xp, d2)
    return d, (metric, d, diff, None, None, None)


def paired_backward(xp: Any, residuals: Any, g: Any):
    metric, d, diff, both, ares, bres = residuals
    if metric == "cosine":
        k = xp.where(both, g, xp.zeros_like(g))
        ga = k[:, None] * diff
        return normalize_backward(xp, ares, ga), normalize_backward(xp, bres, -ga)
    k = 2.0 * g if metric == "sqeuclidean" else _div_or_zero(xp, g, d)
    ga = k[:, None] * diff
    return ga, -ga


# --------------------------------------------------------------------------
# helpers


def _tol(xp, dtype):
    return _REFINE_TOL[64 if xp.finfo(dtype).bits >= 64 else 32]


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


def _pairwise_fwd(x, y=None, *, metric="euclidean"):
    xp = _validate_pair_inputs(x, y, metric, "x", "y", same_rows=False)
    dtype = x.dtype
    cdt = _checks.compute_dtype(xp, dtype)
    xc = xp.astype(x, cdt)
    yc = None if y is None else xp.astype(y, cdt)
    d, res = pairwise_forward(xp, xc, yc, metric)
    return xp.astype(d, dtype), (xp, dtype, res)


def _pairwise_bwd(residuals, g):
    xp, dtype, res = residuals
    gx, gy = pairwise_backward(xp, res, g)
    return xp.astype(gx, dtype), (None if gy is None else xp.astype(gy, dtype))


@defvjp(_pairwise_fwd, _pairwise_bwd)
def pairwise_distances(x: Any, y: Any = None, *, metric: str = "euclidean") -> Any:
    r"""Distance matrix :math:`D_{ij} = d(x_i, y_j)` (``y=None`` means ``y = x``).

    Metrics: ``"euclidean"`` :math:`\lVert x_i - y_j\rVert`, ``"sqeuclidean"``
    :math:`\lVert x_i - y_j\rVert^2`, ``"cosine"`` :math:`1 - \hat x_i\cdot\hat y_j`.

    Gradient (through :func:`refloss.vjp`), with :math:`G = \partial L/\partial D`:
    :math:`\partial L/\partial X = \mathrm{diag}(K\mathbf 1)X - KY`,
    :math:`\partial L/\partial Y = \mathrm{diag}(K^\top\mathbf 1)Y - K^\top X`,
    with :math:`K = G/D` (0 where D = 0) for euclidean and :math:`K = 2G` for
    sqeuclidean; cosine goes through the normalisation (see
    :func:`refloss.l2_normalize`). For ``y=None`` both terms land on ``x``.

    Accuracy: one GEMM on mean-centred rows, with the entries that
    cancellation would spoil recomputed exactly; identical rows give exactly
    0 and the euclidean gradient there is 0 (see the module docstring).

    Args:
        x: ``[B, D]`` floating array.
        y: ``[B', D]`` floating array of the same dtype, or ``None``.
        metric: ``"euclidean"`` (default), ``"sqeuclidean"`` or ``"cosine"``.

    Returns:
        ``[B, B']`` array in the namespace, device and dtype of ``x``
        (float16/bfloat16 computed in float32).

    References:
        TensorFlow Addons ``pairwise_distance`` and ``torch.cdist`` use the same
        GEMM expansion without the exact recomputation (docs/distances.md).
    """
    return _pairwise_fwd(x, y, metric=metric)[0]


def _paired_fwd(a, b, *, metric="euclidean"):
    xp = _validate_pair_inputs(a, b, metric, "a", "b", same_rows=True)
    dtype = a.dtype
    cdt = _checks.compute_dtype(xp, dtype)
    d, res = paired_forward(xp, xp.astype(a, cdt), xp.astype(b, cdt), metric)
    return xp.astype(d, dtype), (xp, dtype, res)


def _paired_bwd(residuals, g):
    xp, dtype, res = residuals
    ga, gb = paired_backward(xp, res, g)
    return xp.astype(ga, dtype), xp.astype(gb, dtype)


@defvjp(_paired_fwd, _paired_bwd)
def paired_distances(a: Any, b: Any, *, metric: str = "euclidean") -> Any:
    r"""Row-wise distances :math:`d_i = d(a_i, b_i)`.

    Computed directly from :math:`a_i - b_i` (exact; no GEMM). For cosine,
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

    Returns:
        ``[B]`` array in the namespace, device and dtype of ``a``.

    References:
        Unlike ``torch.nn.functional.pairwise_distance``, no epsilon is added
        to the difference: d(x, x) = 0 exactly.
    """
    return _paired_fwd(a, b, metric=metric)[0]
