"""Compat presets for center loss (caffe, kaiyangzhou, jxgu1016, facenet,
tf_recipes) and Caffe's ContrastiveLoss layer.

Oracles are written here, independently of refloss, each a transcription of
the cited source:

* ydwen/caffe-face ``src/caffe/layers/center_loss_layer.cpp`` and
  ``contrastive_loss_layer.cpp`` (Forward_cpu / Backward_cpu loops);
* KaiyangZhou/pytorch-center-loss ``center_loss.py`` ``CenterLoss.forward``
  (in NumPy with the chain rule by hand, and in torch run by autograd);
* jxgu1016/MNIST_center_loss_pytorch ``CenterLoss.py`` ``CenterlossFunc``
  (in NumPy, and in torch with the original custom backward);
* davidsandberg/facenet ``src/facenet.py`` ``center_loss``;
* the TensorFlow snippets in sources/center-loss-running-averages-qa.txt
  (``get_new_centers``) and sources/center-loss-tensorflow-tutorial.txt
  (``center_loss(features, labels, alpha=0.0)``).

Every difference a preset documents is shown by a test.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    assert_close,
    directional_fd,
    finite,
    labeled_batch,
    to_numpy,
    unit_directions,
)
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import refloss as rl
from refloss.compat import caffe, facenet, jxgu1016, kaiyangzhou, tf_recipes

TIGHT = {"rtol": 1e-12, "atol": 1e-12}


@st.composite
def batch_and_centers(draw, min_rows=1, max_rows=8):
    x, labels, c = draw(labeled_batch(min_rows=min_rows, max_rows=max_rows))
    centers = draw(hnp.arrays(np.float64, (c, x.shape[1]), elements=finite))
    return x, labels, centers


@st.composite
def pairs(draw, min_rows=1, max_rows=8):
    n = draw(st.integers(min_rows, max_rows))
    d = draw(st.integers(1, 4))
    a = draw(hnp.arrays(np.float64, (n, d), elements=st.floats(-3, 3, allow_subnormal=False)))
    b = draw(hnp.arrays(np.float64, (n, d), elements=st.floats(-3, 3, allow_subnormal=False)))
    similar = draw(hnp.arrays(np.int64, (n,), elements=st.integers(-1, 2)))
    margin = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0]))
    return a, b, similar, margin


def checks_values(backend):
    """Every backend checks values outside jax.jit (tracers are skipped)."""
    return True


def moved(backend, *arrays):
    return [backend.asarray(a) for a in arrays]


def fd_check(f, args, index, grad, rng, *, rtol=1e-5, atol=1e-6):
    for v in unit_directions(rng, grad.shape):
        fd = directional_fd(f, args, index, v)
        np.testing.assert_allclose(np.sum(grad * v), fd, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------
# oracles: transcriptions of the sources


def caffe_center_loss_layer(x, labels, centers, top_diff):
    """ydwen/caffe-face center_loss_layer.cpp, CenterLossLayer::Forward_cpu and
    Backward_cpu (M_ = batch, K_ = dim, N_ = num_output)."""
    m_, k_ = x.shape
    n_ = centers.shape[0]
    distance = np.zeros_like(x)
    for i in range(m_):
        distance[i] = x[i] - centers[labels[i]]
    dot = float(np.dot(distance.ravel(), distance.ravel()))
    loss = dot / m_ / 2
    # gradient with respect to centers
    variation_sum = np.zeros((n_, k_))
    count = np.zeros(n_, dtype=int)
    for m in range(m_):
        variation_sum[labels[m]] = variation_sum[labels[m]] - distance[m]
        count[labels[m]] += 1
    center_diff = np.zeros_like(centers)  # the solver clears the diffs every iteration
    for m in range(m_):
        n = labels[m]
        center_diff[n] = 1.0 / (count[n] + 1.0) * variation_sum[n]
    # gradient with respect to bottom data
    bottom_diff = distance * (top_diff / m_)
    return loss, bottom_diff, center_diff


def caffe_contrastive_loss_layer(a, b, label, margin, legacy_version, top_diff):
    """BVLC contrastive_loss_layer.cpp (copy in ydwen/caffe-face),
    ContrastiveLossLayer::Forward_cpu and Backward_cpu."""
    num, channels = a.shape
    diff = a - b
    dist_sq = np.zeros(num)
    loss = 0.0
    for i in range(num):
        dist_sq[i] = float(np.dot(diff[i], diff[i]))
        if int(label[i]):  # similar pairs
            loss += dist_sq[i]
        elif legacy_version:
            loss += max(margin - dist_sq[i], 0.0)
        else:
            dist = max(margin - np.sqrt(dist_sq[i]), 0.0)
            loss += dist * dist
    loss = loss / num / 2
    grads = []
    for sign in (1.0, -1.0):
        alpha = sign * top_diff / num
        bout = np.zeros((num, channels))
        for j in range(num):
            if int(label[j]):
                bout[j] = alpha * diff[j]
            else:
                if legacy_version:
                    mdist = margin - dist_sq[j]
                    beta = -alpha
                else:
                    dist = np.sqrt(dist_sq[j])
                    mdist = margin - dist
                    beta = -alpha * mdist / (dist + 1e-4)
                if mdist > 0.0:
                    bout[j] = beta * diff[j]
        grads.append(bout)
    return loss, grads[0], grads[1]


def kaiyangzhou_numpy(x, labels, centers, g):
    """KaiyangZhou/pytorch-center-loss center_loss.py, CenterLoss.forward, and
    the chain rule autograd applies to it (clamp passes min <= v <= max)."""
    batch_size, num_classes = x.shape[0], centers.shape[0]
    distmat = np.sum(x**2, axis=1, keepdims=True) + np.sum(centers**2, axis=1, keepdims=True).T
    distmat = distmat + (-2) * (x @ centers.T)  # addmm_(1, -2, x, centers.t())
    mask = (labels[:, None] == np.arange(num_classes)[None, :]).astype(np.float64)
    dist = distmat * mask
    loss = np.clip(dist, 1e-12, 1e12).sum() / batch_size
    g_dist = (g / batch_size) * ((dist >= 1e-12) & (dist <= 1e12))
    g_distmat = g_dist * mask
    gx = g_distmat.sum(axis=1, keepdims=True) * 2 * x - 2 * (g_distmat @ centers)
    gc = g_distmat.sum(axis=0)[:, None] * 2 * centers - 2 * (g_distmat.T @ x)
    return loss, gx, gc


def kaiyangzhou_clear_of_clamp(x, labels, centers):
    """No own-class squared distance within rounding reach of the 1e-12 bound
    (where two BLAS summation orders could fall on different sides)."""
    d = np.sum(x**2, axis=1) + np.sum(centers[labels] ** 2, axis=1) - 2 * np.sum(
        x * centers[labels], axis=1)
    return not np.any(np.abs(d - 1e-12) < 1e-11)


def jxgu1016_numpy(label, feat, centers, size_average, grad_output):
    """jxgu1016/MNIST_center_loss_pytorch CenterLoss.py: CenterLoss.forward and
    CenterlossFunc.forward / backward."""
    batch_size = feat.shape[0] if size_average else 1
    centers_batch = centers[label]
    loss = ((feat - centers_batch) ** 2).sum() / 2.0 / batch_size
    diff = centers_batch - feat
    counts = np.ones(centers.shape[0])
    np.add.at(counts, label, 1.0)
    grad_centers = np.zeros_like(centers)
    np.add.at(grad_centers, label, diff)
    grad_centers = grad_centers / counts[:, None]
    return loss, -grad_output * diff / batch_size, grad_centers / batch_size


def facenet_numpy(features, label, centers, alfa):
    """davidsandberg/facenet src/facenet.py center_loss: gather, diff,
    scatter_sub (row by row), reduce_mean(square(features - centers_batch))."""
    centers = np.array(centers, dtype=np.float64)
    centers_batch = centers[label]
    diff = (1 - alfa) * (centers_batch - features)
    for i, j in enumerate(label):
        centers[j] -= diff[i]
    loss = np.mean(np.square(features - centers_batch))
    return loss, centers


def get_new_centers(center_sums, center_cts, embeddings, indices, nclass):
    """sources/center-loss-running-averages-qa.txt, answer 1, get_new_centers:
    scatter_add sums and cts, then gather(sums) / gather(cts) for every class."""
    center_sums = np.array(center_sums, dtype=np.float64)
    center_cts = np.array(center_cts, dtype=np.float64)
    np.add.at(center_sums, indices, embeddings)
    np.add.at(center_cts, indices, np.ones(len(indices)))
    every = np.arange(nclass)
    with np.errstate(invalid="ignore", divide="ignore"):
        centers = center_sums[every] / center_cts[every].reshape(-1, 1)
    return center_sums, center_cts, centers


def tutorial_update(centers, features, label, alpha):
    """sources/center-loss-tensorflow-tutorial.txt center_loss: diff, then
    unique_with_counts, divide by 1 + appear_times, times alpha, scatter_sub."""
    centers = np.array(centers, dtype=np.float64)
    centers_batch = centers[label]
    diff = (1 - alpha) * (centers_batch - features)
    _, unique_idx, unique_count = np.unique(label, return_inverse=True, return_counts=True)
    appear_times = unique_count[unique_idx].reshape(-1, 1)
    diff = diff / (1 + appear_times).astype(np.float64)
    diff = alpha * diff
    np.subtract.at(centers, label, diff)
    return centers


def tf_l2_loss(t):
    """tf.nn.l2_loss(t) = sum(t ** 2) / 2."""
    return float(np.sum(t**2) / 2)


# --------------------------------------------------------------------------
# caffe.center_loss


@given(batch_and_centers(), st.sampled_from([1.0, 0.01, 2.5]))
def test_caffe_center_loss_matches_the_layer(backend, data, top_diff):
    x, labels, centers = data
    value, pullback = rl.vjp(caffe.center_loss, *moved(backend, x, labels, centers))
    gx, glabels, gc = pullback(top_diff)
    loss, bottom_diff, center_diff = caffe_center_loss_layer(x, labels, centers, top_diff)
    assert_close(value, loss, backend, dtype="float64", **TIGHT)
    assert glabels is None
    assert_close(gx, bottom_diff, backend, dtype="float64", **TIGHT)
    assert_close(gc, center_diff, backend, dtype="float64", **TIGHT)


@given(batch_and_centers())
def test_caffe_center_loss_value_is_the_reference_mean(numpy_backend, data):
    x, labels, centers = data
    np.testing.assert_allclose(caffe.center_loss(x, labels, centers),
                               rl.center_loss(x, labels, centers, reduction="mean"), **TIGHT)


@given(batch_and_centers(), st.integers(0, 2**16))
def test_caffe_feature_gradient_is_the_derivative(numpy_backend, data, seed):
    x, labels, centers = data
    rng = np.random.default_rng(seed)
    _, pullback = rl.vjp(caffe.center_loss, x, labels, centers)
    fd_check(caffe.center_loss, [x, labels, centers], 0, pullback(1.0)[0], rng)


def test_caffe_center_diff_is_eq4_not_the_derivative(backend):
    """Documented difference: the center 'gradient' is Eq. 4, unscaled by the
    loss weight and by 1/M; FD of the value gives the true derivative."""
    x = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]])
    labels = np.array([0, 0, 1])
    centers = np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    _, pullback = rl.vjp(caffe.center_loss, *moved(backend, x, labels, centers))
    diff_1 = to_numpy(pullback(1.0)[2])
    diff_lambda = to_numpy(pullback(0.008)[2])
    eq4 = np.array([[(0 - 1 + 0 - 3) / 3, (0 - 2 + 0 + 1) / 3],
                    [(1 - 0.5) / 2, (1 - 0.5) / 2],
                    [0.0, 0.0]])
    assert_close(pullback(1.0)[2], eq4, backend, dtype="float64", **TIGHT)
    np.testing.assert_array_equal(diff_lambda, diff_1)  # the loss weight does not enter
    true = -(x - centers[labels])  # ∂L/∂c_j = -Σ(x - c)/M
    derivative = np.zeros_like(centers)
    np.add.at(derivative, labels, true / 3)
    fd = [directional_fd(caffe.center_loss, [x, labels, centers], 2, e)
          for e in np.eye(6).reshape(6, 3, 2)]
    np.testing.assert_allclose(np.reshape(fd, (3, 2)), derivative, atol=1e-7)
    assert not np.allclose(diff_1, derivative, atol=1e-3)


@pytest.mark.parametrize("alpha", [0.5, 1.0])
@given(batch_and_centers())
def test_caffe_solver_step_on_center_diff_is_the_wen_update(numpy_backend, alpha, data):
    x, labels, centers = data
    center_diff = rl.vjp(caffe.center_loss, x, labels, centers)[1](1.0)[2]
    np.testing.assert_allclose(centers - alpha * center_diff,
                               rl.update_centers(centers, x, labels, rule="wen", alpha=alpha),
                               **TIGHT)


# --------------------------------------------------------------------------
# caffe.contrastive_loss


@pytest.mark.parametrize("legacy_version", [False, True])
@given(pairs(), st.sampled_from([1.0, 0.3]))
def test_caffe_contrastive_matches_the_layer(backend, legacy_version, data, top_diff):
    a, b, similar, margin = data
    value, pullback = rl.vjp(caffe.contrastive_loss, *moved(backend, a, b, similar),
                             margin=margin, legacy_version=legacy_version)
    ga, gb, gs = pullback(top_diff)
    loss, da, db = caffe_contrastive_loss_layer(a, b, similar, margin, legacy_version, top_diff)
    assert_close(value, loss, backend, dtype="float64", **TIGHT)
    assert gs is None
    assert_close(ga, da, backend, dtype="float64", **TIGHT)
    assert_close(gb, db, backend, dtype="float64", **TIGHT)


def test_caffe_contrastive_default_margin_is_one_and_label_nonzero_is_similar(backend):
    a = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    b = np.array([[0.6, 0.0], [0.6, 0.0], [0.6, 0.0], [0.6, 0.0]])
    similar = np.array([1, 2, -1, 0])  # three similar (d² = 0.36), one dissimilar ((1 - .6)²)
    got = caffe.contrastive_loss(*moved(backend, a, b, similar))
    assert_close(got, (3 * 0.36 + 0.16) / 4 / 2, backend, dtype="float64", **TIGHT)
    as_bool = caffe.contrastive_loss(*moved(backend, a, b, similar != 0))
    assert_close(as_bool, to_numpy(got), backend, atol=0, rtol=0)


@given(pairs())
def test_caffe_contrastive_value_is_half_the_reference_mean(numpy_backend, data):
    a, b, similar, margin = data
    ref = rl.contrastive_loss(a, b, similar != 0, margin=margin, reduction="mean")
    np.testing.assert_allclose(caffe.contrastive_loss(a, b, similar, margin=margin),
                               0.5 * ref, **TIGHT)


@pytest.mark.parametrize("legacy_version", [False, True])
@given(pairs(), st.integers(0, 2**16))
def test_caffe_contrastive_exact_gradients_match_finite_differences(
        numpy_backend, legacy_version, data, seed):
    """Similar pairs and the legacy hinge: the layer's gradient is the derivative."""
    a, b, similar, margin = data
    if not legacy_version:
        similar = np.ones_like(similar)  # the 1e-4 bias is tested below
    d2 = np.sum((a - b) ** 2, axis=1)
    assume(np.all((similar != 0) | (np.abs(margin - d2) > 1e-3)))
    rng = np.random.default_rng(seed)
    ga, gb, _ = rl.vjp(caffe.contrastive_loss, a, b, similar, margin=margin,
                       legacy_version=legacy_version)[1](1.0)

    def f(aa, bb, ss):
        return caffe.contrastive_loss(aa, bb, ss, margin=margin, legacy_version=legacy_version)

    fd_check(f, [a, b, similar], 0, ga, rng)
    fd_check(f, [a, b, similar], 1, gb, rng)


