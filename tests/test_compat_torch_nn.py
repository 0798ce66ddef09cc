"""refloss.compat.torch_nn against torch.nn.functional itself, side by side.

Oracles, written here independently of refloss:

* torch (skipped when absent): ``F.pairwise_distance``,
  ``F.triplet_margin_loss`` and ``F.triplet_margin_with_distance_loss`` on the
  same float64 rows, value and autograd gradient, with a random upstream
  cotangent for ``reduction="none"``;
* a NumPy transcription of ATen's ``pairwise_distance`` (``norm(x1 − x2 + eps,
  p)``) and ``triplet_margin_loss`` (``clamp_min(margin + d_ap − d_an, 0)``),
  which runs everywhere, plus central differences for the gradient.

Rows are seeded normal draws (generic: no accidental ties or hinge zeros)
with drawn duplicates — anchor = positive (d_ap = eps·D^(1/p)), positive =
negative (a swap tie) — and the kinks (hinge exactly 0, swap ties) have
their own tests. Every documented difference has a test that shows it.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from helpers import assert_close, directional_fd, unit_directions
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import refloss as rl
from refloss.compat import torch_nn as tn

TIGHT = {"rtol": 1e-10, "atol": 1e-12}


@st.composite
def triplets(draw, min_rows=0, max_rows=6, duplicates=True):
    n = draw(st.integers(min_rows, max_rows))
    dim = draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1e-3, 1.0, 10.0]))
    a, p, q = (rng.normal(size=(n, dim)) * scale for _ in range(3))
    if duplicates and n:
        for row in draw(st.lists(st.integers(0, n - 1), max_size=2)):
            p[row] = a[row]  # d_ap = eps·D^(1/p); with swap, d_an = d_pn: a tie
        for row in draw(st.lists(st.integers(0, n - 1), max_size=2)):
            q[row] = p[row]  # the negative on the positive
    return a, p, q


norm_options = st.fixed_dictionaries({
    "p": st.sampled_from([2.0, 1.0, 1.5, 3.0]),
    "eps": st.sampled_from([1e-6, 0.0, 1e-3, -1e-6]),
})
loss_options = st.fixed_dictionaries({
    "margin": st.sampled_from([1.0, 0.2, 3.0]),
    "swap": st.booleans(),
    "reduction": st.sampled_from(["mean", "sum", "none"]),
})


def torch_grads(fn, arrays, cotangent):
    """Value and autograd gradients of a torch function of float64 arrays."""
    torch = pytest.importorskip("torch")
    tensors = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    (out * torch.as_tensor(cotangent, dtype=torch.float64)).sum().backward()
    return out.detach().numpy(), [t.grad.numpy() for t in tensors]


def cotangent_for(reduction, rows, seed):
    if reduction == "none":
        return np.random.default_rng(seed).normal(size=rows)
    return 1.0


def assert_grads_close(got, expected):
    for g, e in zip(got, expected):
        scale = max(1.0, float(np.max(np.abs(e), initial=0.0)))
        np.testing.assert_allclose(g, e, rtol=1e-9, atol=1e-10 * scale)


# --------------------------------------------------------------------------
# NumPy transcriptions of ATen


def np_pairwise_distance(x1, x2, p=2.0, eps=1e-6):
    """Distance.cpp: at::norm(x1 - x2 + eps, p, innermost_dim)."""
    v = (x1 - x2) + eps
    return np.array([np.sum(np.abs(row) ** p) ** (1.0 / p) for row in v])


def np_triplet_margin_loss(a, p, n, margin=1.0, p_norm=2.0, eps=1e-6, swap=False,
                           reduction="mean"):
    """Loss.cpp triplet_margin_loss, then apply_loss_reduction (empty mean: 0 here)."""
    dist_pos = np_pairwise_distance(a, p, p_norm, eps)
    dist_neg = np_pairwise_distance(a, n, p_norm, eps)
    if swap:
        dist_neg = np.minimum(dist_neg, np_pairwise_distance(p, n, p_norm, eps))
    out = np.maximum((margin + dist_pos) - dist_neg, 0.0)
    if reduction == "none":
        return out
    if reduction == "sum" or out.size == 0:
        return float(out.sum())
    return float(out.mean())


# --------------------------------------------------------------------------
# pairwise_distance


@given(triplets(min_rows=1), norm_options, st.integers(0, 2**16))
def test_pairwise_distance_matches_torch(data, options, seed):
    torch = pytest.importorskip("torch")
    x1, x2, _ = data
    g = np.random.default_rng(seed).normal(size=x1.shape[0])
    value, pullback = rl.vjp(tn.pairwise_distance, x1, x2, **options)
    expected, expected_grads = torch_grads(
        lambda u, v: torch.nn.functional.pairwise_distance(u, v, **options), [x1, x2], g)
    np.testing.assert_allclose(value, expected, **TIGHT)
    assert_grads_close(pullback(g), expected_grads)


@given(triplets(min_rows=1), norm_options)
def test_pairwise_distance_matches_the_aten_transcription(data, options):
    x1, x2, _ = data
    np.testing.assert_allclose(tn.pairwise_distance(x1, x2, **options),
                               np_pairwise_distance(x1, x2, **options), **TIGHT)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_identical_rows_are_eps_apart_not_zero(p):
    """eps is added to each component of the difference: d(x, x) = eps·D^(1/p),
    where refloss.paired_distances gives 0."""
    x = np.array([[0.3, -1.2, 2.0, 0.5], [1.0, 1.0, 1.0, 1.0]])
    got = tn.pairwise_distance(x, x, p=p)
    np.testing.assert_allclose(got, 1e-6 * 4 ** (1 / p), rtol=1e-12)
    assert not np.any(rl.paired_distances(x, x))


def test_identical_rows_get_a_unit_gradient():
    """At x1 = x2 the gradient is eps·1 / ‖eps·1‖ = 1/√D per coordinate (p = 2),
    where the reference's subgradient is 0."""
    torch = pytest.importorskip("torch")
    x = np.array([[0.3, -1.2, 2.0, 0.5]])
    _, pullback = rl.vjp(tn.pairwise_distance, x, x)
    g1, g2 = pullback(1.0)
    np.testing.assert_allclose(g1, np.full((1, 4), 0.5), rtol=1e-12)
    np.testing.assert_allclose(g2, np.full((1, 4), -0.5), rtol=1e-12)
    _, expected = torch_grads(torch.nn.functional.pairwise_distance, [x, x.copy()], 1.0)
    assert_grads_close((g1, g2), expected)
    _, ref = rl.vjp(rl.paired_distances, x, x)
    assert not np.any(ref(1.0)[0])


