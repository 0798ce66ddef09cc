"""refloss._ops.clip: numpy.clip bit for bit on every backend, and no
boolean-mask writes (a sync each on a GPU) — the reason it replaces xp.clip.
"""

from __future__ import annotations

import math
import pathlib
import re

import numpy as np
import pytest
from array_api_compat import array_namespace
from array_api_compat import device as array_device
from helpers import to_numpy
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from refloss._ops import clip

SPECIAL = [0.0, -0.0, 1.0, -1.0, 2.0, math.inf, -math.inf, math.nan]


@st.composite
def float_clip_cases(draw):
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    # no subnormals: XLA on the CPU compares them as zero (flush to zero)
    elements = st.one_of(st.sampled_from(SPECIAL),
                         st.floats(-3, 3, width=32, allow_subnormal=False))
    x = draw(hnp.arrays(dtype, draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=5)),
                        elements=elements))
    bound = st.one_of(st.none(), st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.0]),
                      st.floats(-3, 3, width=32, allow_subnormal=False))
    return x, draw(bound), draw(bound)


@st.composite
def int_clip_cases(draw):
    x = draw(hnp.arrays(np.int64, draw(hnp.array_shapes(min_dims=1, max_dims=2, max_side=5)),
                        elements=st.integers(-5, 5)))
    bound = st.one_of(st.none(), st.integers(-6, 6))
    return x, draw(bound), draw(bound)


def assert_bitwise(actual, expected, backend):
    assert array_namespace(actual) is backend.xp
    assert array_device(actual) == backend.device
    got = to_numpy(actual)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    if expected.dtype.kind == "f":  # NaN == NaN and -0.0 != 0.0, bit for bit
        bits = np.uint64 if expected.dtype.itemsize == 8 else np.uint32
        same = got.view(bits) == expected.view(bits)
        same = same | (np.isnan(got) & np.isnan(expected))
        assert np.all(same), (got, expected)
    else:
        np.testing.assert_array_equal(got, expected)


def o_clip(x, lo, hi):
    """The definition, entry by entry: a bound replaces an entry only when the
    entry lies strictly beyond it (an entry equal to a bound is kept, with
    its sign of zero; NaN is beyond no bound)."""
    out = x.copy()
    for i in np.ndindex(x.shape):
        v = x[i]
        if lo is not None and v < lo:
            v = lo
        if hi is not None and v > hi:
            v = hi
        out[i] = v
    return out


@given(case=float_clip_cases())
def test_clip_replaces_only_entries_beyond_a_bound(backend, case):
    x, lo, hi = case
    assert_bitwise(clip(backend.xp, backend.asarray(x), lo, hi), o_clip(x, lo, hi), backend)


@given(case=float_clip_cases())
def test_clip_has_numpy_clip_values(backend, case):
    """NumPy's own clip agrees up to the sign of a zero clipped against a zero
    bound (where NumPy itself is inconsistent: ``clip(-0.0, 0.0, None)`` is
    0.0, ``clip(-0.0, 0.0, 0.0)`` is -0.0)."""
    x, lo, hi = case
    got = to_numpy(clip(backend.xp, backend.asarray(x), lo, hi))
    expected = np.clip(x, lo, hi) if (lo, hi) != (None, None) else x
    np.testing.assert_array_equal(got, expected.astype(x.dtype))


@given(case=int_clip_cases())
def test_clip_is_numpy_clip_on_integers(backend, case):
    x, lo, hi = case
    expected = np.clip(x, lo, hi) if (lo, hi) != (None, None) else x
    assert_bitwise(clip(backend.xp, backend.asarray(x), lo, hi), expected, backend)


# --------------------------------------------------------------------------
# no boolean masks: the ops a GPU would wait on


def _mask_ops(fn):
    """The aten ops of ``fn()`` that write or read through a boolean mask,
    or read a value back to the host."""
    torch = pytest.importorskip("torch")
    from torch.utils._python_dispatch import TorchDispatchMode

    found = []

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.__name__
            flat = [a for a in args if isinstance(a, (list, tuple))]
            masks = any(
                isinstance(t, torch.Tensor) and t.dtype == torch.bool
                for group in flat for t in group
            )
            if (name.startswith(("index", "masked", "nonzero", "_local_scalar"))
                    and (masks or not name.startswith("index"))):
                found.append(name)
            return func(*args, **(kwargs or {}))

    with Recorder():
        fn()
    return found


@pytest.mark.parametrize("dtype", ["float32", "int64"])
def test_clip_writes_no_boolean_mask_on_torch(dtype):
    torch = pytest.importorskip("torch")
    import array_api_compat.torch as xt

    x = torch.arange(-4, 5, dtype=getattr(torch, dtype))
    assert _mask_ops(lambda: clip(xt, x, 0, 3)) == []
    assert _mask_ops(lambda: clip(xt, x, None, 3)) == []


def test_the_mask_detector_sees_the_generic_clip():
    """The detector above can fail: array-api-compat's generic clip (CuPy's
    in every release) writes through boolean masks."""
    torch = pytest.importorskip("torch")
    from array_api_compat.common._aliases import clip as generic_clip

    x = torch.arange(-4, 5, dtype=torch.float32)
    assert _mask_ops(lambda: generic_clip(x, 0.0, 3.0, xp=torch))


def test_the_core_calls_no_library_clip():
    """Every clip in refloss goes through refloss._ops.clip."""
    root = pathlib.Path(__file__).resolve().parent.parent / "refloss"
    calls = [
        f"{path.relative_to(root)}:{i}"
        for path in sorted(root.rglob("*.py"))
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bxp\.(clip|clamp)\(", line)
    ]
    assert calls == []