@given(pairs(), st.integers(0, 2**16))
def test_caffe_contrastive_dissimilar_gradient_is_biased_by_1e4(numpy_backend, data, seed):
    """Documented difference: inside the margin, the dissimilar gradient is the
    exact one times d / (d + 1e-4)."""
    a, b, _, margin = data
    similar = np.zeros(a.shape[0], dtype=np.int64)
    d = np.sqrt(np.sum((a - b) ** 2, axis=1))
    assume(np.all((d > 1e-3) & (np.abs(margin - d) > 1e-3)))
    rng = np.random.default_rng(seed)
    ga, _, _ = rl.vjp(caffe.contrastive_loss, a, b, similar, margin=margin)[1](1.0)
    unbiased = ga * ((d + 1e-4) / d)[:, None]
    fd_check(lambda aa, bb, ss: caffe.contrastive_loss(aa, bb, ss, margin=margin),
             [a, b, similar], 0, unbiased, rng)


def test_caffe_contrastive_gradient_differs_from_the_exact_one(backend):
    a = np.array([[0.01, 0.0], [0.0, 0.0]])
    b = np.zeros((2, 2))
    similar = np.array([0, 0])  # dissimilar; the second pair has d = 0
    _, pullback = rl.vjp(caffe.contrastive_loss, *moved(backend, a, b, similar))
    ga = pullback(1.0)[0]
    # exact: ∂/∂a (1/(2N)) (m - d)² = -(m - d)/(N d) (a - b) = -0.495 along x
    exact = -(1 - 0.01) / (2 * 0.01) * 0.01
    caffe_value = -(1 - 0.01) / (2 * (0.01 + 1e-4)) * 0.01
    assert_close(ga, [[caffe_value, 0.0], [0.0, 0.0]], backend, dtype="float64", **TIGHT)
    assert abs(caffe_value - exact) > 1e-3 * abs(exact)


