"""pairwise_distances / paired_distances: values, conventions and gradients.

Oracle: a double loop over pairs computing the direct difference in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    assert_close,
    directional_fd,
    embeddings,
    hard_embeddings,
    to_numpy,
    tolerance,
    unit_directions,
)
from hypothesis import assume, given
from hypothesis import strategies as st

import refloss as rl

METRICS = ["euclidean", "sqeuclidean", "cosine"]


def oracle_distance(u: np.ndarray, v: np.ndarray, metric: str) -> float:
    diff = u - v
    sq = float(np.sum(diff * diff))
    if metric == "euclidean":
        return float(np.sqrt(sq))
    if metric == "sqeuclidean":
        return sq
    mu, mv = np.abs(u).max(initial=0.0), np.abs(v).max(initial=0.0)
    if mu == 0 or mv == 0:
        return 1.0
    u, v = u / mu, v / mv  # directions only: rescale so that nothing underflows
    # 1 - cos written as ½‖û − v̂‖², which keeps relative precision near 0
    w = u / np.sqrt(np.sum(u * u)) - v / np.sqrt(np.sum(v * v))
    return 0.5 * float(np.sum(w * w))


def oracle_pairwise(x, y, metric):
    y = x if y is None else y
    out = np.empty((x.shape[0], y.shape[0]))
    for i in range(x.shape[0]):
        for j in range(y.shape[0]):
            out[i, j] = oracle_distance(x[i], y[j], metric)
    return out


def min_gap(x, y=None):
    """Smallest distance between distinct rows (the euclidean kink)."""
    d = oracle_pairwise(x, y, "euclidean")
    if y is None:
        d = d + np.diag(np.full(x.shape[0], np.inf))
    return d.min() if d.size else np.inf


# --------------------------------------------------------------------------
# values


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean"])
@given(x=hard_embeddings())
def test_pairwise_matches_direct_difference_within_1e10(backend, metric, x):
    expected = oracle_pairwise(x, None, metric)
    got = rl.pairwise_distances(backend.asarray(x), metric=metric)
    assert_close(got, expected, backend, dtype="float64", rtol=1e-10, atol=0)


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean"])
@given(z=hard_embeddings(min_rows=2), split=st.integers(1, 7))
def test_pairwise_two_sets_matches_direct_difference(backend, metric, z, split):
    split = min(split, z.shape[0] - 1)
    x, y = z[:split], z[split:]
    expected = oracle_pairwise(x, y, metric)
    got = rl.pairwise_distances(backend.asarray(x), backend.asarray(y), metric=metric)
    assert_close(got, expected, backend, dtype="float64", rtol=1e-10, atol=0)


@given(x=hard_embeddings())
def test_pairwise_cosine_matches_direct_formula(backend, x):
    expected = oracle_pairwise(x, None, "cosine")
    got = rl.pairwise_distances(backend.asarray(x), metric="cosine")
    assert_close(got, expected, backend, dtype="float64", rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("metric", METRICS)
@given(a=embeddings(max_rows=6), seed=st.integers(0, 2**16))
def test_paired_matches_direct_difference(backend, metric, a, seed):
    rng = np.random.default_rng(seed)
    b = a + rng.normal(size=a.shape) * rng.choice([0.0, 1e-8, 1.0], size=(a.shape[0], 1))
    expected = np.array([oracle_distance(u, v, metric) for u, v in zip(a, b)])
    got = rl.paired_distances(backend.asarray(a), backend.asarray(b), metric=metric)
    assert_close(got, expected, backend, dtype="float64", rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("metric", METRICS)
@given(a=embeddings(max_rows=6), seed=st.integers(0, 2**16))
def test_paired_is_the_diagonal_of_pairwise(numpy_backend, metric, a, seed):
    b = a + np.random.default_rng(seed).normal(size=a.shape)
    paired = rl.paired_distances(a, b, metric=metric)
    pairwise = rl.pairwise_distances(a, b, metric=metric)
    np.testing.assert_allclose(paired, np.diag(pairwise), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("metric", METRICS)
def test_identical_rows_have_distance_exactly_zero(backend, metric):
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3, 4)) + 1e3
    x = np.concatenate([base, base[::-1], base[:1]])
    d = to_numpy(rl.pairwise_distances(backend.asarray(x), metric=metric))
    same = np.all(x[:, None, :] == x[None, :, :], axis=-1)
    assert np.all(d[same] == 0.0)
    assert np.all(d[~same] > 0.0)
    dp = to_numpy(rl.paired_distances(backend.asarray(x), backend.asarray(x), metric=metric))
    assert np.all(dp == 0.0)


def test_cosine_zero_row_is_at_distance_one_from_everything(backend):
    x = np.array([[0.0, 0.0], [1.0, 2.0], [0.0, 0.0]])
    d = to_numpy(rl.pairwise_distances(backend.asarray(x), metric="cosine"))
    np.testing.assert_array_equal(d[0], [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(d[:, 2], [1.0, 1.0, 1.0])
    assert d[1, 1] == 0.0
    _, pullback = rl.vjp(rl.pairwise_distances, backend.asarray(x), metric="cosine")
    (gx,) = pullback(backend.asarray(np.ones((3, 3))))
    gx = to_numpy(gx)
    assert np.all(gx[[0, 2]] == 0.0) and np.all(np.isfinite(gx))


def test_results_keep_the_input_dtype(backend):
    x = np.random.default_rng(1).normal(size=(5, 3))
    for name in ("float32", "float64"):
        xa = backend.asarray(x, dtype=backend.float_dtype(name))
        for metric in METRICS:
            d = rl.pairwise_distances(xa, metric=metric)
            assert_close(d, oracle_pairwise(x, None, metric), backend, dtype=name,
                         **tolerance(name))
            p = rl.paired_distances(xa, xa[::-1, ...] if backend.name != "torch" else
                                    backend.xp.flip(xa, axis=0), metric=metric)
            assert p.dtype == xa.dtype


def test_float16_is_computed_in_float32_and_cast_back(backend):
    if not hasattr(backend.xp, "float16"):
        pytest.skip("no float16 in this namespace")
    x = np.array([[0.0, 0.0], [3.0, 4.0]])
    xa = backend.asarray(x, dtype=backend.xp.float16)
    d = rl.pairwise_distances(xa)
    assert d.dtype == backend.xp.float16
    np.testing.assert_array_equal(to_numpy(d).astype(np.float64), [[0, 5], [5, 0]])


def test_empty_batch_gives_empty_matrix(backend):
    x = backend.asarray(np.zeros((0, 3)))
    assert tuple(rl.pairwise_distances(x).shape) == (0, 0)
    assert tuple(rl.paired_distances(x, x).shape) == (0,)


# --------------------------------------------------------------------------
# gradients: finite differences, torch autograd, every backend


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("two_sets", [False, True])
@given(x=embeddings(min_rows=2, max_rows=6), seed=st.integers(0, 2**16))
def test_pairwise_vjp_matches_finite_differences(numpy_backend, metric, two_sets, x, seed):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(3, x.shape[1])) * 3 if two_sets else None
    assume(min_gap(x, y) > 1e-2)
    if metric == "cosine":
        assume(np.linalg.norm(x, axis=1).min() > 1e-2)
    g = rng.normal(size=(x.shape[0], x.shape[0] if y is None else 3))
    args = [x] if y is None else [x, y]
    _, pullback = rl.vjp(rl.pairwise_distances, *args, metric=metric)
    grads = pullback(g)

    def scalar(*a):
        return np.sum(g * rl.pairwise_distances(*a, metric=metric))

    for k, arg in enumerate(args):
        for v in unit_directions(rng, arg.shape):
            fd = directional_fd(scalar, args, k, v)
            np.testing.assert_allclose(np.sum(grads[k] * v), fd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("metric", METRICS)
@given(a=embeddings(max_rows=6), seed=st.integers(0, 2**16))
def test_paired_vjp_matches_finite_differences(numpy_backend, metric, a, seed):
    rng = np.random.default_rng(seed)
    b = a + rng.normal(size=a.shape)
    assume(np.linalg.norm(a - b, axis=1).min() > 1e-2)
    if metric == "cosine":
        assume(min(np.linalg.norm(a, axis=1).min(), np.linalg.norm(b, axis=1).min()) > 1e-2)
    g = rng.normal(size=a.shape[0])
    _, pullback = rl.vjp(rl.paired_distances, a, b, metric=metric)
    grads = pullback(g)

    def scalar(u, w):
        return np.sum(g * rl.paired_distances(u, w, metric=metric))

    for k in (0, 1):
        for v in unit_directions(rng, a.shape):
            fd = directional_fd(scalar, [a, b], k, v)
            np.testing.assert_allclose(np.sum(grads[k] * v), fd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("two_sets", [False, True])
@given(x=hard_embeddings(min_rows=2, max_rows=6), seed=st.integers(0, 2**16))
def test_pairwise_vjp_matches_torch_autograd(metric, two_sets, x, seed):
    """Autograd through the same forward (double-where sqrt, exact
    recomputation included) is an independent second oracle; at exact
    zeros both use the subgradient 0. The batches hold exact and near
    duplicates (relative gaps to 1e-9) and large offsets: the pairs the
    forward recomputes exactly must be differentiated exactly too."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    y = x[::-1] + rng.normal(size=x.shape) if two_sets else None
    g = rng.normal(size=(x.shape[0], x.shape[0]))
    args = [x] if y is None else [x, y]
    if metric == "cosine":  # autograd's x/‖x‖ cancels badly for tiny norms
        assume(np.linalg.norm(x, axis=1).min() > 1e-3)
    targs = [torch.tensor(a, requires_grad=True) for a in args]
    out = rl.pairwise_distances(*targs, metric=metric)
    out.backward(torch.tensor(g))
    _, pullback = rl.vjp(rl.pairwise_distances, *args, metric=metric)
    for ours, t in zip(pullback(g), targs):
        scale = max(1.0, np.abs(ours).max())
        np.testing.assert_allclose(ours, t.grad.numpy(), rtol=1e-7, atol=1e-7 * scale)


