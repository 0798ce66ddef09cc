"""refloss.testing.strategies: what each strategy promises, checked on draws.

Each property is checked on the drawn NumPy arrays with independent
brute-force computations (distances by explicit differences); the existence
properties ("exact ties are drawn", "single-class batches are drawn") use
``hypothesis.find``, which fails when no example satisfies the condition.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

from refloss.testing import strategies as rst

# existence checks: the first example found is enough (no shrinking)
FIND = settings(max_examples=2000, database=None, deadline=None, phases=[Phase.generate],
                derandomize=True, suppress_health_check=list(HealthCheck))
SHRINK = settings(max_examples=200, database=None, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))


def distances(x: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            d[i, j] = np.sqrt(np.sum((x[i].astype(np.float64) - x[j]) ** 2))
    return d


def distinct_pair_distances(x: np.ndarray) -> np.ndarray:
    u = np.unique(x.astype(np.float64), axis=0)
    d = distances(u)
    return d[np.triu_indices(u.shape[0], 1)]


def has_exact_tie(x: np.ndarray) -> bool:
    """Some row sees two other distinct rows at the same positive distance."""
    d = distances(x)
    n = x.shape[0]
    for i, j, k in itertools.permutations(range(n), 3):
        if 0 < d[i, j] == d[i, k] and not np.array_equal(x[j], x[k]):
            return True
    return False


# --------------------------------------------------------------------------
# labeled batches


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@given(data=st.data())
def test_labeled_batch_shapes_dtypes_and_label_range(dtype, data):
    x, labels = data.draw(rst.labeled_batches(min_size=2, max_size=6, min_dim=2, max_dim=3,
                                              max_classes=3, dtype=dtype))
    assert x.dtype == np.dtype(dtype) and labels.dtype == np.int64
    assert 2 <= x.shape[0] <= 6 and 2 <= x.shape[1] <= 3
    assert labels.shape == (x.shape[0],)
    assert np.all((labels >= 0) & (labels < 3))


@given(rst.labeled_batches(dtype="float32", scale=10.0))
def test_coordinates_are_grid_values_exact_in_float32(batch):
    x = batch.x.astype(np.float64)
    assert np.all(np.abs(x) <= 10.0)
    assert np.array_equal(x * 1024, np.round(x * 1024))


@given(rst.labeled_batches(samples_per_class=3, min_classes=2, max_classes=3))
def test_samples_per_class_gives_a_p_by_k_batch(batch):
    _, counts = np.unique(batch.labels, return_counts=True)
    assert np.all(counts == 3) and 2 <= counts.size <= 3
    assert batch.x.shape[0] == 3 * counts.size


@given(rst.labeled_batches(samples_per_class=(1, 2), max_classes=3))
def test_samples_per_class_range_is_respected(batch):
    _, counts = np.unique(batch.labels, return_counts=True)
    assert np.all((counts >= 1) & (counts <= 2))


@given(rst.labeled_batches(singletons=False))
def test_without_singletons_every_sample_has_a_positive(batch):
    _, counts = np.unique(batch.labels, return_counts=True)
    assert np.all(counts >= 2)


@given(rst.labeled_batches(min_size=2, single_class=False))
def test_without_single_class_every_batch_has_a_negative(batch):
    assert np.unique(batch.labels).size >= 2


@given(rst.labeled_batches(min_size=3, min_classes=3))
def test_min_classes_is_respected(batch):
    assert np.unique(batch.labels).size >= 3


@given(rst.labeled_batches(duplicates=False))
def test_without_duplicates_rows_are_distinct(batch):
    assert np.unique(batch.x, axis=0).shape[0] == batch.x.shape[0]


@settings(max_examples=15)
@given(rst.labeled_batches(ties=False, margin=0.5, min_gap=0.05, duplicates=False))
def test_ties_false_keeps_distances_and_hinges_apart(batch):
    d = distinct_pair_distances(batch.x)
    assert np.all(d >= 0.05)
    for di, dj in itertools.permutations(d, 2):
        assert abs(di - dj) >= 0.05
        assert abs(di - dj + 0.5) >= 0.05


def test_ties_true_draws_exact_distance_ties():
    find(rst.labeled_batches(min_size=3, max_size=5, max_dim=2), lambda b: has_exact_tie(b.x),
         settings=FIND)


def test_duplicates_are_drawn():
    find(rst.labeled_batches(ties=False),
         lambda b: np.unique(b.x, axis=0).shape[0] < b.x.shape[0], settings=FIND)


def test_singleton_classes_are_drawn():
    find(rst.labeled_batches(min_size=2),
         lambda b: np.any(np.unique(b.labels, return_counts=True)[1] == 1)
         and np.unique(b.labels).size > 1, settings=FIND)


def test_single_class_batches_are_drawn():
    find(rst.labeled_batches(min_size=3), lambda b: np.unique(b.labels).size == 1,
         settings=FIND)


def test_batches_shrink_to_the_smallest_example():
    # a positive pair and a negative need three samples in one dimension
    def has_pair_and_negative(b):
        _, counts = np.unique(b.labels, return_counts=True)
        return counts.size >= 2 and counts.max() >= 2

    batch = find(rst.labeled_batches(max_size=5, max_dim=2), has_pair_and_negative,
                 settings=SHRINK)
    assert batch.x.shape == (3, 1)
    assert np.all(batch.x == 0)


# --------------------------------------------------------------------------
# centers, triplets, pairs, embeddings, margins


@given(rst.center_batches(max_classes=3, extra_classes=2))
def test_center_batches_have_a_center_for_every_label(batch):
    x, labels, centers = batch
    assert centers.shape[1] == x.shape[1] and centers.dtype == x.dtype
    assert labels.max() + 1 <= centers.shape[0] <= labels.max() + 3


@given(rst.center_batches(num_classes=4, min_size=5, max_size=5, min_dim=2, max_dim=2))
def test_center_batches_with_num_classes_have_one_shape(batch):
    assert batch.x.shape == (5, 2) and batch.centers.shape == (4, 2)
    assert batch.labels.max() < 4


def test_center_batches_draw_an_embedding_at_its_center():
    find(rst.center_batches(),
         lambda b: np.any(np.all(b.x == b.centers[b.labels], axis=1)), settings=FIND)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@given(data=st.data())
def test_triplets_are_three_arrays_of_one_shape(dtype, data):
    a, p, n = data.draw(rst.triplets(min_rows=1, max_rows=3, dtype=dtype))
    assert a.shape == p.shape == n.shape and 1 <= a.shape[0] <= 3
    assert a.dtype == p.dtype == n.dtype == np.dtype(dtype)


@settings(max_examples=15)
@given(rst.triplets(ties=False, margin=1.0, duplicates=False, min_gap=0.05))
def test_triplets_without_ties_keep_kinks_away(trip):
    a, p, n = (v.astype(np.float64) for v in trip)
    for i in range(a.shape[0]):
        dap = np.sqrt(np.sum((a[i] - p[i]) ** 2))
        dan = np.sqrt(np.sum((a[i] - n[i]) ** 2))
        dpn = np.sqrt(np.sum((p[i] - n[i]) ** 2))
        assert min(dap, dan, dpn) >= 0.05
        assert abs(dap - dan) >= 0.05 and abs(dap - dan + 1.0) >= 0.05


def test_triplets_draw_a_hinge_exactly_at_zero():
    def at_zero(t):
        dap = np.sqrt(np.sum((t.anchor - t.positive) ** 2, axis=1))
        dan = np.sqrt(np.sum((t.anchor - t.negative) ** 2, axis=1))
        return np.any((dap + 1.0 == dan) & (dap > 0))

    find(rst.triplets(), at_zero, settings=FIND)


@pytest.mark.parametrize("same", [True, False])
@given(data=st.data())
def test_pairs_with_fixed_flags(same, data):
    a, b, flags = data.draw(rst.pairs(same=same))
    assert a.shape == b.shape and flags.shape == (a.shape[0],)
    assert flags.dtype == np.bool_ and np.all(flags == same)


@given(rst.pairs(duplicates=False))
def test_pairs_without_duplicates_are_apart(p):
    assert np.all(np.any(p.a != p.b, axis=1))


def test_pairs_draw_identical_members():
    find(rst.pairs(), lambda p: np.any(np.all(p.a == p.b, axis=1)), settings=FIND)


@given(rst.embeddings(min_rows=2, max_rows=5, min_dim=3, max_dim=3, dtype="float32"))
def test_embeddings_shape_and_dtype(x):
    assert 2 <= x.shape[0] <= 5 and x.shape[1] == 3 and x.dtype == np.float32


@given(rst.margins(min_value=0.1, max_value=0.5))
def test_margins_stay_in_range(m):
    assert 0.1 <= m <= 0.5


def test_margins_include_the_common_defaults():
    find(rst.margins(), lambda m: m == 0.05, settings=FIND)


# --------------------------------------------------------------------------
# bad options fail when the strategy is built, naming the argument

BAD = [
    (rst.labeled_batches, {"dtype": "float16"}, ValueError, "dtype: expected"),
    (rst.labeled_batches, {"min_size": 5, "max_size": 2}, ValueError, "max_size: expected"),
    (rst.labeled_batches, {"max_dim": 0}, ValueError, "max_dim: expected"),
    (rst.labeled_batches, {"max_size": 2.5}, TypeError, "max_size: expected an integer"),
    (rst.labeled_batches, {"samples_per_class": "two"}, TypeError, "samples_per_class:"),
    (rst.labeled_batches, {"margin": -1.0}, ValueError, "margin: expected"),
    (rst.labeled_batches, {"ties": "no"}, TypeError, "ties: expected True or False"),
    (rst.labeled_batches, {"single_class": False, "max_classes": 1}, ValueError,
     "max_classes: expected"),
    (rst.labeled_batches, {"min_gap": 0.0}, ValueError, "min_gap: expected"),
    (rst.triplets, {"scale": float("inf")}, ValueError, "scale: expected"),
    (rst.pairs, {"same": 1}, TypeError, "same: expected True or False"),
    (rst.center_batches, {"num_classes": 0}, ValueError, "num_classes: expected"),
    (rst.embeddings, {"duplicates": None}, TypeError, "duplicates: expected"),
    (rst.margins, {"min_value": -0.5}, ValueError, "min_value: expected"),
    (rst.margins, {"min_value": 1.0, "max_value": 0.5}, ValueError, "max_value: expected"),
]


@pytest.mark.parametrize(("factory", "kwargs", "exc", "message"), BAD,
                         ids=[f"{f.__name__}-{next(iter(k))}" for f, k, _, _ in BAD])
def test_bad_option_is_rejected_at_once(factory, kwargs, exc, message):
    with pytest.raises(exc, match=f"^{message}"):
        factory(**kwargs)