# --------------------------------------------------------------------------
# kaiyangzhou.center_loss


@given(batch_and_centers(), st.sampled_from([1.0, 0.5, 3.0]))
def test_kaiyangzhou_matches_the_transcription(backend, data, g):
    x, labels, centers = data
    assume(kaiyangzhou_clear_of_clamp(x, labels, centers))
    value, pullback = rl.vjp(kaiyangzhou.center_loss, *moved(backend, x, labels, centers))
    gx, glabels, gc = pullback(g)
    loss, egx, egc = kaiyangzhou_numpy(x, labels, centers, g)
    assert_close(value, loss, backend, dtype="float64", **TIGHT)
    assert glabels is None
    assert_close(gx, egx, backend, dtype="float64", **TIGHT)
    assert_close(gc, egc, backend, dtype="float64", **TIGHT)


def _kaiyangzhou_module(torch):
    class CenterLoss(torch.nn.Module):
        """KaiyangZhou/pytorch-center-loss @ 082ffa2 center_loss.py CenterLoss
        (use_gpu=False), centers given instead of torch.randn, and the deprecated
        addmm_(1, -2, a, b) overload written addmm_(a, b, beta=1, alpha=-2)."""

        def __init__(self, centers):
            super().__init__()
            self.num_classes = centers.shape[0]
            self.centers = torch.nn.Parameter(centers)

        def forward(self, x, labels):
            batch_size = x.size(0)
            distmat = torch.pow(x, 2).sum(dim=1, keepdim=True).expand(
                batch_size, self.num_classes) + torch.pow(self.centers, 2).sum(
                dim=1, keepdim=True).expand(self.num_classes, batch_size).t()
            distmat.addmm_(x, self.centers.t(), beta=1, alpha=-2)
            classes = torch.arange(self.num_classes).long()
            labels = labels.unsqueeze(1).expand(batch_size, self.num_classes)
            mask = labels.eq(classes.expand(batch_size, self.num_classes))
            dist = distmat * mask.float()
            loss = dist.clamp(min=1e-12, max=1e12).sum() / batch_size
            return loss

    return CenterLoss


