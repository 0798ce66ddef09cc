"""Compat presets for the TensorFlow-world implementations that do not install
here (tfa, tf_contrib, omoindrot, triplet_reid) and for Hadsell's loss as the
classic TensorFlow answer writes it.

Oracles are written here, independently of refloss, as NumPy transcriptions
of the cited source — the original's own masked-matrix formulation (TFA's
tiled (B², B) semi-hard matrix, omoindrot's B×B×B tensors, triplet-reid's
all-differences cdist) — with the gradient TensorFlow's autodiff computes,
written op by op with TF's registered gradient rules:

* ``Maximum(x, y)``: the gradient goes to x where ``x >= y`` (math_grad.py
  ``_MaximumMinimumGrad`` with ``greater_equal``);
* ``Max`` / ``Min`` reductions: ``indicators / num_selected * grad`` (ties split);
* ``Sqrt``: ``grad * 0.5 / y``; ``Tile``: the copies' gradients summed.

Sources: tensorflow/addons @ d208d75 ``tensorflow_addons/losses/{metric_learning,
triplet,contrastive}.py``; tensorflow/tensorflow @ 07ca580
``tensorflow/contrib/losses/python/metric_learning/metric_loss_ops.py``;
omoindrot/tensorflow-triplet-loss @ fc69836 ``model/triplet_loss.py``;
VisualComputingInstitute/triplet-reid @ a538696 ``loss.py``; the Stack
Overflow answer in sources/contrastive-and-triplet-tensorflow-qa-zh.txt.

The oracles' own chain rules are checked against central differences away
from kinks and ties; each preset is checked against its oracle in value and
gradient on every backend, on integer grids (exact arithmetic: duplicates,
ties and hinges exactly at 0 are reproduced identically) and on random
normal batches. Every documented difference has a test.
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from helpers import assert_close, directional_fd, to_numpy, unit_directions
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import refloss as rl
from refloss.compat import hadsell, omoindrot, tf_contrib, tfa, triplet_reid

GRAD = {"rtol": 1e-8, "atol": 1e-10}
VALUE = {"rtol": 1e-10, "atol": 1e-12}
TFA_METRICS = ["L2", "squared-L2", "angular"]


# --------------------------------------------------------------------------
# inputs


@st.composite
def tf_batch(draw, min_rows=1, max_rows=7, min_dim=1, max_dim=3, max_classes=3, grid=None):
    """(x, labels): an integer grid in [-2, 2] (exact GEMM: duplicates, exact
    ties, hinges exactly at 0) or a random normal batch (no ties); ``grid``
    forces one kind."""
    n = draw(st.integers(min_rows, max_rows))
    dim = draw(st.integers(min_dim, max_dim))
    c = draw(st.integers(1, max_classes))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()) if grid is None else grid:
        x = rng.integers(-2, 3, size=(n, dim)).astype(np.float64)
    else:
        x = rng.normal(size=(n, dim))
    return x, rng.integers(0, c, size=n)


@st.composite
def pk_batch(draw, grid=None):
    """(x, labels): P >= 2 classes of K >= 2 samples, shuffled — every anchor
    has a positive and a negative."""
    p, k = draw(st.integers(2, 3)), draw(st.integers(2, 3))
    x, _ = draw(tf_batch(min_rows=p * k, max_rows=p * k, grid=grid))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return x, rng.permutation(np.repeat(np.arange(p), k))


def draw_batch(data, backend, **kw):
    """A tf_batch; on JAX always 6 × 2 — XLA compiles every operation anew for
    each shape, and the other backends cover the shapes."""
    if backend.name == "jax":
        kw.update(min_rows=6, max_rows=6, min_dim=2, max_dim=2)
    return data.draw(tf_batch(**kw))


def is_grid(x):
    return bool(np.all(x == np.round(x)))


def gemm_exact_across_backends(x, metric, backend):
    """Exact ties must be the same ties on every backend: integer grids are
    exact in any GEMM, normalised rows are not (FMA and summation order)."""
    return metric != "angular" or not is_grid(x) or backend.name == "numpy"


def moved(backend, *arrays):
    return [backend.asarray(a) for a in arrays]


def fd_check(f, args, index, grad, rng, *, rtol=1e-5, atol=1e-6):
    for v in unit_directions(rng, grad.shape):
        np.testing.assert_allclose(np.sum(grad * v), directional_fd(f, args, index, v),
                                   rtol=rtol, atol=atol)


def gaps(values):
    """The smallest gap between distinct entries of ``values`` (inf for < 2)."""
    v = np.unique(np.asarray(values, dtype=np.float64).ravel())
    return np.inf if v.size < 2 else float(np.min(np.diff(v)))


# --------------------------------------------------------------------------
# oracle pieces: TF ops and their gradients


def np_maximum0(x):
    """tf.maximum(x, 0.0): value, and where the gradient passes (x >= 0)."""
    return np.maximum(x, 0.0), (x >= 0).astype(np.float64)


def np_reduce_extreme(v, largest):
    """tf.reduce_max / reduce_min over axis 1 (keepdims): value and the split."""
    m = v.max(axis=1, keepdims=True) if largest else v.min(axis=1, keepdims=True)
    ind = (v == m).astype(np.float64)
    return m, ind / ind.sum(axis=1, keepdims=True)


def np_masked_maximum(data, mask):
    """TFA ``_masked_maximum(data, mask, dim=1)`` and its TF gradient."""
    axis_minimums, split_min = np_reduce_extreme(data, largest=False)
    v = (data - axis_minimums) * mask
    mx, split = np_reduce_extreme(v, largest=True)

    def vjp(g):  # g: (n, 1)
        g_v = split * g
        g_min = g - np.sum(g_v * mask, axis=1, keepdims=True)
        return g_v * mask + split_min * g_min

    return mx + axis_minimums, vjp


def np_masked_minimum(data, mask):
    """TFA ``_masked_minimum(data, mask, dim=1)`` and its TF gradient."""
    axis_maximums, split_max = np_reduce_extreme(data, largest=True)
    v = (data - axis_maximums) * mask
    mn, split = np_reduce_extreme(v, largest=False)

    def vjp(g):
        g_v = split * g
        g_max = g - np.sum(g_v * mask, axis=1, keepdims=True)
        return g_v * mask + split_max * g_max

    return mn + axis_maximums, vjp


def np_tfa_pairwise_distance(feature, squared):
    """metric_learning.pairwise_distance and the VJP TF gives through it."""
    n = feature.shape[0]
    raw = np.add(np.sum(np.square(feature), axis=1, keepdims=True),
                 np.sum(np.square(feature.T), axis=0, keepdims=True)) - 2.0 * (feature @ feature.T)
    pds, passes = np_maximum0(raw)
    error_mask = pds <= 0.0
    if squared:
        pd = pds
    else:
        under = pds + error_mask.astype(np.float64) * 1e-16
        pd = np.sqrt(under)
    keep = (~error_mask).astype(np.float64)
    offdiag = np.ones_like(pd) - np.eye(n)
    out = pd * keep * offdiag

    def vjp(g):
        g_pd = g * offdiag * keep
        g_pds = g_pd if squared else g_pd * 0.5 / np.sqrt(under)
        g_raw = g_pds * passes
        g_sq = g_raw.sum(axis=1) + g_raw.sum(axis=0)
        return 2.0 * feature * g_sq[:, None] - 2.0 * ((g_raw + g_raw.T) @ feature)

    return out, vjp


def np_tfa_angular_distance(feature):
    """metric_learning.angular_distance (tf.math.l2_normalize, 1 − x̂x̂ᵀ, max 0)."""
    ss = np.sum(np.square(feature), axis=1, keepdims=True)
    inv = 1.0 / np.sqrt(np.maximum(ss, 1e-12))
    xn = feature * inv
    raw = 1 - xn @ xn.T
    out, passes = np_maximum0(raw)

    def vjp(g):
        g_raw = g * passes
        g_xn = -((g_raw + g_raw.T) @ xn)
        g_inv = np.sum(g_xn * feature, axis=1, keepdims=True)
        g_ss = g_inv * (-0.5 * inv**3) * (ss >= 1e-12)
        return g_xn * inv + 2.0 * feature * g_ss

    return out, vjp


def np_tfa_distance(x, metric):
    if metric == "angular":
        return np_tfa_angular_distance(x)
    return np_tfa_pairwise_distance(x, squared=metric == "squared-L2")


# --------------------------------------------------------------------------
# oracles: the losses


def np_tfa_semihard(y_true, y_pred, margin, metric):
    """TFA triplet_semihard_loss, its tiled (B², B) formulation, and TF's VJP."""
    pdist, dist_vjp = np_tfa_distance(y_pred, metric)
    labels = np.reshape(y_true, (-1, 1))
    adjacency = labels == labels.T
    adjacency_not = ~adjacency
    b = labels.size
    pdist_tile = np.tile(pdist, (b, 1))
    mask = np.tile(adjacency_not, (b, 1)) & (pdist_tile > np.reshape(pdist.T, (-1, 1)))
    mask_final = np.reshape(mask.astype(np.float64).sum(axis=1, keepdims=True) > 0.0, (b, b)).T
    adjacency_not_f = adjacency_not.astype(np.float64)
    mask_f = mask.astype(np.float64)
    outside, outside_vjp = np_masked_minimum(pdist_tile, mask_f)
    negatives_outside = np.reshape(outside, (b, b)).T
    inside, inside_vjp = np_masked_maximum(pdist, adjacency_not_f)
    negatives_inside = np.tile(inside, (1, b))
    semi_hard_negatives = np.where(mask_final, negatives_outside, negatives_inside)
    loss_mat = margin + (pdist - semi_hard_negatives)
    mask_positives = adjacency.astype(np.float64) - np.eye(b)
    num_positives = np.sum(mask_positives)
    hinge, passes = np_maximum0(loss_mat * mask_positives)
    with np.errstate(invalid="ignore", divide="ignore"):
        loss = np.sum(hinge) / num_positives

    def vjp(g):
        with np.errstate(invalid="ignore", divide="ignore"):
            g_prod = (g / num_positives) * passes
        g_loss_mat = g_prod * mask_positives
        g_shn = -g_loss_mat
        g_out = np.where(mask_final, g_shn, 0.0)
        g_in = np.where(mask_final, 0.0, g_shn)
        g_pdist = g_loss_mat.copy()
        g_tile = outside_vjp(np.reshape(g_out.T, (-1, 1)))
        g_pdist += np.reshape(g_tile, (b, b, b)).sum(axis=0)
        g_pdist += inside_vjp(g_in.sum(axis=1, keepdims=True))
        return dist_vjp(g_pdist)

    return loss, vjp