def test_the_distance_is_not_symmetric():
    x1 = np.array([[0.0, 0.0]])
    x2 = np.array([[1.0, 0.0]])
    forward, backward = tn.pairwise_distance(x1, x2), tn.pairwise_distance(x2, x1)
    # ‖(−1 + eps, eps)‖ versus ‖(1 + eps, eps)‖: they differ by about 2·eps
    np.testing.assert_allclose(float(backward[0] - forward[0]), 2e-6, rtol=1e-6)


# --------------------------------------------------------------------------
# triplet_margin_loss


@given(triplets(), norm_options, loss_options, st.integers(0, 2**16))
def test_triplet_margin_loss_matches_torch(data, norm, options, seed):
    torch = pytest.importorskip("torch")
    a, p, q = data
    assume(a.shape[0] > 0 or options["reduction"] != "mean")  # torch: NaN (tested below)
    g = cotangent_for(options["reduction"], a.shape[0], seed)
    value, pullback = rl.vjp(tn.triplet_margin_loss, a, p, q, **norm, **options)
    expected, expected_grads = torch_grads(
        lambda *t: torch.nn.functional.triplet_margin_loss(*t, **norm, **options), [a, p, q], g)
    np.testing.assert_allclose(value, expected, **TIGHT)
    assert_grads_close(pullback(g), expected_grads)


@given(triplets(), norm_options, loss_options)
def test_triplet_margin_loss_matches_the_aten_transcription(data, norm, options):
    a, p, q = data
    got = tn.triplet_margin_loss(a, p, q, **norm, **options)
    np.testing.assert_allclose(
        got, np_triplet_margin_loss(a, p, q, p_norm=norm["p"], eps=norm["eps"], **options),
        **TIGHT)


@settings(max_examples=15)
@given(triplets(min_rows=1, duplicates=False), norm_options, loss_options,
       st.integers(0, 2**16))