@given(batch_and_centers(), st.sampled_from([1.0, 0.5, 3.0]))
def test_kaiyangzhou_matches_the_original_module_under_torch_autograd(data, g):
    torch = pytest.importorskip("torch")
    x, labels, centers = data
    assume(kaiyangzhou_clear_of_clamp(x, labels, centers))
    module = _kaiyangzhou_module(torch)(torch.tensor(centers))
    tx = torch.tensor(x, requires_grad=True)
    out = module(tx, torch.tensor(labels))
    out.backward(torch.tensor(g, dtype=torch.float64))
    value, pullback = rl.vjp(kaiyangzhou.center_loss, x, labels, centers)
    gx, _, gc = pullback(g)
    np.testing.assert_allclose(value, out.item(), **TIGHT)
    np.testing.assert_allclose(gx, tx.grad.numpy(), **TIGHT)
    np.testing.assert_allclose(gc, module.centers.grad.numpy(), **TIGHT)
    # and the same on torch tensors, through the array API
    tvalue = kaiyangzhou.center_loss(torch.tensor(x), torch.tensor(labels), torch.tensor(centers))
    np.testing.assert_allclose(tvalue.item(), out.item(), **TIGHT)


@given(labeled_batch(min_rows=1, max_rows=8), st.integers(1, 6))
def test_kaiyangzhou_adds_c_minus_1_times_1e12_to_twice_the_reference_mean(
        backend, data, extra):
    """Documented difference: value = 2·mean + (C − 1)·1e-12. Inputs are small
    multiples of 2^-10: the expanded formula is exact, every own-class squared
    distance is 0 or >= 2^-20 (above the clamp), and the value is small enough
    (~1e-5) that its rounding (~1e-21) cannot hide the offset."""
    x, labels, c = data
    x = np.round(x) * 2.0**-10
    num_classes = c + extra - 1
    centers = np.round(np.linspace(-3, 3, num_classes * x.shape[1])).reshape(num_classes, -1)
    centers = centers * 2.0**-10
    assume(np.all(np.sum((x - centers[labels]) ** 2, axis=1) > 0))
    got = kaiyangzhou.center_loss(*moved(backend, x, labels, centers))
    ref = rl.center_loss(x, labels, centers, reduction="mean")
    offset = to_numpy(got) - 2 * ref
    np.testing.assert_allclose(offset, (num_classes - 1) * 1e-12, rtol=1e-6, atol=0)


def test_kaiyangzhou_clamp_kills_the_gradient_of_a_sample_on_its_center(backend):
    x = np.array([[1.0, 2.0], [3.0, 0.0]])
    labels = np.array([0, 1])
    centers = np.array([[1.0, 2.0], [0.0, 0.0], [7.0, 7.0]])  # x_0 = c_0
    value, pullback = rl.vjp(kaiyangzhou.center_loss, *moved(backend, x, labels, centers))
    gx, _, gc = pullback(1.0)
    # sample 0: clamped to 1e-12, no gradient; sample 1: 9; C - 1 = 2 zeros per sample
    assert_close(value, (1e-12 + 9.0 + 2 * 2 * 1e-12) / 2, backend, dtype="float64",
                 rtol=1e-15, atol=0)
    assert_close(gx, [[0.0, 0.0], [3.0, 0.0]], backend, dtype="float64", **TIGHT)
    assert_close(gc, [[0.0, 0.0], [-3.0, 0.0], [0.0, 0.0]], backend, dtype="float64", **TIGHT)
    # the reference keeps a (zero) gradient too, but a tiny real distance is lost:
    eps_x = np.array([[1.0 + 1e-7, 2.0], [3.0, 0.0]])
    _, pb = rl.vjp(kaiyangzhou.center_loss, eps_x, labels, centers)
    _, ref_pb = rl.vjp(rl.center_loss, eps_x, labels, centers, reduction="mean")
    assert pb(1.0)[0][0, 0] == 0.0
    assert ref_pb(1.0)[0][0, 0] > 0.0


def test_kaiyangzhou_expanded_formula_cancels(numpy_backend):
    """Documented difference: ‖x‖² + ‖c‖² − 2x·c loses a small distance next to
    large norms; the reference subtracts first."""
    centers = np.array([[1e4, 1e4]])
    x = centers + np.array([[3e-5, 0.0]])
    labels = np.array([0])
    true = 2 * rl.center_loss(x, labels, centers, reduction="mean")
    np.testing.assert_allclose(true, 9e-10, rtol=1e-6)
    got = kaiyangzhou.center_loss(x, labels, centers)
    assert abs(got - true) > 0.1 * true


@given(batch_and_centers(), st.integers(0, 2**16))
def test_kaiyangzhou_gradient_is_the_derivative_away_from_the_clamp(numpy_backend, data, seed):
    x, labels, centers = data
    assume(np.all(np.sum((x - centers[labels]) ** 2, axis=1) > 1e-3))
    rng = np.random.default_rng(seed)
    _, pullback = rl.vjp(kaiyangzhou.center_loss, x, labels, centers)
    gx, _, gc = pullback(1.0)
    fd_check(kaiyangzhou.center_loss, [x, labels, centers], 0, gx, rng)
    fd_check(kaiyangzhou.center_loss, [x, labels, centers], 2, gc, rng)


# --------------------------------------------------------------------------
# jxgu1016.center_loss


@pytest.mark.parametrize("size_average", [True, False])
@given(batch_and_centers(), st.sampled_from([1.0, 0.01, 4.0]))
def test_jxgu1016_matches_the_transcription(backend, size_average, data, g):
    x, labels, centers = data
    value, pullback = rl.vjp(jxgu1016.center_loss, *moved(backend, labels, x, centers),
                             size_average=size_average)
    glabel, gfeat, gc = pullback(g)
    loss, efeat, ec = jxgu1016_numpy(labels, x, centers, size_average, g)
    assert_close(value, loss, backend, dtype="float64", **TIGHT)
    assert glabel is None
    assert_close(gfeat, efeat, backend, dtype="float64", **TIGHT)
    assert_close(gc, ec, backend, dtype="float64", **TIGHT)


