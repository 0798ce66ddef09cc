"""``check=False``: the distance matrix with static sizes (no read), equal to
the read path wherever the static capacity suffices.

With checks off, on a library where a read waits for the device (torch,
CuPy, JAX eager), ``pairwise_distances`` and every loss on a distance matrix
read nothing back: copies of rows are found without the hash-clash read and
set to 0, and the first K = 16·max(B, B') flagged entries are recomputed
exactly (docs/errors.md, "Checks and syncs"). On NumPy the static path is
forced by declaring reads costly, so that both libraries prove it.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refloss as rl
import refloss._checks
import refloss.distances as dist
from tests.helpers import to_numpy

torch = pytest.importorskip("torch")

LIBS = ("numpy", "torch")


@contextmanager
def _costly_reads():
    """NumPy takes the path of a GPU library: no read with ``check=False``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(refloss._checks, "reads_are_cheap", lambda xp: False)
        yield


@pytest.fixture
def costly_reads():
    with _costly_reads():
        yield


def _batch(kind: str, b: int, dim: int, per_class: int, seed: int, dtype) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(b) // per_class)
    centers = 10.0 * rng.standard_normal((int(labels.max()) + 1, dim))
    if kind == "random":
        x = rng.standard_normal((b, dim))
    elif kind == "clustered":  # tight classes: every within-class pair is flagged
        x = centers[labels] + 1e-5 * rng.standard_normal((b, dim))
    else:  # exact copies of each class's centre for half the rows
        x = np.where((np.arange(b) % 2 == 0)[:, None], centers[labels],
                     rng.standard_normal((b, dim)))
    return x.astype(dtype)


def _as(lib: str, a):
    return None if a is None else (a if lib == "numpy" else torch.asarray(a))


def _value_and_grads(lib, x, y, g, metric, check):
    d, pullback = rl.vjp(rl.pairwise_distances, _as(lib, x), _as(lib, y), metric=metric,
                         check=check)
    grads = pullback(_as(lib, g))
    return [to_numpy(d)] + [to_numpy(t) for t in grads if t is not None]


