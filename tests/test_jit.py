"""The core traces under jax.jit: no bool()/int() of traced data, static shapes."""

from __future__ import annotations

import numpy as np
import pytest

import refloss as rl

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
jnp = jax.numpy


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_distances_and_their_vjp_trace_under_jit(metric):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3)) + 100.0
    x[4] = x[1] + 1e-9  # a near-duplicate: the exact recomputation must trace too
    x[5] = x[2]  # a copy: the tie rule (lexicographic sort under jit) must trace too
    g = rng.normal(size=(6, 6))

    def f(a, cot):
        value, pullback = rl.vjp(rl.pairwise_distances, a, metric=metric)
        return value, pullback(cot)[0]

    value, grad = jax.jit(f)(jnp.asarray(x), jnp.asarray(g))
    ref_value, ref_pullback = rl.vjp(rl.pairwise_distances, x, metric=metric)
    np.testing.assert_allclose(np.asarray(value), ref_value, rtol=1e-10, atol=1e-15)
    value = np.asarray(value)
    np.testing.assert_array_equal(value[5], value[2])
    np.testing.assert_array_equal(value[:, 5], value[:, 2])
    np.testing.assert_allclose(np.asarray(grad), ref_pullback(g)[0], rtol=1e-9, atol=1e-9)


def test_center_loss_and_update_trace_under_jit():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 2))
    labels = np.array([0, 2, 2, 1, 0])
    centers = rng.normal(size=(3, 2))

    def f(a, y, c):
        value, grads = rl.value_and_grad(rl.center_loss, a, y, c, reduction="mean")
        return value, grads[0], grads[2], rl.update_centers(c, a, y, rule="wen", alpha=0.5)

    out = jax.jit(f)(jnp.asarray(x), jnp.asarray(labels), jnp.asarray(centers))
    value, grads = rl.value_and_grad(rl.center_loss, x, labels, centers, reduction="mean")
    expected = (value, grads[0], grads[2], rl.update_centers(centers, x, labels))
    for got, want in zip(out, expected):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-12)


def test_closed_over_concrete_arrays_beside_a_traced_one():
    """A tracer reports no device: the device check compares concrete arrays
    only, so labels and centers held in a closure work under jit and vmap."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    x = jnp.asarray(np.arange(12.0).reshape(4, 3) / 7.0)
    labels = jnp.asarray(np.array([0, 1, 0, 2]))
    centers = jnp.zeros((3, 3))
    eager = rl.center_loss(x, labels, centers)
    traced = jax.jit(lambda a: rl.center_loss(a, labels, centers))(x)
    np.testing.assert_allclose(np.asarray(traced), np.asarray(eager), rtol=1e-12)
    per_batch = jax.vmap(lambda a: rl.center_loss(a, labels, centers))(jnp.stack([x, 2 * x]))
    np.testing.assert_allclose(np.asarray(per_batch[0]), np.asarray(eager), rtol=1e-12)