def test_triplet_margin_loss_gradient_matches_central_differences(data, norm, options, seed):
    a, p, q = data
    options = dict(options, reduction="sum")
    d_ap = np_pairwise_distance(a, p, norm["p"], norm["eps"])
    d_an = np_pairwise_distance(a, q, norm["p"], norm["eps"])
    d_pn = np_pairwise_distance(p, q, norm["p"], norm["eps"])
    d_neg = np.minimum(d_an, d_pn) if options["swap"] else d_an
    assume(np.min(np.abs(options["margin"] + d_ap - d_neg)) > 1e-4)
    assume(not options["swap"] or np.min(np.abs(d_an - d_pn)) > 1e-4)
    assume(np.min(np.abs(np.concatenate([a - p, a - q, p - q]) + norm["eps"])) > 1e-4)
    fn = functools.partial(tn.triplet_margin_loss, **norm, **options)
    grads = rl.vjp(tn.triplet_margin_loss, a, p, q, **norm, **options)[1](1.0)
    rng = np.random.default_rng(seed)
    for index in range(3):
        for v in unit_directions(rng, a.shape, n=1):
            fd = directional_fd(fn, [a, p, q], index, v)
            np.testing.assert_allclose(np.sum(grads[index] * v), fd, rtol=1e-5, atol=1e-6)


def test_hinge_exactly_at_zero_passes_gradient_one():
    """clamp_min's gradient is 1 where its input equals the bound; the
    reference's relu gives 0 there."""
    torch = pytest.importorskip("torch")
    a, p, q = np.zeros((1, 2)), np.array([[1.0, 0.0]]), np.array([[2.0, 0.0]])
    kw = {"margin": 1.0, "eps": 0.0}  # 1 + 1 − 2 = 0 exactly
    value, pullback = rl.vjp(tn.triplet_margin_loss, a, p, q, **kw)
    assert float(value) == 0.0
    ga, gp, gq = pullback(1.0)
    np.testing.assert_array_equal(gp, [[1.0, 0.0]])
    np.testing.assert_array_equal(gq, [[-1.0, 0.0]])
    _, expected = torch_grads(
        lambda *t: torch.nn.functional.triplet_margin_loss(*t, **kw), [a, p, q], 1.0)
    assert_grads_close((ga, gp, gq), expected)
    ref = rl.vjp(rl.triplet_margin_loss, a, p, q, margin=1.0)[1](1.0)
    assert not np.any(ref[1]) and not np.any(ref[2])


def test_swap_tie_splits_the_gradient_half_and_half():
    """anchor = positive: d_an = d_pn exactly; torch's min gives each half,
    refloss.triplet_margin_loss gives all to d_an."""
    torch = pytest.importorskip("torch")
    a = np.array([[0.0, 0.0, 0.0]])
    q = np.ones((1, 3))
    kw = {"margin": 3.0, "swap": True}
    _, pullback = rl.vjp(tn.triplet_margin_loss, a, a.copy(), q, **kw)
    grads = pullback(1.0)
    _, expected = torch_grads(
        lambda *t: torch.nn.functional.triplet_margin_loss(*t, **kw), [a, a.copy(), q], 1.0)
    assert_grads_close(grads, expected)
    unit = (-1.0 + 1e-6) / np.sqrt(3 * (-1.0 + 1e-6) ** 2)  # ∂d_an/∂a per coordinate
    np.testing.assert_allclose(grads[2], np.full((1, 3), 0.5 * unit + 0.5 * unit), rtol=1e-9)
    ref = rl.vjp(rl.triplet_margin_loss, a, a.copy(), q, margin=3.0, swap=True)[1](1.0)
    assert not np.allclose(ref[1], grads[1])


def test_margin_must_be_positive_as_in_torch():
    torch = pytest.importorskip("torch")
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match="margin must be greater than 0"):
        torch.nn.functional.triplet_margin_loss(*(torch.tensor(x),) * 3, margin=0.0)
    for fn in (tn.triplet_margin_loss, tn.triplet_margin_with_distance_loss):
        with pytest.raises(ValueError, match=r"^margin: expected a finite number > 0"):
            fn(x, x, x, margin=0.0)


def test_empty_batch_mean_is_zero_where_torch_gives_nan():
    torch = pytest.importorskip("torch")
    e = np.zeros((0, 3))
    assert np.isnan(torch.nn.functional.triplet_margin_loss(*(torch.tensor(e),) * 3).item())
    for fn in (tn.triplet_margin_loss, tn.triplet_margin_with_distance_loss):
        value, grads = rl.value_and_grad(fn, e, e, e)
        assert float(value) == 0.0
        assert all(g.shape == (0, 3) for g in grads)


