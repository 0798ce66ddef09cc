"""The "mean_nonzero" count: terms above rounding noise, τ = (16 ε s)^p.

s = margin + max d (the largest operand of the hinges), p the hinge's power
(refloss/reductions.py). Before the tolerance, a term that is 0 in exact
arithmetic but came out as 2.2e-16 after ``normalize=True`` was counted and
halved the loss. The batches below are built so that exact arithmetic gives
that zero: the negative (or the positive) is 5× the positive's row, which
normalises to the same point up to rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close

import refloss as rl
from refloss.reductions import reduce_forward

A = np.array([-1.1, 1.3, 0.47])
V = np.array([-0.7, 1.15, -1.78])  # d(A, V) = d(A, 5V) after normalisation
D_AV = np.linalg.norm(A / np.linalg.norm(A) - V / np.linalg.norm(V))


def skip_jax(backend):
    # the rule is the same code on every backend; JAX compiles each op of the
    # mining path per shape (seconds per call on a busy CI machine)
    if backend.name == "jax":
        pytest.skip("JAX: compile time; the rule is shared code")


def test_batch_all_does_not_count_a_rounded_zero(backend):
    skip_jax(backend)
    # triplets (a=0, p=1, n=2): d(a, v) - d(a, 5v) = 0 exactly (2.2e-16 on NumPy);
    # (a=1, p=0, n=2): d(v, a) - d(v, 5v) = d(a, v): the only term
    x = backend.asarray(np.stack([A, V, 5.0 * V]))
    labels = backend.asarray(np.array([0, 0, 1]))
    got = rl.batch_all_triplet_loss(x, labels, margin=0.0, normalize=True)
    assert_close(got, D_AV, backend, dtype="float64", rtol=1e-12, atol=0)


def test_triplet_margin_loss_does_not_count_a_rounded_zero(backend):
    skip_jax(backend)
    a = backend.asarray(np.stack([A, A]))
    p = backend.asarray(np.stack([V, V]))
    n = backend.asarray(np.stack([5.0 * V, A]))  # terms: 0 (rounded), d(a, v)
    got = rl.triplet_margin_loss(a, p, n, margin=0.0, normalize=True, reduction="mean_nonzero")
    assert_close(got, D_AV, backend, dtype="float64", rtol=1e-12, atol=0)


@pytest.mark.parametrize("power", [1, 2])
def test_contrastive_does_not_count_a_rounded_zero(power):
    w = np.array([-0.44, 0.07, -0.28])
    u = np.array([-1.36, 0.94, -1.55])
    a, b = np.stack([u, u]), np.stack([5.0 * u, w])  # pair 0: d = 0 exactly (5.6e-17)
    same = np.array([True, True])
    got = rl.contrastive_loss(a, b, same, power=power, normalize=True, reduction="mean_nonzero")
    expected = np.linalg.norm(u / np.linalg.norm(u) - w / np.linalg.norm(w)) ** power
    np.testing.assert_allclose(float(got), expected, rtol=1e-12)


@pytest.mark.parametrize(("dtype", "m"), [("float64", 1e-12), ("float32", 1e-4)])
def test_a_term_above_the_tolerance_is_counted(backend, dtype, m):
    # terms [m, 1 + m]: τ = 16 ε (m + 1) is 3.6e-15 (float64) / 1.9e-6 (float32)
    dt = backend.float_dtype(dtype)
    a = backend.asarray(np.zeros((2, 1)), dtype=dt)
    p = backend.asarray(np.ones((2, 1)), dtype=dt)
    n = backend.asarray(np.array([[1.0], [0.0]]), dtype=dt)
    got = rl.triplet_margin_loss(a, p, n, margin=m, metric="sqeuclidean",
                                 reduction="mean_nonzero")
    assert_close(got, (1 + 2 * m) / 2, backend, dtype=dtype, rtol=1e-6, atol=0)


def test_reduce_forward_counts_terms_above_tol_only():
    t = np.array([1e-15, 0.0, 2.0, 3e-15])
    value, _ = reduce_forward(np, t, "mean_nonzero", tol=2e-15)
    np.testing.assert_allclose(value, (2.0 + 4e-15) / 2, rtol=1e-15)
