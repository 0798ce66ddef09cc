r"""Triplet mining over a labeled batch, and the row-wise search behind it.

Notation: :math:`d_{ij}` the distance between embeddings i and j under
``metric``; a *positive* of anchor a is :math:`p \ne a` with
:math:`y_p = y_a`, a *negative* is n with :math:`y_n \ne y_a`.

* **batch-hard** (Hermans, Beyer, Leibe 2017): per anchor with at least one
  positive and one negative, the hardest positive
  :math:`p_a = \arg\max_p d_{ap}` and the hardest negative
  :math:`n_a = \arg\min_n d_{an}`.
* **semi-hard** (Schroff et al. 2015, as TensorFlow defines it): per ordered
  positive pair (a, p) whose anchor has at least one negative,
  :math:`n^* = \arg\min\{d_{an} : d_{an} > d_{ap}\}` (strict), and when no
  negative is farther than the positive, :math:`n^* = \arg\max_n d_{an}`.

Ties in every max/min go to the lowest index, identically on every backend:
maxima and minima are found as values first, then the lowest column holding
that value; sorted orders come from a *stable* row-wise ``argsort``.

Semi-hard mining costs O(B² log B): each anchor's negative distances are
sorted once (non-negatives pushed to +inf), and every positive is answered
by a rank lookup, the number of negatives :math:`\le d_{ap}`, found by
:func:`row_searchsorted`. The array API's ``searchsorted`` takes a 1-D
sorted array only, so the row-wise search is batched by hand: a merge by one
stable row-wise ``argsort`` in standard operations (CuPy, JAX,
array-api-strict), PyTorch's native batched ``searchsorted``, and on NumPy a
branch-free binary search over blocks of rows; all give identical integers.
Memory is O(B²): nothing of size B³ is ever formed.

The miners return index arrays of data-dependent length (they use
``nonzero``); the losses in :mod:`refloss.triplet` use the same selection
without ``nonzero`` and run where data-dependent shapes are unavailable.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from array_api_compat import device as _device
from array_api_compat import is_numpy_namespace, is_torch_namespace

from . import _checks, _ops
from .distances import METRICS, pairwise_backward, pairwise_forward
from .normalization import normalize_backward, normalize_forward

__all__ = ["mine_batch_hard", "mine_semihard", "row_searchsorted"]

SIDES = ("left", "right")
# Elements of the working arrays of one block of NumPy's search: cache-sized.
_SEARCH_ELEMENTS_CPU = 1 << 16
# NumPy's grid search (_Grid): 2 cells per entry leave a few entries in the
# fullest cell of bell-shaped distances (1 to 4 per entry measured within a
# few % of each other); it serves rows of at least 16 entries (fewer: the
# plain search has <= 5 rounds) with at least 4 queries per entry (its tables
# cost O(n) per row).
_GRID_CELLS_PER_ENTRY = 2
_GRID_MIN_ENTRIES = 16
_GRID_QUERIES_PER_ENTRY = 4
_GRID_TABLE_ELEMENTS = 1 << 20


# --------------------------------------------------------------------------
# row-wise search


def row_searchsorted(
    xp: Any, sorted_rows: Any, queries: Any, *, side: str = "left", portable: bool = False,
    narrow: bool = False,
) -> Any:
    r"""Per row r, how many entries of ``sorted_rows[r]`` lie below each query.

    ``out[r, j] = #{i : sorted_rows[r, i] < queries[r, j]}`` for ``side="left"``
    and ``#{i : sorted_rows[r, i] <= queries[r, j]}`` for ``side="right"`` —
    NumPy's ``searchsorted`` applied row by row. ``sorted_rows`` is ``[R, n]``
    with ascending rows (``±inf`` allowed, no NaN), ``queries`` is ``[R, m]``
    (no NaN) of the same floating dtype; the result is ``[R, m]`` in the
    default index dtype, or in int32 with ``narrow=True`` (where n < 2³¹:
    half the memory of a B×B result). ``-0.0`` and ``0.0`` are equal, as in
    NumPy.

    Every path is batched over all rows at once (no loop over rows) and gives
    the same integers:

    * **portable** (CuPy, JAX, array-api-strict, and every backend with
      ``portable=True``): a merge in 2024.12 standard ops only, without
      data-dependent shapes (it runs under ``jax.jit``). Each row's queries
      and entries are concatenated and ordered by one stable row-wise
      ``argsort`` — queries first for ``"left"``, so that a query sorts
      before the entries equal to it, entries first for ``"right"`` — a
      ``cumulative_sum`` of the "is an entry" tags counts the entries before
      every merged position, and the inverse permutation (a second
      ``argsort``) reads that count back at each query. O(R·(n+m)·log(n+m))
      work in a fixed number of array operations, whatever R, n, m and the
      data (a GPU launches the same few kernels at every size).
    * **PyTorch**: ``torch.searchsorted``, batched natively.
    * **NumPy**: a branch-free binary search (the branchless lower bound of
      Khuong and Morin) over all queries of a cache-sized block of rows at
      once: :math:`\lceil\log_2 n\rceil + 1` rounds of one flat ``take``,
      one comparison and one add, O(R·m·log n); several times faster than
      ``numpy.searchsorted`` row by row, whose binary search branches on
      every step of every query. Rows of n >= 16 entries with m >= 4n
      queries first look each query up in a uniform grid of 2n cells over
      the row's finite entries (:class:`_Grid`), and search only the
      entries of its cell: 5 rounds instead of 10 at n = 512 for
      bell-shaped distances, about 0.75× the time; where a cell is crowded
      (ties, outliers) the block falls back to the plain search.

    Reference: P.-V. Khuong, P. Morin, "Array layouts for comparison-based
    searching", ACM J. Exp. Algorithmics 22 (2017), the branch-free search.
    """
    _checks.check_choice("side", side, SIDES)
    narrow = _checks.check_flag("narrow", narrow) and sorted_rows.shape[1] < (1 << 31)
    if not portable and is_torch_namespace(xp):
        return xp.searchsorted(sorted_rows, queries, side=side, out_int32=narrow)
    rows, n = sorted_rows.shape
    m = queries.shape[1]
    idx = xp.int32 if narrow else _checks.default_index_dtype(xp, _device(queries))
    if rows == 0 or m == 0 or n == 0:
        return xp.zeros((rows, m), dtype=idx, device=_device(queries))
    if not portable and is_numpy_namespace(xp):
        return _numpy_search(sorted_rows, queries, side, idx)
    return xp.astype(_merge_search(xp, sorted_rows, queries, side, idx), idx, copy=False)


def _merge_search(xp, s, q, side, idx):
    n, m = s.shape[1], q.shape[1]
    left = side == "left"
    # + 0.0 turns -0.0 into 0.0: a radix sort (CuPy's) may order the two zeros
    merged = xp.concat([q, s] if left else [s, q], axis=1) + 0.0
    order = xp.argsort(merged, axis=1, stable=True)
    del merged
    tag = xp.astype((order >= m) if left else (order < n), idx)
    before = xp.cumulative_sum(tag, axis=1) - tag  # entries ahead of each position
    del tag
    at = xp.argsort(order, axis=1, stable=False)  # each element's merged position
    del order
    at = at[:, :m] if left else at[:, n:]
    return xp.take_along_axis(before, at, axis=1)


def _numpy_search(s, q, side, idx):
    (rows, n), m = s.shape, q.shape[1]
    plan = _search_plan(s)
    out = np.empty((rows, m), dtype=idx)
    step = max(1, _SEARCH_ELEMENTS_CPU // m)
    # many queries per entry: the grid's per-row tables pay for themselves
    # float32/float64: a float16 grid of 2n cells could pass its largest float
    grids = (n >= _GRID_MIN_ENTRIES and m >= _GRID_QUERIES_PER_ENTRY * n
             and s.dtype in (np.float32, np.float64))
    chunk = rows
    if grids:  # one grid per chunk of rows (its tables about 2^20 elements),
        # searched in the same cache-sized blocks of queries as the plain search
        chunk = max(step, _GRID_TABLE_ELEMENTS // (_GRID_CELLS_PER_ENTRY * n + 2) // step * step)
    for c0, c1 in _chunks(rows, chunk):
        grid = _grid_plan(s[c0:c1, :], len(plan[2])) if grids else None
        for r0, r1 in _chunks(c1 - c0, step):
            r0, r1 = r0 + c0, r1 + c0
            if grid is None:
                start = (np.arange(r0, r1, dtype=plan[0]) * plan[0](n))[:, None]
                if out.dtype == plan[0]:  # searched in place: no copy of the block
                    out[r0:r1, :] = start
                    _search_block(plan, out[r0:r1, :], start, q[r0:r1, :], side)
                else:
                    pos = np.repeat(start, m, axis=1)
                    out[r0:r1, :] = _search_block(plan, pos, start, q[r0:r1, :], side)
            else:
                _grid_search(grid, r0 - c0, r1 - c0, q[r0:r1, :], side, out[r0:r1, :])
    return out


class _Grid:
    r"""NumPy's grid over the rows of ``s`` (ascending, no NaN), for
    :func:`_grid_search`: the same counts as :func:`_search_block` in fewer
    rounds where each row has many queries.

    Each row's finite entries span ``[lo, hi]``;
    ``cell(v) = trunc(clip((v - lo)·c, -1, G))``, c = G/(hi - lo) and G = 2n
    cells. ``cell`` is non-decreasing in v (each step rounds monotonically),
    so every entry of a lower cell is below the query and every entry of a
    higher cell above it: the answer lies between the first entry of the
    query's cell and the first of the next cell, and the branch-free search
    runs over the fullest cell's length (``width``: a few entries where n
    are spread over 2n cells) instead of n.

    -inf entries are cell -1, below every finite query: the search of cell
    -1 starts after them. +inf entries never count for a finite query, so
    they are left out of ``width``. The two infinite queries that would
    reach past them (-inf with ``"left"``, +inf with ``"right"``) are set at
    the end (0 and n). Rows are padded with ``width`` NaN, which no
    comparison counts: a search running past its row's end reads those.
    """

    def __init__(self, s, width):
        (rows, n), dt = s.shape, s.dtype
        self.cells = _GRID_CELLS_PER_ENTRY * n
        self.n, self.width = n, width
        finite = np.isfinite(s)
        lo = np.min(np.where(finite, s, np.inf), axis=1)
        hi = np.max(np.where(finite, s, -np.inf), axis=1)
        empty = ~(lo <= hi)  # no finite entry: any non-decreasing cell() serves
        self.lo = np.where(empty, 0.0, lo).astype(dt)[:, None]
        fi = np.finfo(dt)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            # finite and > 0: (v - lo)·c is never 0·inf, never NaN for v not NaN
            c = np.clip(dt.type(self.cells) / (hi - lo), fi.smallest_normal, fi.max)
        self.c = np.where(empty, 1.0, c).astype(dt)[:, None]
        self.base = (np.arange(rows, dtype=np.int32) * np.int32(self.cells + 2))[:, None]

    def keys(self, v, r0, r1):
        """Each value's position in the flat table of rows r0..r1-1 (int32)."""
        with np.errstate(over="ignore", invalid="ignore"):
            y = v - self.lo[r0:r1]
            y *= self.c[r0:r1]
            np.clip(y, -1.0, self.cells, out=y)
            k = y.astype(np.int32)
        # +1: cell -1 is column 0 of a row's table, whose columns are 0..G+1
        k += self.base[r0:r1] - (self.base[r0] - 1)
        return k