# --------------------------------------------------------------------------
# triplet_margin_with_distance_loss


DISTANCES = {
    "default": (None, None),
    "exact euclidean": (rl.paired_distances, "exact"),
    "L1 pairwise_distance": (functools.partial(tn.pairwise_distance, p=1.0), "l1"),
}


def _torch_distance(name):
    torch = pytest.importorskip("torch")
    if name is None:
        return None
    if name == "exact":
        return lambda x, y: torch.linalg.vector_norm(x - y, dim=-1)
    return torch.nn.PairwiseDistance(p=1.0)


@given(triplets(), loss_options, st.sampled_from(sorted(DISTANCES)), st.integers(0, 2**16))
def test_triplet_margin_with_distance_loss_matches_torch(data, options, name, seed):
    torch = pytest.importorskip("torch")
    a, p, q = data
    assume(a.shape[0] > 0 or options["reduction"] != "mean")
    ours, theirs = DISTANCES[name]
    g = cotangent_for(options["reduction"], a.shape[0], seed)
    value, pullback = rl.vjp(tn.triplet_margin_with_distance_loss, a, p, q,
                             distance_function=ours, **options)
    expected, expected_grads = torch_grads(
        lambda *t: torch.nn.functional.triplet_margin_with_distance_loss(
            *t, distance_function=_torch_distance(theirs), **options), [a, p, q], g)
    np.testing.assert_allclose(value, expected, **TIGHT)
    assert_grads_close(pullback(g), expected_grads)


@given(triplets(), loss_options)
def test_default_distance_is_triplet_margin_loss(data, options):
    a, p, q = data
    np.testing.assert_allclose(tn.triplet_margin_with_distance_loss(a, p, q, **options),
                               tn.triplet_margin_loss(a, p, q, **options), rtol=0, atol=0)


def test_distance_function_without_a_vjp_is_refused():
    x = np.ones((2, 3))
    with pytest.raises(TypeError, match=r"^distance_function: expected None or a refloss"):
        tn.triplet_margin_with_distance_loss(
            x, x, x, distance_function=lambda u, v: np.linalg.norm(u - v, axis=1))


def test_distance_function_must_return_one_distance_per_row():
    x = np.arange(6.0).reshape(2, 3)
    with pytest.raises(ValueError, match=r"^distance_function: expected a floating \[2\]"):
        tn.triplet_margin_with_distance_loss(x, x + 1, x - 1,
                                             distance_function=rl.pairwise_distances)


# --------------------------------------------------------------------------
# every backend, torch tensors included


A = np.array([[0.2, 1.0, -0.4], [0.9, -0.3, 0.5], [0.1, 0.1, 0.1]])
P = np.array([[0.2, 1.0, -0.4], [0.4, 0.4, -1.1], [1.3, 0.2, 0.1]])
N = np.array([[0.5, 0.7, -0.2], [0.4, 0.4, -1.1], [-0.6, 0.1, 0.8]])
BACKEND_CASES = [
    (tn.triplet_margin_loss, {"swap": True}),
    (tn.triplet_margin_loss, {"p": 1.5, "reduction": "sum"}),
    (tn.triplet_margin_with_distance_loss, {"distance_function": rl.paired_distances}),
]


@pytest.mark.parametrize("fn, options", BACKEND_CASES)
def test_presets_run_on_every_backend(backend, fn, options):
    if backend.name == "jax" and (fn, options) != BACKEND_CASES[0]:
        pytest.skip("JAX compiles every new op shape; the first case runs the stages there")
    moved = [backend.asarray(v) for v in (A, P, N)]
    value, grads = rl.value_and_grad(fn, *moved, **options)
    ref_value, ref_grads = rl.value_and_grad(fn, A, P, N, **options)
    assert_close(value, ref_value, backend, dtype="float64", rtol=1e-12, atol=1e-14)
    for g, r in zip(grads, ref_grads):
        assert_close(g, r, backend, dtype="float64", rtol=1e-12, atol=1e-14)


def test_presets_run_on_torch_tensors_and_match_torch():
    torch = pytest.importorskip("torch")
    t = [torch.tensor(v) for v in (A, P, N)]
    got = tn.triplet_margin_loss(*t, swap=True)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    expected = torch.nn.functional.triplet_margin_loss(*t, swap=True)
    assert float(got) == pytest.approx(float(expected), rel=1e-12)