def np_tfa_hard(y_true, y_pred, margin, soft, metric):
    """TFA triplet_hard_loss and TF's VJP."""
    pdist, dist_vjp = np_tfa_distance(y_pred, metric)
    labels = np.reshape(y_true, (-1, 1))
    adjacency = labels == labels.T
    b = labels.size
    hard_negatives, neg_vjp = np_masked_minimum(pdist, (~adjacency).astype(np.float64))
    mask_positives = adjacency.astype(np.float64) - np.eye(b)
    hard_positives, pos_vjp = np_masked_maximum(pdist, mask_positives)
    x = hard_positives - hard_negatives
    with np.errstate(over="ignore", invalid="ignore"):
        if soft:
            e = np.exp(x)
            losses = np.log1p(e)
        else:
            losses, passes = np_maximum0(x + margin)
    loss = np.mean(losses)

    def vjp(g):
        with np.errstate(invalid="ignore"):
            g_l = np.full((b, 1), g / b)
            g_x = g_l * (1.0 / (1.0 + e)) * e if soft else g_l * passes
        return dist_vjp(pos_vjp(g_x) + neg_vjp(-g_x))

    return loss, vjp


def np_tfa_contrastive(y_true, y_pred, margin):
    y = y_true.astype(np.float64)
    hinge, passes = np_maximum0(margin - y_pred)
    value = y * np.square(y_pred) + (1.0 - y) * np.square(hinge)
    grad_d = 2.0 * y * y_pred + (1.0 - y) * 2.0 * hinge * passes * -1.0
    grad_y = np.square(y_pred) - np.square(hinge)
    return value, grad_d, grad_y


def np_contrib_contrastive(labels, a, p, margin):
    """tf.contrib contrastive_loss and TF's VJP (NaN where the sqrt sees 0)."""
    y = labels.astype(np.float64)
    diff = a - p
    s = np.sum(np.square(diff), axis=1)
    d = np.sqrt(s)
    hinge, passes = np_maximum0(margin - d)
    loss = np.mean(y * np.square(d) + (1.0 - y) * np.square(hinge))
    b = len(y)
    g_d = (2.0 * y * d - (1.0 - y) * 2.0 * hinge * passes) / b
    with np.errstate(invalid="ignore", divide="ignore"):
        g_s = g_d * 0.5 / d
        ga = 2.0 * diff * g_s[:, None]
    return loss, ga, -ga


def np_omoindrot_distances(embeddings, squared):
    """omoindrot _pairwise_distances and TF's VJP."""
    dot = embeddings @ embeddings.T
    square_norm = np.diag(dot)
    raw = np.expand_dims(square_norm, 1) - 2.0 * dot + np.expand_dims(square_norm, 0)
    distances, passes = np_maximum0(raw)
    if not squared:
        mask = (distances == 0.0).astype(np.float64)
        under = distances + mask * 1e-16
        distances = np.sqrt(under) * (1.0 - mask)

    def vjp(g):
        g_raw = (g if squared else g * (1.0 - mask) * 0.5 / np.sqrt(under)) * passes
        g_dot = -2.0 * g_raw + np.diag(g_raw.sum(axis=1) + g_raw.sum(axis=0))
        return (g_dot + g_dot.T) @ embeddings

    return distances, vjp


def np_triplet_mask(labels):
    """omoindrot _get_triplet_mask: distinct i, j, k; y_i = y_j != y_k."""
    b = len(labels)
    not_eq = ~np.eye(b, dtype=bool)
    distinct = not_eq[:, :, None] & not_eq[:, None, :] & not_eq[None, :, :]
    eq = labels[None, :] == labels[:, None]
    return distinct & eq[:, :, None] & ~eq[:, None, :]


def np_omoindrot_batch_all(labels, embeddings, margin, squared):
    pairwise_dist, dist_vjp = np_omoindrot_distances(embeddings, squared)
    triplet_loss = pairwise_dist[:, :, None] - pairwise_dist[:, None, :] + margin
    mask = np_triplet_mask(labels).astype(np.float64)
    product = mask * triplet_loss
    triplet_loss, passes = np_maximum0(product)
    num_positive = np.sum((triplet_loss > 1e-16).astype(np.float64))
    num_valid = np.sum(mask)
    fraction = num_positive / (num_valid + 1e-16)
    loss = np.sum(triplet_loss) / (num_positive + 1e-16)

    def vjp(g):
        g_t = g / (num_positive + 1e-16) * passes * mask
        return dist_vjp(g_t.sum(axis=2) - g_t.sum(axis=1))

    return loss, fraction, vjp


def np_omoindrot_batch_hard(labels, embeddings, margin, squared):
    pairwise_dist, dist_vjp = np_omoindrot_distances(embeddings, squared)
    eq = labels[None, :] == labels[:, None]
    mask_ap = (eq & ~np.eye(len(labels), dtype=bool)).astype(np.float64)
    mask_an = (~eq).astype(np.float64)
    anchor_positive_dist = mask_ap * pairwise_dist
    hardest_positive, split_p = np_reduce_extreme(anchor_positive_dist, largest=True)
    max_dist, split_max = np_reduce_extreme(pairwise_dist, largest=True)
    anchor_negative_dist = pairwise_dist + max_dist * (1.0 - mask_an)
    hardest_negative, split_n = np_reduce_extreme(anchor_negative_dist, largest=False)
    losses, passes = np_maximum0(hardest_positive - hardest_negative + margin)
    loss = np.mean(losses)

    def vjp(g):
        g_l = g / len(labels) * passes
        g_an = split_n * -g_l
        g_max = np.sum(g_an * (1.0 - mask_an), axis=1, keepdims=True)
        g_d = split_p * g_l * mask_ap + g_an + split_max * g_max
        return dist_vjp(g_d)

    return loss, vjp