def _grid_plan(s, plain_halves):
    """The :class:`_Grid` of ``s`` with its tables, or None where its
    fullest cell leaves the plain search no slower (ties, outliers)."""
    rows, n = s.shape
    grid = _Grid(s, 0)
    count = np.bincount(grid.keys(s, 0, rows).reshape(-1), minlength=rows * (grid.cells + 2))
    count = count.reshape(rows, grid.cells + 2)
    top = np.sum(s == np.inf, axis=1)
    width = int(max(np.max(count[:, 1:-1], initial=0), np.max(count[:, -1] - top, initial=0)))
    if width > 0 and len(_halves(width)) + 2 >= plain_halves:
        return None
    grid.width = width
    grid.low = bool(np.any(count[:, 0]))  # -inf entries
    grid.top = bool(np.any(top))  # +inf entries
    # each cell's first entry (cell -1: the first after the -inf entries), as
    # a flat position in the padded rows
    first = np.cumsum(count, axis=1, dtype=np.int32)
    first -= count.astype(np.int32)
    first[:, 0] = first[:, 1]
    stride = n + width
    grid.start = (np.arange(rows, dtype=np.int32) * np.int32(stride))[:, None]
    first += grid.start
    grid.first = first
    padded = np.full((rows, stride), np.nan, dtype=s.dtype)
    padded[:, :n] = s
    flat = padded.reshape(-1)
    grid.plan = (np.int32, flat, [(np.int32(h), flat[h:]) for h in _halves(width)])
    return grid