def _jxgu1016_module(torch):
    class CenterlossFunc(torch.autograd.Function):
        """jxgu1016/MNIST_center_loss_pytorch @ 4e94cc7 CenterLoss.py CenterlossFunc."""

        @staticmethod
        def forward(ctx, feature, label, centers, batch_size):
            ctx.save_for_backward(feature, label, centers, batch_size)
            centers_batch = centers.index_select(0, label.long())
            return (feature - centers_batch).pow(2).sum() / 2.0 / batch_size

        @staticmethod
        def backward(ctx, grad_output):
            feature, label, centers, batch_size = ctx.saved_tensors
            centers_batch = centers.index_select(0, label.long())
            diff = centers_batch - feature
            counts = centers.new_ones(centers.size(0))
            ones = centers.new_ones(label.size(0))
            grad_centers = centers.new_zeros(centers.size())
            counts = counts.scatter_add_(0, label.long(), ones)
            grad_centers.scatter_add_(0, label.unsqueeze(1).expand(feature.size()).long(), diff)
            grad_centers = grad_centers / counts.view(-1, 1)
            return -grad_output * diff / batch_size, None, grad_centers / batch_size, None

    class CenterLoss(torch.nn.Module):
        """The same file's CenterLoss, with given centers instead of torch.randn."""

        def __init__(self, centers, size_average=True):
            super().__init__()
            self.centers = torch.nn.Parameter(centers)
            self.centerlossfunc = CenterlossFunc.apply
            self.feat_dim = centers.shape[1]
            self.size_average = size_average

        def forward(self, label, feat):
            batch_size = feat.size(0)
            feat = feat.view(batch_size, -1)
            if feat.size(1) != self.feat_dim:
                raise ValueError("Center's dim should be equal to input feature's dim")
            batch_size_tensor = feat.new_empty(1).fill_(batch_size if self.size_average else 1)
            return self.centerlossfunc(feat, label, self.centers, batch_size_tensor)

    return CenterLoss


@pytest.mark.parametrize("size_average", [True, False])
@given(batch_and_centers(), st.sampled_from([1.0, 0.01, 4.0]))
def test_jxgu1016_matches_the_original_function_under_torch(size_average, data, g):
    torch = pytest.importorskip("torch")
    x, labels, centers = data
    module = _jxgu1016_module(torch)(torch.tensor(centers), size_average=size_average)
    feat = torch.tensor(x, requires_grad=True)
    out = module(torch.tensor(labels), feat)
    assert tuple(out.shape) == (1,)  # documented: the original returns shape (1,)
    out.backward(torch.tensor([g], dtype=torch.float64))
    value, pullback = rl.vjp(jxgu1016.center_loss, labels, x, centers, size_average=size_average)
    _, gfeat, gc = pullback(g)
    assert np.shape(value) == ()
    np.testing.assert_allclose(value, out.item(), **TIGHT)
    np.testing.assert_allclose(gfeat, feat.grad.numpy(), **TIGHT)
    np.testing.assert_allclose(gc, module.centers.grad.numpy(), **TIGHT)


@pytest.mark.parametrize("size_average", [True, False])
@given(batch_and_centers())
def test_jxgu1016_value_is_the_reference_mean_or_sum(numpy_backend, size_average, data):
    x, labels, centers = data
    ref = rl.center_loss(x, labels, centers, reduction="mean" if size_average else "sum")
    np.testing.assert_allclose(
        jxgu1016.center_loss(labels, x, centers, size_average=size_average), ref, **TIGHT)


@given(batch_and_centers(), st.integers(0, 2**16))
def test_jxgu1016_feature_gradient_is_the_derivative(numpy_backend, data, seed):
    x, labels, centers = data
    rng = np.random.default_rng(seed)
    gfeat = rl.vjp(jxgu1016.center_loss, labels, x, centers)[1](1.0)[1]
    fd_check(jxgu1016.center_loss, [labels, x, centers], 1, gfeat, rng)


def test_jxgu1016_center_gradient_ignores_the_loss_weight(backend):
    """Documented difference: grad_output scales the features' gradient only,
    and the centers' gradient is Eq. 4 / B, not the derivative (gradcheck fails)."""
    x = np.array([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0]])
    labels = np.array([1, 1, 0])
    centers = np.array([[0.0, 1.0], [1.0, 1.0]])
    _, pullback = rl.vjp(jxgu1016.center_loss, *moved(backend, labels, x, centers))
    _, gfeat_1, gc_1 = pullback(1.0)
    _, gfeat_w, gc_w = pullback(0.1)
    assert_close(gfeat_w, 0.1 * to_numpy(gfeat_1), backend, dtype="float64", **TIGHT)
    assert_close(gc_w, to_numpy(gc_1), backend, dtype="float64", atol=0, rtol=0)
    eq4_over_b = np.array([[(0 - 0) / 2 / 3, (1 - 5) / 2 / 3],
                           [((1 - 1) + (1 - 3)) / 3 / 3, ((1 - 0) + (1 - 2)) / 3 / 3]])
    assert_close(gc_1, eq4_over_b, backend, dtype="float64", **TIGHT)
    derivative = np.zeros_like(centers)
    np.add.at(derivative, labels, -(x - centers[labels]) / 3)
    fd = [directional_fd(lambda lab, f, c: jxgu1016.center_loss(lab, f, c),
                         [labels, x, centers], 2, e) for e in np.eye(4).reshape(4, 2, 2)]
    np.testing.assert_allclose(np.reshape(fd, (2, 2)), derivative, atol=1e-7)
    assert not np.allclose(to_numpy(gc_1), derivative, atol=1e-3)


# --------------------------------------------------------------------------
# facenet.center_loss


@given(batch_and_centers(), st.sampled_from([0.0, 0.5, 0.95, 1.0]),
       st.sampled_from([1.0, 0.25]))
def test_facenet_matches_the_transcription(backend, data, alfa, g):
    x, labels, centers = data
    (loss, new), pullback = rl.vjp(facenet.center_loss, *moved(backend, x, labels, centers),
                                   alfa)
    eloss, enew = facenet_numpy(x, labels, centers, alfa)
    assert_close(loss, eloss, backend, dtype="float64", **TIGHT)
    assert_close(new, enew, backend, dtype="float64", **TIGHT)
    gx, glabel, gc, galfa = pullback(g)
    assert glabel is None and galfa is None
    size = x.size
    egx = 2 * g / size * (x - centers[labels])
    egc = np.zeros_like(centers)
    np.add.at(egc, labels, -egx)
    assert_close(gx, egx, backend, dtype="float64", **TIGHT)
    assert_close(gc, egc, backend, dtype="float64", **TIGHT)


@given(batch_and_centers(), st.integers(0, 2**16))
def test_facenet_gradients_are_the_derivatives_of_the_loss(numpy_backend, data, seed):
    x, labels, centers = data
    rng = np.random.default_rng(seed)
    _, pullback = rl.vjp(facenet.center_loss, x, labels, centers, 0.95)
    gx, _, gc, _ = pullback(1.0)

    def loss(f, lab, c):
        return facenet.center_loss(f, lab, c, 0.95)[0]

    fd_check(loss, [x, labels, centers], 0, gx, rng)
    fd_check(loss, [x, labels, centers], 2, gc, rng)


@given(batch_and_centers())
def test_facenet_loss_is_the_mean_over_elements_without_the_half(numpy_backend, data):
    x, labels, centers = data
    loss, _ = facenet.center_loss(x, labels, centers, 0.5)
    np.testing.assert_allclose(loss, 2 * rl.center_loss(x, labels, centers) / x.size, **TIGHT)