def np_reid_batch_hard(embeddings, pids, margin, metric):
    """triplet-reid cdist (all_diffs) + batch_hard + apply_margin, per anchor,
    and TF's VJP of mean(losses)."""
    diffs = embeddings[:, None, :] - embeddings[None, :, :]
    if metric == "euclidean":
        dists = np.sqrt(np.sum(np.square(diffs), axis=-1) + 1e-12)
    elif metric == "sqeuclidean":
        dists = np.sum(np.square(diffs), axis=-1)
    else:
        dists = np.sum(np.abs(diffs), axis=-1)
    same = pids[:, None] == pids[None, :]
    negative_mask = ~same
    positive_mask = same ^ np.eye(len(pids), dtype=bool)
    pos_v = dists * positive_mask.astype(np.float64)
    positive, split_p = np_reduce_extreme(pos_v, largest=True)
    negative = np.array([[np.min(row[m]) if m.any() else np.inf]
                         for row, m in zip(dists, negative_mask)])
    x = positive - negative
    with np.errstate(over="ignore"):
        if margin == "soft":
            losses = np.logaddexp(0.0, x)  # tf.nn.softplus, stable
            slope = np.exp(-np.logaddexp(0.0, -x))  # sigmoid
        elif margin == "none":
            losses, slope = x, np.ones_like(x)
        else:
            losses, slope = np_maximum0(x + margin)
    losses = losses[:, 0]

    def vjp(g_losses):
        u = g_losses[:, None] * slope
        near = (negative_mask & (dists == negative)).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            split_n = np.where(near > 0, near / near.sum(axis=1, keepdims=True), 0.0)
        g_d = split_p * u * positive_mask - split_n * u
        if metric == "euclidean":
            g_diff = (g_d / dists)[..., None] * diffs
        elif metric == "sqeuclidean":
            g_diff = 2.0 * g_d[..., None] * diffs
        else:
            g_diff = g_d[..., None] * np.sign(diffs)
        return g_diff.sum(axis=1) - g_diff.sum(axis=0)

    return losses, vjp


def np_hadsell(left, right, label, margin):
    """sources/contrastive-and-triplet-tensorflow-qa-zh.txt, answer 1, and TF's VJP."""
    y = label.astype(np.float64)
    diff = left - right
    d = np.sum(np.square(diff), 1)
    d_sqrt = np.sqrt(d)
    gap = margin - d_sqrt
    hinge = np.maximum(0.0, gap)
    to_gap = gap > 0.0  # tf.maximum(0., gap): the constant wins ties
    loss = 0.5 * np.mean(y * np.square(hinge) + (1 - y) * d)
    c = 0.5 / len(y)
    with np.errstate(invalid="ignore", divide="ignore"):
        g_d = c * (1 - y) + (c * y * 2.0 * hinge * to_gap * -1.0) * 0.5 / d_sqrt
    ga = 2.0 * diff * g_d[:, None]
    return loss, ga, -ga, c * (np.square(hinge) - d)


# --------------------------------------------------------------------------
# the oracles' chain rules are the derivatives (away from kinks and ties)


def _clear_of_kinks(dm, labels, margin):
    """Distances distinct, non-zero off the diagonal, hinge arguments away from 0."""
    b = len(labels)
    off = dm[~np.eye(b, dtype=bool)]
    if b > 1 and (off.min() < 1e-3 or gaps(off) < 1e-4):
        return False
    z = dm[:, :, None] - dm[:, None, :] + margin
    return bool(np.all(np.abs(z) > 1e-4))


@settings(max_examples=15)
@given(tf_batch(min_rows=2), st.sampled_from(TFA_METRICS), st.sampled_from([0.2, 1.0]),
       st.integers(0, 2**16))
def test_tfa_oracles_chain_rules_are_the_derivatives(data, metric, margin, seed):
    x, labels = data
    x = x + np.random.default_rng(seed).normal(scale=0.3, size=x.shape)  # break the grid
    dm, _ = np_tfa_distance(x, metric)
    assume(_clear_of_kinks(dm, labels, margin))
    assume(np.any((labels[:, None] == labels[None, :]) & ~np.eye(len(labels), dtype=bool)))
    rng = np.random.default_rng(seed)
    for f in (lambda xx: np_tfa_semihard(labels, xx, margin, metric),
              lambda xx: np_tfa_hard(labels, xx, margin, False, metric),
              lambda xx: np_tfa_hard(labels, xx, margin, True, metric)):
        fd_check(lambda xx, f=f: f(xx)[0], [x], 0, f(x)[1](1.0), rng)


@settings(max_examples=15)
@given(tf_batch(min_rows=2), st.booleans(), st.sampled_from([0.2, 1.0]), st.integers(0, 2**16))
def test_omoindrot_and_reid_oracles_chain_rules_are_the_derivatives(data, squared, margin, seed):
    x, labels = data
    x = x + np.random.default_rng(seed).normal(scale=0.3, size=x.shape)
    dm, _ = np_omoindrot_distances(x, squared)
    assume(_clear_of_kinks(dm, labels, margin))
    rng = np.random.default_rng(seed)
    fd_check(lambda xx: np_omoindrot_batch_all(labels, xx, margin, squared)[0], [x], 0,
             np_omoindrot_batch_all(labels, x, margin, squared)[2](1.0), rng)
    fd_check(lambda xx: np_omoindrot_batch_hard(labels, xx, margin, squared)[0], [x], 0,
             np_omoindrot_batch_hard(labels, x, margin, squared)[1](1.0), rng)
    diffs = x[:, None, :] - x[None, :, :]
    off = ~np.eye(len(x), dtype=bool)
    assume(np.min(np.abs(diffs)[off]) > 1e-3)  # sign() of cityblock
    for metric in ("euclidean", "sqeuclidean", "cityblock"):
        dm = np.sum(np.abs(diffs), axis=-1) if metric == "cityblock" else dm
        assume(gaps(dm[off]) > 1e-4)
        weights = np.full(len(labels), 1.0 / len(labels))
        fd_check(lambda xx, m=metric: np.mean(np_reid_batch_hard(xx, labels, "soft", m)[0]),
                 [x], 0, np_reid_batch_hard(x, labels, "soft", metric)[1](weights), rng)


# --------------------------------------------------------------------------
# tfa.pairwise_distance


@given(st.data(), st.booleans(), st.integers(0, 2**16))
def test_tfa_pairwise_distance_matches_the_transcription(backend, data, squared, seed):
    x, _ = draw_batch(data, backend)
    g = np.random.default_rng(seed).normal(size=(len(x), len(x)))
    value, pullback = rl.vjp(tfa.pairwise_distance, backend.asarray(x), squared)
    expected, vjp = np_tfa_pairwise_distance(x, squared)
    assert_close(value, expected, backend, dtype="float64", **VALUE)
    (gx, gs) = pullback(backend.asarray(g))
    assert gs is None
    assert_close(gx, vjp(g), backend, dtype="float64", **GRAD)


def test_tfa_pairwise_distance_keeps_the_gemm_cancellation(numpy_backend):
    """Documented difference: near-duplicates next to large norms lose their
    distance in the expansion; the reference recomputes it exactly."""
    x = np.array([[1e4, 1e4], [1e4 + 3e-5, 1e4]])
    got = tfa.pairwise_distance(x)
    ref = rl.pairwise_distances(x)
    exact = x[1, 0] - x[0, 0]
    np.testing.assert_allclose(ref[0, 1], exact, rtol=1e-12)
    assert abs(got[0, 1] - exact) > 0.1 * exact
    assert got[0, 0] == got[1, 1] == 0.0