def _grid_search(grid, r0, r1, q, side, out):
    """Writes into ``out`` the counts of queries ``q`` in the rows r0..r1-1
    of ``grid`` (:class:`_Grid`)."""
    # int32 results are searched in place (no copy of the block)
    pos = out if out.dtype == np.int32 else np.empty(q.shape, dtype=np.int32)
    np.take(grid.first[r0:r1, :].reshape(-1), grid.keys(q, r0, r1), out=pos)
    if grid.width:
        _search_block(grid.plan, pos, grid.start[r0:r1], q, side)
    else:
        pos -= grid.start[r0:r1]
    if side == "left" and grid.low:  # -inf queries: no entry lies below
        pos[q == -np.inf] = 0
    elif side == "right" and grid.top:  # +inf queries: every entry is at most it
        pos[q == np.inf] = grid.n
    if pos is not out:
        out[...] = pos


def search_rows_at(sorted_rows: Any, rows: Any, queries: Any, side: str) -> Any:
    """NumPy only: ``out[i] = #{e in sorted_rows[rows[i]] : e < queries[i]}``
    (``<=`` for ``side="right"``), intp: :func:`row_searchsorted` for a
    scattered set of (row, query) pairs (1-D ``rows`` and ``queries``), with
    the same branch-free search in cache-sized blocks, O(len · log n)."""
    n = sorted_rows.shape[1]
    out = np.empty(queries.shape, dtype=np.intp)
    if n == 0:
        out[...] = 0
        return out
    plan = _search_plan(sorted_rows)
    for i0, i1 in _chunks(queries.shape[0], _SEARCH_ELEMENTS_CPU):
        start = rows[i0:i1].astype(plan[0]) * plan[0](n)
        out[i0:i1] = _search_block(plan, start.copy(), start, queries[i0:i1], side)
    return out


def _search_plan(s):
    """``(position dtype, flat rows, [(half, rows shifted by it)])`` of the
    branch-free search in ``s`` (rows ascending): the same halving steps
    for every query, since they depend on the row length only."""
    flat = np.ascontiguousarray(s).reshape(-1)
    # 32-bit positions where they fit: half the memory traffic of each round
    pos_dtype = np.int32 if flat.shape[0] < (1 << 31) else np.intp
    # flat[h:][i] == flat[i + h]
    return pos_dtype, flat, [(pos_dtype(h), flat[h:]) for h in _halves(s.shape[1])]