def test_facenet_update_overshoots_the_batch_mean(backend):
    """Documented difference: (1 − alfa)·n_j > 1 carries the center past the
    batch mean (no 1/(1 + n)); Eq. 4 and the EMA stay on the near side."""
    x = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [4.0, 4.0]])
    labels = np.array([0, 0, 0, 1])
    centers = np.zeros((3, 2))
    alfa = 0.5  # (1 - alfa)·n_0 = 1.5 > 1
    _, new = facenet.center_loss(*moved(backend, x, labels, centers), alfa)
    assert_close(new, [[1.5, 3.0], [2.0, 2.0], [0.0, 0.0]], backend, dtype="float64", **TIGHT)
    batch_mean = np.array([1.0, 2.0])
    assert np.all(to_numpy(new)[0] > batch_mean)  # past the mean of class 0
    assert np.all(rl.update_centers(centers, x, labels, rule="ema", alpha=1 - alfa)[0]
                  <= batch_mean)
    assert np.all(rl.update_centers(centers, x, labels, rule="wen", alpha=1.0)[0] <= batch_mean)


@given(batch_and_centers(), st.floats(0, 1))
def test_facenet_update_with_distinct_labels_is_the_ema(numpy_backend, data, alfa):
    x, labels, centers = data
    _, first = np.unique(labels, return_index=True)
    x, labels = x[first], labels[first]  # one sample per class: n_j <= 1
    _, new = facenet.center_loss(x, labels, centers, alfa)
    np.testing.assert_allclose(
        new, rl.update_centers(centers, x, labels, rule="ema", alpha=1 - alfa), **TIGHT)


# --------------------------------------------------------------------------
# tf_recipes


@st.composite
def running_state(draw):
    x, labels, c = draw(labeled_batch(min_rows=0, max_rows=8))
    cts = draw(hnp.arrays(np.int64, (c,), elements=st.integers(0, 3))).astype(np.float64)
    sums = draw(hnp.arrays(np.float64, (c, x.shape[1]), elements=finite))
    sums[cts == 0] = 0.0  # a state the snippet can reach
    return sums, cts, x, labels


@given(running_state(), st.sampled_from([1.0, -0.5]))
def test_running_mean_update_matches_get_new_centers(backend, data, g):
    sums, cts, x, labels = data
    (new_sums, new_cts, centers), pullback = rl.vjp(
        tf_recipes.running_mean_update, *moved(backend, sums, cts, x, labels))
    esums, ects, ecenters = get_new_centers(sums, cts, x, labels, sums.shape[0])
    assert_close(new_sums, esums, backend, dtype="float64", **TIGHT)
    assert_close(new_cts, ects, backend, dtype="float64", atol=0, rtol=0)
    assert_close(centers, ecenters, backend, dtype="float64", **TIGHT)
    gsums, gcts, gx, glabels = pullback(g)
    assert glabels is None
    assert_close(gsums, np.full_like(sums, g), backend, dtype="float64", atol=0)
    assert_close(gcts, np.zeros_like(cts), backend, dtype="float64", atol=0)
    assert_close(gx, np.full_like(x, g), backend, dtype="float64", atol=0)


def test_running_mean_gives_nan_for_a_class_never_seen(backend):
    """Documented difference: 0/0 = NaN, where RunningCenters keeps the initial center."""
    sums, cts = np.zeros((3, 2)), np.zeros(3)
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    labels = np.array([0, 2])
    _, _, centers = tf_recipes.running_mean_update(*moved(backend, sums, cts, x, labels))
    got = to_numpy(centers)
    assert np.all(np.isnan(got[1]))
    np.testing.assert_array_equal(got[[0, 2]], x)
    rc = rl.RunningCenters(3, 2, rule="mean")
    rc.update(x, labels)
    np.testing.assert_array_equal(rc.centers[1], [0.0, 0.0])
    # a zero count under a non-zero sum divides like IEEE (±inf), without a warning
    _, _, odd = tf_recipes.running_mean_update(*moved(backend, np.array([[2.0, -1.0]]),
                                                      np.zeros(1), x[:0], labels[:0]))
    np.testing.assert_array_equal(to_numpy(odd), [[np.inf, -np.inf]])


@given(st.lists(labeled_batch(min_rows=0, max_rows=6, max_dim=2, max_classes=3), min_size=1,
                max_size=4))
def test_running_mean_of_seen_classes_is_the_reference_running_mean(numpy_backend, batches):
    c, dim = 3, 2
    sums, cts = np.zeros((c, dim)), np.zeros(c, dtype=np.int64)
    rc = rl.RunningCenters(c, dim, rule="mean")
    for x, labels, _ in batches:
        x = np.pad(x, ((0, 0), (0, dim - x.shape[1]))) if x.shape[1] < dim else x[:, :dim]
        sums, cts, centers = tf_recipes.running_mean_update(sums, cts, x, labels)
        rc.update(x, labels)
    assert cts.dtype == np.int64  # integer counts stay integer
    seen = cts > 0
    np.testing.assert_allclose(centers[seen], rc.centers[seen], **TIGHT)
    assert np.all(np.isnan(centers[~seen]))


@given(running_state(), st.integers(0, 2**16))
def test_running_mean_vjp_is_the_derivative_of_new_sums(numpy_backend, data, seed):
    sums, cts, x, labels = data
    rng = np.random.default_rng(seed)
    w = rng.normal(size=sums.shape)
    gsums, _, gx, _ = rl.vjp(tf_recipes.running_mean_update, sums, cts, x, labels)[1](w)

    def f(s, c, xx, lab):
        return np.sum(w * tf_recipes.running_mean_update(s, c, xx, lab)[0])

    fd_check(f, [sums, cts, x, labels], 0, gsums, rng)
    if x.size:
        fd_check(f, [sums, cts, x, labels], 2, gx, rng)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 0.9, 1.0])
@given(batch_and_centers(min_rows=0))
def test_unique_with_counts_update_matches_the_tutorial(backend, alpha, data):
    x, labels, centers = data
    got = tf_recipes.unique_with_counts_update(*moved(backend, centers, x, labels), alpha)
    assert_close(got, tutorial_update(centers, x, labels, alpha), backend, dtype="float64",
                 **TIGHT)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
@given(batch_and_centers())
def test_unique_with_counts_update_is_wen_with_step_alpha_times_one_minus_alpha(
        numpy_backend, alpha, data):
    """Documented difference: the step is α(1 − α): α and 1 − α agree, α = 0 and
    α = 1 never move, and no α reaches the reference's α = 0.5 Eq. 4 step."""
    x, labels, centers = data
    got = tf_recipes.unique_with_counts_update(centers, x, labels, alpha)
    np.testing.assert_allclose(
        got, rl.update_centers(centers, x, labels, rule="wen", alpha=alpha * (1 - alpha)),
        **TIGHT)
    np.testing.assert_allclose(
        got, tf_recipes.unique_with_counts_update(centers, x, labels, 1 - alpha), **TIGHT)
    if alpha in (0.0, 1.0):
        np.testing.assert_array_equal(got, centers)