@settings(max_examples=12, deadline=None)
@given(
    kind=st.sampled_from(["random", "clustered", "duplicated"]),
    metric=st.sampled_from(["euclidean", "sqeuclidean", "cosine"]),
    cross=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
    b=st.integers(2, 24),
    per_class=st.integers(1, 8),
    seed=st.integers(0, 2**16),
)
@pytest.mark.parametrize("lib", LIBS)
def test_static_sizes_equal_the_read_path(lib, kind, metric, cross, dtype, b,
                                          per_class, seed):
    # classes of at most 8 rows: at most 7 flagged entries per row, within K
    x = _batch(kind, b, 5, per_class, seed, dtype)
    y = np.concatenate([x[b // 2:], x[:2]]) if cross else None
    g = np.random.default_rng(seed).standard_normal((b, b if y is None else y.shape[0]))
    g = g.astype(dtype)
    with _costly_reads():
        with_read = _value_and_grads(lib, x, y, g, metric, True)
        static = _value_and_grads(lib, x, y, g, metric, False)
    for got, want in zip(static, with_read, strict=True):
        np.testing.assert_array_equal(got, want)  # bit for bit


def _tight_class(b: int, dim: int, dtype, seed: int = 0) -> np.ndarray:
    """One tight class of b rows (all b(b-1) pairs flagged), the last rows
    copies of the first ones."""
    rng = np.random.default_rng(seed)
    x = 3.0 + 1e-4 * rng.standard_normal((b, dim))
    x[-3:] = x[:3]
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean"])
def test_beyond_capacity_the_gemm_value_within_its_bound(costly_reads, metric, dtype):
    b, dim = 48, 6  # 48·47 flagged entries against K = 16·48
    x = _tight_class(b, dim, dtype)
    with_read = rl.pairwise_distances(x, metric=metric)
    static = rl.pairwise_distances(x, metric=metric, check=False)
    xx = x.astype(np.float64)
    exact2 = np.sum((xx[:, None, :] - xx[None, :, :]) ** 2, axis=-1)
    # which entries the capacity covers: the first K flagged (copies left
    # out: they are 0 by the copy search), in row-major order
    copies = np.all(xx[:, None, :] == xx[None, :, :], axis=-1)
    flagged = ~copies  # every other pair of the tight class is flagged
    rank = np.cumsum(flagged.ravel()).reshape(flagged.shape)
    inside = flagged & (rank <= dist._capacity(b, b))
    assert (flagged & ~inside).any()  # the case is beyond capacity
    np.testing.assert_array_equal(static[inside], with_read[inside])
    assert np.all(static[copies] == 0.0)  # copies beyond capacity too
    # beyond: the GEMM value, |D̃² − D²| <= (dim + 2)·eps·(‖x_i − μ‖² + ‖x_j − μ‖²)
    centred = np.sum((xx - xx.mean(axis=0)) ** 2, axis=1)
    bound = (dim + 2) * np.finfo(dtype).eps * (centred[:, None] + centred[None, :])
    got2 = static.astype(np.float64) ** (1 if metric == "sqeuclidean" else 2)
    beyond = flagged & ~inside
    # float32 results carry their own rounding of the stored value
    slack = 4 * np.finfo(dtype).eps * exact2
    assert np.all(np.abs(got2 - exact2)[beyond] <= (bound + slack)[beyond])


def test_beyond_capacity_torch_reads_nothing():
    from benchmarks.counting import counting

    x = torch.asarray(_tight_class(48, 6, np.float32))
    with counting() as fwd:
        _, pullback = rl.vjp(rl.pairwise_distances, x, check=False)
    with counting() as bwd:
        (gx,) = pullback(1.0)
    assert fwd.syncs == 0 and bwd.syncs == 0, (dict(fwd.sync_ops), dict(bwd.sync_ops))
    assert torch.isfinite(gx).all()


# --------------------------------------------------------------------------
# the copy search: exact, bounded ops (no sort per column)


def _oracle_first(rows: np.ndarray) -> np.ndarray:
    eq = np.all(rows[:, None, :] == rows[None, :, :], axis=-1)
    return np.argmax(eq, axis=1)  # the lowest equal index


def _near_duplicates(dtype, seed: int = 0) -> np.ndarray:
    """Copies among rows that differ by one ulp, a sign of zero, a swapped
    pair of columns or a power of two: the hard cases of a hash."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((6, 5)).astype(dtype)
    base[:, 0] = 0.0
    rows = [base,
            np.nextafter(base, np.inf, dtype=dtype),  # one ulp up everywhere
            base[:, [1, 0, 2, 3, 4]],  # a swapped pair of columns
            2 * base,
            -base]  # -0.0 in column 0: equal to +0.0 rows
    x = np.concatenate([*rows, base[::-1], base[:2]])
    return x[rng.permutation(x.shape[0])]


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_copy_search_is_exact(lib, dtype):
    x = _near_duplicates(dtype)
    xp = refloss._checks.namespace(x=_as(lib, x))
    first = to_numpy(dist._first_copies(xp, None, _as(lib, x)))
    np.testing.assert_array_equal(first, _oracle_first(x))


def test_copy_search_without_sorts_per_column(monkeypatch):
    # near-duplicate rows share a float hash; the bit-pattern hashes tell
    # them apart, so the column-by-column sort is never needed
    def refuse(*args, **kwargs):
        raise AssertionError("_lex_order called")

    monkeypatch.setattr(dist, "_lex_order", refuse)
    rng = np.random.default_rng(0)
    base = 1e3 + rng.standard_normal((512, 16)).astype(np.float32)
    x = torch.asarray(np.concatenate([base, np.nextafter(base, np.inf), base[:64]]))
    for check in (True, False):
        rl.pairwise_distances(x, check=check)


@pytest.mark.parametrize("lib", LIBS)
def test_hash_clash_falls_back_to_the_exact_sort(monkeypatch, lib):
    # every row hashes alike: the read path sees the clash and sorts the
    # rows column by column, so copies are still found, lowest index first
    def constant(xp, rows):
        zero = xp.zeros((rows.shape[0],), dtype=xp.int32)
        return zero, zero

    monkeypatch.setattr(dist, "_row_hashes", constant)
    x = _near_duplicates(np.float64)
    xp = refloss._checks.namespace(x=_as(lib, x))
    first = to_numpy(dist._first_copies(xp, None, _as(lib, x)))
    np.testing.assert_array_equal(first, _oracle_first(x))


# --------------------------------------------------------------------------
# the hinge triplet losses skip the positive table (no class width to read)


@pytest.mark.parametrize("loss", [rl.semihard_triplet_loss, rl.batch_all_triplet_loss])
def test_hinge_losses_without_checks_agree(loss):
    rng = np.random.default_rng(3)
    labels = torch.asarray(rng.permutation(np.arange(40) // 5))
    x = torch.asarray(rng.standard_normal((40, 4)))
    v1, (g1, _) = rl.value_and_grad(loss, x, labels)
    v2, (g2, _) = rl.value_and_grad(loss, x, labels, check=False)
    np.testing.assert_allclose(float(v2), float(v1), rtol=1e-12)
    np.testing.assert_allclose(to_numpy(g2), to_numpy(g1), rtol=1e-10, atol=1e-12)


def test_jax_eager_reads_nothing(monkeypatch):
    # JAX outside jit: no fetch holds anything to read, no flag is tested on
    # the host; the values agree with the read path (which recomputes in
    # dense blocks, where XLA may round a pair's sum differently)
    jnp = pytest.importorskip("jax.numpy")
    done = refloss._checks.Fetch.done

    def done_without_read(self):
        assert not self._pending and not self._checks, "a read"
        done(self)

    x = jnp.asarray(_tight_class(24, 4, np.float32))
    want = to_numpy(rl.pairwise_distances(x))
    with monkeypatch.context() as mp:
        mp.setattr(refloss._checks.Fetch, "done", done_without_read)
        mp.setattr(refloss._checks, "any_true", lambda *a: pytest.fail("a read"))
        got = to_numpy(rl.pairwise_distances(x, check=False))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
