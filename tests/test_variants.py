"""The variants users write, as references: value and gradient of each
against a brute-force loop (``tests/helpers.py`` oracles, sharing no code with
refloss) on every backend, against central finite differences (float64,
away from every kink), hand-computed tie cases, bad input, and the torch /
JAX adapters.

* contrastive losses with ``scale`` (``scale=0.5`` is Hadsell's ½ form);
* batch-all over unordered anchor-positive pairs (``pairs="unordered"``);
* batch-hard with the anchor as its own positive (``anchor_as_positive=True``);
* all positives, hardest negative (``hardest_negative_triplet_loss`` and
  ``mine_hardest_negative``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest
from helpers import (
    assert_close,
    continuous_batches,
    directional_fd,
    kink_gap,
    nonzero_tol,
    o_block_triplets,
    o_contrastive,
    o_dist,
    o_matrix,
    o_normalize,
    o_sets,
    o_triplet_loss,
    o_valid_triplets,
    to_numpy,
    tolerance,
    unit_directions,
)
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import refloss as rl

METRICS = ["euclidean", "sqeuclidean", "cosine"]
REDUCTIONS = ["none", "sum", "mean", "mean_nonzero"]
GRAD_TOL = {"rtol": 1e-8, "atol": 1e-10}
FD_TOL = {"rtol": 1e-5, "atol": 1e-6}
KINK = 1e-3  # finite differences stay this far from every kink

# no subnormals: XLA on CPU flushes them to zero
margins = st.one_of(st.sampled_from([0.0, 0.2, 1.0]),
                    st.floats(0.0, 2.0, allow_subnormal=False))
scales = st.one_of(st.sampled_from([0.5, 1.0, 2.0]),
                   st.floats(1e-3, 10.0, allow_subnormal=False))


def skip_eager_jax(backend):
    """Eager JAX compiles every small op once per shape and option (seconds
    per property here); JAX runs each variant once, compiled, through the
    adapter tests below instead."""
    if backend.name == "jax":
        pytest.skip("eager JAX: covered by the adapter tests (compile time)")


def upstream(rng, shape):
    return rng.normal(size=shape) if shape else 1.0


def pull(backend, fn, args, g, **kw):
    """(value, grads) of ``fn`` through ``refloss.vjp`` with upstream ``g``."""
    value, pullback = rl.vjp(fn, *args, **kw)
    if isinstance(g, np.ndarray) and backend is not None:
        g = backend.asarray(g)
    return value, pullback(g)


@st.composite
def pairs_case(draw, max_rows=6, max_dim=3):
    n = draw(st.integers(0, max_rows))
    dim = draw(st.integers(1, max_dim))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    same = np.asarray(draw(hnp.arrays(np.bool_, (n,))))
    return rng.normal(size=(n, dim)), rng.normal(size=(n, dim)), same


# a labeled batch with continuous coordinates (ties only where D = 1 cosine
# makes them: distances 0 or 2)
batches = functools.partial(continuous_batches, max_rows=7, max_dim=3, max_classes=3)


# --------------------------------------------------------------------------
# contrastive with a scale factor


def all_pairs_oracle(x, labels, *, g=None, reduction="mean", **kw):
    """contrastive_loss_all_pairs by the paired oracle on the explicit i < j pairs."""
    i, j = np.triu_indices(x.shape[0], k=1)
    same = labels[i] == labels[j]
    value, (ga, gb) = o_contrastive(x[i], x[j], same, g=g, reduction=reduction, **kw)
    gx = np.zeros_like(x)
    np.add.at(gx, i, ga)
    np.add.at(gx, j, gb)
    return value, gx


@given(data=st.data(), metric=st.sampled_from(METRICS), margin=margins,
       pos_margin=st.sampled_from([0.0, 0.3]), power=st.sampled_from([1, 2]),
       normalize=st.booleans(), reduction=st.sampled_from(REDUCTIONS), scale=scales,
       seed=st.integers(0, 2**16))
def test_contrastive_scale_matches_brute_force(backend, metric, data, margin, pos_margin,
                                               power, normalize, reduction, scale, seed):
    skip_eager_jax(backend)
    a, b, same = data.draw(pairs_case())
    kw = {"margin": margin, "pos_margin": pos_margin, "power": power, "metric": metric,
          "normalize": normalize, "reduction": reduction, "scale": scale}
    g = upstream(np.random.default_rng(seed), (a.shape[0],) if reduction == "none" else ())
    expected, (ea, eb) = o_contrastive(a, b, same, g=g, **kw)
    value, (ga, gb, gs) = pull(backend, rl.contrastive_loss,
                               (backend.asarray(a), backend.asarray(b), backend.asarray(same)),
                               g, **kw)
    assert gs is None
    assert_close(value, expected, backend, dtype="float64")
    assert_close(ga, ea, backend, dtype="float64", **GRAD_TOL)
    assert_close(gb, eb, backend, dtype="float64", **GRAD_TOL)


@given(data=st.data(), metric=st.sampled_from(METRICS), margin=margins,
       power=st.sampled_from([1, 2]), normalize=st.booleans(),
       reduction=st.sampled_from(REDUCTIONS), scale=scales, seed=st.integers(0, 2**16))
def test_contrastive_all_pairs_scale_matches_brute_force(backend, metric, data, margin, power,
                                                         normalize, reduction, scale, seed):
    skip_eager_jax(backend)
    x, labels = data.draw(batches(min_rows=0))
    n_pairs = x.shape[0] * (x.shape[0] - 1) // 2
    kw = {"margin": margin, "power": power, "metric": metric, "normalize": normalize,
          "reduction": reduction, "scale": scale}
    g = upstream(np.random.default_rng(seed), (n_pairs,) if reduction == "none" else ())
    expected, egx = all_pairs_oracle(x, labels, g=g, **kw)
    value, (gx, gl) = pull(backend, rl.contrastive_loss_all_pairs,
                           (backend.asarray(x), backend.asarray(labels)), g, **kw)
    assert gl is None
    assert_close(value, expected, backend, dtype="float64")
    assert_close(gx, egx, backend, dtype="float64", **GRAD_TOL)


@given(batch=batches(min_rows=2, max_rows=5), margin=st.sampled_from([0.5, 1.0, 3.0]),
       power=st.sampled_from([1, 2]), metric=st.sampled_from(METRICS), scale=scales,
       seed=st.integers(0, 2**16))
def test_contrastive_scale_gradient_matches_finite_differences(batch, margin, power, metric,
                                                               scale, seed):
    x, labels = batch
    i, j = np.triu_indices(x.shape[0], k=1)
    d = np.array([np.linalg.norm(x[p] - x[q]) for p, q in zip(i, j)])
    dm = d**2 if metric == "sqeuclidean" else d
    assume(d.min() > KINK and np.abs(dm - margin).min() > KINK)
    if metric == "cosine":
        assume(np.linalg.norm(x, axis=1).min() > 1e-2 and x.shape[1] > 1)
        cos = np.array([1 - x[p] @ x[q] / np.linalg.norm(x[p]) / np.linalg.norm(x[q])
                        for p, q in zip(i, j)])
        assume(np.abs(cos - margin).min() > KINK)
    kw = {"margin": margin, "power": power, "metric": metric, "scale": scale,
          "reduction": "sum"}
    _, (gx, _) = rl.value_and_grad(rl.contrastive_loss_all_pairs, x, labels, **kw)

    def scalar(z):
        return float(rl.contrastive_loss_all_pairs(z, labels, **kw))

    for v in unit_directions(np.random.default_rng(seed), x.shape, n=2):
        np.testing.assert_allclose(np.sum(gx * v), directional_fd(scalar, [x], 0, v), **FD_TOL)


def test_contrastive_half_is_hadsell_by_hand(backend):
    # d = 0.5 for both pairs, margin 1: ½·d² = 0.125 (similar), ½·(1 − d)² = 0.125
    skip_eager_jax(backend)
    a = backend.asarray(np.zeros((2, 2)))
    b = backend.asarray(np.array([[0.3, 0.4], [0.3, 0.4]]))
    same = backend.asarray(np.array([True, False]))
    terms = rl.contrastive_loss(a, b, same, reduction="none", scale=0.5)
    assert_close(terms, [0.125, 0.125], backend, dtype="float64")
    _, (ga, gb, _) = rl.value_and_grad(rl.contrastive_loss, a, b, same, reduction="sum",
                                       scale=0.5)
    # similar: ∂(½d²)/∂a = a − b; dissimilar: −(1 − d)·(a − b)/d = −(a − b)
    assert_close(ga, [[-0.3, -0.4], [0.3, 0.4]], backend, dtype="float64")
    assert_close(gb, [[0.3, 0.4], [-0.3, -0.4]], backend, dtype="float64")


def test_contrastive_mean_nonzero_counts_the_same_terms_at_any_scale(numpy_backend):
    x = np.array([[0.0, 0.0], [0.6, 0.8], [0.0, -0.5], [3.0, 3.0]])
    labels = np.array([0, 0, 1, 1])
    one = rl.contrastive_loss_all_pairs(x, labels, reduction="mean_nonzero")
    half = rl.contrastive_loss_all_pairs(x, labels, reduction="mean_nonzero", scale=0.5)
    np.testing.assert_allclose(half, 0.5 * one, rtol=1e-15)


@pytest.mark.parametrize("fn", ["contrastive_loss", "contrastive_loss_all_pairs"])
@pytest.mark.parametrize(("scale", "error"), [
    (0.0, ValueError), (-0.5, ValueError), (float("inf"), ValueError),
    (float("nan"), ValueError), ("0.5", TypeError), (True, TypeError), (None, TypeError),
])
def test_contrastive_scale_must_be_a_finite_positive_number(numpy_backend, fn, scale, error):
    x = np.zeros((2, 2))
    args = (x, x, np.array([True, False])) if fn == "contrastive_loss" else (x, np.array([0, 1]))
    with pytest.raises(error, match=r"^scale: expected a (real number|finite number > 0), got"):
        getattr(rl, fn)(*args, scale=scale)


# --------------------------------------------------------------------------
# batch-all over unordered anchor-positive pairs


def unordered_triplets(labels):
    """Every (slot, a, p, n) with a < p, y_p = y_a, y_n != y_a."""
    out = []
    for a in range(len(labels)):
        pos, neg = o_sets(labels, a)
        out += [((a, p), a, p, n) for p in pos if p > a for n in neg]
    return out


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_batch_all_unordered_wide_classes_match_brute_force(numpy_backend, reduction):
    # classes wider than the positive table's loop width (8): the row-search path
    rng = np.random.default_rng(11)
    x = rng.normal(size=(22, 3))
    labels = np.array([0] * 12 + [1] * 10)
    g = upstream(rng, (22, 22) if reduction == "none" else ())
    kw = {"margin": 0.8, "metric": "euclidean", "soft": False, "normalize": False,
          "reduction": reduction}
    expected, egx = o_triplet_loss(x, unordered_triplets(labels), (22, 22), g=g, **kw)
    value, (gx, _) = pull(numpy_backend, rl.batch_all_triplet_loss, (x, labels), g,
                          pairs="unordered", **kw)
    assert_close(value, expected, numpy_backend, dtype="float64")
    assert_close(gx, egx, numpy_backend, dtype="float64", **GRAD_TOL)


def test_batch_all_unordered_by_hand(backend):
    # x = 0, 1, 2.5 on a line, labels 0 0 1, margin 2: ordered triplets
    # (0,1,2): 1 − 2.5 + 2 = 0.5 and (1,0,2): 1 − 1.5 + 2 = 1.5; unordered keeps (0,1,2)
    skip_eager_jax(backend)
    x = backend.asarray(np.array([[0.0], [1.0], [2.5]]))
    labels = backend.asarray(np.array([0, 0, 1]))
    ordered = rl.batch_all_triplet_loss(x, labels, margin=2.0, reduction="sum")
    assert_close(ordered, 2.0, backend, dtype="float64")
    value, (gx, _) = rl.value_and_grad(rl.batch_all_triplet_loss, x, labels, margin=2.0,
                                       reduction="sum", pairs="unordered")
    assert_close(value, 0.5, backend, dtype="float64")
    # ∂/∂x: +∂d01 − ∂d02 = [−1 + 1, 1, −1]
    assert_close(gx, [[0.0], [1.0], [-1.0]], backend, dtype="float64")
    terms = rl.batch_all_triplet_loss(x, labels, margin=2.0, reduction="none",
                                      pairs="unordered")
    assert_close(terms, [[0.0, 0.5, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], backend,
                 dtype="float64")
    for reduction, want in (("mean", 0.5), ("mean_nonzero", 0.5)):
        got = rl.batch_all_triplet_loss(x, labels, margin=2.0, reduction=reduction,
                                        pairs="unordered")
        assert_close(got, want, backend, dtype="float64")


def test_batch_all_pairs_must_be_a_known_choice(numpy_backend):
    x, labels = np.zeros((2, 2)), np.array([0, 0])
    with pytest.raises(ValueError, match=r"^pairs: expected one of 'ordered', 'unordered', "
                                         r"got 'upper'"):
        rl.batch_all_triplet_loss(x, labels, pairs="upper")
    with pytest.raises(ValueError, match=r"^pairs: expected one of"):
        rl.batch_all_triplet_loss(np.zeros((0, 2)), np.zeros((0,), dtype=np.int64),
                                  pairs=None)


# --------------------------------------------------------------------------
# batch-hard with the anchor as its own positive


def self_positive_triplets(x, labels, metric, normalize):
    """One (slot, a, p*, n*) per anchor with a negative; p* over {a} ∪ positives
    with d_aa = 0, n* over the negatives; ties to the lowest index (the shared
    brute-force miner)."""
    dm = o_matrix(o_normalize(x) if normalize else x, metric)
    return o_block_triplets(dm, labels, "hard", 0, len(labels), anchor_as_positive=True)


def test_batch_hard_anchor_as_positive_by_hand(backend):
    # x = 0, 1, −1, 5 on a line, labels 0 0 0 1, margin 5. Anchor 0: positives
    # 1 and 2 tie at d = 1 (index 1 wins), hardest negative 3 at 5: 1 − 5 + 5 = 1.
    # Anchor 1: p = 2 (d 2), n = 3 (d 4): 3. Anchor 2: p = 1 (d 2), n = 3 (d 6): 1.
    # Anchor 3 has no other positive: itself at d = 0, n = 1 (d 4): 0 − 4 + 5 = 1.
    skip_eager_jax(backend)
    x = backend.asarray(np.array([[0.0], [1.0], [-1.0], [5.0]]))
    labels = backend.asarray(np.array([0, 0, 0, 1]))
    kw = {"margin": 5.0, "reduction": "none"}
    assert_close(rl.batch_hard_triplet_loss(x, labels, **kw), [1.0, 3.0, 1.0, 0.0], backend,
                 dtype="float64")
    assert_close(rl.batch_hard_triplet_loss(x, labels, anchor_as_positive=True, **kw),
                 [1.0, 3.0, 1.0, 1.0], backend, dtype="float64")
    value, (gx, _) = rl.value_and_grad(rl.batch_hard_triplet_loss, x, labels, margin=5.0,
                                       reduction="sum", anchor_as_positive=True)
    assert_close(value, 6.0, backend, dtype="float64")
    # x0: −1 + 1 (anchor 0); x1: +1 (a0) + 2 (a1) + 1 (a2) + 1 (a3, its negative)
    # x2: −1 (a1); x3: −1 from each anchor
    assert_close(gx, [[0.0], [5.0], [-1.0], [-4.0]], backend, dtype="float64")
    assert_close(rl.batch_hard_triplet_loss(x, labels, margin=5.0, anchor_as_positive=True),
                 1.5, backend, dtype="float64")  # "mean" over the 4 anchors with a negative


def test_batch_hard_anchor_ties_with_itself_at_the_lowest_index(numpy_backend):
    # rows 0 and 1 coincide: for anchor 1, itself (index 1) and row 0 tie at
    # d = 0, and index 0 wins; for anchor 0, itself wins over row 1
    from refloss.mining import BatchHard

    x = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0]])
    d = rl.pairwise_distances(x)
    sel = BatchHard(np, d, np.array([0, 0, 1]), anchor_as_positive=True)
    np.testing.assert_array_equal(sel.pos, [0, 0, 2])
    np.testing.assert_array_equal(sel.valid, [True, True, True])
    np.testing.assert_array_equal(sel.d_ap, [0.0, 0.0, 0.0])
    # margin 6, every term 0 − 5 + 6 = 1; only −∂d_an flows (d_ap = 0 has
    # gradient 0): anchors 0, 1 push away from row 2, u = (0.6, 0.8) the unit
    # vector from row 0 to row 2; anchor 2's negatives 0 and 1 tie at 5 (row 0)
    _, (gx, _) = rl.value_and_grad(rl.batch_hard_triplet_loss, x, np.array([0, 0, 1]),
                                   margin=6.0, reduction="sum", anchor_as_positive=True)
    u = np.array([0.6, 0.8])
    np.testing.assert_allclose(gx, [2 * u, u, -3 * u], rtol=1e-12)


def test_batch_hard_anchor_as_positive_must_be_a_bool(numpy_backend):
    with pytest.raises(TypeError, match=r"^anchor_as_positive: expected a bool"):
        rl.batch_hard_triplet_loss(np.zeros((2, 2)), np.array([0, 1]), anchor_as_positive=1)


# --------------------------------------------------------------------------
# all positives, hardest negative


def hardest_negative_triplets(x, labels, metric, normalize):
    """One ((a, p), a, p, n*_a) per ordered positive pair whose anchor has a
    negative; n*_a the nearest negative, ties to the lowest index."""
    xe = o_normalize(x) if normalize else x
    out = []
    for a in range(len(labels)):
        pos, neg = o_sets(labels, a)
        if not neg:
            continue
        n_star = neg[0]
        for n in neg:  # strict: the lowest index wins a tie
            if o_dist(xe[a], xe[n], metric) < o_dist(xe[a], xe[n_star], metric):
                n_star = n
        out += [((a, p), a, p, n_star) for p in pos]
    return out


# --------------------------------------------------------------------------
# the three triplet variants against the brute force and finite differences


class Variant(NamedTuple):
    """A triplet variant: its loss and option, the oracle's triplets, and
    every (a, p, n) it may use (finite differences keep off their kinks)."""

    loss: Callable
    options: dict
    triplets: Callable  # (x, labels, metric, normalize) -> [(slot, a, p, n)]
    candidates: Callable  # labels -> [(a, p, n)]
    per_anchor: bool  # "none" gives [B] terms (else [B, B])
    miner: Callable | None = None  # returns exactly the oracle's triplets


TRIPLET_VARIANTS = {
    "batch_all-unordered": Variant(
        rl.batch_all_triplet_loss, {"pairs": "unordered"},
        lambda x, labels, metric, normalize: unordered_triplets(labels),
        lambda labels: [t[1:] for t in unordered_triplets(labels)], per_anchor=False),
    "batch_hard-anchor_as_positive": Variant(
        rl.batch_hard_triplet_loss, {"anchor_as_positive": True}, self_positive_triplets,
        lambda labels: [(a, p, n) for a in range(len(labels))
                        for p in [a, *o_sets(labels, a)[0]] for n in o_sets(labels, a)[1]],
        per_anchor=True),
    "hardest_negative": Variant(
        rl.hardest_negative_triplet_loss, {}, hardest_negative_triplets, o_valid_triplets,
        per_anchor=False, miner=rl.mine_hardest_negative),
}


@pytest.mark.parametrize("variant", TRIPLET_VARIANTS)
@given(data=st.data(), metric=st.sampled_from(METRICS), soft=st.booleans(), margin=margins,
       normalize=st.booleans(), reduction=st.sampled_from(REDUCTIONS), seed=st.integers(0, 2**16))
def test_triplet_variant_matches_brute_force(backend, variant, data, metric, soft, margin,
                                             normalize, reduction, seed):
    skip_eager_jax(backend)
    v = TRIPLET_VARIANTS[variant]
    x, labels = data.draw(batches(min_rows=0))
    b = x.shape[0]
    kw = {"margin": margin, "metric": metric, "soft": soft, "normalize": normalize,
          "reduction": reduction}
    shape = (b,) if v.per_anchor else (b, b)
    g = upstream(np.random.default_rng(seed), shape if reduction == "none" else ())
    triplets = v.triplets(x, labels, metric, normalize)
    # "mean_nonzero" counts the terms above τ (docs/reductions.md): a margin
    # below τ leaves its zero-distance terms out
    dm = o_matrix(o_normalize(x) if normalize else x, metric)
    tau = 0.0 if soft or b == 0 else nonzero_tol(float(dm.max()), margin)
    expected, egx = o_triplet_loss(x, triplets, shape, g=g, tau=tau, **kw)
    value, (gx, gl) = pull(backend, v.loss, (backend.asarray(x), backend.asarray(labels)), g,
                           **v.options, **kw)
    assert gl is None
    assert_close(value, expected, backend, dtype="float64")
    assert_close(gx, egx, backend, dtype="float64", **GRAD_TOL)
    # the miner returns exactly these triplets, in row-major order of (a, p)
    if v.miner is not None and reduction == "sum":
        got = [to_numpy(t).tolist() for t in v.miner(
            backend.asarray(x), backend.asarray(labels), metric=metric, normalize=normalize)]
        assert got == [[t[k] for t in triplets] for k in (1, 2, 3)]


@pytest.mark.parametrize("variant", TRIPLET_VARIANTS)
@given(batch=batches(min_rows=2, max_rows=6), metric=st.sampled_from(METRICS),
       soft=st.booleans(), margin=margins, normalize=st.booleans(),
       reduction=st.sampled_from(REDUCTIONS), seed=st.integers(0, 2**16))
def test_triplet_variant_gradient_matches_finite_differences(variant, batch, metric, soft,
                                                             margin, normalize, reduction, seed):
    v = TRIPLET_VARIANTS[variant]
    x, labels = batch
    assume(kink_gap(x, v.candidates(labels), margin=margin, metric=metric, soft=soft,
                    normalize=normalize) > KINK)
    rng = np.random.default_rng(seed)
    b = x.shape[0]
    kw = {"margin": margin, "metric": metric, "soft": soft, "normalize": normalize,
          "reduction": reduction, **v.options}
    g = upstream(rng, ((b,) if v.per_anchor else (b, b)) if reduction == "none" else ())
    _, (gx, _) = pull(None, v.loss, (x, labels), g, **kw)

    def scalar(z):
        return float(np.sum(np.asarray(v.loss(z, labels, **kw)) * g))

    for u in unit_directions(rng, x.shape, n=2):
        np.testing.assert_allclose(np.sum(gx * u), directional_fd(scalar, [x], 0, u), **FD_TOL)


@given(batch=batches(min_rows=0), metric=st.sampled_from(METRICS), soft=st.booleans(),
       margin=margins, normalize=st.booleans(), reduction=st.sampled_from(REDUCTIONS))
def test_hardest_negative_equals_triplet_margin_loss_on_the_mined_triplets(
        batch, metric, soft, margin, normalize, reduction):
    x, labels = batch
    kw = {"margin": margin, "metric": metric, "soft": soft, "normalize": normalize,
          "reduction": reduction if reduction != "none" else "sum"}
    a, p, n = rl.mine_hardest_negative(x, labels, metric=metric, normalize=normalize)
    value, (gx, _) = rl.value_and_grad(rl.hardest_negative_triplet_loss, x, labels, **kw)
    ref, (ga, gp, gn) = rl.value_and_grad(rl.triplet_margin_loss, x[a], x[p], x[n], **kw)
    ref_gx = np.zeros_like(x)
    for idx, gi in ((a, ga), (p, gp), (n, gn)):
        np.add.at(ref_gx, idx, gi)
    # pairwise (GEMM) and paired (direct) distances round differently
    np.testing.assert_allclose(value, ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gx, ref_gx, rtol=1e-7, atol=1e-9)


def test_hardest_negative_by_hand_with_tied_negatives(backend):
    # x on a line: 0, 1 (class 0); 2, −2 (class 1, both at distance 2 from
    # anchor 0: the tie goes to index 2). Margin 2.
    # (0,1): 1 − 2 + 2 = 1 with n* = 2;  (1,0): 1 − d(1, 2) + 2 = 2 with n* = 2
    # (2,3): 4 − d(2, 1) + 2 = 5 with n* = 1;  (3,2): 4 − d(−2, 0) + 2 = 4 with n* = 0
    skip_eager_jax(backend)
    x = backend.asarray(np.array([[0.0], [1.0], [2.0], [-2.0]]))
    labels = backend.asarray(np.array([0, 0, 1, 1]))
    terms = rl.hardest_negative_triplet_loss(x, labels, margin=2.0, reduction="none")
    assert_close(terms, [[0, 1, 0, 0], [2, 0, 0, 0], [0, 0, 0, 5], [0, 0, 4, 0]], backend,
                 dtype="float64")
    a, p, n = rl.mine_hardest_negative(x, labels)
    assert [to_numpy(t).tolist() for t in (a, p, n)] == [[0, 1, 2, 3], [1, 0, 3, 2],
                                                          [2, 2, 1, 0]]
    value, (gx, _) = rl.value_and_grad(rl.hardest_negative_triplet_loss, x, labels,
                                       margin=2.0, reduction="sum")
    assert_close(value, 12.0, backend, dtype="float64")
    # per triplet +∂d_ap − ∂d_an (1-D: ∂|u − v|/∂u = sign(u − v)):
    # (0,1,2): x0 −1+1, x1 +1, x2 −1;  (1,0,2): x1 +1+1, x0 −1, x2 −1
    # (2,3,1): x2 +1−1, x3 −1, x1 +1;  (3,2,0): x3 −1+1, x2 +1, x0 −1
    assert_close(gx, [[-2.0], [4.0], [-1.0], [-1.0]], backend, dtype="float64")
    assert_close(rl.hardest_negative_triplet_loss(x, labels, margin=2.0), 3.0, backend,
                 dtype="float64")


def test_hardest_negative_counts_only_pairs_whose_anchor_has_a_negative(numpy_backend):
    x = np.array([[0.0], [1.0], [3.0], [7.0]])
    for labels, want in (([0, 0, 0, 0], 0.0), ([0, 1, 2, 3], 0.0)):
        value, (gx, _) = rl.value_and_grad(rl.hardest_negative_triplet_loss, x,
                                           np.array(labels), margin=10.0)
        assert value == want and not np.any(gx)
    empty = np.zeros((0, 2))
    value, (gx, _) = rl.value_and_grad(rl.hardest_negative_triplet_loss, empty,
                                       np.zeros((0,), dtype=np.int64))
    assert value == 0.0 and gx.shape == (0, 2)
    assert rl.hardest_negative_triplet_loss(empty, np.zeros((0,), dtype=np.int64),
                                            reduction="none").shape == (0, 0)
    assert all(t.shape == (0,) for t in rl.mine_hardest_negative(
        empty, np.zeros((0,), dtype=np.int64)))


def test_hardest_negative_float32_in_float32_out(numpy_backend):
    x, labels = _X.astype(np.float32), _LABELS
    value, (gx, _) = rl.value_and_grad(rl.hardest_negative_triplet_loss, x, labels)
    ref, (ref_g, _) = rl.value_and_grad(rl.hardest_negative_triplet_loss, _X, labels)
    assert value.dtype == np.float32 and gx.dtype == np.float32
    np.testing.assert_allclose(value, ref, **tolerance("float32"))
    np.testing.assert_allclose(gx, ref_g, **tolerance("float32"))


@pytest.mark.parametrize(("kw", "error", "pattern"), [
    ({"margin": -1.0}, ValueError, r"^margin: expected a finite number >= 0"),
    ({"metric": "manhattan"}, ValueError, r"^metric: expected one of"),
    ({"reduction": "max"}, ValueError, r"^reduction: expected one of"),
    ({"soft": 1}, TypeError, r"^soft: expected a bool"),
    ({"normalize": "yes"}, TypeError, r"^normalize: expected a bool"),
])
def test_hardest_negative_bad_options_name_the_argument(numpy_backend, kw, error, pattern):
    with pytest.raises(error, match=pattern):
        rl.hardest_negative_triplet_loss(_X, _LABELS, **kw)
    if "metric" in kw or "normalize" in kw:
        with pytest.raises(error, match=pattern):
            rl.mine_hardest_negative(_X, _LABELS, **kw)


def test_hardest_negative_bad_arrays_name_the_argument(numpy_backend):
    with pytest.raises(TypeError, match=r"^x: expected a real floating dtype"):
        rl.hardest_negative_triplet_loss(np.zeros((2, 2), dtype=np.int64), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"^labels: expected 3 entries"):
        rl.mine_hardest_negative(np.zeros((3, 2)), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"^x: expected finite values"):
        rl.hardest_negative_triplet_loss(np.array([[np.nan]]), np.array([0]))


# --------------------------------------------------------------------------
# adapters: the new keywords pass through, gradients are refloss's

_RNG = np.random.default_rng(7)
_X = _RNG.normal(size=(6, 3))
_LABELS = np.array([0, 1, 0, 2, 1, 0])
_SAME = np.array([True, False, True, False, False, True])
# (function, options): one call of each variant through the adapters
ADAPTER_CASES = [
    ("contrastive_loss", {"scale": 0.5}),
    ("contrastive_loss_all_pairs", {"scale": 0.5, "margin": 2.0}),
    ("batch_all_triplet_loss", {"pairs": "unordered", "margin": 2.0, "reduction": "sum"}),
    ("batch_hard_triplet_loss", {"anchor_as_positive": True, "margin": 2.0, "soft": True}),
    ("hardest_negative_triplet_loss", {"margin": 2.0, "metric": "sqeuclidean"}),
]


def _adapter_args(name, lib):
    x = lib(_X)
    if name == "contrastive_loss":
        return (x, lib(_X[::-1].copy()), lib(_SAME)), 0
    return (x, lib(_LABELS)), 0


@pytest.mark.parametrize(("name", "options"), ADAPTER_CASES, ids=[c[0] for c in ADAPTER_CASES])
def test_torch_adapter_passes_the_variant_options_and_gradchecks(name, options):
    torch = pytest.importorskip("torch")
    rt = pytest.importorskip("refloss.adapters.torch")
    args, wrt = _adapter_args(name, torch.tensor)
    args = tuple(a.clone().requires_grad_(i == wrt) for i, a in enumerate(args))
    fn = getattr(rt, name)
    value = fn(*args, **options)
    np.testing.assert_allclose(value.detach().numpy(),
                               getattr(rl, name)(*_adapter_args(name, np.asarray)[0], **options),
                               rtol=1e-12)
    def of_wrt(z):
        return fn(*(z if i == wrt else a.detach() for i, a in enumerate(args)), **options)

    assert torch.autograd.gradcheck(of_wrt, (args[wrt],))


@pytest.mark.parametrize(("name", "options"), ADAPTER_CASES, ids=[c[0] for c in ADAPTER_CASES])
def test_jax_adapter_passes_the_variant_options(name, options):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    rlj = pytest.importorskip("refloss.adapters.jax")
    args, wrt = _adapter_args(name, jax.numpy.asarray)
    fn = getattr(rlj, name)

    def loss(z):
        return fn(*(z if i == wrt else a for i, a in enumerate(args)), **options)

    value, grad = jax.jit(jax.value_and_grad(loss))(args[wrt])  # one compile, not one per op
    np_args = _adapter_args(name, np.asarray)[0]
    ref_value, ref_grads = rl.value_and_grad(getattr(rl, name), *np_args, **options)
    np.testing.assert_allclose(np.asarray(value), ref_value, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(grad), ref_grads[wrt], rtol=1e-10, atol=1e-12)


def test_torch_contrastive_module_takes_scale():
    torch = pytest.importorskip("torch")
    rt = pytest.importorskip("refloss.adapters.torch")
    module = rt.ContrastiveLoss(scale=0.5)
    assert "scale=0.5" in repr(module)
    got = module(torch.tensor(_X), torch.tensor(_LABELS))
    np.testing.assert_allclose(got.numpy(), rl.contrastive_loss_all_pairs(_X, _LABELS, scale=0.5),
                               rtol=1e-12)
    with pytest.raises(ValueError, match=r"^scale: expected a finite number > 0"):
        rt.ContrastiveLoss(scale=-1.0)


@pytest.mark.parametrize("name", [c[0] for c in ADAPTER_CASES])
def test_adapters_have_the_core_signature(name):
    import inspect

    rt = pytest.importorskip("refloss.adapters.torch")
    rlj = pytest.importorskip("refloss.adapters.jax")
    core = inspect.signature(getattr(rl, name))
    for adapter in (rt, rlj):
        assert name in adapter.__all__
        ours = inspect.signature(getattr(adapter, name)).parameters
        assert [(p.name, p.kind, p.default) for p in ours.values()] == [
            (p.name, p.kind, p.default) for p in core.parameters.values()
        ]


def test_variant_losses_run_without_data_dependent_shapes():
    """array-api-strict with data-dependent shapes and boolean indexing off:
    the variants keep the losses' portable path (no nonzero, no boolean masks)."""
    strict = pytest.importorskip("array_api_strict")
    cases = [
        (rl.batch_all_triplet_loss, {"pairs": "unordered"}),
        (rl.batch_hard_triplet_loss, {"anchor_as_positive": True}),
        (rl.hardest_negative_triplet_loss, {}),
        (rl.contrastive_loss_all_pairs, {"scale": 0.5}),
    ]
    for fn, kw in cases:
        for reduction in ("none", "mean"):
            ref_v, pullback = rl.vjp(fn, _X, _LABELS, reduction=reduction, **kw)
            g = np.ones(ref_v.shape)
            ref_g = pullback(g)[0]
            with strict.ArrayAPIStrictFlags(data_dependent_shapes=False,
                                            boolean_indexing=False):
                v, pullback = rl.vjp(fn, strict.asarray(_X), strict.asarray(_LABELS),
                                     reduction=reduction, **kw)
                gx = pullback(strict.asarray(g))[0]
            np.testing.assert_allclose(to_numpy(v), ref_v, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(to_numpy(gx), ref_g, rtol=1e-10, atol=1e-13)
