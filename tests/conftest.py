"""One session-scoped backend fixture over every installed array library.

``backend`` gives ``b.xp`` (the array-API namespace, as array_namespace
returns it), ``b.device`` and ``b.name``; a backend that is not installed, or a
GPU that is absent, is skipped, never an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)
settings.register_profile(
    "dev",
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)
settings.register_profile(
    "thorough",
    deadline=None,
    max_examples=500,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@dataclass(frozen=True)
class Backend:
    name: str
    xp: Any
    device: Any

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """A NumPy array moved into this backend (dtype kept unless given)."""
        a = np.asarray(a)
        if dtype is None:
            dtype = getattr(self.xp, str(a.dtype)) if a.dtype != np.bool_ else self.xp.bool
        return self.xp.asarray(a, dtype=dtype, device=self.device)

    def float_dtype(self, name: str) -> Any:
        return getattr(self.xp, name)


def _make(name: str) -> Backend:
    if name == "numpy":
        import array_api_compat.numpy as xnp

        return Backend(name, xnp, "cpu")
    if name.startswith("array_api_strict"):
        strict = pytest.importorskip("array_api_strict")
        strict.set_array_api_strict_flags(api_version="2024.12")
        dev = strict.Device("device1") if name.endswith("device1") else strict.Device()
        return Backend(name, strict, dev)
    if name.startswith("torch"):
        torch = pytest.importorskip("torch")
        import array_api_compat.torch as xtorch

        if name == "torch:cuda":
            if not torch.cuda.is_available():
                pytest.skip("no CUDA device")
            return Backend(name, xtorch, torch.device("cuda"))
        return Backend(name, xtorch, torch.device("cpu"))
    if name == "jax":
        jax = pytest.importorskip("jax")
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        return Backend(name, jnp, jax.devices()[0])
    if name == "cupy":
        cupy = pytest.importorskip("cupy")
        try:
            if cupy.cuda.runtime.getDeviceCount() < 1:
                pytest.skip("no CUDA device")
        except Exception:  # no driver at all
            pytest.skip("no CUDA driver")
        import array_api_compat.cupy as xcupy

        return Backend(name, xcupy, cupy.cuda.Device(0))
    raise AssertionError(name)


BACKENDS = [
    "numpy",
    "array_api_strict",
    "array_api_strict:device1",
    "torch",
    "jax",
    "torch:cuda",
    "cupy",
]


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request) -> Backend:
    return _make(request.param)


@pytest.fixture(scope="session")
def numpy_backend() -> Backend:
    return _make("numpy")
