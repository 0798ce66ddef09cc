"""The miners: exact indices against brute-force oracles,
TensorFlow's semi-hard rule, tie-breaking, mined loss == triplet_margin_loss.

Oracles are loops over the definitions (DESIGN.md "Mining over a labeled
batch"; PEERS.md §2.2 for TensorFlow's semi-hard rule), in NumPy float64;
distances and the batch-hard miner are the shared ones of tests/helpers.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from array_api_compat import array_namespace
from array_api_compat import device as array_device
from helpers import (
    assert_close,
    continuous_batches,
    o_block_triplets,
    o_matrix,
    o_normalize,
    to_numpy,
)
from hypothesis import given
from hypothesis import strategies as st

import refloss as rl

METRICS = ["euclidean", "sqeuclidean", "cosine"]


# --------------------------------------------------------------------------
# oracles


def o_batch_hard(dm, labels):
    """(a, p*, n*) per anchor with a positive and a negative: the shared
    brute-force miner (tests/helpers.py), without its output slot."""
    return [t[1:] for t in o_block_triplets(dm, labels, "hard", 0, len(labels))]


def tf_semihard_distance(dm, labels, a, p):
    """TensorFlow Addons' NumPy oracle (triplet_test.py::triplet_semihard_loss_np):
    the sorted negative distances of the anchor, the first one strictly greater
    than the positive distance, else the largest."""
    neg_dists = sorted(dm[a, k] for k in range(len(labels)) if labels[k] != labels[a])
    for d in neg_dists:
        if d > dm[a, p]:
            return d
    return neg_dists[-1]


def o_semihard(dm, labels):
    """(a, p, n*) per ordered positive pair whose anchor has a negative: n* the
    lowest index holding TensorFlow's semi-hard distance."""
    out = []
    for a in range(len(labels)):
        neg = [n for n in range(len(labels)) if labels[n] != labels[a]]
        if not neg:
            continue
        for p in range(len(labels)):
            if p == a or labels[p] != labels[a]:
                continue
            target = tf_semihard_distance(dm, labels, a, p)
            out.append((a, p, min(n for n in neg if dm[a, n] == target)))
    return out


# --------------------------------------------------------------------------
# helpers and strategies


def assert_indices(actual, expected, backend):
    assert array_namespace(actual) is backend.xp
    assert array_device(actual) == backend.device
    assert backend.xp.isdtype(actual.dtype, "integral"), actual.dtype
    np.testing.assert_array_equal(to_numpy(actual), np.asarray(expected, dtype=np.int64))


def assert_triplets(got, expected, backend):
    expected = np.asarray(expected, dtype=np.int64).reshape(-1, 3)
    for k in range(3):
        assert_indices(got[k], expected[:, k], backend)


# --------------------------------------------------------------------------
# the miners against their oracles


@pytest.mark.parametrize("metric", METRICS)
@given(batch=continuous_batches(), normalize=st.booleans())
def test_mine_batch_hard_matches_oracle(backend, metric, batch, normalize):
    x, labels = batch
    expected = o_batch_hard(o_matrix(o_normalize(x) if normalize else x, metric), labels)
    got = rl.mine_batch_hard(backend.asarray(x), backend.asarray(labels), metric=metric,
                             normalize=normalize)
    assert_triplets(got, expected, backend)


@pytest.mark.parametrize("metric", METRICS)
@given(batch=continuous_batches(), normalize=st.booleans())
def test_mine_semihard_follows_tensorflows_rule(backend, metric, batch, normalize):
    x, labels = batch
    dm = o_matrix(o_normalize(x) if normalize else x, metric)
    expected = o_semihard(dm, labels)
    got = rl.mine_semihard(backend.asarray(x), backend.asarray(labels), metric=metric,
                           normalize=normalize)
    assert_triplets(got, expected, backend)
    a, p, n = (to_numpy(v) for v in got)
    for ai, pi, ni in zip(a, p, n):
        np.testing.assert_allclose(dm[ai, ni], tf_semihard_distance(dm, labels, ai, pi),
                                   rtol=1e-12)


@given(batch=continuous_batches())
def test_mined_triplets_are_valid(backend, batch):
    x, labels = batch
    for miner in (rl.mine_batch_hard, rl.mine_semihard):
        a, p, n = (to_numpy(v) for v in miner(backend.asarray(x), backend.asarray(labels)))
        assert np.all(a != p)
        assert np.all(labels[a] == labels[p])
        assert np.all(labels[a] != labels[n])
    a, _, _ = (to_numpy(v) for v in rl.mine_batch_hard(backend.asarray(x),
                                                        backend.asarray(labels)))
    assert np.all(np.diff(a) > 0)  # one triplet per anchor, ascending


# --------------------------------------------------------------------------
# the mined loss equals triplet_margin_loss on the gathered triplets