def test_float16_is_computed_in_float32():
    a, p, q = (v.astype(np.float16) for v in (A, P, N))
    got = tn.triplet_margin_loss(a, p, q)
    assert got.dtype == np.float16
    assert got == np.float16(tn.triplet_margin_loss(*(v.astype(np.float32) for v in (a, p, q))))


# --------------------------------------------------------------------------
# records, the VJP contract and bad input


PRESETS = [tn.pairwise_distance, tn.triplet_margin_loss, tn.triplet_margin_with_distance_loss]


@pytest.mark.parametrize("fn", PRESETS)
def test_every_preset_has_a_record_a_vjp_and_its_differences(fn):
    assert fn.__name__ in tn.__all__
    info = fn.__refloss_preset__
    assert all(isinstance(v, str) and v.strip() for v in vars(info).values())
    assert info.implementation.startswith("torch.nn.functional")
    assert hasattr(fn, "__refloss_vjp__")
    assert "Differences" in fn.__doc__


def test_inputs_are_not_mutated():
    a, p, q = A.copy(), P.copy(), N.copy()
    rl.value_and_grad(tn.triplet_margin_loss, a, p, q, swap=True)
    rl.vjp(tn.pairwise_distance, a, p)[1](np.ones(3))
    for got, want in ((a, A), (p, P), (q, N)):
        np.testing.assert_array_equal(got, want)


TRIPLET_FNS = [tn.triplet_margin_loss, tn.triplet_margin_with_distance_loss]


def _raises(exc, start, fn, *args, **kw):
    with pytest.raises(exc) as info:
        fn(*args, **kw)
    assert str(info.value).startswith(start), str(info.value)


@pytest.mark.parametrize("fn", TRIPLET_FNS)
def test_anchor_must_be_floating(fn):
    _raises(TypeError, "anchor: expected a real floating dtype", fn, A.astype(int), P, N)


@pytest.mark.parametrize("fn", TRIPLET_FNS)
def test_rows_must_be_2d(fn):
    _raises(ValueError, "positive: expected a 2-D array", fn, A, P[0], N)


@pytest.mark.parametrize("fn", TRIPLET_FNS)
def test_shapes_must_match(fn):
    _raises(ValueError, "negative: expected shape (3, 3) (as anchor)", fn, A, P, N[:2])


@pytest.mark.parametrize("fn", TRIPLET_FNS)
def test_dtypes_must_match(fn):
    _raises(TypeError, "positive: expected the dtype of anchor", fn, A, P.astype(np.float32), N)


@pytest.mark.parametrize("fn", TRIPLET_FNS)
def test_inputs_must_be_finite(fn):
    bad = N.copy()
    bad[0, 0] = np.inf
    _raises(ValueError, "negative: expected finite values", fn, A, P, bad)


@pytest.mark.parametrize("fn", TRIPLET_FNS)
def test_reduction_must_be_known(fn):
    _raises(ValueError, "reduction: expected one of", fn, A, P, N, reduction="batchmean")


@pytest.mark.parametrize("fn", TRIPLET_FNS)
def test_swap_must_be_a_bool(fn):
    _raises(TypeError, "swap: expected a bool", fn, A, P, N, swap="no")


@pytest.mark.parametrize("fn", TRIPLET_FNS)
def test_margin_must_be_a_number(fn):
    _raises(TypeError, "margin: expected a real number", fn, A, P, N, margin=None)


@pytest.mark.parametrize("fn", [tn.pairwise_distance, tn.triplet_margin_loss])
def test_p_must_be_at_least_one(fn):
    args = (A, P) if fn is tn.pairwise_distance else (A, P, N)
    _raises(ValueError, "p: expected a finite number >= 1", fn, *args, p=0.5)


@pytest.mark.parametrize("fn", [tn.pairwise_distance, tn.triplet_margin_loss])
def test_eps_must_be_finite(fn):
    args = (A, P) if fn is tn.pairwise_distance else (A, P, N)
    _raises(ValueError, "eps: expected a finite number", fn, *args, eps=float("nan"))


def test_pairwise_distance_arrays_must_come_from_one_library():
    torch = pytest.importorskip("torch")
    _raises(TypeError, "x1, x2: expected arrays from one library", tn.pairwise_distance, A,
            torch.tensor(P))
