"""contrastive_loss / contrastive_loss_all_pairs: values, gradients, conventions, errors.

Oracle: a brute-force loop over pairs in float64 NumPy, transcribed from the
definition (never the code under test). Gradients are checked against
central finite differences (float64, directional) and against torch autograd
through the same forward.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import (
    assert_close,
    directional_fd,
    embeddings,
    labeled_batch,
    to_numpy,
    tolerance,
    unit_directions,
)
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import refloss as rl

METRICS = ["euclidean", "sqeuclidean", "cosine"]
POWERS = [1, 2]
REDUCTIONS = ["none", "sum", "mean", "mean_nonzero"]
KINK = 1e-3  # finite differences stay this far from every kink

margins = st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0, 20.0])
pos_margins = st.sampled_from([0.0, 0.25, 1.0, 3.0])


# --------------------------------------------------------------------------
# oracle: loops over pairs, straight from the definition


def oracle_normalize(u: np.ndarray) -> np.ndarray:
    """u/‖u‖, with ‖u‖ taken after scaling by max|u_k| (so tiny rows do not
    underflow to "zero rows"); only an exactly zero row stays zero."""
    peak = float(np.max(np.abs(u))) if u.size else 0.0
    if peak == 0.0:
        return np.zeros_like(u)
    s = u / peak
    return s / math.sqrt(float(np.sum(s * s)))


def oracle_distance(u: np.ndarray, v: np.ndarray, metric: str, normalize: bool) -> float:
    if normalize:
        u, v = oracle_normalize(u), oracle_normalize(v)
    diff = u - v
    sq = float(np.sum(diff * diff))
    if metric == "euclidean":
        return math.sqrt(sq)
    if metric == "sqeuclidean":
        return sq
    if not np.any(u) or not np.any(v):  # a zero row has no direction: distance 1
        return 1.0
    w = oracle_normalize(u) - oracle_normalize(v)  # 1 − cos, written as ½‖û − v̂‖²
    return 0.5 * float(np.sum(w * w))


def oracle_term(d: float, same: bool, margin: float, pos_margin: float, power: int) -> float:
    hinge = max(d - pos_margin, 0.0) if same else max(margin - d, 0.0)
    return hinge**power


def oracle_reduce(terms: np.ndarray, reduction: str):
    if reduction == "none":
        return terms
    total = float(np.sum(terms)) if terms.size else 0.0
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / terms.size if terms.size else 0.0
    k = int(np.sum(terms > 0))
    return total / k if k else 0.0


def oracle_paired_terms(a, b, same, *, margin, pos_margin, power, metric, normalize):
    out = [
        oracle_term(oracle_distance(u, v, metric, normalize), bool(s), margin, pos_margin, power)
        for u, v, s in zip(a, b, same)
    ]
    return np.array(out, dtype=np.float64)


def oracle_all_pairs_terms(x, labels, *, margin, pos_margin, power, metric, normalize):
    out = []
    for i in range(x.shape[0]):
        for j in range(i + 1, x.shape[0]):
            d = oracle_distance(x[i], x[j], metric, normalize)
            out.append(oracle_term(d, labels[i] == labels[j], margin, pos_margin, power))
    return np.array(out, dtype=np.float64)


def pair_distances(a, b, metric, normalize):
    return np.array([oracle_distance(u, v, metric, normalize) for u, v in zip(a, b)])


def near_zero_hinges(d, same, margin, pos_margin):
    """Pairs whose hinge argument is within rounding of 0: a computed distance
    may put them on either side, so the "mean_nonzero" count is ill-posed."""
    d = np.asarray(d, dtype=np.float64)
    arg = np.where(same, d - pos_margin, margin - d)
    return np.abs(arg) <= 1e-9 * np.maximum(1.0, d)


def assert_mean_nonzero(got, terms, ambiguous, backend, **tol):
    """"mean_nonzero" where each ambiguous pair may or may not be counted."""
    total = float(np.sum(terms)) if terms.size else 0.0
    k0 = int(np.sum((terms > 0) & ~ambiguous))
    candidates = [total / k if k else 0.0 for k in range(k0, k0 + int(ambiguous.sum()) + 1)]
    value = float(to_numpy(got))
    best = min(candidates, key=lambda c: abs(c - value))
    assert_close(got, best, backend, dtype="float64", **tol)


def upper_pairs(n: int):
    """Row-major (i, j > i) index arrays."""
    i, j = np.triu_indices(n, k=1)
    return i, j


def assume_away_from_kinks(d, margin, pos_margin):
    d = np.asarray(d)
    if d.size:
        assume(np.min(d) > KINK)
        assume(np.min(np.abs(d - margin)) > KINK)
        assume(np.min(np.abs(d - pos_margin)) > KINK)


def assume_nonzero_rows(*arrays, metric, normalize):
    if metric == "cosine" or normalize:
        for arr in arrays:
            if arr.shape[0]:
                assume(np.linalg.norm(arr, axis=1).min() > 1e-2)


def cotangent(rng, value):
    return np.asarray(rng.normal(size=tuple(value.shape)))


# --------------------------------------------------------------------------
# strategies


@st.composite
def paired_arrays(draw, max_rows=6):
    """Hypothesis-drawn pairs: some identical, some nearly so, some far apart."""
    a = draw(embeddings(max_rows=max_rows, max_dim=4))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = rng.choice([0.0, 1e-8, 0.3, 1.0, 5.0], size=(a.shape[0], 1))
    b = a + rng.normal(size=a.shape) * scale
    same = draw(hnp.arrays(np.bool_, (a.shape[0],)))
    return a, b, same


@st.composite
def smooth_pairs(draw, max_rows=6):
    """Random normal pairs (rarely near a kink), with their options."""
    n = draw(st.integers(1, max_rows))
    dim = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([0.3, 1.0, 2.0]))
    a = rng.normal(size=(n, dim)) * scale
    b = a + rng.normal(size=(n, dim)) * scale
    same = draw(hnp.arrays(np.bool_, (n,)))
    margin = draw(st.sampled_from([0.5, 1.0, 2.0, 4.0]))
    pos_margin = draw(st.sampled_from([0.0, 0.25, 1.0]))
    return a, b, same, margin, pos_margin, rng


@st.composite
def smooth_batch(draw, min_rows=2, max_rows=7):
    n = draw(st.integers(min_rows, max_rows))
    dim = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([0.3, 1.0, 2.0]))
    x = rng.normal(size=(n, dim)) * scale
    c = draw(st.integers(1, 3))
    labels = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    margin = draw(st.sampled_from([0.5, 1.0, 2.0, 4.0]))
    pos_margin = draw(st.sampled_from([0.0, 0.25, 1.0]))
    return x, labels, margin, pos_margin, rng


# --------------------------------------------------------------------------
# values against the oracle


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("power", POWERS)
@pytest.mark.parametrize("normalize", [False, True])
@given(case=paired_arrays(), margin=margins, pos_margin=pos_margins)
def test_paired_value_matches_oracle(backend, metric, power, normalize, case, margin,
                                     pos_margin):
    a, b, same = case
    opts = dict(margin=margin, pos_margin=pos_margin, power=power, metric=metric,
                normalize=normalize)
    terms = oracle_paired_terms(a, b, same, **opts)
    ambiguous = near_zero_hinges(pair_distances(a, b, metric, normalize), same, margin,
                                 pos_margin)
    tol = dict(rtol=1e-9, atol=1e-12 * max(1.0, float(np.max(terms, initial=0.0))))
    for reduction in REDUCTIONS:
        got = rl.contrastive_loss(backend.asarray(a), backend.asarray(b), backend.asarray(same),
                                  reduction=reduction, **opts)
        if reduction == "mean_nonzero":
            assert_mean_nonzero(got, terms, ambiguous, backend, **tol)
        else:
            assert_close(got, oracle_reduce(terms, reduction), backend, dtype="float64", **tol)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("power", POWERS)
@pytest.mark.parametrize("normalize", [False, True])
@given(batch=labeled_batch(max_rows=7), margin=margins, pos_margin=pos_margins)
def test_all_pairs_value_matches_oracle(backend, metric, power, normalize, batch, margin,
                                        pos_margin):
    x, labels, _ = batch
    opts = dict(margin=margin, pos_margin=pos_margin, power=power, metric=metric,
                normalize=normalize)
    terms = oracle_all_pairs_terms(x, labels, **opts)
    i, j = upper_pairs(x.shape[0])
    ambiguous = near_zero_hinges(pair_distances(x[i], x[j], metric, normalize),
                                 labels[i] == labels[j], margin, pos_margin)
    # the matrix form agrees with the direct difference to ~1e-10 relative
    scale = max(1.0, margin, float(np.max(terms, initial=0.0)))
    tol = dict(rtol=1e-8, atol=1e-9 * scale)
    for reduction in REDUCTIONS:
        got = rl.contrastive_loss_all_pairs(backend.asarray(x), backend.asarray(labels),
                                            reduction=reduction, **opts)
        if reduction == "mean_nonzero":
            assert_mean_nonzero(got, terms, ambiguous, backend, **tol)
        else:
            assert_close(got, oracle_reduce(terms, reduction), backend, dtype="float64", **tol)


# --------------------------------------------------------------------------
# gradients: finite differences (float64)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("power", POWERS)
@pytest.mark.parametrize("normalize", [False, True])
@given(case=smooth_pairs())
def test_paired_gradient_matches_finite_differences(numpy_backend, metric, power, normalize,
                                                    case):
    a, b, same, margin, pos_margin, rng = case
    assume_nonzero_rows(a, b, metric=metric, normalize=normalize)
    assume_away_from_kinks(pair_distances(a, b, metric, normalize), margin, pos_margin)
    opts = dict(margin=margin, pos_margin=pos_margin, power=power, metric=metric,
                normalize=normalize)
    for reduction in REDUCTIONS:
        value, pullback = rl.vjp(rl.contrastive_loss, a, b, same, reduction=reduction, **opts)
        g = cotangent(rng, value)
        ga, gb, gsame = pullback(g)
        assert gsame is None

        def scalar(u, w, reduction=reduction, g=g):
            return np.sum(g * rl.contrastive_loss(u, w, same, reduction=reduction, **opts))

        for k, grad in ((0, ga), (1, gb)):
            for v in unit_directions(rng, a.shape, n=2):
                fd = directional_fd(scalar, [a, b], k, v)
                np.testing.assert_allclose(np.sum(grad * v), fd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("power", POWERS)
@pytest.mark.parametrize("normalize", [False, True])
@given(batch=smooth_batch())
def test_all_pairs_gradient_matches_finite_differences(numpy_backend, metric, power,
                                                       normalize, batch):
    x, labels, margin, pos_margin, rng = batch
    assume_nonzero_rows(x, metric=metric, normalize=normalize)
    i, j = upper_pairs(x.shape[0])
    assume_away_from_kinks(pair_distances(x[i], x[j], metric, normalize), margin, pos_margin)
    opts = dict(margin=margin, pos_margin=pos_margin, power=power, metric=metric,
                normalize=normalize)
    for reduction in REDUCTIONS:
        value, pullback = rl.vjp(rl.contrastive_loss_all_pairs, x, labels,
                                 reduction=reduction, **opts)
        g = cotangent(rng, value)
        gx, glabels = pullback(g)
        assert glabels is None

        def scalar(u, reduction=reduction, g=g):
            return np.sum(g * rl.contrastive_loss_all_pairs(u, labels, reduction=reduction,
                                                            **opts))

        for v in unit_directions(rng, x.shape, n=2):
            fd = directional_fd(scalar, [x], 0, v)
            np.testing.assert_allclose(np.sum(gx * v), fd, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------
# gradients: torch autograd through the same forward


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("power", POWERS)
@given(case=paired_arrays(), normalize=st.booleans(), margin=margins,
       pos_margin=pos_margins, seed=st.integers(0, 2**16))
def test_paired_gradient_matches_torch_autograd(metric, power, case, normalize, margin,
                                                pos_margin, seed):
    torch = pytest.importorskip("torch")
    a, b, same = case
    if metric == "cosine" or normalize:  # autograd's x/‖x‖ cancels badly for tiny norms
        assume(min(np.linalg.norm(a, axis=1).min(), np.linalg.norm(b, axis=1).min()) > 1e-3)
    if metric == "euclidean":
        # (u - v)/d at 0 < d ≲ 1e-6 amplifies the two orders of rounding past rtol
        dist = np.array([oracle_distance(u, v, metric, normalize) for u, v in zip(a, b)])
        assume(np.all((dist == 0) | (dist > 1e-6)))
    rng = np.random.default_rng(seed)
    opts = dict(margin=margin, pos_margin=pos_margin, power=power, metric=metric,
                normalize=normalize)
    for reduction in REDUCTIONS:
        ta, tb = (torch.tensor(v, requires_grad=True) for v in (a, b))
        out = rl.contrastive_loss(ta, tb, torch.tensor(same), reduction=reduction, **opts)
        value, pullback = rl.vjp(rl.contrastive_loss, a, b, same, reduction=reduction, **opts)
        g = cotangent(rng, value)
        out.backward(torch.tensor(g))
        ga, gb, _ = pullback(g)
        scale = max(1.0, float(np.abs(ga).max()))
        np.testing.assert_allclose(ga, ta.grad.numpy(), rtol=1e-9, atol=1e-12 * scale)
        np.testing.assert_allclose(gb, tb.grad.numpy(), rtol=1e-9, atol=1e-12 * scale)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("power", POWERS)
@given(batch=labeled_batch(min_rows=2, max_rows=7), normalize=st.booleans(), margin=margins,
       pos_margin=pos_margins, seed=st.integers(0, 2**16))
def test_all_pairs_gradient_matches_torch_autograd(metric, power, batch, normalize, margin,
                                                   pos_margin, seed):
    torch = pytest.importorskip("torch")
    x, labels, _ = batch
    if metric == "cosine" or normalize:
        assume(np.linalg.norm(x, axis=1).min() > 1e-3)
    rng = np.random.default_rng(seed)
    opts = dict(margin=margin, pos_margin=pos_margin, power=power, metric=metric,
                normalize=normalize)
    for reduction in REDUCTIONS:
        tx = torch.tensor(x, requires_grad=True)
        out = rl.contrastive_loss_all_pairs(tx, torch.tensor(labels), reduction=reduction,
                                            **opts)
        value, pullback = rl.vjp(rl.contrastive_loss_all_pairs, x, labels,
                                 reduction=reduction, **opts)
        g = cotangent(rng, value)
        out.backward(torch.tensor(g))
        gx, _ = pullback(g)
        scale = max(1.0, float(np.abs(gx).max()))
        np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-7, atol=1e-7 * scale)


# --------------------------------------------------------------------------
# every backend agrees with NumPy, value and gradient


@pytest.mark.parametrize("metric", METRICS)
def test_backends_agree_with_numpy(backend, metric):
    rng = np.random.default_rng(11)
    x = rng.normal(size=(7, 3))
    x[5] = x[1]  # duplicate row: the zero-distance convention
    labels = np.array([0, 1, 0, 2, 1, 1, 0])
    a, b = x[:5], rng.normal(size=(5, 3)) * 0.5 + x[:5]
    b[2] = a[2]
    same = np.array([True, False, False, True, False])
    for power in POWERS:
        for normalize in (False, True):
            opts = dict(margin=1.5, pos_margin=0.1, power=power, metric=metric,
                        normalize=normalize)
            for reduction in REDUCTIONS:
                ref_v, ref_pb = rl.vjp(rl.contrastive_loss, a, b, same,
                                       reduction=reduction, **opts)
                g = cotangent(rng, ref_v)
                v, pb = rl.vjp(rl.contrastive_loss, backend.asarray(a), backend.asarray(b),
                               backend.asarray(same), reduction=reduction, **opts)
                assert_close(v, ref_v, backend, dtype="float64")
                ga, gb, gs = pb(backend.asarray(g))
                ra, rb, _ = ref_pb(g)
                assert gs is None
                assert_close(ga, ra, backend, dtype="float64")
                assert_close(gb, rb, backend, dtype="float64")

                ref_v, ref_pb = rl.vjp(rl.contrastive_loss_all_pairs, x, labels,
                                       reduction=reduction, **opts)
                g = cotangent(rng, ref_v)
                v, pb = rl.vjp(rl.contrastive_loss_all_pairs, backend.asarray(x),
                               backend.asarray(labels), reduction=reduction, **opts)
                assert_close(v, ref_v, backend, dtype="float64")
                gx, gl = pb(backend.asarray(g))
                assert gl is None
                assert_close(gx, ref_pb(g)[0], backend, dtype="float64")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_all_pairs_runs_without_data_dependent_shapes(reduction):
    """The i<j indices of "none" and the masks are built from shapes alone."""
    strict = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 3))
    x[4] = x[0]
    labels = np.array([0, 1, 0, 1, 2, 0])
    ref_v, ref_pb = rl.vjp(rl.contrastive_loss_all_pairs, x, labels, reduction=reduction)
    g = cotangent(rng, ref_v)
    with strict.ArrayAPIStrictFlags(data_dependent_shapes=False, boolean_indexing=False):
        v, pb = rl.vjp(rl.contrastive_loss_all_pairs, strict.asarray(x),
                       strict.asarray(labels), reduction=reduction)
        (gx, _) = pb(strict.asarray(g))
    np.testing.assert_allclose(to_numpy(v), ref_v, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(to_numpy(gx), ref_pb(g)[0], rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------
# all_pairs = paired on the explicit pairs; permutation invariance


@pytest.mark.parametrize("metric", METRICS)
@given(batch=labeled_batch(max_rows=7), power=st.sampled_from(POWERS),
       normalize=st.booleans(), margin=margins, pos_margin=pos_margins,
       seed=st.integers(0, 2**16))
def test_all_pairs_equals_paired_on_explicit_pairs(numpy_backend, metric, batch, power,
                                                   normalize, margin, pos_margin, seed):
    x, labels, _ = batch
    i, j = upper_pairs(x.shape[0])
    same = labels[i] == labels[j]
    opts = dict(margin=margin, pos_margin=pos_margin, power=power, metric=metric,
                normalize=normalize)
    rng = np.random.default_rng(seed)
    scale = max(1.0, margin**power, float(np.max(oracle_all_pairs_terms(x, labels, **opts),
                                                 initial=0.0)))
    ambiguous = near_zero_hinges(pair_distances(x[i], x[j], metric, normalize), same, margin,
                                 pos_margin)
    # through a normalisation the gradient scales as 1/‖x‖, and so does its
    # rounding error (the matrix form projects, the paired form differences):
    # compare gradients only where that scale is moderate (zero rows are exact)
    peak = np.max(np.abs(x), axis=1, initial=0.0)  # ‖x‖ itself may underflow
    well_conditioned = not (metric == "cosine" or normalize) or not np.any(
        (peak > 0) & (peak < 1e-3))
    for reduction in REDUCTIONS:
        pv, ppb = rl.vjp(rl.contrastive_loss, x[i], x[j], same, reduction=reduction, **opts)
        av, apb = rl.vjp(rl.contrastive_loss_all_pairs, x, labels, reduction=reduction,
                         **opts)
        if reduction == "mean_nonzero" and np.any(ambiguous):
            continue  # the count is ill-posed (see near_zero_hinges)
        np.testing.assert_allclose(av, pv, rtol=1e-8, atol=1e-9 * scale)
        if not well_conditioned:
            continue
        g = cotangent(rng, pv)
        ga, gb, _ = ppb(g)
        expected = np.zeros_like(x)
        np.add.at(expected, i, ga)
        np.add.at(expected, j, gb)
        (gx, _) = apb(g)
        gscale = max(1.0, float(np.abs(expected).max(initial=0.0)))
        np.testing.assert_allclose(gx, expected, rtol=1e-6, atol=1e-7 * gscale)


@pytest.mark.parametrize("metric", METRICS)
@given(batch=labeled_batch(max_rows=7), power=st.sampled_from(POWERS),
       normalize=st.booleans(), margin=margins, seed=st.integers(0, 2**16))
def test_all_pairs_is_invariant_to_batch_permutation(numpy_backend, metric, batch, power,
                                                     normalize, margin, seed):
    x, labels, _ = batch
    perm = np.random.default_rng(seed).permutation(x.shape[0])
    opts = dict(margin=margin, power=power, metric=metric, normalize=normalize)
    scale = max(1.0, margin**power, float(np.max(oracle_all_pairs_terms(
        x, labels, pos_margin=0.0, **opts), initial=0.0)))
    i, j = upper_pairs(x.shape[0])
    ambiguous = near_zero_hinges(pair_distances(x[i], x[j], metric, normalize),
                                 labels[i] == labels[j], margin, 0.0)
    for reduction in ("sum", "mean", "mean_nonzero"):
        if reduction == "mean_nonzero" and np.any(ambiguous):
            continue  # the count is ill-posed (see near_zero_hinges)
        v = rl.contrastive_loss_all_pairs(x, labels, reduction=reduction, **opts)
        vp = rl.contrastive_loss_all_pairs(x[perm], labels[perm], reduction=reduction, **opts)
        np.testing.assert_allclose(vp, v, rtol=1e-8, atol=1e-9 * scale)


# --------------------------------------------------------------------------
# conventions, by hand-computed values


def _grads(backend, fn, *args, g=1.0, **kw):
    value, pullback = rl.vjp(fn, *[backend.asarray(a) for a in args], **kw)
    return value, pullback(g)


def test_hand_computed_values_and_gradients(backend):
    a, b = np.array([[0.0, 0.0]]), np.array([[3.0, 4.0]])  # d = 5
    yes, no = np.array([True]), np.array([False])
    cases = [
        # (same, options, value, grad wrt a)
        (yes, {}, 25.0, [-6.0, -8.0]),  # d², ∂ = 2(a − b)
        (yes, {"power": 1}, 5.0, [-0.6, -0.8]),  # d, ∂ = (a − b)/d
        (yes, {"pos_margin": 1.0}, 16.0, [-4.8, -6.4]),  # (d − 1)², 2·4·(a − b)/5
        (no, {"margin": 6.0}, 1.0, [1.2, 1.6]),  # (6 − d)², −2·1·(a − b)/5
        (no, {"margin": 6.0, "power": 1}, 1.0, [0.6, 0.8]),
        (no, {"margin": 4.0}, 0.0, [0.0, 0.0]),  # beyond the margin
        (yes, {"metric": "sqeuclidean", "power": 1}, 25.0, [-6.0, -8.0]),  # 2(a − b)
    ]
    for same, opts, value, ga in cases:
        v, (gra, grb, gs) = _grads(backend, rl.contrastive_loss, a, b, same,
                                   reduction="sum", **opts)
        assert_close(v, value, backend, dtype="float64", rtol=1e-15, atol=1e-15)
        assert_close(gra, [ga], backend, dtype="float64", rtol=1e-15, atol=1e-15)
        assert_close(grb, [[-ga[0], -ga[1]]], backend, dtype="float64", rtol=1e-15,
                     atol=1e-15)
        assert gs is None
    # cosine: orthogonal unit rows are at distance 1
    v = rl.contrastive_loss(backend.asarray(np.array([[2.0, 0.0]])),
                            backend.asarray(np.array([[0.0, 3.0]])), backend.asarray(yes),
                            metric="cosine")
    assert_close(v, 1.0, backend, dtype="float64", rtol=1e-15)


@pytest.mark.parametrize("power", POWERS)
@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean"])
def test_hinge_exactly_at_zero_has_zero_gradient(backend, power, metric):
    """relu's subgradient at 0 (torch's clamp_min would pass 1)."""
    a = np.array([[0.0, 0.0], [0.0, 0.0]])
    b = np.array([[3.0, 4.0], [3.0, 4.0]])
    same = np.array([False, True])
    m = 5.0 if metric == "euclidean" else 25.0  # exactly d
    for reduction in ("sum", "mean", "mean_nonzero"):
        v, (ga, gb, _) = _grads(backend, rl.contrastive_loss, a, b, same, margin=m,
                                pos_margin=m, power=power, metric=metric, reduction=reduction)
        assert_close(v, 0.0, backend, dtype="float64", rtol=0, atol=0)
        assert_close(ga, np.zeros((2, 2)), backend, dtype="float64", rtol=0, atol=0)
        assert_close(gb, np.zeros((2, 2)), backend, dtype="float64", rtol=0, atol=0)


@pytest.mark.parametrize("power", POWERS)
def test_identical_pair_under_euclidean_has_finite_zero_gradient(backend, power):
    a = np.array([[1.0, 2.0], [1.0, 2.0]])
    same = np.array([True, False])
    v, (ga, gb, _) = _grads(backend, rl.contrastive_loss, a, a.copy(), same, margin=1.5,
                            power=power, reduction="none", g=backend.asarray(np.ones(2)))
    assert_close(v, [0.0, 1.5**power], backend, dtype="float64", rtol=0, atol=0)
    assert_close(ga, np.zeros((2, 2)), backend, rtol=0, atol=0)
    assert_close(gb, np.zeros((2, 2)), backend, rtol=0, atol=0)
    # the same inside a batch: pair (0, 1) is a duplicate negative (d = 0)
    x = np.array([[1.0, 2.0], [1.0, 2.0], [4.0, 6.0]])
    labels = np.array([0, 1, 0])
    v, (gx, gl) = _grads(backend, rl.contrastive_loss_all_pairs, x, labels, power=power,
                         reduction="sum")
    # (0,1): negative at d = 0 → 1; (0,2): positive at d = 5 → 5^p; (1,2): beyond margin
    assert_close(v, 1.0 + 5.0**power, backend, dtype="float64", rtol=1e-14)
    dd = 2.0 * 5.0 if power == 2 else 1.0  # ∂l/∂d of the (0, 2) pair
    expected = np.array([[-0.6, -0.8], [0.0, 0.0], [0.6, 0.8]]) * dd
    assert_close(gx, expected, backend, dtype="float64", rtol=1e-14, atol=1e-14)
    assert gl is None


def test_mean_nonzero_does_not_count_a_term_exactly_at_the_margin(backend):
    a = np.zeros((3, 2))
    b = np.array([[3.0, 4.0], [0.0, 1.0], [0.0, 3.0]])  # d = 5, 1, 3
    same = np.array([False, False, False])
    v = rl.contrastive_loss(backend.asarray(a), backend.asarray(b), backend.asarray(same),
                            margin=5.0, power=1, reduction="mean_nonzero")
    assert_close(v, (4.0 + 2.0) / 2, backend, dtype="float64", rtol=1e-15)


# --------------------------------------------------------------------------
# edge cases


def test_empty_batch_gives_zero(backend):
    a = np.zeros((0, 3))
    same = np.zeros((0,), dtype=bool)
    for reduction in REDUCTIONS:
        shape = (0,) if reduction == "none" else ()
        g = backend.asarray(np.zeros(shape))
        v, (ga, gb, _) = _grads(backend, rl.contrastive_loss, a, a, same, reduction=reduction,
                                g=g)
        assert_close(v, np.zeros(shape), backend, dtype="float64", atol=0)
        assert_close(ga, np.zeros((0, 3)), backend, dtype="float64")
        assert_close(gb, np.zeros((0, 3)), backend, dtype="float64")


@pytest.mark.parametrize("rows", [0, 1])
def test_all_pairs_with_fewer_than_two_rows_gives_zero(backend, rows):
    x = np.ones((rows, 3))
    labels = np.zeros((rows,), dtype=np.int64)
    for reduction in REDUCTIONS:
        shape = (0,) if reduction == "none" else ()
        v, (gx, _) = _grads(backend, rl.contrastive_loss_all_pairs, x, labels,
                            reduction=reduction, g=backend.asarray(np.ones(shape)))
        assert_close(v, np.zeros(shape), backend, dtype="float64", atol=0)
        assert_close(gx, np.zeros((rows, 3)), backend, dtype="float64", atol=0)


def test_single_class_uses_positive_pairs_only(backend):
    x = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])  # d01 = 5, d02 = 10, d12 = 5
    labels = np.array([7, 7, 7])
    expected = {"none": [25.0, 100.0, 25.0], "sum": 150.0, "mean": 50.0,
                "mean_nonzero": 50.0}
    for reduction, value in expected.items():
        v = rl.contrastive_loss_all_pairs(backend.asarray(x), backend.asarray(labels),
                                          margin=100.0, reduction=reduction)
        assert_close(v, value, backend, dtype="float64", rtol=1e-14)


def test_all_labels_distinct_uses_negative_pairs_only(backend):
    x = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    labels = np.array([0, 1, 2])
    expected = {"none": [1.0, 0.0, 1.0], "sum": 2.0, "mean": 2.0 / 3.0,
                "mean_nonzero": 1.0}
    for reduction, value in expected.items():
        v = rl.contrastive_loss_all_pairs(backend.asarray(x), backend.asarray(labels),
                                          margin=6.0, pos_margin=100.0, reduction=reduction)
        assert_close(v, value, backend, dtype="float64", rtol=1e-14)


def test_float32_in_float32_out(backend):
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    same = np.array([True, False, True, False, False])
    x, labels = a, np.array([0, 1, 0, 1, 1])
    f32 = backend.float_dtype("float32")
    for metric in METRICS:
        opts = dict(margin=2.0, metric=metric)
        v, (ga, gb, _) = _grads(backend, rl.contrastive_loss, a, b, same, **opts)
        v32, pb = rl.vjp(rl.contrastive_loss, backend.asarray(a, f32),
                         backend.asarray(b, f32), backend.asarray(same), **opts)
        ga32, gb32, _ = pb(1.0)
        assert_close(v32, to_numpy(v), backend, dtype="float32", **tolerance("float32"))
        assert_close(ga32, to_numpy(ga), backend, dtype="float32", **tolerance("float32"))
        assert_close(gb32, to_numpy(gb), backend, dtype="float32", **tolerance("float32"))
        v, (gx, _) = _grads(backend, rl.contrastive_loss_all_pairs, x, labels, **opts)
        v32, pb = rl.vjp(rl.contrastive_loss_all_pairs, backend.asarray(x, f32),
                         backend.asarray(labels), **opts)
        assert_close(v32, to_numpy(v), backend, dtype="float32", **tolerance("float32"))
        assert_close(pb(1.0)[0], to_numpy(gx), backend, dtype="float32",
                     **tolerance("float32"))


def test_float16_is_computed_in_float32_and_cast_back(backend):
    if not hasattr(backend.xp, "float16"):
        pytest.skip("no float16 in this namespace")
    a = np.array([[0.0, 0.0], [0.0, 0.0]])
    b = np.array([[3.0, 4.0], [0.6, 0.8]])
    same = np.array([True, False])
    f16 = backend.xp.float16
    v = rl.contrastive_loss(backend.asarray(a, f16), backend.asarray(b, f16),
                            backend.asarray(same), reduction="none")
    assert v.dtype == f16
    np.testing.assert_allclose(to_numpy(v).astype(np.float64), [25.0, 0.0], atol=0)


# --------------------------------------------------------------------------
# bad input: TypeError / ValueError naming the argument


def _paired_call(backend, *, a=None, b=None, same=None, **kw):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 2)) if a is None else a
    b = rng.normal(size=(3, 2)) if b is None else b
    same = np.array([True, False, True]) if same is None else same
    return rl.contrastive_loss(backend.asarray(a), backend.asarray(b), backend.asarray(same),
                               **kw)


def _all_pairs_call(backend, *, x=None, labels=None, **kw):
    x = np.random.default_rng(0).normal(size=(3, 2)) if x is None else x
    labels = np.array([0, 1, 0]) if labels is None else labels
    return rl.contrastive_loss_all_pairs(backend.asarray(x), backend.asarray(labels), **kw)


def test_same_must_be_boolean(backend):
    for bad in (np.array([1, 0, 1]), np.array([1.0, 0.0, 1.0])):
        with pytest.raises(TypeError, match=r"^same: expected a boolean .*opposite"):
            _paired_call(backend, same=bad)


def test_same_must_be_1d_with_one_entry_per_pair(backend):
    with pytest.raises(ValueError, match=r"^same: expected 3 entries"):
        _paired_call(backend, same=np.array([True, False]))
    with pytest.raises(ValueError, match=r"^same: expected a 1-D array"):
        _paired_call(backend, same=np.array([[True, False, True]]))


def test_power_must_be_1_or_2(backend):
    with pytest.raises(ValueError, match=r"^power:"):
        _paired_call(backend, power=3)
    with pytest.raises(ValueError, match=r"^power:"):
        _all_pairs_call(backend, power=0)
    for bad in (2.0, True, "2"):
        with pytest.raises(TypeError, match=r"^power:"):
            _paired_call(backend, power=bad)


def test_margins_must_be_non_negative_reals(backend):
    for name in ("margin", "pos_margin"):
        with pytest.raises(ValueError, match=rf"^{name}:"):
            _paired_call(backend, **{name: -0.5})
        with pytest.raises(ValueError, match=rf"^{name}:"):
            _all_pairs_call(backend, **{name: float("nan")})
        with pytest.raises(TypeError, match=rf"^{name}:"):
            _paired_call(backend, **{name: "1"})


def test_unknown_metric_or_reduction(backend):
    with pytest.raises(ValueError, match=r"^metric:"):
        _paired_call(backend, metric="manhattan")
    with pytest.raises(ValueError, match=r"^metric:"):
        _all_pairs_call(backend, metric="L2")
    with pytest.raises(ValueError, match=r"^reduction:"):
        _paired_call(backend, reduction="avg")
    with pytest.raises(ValueError, match=r"^reduction:"):
        _all_pairs_call(backend, reduction="max")


def test_normalize_must_be_a_bool(backend):
    with pytest.raises(TypeError, match=r"^normalize:"):
        _paired_call(backend, normalize="yes")
    with pytest.raises(TypeError, match=r"^normalize:"):
        _all_pairs_call(backend, normalize=1)


def test_mismatched_shapes(backend):
    with pytest.raises(ValueError, match=r"^b: expected 3 rows"):
        _paired_call(backend, b=np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"^b: expected 2 columns"):
        _paired_call(backend, b=np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"^a: expected a 2-D array"):
        _paired_call(backend, a=np.zeros(3))
    with pytest.raises(ValueError, match=r"^labels: expected 3 entries"):
        _all_pairs_call(backend, labels=np.array([0, 1]))


def test_wrong_dtypes(backend):
    with pytest.raises(TypeError, match=r"^a: expected a real floating"):
        _paired_call(backend, a=np.ones((3, 2), dtype=np.int64))
    with pytest.raises(TypeError, match=r"^labels: expected an integer"):
        _all_pairs_call(backend, labels=np.array([0.0, 1.0, 0.0]))
    with pytest.raises(TypeError, match=r"^b: expected the dtype of a"):
        rl.contrastive_loss(backend.asarray(np.zeros((3, 2))),
                            backend.asarray(np.zeros((3, 2)), backend.float_dtype("float32")),
                            backend.asarray(np.array([True, True, False])))


def test_nan_or_inf_in_embeddings(backend):
    bad = np.zeros((3, 2))
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"^a: expected finite"):
        _paired_call(backend, a=bad)
    with pytest.raises(ValueError, match=r"^x: expected finite"):
        _all_pairs_call(backend, x=bad)
    bad[1, 0] = np.inf
    with pytest.raises(ValueError, match=r"^b: expected finite"):
        _paired_call(backend, b=bad)


def test_arrays_from_different_libraries():
    torch = pytest.importorskip("torch")
    a = np.zeros((2, 2))
    with pytest.raises(TypeError, match=r"^a, b, same: expected arrays from one library"):
        rl.contrastive_loss(a, a, torch.tensor([True, False]))
    with pytest.raises(TypeError, match=r"^same: expected an array"):
        rl.contrastive_loss(a, a, [True, False])


def test_all_pairs_none_in_many_row_blocks_matches_the_explicit_pairs(monkeypatch):
    # blocks of 16 entries: the pair packing and its inverse run over many
    # row blocks, as they do at large B with the real sizes
    import refloss.contrastive as contrastive

    monkeypatch.setattr(contrastive, "_PAIR_BLOCK_FLOOR", 16)
    monkeypatch.setattr(contrastive, "_PAIR_BLOCKS", 5)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((13, 3))
    labels = rng.integers(0, 3, 13)
    i, j = np.triu_indices(13, k=1)
    g = rng.standard_normal(i.shape[0])
    expected = oracle_all_pairs_terms(x, labels, margin=1.0, pos_margin=0.0, power=2,
                                      metric="euclidean", normalize=False)
    value, pullback = rl.vjp(rl.contrastive_loss_all_pairs, x, labels, reduction="none")
    np.testing.assert_allclose(np.asarray(value), expected, rtol=1e-10, atol=1e-12)
    # the same pairs listed explicitly: their VJP, accumulated onto the rows
    _, paired = rl.vjp(rl.contrastive_loss, x[i], x[j], labels[i] == labels[j],
                       reduction="none")
    ga, gb = paired(g)[:2]
    expected_grad = np.zeros_like(x)
    np.add.at(expected_grad, i, ga)
    np.add.at(expected_grad, j, gb)
    np.testing.assert_allclose(pullback(g)[0], expected_grad, rtol=1e-9, atol=1e-12)