def test_tfa_pairwise_distance_duplicates_are_zero_with_zero_gradient(numpy_backend):
    x = np.array([[1.0, 2.0], [1.0, 2.0], [0.0, 0.5]])
    value, pullback = rl.vjp(tfa.pairwise_distance, numpy_backend.asarray(x))
    got = to_numpy(value)
    assert got[0, 1] == got[1, 0] == 0.0
    only_01 = np.zeros((3, 3))
    only_01[0, 1] = only_01[1, 0] = 1.0
    assert_close(pullback(numpy_backend.asarray(only_01))[0], np.zeros((3, 2)), numpy_backend,
                 dtype="float64", atol=0, rtol=0)


# --------------------------------------------------------------------------
# tfa.triplet_semihard_loss


@given(st.data(), st.sampled_from(TFA_METRICS), st.sampled_from([0.0, 0.5, 1.0, 2.0]),
       st.booleans())
def test_tfa_semihard_matches_the_tiled_transcription(backend, data, metric, margin, column):
    x, labels = draw_batch(data, backend)
    eq = labels[:, None] == labels[None, :]
    assume(np.any(eq & ~np.eye(len(labels), dtype=bool)))  # the NaN case is tested below
    assume(gemm_exact_across_backends(x, metric, backend))
    y_true = labels[:, None] if column else labels
    value, pullback = rl.vjp(tfa.triplet_semihard_loss, *moved(backend, y_true, x), margin,
                             metric)
    loss, vjp = np_tfa_semihard(labels, x, margin, metric)
    assert_close(value, loss, backend, dtype="float64", **VALUE)
    g_labels, gx, g_margin, g_metric = pullback(0.7)
    assert g_labels is None and g_margin is None and g_metric is None
    assert_close(gx, vjp(0.7), backend, dtype="float64", **GRAD)


def test_tfa_semihard_docstring_example(numpy_backend):
    """TFA's docstring: y=[0, 0], x=[[0, 1], [1, 0]] → 2.4142137 (no negative:
    the term is margin + d_ap)."""
    got = tfa.triplet_semihard_loss(*moved(numpy_backend, np.array([0, 0]),
                                           np.array([[0.0, 1.0], [1.0, 0.0]])))
    assert_close(got, 1.0 + math.sqrt(2.0), numpy_backend, dtype="float64", **VALUE)
    assert rl.semihard_triplet_loss(np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([0, 0])) == 0


def test_tfa_semihard_without_positive_pairs_is_nan(backend):
    """Documented difference: 0/0 = NaN, gradient NaN everywhere; with
    reproduce_nan=False 0 and a zero gradient, as the reference."""
    labels = np.arange(6)
    x = np.arange(12.0).reshape(6, 2)
    value, grads = rl.value_and_grad(tfa.triplet_semihard_loss, *moved(backend, labels, x))
    assert np.isnan(to_numpy(value))
    assert np.all(np.isnan(to_numpy(grads[1])))
    value, grads = rl.value_and_grad(tfa.triplet_semihard_loss, *moved(backend, labels, x),
                                     reproduce_nan=False)
    assert_close(value, 0.0, backend, dtype="float64", atol=0)
    assert_close(grads[1], np.zeros_like(x), backend, dtype="float64", atol=0)
    np.testing.assert_allclose(rl.semihard_triplet_loss(x, labels), 0.0)
    assert np.isnan(tfa.triplet_semihard_loss(np.array([3]), np.ones((1, 2))))  # one sample


def test_tfa_semihard_hinge_exactly_at_zero_passes_gradient(numpy_backend):
    """Documented difference: a term exactly at 0 still pulls (tf.maximum
    passes where its argument is >= 0); the reference's relu does not."""
    x = np.array([[0.0], [1.0], [2.0], [10.0]])
    labels = np.array([0, 0, 1, 1])
    # (0,1): d_ap 1, n* = 2 at 2: 1 + (1 - 2) = 0 exactly, active
    # (1,0): d_ap 1, n* = 3 at 9 (2 is not farther than 1): 1 + (1 - 9) < 0
    # (2,3): d_ap 8, no farther negative: the farthest, 0 at 2: 1 + (8 - 2) = 7
    # (3,2): d_ap 8, n* = 1 at 9: 1 + (8 - 9) = 0 exactly, active
    value, (_, gx) = rl.value_and_grad(tfa.triplet_semihard_loss, labels, x)
    np.testing.assert_allclose(value, 7.0 / 4, **VALUE)
    w = 1.0 / 4
    np.testing.assert_allclose(gx, [[w], [2 * w], [-4 * w], [w]], **GRAD)
    ref_value, (ref_gx, _) = rl.value_and_grad(rl.semihard_triplet_loss, x, labels)
    np.testing.assert_allclose(ref_value, 7.0 / 4, **VALUE)
    np.testing.assert_allclose(ref_gx, [[w], [0.0], [-2 * w], [w]], **GRAD)


def test_tfa_semihard_splits_the_gradient_among_tied_negatives(numpy_backend):
    """Documented difference: two identical negatives share the pull; the
    reference sends all of it to the lowest index."""
    x = np.array([[0.0, 0.0], [0.5, 0.0], [0.0, 1.0], [0.0, 1.0], [5.0, 5.0]])
    labels = np.array([0, 0, 1, 1, 2])
    _, (_, gx) = rl.value_and_grad(tfa.triplet_semihard_loss, *moved(numpy_backend, labels, x))
    _, expected = np_tfa_semihard(labels, x, 1.0, "L2")
    assert_close(gx, expected(1.0), numpy_backend, dtype="float64", **GRAD)
    got = to_numpy(gx)
    np.testing.assert_allclose(got[2], got[3], **GRAD)  # the twins are treated alike
    _, (ref_gx, _) = rl.value_and_grad(rl.semihard_triplet_loss, x, labels)
    assert not np.allclose(ref_gx[2], ref_gx[3])


def test_tfa_semihard_row_max_offset_routes_gradient_like_tf(numpy_backend):
    """When the semi-hard negative is the row maximum and a positive ties with
    it, TF's _masked_minimum sends part of the gradient through the row max
    to that positive; the preset does the same."""
    x = np.array([[0.0], [1.0], [3.0], [-3.0]])
    labels = np.array([0, 0, 1, 0])  # anchor 0: positive 3 at distance 3 = its negative's
    _, (_, gx, _) = rl.value_and_grad(tfa.triplet_semihard_loss, labels, x, 5.0)
    _, expected = np_tfa_semihard(labels, x, 5.0, "L2")
    np.testing.assert_allclose(gx, expected(1.0), **GRAD)


@given(pk_batch(grid=False))
def test_tfa_semihard_is_the_reference_where_every_anchor_has_a_negative(numpy_backend, data):
    """Tie-free batches: on exact ties the strict d_an > d_ap depends on the
    last bit of each distance, and TFA's GEMM and the reference's centred
    one round differently."""
    x, labels = data
    np.testing.assert_allclose(tfa.triplet_semihard_loss(labels, x),
                               rl.semihard_triplet_loss(x, labels), rtol=1e-9, atol=1e-12)


def test_tfa_semihard_angular_zero_row_gets_tf_l2_normalize_gradient(numpy_backend):
    """Documented difference: tf.math.l2_normalize divides by max(‖x‖, 1e-6), so
    a zero row has gradient g·1e6 through the normalisation; the reference 0."""
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = np.array([0, 0, 1, 1])
    _, (_, gx, _, _) = rl.value_and_grad(tfa.triplet_semihard_loss, labels, x, 1.0, "angular")
    _, expected = np_tfa_semihard(labels, x, 1.0, "angular")
    np.testing.assert_allclose(gx, expected(1.0), **GRAD)
    assert np.max(np.abs(gx[0])) > 1e4
    _, (ref_gx, _) = rl.value_and_grad(rl.semihard_triplet_loss, x, labels, metric="cosine")
    np.testing.assert_array_equal(ref_gx[0], [0.0, 0.0])


