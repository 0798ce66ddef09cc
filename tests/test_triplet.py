"""Triplet losses: values and gradients against a brute-force oracle, finite
differences and torch autograd; invariances, conventions, edge cases, bad input.

Oracle: an O(B³) loop transcription of the definitions in DESIGN.md
("Triplet loss", "Mining over a labeled batch"), in NumPy float64, with the
distance and normalisation derivatives written out per pair (the shared
loops of tests/helpers.py). It shares no code with refloss. Inputs are
drawn as NumPy float64 and moved to each backend with ``backend.asarray``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from helpers import (
    assert_close,
    continuous_batches,
    directional_fd,
    kink_gap,
    nonzero_tol,
    o_block_triplets,
    o_dist,
    o_dist_grad,
    o_matrix,
    o_normalize,
    o_normalize_vjp,
    o_reduce,
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
from refloss import _ops

METRICS = ["euclidean", "sqeuclidean", "cosine"]
REDUCTIONS = ["none", "sum", "mean", "mean_nonzero"]
LOSSES = {
    "batch_all": rl.batch_all_triplet_loss,
    "batch_hard": rl.batch_hard_triplet_loss,
    "semihard": rl.semihard_triplet_loss,
}
# (loss, soft) combinations: semi-hard has no soft margin
VARIANTS = [
    ("batch_all", False),
    ("batch_all", True),
    ("batch_hard", False),
    ("batch_hard", True),
    ("semihard", False),
]
VARIANT_IDS = [f"{name}{'-soft' if soft else ''}" for name, soft in VARIANTS]
GRAD_TOL = {"rtol": 1e-8, "atol": 1e-10}


# --------------------------------------------------------------------------
# the oracle: the shared loops of tests/helpers.py (distances, miners, the
# triplet loss on given triplets), plus triplet_margin_loss's own below


# the shared miner's names for the mining strategies
O_KIND = {"batch_all": "all", "batch_hard": "hard", "semihard": "semihard"}


def o_mine(dm, labels, kind):
    """[(output index, a, p, n)]: every valid triplet, or the mined ones."""
    return o_block_triplets(dm, labels, O_KIND[kind], 0, len(labels))


def o_term(d_ap, d_an, margin, soft):
    """(l, dl/dz) with z = d_ap - d_an (+ margin for the hinge)."""
    if soft:
        z = d_ap - d_an
        e = math.exp(-abs(z))  # the stable forms of log(1 + e^z) and 1 / (1 + e^-z)
        return max(z, 0.0) + math.log1p(e), (1.0 if z >= 0 else e) / (1.0 + e)
    z = (d_ap + margin) - d_an
    return max(z, 0.0), 1.0 if z > 0 else 0.0


def o_loss(x, labels, kind, *, margin=1.0, metric="euclidean", soft=False,
           normalize=False, reduction="mean", g=None):
    """Brute-force value and gradient (upstream ``g`` for reduction "none");
    "mean_nonzero" counts the terms above the rounding tolerance τ."""
    b = x.shape[0]
    dm = o_matrix(o_normalize(x) if normalize else x, metric)
    tau = 0.0 if soft or b == 0 else nonzero_tol(float(dm.max()), margin)
    return o_triplet_loss(x, o_mine(dm, labels, kind), (b,) if kind == "batch_hard" else (b, b),
                          margin=margin, metric=metric, soft=soft, normalize=normalize,
                          reduction=reduction, g=g, tau=tau, dm=dm)


def o_triplet(a, p, n, *, margin=1.0, metric="euclidean", soft=False, swap=False,
              normalize=False, reduction="mean", g=None):
    """Brute-force triplet_margin_loss: value and (grad_a, grad_p, grad_n)."""
    ins = [o_normalize(v) if normalize else v for v in (a, p, n)]
    ae, pe, ne = ins
    terms, parts, used = [], [], [0.0]
    for i in range(a.shape[0]):
        d_ap = o_dist(ae[i], pe[i], metric)
        d_an = o_dist(ae[i], ne[i], metric)
        d_pn = o_dist(pe[i], ne[i], metric)
        use_pn = swap and d_pn < d_an
        val, der = o_term(d_ap, d_pn if use_pn else d_an, margin, soft)
        terms.append(val)
        used += [d_ap, d_pn if use_pn else d_an]
        parts.append((use_pn, der))
    tau = 0.0 if soft else nonzero_tol(max(used), margin)
    flags = [t > tau for t in terms]
    terms = np.array(terms)
    value, scale = o_reduce(terms, flags, reduction)
    grads = [np.zeros_like(v) for v in ins]
    for i, (use_pn, der) in enumerate(parts):
        w = (g[i] if reduction == "none" else scale) * der
        gu, gv = o_dist_grad(ae[i], pe[i], metric)
        grads[0][i] += w * gu
        grads[1][i] += w * gv
        if use_pn:
            gu, gv = o_dist_grad(pe[i], ne[i], metric)
            grads[1][i] -= w * gu
            grads[2][i] -= w * gv
        else:
            gu, gv = o_dist_grad(ae[i], ne[i], metric)
            grads[0][i] -= w * gu
            grads[2][i] -= w * gv
    if normalize:
        grads = [o_normalize_vjp(v, gr) for v, gr in zip((a, p, n), grads)]
    return value, tuple(grads)


# --------------------------------------------------------------------------
# strategies


# no subnormal margins: XLA on CPU flushes them to zero
margins = st.one_of(st.sampled_from([0.0, 0.2, 1.0]),
                    st.floats(0.0, 2.0, allow_subnormal=False))


def upstream(rng, shape):
    return rng.normal(size=shape) if shape else 1.0


def run(backend, fn, args, g, **kw):
    """(value, grads) of ``fn`` on ``backend`` with upstream ``g``."""
    value, pullback = rl.vjp(fn, *args, **kw)
    if isinstance(g, np.ndarray) and backend is not None:
        g = backend.asarray(g)
    grads = pullback(g)
    return value, grads


def out_shape(kind, b, reduction):
    if reduction != "none":
        return ()
    return (b,) if kind == "batch_hard" else (b, b)


# --------------------------------------------------------------------------
# value and gradient against the brute force, every backend


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(("kind", "soft"), VARIANTS, ids=VARIANT_IDS)
@given(batch=continuous_batches(), margin=margins, normalize=st.booleans(),
       seed=st.integers(0, 2**16))
def test_labeled_loss_matches_brute_force(backend, kind, soft, metric, reduction, batch,
                                          margin, normalize, seed):
    x, labels = batch
    kw = {"margin": margin, "metric": metric, "normalize": normalize, "reduction": reduction}
    if kind != "semihard":
        kw["soft"] = soft
    g = upstream(np.random.default_rng(seed), out_shape(kind, x.shape[0], reduction))
    expected, expected_grad = o_loss(x, labels, kind, g=g, **(kw | {"soft": soft}))
    value, (gx, gl) = run(backend, LOSSES[kind],
                          (backend.asarray(x), backend.asarray(labels)), g, **kw)
    assert gl is None
    assert_close(value, expected, backend, dtype="float64", rtol=1e-9, atol=1e-11)
    assert_close(gx, expected_grad, backend, dtype="float64", **GRAD_TOL)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("soft", [False, True])
@given(n=st.integers(0, 6), dim=st.integers(1, 4), seed=st.integers(0, 2**32 - 1),
       margin=margins, swap=st.booleans(), normalize=st.booleans())
def test_triplet_margin_loss_matches_brute_force(backend, soft, metric, reduction, n, dim,
                                                 seed, margin, swap, normalize):
    rng = np.random.default_rng(seed)
    a, p, neg = (rng.normal(size=(n, dim)) for _ in range(3))
    g = upstream(rng, (n,) if reduction == "none" else ())
    kw = {"margin": margin, "metric": metric, "soft": soft, "swap": swap,
          "normalize": normalize, "reduction": reduction}
    expected, expected_grads = o_triplet(a, p, neg, g=g, **kw)
    value, grads = run(backend, rl.triplet_margin_loss,
                       tuple(backend.asarray(v) for v in (a, p, neg)), g, **kw)
    assert_close(value, expected, backend, dtype="float64", rtol=1e-9, atol=1e-11)
    for got, want in zip(grads, expected_grads):
        assert_close(got, want, backend, dtype="float64", **GRAD_TOL)


# --------------------------------------------------------------------------
# gradient against central finite differences (NumPy float64, off the kinks)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(("kind", "soft"), VARIANTS, ids=VARIANT_IDS)
@given(batch=continuous_batches(min_rows=2, max_rows=6), margin=margins, normalize=st.booleans(),
       reduction=st.sampled_from(REDUCTIONS), seed=st.integers(0, 2**16))
def test_labeled_loss_gradient_matches_finite_differences(numpy_backend, kind, soft, metric,
                                                          batch, margin, normalize,
                                                          reduction, seed):
    x, labels = batch
    assume(kink_gap(x, o_valid_triplets(labels), margin=margin, metric=metric, soft=soft,
                    normalize=normalize) > 1e-3)
    rng = np.random.default_rng(seed)
    fn = LOSSES[kind]
    kw = {"margin": margin, "metric": metric, "normalize": normalize, "reduction": reduction}
    if kind != "semihard":
        kw["soft"] = soft
    g = upstream(rng, out_shape(kind, x.shape[0], reduction))
    _, (gx, _) = run(numpy_backend, fn, (x, labels), g, **kw)

    def scalar(z):
        return float(np.sum(np.asarray(fn(z, labels, **kw)) * g))

    for v in unit_directions(rng, x.shape):
        fd = directional_fd(scalar, [x], 0, v)
        np.testing.assert_allclose(np.sum(gx * v), fd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("soft", [False, True])
@given(n=st.integers(1, 5), dim=st.integers(1, 4), seed=st.integers(0, 2**32 - 1),
       margin=margins, swap=st.booleans(), normalize=st.booleans(),
       reduction=st.sampled_from(REDUCTIONS))
def test_triplet_margin_loss_gradient_matches_finite_differences(
        numpy_backend, soft, metric, n, dim, seed, margin, swap, normalize, reduction):
    rng = np.random.default_rng(seed)
    args = [rng.normal(size=(n, dim)) for _ in range(3)]
    ins = [o_normalize(v) if normalize else v for v in args]
    d = {k: np.array([o_dist(u, w, metric) for u, w in zip(ins[i], ins[j])])
         for k, (i, j) in {"ap": (0, 1), "an": (0, 2), "pn": (1, 2)}.items()}
    d_neg = np.minimum(d["an"], d["pn"]) if swap else d["an"]
    assume(min(v.min() for v in d.values()) > 1e-3)
    assume(not swap or np.abs(d["an"] - d["pn"]).min() > 1e-3)
    assume(soft or np.abs(d["ap"] + margin - d_neg).min() > 1e-3)
    if metric == "cosine" or normalize:
        assume(min(np.linalg.norm(v, axis=1).min() for v in args) > 1e-2)
    kw = {"margin": margin, "metric": metric, "soft": soft, "swap": swap,
          "normalize": normalize, "reduction": reduction}
    g = upstream(rng, (n,) if reduction == "none" else ())
    _, grads = run(numpy_backend, rl.triplet_margin_loss, tuple(args), g, **kw)

    def scalar(*z):
        return float(np.sum(np.asarray(rl.triplet_margin_loss(*z, **kw)) * g))

    for k in range(3):
        for v in unit_directions(rng, args[k].shape, n=2):
            fd = directional_fd(scalar, args, k, v)
            np.testing.assert_allclose(np.sum(grads[k] * v), fd, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------
# gradient against torch autograd through the same forward


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(("kind", "soft"), VARIANTS, ids=VARIANT_IDS)
@given(batch=continuous_batches(min_rows=2), margin=margins, normalize=st.booleans(),
       reduction=st.sampled_from(REDUCTIONS), seed=st.integers(0, 2**16))
def test_labeled_loss_gradient_matches_torch_autograd(kind, soft, metric, batch, margin,
                                                      normalize, reduction, seed):
    torch = pytest.importorskip("torch")
    x, labels = batch
    if metric == "cosine" or normalize:  # autograd's x/‖x‖ cancels badly for tiny norms
        assume(np.linalg.norm(x, axis=1).min() > 1e-3)
    kw = {"margin": margin, "metric": metric, "normalize": normalize, "reduction": reduction}
    if kind != "semihard":
        kw["soft"] = soft
    g = upstream(np.random.default_rng(seed), out_shape(kind, x.shape[0], reduction))
    xt = torch.tensor(x, requires_grad=True)
    out = LOSSES[kind](xt, torch.tensor(labels), **kw)
    (out * torch.as_tensor(g)).sum().backward()
    _, (gx, _) = run(None, LOSSES[kind], (x, labels), g, **kw)
    scale = max(1.0, float(np.abs(gx).max()))
    np.testing.assert_allclose(xt.grad.numpy(), gx, rtol=1e-8, atol=1e-10 * scale)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("soft", [False, True])
@given(n=st.integers(1, 6), dim=st.integers(1, 4), seed=st.integers(0, 2**32 - 1),
       margin=margins, swap=st.booleans(), normalize=st.booleans())
def test_triplet_margin_loss_gradient_matches_torch_autograd(soft, metric, n, dim, seed,
                                                             margin, swap, normalize):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    args = [rng.normal(size=(n, dim)) for _ in range(3)]
    kw = {"margin": margin, "metric": metric, "soft": soft, "swap": swap,
          "normalize": normalize, "reduction": "sum"}
    targs = [torch.tensor(v, requires_grad=True) for v in args]
    rl.triplet_margin_loss(*targs, **kw).backward()
    _, grads = rl.value_and_grad(rl.triplet_margin_loss, *args, **kw)
    for t, ours in zip(targs, grads):
        np.testing.assert_allclose(t.grad.numpy(), ours, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------
# every backend agrees with NumPy; dtypes; strict without data-dependent shapes


def _fixed_batch():
    rng = np.random.default_rng(20240611)
    x = rng.normal(size=(9, 3))
    labels = np.array([0, 1, 0, 2, 1, 0, 3, 1, 2])  # class 3 is a singleton
    return x, labels


@pytest.mark.parametrize(("kind", "soft"), VARIANTS, ids=VARIANT_IDS)
def test_labeled_loss_agrees_across_backends(backend, kind, soft):
    x, labels = _fixed_batch()
    rng = np.random.default_rng(3)
    for metric in METRICS:
        for normalize in (False, True):
            for reduction in REDUCTIONS:
                kw = {"metric": metric, "normalize": normalize, "reduction": reduction,
                      "margin": 0.7}
                if kind != "semihard":
                    kw["soft"] = soft
                g = upstream(rng, out_shape(kind, 9, reduction))
                ref_v, (ref_g, _) = run(None, LOSSES[kind], (x, labels), g, **kw)
                v, (gx, _) = run(backend, LOSSES[kind],
                                 (backend.asarray(x), backend.asarray(labels)), g, **kw)
                assert_close(v, ref_v, backend, dtype="float64", rtol=1e-10, atol=1e-12)
                assert_close(gx, ref_g, backend, dtype="float64", rtol=1e-9, atol=1e-11)


def test_triplet_margin_loss_agrees_across_backends(backend):
    rng = np.random.default_rng(5)
    args = [rng.normal(size=(7, 3)) for _ in range(3)]
    for metric in METRICS:
        for soft in (False, True):
            for swap in (False, True):
                for reduction in REDUCTIONS:
                    kw = {"metric": metric, "soft": soft, "swap": swap,
                          "reduction": reduction, "margin": 0.5}
                    g = upstream(rng, (7,) if reduction == "none" else ())
                    ref_v, ref_g = run(None, rl.triplet_margin_loss, tuple(args), g, **kw)
                    v, grads = run(backend, rl.triplet_margin_loss,
                                   tuple(backend.asarray(a) for a in args), g, **kw)
                    assert_close(v, ref_v, backend, dtype="float64", rtol=1e-12, atol=1e-14)
                    for got, want in zip(grads, ref_g):
                        assert_close(got, want, backend, dtype="float64", rtol=1e-10,
                                     atol=1e-13)


@pytest.mark.parametrize(("kind", "soft"), VARIANTS, ids=VARIANT_IDS)
def test_float32_input_gives_float32_close_to_float64(backend, kind, soft):
    x, labels = _fixed_batch()
    kw = {} if kind == "semihard" else {"soft": soft}
    for reduction in ("mean", "none"):
        g = upstream(np.random.default_rng(0), out_shape(kind, 9, reduction))
        ref_v, ref_g = o_loss(x, labels, kind, reduction=reduction, g=g, **kw)
        xa = backend.asarray(x, dtype=backend.xp.float32)
        v, (gx, _) = run(backend, LOSSES[kind], (xa, backend.asarray(labels)),
                         g.astype(np.float32) if isinstance(g, np.ndarray) else g,
                         reduction=reduction, **kw)
        assert_close(v, ref_v, backend, dtype="float32", **tolerance("float32"))
        assert_close(gx, ref_g, backend, dtype="float32", **tolerance("float32"))


@pytest.mark.parametrize("kind", list(LOSSES))
def test_float16_is_computed_in_float32_and_cast_back(backend, kind):
    if not hasattr(backend.xp, "float16"):
        pytest.skip("no float16 in this namespace")
    x, labels = _fixed_batch()
    xa = backend.asarray(x, dtype=backend.xp.float16)
    value, (gx, _) = rl.value_and_grad(LOSSES[kind], xa, backend.asarray(labels))
    assert value.dtype == backend.xp.float16 and gx.dtype == backend.xp.float16
    ref = float(LOSSES[kind](x.astype(np.float16).astype(np.float32), labels))
    np.testing.assert_allclose(float(to_numpy(value)), ref, rtol=2e-3)


def test_losses_run_without_data_dependent_shapes():
    """array-api-strict with data-dependent shapes and boolean indexing off:
    the losses use only the portable path (no nonzero, no boolean masks)."""
    strict = pytest.importorskip("array_api_strict")
    x, labels = _fixed_batch()
    x[4] = x[1]  # a duplicate: the distances' exact recomputation takes its dense path
    for kind, soft in VARIANTS:
        kw = {} if kind == "semihard" else {"soft": soft}
        for reduction in REDUCTIONS:
            g = upstream(np.random.default_rng(1), out_shape(kind, 9, reduction))
            ref_v, (ref_g, _) = run(None, LOSSES[kind], (x, labels), g,
                                    reduction=reduction, **kw)
            with strict.ArrayAPIStrictFlags(data_dependent_shapes=False,
                                            boolean_indexing=False):
                v, pullback = rl.vjp(LOSSES[kind], strict.asarray(x), strict.asarray(labels),
                                     reduction=reduction, **kw)
                gx = pullback(strict.asarray(g) if isinstance(g, np.ndarray) else g)[0]
            np.testing.assert_allclose(to_numpy(v), ref_v, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(to_numpy(gx), ref_g, rtol=1e-10, atol=1e-13)
    args = [np.random.default_rng(i).normal(size=(4, 3)) for i in range(3)]
    ref_v, ref_g = rl.value_and_grad(rl.triplet_margin_loss, *args, swap=True)
    with strict.ArrayAPIStrictFlags(data_dependent_shapes=False, boolean_indexing=False):
        v, grads = rl.value_and_grad(rl.triplet_margin_loss,
                                     *(strict.asarray(a) for a in args), swap=True)
    np.testing.assert_allclose(to_numpy(v), ref_v, rtol=1e-12)
    for got, want in zip(grads, ref_g):
        np.testing.assert_allclose(to_numpy(got), want, rtol=1e-12)


# --------------------------------------------------------------------------
# invariances


@pytest.mark.parametrize(("kind", "soft"), VARIANTS, ids=VARIANT_IDS)
@given(batch=continuous_batches(), shift=st.integers(-5, 5), seed=st.integers(0, 2**16))
def test_relabelling_leaves_loss_and_gradient_unchanged(backend, kind, soft, batch, shift,
                                                        seed):
    x, labels = batch
    rng = np.random.default_rng(seed)
    values = np.unique(labels)
    new = dict(zip(values, rng.permutation(len(values)) * 7 + shift))
    relabelled = np.array([new[v] for v in labels], dtype=np.int64)
    kw = {"reduction": "none"} if kind == "semihard" else {"soft": soft, "reduction": "none"}
    g = upstream(rng, out_shape(kind, x.shape[0], "none"))
    v1, (g1, _) = run(backend, LOSSES[kind], (backend.asarray(x), backend.asarray(labels)),
                      g, **kw)
    v2, (g2, _) = run(backend, LOSSES[kind],
                      (backend.asarray(x), backend.asarray(relabelled)), g, **kw)
    assert_close(v2, to_numpy(v1), backend, rtol=0, atol=0)
    assert_close(g2, to_numpy(g1), backend, rtol=0, atol=0)


@pytest.mark.parametrize(("kind", "soft"), VARIANTS, ids=VARIANT_IDS)
@given(batch=continuous_batches(), seed=st.integers(0, 2**16))
def test_permuting_the_batch_permutes_the_results(backend, kind, soft, batch, seed):
    x, labels = batch
    rng = np.random.default_rng(seed)
    perm = rng.permutation(x.shape[0])
    kw = {"reduction": "none"} if kind == "semihard" else {"soft": soft, "reduction": "none"}
    g = upstream(rng, out_shape(kind, x.shape[0], "none"))
    g_perm = g[perm] if g.ndim == 1 else g[np.ix_(perm, perm)]
    v1, (g1, _) = run(backend, LOSSES[kind], (backend.asarray(x), backend.asarray(labels)),
                      g, **kw)
    v2, (g2, _) = run(backend, LOSSES[kind],
                      (backend.asarray(x[perm]), backend.asarray(labels[perm])), g_perm, **kw)
    v1 = to_numpy(v1)
    v1_perm = v1[perm] if v1.ndim == 1 else v1[np.ix_(perm, perm)]
    assert_close(v2, v1_perm, backend, rtol=1e-9, atol=1e-11)
    assert_close(g2, to_numpy(g1)[perm], backend, **GRAD_TOL)


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean"])
@pytest.mark.parametrize(("kind", "soft"), VARIANTS, ids=VARIANT_IDS)
@given(batch=continuous_batches(), offset=hnp.arrays(np.float64, 4, elements=st.floats(-10, 10)))
def test_euclidean_losses_are_translation_invariant(backend, kind, soft, metric, batch,
                                                    offset):
    x, labels = batch
    kw = {"metric": metric}
    if kind != "semihard":
        kw["soft"] = soft
    v1, (g1, _) = run(backend, LOSSES[kind], (backend.asarray(x), backend.asarray(labels)),
                      1.0, **kw)
    moved = x + offset[: x.shape[1]]
    v2, (g2, _) = run(backend, LOSSES[kind],
                      (backend.asarray(moved), backend.asarray(labels)), 1.0, **kw)
    assert_close(v2, to_numpy(v1), backend, rtol=1e-9, atol=1e-10)
    assert_close(g2, to_numpy(g1), backend, rtol=1e-7, atol=1e-9)


# --------------------------------------------------------------------------
# relations between the losses


@given(batch=continuous_batches(), margin=margins, soft=st.booleans())
def test_batch_hard_term_bounds_every_batch_all_term_of_its_anchor(backend, batch, margin,
                                                                   soft):
    x, labels = batch
    xa, la = backend.asarray(x), backend.asarray(labels)
    hard = to_numpy(rl.batch_hard_triplet_loss(xa, la, margin=margin, soft=soft,
                                               reduction="none"))
    every = to_numpy(rl.batch_all_triplet_loss(xa, la, margin=margin, soft=soft,
                                               reduction="none"))
    for a in range(x.shape[0]):
        pos, neg = o_sets(labels, a)
        if not pos or not neg:
            assert hard[a] == 0.0
            continue
        idx = np.array([(a, p, n) for p in pos for n in neg])
        terms = to_numpy(rl.triplet_margin_loss(
            backend.asarray(x[idx[:, 0]]), backend.asarray(x[idx[:, 1]]),
            backend.asarray(x[idx[:, 2]]), margin=margin, soft=soft, reduction="none"))
        assert np.all(hard[a] >= terms - 1e-9 * (1 + np.abs(terms)))
        # the per-pair sums of batch-all: at most len(neg) hardest terms each
        assert np.all(every[a, pos] <= len(neg) * hard[a] * (1 + 1e-9) + 1e-12)


@pytest.mark.parametrize("kind", ["batch_all", "semihard"])
@given(batch=continuous_batches(), margin=margins)
def test_reductions_are_consistent(backend, kind, batch, margin):
    """sum == Σ none; mean == sum / #valid terms; mean_nonzero == sum / #(terms > 0)."""
    x, labels = batch
    xa, la = backend.asarray(x), backend.asarray(labels)
    fn = LOSSES[kind]
    total = float(to_numpy(fn(xa, la, margin=margin, reduction="sum")))
    matrix = to_numpy(fn(xa, la, margin=margin, reduction="none"))
    np.testing.assert_allclose(matrix.sum(), total, rtol=1e-12, atol=1e-12)
    dm = o_matrix(x, "euclidean")
    triplets = o_mine(dm, labels, kind)
    count = len(triplets)
    mean = float(to_numpy(fn(xa, la, margin=margin, reduction="mean")))
    np.testing.assert_allclose(mean, total / count if count else 0.0, rtol=1e-12, atol=1e-14)
    valid = np.zeros_like(matrix, dtype=bool)
    for o, *_ in triplets:
        valid[o] = True
    assert np.all(matrix[~valid] == 0.0)


