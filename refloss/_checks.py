"""Argument checking and backend plumbing shared by every public function.

Every public entry point validates first and computes second: each check
raises a TypeError (wrong kind of thing) or ValueError (right kind, wrong
value) whose message names the argument, what was expected and what came.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

from array_api_compat import array_namespace, is_array_api_obj, is_lazy_array
from array_api_compat import device as _device

__all__ = [
    "check_alpha",
    "check_choice",
    "check_finite",
    "check_float",
    "check_label_range",
    "check_labels",
    "check_margin",
    "check_num_classes",
    "check_positive",
    "check_rank",
    "check_same_rows",
    "compute_dtype",
    "namespace",
]


def namespace(*, optional: tuple[str, ...] = (), **arrays: Any) -> Any:
    """The array namespace shared by ``arrays``.

    ``None`` is allowed only for the names in ``optional`` (and skipped).
    Raises TypeError naming the argument that is not an array, or naming
    the arguments when they come from different libraries, and ValueError
    when they live on different devices.
    """
    present = {}
    for name, a in arrays.items():
        if a is None:
            if name in optional:
                continue
            raise TypeError(f"{name}: expected an array, got None")
        present[name] = a
    for name, a in present.items():
        if not is_array_api_obj(a):
            raise TypeError(
                f"{name}: expected an array (NumPy, CuPy, PyTorch, JAX or "
                f"array-api-strict), got {type(a).__module__}.{type(a).__qualname__}"
            )
    try:
        xp = array_namespace(*present.values())
    except TypeError:
        kinds = ", ".join(f"{n} is {_library(a)}" for n, a in present.items())
        raise TypeError(
            f"{', '.join(present)}: expected arrays from one library, got {kinds}"
        ) from None
    # a JAX tracer reports no device (None): compare the concrete arrays only
    names = [n for n, a in present.items() if not is_traced(a)]
    if names:
        first = names[0]
        dev0 = _device(present[first])
        for name in names[1:]:
            dev = _device(present[name])
            if dev != dev0:
                raise ValueError(
                    f"{name}: expected an array on the device of {first} "
                    f"({dev0!r}), got one on {dev!r}"
                )
    return xp


def _library(a: Any) -> str:
    return type(a).__module__.split(".")[0]


def check_float(xp: Any, name: str, a: Any) -> None:
    if not xp.isdtype(a.dtype, "real floating"):
        raise TypeError(f"{name}: expected a real floating dtype, got {a.dtype}")


def check_labels(xp: Any, name: str, a: Any, rows: int, rows_of: str) -> None:
    """A 1-D integer array with one entry per row of ``rows_of``."""
    if not xp.isdtype(a.dtype, "integral"):
        raise TypeError(f"{name}: expected an integer dtype, got {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {tuple(a.shape)}")
    if a.shape[0] != rows:
        raise ValueError(
            f"{name}: expected {rows} entries (one per row of {rows_of}), "
            f"got {a.shape[0]}"
        )


def check_rank(name: str, a: Any, ndim: int, what: str) -> None:
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected {what}, got shape {tuple(a.shape)}")


def check_same_rows(name: str, a: Any, ref_name: str, ref: Any) -> None:
    if a.shape[0] != ref.shape[0]:
        raise ValueError(
            f"{name}: expected {ref.shape[0]} rows (as {ref_name}), got {a.shape[0]}"
        )


def check_finite(xp: Any, name: str, a: Any) -> None:
    # a traced array (jax.jit) has no values yet: value checks are skipped there
    # (a concrete array closed over by a jitted function gives traced results)
    if is_traced(a):
        return
    ok = xp.all(xp.isfinite(a))
    if is_traced(ok):
        return
    if not bool(ok):
        raise ValueError(f"{name}: expected finite values, got NaN or inf")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}: expected one of {allowed}, got {value!r}")


def check_margin(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    return value


def check_positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
    return value


def check_alpha(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"alpha: expected a real number, got {type(value).__name__}")
    value = float(value)
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"alpha: expected a number in [0, 1], got {value!r}")
    return value


def check_num_classes(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(
            f"num_classes: expected an integer, got {type(value).__name__}"
        )
    if value < 1:
        raise ValueError(f"num_classes: expected an integer >= 1, got {value}")
    return int(value)


def check_label_range(xp: Any, name: str, labels: Any, num_classes: int) -> None:
    if labels.shape[0] == 0 or is_traced(labels):
        return
    lo, hi = xp.min(labels), xp.max(labels)
    if is_traced(lo):
        return
    lo, hi = int(lo), int(hi)
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise ValueError(
            f"{name}: expected labels in [0, {num_classes}), got {bad}"
        )


def compute_dtype(xp: Any, dtype: Any) -> Any:
    """float16 / bfloat16 are computed in float32; other floats as they are."""
    if xp.finfo(dtype).bits < 32:
        return xp.float32
    return dtype


def default_index_dtype(xp: Any, device: Any) -> Any:
    return xp.__array_namespace_info__().default_dtypes(device=device)["indexing"]


def has_dynamic_shapes(xp: Any) -> bool:
    """Whether ``nonzero`` and friends (data-dependent output shapes) work."""
    return bool(xp.__array_namespace_info__().capabilities()["data-dependent shapes"])


def is_traced(a: Any) -> bool:
    """True for an array without concrete values (a JAX tracer inside
    ``jax.jit``/``grad``): no ``bool()``/``int()`` of its data there.

    array-api-compat's ``is_lazy_array`` is True for every JAX array, concrete
    ones included, so tracers are told apart by their class (no jax import).
    """
    if not is_lazy_array(a):
        return False
    return any("Tracer" in cls.__name__ for cls in type(a).__mro__)


def any_true(xp: Any, mask: Any) -> bool:
    """``bool(any(mask))``, or True when ``mask`` is traced (assume work to do)."""
    if is_traced(mask):
        return True
    found = xp.any(mask)
    return True if is_traced(found) else bool(found)
