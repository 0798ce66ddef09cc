"""refloss.adapters.jax: refloss's analytic VJPs as JAX custom_vjp rules.

Oracles, all independent of the code under test:
* plain ``jax.numpy`` transcriptions of every loss (brute force: the B×B×B
  triplet tensor, masked max/min), differentiated by JAX itself;
* central finite differences in float64 of the adapter's value;
* the core on NumPy (``refloss`` itself, a different backend and no JAX).
Inputs are drawn away from every kink (distance 0, hinge at 0, ties in a
max/min, the semi-hard boundary) so that the gradient is unique there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from helpers import directional_fd, tolerance, unit_directions
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import refloss as rl
from refloss.vjp import defvjp

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)  # as conftest's jax backend and test_jit do
jnp = jax.numpy
rlj = pytest.importorskip("refloss.adapters.jax")

KINK = 1e-4  # minimum distance of an input to any kink of the loss
ROWS, DIM, MAX_CLASSES = 5, 3, 3  # the shape of every drawn batch


def examples(n):
    """``n`` examples under the ci/dev profiles, proportionally more under "thorough".

    Eager JAX compiles each new operation signature once (~10-90 ms each), and
    that, not the examples, dominates this file's time: it stays under a
    minute in CI with these counts.
    """
    return max(n, n * settings.default.max_examples // 25)


# ---------------------------------------------------------------------------
# plain jax.numpy transcriptions (the oracles)


def _sqrt0(d2):
    # sqrt with the value 0 at 0 and no NaN in its autodiff gradient there
    pos = d2 > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, d2, 1.0)), 0.0)


def _unit(x):
    return x / jnp.linalg.norm(x, axis=1, keepdims=True)


def o_pairwise(x, y, metric):
    if metric == "cosine":
        return 1.0 - _unit(x) @ _unit(y).T
    d2 = jnp.sum((x[:, None, :] - y[None, :, :]) ** 2, axis=-1)
    return d2 if metric == "sqeuclidean" else _sqrt0(d2)


def o_paired(a, b, metric):
    if metric == "cosine":
        return 1.0 - jnp.sum(_unit(a) * _unit(b), axis=1)
    d2 = jnp.sum((a - b) ** 2, axis=1)
    return d2 if metric == "sqeuclidean" else _sqrt0(d2)


def o_reduce(terms, reduction, count=None):
    if reduction == "none":
        return terms
    total = jnp.sum(terms)
    if reduction == "sum":
        return total
    n = jnp.sum(terms > 0) if reduction == "mean_nonzero" else (
        terms.size if count is None else count
    )
    return jnp.where(n > 0, total / jnp.maximum(n, 1), 0.0)


def o_hinge(z, soft):
    return jax.nn.softplus(z) if soft else jnp.maximum(z, 0.0)


def o_embed(x, normalize):
    return _unit(x) if normalize else x


def o_center_loss(x, labels, centers, *, reduction="sum"):
    return o_reduce(0.5 * jnp.sum((x - centers[labels]) ** 2, axis=1), reduction)


def o_contrastive_terms(d, same, margin, pos_margin, power):
    return jnp.where(
        same, jnp.maximum(d - pos_margin, 0.0) ** power, jnp.maximum(margin - d, 0.0) ** power
    )


def o_contrastive(a, b, same, *, margin=1.0, pos_margin=0.0, power=2, metric="euclidean",
                  normalize=False, reduction="mean"):
    d = o_paired(o_embed(a, normalize), o_embed(b, normalize), metric)
    return o_reduce(o_contrastive_terms(d, same, margin, pos_margin, power), reduction)


def o_contrastive_all_pairs(x, labels, *, margin=1.0, pos_margin=0.0, power=2,
                            metric="euclidean", normalize=False, reduction="mean"):
    e = o_embed(x, normalize)
    d = o_pairwise(e, e, metric)
    same = labels[:, None] == labels[None, :]
    i, j = np.triu_indices(x.shape[0], 1)  # row-major (0,1), (0,2), ..., (1,2), ...
    return o_reduce(o_contrastive_terms(d, same, margin, pos_margin, power)[i, j], reduction)


def o_triplet(a, p, n, *, margin=1.0, metric="euclidean", soft=False, swap=False,
              normalize=False, reduction="mean"):
    a, p, n = (o_embed(v, normalize) for v in (a, p, n))
    d_ap, d_an = o_paired(a, p, metric), o_paired(a, n, metric)
    if swap:
        d_an = jnp.minimum(d_an, o_paired(p, n, metric))
    z = d_ap - d_an if soft else d_ap - d_an + margin
    return o_reduce(o_hinge(z, soft), reduction)


def _masks(labels):
    b = labels.shape[0]
    same = labels[:, None] == labels[None, :]
    pos = same & ~np.eye(b, dtype=bool)
    return pos, ~same


def o_batch_all(x, labels, *, margin=1.0, metric="euclidean", soft=False, normalize=False,
                reduction="mean_nonzero"):
    e = o_embed(x, normalize)
    d = o_pairwise(e, e, metric)
    pos, neg = _masks(labels)
    valid = pos[:, :, None] & neg[:, None, :]  # (a, p, n)
    z = d[:, :, None] - d[:, None, :]
    terms = jnp.where(valid, o_hinge(z if soft else z + margin, soft), 0.0)
    if reduction == "none":
        return jnp.sum(terms, axis=2)
    if reduction == "mean":
        return o_reduce(terms.ravel(), "mean", jnp.sum(valid))
    return o_reduce(terms.ravel(), reduction)


def o_batch_hard(x, labels, *, margin=1.0, metric="euclidean", soft=False, normalize=False,
                 reduction="mean"):
    e = o_embed(x, normalize)
    d = o_pairwise(e, e, metric)
    pos, neg = _masks(labels)
    valid = pos.any(axis=1) & neg.any(axis=1)
    hardest_p = jnp.max(jnp.where(pos, d, -jnp.inf), axis=1)
    hardest_n = jnp.min(jnp.where(neg, d, jnp.inf), axis=1)
    z = jnp.where(valid, hardest_p - hardest_n, 0.0)
    terms = jnp.where(valid, o_hinge(z if soft else z + margin, soft), 0.0)
    if reduction == "mean":
        return o_reduce(terms, "mean", jnp.sum(valid))
    return o_reduce(terms, reduction)


def o_semihard(x, labels, *, margin=1.0, metric="euclidean", normalize=False,
               reduction="mean"):
    e = o_embed(x, normalize)
    d = o_pairwise(e, e, metric)
    pos, neg = _masks(labels)
    valid = pos & neg.any(axis=1)[:, None]
    d_an = d[:, None, :]  # (a, ·, n)
    farther = neg[:, None, :] & (d_an > d[:, :, None])  # (a, p, n): d_an > d_ap
    nearest_farther = jnp.min(jnp.where(farther, d_an, jnp.inf), axis=2)
    farthest = jnp.max(jnp.where(neg, d, -jnp.inf), axis=1)[:, None]
    chosen = jnp.where(farther.any(axis=2), nearest_farther, farthest)
    terms = jnp.where(valid, jnp.maximum(d - jnp.where(valid, chosen, 0.0) + margin, 0.0), 0.0)
    if reduction == "none":
        return terms
    if reduction == "mean":
        return o_reduce(terms.ravel(), "mean", jnp.sum(valid))
    return o_reduce(terms.ravel(), reduction)


# ---------------------------------------------------------------------------
# kinks: how far (in distance units) an input is from the nearest one, in NumPy
# (eager JAX would compile every operation here once more)


def _np_unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _np_embed(x, normalize):
    return _np_unit(x) if normalize else x


def _np_pairwise(x, y, metric):
    if metric == "cosine":
        return 1.0 - _np_unit(x) @ _np_unit(y).T
    d2 = np.sum((x[:, None, :] - y[None, :, :]) ** 2, axis=-1)
    return d2 if metric == "sqeuclidean" else np.sqrt(d2)


def _np_paired(a, b, metric):
    if metric == "cosine":
        return 1.0 - np.sum(_np_unit(a) * _np_unit(b), axis=1)
    d2 = np.sum((a - b) ** 2, axis=1)
    return d2 if metric == "sqeuclidean" else np.sqrt(d2)


def _np_dist(x, options):
    e = _np_embed(x, options.get("normalize", False))
    return _np_pairwise(e, e, options.get("metric", "euclidean"))


def _row_gaps(d):
    """Smallest gap between two off-diagonal entries of one row (ties, the semi-hard
    boundary) and smallest off-diagonal entry (distance 0)."""
    out = [np.inf]
    for a in range(d.shape[0]):
        row = np.sort(np.delete(d[a], a))
        out.append(row.min() if row.size else np.inf)
        if row.size > 1:
            out.append(np.diff(row).min())
    return min(out)


def k_labeled(args, options):
    x, labels = args
    d = _np_dist(x, options)
    pos, neg = _masks(labels)
    out = [_row_gaps(d)]
    if not options.get("soft", False):
        z = d[:, :, None] - d[:, None, :] + options.get("margin", 1.0)
        valid = pos[:, :, None] & neg[:, None, :]
        if valid.any():
            out.append(np.abs(z[valid]).min())
    return min(out)


def k_contrastive(args, options):
    a, b, same = args
    normalize = options.get("normalize", False)
    d = _np_paired(_np_embed(a, normalize), _np_embed(b, normalize), options["metric"])
    hinge = np.where(same, d - options["pos_margin"], options["margin"] - d)
    return min(np.abs(hinge).min(), d.min())


def k_all_pairs(args, options):
    x, labels = args
    d = _np_dist(x, options)
    same = labels[:, None] == labels[None, :]
    hinge = np.where(same, d - options["pos_margin"], options["margin"] - d)
    i, j = np.triu_indices(x.shape[0], 1)
    return min(np.abs(hinge[i, j]).min(), _row_gaps(d))


def k_triplet(args, options):
    a, p, n = (_np_embed(v, options["normalize"]) for v in args)
    metric = options["metric"]
    d_ap, d_an, d_pn = (_np_paired(u, v, metric) for u, v in ((a, p), (a, n), (p, n)))
    d_neg = np.minimum(d_an, d_pn) if options["swap"] else d_an
    out = [d_ap.min(), d_neg.min()]
    if options["swap"]:
        out.append(np.abs(d_an - d_pn).min())
    if not options["soft"]:
        out.append(np.abs(d_ap - d_neg + options["margin"]).min())
    return min(out)


def k_pairwise(args, options):
    x, y = args
    if y is None:
        return _row_gaps(_np_pairwise(x, x, "euclidean"))
    return float(_np_pairwise(x, y, "euclidean").min())


def k_paired(args, options):
    return float(_np_paired(args[0], args[1], "euclidean").min())


def k_none(args, options):
    return np.inf


# ---------------------------------------------------------------------------
# the cases: builder of NumPy float64 inputs, options, oracle, kink measure

METRICS = st.sampled_from(["euclidean", "sqeuclidean", "cosine"])
MARGINS = st.sampled_from([0.2, 1.0, 2.5])
BOOLS = st.booleans()


def _labels(rng, b, c):
    return rng.integers(0, c, size=b)


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable  # (rng, rows, dim, classes) -> tuple of NumPy arguments
    options: st.SearchStrategy
    oracle: Callable
    kink: Callable
    float_args: tuple  # positions of the floating (differentiable) arguments

    def __repr__(self) -> str:
        return self.name


def _opts(**kw):
    return st.fixed_dictionaries(kw)


CASES = [
    Case("pairwise_distances(x)", lambda r, b, d, c: (r.normal(size=(b, d)), None),
         _opts(metric=METRICS), lambda x, y, **o: o_pairwise(x, x, o["metric"]),
         k_pairwise, (0,)),
    Case("pairwise_distances(x, y)",
         lambda r, b, d, c: (r.normal(size=(b, d)), r.normal(size=(b, d))),
         _opts(metric=METRICS), lambda x, y, **o: o_pairwise(x, y, o["metric"]),
         k_pairwise, (0, 1)),
    Case("paired_distances", lambda r, b, d, c: (r.normal(size=(b, d)), r.normal(size=(b, d))),
         _opts(metric=METRICS), lambda a, b, **o: o_paired(a, b, o["metric"]),
         k_paired, (0, 1)),
    Case("center_loss",
         lambda r, b, d, c: (r.normal(size=(b, d)), _labels(r, b, c),
                             r.normal(size=(MAX_CLASSES, d))),
         _opts(reduction=st.sampled_from(["sum", "mean", "none"])), o_center_loss, k_none,
         (0, 2)),
    Case("contrastive_loss",
         lambda r, b, d, c: (r.normal(size=(b, d)), r.normal(size=(b, d)),
                             r.integers(0, 2, size=b).astype(bool)),
         _opts(margin=MARGINS, pos_margin=st.sampled_from([0.0, 0.3]),
               power=st.sampled_from([1, 2]), metric=METRICS, normalize=BOOLS,
               reduction=st.sampled_from(["mean", "sum", "mean_nonzero", "none"])),
         o_contrastive, k_contrastive, (0, 1)),
    Case("contrastive_loss_all_pairs", lambda r, b, d, c: (r.normal(size=(b, d)), _labels(r, b, c)),
         _opts(margin=MARGINS, pos_margin=st.sampled_from([0.0, 0.3]),
               power=st.sampled_from([1, 2]), metric=METRICS, normalize=BOOLS,
               reduction=st.sampled_from(["mean", "sum", "mean_nonzero", "none"])),
         o_contrastive_all_pairs, k_all_pairs, (0,)),
    Case("triplet_margin_loss", lambda r, b, d, c: tuple(r.normal(size=(b, d)) for _ in range(3)),
         _opts(margin=MARGINS, metric=METRICS, soft=BOOLS, swap=BOOLS, normalize=BOOLS,
               reduction=st.sampled_from(["mean", "sum", "mean_nonzero", "none"])),
         o_triplet, k_triplet, (0, 1, 2)),
    Case("batch_all_triplet_loss", lambda r, b, d, c: (r.normal(size=(b, d)), _labels(r, b, c)),
         _opts(margin=MARGINS, metric=METRICS, soft=BOOLS, normalize=BOOLS,
               reduction=st.sampled_from(["mean_nonzero", "mean", "sum", "none"])),
         o_batch_all, k_labeled, (0,)),
    Case("batch_hard_triplet_loss", lambda r, b, d, c: (r.normal(size=(b, d)), _labels(r, b, c)),
         _opts(margin=MARGINS, metric=METRICS, soft=BOOLS, normalize=BOOLS,
               reduction=st.sampled_from(["mean", "sum", "mean_nonzero", "none"])),
         o_batch_hard, k_labeled, (0,)),
    Case("semihard_triplet_loss", lambda r, b, d, c: (r.normal(size=(b, d)), _labels(r, b, c)),
         _opts(margin=MARGINS, metric=METRICS, normalize=BOOLS,
               reduction=st.sampled_from(["mean", "sum", "mean_nonzero", "none"])),
         o_semihard, k_labeled, (0,)),
]


def _fn_name(case):
    return case.name.split("(")[0]


def adapter(case):
    return getattr(rlj, _fn_name(case))


def core(case):
    return getattr(rl, _fn_name(case))


@st.composite
def inputs(draw, case):
    """``(numpy_args, options)`` away from every kink, from a drawn seed.

    One batch shape throughout: eager JAX compiles every operation once per
    shape, and a new shape per example would cost seconds each. Labels,
    options and values vary.
    """
    seed = draw(st.integers(0, 2**32 - 1))
    # one class (no negatives) is an edge case with a test of its own below
    classes = draw(st.integers(2, MAX_CLASSES))
    options = draw(case.options)
    args = case.build(np.random.default_rng(seed), ROWS, DIM, classes)
    assume(case.kink(args, options) > KINK)
    return args, options


def to_jax(args, dtype=None):
    out = []
    for a in args:
        if a is None or dtype is None or a.dtype.kind != "f":
            out.append(None if a is None else jnp.asarray(a))
        else:
            out.append(jnp.asarray(a, dtype=dtype))
    return out


def diff_call(fn, args, options, float_args):
    """``fn`` as a function of its floating arguments only (the rest fixed)."""

    def f(*floats):
        full = list(args)
        for i, v in zip(float_args, floats):
            full[i] = v
        return fn(*full, **options)

    return f


def random_cotangent(value, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=np.shape(value)), dtype=value.dtype)


def case_params():
    return [pytest.param(c, id=c.name) for c in CASES]


# ---------------------------------------------------------------------------
# gradients


@pytest.mark.parametrize("case", case_params())
@settings(max_examples=examples(7))
@given(data=st.data())
def test_gradient_equals_jax_autodiff_of_plain_transcription(case, data):
    args, options = data.draw(inputs(case))
    jargs = to_jax(args)
    floats = [jargs[i] for i in case.float_args]
    value, pullback = jax.vjp(diff_call(adapter(case), jargs, options, case.float_args), *floats)
    ref_value, ref_pullback = jax.vjp(
        diff_call(case.oracle, jargs, options, case.float_args), *floats
    )
    cot = random_cotangent(ref_value)
    np.testing.assert_allclose(value, ref_value, rtol=1e-10, atol=1e-12)
    for got, want in zip(pullback(cot), ref_pullback(cot)):
        np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("case", case_params())
@settings(max_examples=examples(3))
@given(data=st.data())
def test_gradient_equals_central_differences_in_float64(case, data):
    args, options = data.draw(inputs(case))
    jargs = to_jax(args)
    fn = adapter(case)
    probe = fn(*jargs, **options)
    cot = random_cotangent(probe)

    def scalar(*floats):
        return jnp.sum(cot * diff_call(fn, jargs, options, case.float_args)(*floats))

    floats = [jargs[i] for i in case.float_args]
    grads = jax.grad(scalar, argnums=tuple(range(len(floats))))(*floats)
    rng = np.random.default_rng(1)
    for k, g in enumerate(grads):
        for v in unit_directions(rng, floats[k].shape, n=2):
            fd = directional_fd(scalar, floats, k, jnp.asarray(v), h=1e-6)
            assert abs(float(jnp.sum(g * v)) - fd) <= 1e-6 + 1e-5 * abs(fd), (k, fd)


# ---------------------------------------------------------------------------
# values, dtypes, jit


@pytest.mark.parametrize("case", case_params())
@settings(max_examples=examples(2))
@given(data=st.data())
def test_value_equals_core_on_numpy(case, data):
    args, options = data.draw(inputs(case))
    got = adapter(case)(*to_jax(args), **options)
    assert isinstance(got, jax.Array)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(got, core(case)(*args, **options), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("case", case_params())
@settings(max_examples=examples(1))
@given(data=st.data())
def test_float32_value_and_gradient_follow_the_float64_core(case, data):
    args, options = data.draw(inputs(case))
    jargs = to_jax(args, dtype=jnp.float32)
    floats = [jargs[i] for i in case.float_args]
    value, pullback = jax.vjp(diff_call(adapter(case), jargs, options, case.float_args), *floats)
    cot = random_cotangent(value)
    ref_value, ref_pullback = rl.vjp(core(case), *args, **options)
    ref_grads = ref_pullback(np.asarray(cot, dtype=np.float64))
    assert value.dtype == jnp.float32
    np.testing.assert_allclose(value, ref_value, **tolerance("float32"))
    for i, g in zip(case.float_args, pullback(cot)):
        assert g.dtype == jnp.float32
        np.testing.assert_allclose(g, ref_grads[i], **tolerance("float32"))


def test_bfloat16_is_computed_in_float32_and_cast_back():
    rng = np.random.default_rng(12)
    x, centers = rng.normal(size=(ROWS, DIM)), rng.normal(size=(MAX_CLASSES, DIM))
    labels = np.array([0, 1, 1, 2, 0])
    low = jnp.bfloat16
    value, (gx, gc) = jax.value_and_grad(rlj.center_loss, argnums=(0, 2))(
        jnp.asarray(x, dtype=low), jnp.asarray(labels), jnp.asarray(centers, dtype=low)
    )
    assert value.dtype == gx.dtype == gc.dtype == low
    # the reference on the bfloat16-rounded inputs, in float64
    xr, cr = (np.asarray(jnp.asarray(v, dtype=low), dtype=np.float64) for v in (x, centers))
    ref_value, ref_grads = rl.value_and_grad(rl.center_loss, xr, labels, cr)
    np.testing.assert_allclose(np.float64(value), ref_value, rtol=2**-8)
    np.testing.assert_allclose(np.asarray(gx, np.float64), ref_grads[0], rtol=2**-8, atol=2**-9)
    np.testing.assert_allclose(np.asarray(gc, np.float64), ref_grads[2], rtol=2**-8, atol=2**-8)


@pytest.mark.parametrize("case", case_params())
def test_jit_of_grad_equals_eager_grad(case):
    # one fixed batch per function (each jit compiles the whole graph anew)
    args = case.build(np.random.default_rng(11), ROWS, DIM, 2)
    assert case.kink(args, {"metric": "euclidean", "pos_margin": 0.0, "margin": 1.0,
                            "normalize": False, "soft": False, "swap": False}) > KINK
    jargs = to_jax(args)
    f = diff_call(adapter(case), jargs, {}, case.float_args)
    cot = random_cotangent(f(*(jargs[i] for i in case.float_args)))

    def scalar(*floats):
        return jnp.sum(cot * f(*floats))

    floats = [jargs[i] for i in case.float_args]
    argnums = tuple(range(len(floats)))
    eager = jax.value_and_grad(scalar, argnums=argnums)(*floats)
    jitted = jax.jit(jax.value_and_grad(scalar, argnums=argnums))(*floats)
    np.testing.assert_allclose(jitted[0], eager[0], rtol=1e-12, atol=1e-13)
    for got, want in zip(jitted[1], eager[1]):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_labels_passed_through_jit_are_traced_and_get_no_gradient():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(ROWS, DIM)))
    labels = jnp.asarray([0, 0, 1, 1, 2])

    @jax.jit
    def step(x, labels):
        return jax.value_and_grad(rlj.semihard_triplet_loss)(x, labels, margin=0.5)

    value, grad = step(x, labels)
    ref_value, ref_grads = rl.value_and_grad(
        rl.semihard_triplet_loss, np.asarray(x), np.asarray(labels), margin=0.5
    )
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grads[0], rtol=1e-10, atol=1e-12)


def test_closed_over_labels_and_centers_work_under_jit_of_grad():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(ROWS, DIM)))
    labels = jnp.asarray([0, 1, 1, 2, 0])
    centers = jnp.asarray(rng.normal(size=(MAX_CLASSES, DIM)))
    grad = jax.jit(jax.grad(lambda x: rlj.center_loss(x, labels, centers)))(x)
    np.testing.assert_allclose(grad, x - centers[labels], rtol=1e-12)


def test_options_are_static_argnames_under_jit():
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(ROWS, DIM)))
    labels = jnp.asarray([0, 1, 0, 1, 2])
    f = jax.jit(rlj.batch_hard_triplet_loss, static_argnames=("margin", "metric"))
    got = f(x, labels, margin=0.3, metric="cosine")
    want = rl.batch_hard_triplet_loss(np.asarray(x), np.asarray(labels), margin=0.3,
                                      metric="cosine")
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_reduction_none_pulls_back_a_cotangent_with_jax_vjp_under_jit():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(ROWS, DIM))
    labels = np.array([0, 0, 1, 1, 2])
    cot = rng.normal(size=(ROWS, ROWS))

    @jax.jit
    def pull(x, labels, cot):
        value, pullback = jax.vjp(
            lambda x: rlj.batch_all_triplet_loss(x, labels, reduction="none"), x
        )
        return value, pullback(cot)[0]

    value, grad = pull(jnp.asarray(x), jnp.asarray(labels), jnp.asarray(cot))
    ref_value, ref_pullback = rl.vjp(rl.batch_all_triplet_loss, x, labels, reduction="none")
    assert value.shape == (ROWS, ROWS)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad, ref_pullback(cot)[0], rtol=1e-10, atol=1e-12)


def test_labels_and_same_get_float0_cotangents():
    rng = np.random.default_rng(7)
    a, b = (jnp.asarray(rng.normal(size=(ROWS, DIM))) for _ in range(2))
    same = jnp.asarray([True, False, True, True, False])
    labels = jnp.asarray([0, 1, 0, 2, 2])
    _, pullback = jax.vjp(rlj.contrastive_loss, a, b, same)
    gsame = pullback(jnp.asarray(1.0))[2]
    assert gsame.dtype == jax.dtypes.float0 and gsame.shape == (ROWS,)
    _, pullback = jax.vjp(rlj.center_loss, a, labels, b[:MAX_CLASSES])
    gx, glabels, gc = pullback(jnp.asarray(1.0))
    assert glabels.dtype == jax.dtypes.float0 and glabels.shape == (ROWS,)
    assert gx.shape == (ROWS, DIM) and gc.shape == (MAX_CLASSES, DIM)


# ---------------------------------------------------------------------------
# edge cases


@pytest.mark.parametrize("fn", ["batch_all_triplet_loss", "batch_hard_triplet_loss",
                                "semihard_triplet_loss"])
@pytest.mark.parametrize("labels", [[0, 0, 0, 0, 0], [0, 1, 2, 3, 4]],
                         ids=["one-class", "singletons"])
def test_no_valid_triplet_gives_zero_loss_and_zero_gradient(fn, labels):
    x = jnp.asarray(np.random.default_rng(8).normal(size=(ROWS, DIM)))
    value, grad = jax.value_and_grad(getattr(rlj, fn))(x, jnp.asarray(labels))
    assert float(value) == 0.0
    assert np.array_equal(np.asarray(grad), np.zeros((ROWS, DIM)))


DUPLICATE_CALLS = {
    "pairwise_distances": lambda f, x, y: jnp.sum(f(x)),
    "paired_distances": lambda f, x, y: jnp.sum(f(x, x)),
    "center_loss": lambda f, x, y: f(x, y, x[:3]),
    "contrastive_loss": lambda f, x, y: f(x, x, y == 0),
    "contrastive_loss_all_pairs": lambda f, x, y: f(x, y),
    "triplet_margin_loss": lambda f, x, y: f(x, x, x, swap=True),
    "batch_all_triplet_loss": lambda f, x, y: f(x, y),
    "batch_hard_triplet_loss": lambda f, x, y: f(x, y),
    "semihard_triplet_loss": lambda f, x, y: f(x, y),
}


@pytest.mark.parametrize("name", list(DUPLICATE_CALLS))
def test_duplicate_embeddings_give_a_finite_gradient(name):
    # rows 0, 1 and 4 coincide, and 2 equals 3: euclidean distances exactly 0
    x = jnp.asarray([[1.0, 2.0, 0.0], [1.0, 2.0, 0.0], [0.5, -1.0, 3.0], [0.5, -1.0, 3.0],
                     [1.0, 2.0, 0.0]])
    y = jnp.asarray([0, 1, 0, 1, 2])
    call = DUPLICATE_CALLS[name]
    g = jax.grad(lambda x: call(getattr(rlj, name), x, y))(x)
    assert np.all(np.isfinite(np.asarray(g)))


def test_empty_batch_gives_zero_and_an_empty_gradient():
    x = jnp.zeros((0, 3))
    value, grad = jax.value_and_grad(rlj.batch_hard_triplet_loss)(x, jnp.zeros((0,), int))
    assert float(value) == 0.0 and grad.shape == (0, 3)


def test_wrap_differentiates_the_first_output_of_a_tuple_valued_rule():
    # a preset-shaped rule returning (loss, statistic): L = Σ x², fraction = mean(x > 0)
    def fwd(x, *, scale=1.0):
        return (scale * jnp.sum(x * x), jnp.mean(x > 0)), (x, scale)

    def bwd(res, g):
        x, scale = res
        return (2.0 * scale * g * x,)

    @defvjp(fwd, bwd)
    def loss_and_fraction(x, *, scale=1.0):
        return fwd(x, scale=scale)[0]

    f = rlj.wrap(loss_and_fraction)
    x = jnp.asarray([1.0, -2.0, 3.0])
    grad = jax.grad(lambda x: f(x, scale=0.5)[0])(x)
    np.testing.assert_allclose(grad, x, rtol=1e-15)
    assert float(f(x)[1]) == pytest.approx(2 / 3)


def test_wrap_of_a_compat_preset_pulls_back_the_preset_rule():
    # Caffe's center "gradient" is its Eq. 4 center diff, not the derivative:
    # the adapter must return the preset's rule, not autodiff of its forward
    from refloss.compat import caffe

    rng = np.random.default_rng(10)
    x, centers = rng.normal(size=(ROWS, DIM)), rng.normal(size=(MAX_CLASSES, DIM))
    labels = np.array([0, 1, 1, 2, 0])
    f = rlj.wrap(caffe.center_loss)
    value, (gx, gc) = jax.value_and_grad(f, argnums=(0, 2))(
        jnp.asarray(x), jnp.asarray(labels), jnp.asarray(centers)
    )
    ref_value, ref_grads = rl.value_and_grad(caffe.center_loss, x, labels, centers)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(gx, ref_grads[0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gc, ref_grads[2], rtol=1e-12, atol=1e-14)


def test_grad_runs_the_forward_once_and_the_backward_on_its_residuals():
    calls = []

    def fwd(x, *, scale=1.0):
        calls.append("forward")
        return scale * jnp.sum(x * x), (x, scale, "a static residual")

    def bwd(res, g):
        calls.append("backward")
        x, scale, tag = res
        assert tag == "a static residual"
        return (2.0 * scale * g * x,)

    @defvjp(fwd, bwd)
    def square(x, *, scale=1.0):
        return fwd(x, scale=scale)[0]

    x = jnp.asarray([1.0, -2.0])
    np.testing.assert_allclose(jax.grad(rlj.wrap(square))(x, scale=3.0), 6.0 * x)
    assert calls == ["forward", "backward"]


def test_forward_mode_raises_as_for_every_custom_vjp():
    x = jnp.asarray(np.random.default_rng(13).normal(size=(ROWS, DIM)))
    with pytest.raises(TypeError, match=r"can't apply forward-mode autodiff"):
        jax.jvp(rlj.pairwise_distances, (x,), (x,))


def test_wrap_keeps_name_signature_and_docstring():
    import inspect

    for name in rlj.__all__:
        if name == "wrap":
            continue
        fn, ref = getattr(rlj, name), getattr(rl, name)
        assert fn.__name__ == name
        assert inspect.signature(fn) == inspect.signature(ref)
        assert fn.__doc__.startswith(ref.__doc__.rstrip()) and "custom_vjp" in fn.__doc__


# ---------------------------------------------------------------------------
# bad input: the core's errors, on concrete arrays


def test_wrap_rejects_a_function_without_an_analytic_vjp():
    with pytest.raises(TypeError, match=r"fn: expected a refloss function with an analytic VJP"):
        rlj.wrap(lambda x: x)


def test_integer_embeddings_raise_the_core_type_error():
    with pytest.raises(TypeError, match=r"x: expected a real floating dtype, got int"):
        rlj.batch_hard_triplet_loss(jnp.ones((3, 2), int), jnp.asarray([0, 1, 0]))


def test_floating_labels_raise_the_core_type_error():
    with pytest.raises(TypeError, match=r"labels: expected an integer dtype"):
        rlj.center_loss(jnp.ones((3, 2)), jnp.asarray([0.0, 1.0, 0.0]), jnp.zeros((2, 2)))


def test_numeric_same_raises_the_core_type_error():
    with pytest.raises(TypeError, match=r"same: expected a boolean array"):
        rlj.contrastive_loss(jnp.ones((2, 2)), jnp.ones((2, 2)), jnp.asarray([1, 0]))


def test_nan_raises_the_core_value_error_under_eager_grad():
    x = jnp.asarray([[0.0, 1.0], [jnp.nan, 2.0], [3.0, 4.0]])
    with pytest.raises(ValueError, match=r"x: expected finite values, got NaN or inf"):
        jax.grad(rlj.semihard_triplet_loss)(x, jnp.asarray([0, 0, 1]))


def test_nan_is_not_checked_inside_jit():
    # documented (docs/errors.md): a tracer has no values, so the check that
    # raises above is skipped and the call goes through
    x = jnp.asarray([[0.0, 1.0], [jnp.nan, 2.0], [3.0, 4.0]])
    assert jax.jit(rlj.pairwise_distances)(x).shape == (3, 3)


def test_integer_embeddings_raise_at_trace_time_under_jit():
    with pytest.raises(TypeError, match=r"x: expected a real floating dtype"):
        jax.jit(rlj.pairwise_distances)(jnp.ones((3, 2), int))


def test_unknown_metric_raises_the_core_value_error():
    with pytest.raises(ValueError, match=r"metric: expected one of .*got 'manhattan'"):
        rlj.paired_distances(jnp.ones((2, 2)), jnp.ones((2, 2)), metric="manhattan")


def test_negative_margin_raises_the_core_value_error():
    with pytest.raises(ValueError, match=r"margin: expected a finite number >= 0, got -1.0"):
        rlj.triplet_margin_loss(jnp.ones((2, 2)), jnp.ones((2, 2)), jnp.ones((2, 2)), margin=-1.0)


def test_traced_margin_raises_the_core_type_error():
    # options are static: a margin passed as a jit argument is a tracer, not a number
    with pytest.raises(TypeError, match=r"margin: expected a real number"):
        jax.jit(rlj.batch_all_triplet_loss)(jnp.ones((3, 2)), jnp.asarray([0, 0, 1]), margin=0.5)


def test_mismatched_rows_raise_the_core_value_error():
    with pytest.raises(ValueError, match=r"labels: expected 3 entries \(one per row of x\), got 2"):
        rlj.batch_all_triplet_loss(jnp.ones((3, 2)), jnp.asarray([0, 1]))


def test_a_list_raises_the_core_type_error():
    with pytest.raises(TypeError, match=r"x: expected an array .*got builtins.list"):
        rlj.pairwise_distances([[0.0, 1.0]])


def test_an_array_of_another_library_raises_a_type_error_naming_it():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"x: expected a JAX array .*got torch.Tensor"):
        rlj.pairwise_distances(torch.ones((2, 2), dtype=torch.float64))


def test_numpy_arrays_are_converted_like_any_jax_numpy_function():
    x = np.random.default_rng(9).normal(size=(ROWS, DIM))
    value = rlj.pairwise_distances(x)
    assert isinstance(value, jax.Array)
    np.testing.assert_allclose(value, rl.pairwise_distances(x), rtol=1e-12, atol=1e-15)
