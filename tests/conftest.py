"""One session-scoped backend fixture over every installed array library.

``backend`` gives ``b.xp`` (the array-API namespace, as array_namespace
returns it), ``b.device`` and ``b.name``; a backend that is not installed, or a
GPU that is absent, is skipped, never an error.
"""

from __future__ import annotations

import os
import shutil
import tempfile
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
# The soak (tests/test_soak.py, docs/testing.md "Soak"): random, and each soak
# test sets its own example count (about 10^5 in all); other tests run 1000.
settings.register_profile(
    "soak",
    deadline=None,
    max_examples=1000,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


# JAX compiles each op anew for every input shape (most of the JAX tests' time).
# One persistent compilation cache per run, in a temporary folder, lets the
# pytest-xdist workers and the subprocesses the tests start (docs examples,
# CLI runs) reuse each other's compiles. The controller sets it up before the
# workers start; they inherit the environment, and JAX reads it at import.
_JAX_CACHE_ENV = {
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",  # the ops compile in ~50 ms
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}


def pytest_configure(config):
    if hasattr(config, "workerinput") or "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return  # an xdist worker (the controller did it), or the caller chose
    if os.environ.get("REFLOSS_NO_JAX_CACHE"):  # to compare, or to rule the cache out
        return
    config._refloss_jax_cache = tempfile.mkdtemp(prefix="refloss-jax-cache-")
    os.environ.update(_JAX_CACHE_ENV, JAX_COMPILATION_CACHE_DIR=config._refloss_jax_cache)


def pytest_unconfigure(config):
    folder = getattr(config, "_refloss_jax_cache", None)
    if folder is not None:
        for name in [*_JAX_CACHE_ENV, "JAX_COMPILATION_CACHE_DIR"]:
            os.environ.pop(name, None)
        shutil.rmtree(folder, ignore_errors=True)


try:  # the tests use tiny tensors: intra-op threads only add contention
    import torch

    torch.set_num_threads(1)
except ImportError:
    pass


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


# Backends that re-run the same code paths as a faster one draw a fraction of
# the profile's examples per property: JAX a twelfth (eager JAX compiles each op
# per new shape, and the blocked paths meet many shapes; it was the largest
# share of CI time), strict's device1 a third (it repeats strict to check
# device propagation).
REDUCED_EXAMPLES = {"jax": 12, "array_api_strict:device1": 3}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    fn = getattr(item, "obj", None)
    params = getattr(getattr(item, "callspec", None), "params", {})
    divisor = REDUCED_EXAMPLES.get(params.get("backend"))
    current = getattr(fn, "_hypothesis_internal_use_settings", None)
    if divisor is None or current is None or not hasattr(fn, "hypothesis"):
        yield
        return
    fn._hypothesis_internal_use_settings = settings(
        current, max_examples=max(1, current.max_examples // divisor)
    )
    try:
        yield
    finally:
        fn._hypothesis_internal_use_settings = current


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request) -> Backend:
    return _make(request.param)


@pytest.fixture(scope="session")
def numpy_backend() -> Backend:
    return _make("numpy")