@given(batch_and_centers(), st.floats(0, 1), st.integers(0, 2**16))
def test_unique_with_counts_update_vjp_is_the_derivative(numpy_backend, data, alpha, seed):
    x, labels, centers = data
    rng = np.random.default_rng(seed)
    w = rng.normal(size=centers.shape)
    gc, gx, glabels, galpha = rl.vjp(tf_recipes.unique_with_counts_update, centers, x, labels,
                                     alpha)[1](w)
    assert glabels is None and galpha is None

    def f(c, xx, lab):
        return np.sum(w * tf_recipes.unique_with_counts_update(c, xx, lab, alpha))

    fd_check(f, [centers, x, labels], 0, gc, rng)
    fd_check(f, [centers, x, labels], 1, gx, rng)


@given(batch_and_centers(min_rows=0), st.sampled_from([1.0, 0.001]))
def test_tutorial_loss_is_tf_l2_loss_and_the_reference_sum(backend, data, g):
    x, labels, centers = data
    value, pullback = rl.vjp(tf_recipes.center_loss, *moved(backend, x, labels, centers))
    assert_close(value, tf_l2_loss(x - centers[labels]), backend, dtype="float64", **TIGHT)
    gx, _, gc = pullback(g)
    _, ref = rl.vjp(rl.center_loss, x, labels, centers)
    rgx, _, rgc = ref(g)
    assert_close(gx, rgx, backend, dtype="float64", **TIGHT)
    assert_close(gc, rgc, backend, dtype="float64", **TIGHT)


# --------------------------------------------------------------------------
# shared conventions: empty batch, dtype, namespace


def _center_calls(x, labels, centers):
    return {
        "caffe": lambda: caffe.center_loss(x, labels, centers),
        "kaiyangzhou": lambda: kaiyangzhou.center_loss(x, labels, centers),
        "jxgu1016": lambda: jxgu1016.center_loss(labels, x, centers),
        "facenet": lambda: facenet.center_loss(x, labels, centers, 0.9)[0],
        "tf_recipes": lambda: tf_recipes.center_loss(x, labels, centers),
    }


@pytest.mark.parametrize("name", ["caffe", "kaiyangzhou", "jxgu1016", "facenet", "tf_recipes"])
def test_empty_batch_gives_zero(backend, name):
    """Documented difference: the originals divide 0 by 0 (NaN); every
    refloss function gives 0 for an empty batch."""
    x, labels, centers = moved(backend, np.zeros((0, 2)), np.zeros(0, dtype=np.int64),
                               np.ones((3, 2)))
    assert_close(_center_calls(x, labels, centers)[name](), 0.0, backend, dtype="float64",
                 atol=0)
    a = backend.asarray(np.zeros((0, 2)))
    empty = caffe.contrastive_loss(a, a, backend.asarray(np.zeros(0, dtype=np.int64)))
    assert_close(empty, 0.0, backend, dtype="float64", atol=0)


@pytest.mark.parametrize("name", ["caffe", "kaiyangzhou", "jxgu1016", "facenet", "tf_recipes"])
def test_float32_in_float32_out(backend, name):
    rng = np.random.default_rng(3)
    x64 = rng.normal(size=(5, 3))
    labels = np.array([0, 1, 1, 2, 0])
    c64 = rng.normal(size=(3, 3))
    f32 = backend.xp.float32
    x, c = backend.asarray(x64, f32), backend.asarray(c64, f32)
    la = backend.asarray(labels)
    got = _center_calls(x, la, c)[name]()
    want = _center_calls(x64, labels, c64)[name]()
    assert_close(got, want, backend, dtype="float32", rtol=1e-5, atol=1e-6)


def test_update_presets_keep_namespace_device_and_dtype(backend):
    rng = np.random.default_rng(4)
    f32 = backend.xp.float32
    x = backend.asarray(rng.normal(size=(4, 2)), f32)
    labels = backend.asarray(np.array([0, 0, 1, 1]))
    c = backend.asarray(rng.normal(size=(3, 2)), f32)
    _, new = facenet.center_loss(x, labels, c, 0.5)
    assert_close(new, facenet_numpy(to_numpy(x).astype(np.float64), np.array([0, 0, 1, 1]),
                                    to_numpy(c).astype(np.float64), 0.5)[1],
                 backend, dtype="float32", rtol=1e-5, atol=1e-6)
    new = tf_recipes.unique_with_counts_update(c, x, labels, 0.5)
    assert_close(new, tutorial_update(to_numpy(c), to_numpy(x), np.array([0, 0, 1, 1]), 0.5),
                 backend, dtype="float32", rtol=1e-5, atol=1e-6)
    s, n, centers = tf_recipes.running_mean_update(
        backend.asarray(np.zeros((3, 2)), f32), backend.asarray(np.zeros(3), f32), x, labels)
    assert_close(n, [2.0, 2.0, 0.0], backend, dtype="float32", atol=0)
    xn = to_numpy(x).astype(np.float64)
    assert_close(s, [xn[:2].sum(0), xn[2:].sum(0), [0.0, 0.0]], backend, dtype="float32",
                 rtol=1e-6)
    assert_close(centers[:2, ...], [xn[:2].mean(0), xn[2:].mean(0)], backend,
                 dtype="float32", rtol=1e-6)


# --------------------------------------------------------------------------
# bad input: every error names its argument first


def test_caffe_center_loss_rejects_bad_input(backend):
    x, labels, c = moved(backend, np.zeros((2, 3)), np.array([0, 1]), np.zeros((2, 3)))
    with pytest.raises(TypeError, match=r"^x: expected a real floating dtype"):
        caffe.center_loss(labels, labels, c)
    if checks_values(backend):
        with pytest.raises(ValueError, match=r"^labels: expected labels in \[0, 2\)"):
            caffe.center_loss(x, backend.asarray(np.array([0, 2])), c)
    with pytest.raises(ValueError, match=r"^centers: expected 3 columns"):
        caffe.center_loss(x, labels, backend.asarray(np.zeros((2, 2))))
    with pytest.raises(TypeError, match=r"^labels: expected an integer dtype"):
        caffe.center_loss(x, x[:, 0], c)
    if checks_values(backend):
        with pytest.raises(ValueError, match=r"^x: expected finite values"):
            caffe.center_loss(backend.asarray(np.full((2, 3), np.nan)), labels, c)