def test_tfa_semihard_memory_is_quadratic(numpy_backend):
    """O(B²) memory: TFA's tiled matrices would take ~B³·8 bytes each."""
    rng = np.random.default_rng(0)
    b = 300
    x = rng.normal(size=(b, 4))
    labels = rng.integers(0, 30, size=b)
    tracemalloc.start()
    try:
        rl.value_and_grad(tfa.triplet_semihard_loss, labels, x)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 60 * b * b * 8 < b**3 * 8


# --------------------------------------------------------------------------
# tfa.triplet_hard_loss


@pytest.mark.parametrize("soft", [False, True])
@given(st.data(), st.sampled_from(TFA_METRICS), st.sampled_from([0.0, 0.5, 1.0]),
       st.booleans())
def test_tfa_hard_matches_the_transcription(backend, soft, data, metric, margin, column):
    x, labels = draw_batch(data, backend)
    assume(gemm_exact_across_backends(x, metric, backend))
    y_true = labels[:, None] if column else labels
    value, pullback = rl.vjp(tfa.triplet_hard_loss, *moved(backend, y_true, x), margin, soft,
                             metric)
    loss, vjp = np_tfa_hard(labels, x, margin, soft, metric)
    assert_close(value, loss, backend, dtype="float64", **VALUE)
    grads = pullback(1.3)
    assert grads[0] is None and all(g is None for g in grads[2:])
    assert_close(grads[1], vjp(1.3), backend, dtype="float64", **GRAD)


def test_tfa_hard_docstring_examples(numpy_backend):
    """One class: the hardest negative is the row max → term = margin (1.0)."""
    y, x = np.array([0, 0]), np.array([[0.0, 1.0], [1.0, 0.0]])
    np.testing.assert_allclose(tfa.triplet_hard_loss(y, x), 1.0, **VALUE)
    assert rl.batch_hard_triplet_loss(x, y) == 0.0


def test_tfa_hard_counts_anchors_without_positive(numpy_backend):
    """Documented difference: a singleton's hardest positive is its row min
    (0) and it still pushes its nearest negative; the reference drops it."""
    x = np.array([[0.0], [0.3], [1.0], [0.5]])
    labels = np.array([0, 0, 1, 2])  # anchors 2 and 3 have no positive
    value, (_, gx, _) = rl.value_and_grad(tfa.triplet_hard_loss, labels, x, 1.0)
    # anchor 0: hp 0.3, hn 0.5 → 0.8; anchor 1: hp 0.3, hn 0.2 → 1.1;
    # anchor 2: hp 0, hn 0.5 → 0.5; anchor 3: hp 0, hn 0.2 → 0.8
    assert_close(value, (0.8 + 1.1 + 0.5 + 0.8) / 4, numpy_backend, dtype="float64", **VALUE)
    ref = rl.batch_hard_triplet_loss(x, labels, margin=1.0)
    np.testing.assert_allclose(ref, (0.8 + 1.1) / 2, **VALUE)
    # anchor 2's term pushes 3 towards 2 ... away: ∂/∂x_3 gets +1/4 from d_23 = x_2 - x_3
    _, expected = np_tfa_hard(labels, x, 1.0, False, "L2")
    assert_close(gx, expected(1.0), numpy_backend, dtype="float64", **GRAD)


def test_tfa_hard_soft_overflows_like_tf(numpy_backend):
    """Documented difference: log1p(exp(z)) is inf past log(float max), with a
    NaN gradient; reproduce_nan=False uses the stable softplus."""
    x = np.array([[0.0], [800.0], [1.0]])
    labels = np.array([0, 0, 1])  # anchor 0: hp 800, hn 1 → z = 799
    value, (_, gx, _, _) = rl.value_and_grad(tfa.triplet_hard_loss, labels, x, 1.0, True)
    assert np.isinf(value)
    assert np.any(np.isnan(gx))
    value, (_, gx, _, _) = rl.value_and_grad(tfa.triplet_hard_loss, labels, x, 1.0, True,
                                       reproduce_nan=False)
    # anchor 1: hp 800, hn 799 → z = 1; anchor 2: no positive, hp = row min 0, hn 1 → -1
    assert np.isfinite(value) and np.all(np.isfinite(gx))
    np.testing.assert_allclose(value, np.mean(np.logaddexp(0.0, [799.0, 1.0, -1.0])),
                               rtol=1e-12)


@given(pk_batch(), st.booleans())
def test_tfa_hard_is_the_reference_where_every_anchor_is_valid(numpy_backend, data, soft):
    x, labels = data
    np.testing.assert_allclose(tfa.triplet_hard_loss(labels, x, 1.0, soft),
                               rl.batch_hard_triplet_loss(x, labels, soft=soft),
                               rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------
# tfa.contrastive_loss


@given(st.integers(0, 2**16), st.sampled_from(["int", "bool", "float"]),
       st.sampled_from([0.0, 1.0, 2.5]))
def test_tfa_contrastive_matches_the_transcription(backend, seed, kind, margin):
    rng = np.random.default_rng(seed)
    d = np.abs(rng.normal(size=6)) * 2
    y = rng.integers(0, 2, size=6)
    y = {"int": y, "bool": y.astype(bool), "float": y.astype(np.float64) * 0.75}[kind]
    value, pullback = rl.vjp(tfa.contrastive_loss, *moved(backend, y, d), margin)
    expected, grad_d, grad_y = np_tfa_contrastive(y, d, margin)
    assert_close(value, expected, backend, dtype="float64", **VALUE)
    g = rng.normal(size=6)
    gy, gd, gm = pullback(backend.asarray(g))
    assert gm is None
    assert_close(gd, g * grad_d, backend, dtype="float64", **GRAD)
    if kind == "float":
        assert_close(gy, g * grad_y, backend, dtype="float64", **GRAD)
    else:
        assert gy is None


def test_tfa_contrastive_is_the_reference_per_pair_with_label_one_similar(numpy_backend):
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    y = np.array([1, 0, 1, 0, 0])
    d = rl.paired_distances(a, b)
    np.testing.assert_allclose(tfa.contrastive_loss(y, d),
                               rl.contrastive_loss(a, b, y == 1, reduction="none"), **VALUE)
    # no ½, and y = 1 is the similar pair (d²)
    np.testing.assert_allclose(tfa.contrastive_loss(np.array([1]), np.array([0.5])), [0.25])


# --------------------------------------------------------------------------
# tf_contrib


@given(st.data(), st.sampled_from([0.0, 1.0, 3.0]))
def test_contrib_semihard_matches_the_transcription(backend, data, margin):
    x, labels = draw_batch(data, backend)
    eq = labels[:, None] == labels[None, :]
    assume(np.any(eq & ~np.eye(len(labels), dtype=bool)))
    value, pullback = rl.vjp(tf_contrib.triplet_semihard_loss, *moved(backend, labels, x),
                             margin)
    loss, vjp = np_tfa_semihard(labels, x, margin, "squared-L2")  # contrib: squared=True
    assert_close(value, loss, backend, dtype="float64", **VALUE)
    g_labels, gx, g_margin = pullback(1.0)
    assert g_labels is None and g_margin is None
    assert_close(gx, vjp(1.0), backend, dtype="float64", **GRAD)


def test_contrib_semihard_is_squared_unlike_tfa_default(numpy_backend):
    """Documented difference: contrib squares the distances, TFA ≥ 0.11 does not."""
    x = np.array([[0.0, 0.0], [0.0, 2.0], [1.0, 0.0], [3.0, 0.0]])
    labels = np.array([0, 0, 1, 1])
    contrib = tf_contrib.triplet_semihard_loss(labels, x)
    np.testing.assert_allclose(
        contrib, tfa.triplet_semihard_loss(labels, x, distance_metric="squared-L2"), **VALUE)
    assert abs(contrib - tfa.triplet_semihard_loss(labels, x)) > 0.1
    np.testing.assert_allclose(contrib, rl.semihard_triplet_loss(x, labels, metric="sqeuclidean"),
                               **VALUE)


def test_contrib_semihard_nan_without_positive_pairs(numpy_backend):
    labels, x = np.array([0, 1]), np.array([[0.0], [1.0]])
    value, (_, gx) = rl.value_and_grad(tf_contrib.triplet_semihard_loss, labels, x)
    assert np.isnan(value) and np.all(np.isnan(gx))
    assert tf_contrib.triplet_semihard_loss(labels, x, reproduce_nan=False) == 0.0


def test_contrib_semihard_takes_1d_labels_only(numpy_backend):
    x = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"^labels: expected a 1-D array, got shape \(3, 1\)"):
        tf_contrib.triplet_semihard_loss(np.zeros((3, 1), dtype=np.int64), x)
    tfa.triplet_semihard_loss(np.zeros((3, 1), dtype=np.int64), x)  # TFA reshapes it


