"""row_searchsorted: numpy.searchsorted row by row, on every backend and path.

Paths: the merge (CuPy, JAX, array-api-strict, and any backend with
``portable=True``), NumPy's blocked branch-free binary search, torch's native
``searchsorted``. The oracle is a brute-force count of the entries below each
query (DESIGN.md "Mining over a labeled batch").
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from array_api_compat import array_namespace
from array_api_compat import device as array_device
from helpers import to_numpy
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from refloss.mining import row_searchsorted

SIDES = ["left", "right"]
# few distinct values: ties between entries, and between entries and queries
POOL = [-math.inf, -1.0, -0.0, 0.0, 0.5, 1.0, 2.0, math.inf]


def o_count(s, q, side):
    """#{i : s[r, i] < q[r, j]} (``left``) or ``<=`` (``right``), by brute force."""
    below = (s[:, None, :] < q[:, :, None]) if side == "left" else (s[:, None, :] <= q[:, :, None])
    return np.sum(below, axis=2, dtype=np.int64)


def assert_indices(actual, expected, backend):
    assert array_namespace(actual) is backend.xp
    assert array_device(actual) == backend.device
    assert backend.xp.isdtype(actual.dtype, "integral"), actual.dtype
    assert tuple(actual.shape) == expected.shape
    np.testing.assert_array_equal(to_numpy(actual), expected)


@st.composite
def rows_and_queries(draw):
    """Sorted rows from a small pool (ties, ±0, ±inf, +inf tails), queries on
    the pool and between its values; empty row, entry and query counts."""
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    rows, n, m = draw(st.integers(0, 5)), draw(st.integers(0, 20)), draw(st.integers(0, 8))
    pool = st.sampled_from(POOL)
    s = np.sort(draw(hnp.arrays(dtype, (rows, n), elements=pool)), axis=1)
    tail = draw(st.integers(0, n))  # +inf padding, as the losses sort non-negatives last
    s[:, n - tail:] = math.inf
    between = st.floats(-2.5, 2.5, width=32, allow_subnormal=False)
    q = draw(hnp.arrays(dtype, (rows, m), elements=st.one_of(pool, between)))
    return s, q


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("portable", [False, True])
@given(data=rows_and_queries())
def test_row_search_counts_the_entries_below_each_query(backend, side, portable, data):
    if portable and not backend.name.startswith(("numpy", "torch")):
        pytest.skip("the merge is this backend's only path")
    s, q = data
    got = row_searchsorted(backend.xp, backend.asarray(s), backend.asarray(q), side=side,
                           portable=portable)
    expected = o_count(s, q, side)
    assert_indices(got, expected, backend)
    for r in range(s.shape[0]):  # the contract: numpy.searchsorted row by row
        np.testing.assert_array_equal(expected[r], np.searchsorted(s[r], q[r], side=side))


def _namespaces():
    """(namespace, portable, asarray) for every path, without JAX (a compile
    per shape; the Hypothesis test covers its merge)."""
    import array_api_compat.numpy as xn

    out = [(xn, False, np.asarray), (xn, True, np.asarray)]
    try:
        import array_api_compat.torch as xt
        import torch
    except ImportError:
        return out
    return [*out, (xt, False, torch.asarray), (xt, True, torch.asarray)]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 33])
def test_row_search_reaches_every_answer_at_power_of_two_sizes(n):
    """Every answer 0..n, at the sizes where the number of halving steps of
    NumPy's search changes."""
    s = np.arange(n, dtype=np.float64)[None, :] * 2.0
    q = (np.arange(2 * n + 3, dtype=np.float64) - 1.0)[None, :]
    for xp, portable, asarray in _namespaces():
        for side in SIDES:
            got = row_searchsorted(xp, asarray(s), asarray(q), side=side, portable=portable)
            np.testing.assert_array_equal(to_numpy(got), o_count(s, q, side))