def test_caffe_contrastive_rejects_bad_input(backend):
    a, sim = backend.asarray(np.zeros((2, 3))), backend.asarray(np.array([1, 0]))
    with pytest.raises(TypeError, match=r"^similar: expected an integer or boolean array"):
        caffe.contrastive_loss(a, a, backend.asarray(np.array([1.0, 0.0])))
    with pytest.raises(ValueError, match=r"^similar: expected 2 entries"):
        caffe.contrastive_loss(a, a, backend.asarray(np.array([1, 0, 1])))
    with pytest.raises(ValueError, match=r"^b: expected 2 rows"):
        caffe.contrastive_loss(a, backend.asarray(np.zeros((3, 3))), sim)
    with pytest.raises(ValueError, match=r"^margin: expected a finite number >= 0"):
        caffe.contrastive_loss(a, a, sim, margin=-1.0)
    with pytest.raises(TypeError, match=r"^legacy_version: expected True or False"):
        caffe.contrastive_loss(a, a, sim, legacy_version=1)
    with pytest.raises(TypeError, match=r"^a: expected a real floating dtype"):
        caffe.contrastive_loss(sim, sim, sim)


def test_kaiyangzhou_rejects_bad_input(backend):
    x, labels, c = moved(backend, np.zeros((2, 3)), np.array([0, 1]), np.zeros((2, 3)))
    if checks_values(backend):
        with pytest.raises(ValueError, match=r"^labels: expected labels in \[0, 2\)"):
            kaiyangzhou.center_loss(x, backend.asarray(np.array([-1, 0])), c)
    with pytest.raises(ValueError, match=r"^x: expected a 2-D array"):
        kaiyangzhou.center_loss(x[0, ...], labels, c)
    with pytest.raises(TypeError, match=r"^centers: expected the dtype of x"):
        kaiyangzhou.center_loss(x, labels, backend.asarray(np.zeros((2, 3)), backend.xp.float32))


def test_jxgu1016_rejects_bad_input(backend):
    x, labels, c = moved(backend, np.zeros((2, 3)), np.array([0, 1]), np.zeros((2, 3)))
    with pytest.raises(TypeError, match=r"^label: expected an integer dtype"):
        jxgu1016.center_loss(x[:, 0], x, c)  # float labels: the original casts, refloss refuses
    with pytest.raises(TypeError, match=r"^feat: expected a real floating dtype"):
        jxgu1016.center_loss(labels, labels, c)
    with pytest.raises(ValueError, match=r"^feat: expected 2 columns \(the dim of centers\)"):
        jxgu1016.center_loss(labels, x, backend.asarray(np.zeros((2, 2))))
    if checks_values(backend):
        with pytest.raises(ValueError, match=r"^label: expected labels in \[0, 2\)"):
            jxgu1016.center_loss(backend.asarray(np.array([0, 5])), x, c)
    with pytest.raises(TypeError, match=r"^size_average: expected True or False"):
        jxgu1016.center_loss(labels, x, c, size_average=1)
    with pytest.raises(ValueError, match=r"^label: expected 2 entries"):
        jxgu1016.center_loss(labels[:1], x, c)


def test_facenet_rejects_bad_input(backend):
    x, labels, c = moved(backend, np.zeros((2, 3)), np.array([0, 1]), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"^alfa: expected a number in \[0, 1\]"):
        facenet.center_loss(x, labels, c, 1.5)
    with pytest.raises(TypeError, match=r"^alfa: expected a real number"):
        facenet.center_loss(x, labels, c, "0.9")
    with pytest.raises(TypeError, match=r"^features: expected a real floating dtype"):
        facenet.center_loss(labels, labels, c, 0.9)
    with pytest.raises(ValueError, match=r"^centers: expected 3 columns \(the dim of features\)"):
        facenet.center_loss(x, labels, backend.asarray(np.zeros((2, 2))), 0.9)
    if checks_values(backend):
        with pytest.raises(ValueError, match=r"^label: expected labels in \[0, 2\)"):
            facenet.center_loss(x, backend.asarray(np.array([0, 2])), c, 0.9)


def test_tf_recipes_reject_bad_input(backend):
    x, labels, c = moved(backend, np.zeros((2, 3)), np.array([0, 1]), np.zeros((2, 3)))
    cts = backend.asarray(np.zeros(2))
    with pytest.raises(ValueError, match=r"^cts: expected shape \(2,\)"):
        tf_recipes.running_mean_update(c, backend.asarray(np.zeros(3)), x, labels)
    if checks_values(backend):
        with pytest.raises(ValueError, match=r"^cts: expected non-negative counts"):
            tf_recipes.running_mean_update(c, backend.asarray(np.array([0.0, -1.0])), x, labels)
    with pytest.raises(TypeError, match=r"^cts: expected an integer or floating dtype"):
        tf_recipes.running_mean_update(c, backend.asarray(np.array([True, False])), x, labels)
    with pytest.raises(ValueError, match=r"^x: expected 3 columns \(the dim of sums\)"):
        tf_recipes.running_mean_update(c, cts, backend.asarray(np.zeros((2, 2))), labels)
    if checks_values(backend):
        with pytest.raises(ValueError, match=r"^labels: expected labels in \[0, 2\)"):
            tf_recipes.running_mean_update(c, cts, x, backend.asarray(np.array([2, 0])))
    with pytest.raises(ValueError, match=r"^alpha: expected a number in \[0, 1\]"):
        tf_recipes.unique_with_counts_update(c, x, labels, -0.1)
    if checks_values(backend):
        with pytest.raises(ValueError, match=r"^labels: expected labels in \[0, 2\)"):
            tf_recipes.unique_with_counts_update(c, x, backend.asarray(np.array([0, 3])), 0.5)
    if checks_values(backend):
        with pytest.raises(ValueError, match=r"^centers: expected finite values"):
            tf_recipes.center_loss(x, labels, backend.asarray(np.full((2, 3), np.inf)))


def test_arrays_from_different_libraries():
    torch = pytest.importorskip("torch")
    x, labels, c = np.zeros((2, 3)), np.array([0, 1]), np.zeros((2, 3))
    with pytest.raises(TypeError, match=r"^x, labels, centers: expected arrays from one"):
        caffe.center_loss(x, torch.tensor(labels), c)
    with pytest.raises(TypeError, match=r"^label, feat, centers: expected arrays from one"):
        jxgu1016.center_loss(labels, x, torch.tensor(c))
    with pytest.raises(TypeError, match=r"^features: expected an array"):
        facenet.center_loss(x.tolist(), labels, c, 0.5)


def test_no_preset_imports_a_framework():
    import sys

    for mod in (caffe, kaiyangzhou, jxgu1016, facenet, tf_recipes):
        names = set(vars(mod))
        assert not names & {"torch", "jax", "cupy", "tensorflow", "np", "numpy"}, mod.__name__
    assert "refloss.compat.caffe" in sys.modules