@given(st.integers(0, 2**16), st.sampled_from([0.0, 0.5, 1.0]), st.booleans())
def test_contrib_contrastive_matches_the_transcription(backend, seed, margin, dup):
    rng = np.random.default_rng(seed)
    a, p = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)) * 0.5
    labels = rng.integers(0, 2, size=5)
    if dup:
        p[1] = a[1]  # d = 0: NaN gradient in both rows
    value, pullback = rl.vjp(tf_contrib.contrastive_loss, *moved(backend, labels, a, p), margin)
    loss, ga, gp = np_contrib_contrastive(labels, a, p, margin)
    assert_close(value, loss, backend, dtype="float64", **VALUE)
    g_labels, g_a, g_p, g_m = pullback(1.0)
    assert g_labels is None and g_m is None
    assert bool(np.isnan(ga).any()) == dup
    # assert_allclose treats NaN as equal to NaN: the NaN rows must coincide
    assert_close(g_a, ga, backend, dtype="float64", **GRAD)
    assert_close(g_p, gp, backend, dtype="float64", **GRAD)


@pytest.mark.parametrize("label", [0, 1])
def test_contrib_contrastive_nan_gradient_at_zero_distance(backend, label):
    """Documented difference: an identical pair gets NaN (both rows, any label);
    reproduce_nan=False gives the reference's subgradient."""
    a = np.array([[1.0, 2.0], [0.0, 0.0]])
    p = np.array([[1.0, 2.0], [0.3, 0.4]])
    labels = np.array([label, 0])
    _, (_, ga, gp) = rl.value_and_grad(tf_contrib.contrastive_loss, *moved(backend, labels, a, p))
    got_a, got_p = to_numpy(ga), to_numpy(gp)
    assert np.all(np.isnan(got_a[0])) and np.all(np.isnan(got_p[0]))
    assert np.all(np.isfinite(got_a[1]))
    _, (_, ga, gp) = rl.value_and_grad(tf_contrib.contrastive_loss,
                                       *moved(backend, labels, a, p), reproduce_nan=False)
    _, (ref_a, ref_p, _) = rl.value_and_grad(rl.contrastive_loss, a, p, labels == 1)
    assert_close(ga, ref_a, backend, dtype="float64", **GRAD)
    assert_close(gp, ref_p, backend, dtype="float64", **GRAD)


def test_contrib_contrastive_value_is_the_reference_mean(numpy_backend):
    rng = np.random.default_rng(5)
    a, p = rng.normal(size=(6, 2)), rng.normal(size=(6, 2))
    labels = np.array([1, 0, 0, 1, 1, 0])
    np.testing.assert_allclose(tf_contrib.contrastive_loss(labels, a, p, 1.5),
                               rl.contrastive_loss(a, p, labels == 1, margin=1.5), **VALUE)


# --------------------------------------------------------------------------
# omoindrot


@given(st.data(), st.sampled_from([0.0, 0.5, 1.0]), st.booleans())
def test_omoindrot_batch_all_matches_the_3d_transcription(backend, data, margin, squared):
    x, labels = draw_batch(data, backend)
    (loss, fraction), pullback = rl.vjp(omoindrot.batch_all_triplet_loss,
                                        *moved(backend, labels, x), margin, squared)
    eloss, efraction, vjp = np_omoindrot_batch_all(labels, x, margin, squared)
    assert_close(loss, eloss, backend, dtype="float64", **VALUE)
    assert_close(fraction, efraction, backend, dtype="float64", **VALUE)
    g_labels, gx, g_margin, g_squared = pullback(0.9)
    assert g_labels is None and g_margin is None and g_squared is None
    assert_close(gx, vjp(0.9), backend, dtype="float64", **GRAD)


def test_omoindrot_batch_all_threshold_counts_terms_above_1e16(numpy_backend):
    """Documented difference: a term in (0, 1e-16] is summed, not counted; when
    it is the only one the sum is divided by 1e-16. Integer squared distances
    make the tiny term exact."""
    x = np.array([[0.0], [2.0], [1.0]])
    labels = np.array([0, 1, 0])
    margin = 2.0**-60  # ≈ 8.7e-19
    # anchor 0: d²_ap = 1, d²_an = 4: (1 - 4) + m < 0; anchor 2: d²_ap = 1, d²_an = 1: 0 + m
    (loss, fraction), (_, gx, _, _) = rl.value_and_grad(
        omoindrot.batch_all_triplet_loss, *moved(numpy_backend, labels, x), margin, True)
    assert_close(loss, 2.0**-60 / 1e-16, numpy_backend, dtype="float64", rtol=1e-12, atol=0)
    assert_close(fraction, 0.0, numpy_backend, dtype="float64", atol=0)
    eloss, efraction, vjp = np_omoindrot_batch_all(labels, x, margin, True)
    np.testing.assert_allclose([eloss, efraction], [2.0**-60 / 1e-16, 0.0], rtol=1e-12)
    assert_close(gx, vjp(1.0), numpy_backend, dtype="float64", **GRAD)  # weight 1/1e-16
    ref = rl.batch_all_triplet_loss(x, labels, margin=margin, metric="sqeuclidean")
    # the reference forms d_ap + m first, which rounds the 2^-60 away (and it
    # would divide by the one term's count, not by 1e-16)
    assert ref == 0.0


def test_omoindrot_batch_all_zero_term_passes_gradient(numpy_backend):
    """Documented difference: a triplet exactly at the margin pulls (tf.maximum);
    the reference's relu gives it no gradient."""
    x = np.array([[0.0], [1.0], [2.0]])
    labels = np.array([0, 0, 1])
    # (0, 1, 2): (1 - 2) + 1 = 0 exactly, not counted; (1, 0, 2): (1 - 1) + 1 = 1
    (loss, fraction), (_, gx, _) = rl.value_and_grad(
        omoindrot.batch_all_triplet_loss, labels, x, 1.0)
    np.testing.assert_allclose([loss, fraction], [1.0, 0.5], **VALUE)
    # +∂d_01 - ∂d_02 (the zero term) + ∂d_10 - ∂d_12, each with weight 1
    np.testing.assert_allclose(gx, [[-1.0], [3.0], [-2.0]], **GRAD)
    _, (ref_gx, _) = rl.value_and_grad(rl.batch_all_triplet_loss, x, labels, margin=1.0)
    np.testing.assert_allclose(ref_gx, [[-1.0], [2.0], [-1.0]], **GRAD)


@given(tf_batch(min_rows=2), st.sampled_from([0.2, 1.0]))
def test_omoindrot_batch_all_is_the_reference_mean_nonzero(numpy_backend, data, margin):
    x, labels = data
    dm = rl.pairwise_distances(x)
    z = dm[:, :, None] - dm[:, None, :] + margin
    assume(np.all((np.abs(z) > 1e-9) | (z == 0)))
    loss, _ = omoindrot.batch_all_triplet_loss(labels, x, margin)
    np.testing.assert_allclose(loss, rl.batch_all_triplet_loss(x, labels, margin=margin),
                               rtol=1e-9, atol=1e-12)


