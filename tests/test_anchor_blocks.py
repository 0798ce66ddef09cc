"""Anchor blocks (``anchor_rows=(start, stop)``) of the labeled-batch losses.

A block is the loss of the anchors start..stop-1 against the whole batch
(docs/triplet.md, "Anchor blocks"). Its value and gradient are checked
against a brute-force oracle (tests/helpers.py), the blocks of a partition
of the rows against the full-batch loss (their terms, sums and gradients
add up to it), and the gradient against finite differences.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
from helpers import (
    assert_close,
    continuous_batches,
    directional_fd,
    kink_gap,
    o_block_loss,
    o_block_triplets,
    o_matrix,
    o_normalize,
    to_numpy,
    unit_directions,
)
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import refloss as rl
from refloss import _ops

# kind of the oracle -> the public loss
LOSSES = {
    "all": rl.batch_all_triplet_loss,
    "hard": rl.batch_hard_triplet_loss,
    "semihard": rl.semihard_triplet_loss,
    "contrastive": rl.contrastive_loss_all_pairs,
}
REDUCTIONS = ["none", "sum", "mean"]
METRICS = ["euclidean", "sqeuclidean", "cosine"]


def skip_jax(backend):
    if backend.name == "jax":  # eager JAX compiles every op for every new shape
        pytest.skip("JAX: one fixed batch in test_blocks_on_jax_match_brute_force")


# a labeled batch with continuous coordinates (no ties but structural ones)
batches = functools.partial(continuous_batches, max_dim=3, max_classes=3)


@st.composite
def options(draw, kind):
    """The loss's options: metric, normalize, margin and its own switches."""
    opts = {"metric": draw(st.sampled_from(METRICS)), "normalize": draw(st.booleans()),
            "margin": draw(st.sampled_from([0.0, 0.3, 1.0]))}
    if kind in ("all", "hard"):
        opts["soft"] = draw(st.booleans())
    if kind == "hard":
        opts["anchor_as_positive"] = draw(st.booleans())
    if kind == "all":
        opts["pairs"] = draw(st.sampled_from(["ordered", "unordered"]))
    if kind == "contrastive":
        opts |= {"power": draw(st.sampled_from([1, 2])),
                 "pos_margin": draw(st.sampled_from([0.0, 0.2]))}
    return opts


@st.composite
def cuts(draw, rows):
    """A partition of range(rows) into consecutive blocks, empty ones allowed."""
    inner = sorted(draw(st.lists(st.integers(0, rows), max_size=3)))
    return [0, *inner, rows]


def block_shape(kind, x, start, stop):
    b = x.shape[0]
    if kind == "hard":
        return (stop - start,)
    if kind == "contrastive":
        return (sum(b - 1 - i for i in range(start, stop)),)
    return (stop - start, b)


@pytest.mark.parametrize("kind", LOSSES)
@settings(max_examples=8)
@given(data=st.data(), batch=batches(), reduction=st.sampled_from(REDUCTIONS),
       seed=st.integers(0, 2**16))
