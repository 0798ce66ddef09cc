"""Backend-aware assertions, finite differences and Hypothesis strategies.

Inputs are drawn as NumPy float64 (they shrink the same on every backend and
the finite differences run in NumPy) and moved with ``backend.asarray``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from array_api_compat import array_namespace
from array_api_compat import device as array_device
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

# ---------------------------------------------------------------------------
# conversion and assertions


def to_numpy(a: Any) -> np.ndarray:
    mod = type(a).__module__.split(".")[0]
    if mod == "torch":
        return a.detach().cpu().numpy()
    if mod == "array_api_strict":
        import array_api_strict as strict

        return np.asarray(a.to_device(strict.Device()))
    if mod == "cupy":
        return a.get()
    return np.asarray(a)


def tolerance(dtype_name: str) -> dict:
    """Float32 against a float64 reference: ≈ 4·sqrt(eps); float64: tight."""
    if dtype_name == "float64":
        return {"rtol": 1e-9, "atol": 1e-11}
    return {"rtol": 1.4e-3, "atol": 1e-5}


def assert_close(
    actual: Any,
    expected: Any,
    backend: Any,
    *,
    dtype: str | None = None,
    rtol: float = 1e-9,
    atol: float = 1e-11,
) -> None:
    """Namespace, device, dtype and shape of ``actual``, then its values."""
    xp = array_namespace(actual)
    assert xp is backend.xp, f"namespace {xp} is not {backend.xp}"
    assert array_device(actual) == backend.device, (
        f"device {array_device(actual)} is not {backend.device}"
    )
    if dtype is not None:
        assert actual.dtype == getattr(backend.xp, dtype), f"dtype {actual.dtype} is not {dtype}"
    got = to_numpy(actual)
    expected = to_numpy(expected) if hasattr(expected, "__array_namespace__") else expected
    expected = np.asarray(expected)
    assert got.shape == expected.shape, f"shape {got.shape} is not {expected.shape}"
    np.testing.assert_allclose(got.astype(np.float64), expected, rtol=rtol, atol=atol)


def nonzero_tol(max_d: float, margin: float, power: int = 1,
                eps: float = float(np.finfo(np.float64).eps)) -> float:
    """τ of "mean_nonzero", transcribed from docs/reductions.md: a term counts
    when it is > (16 ε (m + max d))^p (the hinge's rounding noise left out)."""
    return (16.0 * eps * (margin + max_d)) ** power


# ---------------------------------------------------------------------------
# finite differences (NumPy float64)


def directional_fd(f: Callable[..., float], args: list, index: int, v: np.ndarray,
                   h: float = 1e-6) -> float:
    """Central difference of scalar ``f`` along ``v`` in argument ``index``."""
    plus = list(args)
    minus = list(args)
    plus[index] = args[index] + h * v
    minus[index] = args[index] - h * v
    return (float(f(*plus)) - float(f(*minus))) / (2 * h)


def unit_directions(rng: np.random.Generator, shape: tuple, n: int = 3) -> list:
    out = []
    for _ in range(n):
        v = rng.normal(size=shape)
        out.append(v / max(np.linalg.norm(v), 1e-300))
    return out


# ---------------------------------------------------------------------------
# strategies

# subnormals excluded: XLA on CPU flushes them to zero, so JAX sees other inputs
finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False, allow_subnormal=False,
                  width=64)


@st.composite
def embeddings(draw, min_rows: int = 1, max_rows: int = 8, min_dim: int = 1,
               max_dim: int = 5, dim: int | None = None) -> np.ndarray:
    d = draw(st.integers(min_dim, max_dim)) if dim is None else dim
    n = draw(st.integers(min_rows, max_rows))
    return draw(hnp.arrays(np.float64, (n, d), elements=finite))


@st.composite
def hard_embeddings(draw, min_rows: int = 2, max_rows: int = 8, max_dim: int = 6) -> np.ndarray:
    """Batches built to stress the GEMM: exact duplicates, near-duplicates
    (relative gaps down to 1e-9) and a large common offset."""
    d = draw(st.integers(1, max_dim))
    n = draw(st.integers(min_rows, max_rows))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * draw(st.sampled_from([1e-3, 1.0, 1e3]))
    for i in range(1, n):
        kind = draw(st.sampled_from(["free", "dup", "near"]))
        j = draw(st.integers(0, i - 1))
        if kind == "dup":
            x[i] = x[j]
        elif kind == "near":
            gap = draw(st.sampled_from([1e-9, 1e-6, 1e-3]))
            x[i] = x[j] + gap * rng.normal(size=d) * (np.abs(x[j]).max() + 1e-300)
    offset = draw(st.sampled_from([0.0, 1.0, 1e4]))
    return x + offset * rng.normal(size=d)


@st.composite
def labeled_batch(draw, min_rows: int = 1, max_rows: int = 8, max_dim: int = 4,
                  max_classes: int = 4):
    x = draw(embeddings(min_rows=min_rows, max_rows=max_rows, max_dim=max_dim))
    c = draw(st.integers(1, max_classes))
    labels = np.asarray(draw(hnp.arrays(np.int64, (x.shape[0],),
                                        elements=st.integers(0, c - 1))))
    return x, labels, c