def _gathered_loss(backend, x, triplets, reduction, g_terms, **kw):
    """triplet_margin_loss on x[a], x[p], x[n]: value and its gradient summed
    back onto the rows of x (np.add.at, in the test only)."""
    a, p, n = (to_numpy(v) for v in triplets)
    args = tuple(backend.asarray(x[i]) for i in (a, p, n))
    value, pullback = rl.vjp(rl.triplet_margin_loss, *args, reduction=reduction, **kw)
    g = backend.asarray(g_terms) if reduction == "none" else 1.0
    grads = pullback(g)
    gx = np.zeros_like(x)
    for idx, gr in zip((a, p, n), grads):
        np.add.at(gx, idx, to_numpy(gr))
    return value, gx, (a, p, n)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "mean_nonzero"])
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("metric", METRICS)
@given(batch=continuous_batches(), margin=st.floats(0.0, 2.0, allow_subnormal=False),
       seed=st.integers(0, 2**16))
def test_batch_hard_loss_equals_triplet_loss_on_mined_triplets(backend, metric, soft,
                                                               reduction, batch, margin, seed):
    x, labels = batch
    xa, la = backend.asarray(x), backend.asarray(labels)
    kw = {"margin": margin, "metric": metric, "soft": soft}
    triplets = rl.mine_batch_hard(xa, la, metric=metric)
    g = np.random.default_rng(seed).normal(size=x.shape[0])
    anchors = to_numpy(triplets[0])
    value, gx, _ = _gathered_loss(backend, x, triplets, reduction, g[anchors], **kw)
    mined_value, pullback = rl.vjp(rl.batch_hard_triplet_loss, xa, la, reduction=reduction,
                                   **kw)
    (mined_gx, _) = pullback(backend.asarray(g) if reduction == "none" else 1.0)
    if reduction == "none":
        expected = np.zeros(x.shape[0])
        expected[anchors] = to_numpy(value)
        assert_close(mined_value, expected, backend, rtol=1e-9, atol=1e-12)
    else:
        assert_close(mined_value, to_numpy(value), backend, rtol=1e-9, atol=1e-12)
    assert_close(mined_gx, gx, backend, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "mean_nonzero"])
@pytest.mark.parametrize("metric", METRICS)
@given(batch=continuous_batches(), margin=st.floats(0.0, 2.0, allow_subnormal=False),
       normalize=st.booleans(), seed=st.integers(0, 2**16))
def test_semihard_loss_equals_triplet_loss_on_mined_triplets(backend, metric, reduction, batch,
                                                             margin, normalize, seed):
    x, labels = batch
    xa, la = backend.asarray(x), backend.asarray(labels)
    kw = {"margin": margin, "metric": metric, "normalize": normalize}
    triplets = rl.mine_semihard(xa, la, metric=metric, normalize=normalize)
    b = x.shape[0]
    g = np.random.default_rng(seed).normal(size=(b, b))
    a, p, _ = (to_numpy(v) for v in triplets)
    value, gx, _ = _gathered_loss(backend, x, triplets, reduction, g[a, p], **kw)
    mined_value, pullback = rl.vjp(rl.semihard_triplet_loss, xa, la, reduction=reduction, **kw)
    (mined_gx, _) = pullback(backend.asarray(g) if reduction == "none" else 1.0)
    if reduction == "none":
        expected = np.zeros((b, b))
        expected[a, p] = to_numpy(value)
        assert_close(mined_value, expected, backend, rtol=1e-9, atol=1e-12)
    else:
        assert_close(mined_value, to_numpy(value), backend, rtol=1e-9, atol=1e-12)
    assert_close(mined_gx, gx, backend, rtol=1e-8, atol=1e-10)


# --------------------------------------------------------------------------
# ties and edge cases


def _tie_batch():
    """Integer points with zero mean, so every distance is exact on every
    backend: from row 0, d = 2 to rows 1 and 4, d = 3 to rows 2 and 3."""
    x = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0], [0.0, -3.0], [-2.0, 0.0]])
    labels = np.array([0, 0, 1, 1, 1])
    return x, labels


def test_tie_batch_distances_are_exact(backend):
    x, _ = _tie_batch()
    d = to_numpy(rl.pairwise_distances(backend.asarray(x)))
    assert d[0, 1] == d[0, 4] == 2.0 and d[0, 2] == d[0, 3] == 3.0


def test_ties_go_to_the_lowest_index(backend):
    """Row 0: its hardest negative is a tie (rows 4 at d = 2 = d_ap is the
    minimum alone; rows 2, 3 tie at 3). Semi-hard for (0, 1): row 4 sits
    exactly at d_ap, which is not strictly farther; rows 2 and 3 tie at 3,
    and the lower index, 2, is taken."""
    x, labels = _tie_batch()
    xa, la = backend.asarray(x), backend.asarray(labels)
    dm = o_matrix(x, "euclidean")
    assert_triplets(rl.mine_batch_hard(xa, la), o_batch_hard(dm, labels), backend)
    got = rl.mine_semihard(xa, la)
    assert_triplets(got, o_semihard(dm, labels), backend)
    assert [int(v) for v in to_numpy(got[2])[:2]] == [2, 2]  # pairs (0, 1) and (1, 0)
    # a tie between two positives at the maximum and two negatives at the minimum
    y = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    ly = np.array([0, 0, 0, 1, 1])
    a, p, n = (to_numpy(v) for v in rl.mine_batch_hard(backend.asarray(y),
                                                        backend.asarray(ly)))
    assert (a[0], p[0], n[0]) == (0, 1, 3)
    # semi-hard fallback with a tie at the largest negative: lowest index
    a, p, n = (to_numpy(v) for v in rl.mine_semihard(backend.asarray(y), backend.asarray(ly)))
    assert (a[0], p[0], n[0]) == (0, 1, 3)