def test_omoindrot_batch_all_memory_is_quadratic(numpy_backend):
    """O(B²) memory: the original builds several B³ tensors."""
    rng = np.random.default_rng(1)
    b = 300
    x = rng.normal(size=(b, 4))
    labels = rng.integers(0, 30, size=b)
    tracemalloc.start()
    try:
        rl.value_and_grad(omoindrot.batch_all_triplet_loss, labels, x, 0.5)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 60 * b * b * 8 < b**3 * 8


@given(st.data(), st.sampled_from([0.0, 0.5, 1.0]), st.booleans())
def test_omoindrot_batch_hard_matches_the_transcription(backend, data, margin, squared):
    x, labels = draw_batch(data, backend)
    value, pullback = rl.vjp(omoindrot.batch_hard_triplet_loss, *moved(backend, labels, x),
                             margin, squared)
    loss, vjp = np_omoindrot_batch_hard(labels, x, margin, squared)
    assert_close(value, loss, backend, dtype="float64", **VALUE)
    g_labels, gx, _, _ = pullback(1.1)
    assert g_labels is None
    assert_close(gx, vjp(1.1), backend, dtype="float64", **GRAD)


def test_omoindrot_batch_hard_counts_anchors_without_positive_or_negative(numpy_backend):
    """Documented difference: all B anchors are in the mean — a singleton with
    hardest positive 0, a lone class with hardest negative = its row max."""
    x = np.array([[0.0], [1.0], [3.0]])
    labels = np.array([0, 0, 1])  # anchor 2 has no positive
    value = omoindrot.batch_hard_triplet_loss(*moved(numpy_backend, labels, x), 0.5)
    # anchor 0: 1 - 3 + .5 → 0; anchor 1: 1 - 2 + .5 → 0; anchor 2: 0 - 2 + .5 → 0
    assert_close(value, 0.0, numpy_backend, dtype="float64", atol=0)
    value = omoindrot.batch_hard_triplet_loss(*moved(numpy_backend, labels, x), 2.5)
    # 0.5, 1.5, 0.5 over all 3 anchors; the reference: anchors 0 and 1 only
    assert_close(value, 2.5 / 3, numpy_backend, dtype="float64", **VALUE)
    np.testing.assert_allclose(rl.batch_hard_triplet_loss(x, labels, margin=2.5), 2.0 / 2)
    one_class = omoindrot.batch_hard_triplet_loss(np.array([0, 0]), np.array([[0.0], [2.0]]), 0.5)
    np.testing.assert_allclose(one_class, 0.5)  # hp = 2, hn = row max 2


def test_omoindrot_requires_a_margin():
    with pytest.raises(TypeError):
        omoindrot.batch_hard_triplet_loss(np.array([0, 0]), np.zeros((2, 2)))


# --------------------------------------------------------------------------
# triplet_reid


@given(st.data(), st.sampled_from(["euclidean", "sqeuclidean", "cityblock"]),
       st.sampled_from(["soft", 0.3, "none"]), st.sampled_from(["mean", "none"]),
       st.integers(0, 2**16))
def test_reid_batch_hard_matches_the_transcription(backend, data, metric, margin, reduction,
                                                   seed):
    x, labels = draw_batch(data, backend)
    losses, vjp = np_reid_batch_hard(x, labels, margin, metric)
    assume(np.all(np.isfinite(losses)))  # 'none' without negatives: -inf, tested below
    value, pullback = rl.vjp(triplet_reid.batch_hard, *moved(backend, x, labels), margin,
                             metric=metric, reduction=reduction)
    if reduction == "mean":
        assert_close(value, np.mean(losses), backend, dtype="float64", **VALUE)
        g = np.full(len(x), 0.8 / len(x))
        gx, gp, gm = pullback(0.8)
    else:
        assert_close(value, losses, backend, dtype="float64", **VALUE)
        g = np.random.default_rng(seed).normal(size=len(x))
        gx, gp, gm = pullback(backend.asarray(g))
    assert gp is None and gm is None
    assert_close(gx, vjp(g), backend, dtype="float64", **GRAD)


def test_reid_epsilon_inside_the_sqrt(numpy_backend):
    """Documented difference: d = sqrt(d² + 1e-12) never vanishes and the
    gradient of a duplicate pair is finite; the reference's d is exact."""
    x = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 2.0]])
    labels = np.array([0, 0, 1])
    got = to_numpy(triplet_reid.batch_hard(*moved(numpy_backend, x, labels), reduction="none"))
    d_pos, d_neg = math.sqrt(1e-12), math.sqrt(1.0 + 1e-12)
    np.testing.assert_allclose(got[:2], np.log1p(np.exp(d_pos - d_neg)), rtol=1e-12)
    _, (gx, _) = rl.value_and_grad(triplet_reid.batch_hard, *moved(numpy_backend, x, labels))
    assert np.all(np.isfinite(to_numpy(gx)))
    ref = rl.batch_hard_triplet_loss(x, labels, soft=True, reduction="none")
    assert abs(ref[0] - got[0]) > 1e-7


def test_reid_anchor_without_negative_is_zero_and_counted(numpy_backend):
    """Documented difference: min over no negative = +inf → softplus 0, still
    in the mean; 'none' gives -inf; the reference drops such anchors."""
    x = np.array([[0.0], [1.0]])
    labels = np.array([0, 0])
    np.testing.assert_array_equal(triplet_reid.batch_hard(x, labels, reduction="none"), [0, 0])
    assert triplet_reid.batch_hard(x, labels, "none") == -np.inf
    x3, l3 = np.array([[0.0], [1.0], [5.0]]), np.array([0, 1, 1])
    got = triplet_reid.batch_hard(x3, l3)
    terms = np.logaddexp(0.0, [0.0 - 1.0, 4.0 - 1.0, 4.0 - 5.0])  # anchor 0 has no positive
    np.testing.assert_allclose(got, np.mean(terms), rtol=1e-9)
    ref = rl.batch_hard_triplet_loss(x3, l3, soft=True)
    np.testing.assert_allclose(ref, np.mean(terms[1:]), rtol=1e-9)


def test_reid_defaults_are_soft_margin_and_euclidean(numpy_backend):
    rng = np.random.default_rng(2)
    x, labels = rng.normal(size=(6, 3)), np.array([0, 0, 1, 1, 2, 2])
    losses, _ = np_reid_batch_hard(x, labels, "soft", "euclidean")
    np.testing.assert_allclose(triplet_reid.batch_hard(x, labels), np.mean(losses), **VALUE)
    np.testing.assert_allclose(triplet_reid.batch_hard(x, labels, "NONE", reduction="none"),
                               np_reid_batch_hard(x, labels, "none", "euclidean")[0], **VALUE)


# --------------------------------------------------------------------------
# hadsell


@given(st.integers(0, 2**16), st.sampled_from([0.0, 0.2, 1.0, 3.0]),
       st.sampled_from(["int", "bool", "float"]))
def test_hadsell_matches_the_answer(backend, seed, margin, kind):
    rng = np.random.default_rng(seed)
    left, right = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)) * 0.7
    label = rng.integers(0, 2, size=6)
    label = {"int": label, "bool": label.astype(bool), "float": label * 0.5}[kind]
    value, pullback = rl.vjp(hadsell.contrastive_loss, *moved(backend, left, right, label), margin)
    loss, ga, gb, gy = np_hadsell(left, right, label, margin)
    assert_close(value, loss, backend, dtype="float64", **VALUE)
    g_l, g_r, g_y, g_m = pullback(1.0)
    assert g_m is None
    assert_close(g_l, ga, backend, dtype="float64", **GRAD)
    assert_close(g_r, gb, backend, dtype="float64", **GRAD)
    if kind == "float":
        assert_close(g_y, gy, backend, dtype="float64", **GRAD)
    else:
        assert g_y is None