# --------------------------------------------------------------------------
# conventions and edge cases


def _all_calls(backend, x, labels, reduction):
    xa, la = backend.asarray(x), backend.asarray(labels)
    for kind, soft in VARIANTS:
        kw = {"reduction": reduction} if kind == "semihard" else {"soft": soft,
                                                                   "reduction": reduction}
        yield kind, soft, xa, la, kw


@pytest.mark.parametrize("labels", [
    pytest.param([0, 1, 2, 3, 4], id="all-distinct"),
    pytest.param([7, 7, 7, 7, 7], id="single-class"),
    pytest.param([3], id="one-row"),
])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_no_valid_term_gives_zero_loss_and_zero_gradient(backend, labels, reduction):
    labels = np.array(labels)
    x = np.random.default_rng(0).normal(size=(len(labels), 3))
    for kind, _, xa, la, kw in _all_calls(backend, x, labels, reduction):
        g = upstream(np.random.default_rng(1), out_shape(kind, len(labels), reduction))
        value, (gx, _) = run(backend, LOSSES[kind], (xa, la), g, **kw)
        assert_close(value, np.zeros(out_shape(kind, len(labels), reduction)), backend,
                     dtype="float64", atol=0)
        assert_close(gx, np.zeros_like(x), backend, dtype="float64", atol=0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_batch_gives_zero(backend, reduction):
    x = np.zeros((0, 3))
    labels = np.zeros((0,), dtype=np.int64)
    for kind, _, xa, la, kw in _all_calls(backend, x, labels, reduction):
        value, (gx, _) = run(backend, LOSSES[kind], (xa, la),
                             np.zeros(out_shape(kind, 0, reduction)) if reduction == "none"
                             else 1.0, **kw)
        assert_close(value, np.zeros(out_shape(kind, 0, reduction)), backend, atol=0)
        assert_close(gx, np.zeros((0, 3)), backend, atol=0)
    e = backend.asarray(np.zeros((0, 3)))
    value, grads = rl.value_and_grad(rl.triplet_margin_loss, e, e, e)
    assert_close(value, 0.0, backend, atol=0)
    assert all(tuple(gr.shape) == (0, 3) for gr in grads)


def test_anchors_without_positive_or_negative_are_not_counted(backend):
    # rows 2 and 3 are singletons (no positive); the batch has three classes
    x = np.array([[0.0, 0.0], [0.5, 0.0], [3.0, 1.0], [0.0, 2.0], [0.2, 0.3]])
    labels = np.array([0, 0, 1, 2, 0])
    for reduction in REDUCTIONS:
        for kind, soft, xa, la, kw in _all_calls(backend, x, labels, reduction):
            g = upstream(np.random.default_rng(2), out_shape(kind, 5, reduction))
            expected, expected_grad = o_loss(x, labels, kind, soft=soft, reduction=reduction,
                                             g=g)
            value, (gx, _) = run(backend, LOSSES[kind], (xa, la), g, **kw)
            assert_close(value, expected, backend, rtol=1e-9, atol=1e-12)
            assert_close(gx, expected_grad, backend, **GRAD_TOL)
    hard = to_numpy(rl.batch_hard_triplet_loss(backend.asarray(x), backend.asarray(labels),
                                               reduction="none"))
    assert hard[2] == 0.0 and hard[3] == 0.0
    mean = rl.batch_hard_triplet_loss(backend.asarray(x), backend.asarray(labels))
    np.testing.assert_allclose(to_numpy(mean), hard.sum() / 3, rtol=1e-12)


def _tie_batch():
    """Distances exact in binary floating point on every backend (integer
    coordinates with zero mean): d(0, ·) = 1 to rows 1-4, d(1, 3) = d(1, 4) = √2."""
    x = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    labels = np.array([0, 0, 0, 1, 1])
    return x, labels


def test_tie_batch_distances_are_exact(backend):
    x, _ = _tie_batch()
    d = to_numpy(rl.pairwise_distances(backend.asarray(x)))
    assert d[0, 1] == d[0, 2] == d[0, 3] == d[0, 4] == 1.0
    assert d[1, 3] == d[1, 4] == d[2, 3] == d[2, 4] == math.sqrt(2.0)


@pytest.mark.parametrize(("kind", "soft"), VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("margin", [0.0, 0.5])
def test_ties_go_to_the_lowest_index(backend, kind, soft, margin):
    """Ties in every max/min (and the semi-hard boundary d_an == d_ap, which is
    not 'strictly farther') resolve to the lowest index: value and gradient
    equal the oracle's, which picks the lowest index explicitly."""
    x, labels = _tie_batch()
    kw = {"margin": margin, "reduction": "none"}
    if kind != "semihard":
        kw["soft"] = soft
    g = upstream(np.random.default_rng(4), out_shape(kind, 5, "none"))
    expected, expected_grad = o_loss(x, labels, kind, soft=soft, g=g, margin=margin,
                                     reduction="none")
    value, (gx, _) = run(backend, LOSSES[kind], (backend.asarray(x), backend.asarray(labels)),
                         g, **kw)
    assert_close(value, expected, backend, rtol=1e-15, atol=0)
    assert_close(gx, expected_grad, backend, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("reduction", ["sum", "mean", "mean_nonzero"])
@pytest.mark.parametrize("kind", ["batch_all", "semihard"])
@pytest.mark.parametrize("margin", [0.0, 0.5])
def test_ties_go_to_the_lowest_index_under_scalar_reductions(backend, kind, margin,
                                                             reduction):
    """The scalar reductions take the positive-table path (sorted values, a
    lowest-index ``argmax`` for the semi-hard negative): same tie rule."""
    x, labels = _tie_batch()
    expected, expected_grad = o_loss(x, labels, kind, margin=margin, reduction=reduction)
    value, (gx, _) = rl.value_and_grad(LOSSES[kind], backend.asarray(x),
                                       backend.asarray(labels), margin=margin,
                                       reduction=reduction)
    assert_close(value, expected, backend, rtol=1e-15, atol=0)
    assert_close(gx, expected_grad, backend, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean_nonzero"])
@pytest.mark.parametrize("kind", ["batch_all", "semihard"])
@pytest.mark.parametrize("sizes", [(10, 4, 2), (12, 4), (9, 1, 6)], ids=str)
def test_large_classes_with_ties_match_brute_force(backend, kind, sizes, reduction):
    """Classes larger than the positive-table loop width (8) take the
    row-wise search (batch-all) or, where an active d_an* is tied, the
    sorted-order path (semi-hard). Small
    integer coordinates make many distances tie exactly; with B = 16 the
    column means are dyadic, so the centred GEMM is exact and the ties survive
    in floating point too."""
    rng = np.random.default_rng(sum(sizes))
    labels = np.repeat(np.arange(len(sizes)), sizes)
    x = rng.integers(-2, 3, size=(labels.shape[0], 2)).astype(np.float64)
    g = upstream(rng, out_shape(kind, x.shape[0], reduction))
    expected, expected_grad = o_loss(x, labels, kind, margin=0.5, reduction=reduction, g=g)
    value, (gx, _) = run(backend, LOSSES[kind], (backend.asarray(x), backend.asarray(labels)),
                         g, margin=0.5, reduction=reduction)
    assert_close(value, expected, backend, rtol=1e-12, atol=1e-12)
    assert_close(gx, expected_grad, backend, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reduction", ["none", "sum"])
@pytest.mark.parametrize("kind", ["batch_all", "semihard"])
def test_large_classes_with_ties_in_float32_match_brute_force(backend, kind, reduction):
    """float32 wide classes with exact ties (small integer coordinates: the
    same ties as in float64; B = 16 keeps the centred GEMM exact) take the
    float32 paths (on NumPy a stable order from packed 64-bit keys, and the
    semi-hard weights summed by n* in one scatter-add); n* is still the
    lowest-index negative at d_an*."""
    rng = np.random.default_rng(3)
    labels = rng.permutation(np.repeat(np.arange(3), [10, 4, 2]))
    x = rng.integers(-2, 3, size=(labels.shape[0], 2)).astype(np.float32)
    g = upstream(rng, out_shape(kind, x.shape[0], reduction))
    expected, expected_grad = o_loss(x.astype(np.float64), labels, kind, margin=0.5,
                                     reduction=reduction, g=g)
    g32 = g.astype(np.float32) if isinstance(g, np.ndarray) else g
    value, (gx, _) = run(backend, LOSSES[kind], (backend.asarray(x), backend.asarray(labels)),
                         g32, margin=0.5, reduction=reduction)
    assert_close(value, expected, backend, dtype="float32", **tolerance("float32"))
    assert_close(gx, expected_grad, backend, dtype="float32", **tolerance("float32"))


@pytest.mark.parametrize("reduction", ["sum", "mean_nonzero"])
@pytest.mark.parametrize("kind", ["batch_all", "semihard"])
def test_wide_class_gradient_matches_finite_differences_and_torch_autograd(kind, reduction):
    """The wide-class table paths (W = 12 > 8, no ties) against central
    differences and against torch autograd through the same forward."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(21)  # a seed whose batch is 2.9e-3 from every kink
    labels = rng.permutation(np.repeat(np.arange(2), [12, 4]))
    x = rng.standard_normal((labels.shape[0], 3))
    kw = {"margin": 0.8, "reduction": reduction}
    assert kink_gap(x, o_valid_triplets(labels), margin=0.8, metric="euclidean",
                    soft=False, normalize=False) > 1e-3
    fn = LOSSES[kind]
    _, (gx, _) = rl.value_and_grad(fn, x, labels, **kw)
    for v in unit_directions(rng, x.shape):
        fd = directional_fd(lambda z: float(fn(z, labels, **kw)), [x], 0, v)
        np.testing.assert_allclose(np.sum(gx * v), fd, rtol=1e-6, atol=1e-8)
    xt = torch.tensor(x, requires_grad=True)
    fn(xt, torch.tensor(labels), **kw).backward()
    np.testing.assert_allclose(xt.grad.numpy(), gx, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("passes", [0, 1, 64])
def test_semihard_wide_class_ties_by_index_or_dense_path(backend, passes, monkeypatch):
    """Wide classes with many exact ties: resolved by one index pass per
    distinct tied value, or, past ``_TIED_PASSES`` values in a row, by the
    dense sorted-order path; both pick the lowest-index negative."""
    import refloss.triplet as triplet

    monkeypatch.setattr(triplet, "_TIED_PASSES", passes)
    rng = np.random.default_rng(11)
    labels = rng.permutation(np.repeat(np.arange(2), [12, 4]))
    x = rng.integers(-2, 3, size=(labels.shape[0], 2)).astype(np.float64)
    expected, expected_grad = o_loss(x, labels, "semihard", margin=0.5, reduction="sum")
    value, (gx, _) = rl.value_and_grad(rl.semihard_triplet_loss, backend.asarray(x),
                                       backend.asarray(labels), margin=0.5, reduction="sum")
    assert_close(value, expected, backend, rtol=1e-12, atol=1e-12)
    assert_close(gx, expected_grad, backend, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reduction", ["sum", "mean", "mean_nonzero"])
@pytest.mark.parametrize("kind", ["batch_all", "semihard"])
@pytest.mark.parametrize("sizes", [(10, 4, 2), (12, 4), (9, 1, 6), (20,)], ids=str)
def test_large_classes_without_ties_match_brute_force(backend, kind, sizes, reduction):
    """Without ties, wide classes under a scalar reduction take the value
    matching path of the semi-hard gradient (each d_an* names one negative)
    and the threshold search of batch-all."""
    rng = np.random.default_rng(7 + sum(sizes))
    labels = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    x = rng.standard_normal((labels.shape[0], 3))
    expected, expected_grad = o_loss(x, labels, kind, margin=0.8, reduction=reduction)
    value, (gx, _) = rl.value_and_grad(LOSSES[kind], backend.asarray(x),
                                       backend.asarray(labels), margin=0.8,
                                       reduction=reduction)
    assert_close(value, expected, backend, rtol=1e-12, atol=1e-14)
    assert_close(gx, expected_grad, backend, rtol=1e-10, atol=1e-12)


def test_hinge_exactly_at_zero_neither_counts_nor_pulls(backend):
    """margin 0 in the tie batch: anchor 0's batch-hard argument is exactly
    1 - 1 + 0 = 0. Its term is 0, it is not counted by "mean_nonzero", and
    its gradient is 0 (relu's subgradient)."""
    x, labels = _tie_batch()
    xa, la = backend.asarray(x), backend.asarray(labels)
    terms = to_numpy(rl.batch_hard_triplet_loss(xa, la, margin=0.0, reduction="none"))
    assert terms[0] == 0.0
    assert np.count_nonzero(terms) == 4
    value, (gx, _) = rl.value_and_grad(rl.batch_hard_triplet_loss, xa, la, margin=0.0,
                                       reduction="mean_nonzero")
    np.testing.assert_allclose(to_numpy(value), terms.sum() / 4, rtol=1e-15)
    expected, expected_grad = o_loss(x, labels, "batch_hard", margin=0.0,
                                     reduction="mean_nonzero")
    assert_close(value, expected, backend, rtol=1e-15)
    assert_close(gx, expected_grad, backend, rtol=1e-12, atol=1e-15)
    # batch-all: triplets (0, p, n) with d_ap = d_an = 1 sit exactly at 0
    every = to_numpy(rl.batch_all_triplet_loss(xa, la, margin=0.0, reduction="none"))
    assert np.all(every[0] == 0.0)
    v, _ = o_loss(x, labels, "batch_all", margin=0.0, reduction="mean_nonzero")
    np.testing.assert_allclose(
        to_numpy(rl.batch_all_triplet_loss(xa, la, margin=0.0)), v, rtol=1e-15)


def test_mean_nonzero_leaves_out_terms_within_tau_of_zero(backend):
    """1-D batch-all, margin 1: anchor 0 with two positives at distance 1
    (two equal thresholds t = 2) and negatives at 2 - δ for δ from a quarter
    of τ to 3τ, and exactly at 2. The terms δ <= τ are rounding noise: not
    counted by "mean_nonzero" (one negative below several equal
    thresholds, and negatives in the buckets of other anchors too)."""
    max_d = 4.0  # from -1 to 3 - 0.25 τ, within rounding: τ barely moves
    tau = nonzero_tol(max_d, 1.0)
    deltas = [0.25 * tau, 0.5 * tau, 0.9 * tau, 1.5 * tau, 3.0 * tau, 0.0]
    x = np.array([[0.0], [1.0], [-1.0]] + [[2.0 - dl] for dl in deltas])
    labels = np.array([0, 0, 0] + [1] * len(deltas))
    expected, expected_grad = o_loss(x, labels, "batch_all", reduction="mean_nonzero")
    plain, _ = o_loss(x, labels, "batch_all", reduction="sum")
    terms = to_numpy(rl.batch_all_triplet_loss(backend.asarray(x), backend.asarray(labels),
                                               reduction="none"))
    assert expected != plain / np.count_nonzero(terms)  # some terms fall within τ
    value, (gx, _) = rl.value_and_grad(rl.batch_all_triplet_loss, backend.asarray(x),
                                       backend.asarray(labels), reduction="mean_nonzero")
    assert_close(value, expected, backend, rtol=1e-13)
    assert_close(gx, expected_grad, backend, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("metric", METRICS)
def test_duplicate_embeddings_give_finite_exact_results(backend, metric):
    """Rows 0 and 1 coincide across classes (distance 0: the hardest negative
    of 0 and of 1), rows 2 and 5 coincide within a class; the gradient through
    d = 0 is the subgradient 0, never NaN."""
    x = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.5], [3.0, 1.0], [2.0, -1.0], [1.0, 0.5]])
    labels = np.array([0, 1, 0, 1, 2, 0])
    xa, la = backend.asarray(x), backend.asarray(labels)
    for (kind, soft), reduction in itertools.product(VARIANTS, ("mean", "mean_nonzero")):
        kw = {"metric": metric, "reduction": reduction}
        if kind != "semihard":
            kw["soft"] = soft
        expected, expected_grad = o_loss(x, labels, kind, soft=soft, metric=metric,
                                         reduction=reduction)
        value, (gx, _) = rl.value_and_grad(LOSSES[kind], xa, la, **kw)
        assert_close(value, expected, backend, rtol=1e-9, atol=1e-12)
        assert np.all(np.isfinite(to_numpy(gx)))
        if kind == "batch_all":  # no ties matter: every triplet is summed
            assert_close(gx, expected_grad, backend, **GRAD_TOL)


def test_soft_margin_is_stable_for_large_arguments(backend):
    """softplus(z) ≈ z for large z and ≈ e^z for very negative z: no overflow,
    no NaN, gradients σ(z) in [0, 1]."""
    x = np.array([[0.0], [400.0], [1.0], [-800.0]])
    labels = np.array([0, 0, 1, 1])
    xa, la = backend.asarray(x), backend.asarray(labels)
    value, (gx, _) = rl.value_and_grad(rl.batch_hard_triplet_loss, xa, la, soft=True,
                                       reduction="sum")
    expected, expected_grad = o_loss(x, labels, "batch_hard", soft=True, reduction="sum")
    assert math.isfinite(expected)
    assert_close(value, expected, backend, rtol=1e-10)
    assert_close(gx, expected_grad, backend, rtol=1e-10, atol=1e-300)
    a = backend.asarray(np.array([[0.0], [0.0]]))
    p = backend.asarray(np.array([[1000.0], [0.0]]))
    n = backend.asarray(np.array([[0.0], [1000.0]]))
    terms = to_numpy(rl.triplet_margin_loss(a, p, n, soft=True, reduction="none"))
    np.testing.assert_allclose(terms, [1000.0, 0.0], atol=1e-300)


def test_swap_uses_the_closer_of_the_two_negative_distances(backend):
    a = np.array([[0.0, 0.0], [0.0, 0.0]])
    p = np.array([[1.0, 0.0], [1.0, 0.0]])
    n = np.array([[1.5, 0.0], [-1.0, 0.0]])  # d_pn = 0.5 < d_an = 1.5 ; d_pn = 2 > d_an = 1
    args = tuple(backend.asarray(v) for v in (a, p, n))
    terms = rl.triplet_margin_loss(*args, margin=1.0, swap=True, reduction="none")
    assert_close(terms, [1.0 - 0.5 + 1.0, 1.0 - 1.0 + 1.0], backend, rtol=1e-15)
    plain = rl.triplet_margin_loss(*args, margin=1.0, reduction="none")
    assert_close(plain, [1.0 - 1.5 + 1.0, 1.0], backend, rtol=1e-15)
    # a tie d_pn == d_an keeps d_an: its gradient goes to the anchor, not to p
    tie = tuple(backend.asarray(v) for v in (a[:1], p[:1], np.array([[0.5, 0.0]])))
    _, (ga, gp, gn) = rl.value_and_grad(rl.triplet_margin_loss, *tie, swap=True)
    assert_close(ga, [[-1.0 + 1.0, 0.0]], backend, atol=1e-15)  # -∂d_ap/∂a·… cancel
    assert_close(gp, [[1.0, 0.0]], backend, atol=1e-15)
    assert_close(gn, [[-1.0, 0.0]], backend, atol=1e-15)


# --------------------------------------------------------------------------
# bad input

X = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0], [-1.0, 0.5]])
LABELS = np.array([0, 1, 0, 1])


def _labeled_cases():
    nan = X.copy()
    nan[1, 0] = np.nan
    inf = X.copy()
    inf[2, 1] = np.inf
    return [
        ({"x": X[0]}, ValueError, "x: expected a 2-D array"),
        ({"x": X[None]}, ValueError, "x: expected a 2-D array"),
        ({"x": X.astype(np.int64)}, TypeError, "x: expected a real floating dtype"),
        ({"x": X.tolist()}, TypeError, "x: expected an array"),
        ({"x": nan}, ValueError, "x: expected finite values"),
        ({"x": inf}, ValueError, "x: expected finite values"),
        ({"labels": LABELS.astype(np.float64)}, TypeError, "labels: expected an integer"),
        ({"labels": LABELS[None]}, ValueError, "labels: expected a 1-D array"),
        ({"labels": LABELS[:3]}, ValueError, "labels: expected 4 entries"),
        ({"labels": None}, TypeError, "labels: expected an array"),
        ({"margin": -1.0}, ValueError, "margin: expected a finite number >= 0"),
        ({"margin": float("nan")}, ValueError, "margin: expected a finite number >= 0"),
        ({"margin": float("inf")}, ValueError, "margin: expected a finite number >= 0"),
        ({"margin": "1"}, TypeError, "margin: expected a real number"),
        ({"margin": True}, TypeError, "margin: expected a real number"),
        ({"metric": "manhattan"}, ValueError, "metric: expected one of"),
        ({"metric": None}, ValueError, "metric: expected one of"),
        ({"reduction": "avg"}, ValueError, "reduction: expected one of"),
        ({"normalize": 1}, TypeError, "normalize: expected a bool"),
        ({"normalize": "yes"}, TypeError, "normalize: expected a bool"),
    ]


@pytest.mark.parametrize("kind", list(LOSSES))
@pytest.mark.parametrize(("override", "exc", "match"), _labeled_cases())
def test_labeled_losses_reject_bad_input(kind, override, exc, match):
    kw = {"x": X, "labels": LABELS} | override
    x, labels = kw.pop("x"), kw.pop("labels")
    with pytest.raises(exc, match=r"^" + match):
        LOSSES[kind](x, labels, **kw)
    with pytest.raises(exc, match=r"^" + match):
        rl.value_and_grad(LOSSES[kind], x, labels, **kw)


@pytest.mark.parametrize("kind", ["batch_all", "batch_hard"])
@pytest.mark.parametrize("soft", [1, 0, None, "True"])
def test_soft_must_be_a_bool(kind, soft):
    with pytest.raises(TypeError, match=r"^soft: expected a bool"):
        LOSSES[kind](X, LABELS, soft=soft)


def test_labeled_losses_reject_mixed_namespaces():
    torch = pytest.importorskip("torch")
    for fn in LOSSES.values():
        with pytest.raises(TypeError, match=r"^x, labels: expected arrays from one library"):
            fn(X, torch.tensor(LABELS))


def test_labeled_losses_reject_mixed_devices():
    strict = pytest.importorskip("array_api_strict")
    x = strict.asarray(X)
    labels = strict.asarray(LABELS, device=strict.Device("device1"))
    for fn in LOSSES.values():
        with pytest.raises(ValueError, match=r"^labels: expected an array on the device of x"):
            fn(x, labels)


def _triplet_cases():
    nan = X.copy()
    nan[0, 0] = np.nan
    return [
        ({"anchor": X[0]}, ValueError, "anchor: expected a 2-D array"),
        ({"positive": X[:3]}, ValueError, r"positive: expected shape \(4, 2\) \(as anchor\)"),
        ({"negative": X[:, :1]}, ValueError, r"negative: expected shape \(4, 2\)"),
        ({"negative": X.astype(np.float32)}, TypeError,
         "negative: expected the dtype of anchor"),
        ({"positive": X.astype(np.int32)}, TypeError, "positive: expected a real floating"),
        ({"negative": nan}, ValueError, "negative: expected finite values"),
        ({"positive": None}, TypeError, "positive: expected an array"),
        ({"margin": -0.5}, ValueError, "margin: expected a finite number >= 0"),
        ({"metric": "l1"}, ValueError, "metric: expected one of"),
        ({"reduction": "max"}, ValueError, "reduction: expected one of"),
        ({"soft": 1}, TypeError, "soft: expected a bool"),
        ({"swap": None}, TypeError, "swap: expected a bool"),
        ({"normalize": 0}, TypeError, "normalize: expected a bool"),
    ]


@pytest.mark.parametrize(("override", "exc", "match"), _triplet_cases())
def test_triplet_margin_loss_rejects_bad_input(override, exc, match):
    kw = {"anchor": X, "positive": X[::-1].copy(), "negative": X + 1.0} | override
    args = (kw.pop("anchor"), kw.pop("positive"), kw.pop("negative"))
    with pytest.raises(exc, match=r"^" + match):
        rl.triplet_margin_loss(*args, **kw)


def test_triplet_margin_loss_rejects_mixed_namespaces():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"^anchor, positive, negative: expected arrays"):
        rl.triplet_margin_loss(X, X, torch.tensor(X))


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("reduction", ["none", "mean_nonzero"])
def test_batch_all_in_many_blocks_matches_brute_force(monkeypatch, soft, reduction):
    # blocks of 64 elements: the row-block (hinge) and triplet-block (soft)
    # loops run many times, as they do at large B with the real sizes
    monkeypatch.setattr(_ops, "BLOCK_FLOOR_CPU", 64)
    monkeypatch.setattr(_ops, "BLOCKS", 7)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((23, 3))
    labels = rng.permutation(np.arange(23) % 5)
    g = rng.standard_normal((23, 23)) if reduction == "none" else None
    expected, expected_grad = o_loss(x, labels, "batch_all", soft=soft, reduction=reduction, g=g)
    value, pullback = rl.vjp(rl.batch_all_triplet_loss, x, labels, soft=soft,
                             reduction=reduction)
    (grad,) = pullback(1.0 if g is None else g)[:1]
    np.testing.assert_allclose(np.asarray(value), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-8, atol=1e-10)