@pytest.mark.parametrize("metric", METRICS)
@given(a=embeddings(max_rows=6), seed=st.integers(0, 2**16))
def test_paired_vjp_matches_torch_autograd(metric, a, seed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    b = a + rng.normal(size=a.shape) * rng.choice([0.0, 1.0], size=(a.shape[0], 1))
    if metric == "cosine":  # autograd's x/‖x‖ cancels badly for tiny norms
        assume(min(np.linalg.norm(a, axis=1).min(), np.linalg.norm(b, axis=1).min()) > 1e-3)
    g = rng.normal(size=a.shape[0])
    ta, tb = (torch.tensor(v, requires_grad=True) for v in (a, b))
    rl.paired_distances(ta, tb, metric=metric).backward(torch.tensor(g))
    _, pullback = rl.vjp(rl.paired_distances, a, b, metric=metric)
    ga, gb = pullback(g)
    np.testing.assert_allclose(ga, ta.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gb, tb.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("metric", METRICS)
def test_vjp_agrees_across_backends(backend, metric):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(6, 4))
    x[4] = x[1]  # a duplicate: the gradient's zero-distance convention
    y = rng.normal(size=(3, 4))
    g = rng.normal(size=(6, 3))
    g_self = rng.normal(size=(6, 6))
    _, ref = rl.vjp(rl.pairwise_distances, x, y, metric=metric)
    _, pb = rl.vjp(rl.pairwise_distances, backend.asarray(x), backend.asarray(y), metric=metric)
    for ours, expected in zip(pb(backend.asarray(g)), ref(g)):
        assert_close(ours, expected, backend, dtype="float64")
    _, ref = rl.vjp(rl.pairwise_distances, x, metric=metric)
    _, pb = rl.vjp(rl.pairwise_distances, backend.asarray(x), metric=metric)
    assert_close(pb(backend.asarray(g_self))[0], ref(g_self)[0], backend, dtype="float64")
    _, ref = rl.vjp(rl.paired_distances, x[:3], y, metric=metric)
    _, pb = rl.vjp(rl.paired_distances, backend.asarray(x[:3]), backend.asarray(y),
                   metric=metric)
    for ours, expected in zip(pb(backend.asarray(g[:, 0][:3])), ref(g[:, 0][:3])):
        assert_close(ours, expected, backend, dtype="float64")


def test_euclidean_gradient_at_zero_distance_is_zero(backend):
    x = np.array([[1.0, 2.0], [1.0, 2.0], [4.0, 6.0]])
    _, pullback = rl.vjp(rl.pairwise_distances, backend.asarray(x))
    g = np.zeros((3, 3))
    g[0, 1] = g[1, 0] = 1.0  # only the zero-distance pair
    (gx,) = pullback(backend.asarray(g))
    assert_close(gx, np.zeros((3, 2)), backend, dtype="float64", atol=0)
    _, pullback = rl.vjp(rl.paired_distances, backend.asarray(x[:1]), backend.asarray(x[1:2]))
    ga, gb = pullback(backend.asarray(np.ones(1)))
    assert_close(ga, np.zeros((1, 2)), backend, atol=0)
    assert_close(gb, np.zeros((1, 2)), backend, atol=0)


def test_core_runs_without_data_dependent_shapes():
    """array-api-strict with data-dependent shapes off takes the dense exact
    recomputation path and must give the same matrix."""
    strict = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(7, 3)) + 1e4
    x[5] = x[2] + 1e-9
    x[6] = x[0]
    expected = oracle_pairwise(x, None, "euclidean")
    with strict.ArrayAPIStrictFlags(data_dependent_shapes=False, boolean_indexing=False):
        got = rl.pairwise_distances(strict.asarray(x))
        gotc = rl.pairwise_distances(strict.asarray(x), metric="cosine")
    np.testing.assert_allclose(to_numpy(got), expected, rtol=1e-10, atol=0)
    np.testing.assert_allclose(to_numpy(gotc), oracle_pairwise(x, None, "cosine"),
                               rtol=1e-9, atol=1e-15)


def test_cosine_of_tiny_and_huge_rows_keeps_their_direction(backend):
    """Squares of 1e-200 underflow and of 1e200 overflow; the direction does not."""
    x = np.array([[1e-200, 2e-200], [1e-200, 2e-200], [3e200, 6e200], [-1e-200, 0.0]])
    d = to_numpy(rl.pairwise_distances(backend.asarray(x), metric="cosine"))
    np.testing.assert_allclose(d[:3, :3], np.zeros((3, 3)), atol=1e-15)
    np.testing.assert_allclose(d[3, :3], np.full(3, 1 + 1 / np.sqrt(5)), rtol=1e-12)
