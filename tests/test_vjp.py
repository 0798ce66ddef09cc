"""The vjp / value_and_grad contract, l2_normalize, and the reductions' VJPs."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close, directional_fd, embeddings, unit_directions
from hypothesis import assume, given
from hypothesis import strategies as st

import refloss as rl

# --------------------------------------------------------------------------
# the contract


def test_grads_hold_one_entry_per_positional_argument(numpy_backend):
    x = np.array([[1.0, 0.0], [0.0, 2.0]])
    labels = np.array([0, 1])
    centers = np.zeros((2, 2))
    _, grads = rl.value_and_grad(rl.center_loss, x, labels, centers)
    assert len(grads) == 3 and grads[1] is None
    _, pullback = rl.vjp(rl.pairwise_distances, x)
    assert len(pullback(np.ones((2, 2)))) == 1
    _, pullback = rl.vjp(rl.pairwise_distances, x, x)
    assert len(pullback(np.ones((2, 2)))) == 2


def test_arrays_passed_by_keyword_get_no_gradient(numpy_backend):
    x = np.array([[1.0, 0.0]])
    _, grads = rl.value_and_grad(rl.center_loss, x, np.array([0]), centers=np.zeros((1, 2)))
    assert len(grads) == 2


def test_value_is_the_functions_value(backend):
    x = backend.asarray(np.array([[1.0, 2.0], [3.0, 5.0]]))
    value, _ = rl.vjp(rl.pairwise_distances, x, metric="sqeuclidean")
    assert_close(value, rl.pairwise_distances(x, metric="sqeuclidean"), backend)


def test_pullback_accepts_a_number_for_a_scalar_loss(backend):
    x = backend.asarray(np.array([[1.0, 2.0]]))
    labels = backend.asarray(np.array([0]))
    c = backend.asarray(np.zeros((1, 2)))
    _, pullback = rl.vjp(rl.center_loss, x, labels, c)
    assert_close(pullback(2.0)[0], [[2.0, 4.0]], backend, dtype="float64")
    assert_close(pullback(backend.asarray(np.asarray(2.0)))[0], [[2.0, 4.0]], backend)


def test_pullback_can_be_called_twice(numpy_backend):
    x = np.array([[1.0, 2.0], [0.0, 0.0]])
    _, pullback = rl.vjp(rl.pairwise_distances, x)
    g = np.ones((2, 2))
    np.testing.assert_array_equal(pullback(g)[0], pullback(g)[0])


def test_gradient_keeps_the_argument_dtype(backend):
    x = backend.asarray(np.array([[1.0, 2.0], [0.0, 1.0]]), dtype=backend.xp.float32)
    _, pullback = rl.vjp(rl.pairwise_distances, x)
    g = pullback(backend.asarray(np.ones((2, 2)), dtype=backend.xp.float32))[0]
    assert g.dtype == backend.xp.float32


# --------------------------------------------------------------------------
# l2_normalize


@given(embeddings(max_rows=5))
def test_l2_normalize_gives_unit_rows_and_zero_for_zero_rows(backend, x):
    got = rl.l2_normalize(backend.asarray(x))
    peak = np.abs(x).max(axis=1, keepdims=True)  # scaled first: no underflow
    scaled = x / np.where(peak > 0, peak, 1)
    norms = np.linalg.norm(scaled, axis=1, keepdims=True)
    expected = np.where(peak > 0, scaled / np.where(norms > 0, norms, 1), 0.0)
    assert_close(got, expected, backend, dtype="float64", rtol=1e-12, atol=1e-300)


@given(embeddings(max_rows=5), st.integers(0, 2**16))
def test_l2_normalize_vjp_matches_finite_differences(numpy_backend, x, seed):
    assume(np.linalg.norm(x, axis=1).min() > 1e-2)
    rng = np.random.default_rng(seed)
    g = rng.normal(size=x.shape)
    _, pullback = rl.vjp(rl.l2_normalize, x)
    (gx,) = pullback(g)
    for v in unit_directions(rng, x.shape):
        fd = directional_fd(lambda a: np.sum(g * rl.l2_normalize(a)), [x], 0, v)
        np.testing.assert_allclose(np.sum(gx * v), fd, rtol=1e-5, atol=1e-6)


@given(embeddings(max_rows=5), st.integers(0, 2**16))
def test_l2_normalize_vjp_matches_torch_autograd(x, seed):
    torch = pytest.importorskip("torch")
    assume(np.linalg.norm(x, axis=1).min() > 1e-3)
    g = np.random.default_rng(seed).normal(size=x.shape)
    tx = torch.tensor(x, requires_grad=True)
    rl.l2_normalize(tx).backward(torch.tensor(g))
    _, pullback = rl.vjp(rl.l2_normalize, x)
    np.testing.assert_allclose(pullback(g)[0], tx.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_l2_normalize_gradient_of_a_zero_row_is_zero(backend):
    x = backend.asarray(np.array([[0.0, 0.0], [3.0, 4.0]]))
    _, pullback = rl.vjp(rl.l2_normalize, x)
    (gx,) = pullback(backend.asarray(np.ones((2, 2))))
    assert_close(gx[0, ...], [0.0, 0.0], backend, atol=0)


def test_l2_normalize_vjp_agrees_across_backends(backend):
    x = np.random.default_rng(0).normal(size=(4, 3))
    g = np.random.default_rng(1).normal(size=(4, 3))
    _, ref = rl.vjp(rl.l2_normalize, x)
    _, pb = rl.vjp(rl.l2_normalize, backend.asarray(x))
    assert_close(pb(backend.asarray(g))[0], ref(g)[0], backend, dtype="float64")


# --------------------------------------------------------------------------
# reductions (through center_loss, whose terms are simple)


def test_mean_of_an_empty_batch_is_zero_with_zero_gradient(backend):
    x = backend.asarray(np.zeros((0, 2)))
    labels = backend.asarray(np.zeros(0, dtype=np.int64))
    c = backend.asarray(np.ones((2, 2)))
    for reduction in ("sum", "mean"):
        value, grads = rl.value_and_grad(rl.center_loss, x, labels, c, reduction=reduction)
        assert_close(value, 0.0, backend, dtype="float64", atol=0)
        assert_close(grads[2], np.zeros((2, 2)), backend, atol=0)


def test_mean_divides_the_sum_and_its_gradient_by_the_batch_size(backend):
    x = np.array([[1.0], [3.0], [5.0], [7.0]])
    labels = np.zeros(4, dtype=np.int64)
    c = np.zeros((1, 1))
    args = (backend.asarray(x), backend.asarray(labels), backend.asarray(c))
    vs, gs = rl.value_and_grad(rl.center_loss, *args, reduction="sum")
    vm, gm = rl.value_and_grad(rl.center_loss, *args, reduction="mean")
    assert_close(vm, float(vs) / 4, backend)
    assert_close(gs[0], x, backend)
    assert_close(gm[0], x / 4, backend)


@pytest.mark.parametrize("terms", [[-1.0, -2.0], [0.0, 0.0], []])
def test_mean_nonzero_with_no_positive_term_is_zero_with_zero_gradient(backend, terms):
    from refloss.reductions import reduce_backward, reduce_forward

    t = backend.asarray(np.asarray(terms, dtype=np.float64).reshape(-1))
    value, res = reduce_forward(backend.xp, t, "mean_nonzero")
    grad = reduce_backward(backend.xp, res, backend.asarray(np.asarray(1.0)), t)
    assert_close(value, 0.0, backend, atol=0)
    assert_close(grad, np.zeros(len(terms)), backend, atol=0)


def test_mean_nonzero_divides_by_the_strictly_positive_terms(backend):
    from refloss.reductions import reduce_backward, reduce_forward

    t = backend.asarray(np.array([3.0, 0.0, 1.0, -2.0]))
    value, res = reduce_forward(backend.xp, t, "mean_nonzero")
    grad = reduce_backward(backend.xp, res, backend.asarray(np.asarray(1.0)), t)
    assert_close(value, 2.0 / 2, backend)
    assert_close(grad, np.full(4, 0.5), backend)


def test_mean_over_a_zero_count_is_zero_with_zero_gradient(backend):
    from refloss.reductions import reduce_backward, reduce_forward

    t = backend.asarray(np.array([0.0, 0.0]))
    value, res = reduce_forward(backend.xp, t, "mean", count=0)
    grad = reduce_backward(backend.xp, res, backend.asarray(np.asarray(1.0)), t)
    assert_close(value, 0.0, backend, atol=0)
    assert_close(grad, np.zeros(2), backend, atol=0)