def test_hadsell_is_half_the_reference_with_the_label_flipped(numpy_backend):
    """Documented difference: ½, label 1 = dissimilar, margin default 0.2."""
    rng = np.random.default_rng(4)
    left, right = rng.normal(size=(5, 2)) * 0.1, rng.normal(size=(5, 2)) * 0.1
    label = np.array([1, 0, 1, 1, 0])
    got = hadsell.contrastive_loss(left, right, label)
    np.testing.assert_allclose(got, 0.5 * rl.contrastive_loss(left, right, label == 0,
                                                              margin=0.2), **VALUE)
    assert not np.isclose(got, rl.contrastive_loss(left, right, label == 1, margin=0.2))


@pytest.mark.parametrize("label", [0, 1])
def test_hadsell_nan_gradient_at_zero_distance(backend, label):
    left = np.array([[1.0, 1.0], [0.0, 0.0]])
    right = np.array([[1.0, 1.0], [0.1, 0.0]])
    labels = np.array([label, 1])
    _, (gl, gr, _) = rl.value_and_grad(hadsell.contrastive_loss,
                                       *moved(backend, left, right, labels))
    assert np.all(np.isnan(to_numpy(gl)[0])) and np.all(np.isnan(to_numpy(gr)[0]))
    assert np.all(np.isfinite(to_numpy(gl)[1]))
    _, (gl, _, _) = rl.value_and_grad(hadsell.contrastive_loss,
                                      *moved(backend, left, right, labels), reproduce_nan=False)
    _, (ref, _, _) = rl.value_and_grad(rl.contrastive_loss, left, right, labels == 0,
                                       margin=0.2)
    assert_close(gl, 0.5 * ref, backend, dtype="float64", **GRAD)


# --------------------------------------------------------------------------
# shared conventions


ALL = [
    ("tfa.semihard", lambda y, x: tfa.triplet_semihard_loss(y, x)),
    ("tfa.hard", lambda y, x: tfa.triplet_hard_loss(y, x)),
    ("contrib.semihard", lambda y, x: tf_contrib.triplet_semihard_loss(y, x)),
    ("omoindrot.all", lambda y, x: omoindrot.batch_all_triplet_loss(y, x, 0.5)[0]),
    ("omoindrot.hard", lambda y, x: omoindrot.batch_hard_triplet_loss(y, x, 0.5)),
    ("reid", lambda y, x: triplet_reid.batch_hard(x, y)),
]


@pytest.mark.parametrize("name,fn", ALL, ids=[a for a, _ in ALL])
def test_empty_batch_gives_zero(backend, name, fn):
    x = backend.asarray(np.zeros((0, 3)))
    y = backend.asarray(np.zeros((0,), dtype=np.int64))
    assert_close(fn(y, x), 0.0, backend, dtype="float64", atol=0)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_lower_precision_follows_the_input_dtype(dtype):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(6, 3))
    labels = np.array([0, 0, 1, 1, 2, 2])
    for name, fn in ALL:
        got = fn(labels, x.astype(dtype))
        assert got.dtype == np.dtype(dtype), name
        np.testing.assert_allclose(float(got), float(fn(labels, x)), rtol=5e-3 if dtype ==
                                   "float32" else 5e-2, atol=1e-3, err_msg=name)


def test_inputs_are_not_mutated(numpy_backend):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(5, 2))
    labels = np.array([0, 0, 1, 1, 1])
    before = x.copy(), labels.copy()
    for _, fn in ALL:
        fn(labels, x)
    rl.value_and_grad(tfa.triplet_semihard_loss, labels, x)
    rl.value_and_grad(omoindrot.batch_all_triplet_loss, labels, x, 0.5)
    np.testing.assert_array_equal(x, before[0])
    np.testing.assert_array_equal(labels, before[1])


# --------------------------------------------------------------------------
# bad input: one case each

X = np.zeros((3, 2))
Y = np.array([0, 1, 0])
BAD = [
    (lambda: tfa.triplet_semihard_loss(Y.astype(float), X), TypeError,
     r"^y_true: expected an integer dtype, got float64"),
    (lambda: tfa.triplet_semihard_loss(np.zeros((3, 2), dtype=np.int64), X), ValueError,
     r"^y_true: expected shape \(B,\) or \(B, 1\), got shape \(3, 2\)"),
    (lambda: tfa.triplet_semihard_loss(Y[:2], X), ValueError,
     r"^y_true: expected 3 entries \(one per row of y_pred\), got 2"),
    (lambda: tfa.triplet_semihard_loss(Y, X.astype(int)), TypeError,
     r"^y_pred: expected a real floating dtype, got int64"),
    (lambda: tfa.triplet_semihard_loss(Y, X[0]), ValueError,
     r"^y_pred: expected a 2-D array \(batch, dim\), got shape \(2,\)"),
    (lambda: tfa.triplet_semihard_loss(Y, X, distance_metric="L1"), ValueError,
     r"^distance_metric: expected one of 'L2', 'squared-L2', 'angular', got 'L1'"),
    (lambda: tfa.triplet_semihard_loss(Y, X, -1.0), ValueError,
     r"^margin: expected a finite number >= 0, got -1.0"),
    (lambda: tfa.triplet_semihard_loss(Y, X, reproduce_nan=1), TypeError,
     r"^reproduce_nan: expected a bool"),
    (lambda: tfa.triplet_hard_loss(Y, X, soft="yes"), TypeError, r"^soft: expected a bool"),
    (lambda: tfa.triplet_hard_loss(Y, np.full((3, 2), np.nan)), ValueError,
     r"^y_pred: expected finite values, got NaN or inf"),
    (lambda: tfa.contrastive_loss(Y[:, None], np.ones(3)), ValueError,
     r"^y_true: expected shape \(3,\) \(the shape of y_pred\), got \(3, 1\)"),
    (lambda: tfa.contrastive_loss(Y, np.ones(3, dtype=int)), TypeError,
     r"^y_pred: expected a real floating dtype, got int64"),
    (lambda: tfa.pairwise_distance(X, squared=None), TypeError, r"^squared: expected a bool"),
    (lambda: tf_contrib.contrastive_loss(Y, X, X[:2]), ValueError,
     r"^embeddings_positive: expected shape \(3, 2\) \(as embeddings_anchor\), got \(2, 2\)"),
    (lambda: tf_contrib.contrastive_loss(Y, X, X.astype(np.float32)), TypeError,
     r"^embeddings_positive: expected the dtype of embeddings_anchor \(float64\), got float32"),
    (lambda: tf_contrib.contrastive_loss(np.array([1j, 0, 0]), X, X), TypeError,
     r"^labels: expected an integer, boolean or floating dtype, got complex128"),
    (lambda: omoindrot.batch_all_triplet_loss(Y, X, "0.5"), TypeError,
     r"^margin: expected a real number, got str"),
    (lambda: omoindrot.batch_hard_triplet_loss(Y, X, 0.5, squared="no"), TypeError,
     r"^squared: expected a bool"),
    (lambda: triplet_reid.batch_hard(X, Y, "hard"), ValueError,
     r"^margin: expected a number >= 0, 'soft' or 'none', got 'hard'"),
    (lambda: triplet_reid.batch_hard(X, Y, metric="cosine"), ValueError,
     r"^metric: expected one of 'euclidean', 'sqeuclidean', 'cityblock', got 'cosine'"),
    (lambda: triplet_reid.batch_hard(X, Y, reduction="sum"), ValueError,
     r"^reduction: expected one of 'mean', 'none', got 'sum'"),
    (lambda: triplet_reid.batch_hard(X, Y.astype(float)), TypeError,
     r"^pids: expected an integer dtype, got float64"),
    (lambda: hadsell.contrastive_loss(X, X, Y[:2]), ValueError,
     r"^label: expected shape \(3,\) \(one per row of left_feature\), got \(2,\)"),
    (lambda: hadsell.contrastive_loss(X, X, Y, math.inf), ValueError,
     r"^margin: expected a finite number >= 0, got inf"),
]


@pytest.mark.parametrize("call,exc,message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_is_rejected_with_a_message(call, exc, message):
    with pytest.raises(exc, match=message):
        call()


def test_arrays_from_different_libraries_are_rejected():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"^y_true, y_pred: expected arrays from one library"):
        tfa.triplet_semihard_loss(torch.tensor(Y), X)