def test_every_path_agrees_on_wide_rows_with_ties():
    """Many row blocks of NumPy's search, both dtypes, ties, ±inf queries and
    +inf tails: every path returns the same int64 counts."""
    rng = np.random.default_rng(7)
    for dtype in (np.float64, np.float32):
        s = np.sort(rng.integers(0, 50, size=(70, 300)), axis=1).astype(dtype)
        s[:, 250:] = math.inf
        q = rng.integers(-2, 52, size=(70, 1100)).astype(dtype)
        q[:, :3] = [-math.inf, math.inf, 10.0]
        for side in SIDES:
            expected = o_count(s, q, side)
            for xp, portable, asarray in _namespaces():
                got = row_searchsorted(xp, asarray(s), asarray(q), side=side,
                                       portable=portable)
                assert str(got.dtype).endswith("int64"), (xp.__name__, got.dtype)
                np.testing.assert_array_equal(to_numpy(got), expected)


@pytest.mark.parametrize("portable", [False, True])
def test_narrow_counts_are_int32_and_the_same(backend, portable):
    """``narrow=True``: the same counts in int32 on every path."""
    if portable and not backend.name.startswith(("numpy", "torch")):
        pytest.skip("the merge is this backend's only path")
    rng = np.random.default_rng(9)
    s = np.sort(rng.integers(0, 9, size=(6, 40)), axis=1).astype(np.float32)
    s[:, 30:] = math.inf
    q = rng.integers(-1, 11, size=(6, 70)).astype(np.float32)
    for side in SIDES:
        got = row_searchsorted(backend.xp, backend.asarray(s), backend.asarray(q), side=side,
                               portable=portable, narrow=True)
        assert got.dtype == backend.xp.int32
        np.testing.assert_array_equal(to_numpy(got), o_count(s, q, side))


def test_narrow_must_be_a_bool():
    with pytest.raises(TypeError, match=r"narrow: expected a bool \(True or False\), got str"):
        row_searchsorted(np, np.zeros((1, 2)), np.zeros((1, 1)), narrow="yes")


@pytest.mark.parametrize("portable", [False, True])
def test_row_search_treats_the_two_zeros_as_equal(backend, portable):
    s = np.array([[-0.0, 0.0, 0.0], [-0.0, -0.0, 1.0]])
    q = np.array([[0.0, -0.0], [0.0, -0.0]])
    for side, expected in [("left", [[0, 0], [0, 0]]), ("right", [[3, 3], [2, 2]])]:
        got = row_searchsorted(backend.xp, backend.asarray(s), backend.asarray(q), side=side,
                               portable=portable)
        assert_indices(got, np.array(expected, dtype=np.int64), backend)