def _halves(width):
    """The halving steps of a branch-free search over ``width`` entries."""
    out = []
    while width > 1:
        out.append(width // 2)
        width -= width // 2
    return out


def _search_block(plan, pos, start, q, side):
    """The counts of one block of queries ``q``, each in the row beginning
    at flat position ``start`` (broadcastable to q); ``pos`` holds those
    starts at q's shape and is consumed."""
    _, flat, halves = plan
    below = np.less if side == "left" else np.less_equal
    # invariant: the answer for each query lies in [pos, pos + width], so
    # every position read is inside its row ("wrap" never wraps; it is the
    # cheapest mode that writes to ``out`` unbuffered)
    val = np.empty(q.shape, dtype=flat.dtype)
    hit = np.empty(q.shape, dtype=bool)
    step = np.empty_like(pos)
    for h, shifted in halves:
        np.take(shifted, pos, out=val, mode="wrap")
        below(val, q, out=hit)
        # bool -> int copy, then an integer multiply: about a third of the
        # time of multiplying the bools by h (a casting loop)
        np.copyto(step, hit, casting="unsafe")
        step *= h
        pos += step
    np.take(flat, pos, out=val, mode="wrap")
    below(val, q, out=hit)
    pos -= start
    pos += hit
    return pos


def stable_row_sort(xp: Any, a: Any) -> tuple[Any, Any]:
    r"""``(sorted, order)``: each row of ``a`` in ascending order, and its
    stable ``argsort`` (equal values in column order, ``-0.0 == 0.0``, NaN last).

    ``sorted[r, i] == a[r, order[r, i]]`` up to the sign of a zero. On NumPy
    float32 rows of fewer than 2³² columns both come from one sort of 64-bit
    keys, ``(k(a) << 32) | column``, k the order-preserving map of a float's
    bits onto unsigned integers (sign bit set: all bits flipped, else the
    sign bit set): a lexicographic (value, column) order, which is exactly the
    stable order, in about 0.4× the time of NumPy's stable ``argsort`` (a
    radix or merge sort there); elsewhere ``argsort(stable=True)`` and one
    ``take_along_axis``.
    """
    if packs_rows(xp, a):
        return _packed_sort(a)
    order = xp.argsort(a, axis=1, stable=True)
    return xp.take_along_axis(a, order, axis=1), order


def packs_rows(xp: Any, a: Any) -> bool:
    """Whether :func:`stable_row_sort` of ``a`` takes the packed 64-bit key
    sort (NumPy float32): a stable order then costs about two value sorts."""
    return is_numpy_namespace(xp) and a.dtype == np.float32 and a.shape[-1] < (1 << 32)


def sum_by_column(columns: Any, weights: Any, width: int) -> Any:
    r"""NumPy only: ``H[r, c] = Σ_j weights[r, j] [columns[r, j] = c]``, ``[R, width]``.

    One unbuffered ``numpy.add.at`` on the flat keys ``r·width + columns[r, j]``:
    O(R·(J + width)), in the weights' dtype (no float64 copy of the block),
    and deterministic (the adds run in index order). The portable paths sum
    by value after a row-wise search instead (no scatter outside NumPy).
    """
    rows = columns.shape[0]
    h = np.zeros(rows * width, dtype=weights.dtype)
    np.add.at(h, row_keys(columns, width), weights.reshape(-1))
    return h.reshape(rows, width)


def row_keys(columns: Any, width: int) -> Any:
    """NumPy only: the flat keys ``r·width + columns[r, j]`` (1-D, intp) of
    an ``[R, J]`` block: positions in a flat ``[R, width]`` array. intp, the
    index type ``bincount``, ``add.at`` and ``take`` would convert narrower
    keys to (one conversion here instead of one in each)."""
    rows = columns.shape[0]
    return (columns + (np.arange(rows, dtype=np.intp) * width)[:, None]).reshape(-1)


def count_and_sum_by_key(keys: Any, weights: Any, size: int) -> tuple[Any, Any]:
    """NumPy only: ``(N, H)``, 1-D of ``size``: how many ``keys`` equal each
    position (intp), and the sum of their ``weights`` there, in the weights'
    dtype (one ``numpy.bincount`` and one unbuffered ``numpy.add.at``, adds in
    index order: deterministic)."""
    n = np.bincount(keys, minlength=size)
    h = np.zeros(size, dtype=weights.dtype)
    np.add.at(h, keys, weights.reshape(-1))
    return n, h


def min_by_column(columns: Any, keys: Any, width: int) -> Any:
    r"""NumPy only: ``M[r, c] = min_j {keys[r, j] : columns[r, j] = c}``, ``[R, width]``
    uint64, :data:`EMPTY_KEY` where no key falls in (r, c).

    The scatter-minimum of :func:`sum_by_column`: one unbuffered
    ``numpy.minimum.at`` on the flat keys ``r·width + columns[r, j]``,
    O(R·(J + width)). With the keys of :func:`packed_keys` the minimum is the
    smallest value and, among equal values, the lowest column.
    """
    rows = columns.shape[0]
    m = np.full(rows * width, EMPTY_KEY, dtype=np.uint64)
    np.minimum.at(m, row_keys(columns, width), keys.reshape(-1))
    return m.reshape(rows, width)


_SIGN = np.uint32(1 << 31)
_LOW = np.uint64((1 << 32) - 1)
# Larger than every key of packed_keys (whose column part is < 2^32 - 1).
EMPTY_KEY = np.uint64((1 << 64) - 1)


def packed_keys(a: Any) -> Any:
    r"""NumPy float32 ``[R, n]`` (n < 2³² - 1): the uint64 keys
    ``(k(a) << 32) | column``, whose integer order is the (value, column)
    order: k maps a float's bits onto unsigned integers preserving order
    (sign bit set: all bits flipped, else the sign bit set), ``-0.0`` is
    ``0.0`` first and every NaN one pattern (last). :func:`unpack_keys`
    inverts it.
    """
    v = a + np.float32(0.0)  # a fresh copy, and -0.0 becomes 0.0
    nan = np.isnan(v)
    if nan.any():  # one bit pattern for every NaN: they keep column order
        v[nan] = np.float32(np.nan)
    del nan
    bits = v.view(np.uint32)
    # non-negative floats (distances) already order as their bits do, once
    # the sign bit is set
    if bool((v < 0).any()):
        bits = np.where(bits >= _SIGN, ~bits, bits | _SIGN)
    else:
        bits |= _SIGN
    packed = bits.astype(np.uint64)
    del v, bits
    packed <<= np.uint64(32)
    packed |= np.arange(a.shape[-1], dtype=np.uint64)
    return packed


def unpack_keys(keys: Any) -> tuple[Any, Any]:
    """``(values, columns)`` of :func:`packed_keys`' keys: float32 values
    (``-0.0`` as ``0.0``, NaN as one NaN) and intp columns."""
    columns = (keys & _LOW).astype(np.intp)
    k = (keys >> np.uint64(32)).astype(np.uint32)
    if bool((k < _SIGN).any()):  # negative values
        k = np.where(k >= _SIGN, k & ~_SIGN, ~k)
    else:  # in place: no second array of the keys' size (peak memory)
        k &= ~_SIGN
    return k.view(np.float32), columns


def _packed_sort(a):
    packed = packed_keys(a)
    packed.sort(axis=1)
    return unpack_keys(packed)


def semihard_by_buckets(d: Any, neg: Any, tab_d: Any, valid: Any) -> tuple:
    r""":func:`refloss.triplet._semihard_compact_rows` on NumPy float32, without sorting B×B:
    ``(valid, d_an*, None, n*)``.

    Each anchor's positive distances τ are sorted (B×W, +inf off the
    positives), and every negative falls in the bucket
    ``β_n = #{q : τ_(q) < d_an}`` (one row-wise search of B×B queries among
    W: :func:`row_searchsorted`). The negatives strictly
    farther than τ_(q) are those of the buckets ``β > q``, so the semi-hard
    negative of τ_(q) is the minimum over buckets q+1..W of each bucket's
    minimum. A bucket's minimum is a scatter-minimum of the
    (value, column) keys of :func:`packed_keys`
    (:func:`min_by_column`): the smallest d_an and, among
    equal ones, the lowest column — the same n* as the stable order, at
    O(B² log W) instead of a B×B sort. The suffix minima are B×W; no
    positive's semi-hard negative: the largest negative (``argmax``:
    its lowest column). Non-negatives go to bucket 0, which no τ reads.
    """
    rows = d.shape[0]
    tau = np.where(valid, tab_d, np.inf)
    order = np.argsort(tau, axis=1)  # ties: equal τ get equal answers
    tau = np.take_along_axis(tau, order, axis=1)
    bucket = np.where(neg, row_searchsorted(np, tau, d, side="left", narrow=True), 0)
    del tau
    lowest = min_by_column(bucket, packed_keys(d), order.shape[1] + 1)
    del bucket
    # suffix minima over buckets q+1..W, for the sorted τ_(q)
    suffix = np.minimum.accumulate(lowest[:, :0:-1], axis=1)[:, ::-1]
    del lowest
    found = suffix != EMPTY_KEY
    value, column = unpack_keys(suffix)
    masked = np.where(neg, d, -np.inf)
    farthest = np.argmax(masked, axis=1)[:, None]
    largest = np.take_along_axis(masked, farthest, axis=1)
    del masked
    d_an = np.empty_like(tab_d)
    n_star = np.empty(order.shape, dtype=np.intp)
    r = np.arange(rows)[:, None]
    d_an[r, order] = np.where(found, value, largest)
    n_star[r, order] = np.where(found, column, farthest)
    d_an = np.where(valid, d_an, np.float32(0.0))
    n_star = np.where(valid, n_star, 0)
    return valid, d_an, None, n_star


def _chunks(n, step):
    step = max(1, step)
    return [(s, min(s + step, n)) for s in range(0, n, step)]


# --------------------------------------------------------------------------
# shared stages: validation, embeddings -> distance matrix, label masks


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool (True or False), got {type(value).__name__}")
    return value


def check_labeled_batch(
    x: Any, labels: Any, metric: Any, normalize: Any, check: Any = True
) -> Any:
    """Validate ``(x, labels, metric, normalize, check)``; returns the
    namespace, the labels in the default index dtype and the call's
    :class:`~refloss._checks.Fetch` (x's finiteness queued in it)."""
    xp = _checks.namespace(x=x, labels=labels)
    _checks.check_float(xp, "x", x)
    _checks.check_rank("x", x, 2, "a 2-D array (batch, dim)")
    labels = _checks.check_labels(xp, "labels", labels, x.shape[0], "x")
    _checks.check_choice("metric", metric, METRICS)
    check_bool("normalize", normalize)
    fetch = _checks.Fetch(xp, check=_checks.check_flag("check", check))
    fetch.finite("x", x)
    return xp, labels, fetch


def embed_forward(xp: Any, x: Any, metric: str, normalize: bool, fetch: Any = None,
                  rows: tuple[int, int] | None = None):
    """``(D, residuals)``: optional L2 normalisation, then the B×B distances
    (whose sizes are read in ``fetch``'s one read), or with
    ``rows=(start, stop)`` the b×B block of rows start..stop-1 (anchors)
    against every row (b = stop - start)."""
    nres = None
    if normalize:
        x, nres = normalize_forward(xp, x)
    if rows is None:
        d, dres = pairwise_forward(xp, x, None, metric, fetch)
        return d, (nres, dres)
    d, dres = pairwise_forward(xp, x[rows[0]:rows[1], :], x, metric, fetch)
    return d, (nres, dres, rows)


def embed_backward(xp: Any, residuals: Any, g: Any) -> Any:
    """∂L/∂x from G = ∂L/∂D (B×B, or the b×B block; an array or its row
    blocks, :class:`~refloss._ops.RowBlocks`): two GEMMs, then the
    normalisation's chain rule. A block's rows receive the gradient of both
    their roles (anchor row and column), joined by concatenation, not scatter."""
    nres, dres = residuals[0], residuals[1]
    gx, gy = pairwise_backward(xp, dres, g)
    if len(residuals) > 2:
        gx = block_grad(xp, gx, gy, residuals[2])
    if nres is not None:
        gx = normalize_backward(xp, nres, gx)
    return gx


def block_grad(xp: Any, g_rows: Any, g_cols: Any, rows: tuple[int, int]) -> Any:
    """∂L/∂x of a b×B block D[i, j] = d(x_{start+i}, x_j): the columns' part
    ``g_cols`` ([B, dim]) plus the anchor rows' part ``g_rows`` ([b, dim])
    placed at rows start..stop-1 (zeros concatenated around it, no scatter)."""
    start, stop = rows
    n, dim = g_cols.shape
    parts = [g_rows]
    if start:
        parts.insert(0, xp.zeros((start, dim), dtype=g_cols.dtype, device=_device(g_cols)))
    if stop < n:
        parts.append(xp.zeros((n - stop, dim), dtype=g_cols.dtype, device=_device(g_cols)))
    return g_cols + (xp.concat(parts, axis=0) if len(parts) > 1 else g_rows)


def label_masks(xp: Any, labels: Any, like: Any, offset: int = 0):
    """``(pos, neg, cols)``: positives p != a with y_p = y_a, negatives y_n != y_a,
    and the column indices ``arange(B)`` (default index dtype).

    ``like`` is the distance matrix, or a block of its rows: row i is anchor
    ``offset + i`` (its own column), the columns are the whole batch."""
    b = labels.shape[0]
    idx = _checks.default_index_dtype(xp, _device(like))
    cols = xp.arange(b, dtype=idx, device=_device(like))
    rows = cols[offset : offset + like.shape[0]]
    same = labels[offset : offset + like.shape[0]][:, None] == labels[None, :]
    pos = same & (rows[:, None] != cols[None, :])
    return pos, ~same, cols


# --------------------------------------------------------------------------
# selection (no data-dependent shapes)


def arg_extreme(xp: Any, d: Any, mask: Any, cols: Any, *, largest: bool):
    """Per row, ``(value, index, has)`` of the max (``largest``) or min of ``d``
    over ``mask``; ties go to the lowest column; rows with an empty mask get
    value 0, index 0 and ``has`` False. The value is gathered at the index
    (so autograd through it reaches exactly that entry)."""
    b = d.shape[1]  # past every column: the sentinel of an empty row
    fill = -float("inf") if largest else float("inf")
    masked = xp.where(mask, d, fill)
    best = xp.max(masked, axis=1) if largest else xp.min(masked, axis=1)
    hit = mask & (masked == best[:, None])
    index = xp.min(xp.where(hit, cols[None, :], b), axis=1)
    has = xp.any(mask, axis=1)
    index = xp.where(has, index, 0)
    value = xp.take_along_axis(d, index[:, None], axis=1)[:, 0]
    return xp.where(has, value, 0.0), index, has


class BatchHard:
    """Batch-hard selection: positive/negative index and distance per anchor.

    With ``anchor_as_positive=True`` the anchor is one of its own positives
    at distance exactly 0 (whatever ``d[a, a]`` holds: a zero row's cosine
    self-distance is 1); ``pos[a] == a`` then marks that choice. ``d`` may be
    a block of rows, row i being anchor ``offset + i`` (:func:`label_masks`).
    """

    __slots__ = ("d_an", "d_ap", "neg", "pos", "valid")

    def __init__(
        self, xp: Any, d: Any, labels: Any, *, anchor_as_positive: bool = False,
        offset: int = 0,
    ) -> None:
        pos_mask, neg_mask, cols = label_masks(xp, labels, d, offset)
        d_pos = d
        if anchor_as_positive:
            eye = cols[offset : offset + d.shape[0]][:, None] == cols[None, :]
            pos_mask = pos_mask | eye
            d_pos = xp.where(eye, 0.0, d)
        self.d_ap, self.pos, has_p = arg_extreme(xp, d_pos, pos_mask, cols, largest=True)
        self.d_an, self.neg, has_n = arg_extreme(xp, d, neg_mask, cols, largest=False)
        self.valid = has_p & has_n


class SemiHard:
    """Semi-hard selection for every ordered pair (a, p), in sorted-negative terms.

    Attributes: ``valid`` (B×B: p is a positive of a and a has a negative),
    ``order`` (row-wise stable argsort of the negative distances, non-negatives
    last), ``sorted_neg`` (the sorted distances, +inf past the negatives),
    ``n_neg`` (negatives per anchor), ``fallback`` (per anchor, the sorted
    position of the lowest-index largest negative), ``d_an`` (B×B:
    :math:`d_{an^*}`, 0 where not valid) and, with ``with_index=True``,
    ``neg`` (B×B: the index n*). ``d`` may be a block of rows (b×B), row i
    being anchor ``offset + i``.
    """

    __slots__ = ("d_an", "fallback", "n_neg", "neg", "order", "sorted_neg", "valid")

    def __init__(
        self, xp: Any, d: Any, labels: Any, *, with_index: bool = False,
        portable: bool = False, offset: int = 0,
    ) -> None:
        b = d.shape[1]  # the columns: positions in a sorted row
        pos_mask, neg_mask, _ = label_masks(xp, labels, d, offset)
        idx = _checks.default_index_dtype(xp, _device(d))
        self.n_neg = xp.astype(xp.count_nonzero(neg_mask, axis=1), idx)
        self.valid = pos_mask & (self.n_neg > 0)[:, None]
        neg_d = xp.where(neg_mask, d, float("inf"))
        self.sorted_neg, self.order = stable_row_sort(xp, neg_d)
        del neg_d
        last = _ops.clip(xp, self.n_neg - 1, 0, max(b - 1, 0))
        # fallback: the largest negative; among ties the lowest index, which a
        # stable sort puts first in its run of equal values
        largest = xp.take_along_axis(self.sorted_neg, last[:, None], axis=1)
        fallback = row_searchsorted(
            xp, self.sorted_neg, largest, side="left", portable=portable
        )[:, 0]
        self.fallback = _ops.clip(xp, fallback, 0, max(b - 1, 0))
        # the first negative strictly farther than d_ap sits at #{d_an <= d_ap}
        slot = row_searchsorted(xp, self.sorted_neg, d, side="right", portable=portable)
        slot = xp.where(slot < self.n_neg[:, None], slot, self.fallback[:, None])
        slot = _ops.clip(xp, slot, 0, max(b - 1, 0))
        self.neg = xp.take_along_axis(self.order, slot, axis=1) if with_index else None
        d_an = xp.take_along_axis(self.sorted_neg, slot, axis=1)
        self.d_an = xp.where(self.valid, d_an, 0.0)


class PositiveTable:
    r"""Each anchor's class members as a compact B×W table, W the largest class.

    With the labels stably sorted (``order``), class c occupies the block
    ``[start_c, start_c + count_c)`` of ``order``, so the members of anchor
    a's class are ``members[a, j] = order[start_a + j]`` for
    ``j < count_a``; ``valid`` marks those that are positives (``j < count_a``
    and not a itself). ``d`` holds :math:`d_{a, members[a, j]}`.

    The table is the positives' side of batch-all and semi-hard at O(B·W)
    instead of O(B²): a positive's threshold is searched once, not once per
    column. :meth:`to_dense` maps a B×W table back to B×B without scatter:
    a positive c of a sits at ``j = rank_c`` (its position within its own
    class block), so ``dense[a, c] = table[a, rank_c]`` is a gather along
    columns. W is a Python int read from the labels, so the table needs
    concrete labels (not a JAX tracer). With ``upper=True`` only the members
    of index greater than the anchor are positives (the unordered pairs
    a < p of batch-all). ``d`` may be a block of rows (b×B): the table then
    has the block's anchors ``offset + i`` as rows, and W stays the largest
    class of the whole batch.
    """

    __slots__ = ("d", "members", "rank", "valid", "width")

    def __init__(
        self, xp: Any, d: Any, labels: Any, *, upper: bool = False,
        width: int | None = None, offset: int = 0,
    ) -> None:
        b = labels.shape[0]
        dev = _device(d)
        idx = _checks.default_index_dtype(xp, dev)
        order = xp.astype(xp.argsort(labels, stable=True), idx)
        sorted_labels = xp.take(labels, order)
        start = xp.astype(xp.searchsorted(sorted_labels, labels, side="left"), idx)
        count = xp.astype(xp.searchsorted(sorted_labels, labels, side="right"), idx) - start
        # W read in the call's one fetch (class_width), else here
        self.width = int(xp.max(count)) if width is None else width
        j = xp.arange(self.width, dtype=idx, device=dev)
        stop = offset + d.shape[0]  # the anchors: rows offset .. stop - 1
        slot = _ops.clip(xp, start[offset:stop, None] + j[None, :], 0, b - 1)
        self.members = xp.reshape(
            xp.take(order, xp.reshape(slot, (-1,))), (d.shape[0], self.width)
        )
        rows = xp.arange(b, dtype=idx, device=dev)[offset:stop]
        other = (self.members > rows[:, None]) if upper else (self.members != rows[:, None])
        self.valid = (j[None, :] < count[offset:stop, None]) & other
        inverse = xp.argsort(order, stable=True)
        self.rank = xp.astype(inverse, idx) - start
        self.d = xp.take_along_axis(d, self.members, axis=1)

    def to_dense(self, xp: Any, table: Any, pos: Any, fill: Any = 0.0) -> Any:
        """The B×B matrix holding ``table[a, j]`` at column ``members[a, j]``
        for every positive (``pos`` the B×B positive mask), ``fill`` (a
        scalar, or an array of pos's shape) elsewhere."""
        return xp.where(pos, xp.take(table, self.rank, axis=1), fill)


def class_width(xp: Any, labels: Any) -> Any:
    """The largest class size W as a 0-d array (0 for no labels): the width of
    :class:`PositiveTable`, queued in a call's one fetch before its work."""
    if labels.shape[0] == 0:
        return xp.zeros((), dtype=labels.dtype, device=_device(labels))
    s = xp.sort(labels)
    count = xp.searchsorted(s, s, side="right") - xp.searchsorted(s, s, side="left")
    return xp.max(count)


def class_sizes(xp: Any, labels: Any):
    """``(count, rank)`` per row i: the size of i's class ``#{j : y_j = y_i}`` and
    its rank in it ``#{j < i : y_j = y_i}`` (default index dtype), in O(B log B)
    from a stable sort: the labels alone give how many terms a batch has."""
    idx = _checks.default_index_dtype(xp, _device(labels))
    order = xp.astype(xp.argsort(labels, stable=True), idx)
    sorted_labels = xp.take(labels, order)
    start = xp.astype(xp.searchsorted(sorted_labels, labels, side="left"), idx)
    count = xp.astype(xp.searchsorted(sorted_labels, labels, side="right"), idx) - start
    rank = xp.astype(xp.argsort(order, stable=True), idx) - start
    return count, rank


def compact_ok(xp: Any, labels: Any) -> bool:
    """Whether :class:`PositiveTable` applies: it reads W from the labels, so
    their values must be concrete (inside ``jax.jit`` even a closed-over
    concrete array gives traced results)."""
    return not (_checks.is_traced(labels) or _checks.is_traced(xp.max(labels)))


# --------------------------------------------------------------------------
# public miners


def _prepare(x, labels, metric, normalize, check=True, table=False):
    """``(xp, d, labels, width)``: the distances and, with ``table``, the
    positive table's width W read in the same fetch (None where the table
    does not apply)."""
    xp, labels, fetch = check_labeled_batch(x, labels, metric, normalize, check)
    table = table and labels.shape[0] > 0 and compact_ok(xp, labels)
    if table:
        fetch.want("width", class_width(xp, labels), labels.shape[0])
    xc = xp.astype(x, _checks.compute_dtype(xp, x.dtype))
    d, _ = embed_forward(xp, xc, metric, normalize, fetch)
    fetch.done()
    return xp, d, labels, fetch.value("width") if table else None


def _empty_triplets(xp, like):
    idx = _checks.default_index_dtype(xp, _device(like))
    e = xp.zeros((0,), dtype=idx, device=_device(like))
    return e, e, e


def mine_batch_hard(
    x: Any, labels: Any, *, metric: str = "euclidean", normalize: bool = False,
    check: bool = True,
) -> tuple[Any, Any, Any]:
    r"""Batch-hard triplets: one ``(a, p, n)`` per anchor that has a positive and a negative.

    :math:`p_a = \arg\max_{p:\,y_p = y_a,\,p\ne a} d_{ap}` (the hardest positive)
    and :math:`n_a = \arg\min_{n:\,y_n \ne y_a} d_{an}` (the hardest negative);
    ties go to the lowest index on every backend. Anchors without a positive
    (a class with one sample) or without a negative (a single class) yield no
    triplet.

    ``triplet_margin_loss(x[a], x[p], x[n], ...)`` on the returned indices
    equals :func:`refloss.batch_hard_triplet_loss` with the same options.

    Args:
        x: ``[B, D]`` floating embeddings.
        labels: ``[B]`` integer labels.
        metric: ``"euclidean"`` (default), ``"sqeuclidean"`` or ``"cosine"``.
        normalize: L2-normalise the embeddings first.
        check: check that ``x`` is finite (default True; docs/errors.md,
            "Checks and syncs").

    Returns:
        Three ``[T]`` integer arrays (anchor, positive, negative) in the
        namespace and on the device of ``x``, anchors ascending; T is data
        dependent (this function uses ``nonzero``).

    References:
        Hermans, Beyer, Leibe. In Defense of the Triplet Loss for Person
        Re-Identification. arXiv:1703.07737, 2017.
    """
    xp, d, labels, _ = _prepare(x, labels, metric, normalize, check)
    if d.shape[0] == 0:
        return _empty_triplets(xp, x)
    sel = BatchHard(xp, d, labels)
    (anchor,) = xp.nonzero(sel.valid)
    return anchor, xp.take(sel.pos, anchor), xp.take(sel.neg, anchor)


def mine_semihard(
    x: Any, labels: Any, *, metric: str = "euclidean", normalize: bool = False,
    check: bool = True,
) -> tuple[Any, Any, Any]:
    r"""Semi-hard triplets (TensorFlow's rule): one ``(a, p, n)`` per ordered positive pair.

    For each ordered pair (a, p), :math:`p \ne a`, :math:`y_p = y_a`, whose
    anchor has a negative: :math:`n^*` is the negative with the smallest
    :math:`d_{an}` among those with :math:`d_{an} > d_{ap}` (strictly); if
    there is none, the negative with the largest :math:`d_{an}`. Ties go to
    the lowest index. There is no upper bound :math:`d_{ap} + m` (as in
    TensorFlow Addons' ``triplet_semihard_loss``, whose docstring suggests one).

    O(B² log B) time and O(B²) memory: one stable row-wise sort of the
    negatives, then a row-wise search of every :math:`d_{ap}`. The positives
    come from the class-sorted B×W table of :class:`PositiveTable` (W the
    largest class) and the sort runs in a few row blocks, so that no B×B
    index array is held (about 3 B×B floats' worth of memory at the peak).

    ``triplet_margin_loss(x[a], x[p], x[n], ...)`` on the returned indices
    equals :func:`refloss.semihard_triplet_loss` with the same options.

    Args:
        x: ``[B, D]`` floating embeddings.
        labels: ``[B]`` integer labels.
        metric: ``"euclidean"`` (default), ``"sqeuclidean"`` or ``"cosine"``.
        normalize: L2-normalise the embeddings first.
        check: check that ``x`` is finite (default True; docs/errors.md,
            "Checks and syncs").

    Returns:
        Three ``[T]`` integer arrays (anchor, positive, negative), in row-major
        order of (a, p), in the namespace and on the device of ``x``.

    References:
        Schroff, Kalenichenko, Philbin. FaceNet. CVPR 2015. TensorFlow Addons
        ``tfa.losses.triplet_semihard_loss``.
    """
    xp, d, labels, width = _prepare(x, labels, metric, normalize, check, table=True)
    b = d.shape[0]
    if b == 0:
        return _empty_triplets(xp, x)
    if width is None:  # traced labels: the dense selection
        sel = SemiHard(xp, d, labels, with_index=True)
        anchor, positive = xp.nonzero(sel.valid)
        negative = xp.take(xp.reshape(sel.neg, (-1,)), anchor * b + positive)
        return anchor, positive, negative

    tab = PositiveTable(xp, d, labels, width=width)
    _, neg, _ = label_masks(xp, labels, d)
    n_neg = xp.count_nonzero(neg, axis=1)
    parts = [
        _semihard_index_rows(xp, d[r0:r1, :], neg[r0:r1, :], n_neg[r0:r1], tab.d[r0:r1, :])
        for r0, r1 in _ops.row_ranges(d, b, b)
    ]
    n_star = xp.concat(parts, axis=0) if len(parts) > 1 else parts[0]
    del parts, neg
    # row-major (a, j) is row-major (a, p): a class's members ascend in the table
    anchor, j = xp.nonzero(tab.valid & (n_neg > 0)[:, None])
    flat = anchor * width + xp.astype(j, anchor.dtype)
    positive = xp.take(xp.reshape(tab.members, (-1,)), flat)
    negative = xp.take(xp.reshape(n_star, (-1,)), flat)
    return anchor, xp.astype(positive, anchor.dtype), xp.astype(negative, anchor.dtype)


def _semihard_index_rows(xp, d, neg, n_neg, d_ap):
    """n* per (anchor row, table column): the lowest-index negative at the
    first sorted negative distance strictly above ``d_ap`` (b×W), else at the
    largest; the stable sort puts a run of equal distances in index order,
    so the first position of a run is its lowest index (as :class:`SemiHard`)."""
    last = max(d.shape[1] - 1, 0)
    neg_d = xp.where(neg, d, float("inf"))
    sorted_neg, order = stable_row_sort(xp, neg_d)
    del neg_d
    top = xp.take_along_axis(sorted_neg, _ops.clip(xp, n_neg - 1, 0, last)[:, None], axis=1)
    fallback = row_searchsorted(xp, sorted_neg, top, side="left")
    slot = row_searchsorted(xp, sorted_neg, d_ap, side="right")
    del sorted_neg
    slot = xp.where(slot < n_neg[:, None], slot, fallback)
    return xp.take_along_axis(order, _ops.clip(xp, slot, 0, last), axis=1)