def test_a_block_matches_brute_force(backend, kind, data, batch, reduction, seed):
    skip_jax(backend)
    x, labels = batch
    opts = data.draw(options(kind))
    start = data.draw(st.integers(0, x.shape[0]))
    stop = data.draw(st.integers(start, x.shape[0]))
    shape = block_shape(kind, x, start, stop)
    g = np.random.default_rng(seed).normal(size=shape) if reduction == "none" else 1.0
    expected, expected_grad = o_block_loss(x, labels, kind, start, stop, reduction=reduction,
                                           g=g, **opts)
    value, pullback = rl.vjp(LOSSES[kind], backend.asarray(x), backend.asarray(labels),
                             anchor_rows=(start, stop), reduction=reduction, **opts)
    gx, gl = pullback(backend.asarray(g) if reduction == "none" else g)
    assert gl is None
    assert_close(value, expected, backend, dtype="float64", rtol=1e-9, atol=1e-11)
    assert_close(gx, expected_grad, backend, dtype="float64", rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("kind", LOSSES)
@settings(max_examples=6)
@given(data=st.data(), batch=batches(), reduction=st.sampled_from(REDUCTIONS))
def test_the_blocks_of_a_partition_add_up_to_the_whole_batch(backend, kind, data, batch,
                                                            reduction):
    """Sums and means add up (the "mean" of a block divides by the batch's
    count), "none" concatenates to the batch's terms, gradients add up."""
    skip_jax(backend)
    x, labels = batch
    opts = data.draw(options(kind))
    bounds = data.draw(cuts(x.shape[0]))
    fn, xs, ys = LOSSES[kind], backend.asarray(x), backend.asarray(labels)
    kw = {"reduction": reduction, **opts}
    g = 1.0
    if reduction == "none":
        g = np.random.default_rng(0).normal(size=to_numpy(fn(xs, ys, **kw)).shape)
    whole, pullback = rl.vjp(fn, xs, ys, **kw)
    whole_grad = to_numpy(pullback(backend.asarray(g) if reduction == "none" else g)[0])
    parts, grad, row = [], np.zeros_like(x), 0
    for start, stop in itertools.pairwise(bounds):
        value, pullback = rl.vjp(fn, xs, ys, anchor_rows=(start, stop), **kw)
        part_g = 1.0
        if reduction == "none":
            n = to_numpy(value).shape[0]
            part_g, row = backend.asarray(g[row : row + n]), row + n
        parts.append(to_numpy(value))
        grad = grad + to_numpy(pullback(part_g)[0])
    total = np.concatenate(parts, axis=0) if reduction == "none" else sum(parts)
    np.testing.assert_allclose(total, to_numpy(whole), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(grad, whole_grad, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("kind", LOSSES)
@settings(max_examples=8)
@given(data=st.data(), batch=batches(min_rows=2, max_rows=6), seed=st.integers(0, 2**16))
def test_a_block_gradient_matches_finite_differences(numpy_backend, kind, data, batch, seed):
    """∂/∂x of a block reaches its anchor rows and the positives and negatives
    of the whole batch; the weights of "none" make every term count."""
    x, labels = batch
    opts = data.draw(options(kind))
    start = data.draw(st.integers(0, x.shape[0] - 1))
    stop = data.draw(st.integers(start + 1, x.shape[0]))
    if kind == "contrastive":
        d = o_matrix(o_normalize(x) if opts["normalize"] else x, opts["metric"])
        off = d[~np.eye(x.shape[0], dtype=bool)]
        hinges = np.concatenate([off, np.abs(off - opts["margin"]),
                                 np.abs(off - opts["pos_margin"])])
        assume(hinges.min(initial=np.inf) > 1e-3)
        if opts["metric"] == "cosine" or opts["normalize"]:
            assume(np.linalg.norm(x, axis=1).min() > 1e-2)
    else:
        dm = o_matrix(o_normalize(x) if opts["normalize"] else x, opts["metric"])
        candidates = [(a, p, n) for _, a, p, n in o_block_triplets(
            dm, labels, "all", start, stop, pairs=opts.get("pairs", "ordered"))]
        if kind == "hard" and opts["anchor_as_positive"]:
            candidates += [(a, a, n) for a in range(start, stop)
                           for n in range(x.shape[0]) if labels[n] != labels[a]]
        assume(kink_gap(x, candidates, margin=opts["margin"], metric=opts["metric"],
                        soft=opts.get("soft", False), normalize=opts["normalize"]) > 1e-3)
    rng = np.random.default_rng(seed)
    shape = block_shape(kind, x, start, stop)
    weights = rng.normal(size=shape)
    fn = LOSSES[kind]

    def objective(xv):
        terms = fn(xv, labels, anchor_rows=(start, stop), reduction="none", **opts)
        return float(np.sum(weights * terms))

    _, pullback = rl.vjp(fn, x, labels, anchor_rows=(start, stop), reduction="none", **opts)
    grad = pullback(weights)[0]
    for v in unit_directions(rng, x.shape):
        fd = directional_fd(objective, [x], 0, v)
        assert abs(float(np.sum(grad * v)) - fd) <= 1e-5 * max(1.0, abs(fd))


@pytest.mark.parametrize("kind", ["semihard", "contrastive"])
def test_blocks_on_jax_match_brute_force(kind):
    """One fixed batch and block (one set of shapes to compile), "none" with
    random upstream weights (every term and its gradient). Two of the losses
    only: each costs seconds of compilation, and the other two share their
    block code (label masks with an offset, the rectangular VJP)."""
    pytest.importorskip("jax")
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    rng = np.random.default_rng(7)
    x, labels = rng.normal(size=(6, 3)), np.array([0, 1, 0, 2, 1, 0])
    g = rng.normal(size=block_shape(kind, x, 2, 5))
    for reduction in ["none"]:
        up = g if reduction == "none" else 1.0
        expected, expected_grad = o_block_loss(x, labels, kind, 2, 5, reduction=reduction,
                                               g=up, margin=0.5)
        value, pullback = rl.vjp(LOSSES[kind], jnp.asarray(x), jnp.asarray(labels),
                                 anchor_rows=(2, 5), reduction=reduction, margin=0.5)
        np.testing.assert_allclose(np.asarray(value), expected, rtol=1e-9, atol=1e-11)
        gx = pullback(jnp.asarray(up) if reduction == "none" else up)[0]
        np.testing.assert_allclose(np.asarray(gx), expected_grad, rtol=1e-8, atol=1e-10)


BAD_ROWS = [
    ([0, 1, 2], TypeError, r"^anchor_rows: expected None or a pair \(start, stop\) of ints, "
                           r"got \[0, 1, 2\]"),
    ((0.0, 2), TypeError, r"^anchor_rows: expected None or a pair \(start, stop\) of ints"),
    ((True, 2), TypeError, r"^anchor_rows: expected None or a pair"),
    (slice(0, 2), TypeError, r"^anchor_rows: expected None or a pair \(start, stop\) of ints, "
                             r"got slice"),
    ((2, 1), ValueError, r"^anchor_rows: expected 0 <= start <= stop <= 4 \(the rows of x\), "
                         r"got \(2, 1\)"),
    ((-1, 2), ValueError, r"^anchor_rows: expected 0 <= start <= stop <= 4"),
    ((0, 5), ValueError, r"^anchor_rows: expected 0 <= start <= stop <= 4 \(the rows of x\), "
                         r"got \(0, 5\)"),
]


@pytest.mark.parametrize("kind", LOSSES)
@pytest.mark.parametrize(("rows", "exc", "match"), BAD_ROWS)
def test_a_bad_anchor_range_is_refused_by_name(kind, rows, exc, match):
    x, labels = np.zeros((4, 2)), np.array([0, 0, 1, 1])
    with pytest.raises(exc, match=match):
        LOSSES[kind](x, labels, anchor_rows=rows, reduction="sum")


@pytest.mark.parametrize("kind", LOSSES)
def test_mean_nonzero_is_refused_for_a_block(kind):
    x, labels = np.zeros((4, 2)), np.array([0, 0, 1, 1])
    with pytest.raises(ValueError, match=r"^reduction: expected 'none', 'sum' or 'mean' with "
                                         r"anchor_rows .*got 'mean_nonzero'"):
        LOSSES[kind](x, labels, anchor_rows=(0, 2), reduction="mean_nonzero")


@pytest.mark.parametrize("kind", LOSSES)
def test_the_whole_range_is_the_whole_batch(kind):
    rng = np.random.default_rng(3)
    x, labels = rng.normal(size=(7, 3)), np.array([0, 1, 0, 2, 1, 0, 2])
    for reduction in REDUCTIONS:
        whole = LOSSES[kind](x, labels, reduction=reduction)
        block = LOSSES[kind](x, labels, reduction=reduction, anchor_rows=(0, 7))
        np.testing.assert_allclose(block, whole, rtol=1e-12, atol=1e-15)


BLOCK_CASES = [
    ("hard", {}),
    ("all", {"soft": False}),
    ("all", {"soft": True, "pairs": "unordered"}),
    ("semihard", {}),
    ("contrastive", {}),
]


@pytest.mark.parametrize(("kind", "opts"), BLOCK_CASES, ids=[
    "-".join([kind, *(f"{k}={v}" for k, v in opts.items())]) for kind, opts in BLOCK_CASES])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_a_block_in_many_inner_blocks_matches_brute_force(backend, monkeypatch, kind, opts,
                                                          reduction):
    """Tiny inner block sizes: a block's row-block loops (searches, soft
    triplets, the pair packing) run many times with the block's row offset,
    and its classes are wider than the loop width (the wide-class table
    paths), as at large B with the real sizes."""
    skip_jax(backend)
    import refloss.contrastive as contrastive
    import refloss.triplet as triplet

    monkeypatch.setattr(_ops, "BLOCK_FLOOR_CPU", 64)
    monkeypatch.setattr(_ops, "BLOCKS", 7)
    monkeypatch.setattr(triplet, "_LOOP_WIDTH", 2)
    monkeypatch.setattr(contrastive, "_PAIR_BLOCK_FLOOR", 16)
    monkeypatch.setattr(contrastive, "_PAIR_BLOCKS", 5)
    rng = np.random.default_rng(12)
    x = rng.normal(size=(23, 3))
    labels = rng.permutation(np.arange(23) % 3)
    start, stop = 5, 19
    g = rng.normal(size=block_shape(kind, x, start, stop)) if reduction == "none" else 1.0
    expected, expected_grad = o_block_loss(x, labels, kind, start, stop, reduction=reduction,
                                           g=g, margin=0.5, **opts)
    value, pullback = rl.vjp(LOSSES[kind], backend.asarray(x), backend.asarray(labels),
                             anchor_rows=(start, stop), reduction=reduction, margin=0.5, **opts)
    gx = pullback(backend.asarray(g) if reduction == "none" else g)[0]
    assert_close(value, expected, backend, dtype="float64", rtol=1e-9, atol=1e-11)
    assert_close(gx, expected_grad, backend, dtype="float64", rtol=1e-8, atol=1e-10)