def test_row_search_runs_under_jax_jit():
    """The merge needs no data-dependent shape: one compile per side."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    rng = np.random.default_rng(3)
    s = np.sort(rng.integers(0, 6, size=(4, 9)), axis=1).astype(np.float64)
    s[:, 7:] = math.inf
    q = rng.integers(-1, 8, size=(4, 5)).astype(np.float64)
    for side in SIDES:
        fn = jax.jit(lambda a, b, side=side: row_searchsorted(jnp, a, b, side=side))
        got = fn(jnp.asarray(s), jnp.asarray(q))
        np.testing.assert_array_equal(np.asarray(got), o_count(s, q, side))


def _torch_ops(fn):
    pytest.importorskip("torch")
    from torch.utils._python_dispatch import TorchDispatchMode

    ops = []

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            ops.append(func.__name__)
            return func(*args, **(kwargs or {}))

    with Recorder():
        fn()
    return ops


def test_the_portable_search_runs_the_same_ops_at_every_size():
    """The CuPy path (forced on torch) has no loop over rows, row chunks or
    halving steps: its op list does not depend on R, n, m or the data."""
    torch = pytest.importorskip("torch")
    import array_api_compat.torch as xt

    def ops(rows, n, m, seed):
        g = torch.Generator().manual_seed(seed)
        s = torch.sort(torch.randint(0, 9, (rows, n), generator=g).double(), dim=1).values
        q = torch.randint(-1, 10, (rows, m), generator=g).double()
        return {
            side: _torch_ops(lambda side=side: row_searchsorted(xt, s, q, side=side,
                                                                portable=True))
            for side in SIDES
        }

    small = ops(2, 3, 4, 0)
    assert ops(40, 300, 200, 1) == small
    assert ops(3, 1000, 2, 2) == small



# --------------------------------------------------------------------------
# NumPy's grid search: rows of >= 16 entries with >= 4 queries per entry


@st.composite
def grid_rows_and_queries(draw):
    """Rows the grid serves (n >= 16, m >= 4n): bell-shaped at a scale from
    subnormal to near the largest float, or a few tied values; -inf heads and
    +inf tails (the losses' padding), rows of infinities only. Queries: the
    entries, their float neighbours, ±0, ±inf and ±max."""
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    fi = np.finfo(dtype)
    rows, n = draw(st.integers(1, 4)), draw(st.integers(16, 40))
    m = draw(st.integers(4 * n, 5 * n))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        exponent = draw(st.sampled_from([-320, -40, -3, 0, 3, 30, 300]))
        with np.errstate(over="ignore", under="ignore"):
            s = (rng.standard_normal((rows, n)) * 10.0 ** exponent).astype(dtype)
    else:
        s = rng.integers(0, draw(st.integers(1, 4)), size=(rows, n)).astype(dtype)
    s = np.sort(s, axis=1)
    for r in range(rows):
        head, tail = draw(st.integers(0, n)), draw(st.integers(0, n))
        s[r, :head] = -math.inf
        s[r, n - tail:] = math.inf
    s = np.sort(s, axis=1)
    extra = np.array([0.0, -0.0, math.inf, -math.inf, fi.max, -fi.max], dtype=dtype)
    pool = np.concatenate([s.reshape(-1), extra])
    q = rng.choice(pool, size=(rows, m))
    toward = rng.choice(np.array([-math.inf, math.inf], dtype=dtype), size=q.shape)
    with np.errstate(over="ignore"):  # max's neighbour toward +inf is inf
        q = np.where(rng.random(q.shape) < 0.4, np.nextafter(q, toward), q).astype(dtype)
    return s, q


@pytest.mark.parametrize("side", SIDES)
@given(data=grid_rows_and_queries(), narrow=st.booleans())
def test_the_grid_search_counts_the_entries_below_each_query(side, data, narrow):
    s, q = data
    got = row_searchsorted(np, s, q, side=side, narrow=narrow)
    np.testing.assert_array_equal(got, o_count(s, q, side))


def _grid_plans(monkeypatch):
    """The grids NumPy's search builds (None where it falls back)."""
    from refloss import mining

    plans, plan = [], mining._grid_plan

    def spy(*args):
        plans.append(plan(*args))
        return plans[-1]

    monkeypatch.setattr(mining, "_grid_plan", spy)
    return plans


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_grid_serves_bell_shaped_rows_in_fewer_rounds(monkeypatch, dtype):
    """Distances' shape (many rows of Gaussian entries, +inf padded): the grid
    is taken, with a search width far below n, and every count is exact."""
    from refloss.mining import _halves

    rng = np.random.default_rng(11)
    n, m = 120, 600
    s = np.sort(10.0 + rng.standard_normal((40, n)), axis=1).astype(dtype)
    s[::3, 100:] = math.inf
    q = (10.0 + 1.5 * rng.standard_normal((40, m))).astype(dtype)
    plans = _grid_plans(monkeypatch)
    for side in SIDES:
        got = row_searchsorted(np, s, q, side=side, narrow=True)
        np.testing.assert_array_equal(got, o_count(s, q, side))
    assert plans and all(p is not None for p in plans)
    assert all(len(_halves(p.width)) + 2 < len(_halves(n)) for p in plans)


def test_float16_rows_wider_than_its_largest_float_in_cells(monkeypatch):
    """float16 with 2n cells past 65504 (its largest float): the search stays
    plain (a float16 grid could not index them) and is numpy.searchsorted."""
    rng = np.random.default_rng(13)
    n = 33000
    s = np.sort(rng.uniform(-1e4, 1e4, size=(1, n)).astype(np.float16), axis=1)
    q = rng.uniform(-1.1e4, 1.1e4, size=(1, 4 * n)).astype(np.float16)
    plans = _grid_plans(monkeypatch)
    for side in SIDES:
        got = row_searchsorted(np, s, q, side=side, narrow=True)
        np.testing.assert_array_equal(got[0], np.searchsorted(s[0], q[0], side=side))
    assert plans == []


def test_crowded_cells_fall_back_to_the_plain_search(monkeypatch):
    """Every entry in one of a few values: a cell holds most of the row, the
    grid gives way to the plain search, and the counts are the same."""
    rng = np.random.default_rng(12)
    s = np.sort(rng.integers(0, 2, size=(5, 64)), axis=1).astype(np.float64)
    q = rng.integers(-1, 3, size=(5, 300)).astype(np.float64)
    plans = _grid_plans(monkeypatch)
    for side in SIDES:
        np.testing.assert_array_equal(row_searchsorted(np, s, q, side=side), o_count(s, q, side))
    assert plans == [None, None]


def test_row_search_rejects_an_unknown_side(numpy_backend):
    with pytest.raises(ValueError, match=r"^side: expected one of"):
        row_searchsorted(numpy_backend.xp, np.zeros((1, 2)), np.zeros((1, 1)), side="middle")


# --------------------------------------------------------------------------
# stable_row_sort, sum_by_column: the sorted order and the scatter-add that
# the semi-hard table path uses on NumPy (DESIGN.md "Ties")

# (no subnormals: XLA on CPU flushes them to zero)
SORT_POOL = [-math.inf, -2.0, -2e-38, -0.0, 0.0, 2e-38, 0.5, 1.0, 3e38, math.inf,
             math.nan, -math.nan]


def o_stable_order(a):
    """Each row's column indices ordered by (value, column), -0.0 == 0.0 and
    every NaN equal and last: a transcription of a stable sort."""
    def key(row, i):
        v = float(row[i])
        return (math.isnan(v), 0.0 if math.isnan(v) else v, i)
    return np.array([sorted(range(a.shape[1]), key=lambda i, r=r: key(r, i)) for r in a],
                    dtype=np.int64).reshape(a.shape)


@example(a=np.array([[1.0, 0.0, -0.0, 0.0]], dtype=np.float32))  # the signs of zero
@example(a=np.array([[-np.nan, 1.0, np.nan, -1.0]], dtype=np.float32))  # NaN of either sign
@given(a=st.integers(0, 4).flatmap(lambda r: st.integers(0, 24).flatmap(
    lambda n: hnp.arrays(st.sampled_from([np.float32, np.float64]), (r, n),
                         elements=st.sampled_from(SORT_POOL)))))
def test_stable_row_sort_orders_by_value_then_column(backend, a):
    from refloss.mining import stable_row_sort

    if backend.name.startswith("array_api_strict") and np.isnan(a).any():
        pytest.skip("the standard leaves the place of NaN in a sort unspecified")
    values, order = stable_row_sort(backend.xp, backend.asarray(a))
    expected = o_stable_order(a)
    np.testing.assert_array_equal(to_numpy(order), expected)
    want = np.take_along_axis(a, expected, axis=1)
    np.testing.assert_array_equal(to_numpy(values) + 0.0, want + 0.0)  # zeros of either sign
    assert to_numpy(values).dtype == a.dtype


def column_blocks(column_dtype, value_dtypes, values):
    """``(columns, values, width)``: up to 4 rows of 6 entries, each with a
    column below ``width`` (1 to 9) and a value drawn from ``values``."""
    return st.integers(0, 4).flatmap(lambda r: st.integers(1, 9).flatmap(
        lambda width: st.tuples(
            hnp.arrays(column_dtype, (r, 6), elements=st.integers(0, width - 1)),
            hnp.arrays(value_dtypes, (r, 6), elements=values),
            st.just(width))))


WEIGHT_BLOCKS = column_blocks(np.int64, st.sampled_from([np.float32, np.float64]),
                              st.floats(-4, 4, width=32))


@given(data=WEIGHT_BLOCKS)
def test_sum_by_column_adds_each_weight_at_its_column(data):
    from refloss.mining import sum_by_column

    columns, weights, width = data
    expected = np.zeros((columns.shape[0], width), dtype=weights.dtype)
    for r in range(columns.shape[0]):  # in index order, in the weights' dtype
        for j in range(columns.shape[1]):
            expected[r, columns[r, j]] += weights[r, j]
    got = sum_by_column(columns, weights, width)
    assert got.dtype == weights.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


@example(a=np.array([[1.0, 0.0, -0.0, -1.0]], dtype=np.float32))  # the signs of zero
@given(a=st.integers(0, 4).flatmap(lambda r: st.integers(0, 24).flatmap(
    lambda n: hnp.arrays(np.float32, (r, n), elements=st.sampled_from(SORT_POOL)))))
def test_packed_keys_order_as_value_then_column_and_unpack(a):
    from refloss.mining import packed_keys, unpack_keys

    keys = packed_keys(a)
    np.testing.assert_array_equal(np.argsort(keys, axis=1, kind="stable"), o_stable_order(a))
    values, columns = unpack_keys(keys)
    np.testing.assert_array_equal(columns, np.broadcast_to(np.arange(a.shape[1]), a.shape))
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values + 0.0, a + 0.0)  # NaN as NaN, zeros of either sign
    assert not np.signbit(values[values == 0]).any()  # -0.0 comes back as 0.0