def test_semihard_falls_back_to_the_farthest_negative(backend):
    # anchor 0, positive 1 far away: no negative is farther, take the farthest (row 3)
    x = np.array([[0.0, 0.0], [10.0, 0.0], [1.0, 0.0], [0.0, 3.0], [-2.0, 0.0]])
    labels = np.array([0, 0, 1, 1, 1])
    a, p, n = (to_numpy(v) for v in rl.mine_semihard(backend.asarray(x),
                                                      backend.asarray(labels)))
    assert (a[0], p[0], n[0]) == (0, 1, 3)
    # anchor 1, positive 0 (d = 10): negatives at 9, sqrt(109), 12 -> the nearest
    # of those strictly farther than 10, row 3
    assert (a[1], p[1], n[1]) == (1, 0, 3)


@pytest.mark.parametrize("labels", [
    pytest.param([0, 1, 2, 3], id="all-distinct"),
    pytest.param([5, 5, 5, 5], id="single-class"),
    pytest.param([0], id="one-row"),
    pytest.param([], id="empty"),
])
def test_no_valid_triplet_gives_empty_indices(backend, labels):
    labels = np.array(labels, dtype=np.int64)
    x = np.random.default_rng(0).normal(size=(len(labels), 2))
    for miner in (rl.mine_batch_hard, rl.mine_semihard):
        assert_triplets(miner(backend.asarray(x), backend.asarray(labels)), [], backend)


def test_anchors_without_positive_or_negative_yield_no_triplet(backend):
    x = np.array([[0.0, 0.0], [0.5, 0.0], [3.0, 1.0], [0.0, 2.0], [0.2, 0.3]])
    labels = np.array([0, 0, 1, 2, 0])  # rows 2 and 3 have no positive
    dm = o_matrix(x, "euclidean")
    xa, la = backend.asarray(x), backend.asarray(labels)
    assert_triplets(rl.mine_batch_hard(xa, la), o_batch_hard(dm, labels), backend)
    assert_triplets(rl.mine_semihard(xa, la), o_semihard(dm, labels), backend)
    assert set(to_numpy(rl.mine_batch_hard(xa, la)[0]).tolist()) == {0, 1, 4}


def test_duplicate_embeddings_are_mined_with_distance_zero(backend):
    # row 1 duplicates row 0 across classes: the hardest negative of 0 is 1 (d = 0)
    x = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.5], [3.0, 1.0]])
    labels = np.array([0, 1, 0, 1])
    a, p, n = (to_numpy(v) for v in rl.mine_batch_hard(backend.asarray(x),
                                                        backend.asarray(labels)))
    assert (a[0], p[0], n[0]) == (0, 2, 1)
    assert (a[1], p[1], n[1]) == (1, 3, 0)


# --------------------------------------------------------------------------
# bad input

X = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0], [-1.0, 0.5]])
LABELS = np.array([0, 1, 0, 1])


@pytest.mark.parametrize("miner", [rl.mine_batch_hard, rl.mine_semihard])
@pytest.mark.parametrize(("override", "exc", "match"), [
    ({"x": X[0]}, ValueError, "x: expected a 2-D array"),
    ({"x": X.astype(np.int64)}, TypeError, "x: expected a real floating dtype"),
    ({"x": np.where(X > 1, np.nan, X)}, ValueError, "x: expected finite values"),
    ({"x": np.where(X > 1, -np.inf, X)}, ValueError, "x: expected finite values"),
    ({"x": "x"}, TypeError, "x: expected an array"),
    ({"labels": LABELS.astype(np.float32)}, TypeError, "labels: expected an integer"),
    ({"labels": LABELS[:, None]}, ValueError, "labels: expected a 1-D array"),
    ({"labels": LABELS[:2]}, ValueError, "labels: expected 4 entries"),
    ({"metric": "hamming"}, ValueError, "metric: expected one of"),
    ({"normalize": 1}, TypeError, "normalize: expected a bool"),
])
def test_miners_reject_bad_input(miner, override, exc, match):
    kw = {"x": X, "labels": LABELS} | override
    x, labels = kw.pop("x"), kw.pop("labels")
    with pytest.raises(exc, match=r"^" + match):
        miner(x, labels, **kw)


def test_miners_reject_mixed_namespaces():
    torch = pytest.importorskip("torch")
    for miner in (rl.mine_batch_hard, rl.mine_semihard):
        with pytest.raises(TypeError, match=r"^x, labels: expected arrays from one library"):
            miner(torch.tensor(X), LABELS)
