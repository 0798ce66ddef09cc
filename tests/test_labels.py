"""Label dtypes: every integer dtype a backend has behaves as int64.

Labels are converted once, at the API boundary, to the backend's default
index dtype (refloss/_checks.py ``as_index``). Before that, class indices
were built with ``arange(C, dtype=labels.dtype)``: uint8 labels with C = 300
counted label 3 also as class 259, torch indexed with int8/int16 labels
failed in ``index_select``, and torch uint16/32/64 labels raised
NotImplementedError (no min/max). Each labelled function (core and compat
presets) is run with the same labels in every integer dtype and compared
bit for bit with int64 labels; the per-class counts also against
``np.bincount``. uint64 labels >= 2**63 are a ValueError, not a wrap.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import to_numpy

import refloss as rl
from refloss.compat import (
    caffe,
    facenet,
    jxgu1016,
    kaiyangzhou,
    omoindrot,
    pml,
    tf_contrib,
    tf_recipes,
    tfa,
    triplet_reid,
)

INT_DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]

# C = 300 > 256: an 8-bit arange of class indices wraps (3 is also 259)
C = 300
LABELS = np.array([3, 0, 127, 3, 5, 127, 0, 5])
X = np.random.default_rng(7).normal(size=(8, 3))
CENTERS = np.random.default_rng(8).normal(size=(C, 3))


def _vg(fn, *args, **kw):
    """Value and every gradient of a scalar refloss loss (labels get None)."""
    return rl.value_and_grad(fn, *args, **kw)


# name -> f(x, labels, centers): the outputs to compare (arrays, tuples of arrays)
CORE = {
    "center_loss": lambda x, y, c: _vg(rl.center_loss, x, y, c),
    "center_loss_none": lambda x, y, c: rl.center_loss(x, y, c, reduction="none"),
    "center_stats": lambda x, y, c: rl.center_stats(x, y, C),
    "update_centers": lambda x, y, c: rl.update_centers(c, x, y),
    "update_centers_ema": lambda x, y, c: rl.update_centers(c, x, y, rule="ema"),
    "running_centers": lambda x, y, c: _running(x, y, c),
    "contrastive_loss_all_pairs": lambda x, y, c: _vg(rl.contrastive_loss_all_pairs, x, y),
    "batch_hard": lambda x, y, c: _vg(rl.batch_hard_triplet_loss, x, y),
    "semihard": lambda x, y, c: _vg(rl.semihard_triplet_loss, x, y),
    "batch_all": lambda x, y, c: _vg(rl.batch_all_triplet_loss, x, y),
    "batch_all_none": lambda x, y, c: rl.batch_all_triplet_loss(x, y, reduction="none"),
    "mine_batch_hard": lambda x, y, c: rl.mine_batch_hard(x, y),
    "mine_semihard": lambda x, y, c: rl.mine_semihard(x, y),
}

PRESETS = {
    "caffe.center_loss": lambda x, y, c: _vg(caffe.center_loss, x, y, c),
    "facenet.center_loss": lambda x, y, c: facenet.center_loss(x, y, c, 0.5),
    "jxgu1016.center_loss": lambda x, y, c: _vg(jxgu1016.center_loss, y, x, c),
    "kaiyangzhou.center_loss": lambda x, y, c: _vg(kaiyangzhou.center_loss, x, y, c),
    "tf_recipes.center_loss": lambda x, y, c: _vg(tf_recipes.center_loss, x, y, c),
    "tf_recipes.running_mean_update": lambda x, y, c: tf_recipes.running_mean_update(
        c, c[:, 0] * 0 + 1, x, y
    ),
    "tf_recipes.unique_with_counts_update": lambda x, y, c: (
        tf_recipes.unique_with_counts_update(c, x, y, 0.5)
    ),
    "omoindrot.batch_all": lambda x, y, c: omoindrot.batch_all_triplet_loss(y, x, 0.5),
    "omoindrot.batch_hard": lambda x, y, c: omoindrot.batch_hard_triplet_loss(y, x, 0.5),
    "pml.triplet_margin_loss": lambda x, y, c: _vg(pml.triplet_margin_loss, x, y),
    "pml.triplet_margin_miner_loss": lambda x, y, c: pml.triplet_margin_miner_loss(x, y),
    "pml.semihard_triplet_margin_loss": lambda x, y, c: pml.semihard_triplet_margin_loss(x, y),
    "pml.batch_hard_triplet_margin_loss": lambda x, y, c: (
        pml.batch_hard_triplet_margin_loss(x, y)
    ),
    "pml.contrastive_loss": lambda x, y, c: _vg(pml.contrastive_loss, x, y),
    "tf_contrib.triplet_semihard_loss": lambda x, y, c: _vg(tf_contrib.triplet_semihard_loss,
                                                            y, x),
    "tfa.triplet_semihard_loss": lambda x, y, c: _vg(tfa.triplet_semihard_loss, y, x),
    "tfa.triplet_hard_loss": lambda x, y, c: _vg(tfa.triplet_hard_loss, y, x),
    "triplet_reid.batch_hard": lambda x, y, c: _vg(triplet_reid.batch_hard, x, y),
}


def _running(x, y, c):
    rc = rl.RunningCenters(C, x.shape[1], like=x)
    rc.update(x, y)
    rc.update(x, y)
    return rc.centers, rc.counts


def _flat(out):
    """Outputs as a flat list of NumPy arrays (None kept)."""
    if isinstance(out, (tuple, list)):
        return [a for o in out for a in _flat(o)]
    return [None if out is None else to_numpy(out)]


def _assert_same_as_int64(fn, backend, dtypes):
    x, c = backend.asarray(X), backend.asarray(CENTERS)
    expected = _flat(fn(x, backend.asarray(LABELS), c))
    for name in dtypes:
        got = _flat(fn(x, backend.asarray(LABELS, dtype=getattr(backend.xp, name)), c))
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            if e is None:
                assert g is None, name
            else:
                np.testing.assert_array_equal(g, e, err_msg=name)


# JAX compiles every op per dtype: it runs the center functions (where the
# wrap happened) with one narrow dtype; the conversion is the same code everywhere
JAX_CORE = {"center_loss", "center_stats", "running_centers"}


@pytest.mark.parametrize(("name", "fn"), list(CORE.items()), ids=list(CORE))
def test_every_integer_label_dtype_gives_the_int64_result(backend, name, fn):
    if backend.name == "jax":
        if name not in JAX_CORE:
            pytest.skip("JAX: the center functions only (compile time)")
        _assert_same_as_int64(fn, backend, ["uint8"])
    else:
        _assert_same_as_int64(fn, backend, INT_DTYPES)


@pytest.mark.parametrize("fn", list(PRESETS.values()), ids=list(PRESETS))
@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_presets_accept_every_integer_label_dtype(library, fn):
    from conftest import _make

    _assert_same_as_int64(fn, _make(library), INT_DTYPES)


@pytest.mark.parametrize("name", ["uint8", "int8"])
def test_narrow_labels_make_no_phantom_class(backend, name):
    # label 3 with C = 300: an 8-bit arange holds 3 at 3 and at 259 (uint8) / -253 (int8)
    labels = backend.asarray(LABELS, dtype=getattr(backend.xp, name))
    _, counts = rl.center_stats(backend.asarray(X), labels, C)
    np.testing.assert_array_equal(to_numpy(counts), np.bincount(LABELS, minlength=C))


@pytest.mark.parametrize("name", ["int16", "uint16"])
def test_16_bit_labels_past_65536_classes(name):
    n = 65_536 + 8  # an int16/uint16 arange past 65,535 wraps onto 0..7
    labels = np.array([3, 0, 3], dtype=name)
    _, counts = rl.center_stats(np.ones((3, 1)), labels, n)
    np.testing.assert_array_equal(counts, np.bincount(labels.astype(np.int64), minlength=n))


LABELLED = {
    "center_loss": lambda x, y: rl.center_loss(x, y, x[:4] * 0),
    "center_stats": lambda x, y: rl.center_stats(x, y, 4),
    "update_centers": lambda x, y: rl.update_centers(x[:4] * 0, x, y),
    "running_centers": lambda x, y: rl.RunningCenters(4, x.shape[1], like=x).update(x, y),
    "contrastive_loss_all_pairs": lambda x, y: rl.contrastive_loss_all_pairs(x, y),
    "batch_hard": lambda x, y: rl.batch_hard_triplet_loss(x, y),
    "semihard": lambda x, y: rl.semihard_triplet_loss(x, y),
    "batch_all": lambda x, y: rl.batch_all_triplet_loss(x, y),
    "mine_batch_hard": lambda x, y: rl.mine_batch_hard(x, y),
    "mine_semihard": lambda x, y: rl.mine_semihard(x, y),
    "pml.triplet_margin_loss": lambda x, y: pml.triplet_margin_loss(x, y),
    "tfa.triplet_hard_loss": lambda x, y: tfa.triplet_hard_loss(y, x),
}


@pytest.mark.parametrize("fn", list(LABELLED.values()), ids=list(LABELLED))
@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_uint64_labels_past_int64_are_rejected(library, fn):
    from conftest import _make

    b = _make(library)
    # 2**63 + 1 would wrap to a negative int64 (and 2**64 + 1 to class 1)
    labels = b.asarray(np.array([0, 1, 2**63 + 1, 0], dtype=np.uint64))
    with pytest.raises(ValueError, match=r"^(labels|y_true): expected values in .*"
                                         r"int64 index range\), got 9223372036854775809$"):
        fn(b.asarray(X[:4]), labels)


@pytest.mark.parametrize("fn", list(LABELLED.values()), ids=list(LABELLED))
def test_bool_labels_are_a_type_error(fn):
    with pytest.raises(TypeError, match=r"^(labels|y_true): expected an integer dtype, got bool"):
        fn(X[:4], np.array([True, False, True, False]))
