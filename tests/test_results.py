"""What a loss returns: a 0-d array of the caller's namespace, on every backend.

NumPy's full reductions give NumPy scalars (``np.float64``), which are not
arrays of the namespace (no ``.device``, no ``__array_namespace__``); every
loss's docstring promises a 0-d array, so a scalar result is a bug on NumPy
as on any other backend. The compat presets return what the losses return.
"""

from __future__ import annotations

import numpy as np
import pytest
from array_api_compat import array_namespace

import refloss as rl
from refloss.compat import all_presets

X = np.array([[0.0, 1.0], [1.0, 0.5], [2.0, 2.0], [0.5, -1.0], [3.0, 0.0], [1.5, 1.5]])
LABELS = np.array([0, 0, 1, 1, 2, 2])
SAME = np.array([True, False, True])

# loss, its arrays (by kind), and the reductions that give a scalar
LOSSES = [
    (rl.center_loss, ("x", "labels", "centers"), ("sum", "mean")),
    (rl.contrastive_loss, ("a", "b", "same"), ("sum", "mean", "mean_nonzero")),
    (rl.contrastive_loss_all_pairs, ("x", "labels"), ("sum", "mean", "mean_nonzero")),
    (rl.triplet_margin_loss, ("a", "b", "c"), ("sum", "mean", "mean_nonzero")),
    (rl.batch_all_triplet_loss, ("x", "labels"), ("sum", "mean", "mean_nonzero")),
    (rl.batch_hard_triplet_loss, ("x", "labels"), ("sum", "mean", "mean_nonzero")),
    (rl.semihard_triplet_loss, ("x", "labels"), ("sum", "mean", "mean_nonzero")),
    (rl.hardest_negative_triplet_loss, ("x", "labels"), ("sum", "mean", "mean_nonzero")),
]


def _arrays(backend, kinds, labels=LABELS):
    data = {"x": X, "labels": labels, "centers": np.zeros((3, 2)), "a": X[:3], "b": X[3:],
            "c": X[[4, 0, 2]], "same": SAME}
    return [backend.asarray(data[k]) for k in kinds]


def assert_0d_array_of(value, like, backend):
    assert not isinstance(value, np.generic), f"a NumPy scalar {type(value).__name__}"
    assert array_namespace(value) is array_namespace(like)
    assert value.shape == ()
    assert value.dtype == like.dtype
    assert isinstance(value, type(like)), type(value)


@pytest.mark.parametrize(("loss", "kinds", "reductions"), LOSSES,
                         ids=[f.__name__ for f, _, _ in LOSSES])
def test_every_loss_returns_a_0d_array_of_the_callers_namespace(backend, loss, kinds,
                                                                 reductions):
    arrays = _arrays(backend, kinds)
    jax = backend.name == "jax"  # compiles every op per shape: one value says enough
    for reduction in reductions[:1] if jax else reductions:
        value = loss(*arrays, reduction=reduction)
        assert_0d_array_of(value, arrays[0], backend)
        if not jax:  # through the VJP machinery too
            got, _ = rl.value_and_grad(loss, *arrays, reduction=reduction)
            assert_0d_array_of(got, arrays[0], backend)


@pytest.mark.parametrize("loss", [f for f, k, _ in LOSSES if k == ("x", "labels")],
                         ids=lambda f: f.__name__)
def test_a_batch_without_terms_gives_a_0d_zero(numpy_backend, loss):
    arrays = _arrays(numpy_backend, ("x", "labels"), labels=np.zeros(6, dtype=np.int64))
    for reduction in ("sum", "mean", "mean_nonzero"):
        value = loss(*arrays, reduction=reduction)
        assert_0d_array_of(value, arrays[0], numpy_backend)
        if loss is not rl.contrastive_loss_all_pairs:  # its pairs are all positive here
            assert float(value) == 0.0


REQUIRED = {"facenet.center_loss": {"alfa": 0.5},
            "omoindrot.batch_all_triplet_loss": {"margin": 0.2},
            "omoindrot.batch_hard_triplet_loss": {"margin": 0.2},
            "tf_recipes.unique_with_counts_update": {"alpha": 0.5}}


def test_every_compat_preset_returns_arrays_on_numpy():
    pytest.importorskip("hypothesis")
    from refloss.testing._run import _arrays as drawn
    from refloss.testing._search import _example_bundle
    from refloss.testing._setup import _make_setup

    for name, fn in all_presets():
        kw = REQUIRED.get(name, {})
        setup = _make_setup(fn, fn, framework="numpy", reference_kwargs=kw,
                            candidate_kwargs=None, grad=False, dtype="float64", ties=None,
                            name=None)
        args = drawn(setup, _example_bundle(setup), "float64")
        out = fn(*[args[r] for r in setup.ref_roles], **kw)
        for i, value in enumerate(out if isinstance(out, tuple) else (out,)):
            assert isinstance(value, np.ndarray), f"{name} output {i}: {type(value).__name__}"


def test_running_centers_repr_says_options_place_and_data_seen(backend):
    like = backend.asarray(np.zeros((), dtype=np.float64))
    rc = rl.RunningCenters(3, 2, rule="ema", alpha=0.25, like=like)
    text = repr(rc)
    assert text.startswith("RunningCenters(num_classes=3, dim=2, rule='ema', alpha=0.25, ")
    assert "dtype=float64" in text and f"device={rc.centers.device}" in text
    assert text.endswith("seen 0 samples of 0/3 classes)")
    rc.update(backend.asarray(X[:4]), backend.asarray(np.array([0, 0, 2, 0])))
    assert repr(rc).endswith("seen 4 samples of 2/3 classes)")
    assert "alpha" not in repr(rl.RunningCenters(3, 2, rule="mean", like=like))