@given(data=column_blocks(np.int32, np.uint64, st.integers(0, (1 << 64) - 2)))
def test_min_by_column_keeps_each_columns_smallest_key(data):
    from refloss.mining import EMPTY_KEY, min_by_column

    columns, keys, width = data
    expected = np.full((columns.shape[0], width), EMPTY_KEY, dtype=np.uint64)
    for r in range(columns.shape[0]):
        for j in range(columns.shape[1]):
            expected[r, columns[r, j]] = min(expected[r, columns[r, j]], keys[r, j])
    got = min_by_column(columns, keys, width)
    assert got.dtype == np.uint64 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


@given(data=st.integers(1, 4).flatmap(lambda r: st.integers(0, 9).flatmap(
    lambda n: st.tuples(
        hnp.arrays(np.float32, (r, n), elements=st.sampled_from([-math.inf, 0.0, 0.5, 1.0,
                                                                  2.0, math.inf])),
        hnp.arrays(np.int64, 7, elements=st.integers(0, r - 1)),
        hnp.arrays(np.float32, 7, elements=st.sampled_from([-1.0, -0.0, 0.0, 0.5, 1.5, 2.0,
                                                            3.0])),
        st.sampled_from(["left", "right"])))))
def test_search_rows_at_counts_in_each_querys_own_row(data):
    from refloss.mining import search_rows_at

    s, rows, queries, side = data
    s = np.sort(s, axis=1)
    below = np.less if side == "left" else np.less_equal
    expected = [int(np.sum(below(s[r], q))) for r, q in zip(rows, queries, strict=True)]
    got = search_rows_at(s, rows, queries, side)
    np.testing.assert_array_equal(got, expected)


@given(data=column_blocks(np.int32, st.sampled_from([np.float32, np.float64]),
                         st.floats(-4, 4, width=32)))
def test_count_and_sum_by_key_count_and_add_at_each_rows_column(data):
    from refloss.mining import count_and_sum_by_key, row_keys

    columns, weights, width = data
    rows = columns.shape[0]
    count = np.zeros((rows, width), dtype=np.intp)
    total = np.zeros((rows, width), dtype=weights.dtype)
    for r in range(rows):  # in index order, in the weights' dtype
        for j in range(columns.shape[1]):
            count[r, columns[r, j]] += 1
            total[r, columns[r, j]] += weights[r, j]
    n, h = count_and_sum_by_key(row_keys(columns, width), weights, rows * width)
    assert h.dtype == weights.dtype
    np.testing.assert_array_equal(n.reshape(rows, width), count)
    np.testing.assert_array_equal(h.reshape(rows, width), total)
