"""Center loss, class statistics and center updates.

Oracles are transcriptions written here, independently of refloss: the
paper's L_C and TensorFlow's l2_loss (sum), the Caffe layer's 1/M (mean),
the per-class NumPy loop of Eq. 4 from sources/centerloss-notes-zh.txt, and
plain loops for the statistics, the EMA and the running mean.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    assert_close,
    directional_fd,
    labeled_batch,
    to_numpy,
    unit_directions,
)
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import refloss as rl

# --------------------------------------------------------------------------
# oracles


def tf_l2_loss(t: np.ndarray) -> float:
    """tf.nn.l2_loss: sum(t ** 2) / 2 (TensorFlow docs)."""
    return float(np.sum(t**2) / 2)


def caffe_center_loss(x, labels, centers) -> float:
    """ydwen/caffe-face center_loss_layer.cpp Forward_cpu:
    distance = x - center[label]; loss = dot(distance, distance) / M / 2."""
    m = x.shape[0]
    distance = x - centers[labels]
    return float(np.dot(distance.ravel(), distance.ravel()) / m / 2)


def eq4_update(centers, data, labels, alpha):
    """The paper's Eq. 4 as the per-class loop of centerloss-notes-zh.txt
    (update_centers): diff = c[y] - x, per class divided by (1 + n)."""
    centers = np.array(centers, dtype=np.float64)
    diff = centers[labels] - data
    for i in range(centers.shape[0]):
        cur = diff[labels == i]
        cur = cur / (1.0 + 1.0 * len(cur)) * alpha
        for j in range(len(cur)):
            centers[i, :] -= cur[j, :]
    return centers


def loop_stats(x, labels, c):
    sums = np.zeros((c, x.shape[1]))
    counts = np.zeros(c, dtype=np.int64)
    for xi, yi in zip(x, labels):
        sums[yi] += xi
        counts[yi] += 1
    return sums, counts


def loop_ema(centers, x, labels, alpha):
    out = np.array(centers, dtype=np.float64)
    for j in range(centers.shape[0]):
        members = x[labels == j]
        if len(members):
            decay = 1 - alpha
            out[j] = decay * centers[j] + (1 - decay) * members.mean(axis=0)
    return out


@st.composite
def batch_and_centers(draw, max_rows=8):
    x, labels, c = draw(labeled_batch(min_rows=0, max_rows=max_rows))
    centers = draw(hnp.arrays(np.float64, (c, x.shape[1]),
                              elements=st.floats(-10, 10, allow_nan=False, allow_subnormal=False)))
    return x, labels, centers


# --------------------------------------------------------------------------
# loss values


@given(batch_and_centers())
def test_sum_is_tf_l2_loss_and_the_paper_lc(backend, data):
    x, labels, centers = data
    got = rl.center_loss(backend.asarray(x), backend.asarray(labels), backend.asarray(centers))
    assert_close(got, tf_l2_loss(x - centers[labels]), backend, dtype="float64")


@given(batch_and_centers())
def test_mean_is_the_caffe_layer_one_over_m(backend, data):
    x, labels, centers = data
    got = rl.center_loss(backend.asarray(x), backend.asarray(labels),
                         backend.asarray(centers), reduction="mean")
    expected = caffe_center_loss(x, labels, centers) if x.shape[0] else 0.0
    assert_close(got, expected, backend, dtype="float64")


@given(batch_and_centers())
def test_none_gives_one_term_per_sample(backend, data):
    x, labels, centers = data
    got = rl.center_loss(backend.asarray(x), backend.asarray(labels),
                         backend.asarray(centers), reduction="none")
    expected = [0.5 * np.sum((xi - centers[yi]) ** 2) for xi, yi in zip(x, labels)]
    assert_close(got, np.asarray(expected).reshape(-1), backend, dtype="float64")


@given(batch_and_centers(), st.randoms(use_true_random=False))
def test_permuting_the_batch_permutes_the_terms(numpy_backend, data, rnd):
    x, labels, centers = data
    perm = np.arange(x.shape[0])
    rnd.shuffle(perm)
    terms = rl.center_loss(x, labels, centers, reduction="none")
    permuted = rl.center_loss(x[perm], labels[perm], centers, reduction="none")
    np.testing.assert_array_equal(permuted, terms[perm])


def test_float32_stays_float32(backend):
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    labels = np.array([0, 0])
    c = np.zeros((1, 2))
    f32 = backend.xp.float32
    got = rl.center_loss(backend.asarray(x, f32), backend.asarray(labels), backend.asarray(c, f32))
    assert_close(got, 15.0, backend, dtype="float32", rtol=1e-6)


# --------------------------------------------------------------------------
# gradients


@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
@given(batch_and_centers(), st.integers(0, 2**16))
def test_gradients_match_finite_differences(numpy_backend, reduction, data, seed):
    x, labels, centers = data
    rng = np.random.default_rng(seed)
    value, pullback = rl.vjp(rl.center_loss, x, labels, centers, reduction=reduction)
    g = rng.normal(size=np.shape(value))
    gx, glabels, gc = pullback(g if reduction == "none" else float(g))
    assert glabels is None

    def scalar(xx, ll, cc):
        return np.sum(g * rl.center_loss(xx, ll, cc, reduction=reduction))

    for k, grad in ((0, gx), (2, gc)):
        for v in unit_directions(rng, grad.shape):
            fd = directional_fd(scalar, [x, labels, centers], k, v)
            np.testing.assert_allclose(np.sum(grad * v), fd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
@given(batch_and_centers(), st.integers(0, 2**16))
def test_gradients_match_torch_autograd(reduction, data, seed):
    torch = pytest.importorskip("torch")
    x, labels, centers = data
    rng = np.random.default_rng(seed)
    tx = torch.tensor(x, requires_grad=True)
    tc = torch.tensor(centers, requires_grad=True)
    out = rl.center_loss(tx, torch.tensor(labels), tc, reduction=reduction)
    g = rng.normal(size=tuple(out.shape))
    out.backward(torch.tensor(g))
    _, pullback = rl.vjp(rl.center_loss, x, labels, centers, reduction=reduction)
    gx, _, gc = pullback(g if reduction == "none" else float(g))
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gc, tc.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_center_gradient_accumulates_duplicate_labels(backend):
    x = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 5.0]])
    labels = np.array([1, 1, 0])
    centers = np.zeros((3, 2))
    _, grads = rl.value_and_grad(rl.center_loss, backend.asarray(x), backend.asarray(labels),
                                 backend.asarray(centers))
    assert_close(grads[0], x, backend, dtype="float64")
    assert_close(grads[2], [[0.0, -5.0], [-4.0, 0.0], [0.0, 0.0]], backend, dtype="float64")


@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
def test_gradients_agree_across_backends(backend, reduction):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(7, 3))
    labels = np.array([0, 2, 2, 0, 1, 2, 2])
    centers = rng.normal(size=(4, 3))
    g = rng.normal(size=7) if reduction == "none" else 1.5
    _, ref = rl.vjp(rl.center_loss, x, labels, centers, reduction=reduction)
    _, pb = rl.vjp(rl.center_loss, backend.asarray(x), backend.asarray(labels),
                   backend.asarray(centers), reduction=reduction)
    expected = ref(g)
    got = pb(backend.asarray(g) if reduction == "none" else g)
    assert_close(got[0], expected[0], backend, dtype="float64")
    assert got[1] is None
    assert_close(got[2], expected[2], backend, dtype="float64")


# --------------------------------------------------------------------------
# statistics and updates


@given(labeled_batch(min_rows=0))
def test_center_stats_are_per_class_sums_and_counts(backend, data):
    x, labels, c = data
    sums, counts = rl.center_stats(backend.asarray(x), backend.asarray(labels), c)
    esums, ecounts = loop_stats(x, labels, c)
    assert_close(sums, esums, backend, dtype="float64")
    assert_close(counts, ecounts, backend)
    assert backend.xp.isdtype(counts.dtype, "integral")


def test_duplicate_labels_accumulate(backend):
    x = np.array([[1.0], [2.0], [4.0], [8.0]])
    labels = np.array([0, 0, 2, 0])
    sums, counts = rl.center_stats(backend.asarray(x), backend.asarray(labels), 3)
    assert_close(sums, [[11.0], [0.0], [4.0]], backend, atol=0)
    assert_close(counts, [3, 0, 1], backend, atol=0)


@pytest.mark.parametrize("alpha", [0.0, 0.05, 0.5, 1.0])
@given(batch_and_centers())
def test_wen_rule_is_the_papers_eq4(backend, alpha, data):
    x, labels, centers = data
    got = rl.update_centers(backend.asarray(centers), backend.asarray(x),
                            backend.asarray(labels), rule="wen", alpha=alpha)
    assert_close(got, eq4_update(centers, x, labels, alpha), backend, dtype="float64")


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
@given(batch_and_centers())
def test_ema_rule_moves_present_classes_toward_their_batch_mean(backend, alpha, data):
    x, labels, centers = data
    got = rl.update_centers(backend.asarray(centers), backend.asarray(x),
                            backend.asarray(labels), rule="ema", alpha=alpha)
    assert_close(got, loop_ema(centers, x, labels, alpha), backend, dtype="float64")


@pytest.mark.parametrize("rule", ["wen", "ema"])
@given(batch_and_centers(), st.floats(0, 1))
def test_absent_classes_never_move(numpy_backend, rule, data, alpha):
    x, labels, centers = data
    new = rl.update_centers(centers, x, labels, rule=rule, alpha=alpha)
    absent = np.setdiff1d(np.arange(centers.shape[0]), labels)
    np.testing.assert_array_equal(new[absent], centers[absent])


@pytest.mark.parametrize("rule", ["wen", "ema"])
@given(batch_and_centers(), st.integers(0, 8), st.floats(0, 1))
def test_update_from_summed_stats_of_a_split_equals_whole_batch(backend, rule, data, cut,
                                                                  alpha):
    """Data-parallel shards: all-reduce (s, n), then update once."""
    x, labels, centers = data
    cut = min(cut, x.shape[0])
    c = centers.shape[0]
    xa, la, ca = backend.asarray(x), backend.asarray(labels), backend.asarray(centers)
    s1, n1 = rl.center_stats(xa[:cut, ...], la[:cut], c)
    s2, n2 = rl.center_stats(xa[cut:, ...], la[cut:], c)
    split = rl.update_centers_from_stats(ca, s1 + s2, n1 + n2, rule=rule, alpha=alpha)
    whole = rl.update_centers(ca, xa, la, rule=rule, alpha=alpha)
    assert_close(split, to_numpy(whole), backend, dtype="float64", rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rule", ["wen", "ema"])
@given(batch_and_centers(), st.randoms(use_true_random=False))
def test_update_does_not_depend_on_batch_order(numpy_backend, rule, data, rnd):
    x, labels, centers = data
    perm = np.arange(x.shape[0])
    rnd.shuffle(perm)
    a = rl.update_centers(centers, x, labels, rule=rule)
    b = rl.update_centers(centers, x[perm], labels[perm], rule=rule)
    np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)


def test_update_does_not_modify_its_inputs(backend):
    centers = np.ones((2, 2))
    x = np.array([[3.0, 3.0]])
    ca, xa = backend.asarray(centers), backend.asarray(x)
    rl.update_centers(ca, xa, backend.asarray(np.array([1])))
    np.testing.assert_array_equal(to_numpy(ca), centers)
    np.testing.assert_array_equal(to_numpy(xa), x)


# --------------------------------------------------------------------------
# RunningCenters


@given(st.lists(labeled_batch(min_rows=0, max_rows=6, max_dim=3, max_classes=1), min_size=1,
                max_size=4), st.integers(1, 4))
def test_running_mean_is_the_mean_of_everything_seen(numpy_backend, batches, c):
    dim = batches[0][0].shape[1]
    batches = [(x[:, :dim] if x.shape[1] >= dim else np.pad(x, ((0, 0), (0, dim - x.shape[1]))),
                labels % c) for x, labels, _ in batches]
    rc = rl.RunningCenters(c, dim, rule="mean")
    for x, labels in batches:
        rc.update(x, labels)
    allx = np.concatenate([x for x, _ in batches])
    ally = np.concatenate([labels for _, labels in batches])
    for j in range(c):
        members = allx[ally == j]
        expected = members.mean(axis=0) if len(members) else np.zeros(dim)
        np.testing.assert_allclose(rc.centers[j], expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(rc.counts, np.bincount(ally, minlength=c))


@pytest.mark.parametrize("rule", ["wen", "ema"])
def test_running_centers_apply_update_centers_batch_after_batch(backend, rule):
    rng = np.random.default_rng(2)
    init = rng.normal(size=(3, 2))
    rc = rl.RunningCenters(3, 2, rule=rule, alpha=0.3, init=backend.asarray(init))
    expected = init
    for _ in range(3):
        x = rng.normal(size=(5, 2))
        labels = rng.integers(0, 3, size=5)
        rc.update(backend.asarray(x), backend.asarray(labels))
        expected = rl.update_centers(expected, x, labels, rule=rule, alpha=0.3)
    assert_close(rc.centers, expected, backend, dtype="float64")


def test_running_mean_keeps_the_initial_center_of_unseen_classes(backend):
    init = np.array([[1.0, 1.0], [2.0, 2.0]])
    rc = rl.RunningCenters(2, 2, rule="mean", init=backend.asarray(init))
    rc.update(backend.asarray(np.array([[4.0, 0.0], [0.0, 4.0]])),
              backend.asarray(np.array([1, 1])))
    assert_close(rc.centers, [[1.0, 1.0], [2.0, 2.0]], backend, atol=0)


@pytest.mark.parametrize("rule", ["wen", "ema", "mean"])
def test_state_dict_round_trips_exactly(backend, rule):
    rng = np.random.default_rng(4)
    like = backend.asarray(np.zeros(1))
    rc = rl.RunningCenters(4, 3, rule=rule, alpha=0.25, like=like)
    for _ in range(2):
        rc.update(backend.asarray(rng.normal(size=(6, 3))),
                  backend.asarray(rng.integers(0, 4, size=6)))
    state = rc.state_dict()
    other = rl.RunningCenters(4, 3, rule=rule, like=like)
    other.load_state_dict(state)
    for key in ("centers", "sums", "counts"):
        np.testing.assert_array_equal(to_numpy(other.state_dict()[key]), to_numpy(state[key]))
    assert other.alpha == 0.25
    x = backend.asarray(rng.normal(size=(6, 3)))
    labels = backend.asarray(rng.integers(0, 4, size=6))
    np.testing.assert_array_equal(to_numpy(other.update(x, labels)),
                                  to_numpy(rc.update(x, labels)))


def test_state_dict_arrays_are_copies(numpy_backend):
    rc = rl.RunningCenters(2, 2)
    state = rc.state_dict()
    state["centers"][0, 0] = 99.0
    assert rc.centers[0, 0] == 0.0


def test_running_centers_follow_like(backend):
    like = backend.asarray(np.zeros(1), dtype=backend.xp.float32)
    rc = rl.RunningCenters(3, 2, like=like)
    assert_close(rc.centers, np.zeros((3, 2)), backend, dtype="float32", atol=0)


def test_center_functions_run_without_data_dependent_shapes():
    """array-api-strict with data-dependent shapes and boolean indexing off."""
    strict = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(8)
    x = rng.normal(size=(6, 3))
    labels = np.array([0, 1, 1, 3, 0, 1])
    centers = rng.normal(size=(4, 3))
    with strict.ArrayAPIStrictFlags(data_dependent_shapes=False, boolean_indexing=False):
        xs, ls, cs = (strict.asarray(a) for a in (x, labels, centers))
        value, grads = rl.value_and_grad(rl.center_loss, xs, ls, cs)
        new = rl.update_centers(cs, xs, ls, rule="wen", alpha=0.5)
        rc = rl.RunningCenters(4, 3, rule="mean", like=xs)
        rc.update(xs, ls)
        running = rc.centers
    np.testing.assert_allclose(to_numpy(value), tf_l2_loss(x - centers[labels]))
    np.testing.assert_allclose(to_numpy(new), eq4_update(centers, x, labels, 0.5))
    np.testing.assert_allclose(to_numpy(running)[1], x[labels == 1].mean(axis=0))
    np.testing.assert_allclose(to_numpy(grads[0]), x - centers[labels])