def test_concrete_labels_never_build_the_dense_selection(monkeypatch):
    """With concrete labels, ``reduction="none"`` and ``mine_semihard`` work on
    the B×W positive table: the dense paths (int64 B×B sort orders and
    slots, B×B threshold sorts: the memory of issue 13) are not built, and
    the results still match the oracles."""
    import refloss.mining as mining
    import refloss.triplet as triplet

    def refuse(*args, **kwargs):
        raise AssertionError("dense B×B selection built")

    for module, name in [(mining, "SemiHard"), (triplet, "SemiHard"),
                         (triplet, "_batch_all_hinge"), (triplet, "_batch_all_hinge_grad")]:
        monkeypatch.setattr(module, name, refuse)
    rng = np.random.default_rng(5)
    labels = rng.permutation(np.repeat(np.arange(3), [14, 3, 5]))  # one class past the loop width
    x = rng.standard_normal((labels.shape[0], 3))
    for kind in ("batch_all", "semihard"):
        expected, expected_grad = o_loss(x, labels, kind, margin=0.7, reduction="sum")
        value, pullback = rl.vjp(LOSSES[kind], x, labels, margin=0.7, reduction="none")
        (gx,) = [g for g in pullback(np.ones_like(value)) if g is not None]
        np.testing.assert_allclose(np.sum(value), expected, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(gx, expected_grad, rtol=1e-10, atol=1e-12)
    anchor, _, _ = rl.mine_semihard(x, labels)
    assert anchor.shape[0] == sum(c * (c - 1) for c in (14, 3, 5))
