"""Argument checking and backend plumbing shared by every public function.

Every public entry point validates first and computes second: each check
raises a TypeError (wrong kind of thing) or ValueError (right kind, wrong
value) whose message names the argument, what was expected and what came.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import numpy as np
from array_api_compat import (
    array_namespace,
    is_array_api_obj,
    is_array_api_strict_namespace,
    is_lazy_array,
    is_numpy_namespace,
)
from array_api_compat import device as _device

__all__ = [
    "Fetch",
    "as_index",
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
    "check_real",
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
        _check_plain(name, a)
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


def _check_plain(name: str, a: Any) -> None:
    """Refuse the array objects that pass the array-API check but would be
    computed wrongly or not at all: NumPy masked arrays (the mask would be
    ignored by some operations and applied by others) and torch meta tensors
    (no values, which the checks and the mining read)."""
    if isinstance(a, np.ma.MaskedArray):
        raise TypeError(
            f"{name}: expected a plain array, got a numpy.ma.MaskedArray (masks are "
            f"not supported: pass a.filled(...) or a.compressed() as you intend)"
        )
    if getattr(a, "is_meta", False) is True:
        raise TypeError(
            f"{name}: expected an array with values, got a torch tensor on the meta "
            f"device (meta tensors are not supported: refloss reads values to "
            f"validate and to mine)"
        )


def _library(a: Any) -> str:
    return type(a).__module__.split(".")[0]


def check_float(xp: Any, name: str, a: Any) -> None:
    if not xp.isdtype(a.dtype, "real floating"):
        raise TypeError(f"{name}: expected a real floating dtype, got {a.dtype}")


def check_labels(xp: Any, name: str, a: Any, rows: int, rows_of: str) -> Any:
    """A 1-D integer array with one entry per row of ``rows_of``; returns it
    in the backend's default index dtype (:func:`as_index`).

    Every integer dtype the backend has is accepted (bool is not an integer
    here: TypeError), and every one behaves as the same values in int64 would.
    """
    if not xp.isdtype(a.dtype, "integral"):
        raise TypeError(f"{name}: expected an integer dtype, got {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {tuple(a.shape)}")
    if a.shape[0] != rows:
        raise ValueError(
            f"{name}: expected {rows} entries (one per row of {rows_of}), "
            f"got {a.shape[0]}"
        )
    return as_index(xp, name, a)


def as_index(xp: Any, name: str, a: Any) -> Any:
    """Integer array ``a`` in the default index dtype (int64; int32 on JAX
    without x64), so that narrow labels never wrap in an ``arange`` of class
    indices and every library's take/compare accepts them (torch indexes with
    int32/int64 only and lacks min/max for uint16/32/64).

    A value outside the index dtype's range (uint64 >= 2**63) is a ValueError,
    never a silent wrap; under ``jax.jit`` (traced labels) it is not checked.
    """
    idx = default_index_dtype(xp, _device(a))
    if a.dtype == idx:
        return a
    out = xp.astype(a, idx)
    src, dst = xp.iinfo(a.dtype), xp.iinfo(idx)
    if (src.min >= dst.min and src.max <= dst.max) or is_traced(a):
        return out
    unsigned = xp.isdtype(a.dtype, "unsigned integer")
    # same width: a wrapped unsigned value turns negative; wider: the round
    # trip changes it (torch has no min/max for uint64 to compare directly)
    bad = out < 0 if unsigned else xp.zeros(out.shape, dtype=xp.bool, device=_device(a))
    if src.bits > dst.bits:
        bad = bad | (xp.astype(out, a.dtype) != a)
    if any_true(xp, bad) and not is_traced(bad):
        i = int(xp.argmax(xp.astype(bad, xp.int8)))
        value = int(out[i])
        value = value + 2**src.bits if unsigned and value < 0 else int(a[i])
        index = str(idx).rsplit(".", 1)[-1]  # torch.int64 -> int64
        raise ValueError(
            f"{name}: expected values in [{int(dst.min)}, {int(dst.max)}] (the "
            f"{index} index range), got {value}"
        )
    return out


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


class Fetch:
    """The one device→host read of a call: its value checks and the sizes
    that decide its work, read back together.

    A GPU stalls the host at every read of a device value, so a public
    function gathers what it must read — one 0-d flag per value check
    (:meth:`finite`, :meth:`label_range`) and the integer sizes its work
    depends on (:meth:`want`) — and reads them all at once: at the first
    :meth:`value` of a size, or at :meth:`done`. The values travel packed in
    one integer (mixed radix over their static bounds), so the read is one
    ``int()``. A failed check raises the same error as its standalone
    checker (found by re-running the checkers: the failure path may read
    more). On the host libraries (NumPy, array-api-strict), where a read
    costs nothing, checks run at once, before any work. With
    ``check=False`` the value checks are skipped (documented in
    docs/errors.md) and only sizes are read. Under ``jax.jit`` (traced
    values) nothing is read: checks are skipped, sizes are None.
    """

    __slots__ = ("_checks", "_pending", "_values", "check", "reads", "xp")

    def __init__(self, xp: Any, *, check: bool = True) -> None:
        self.xp = xp
        self.check = check
        self.reads = 0
        self._checks: list = []  # (0-d ok flag, checker that raises)
        self._pending: dict = {}  # key -> (0-d integer array, static bound)
        self._values: dict = {}

    def finite(self, name: str, a: Any) -> None:
        """Queue "``a`` holds finite values" (the message of :func:`check_finite`)."""
        if not self.check or is_traced(a):
            return
        if reads_are_cheap(self.xp):  # on the host: check now, before any work
            check_finite(self.xp, name, a)
            return
        ok = self.xp.all(self.xp.isfinite(a))
        if not is_traced(ok):
            self._checks.append((ok, lambda: check_finite(self.xp, name, a)))

    def label_range(self, name: str, labels: Any, num_classes: int) -> None:
        """Queue "labels in [0, num_classes)" (the message of :func:`check_label_range`)."""
        if not self.check or labels.shape[0] == 0 or is_traced(labels):
            return
        xp = self.xp
        if reads_are_cheap(xp):
            check_label_range(xp, name, labels, num_classes)
            return
        ok = (xp.min(labels) >= 0) & (xp.max(labels) < num_classes)
        if not is_traced(ok):
            self._checks.append(
                (ok, lambda: check_label_range(xp, name, labels, num_classes))
            )

    def require(self, ok: Any, checker: Any) -> None:
        """Queue a value check of any other kind: ``ok()`` builds its 0-d
        bool flag on the device (True: passes), ``checker()`` is the
        standalone checker that raises the check's error (run at once on the
        host libraries, and on failure)."""
        if not self.check:
            return
        if reads_are_cheap(self.xp):
            checker()
            return
        flag = ok()
        if not is_traced(flag):
            self._checks.append((flag, checker))

    def want(self, key: str, value: Any, bound: int) -> None:
        """Queue a size: ``value`` a 0-d integer array in ``[0, bound]``."""
        if bound <= 0:  # known without a read (an empty batch)
            self._values[key] = 0
        elif is_traced(value):
            self._values[key] = None
        else:
            self._pending[key] = (value, max(int(bound), 0))

    def value(self, key: str, value: Any = None, bound: int = 0) -> int | None:
        """The size ``key`` as a Python int (queued now when ``value`` is
        given), reading everything pending; None when it is traced."""
        if value is not None:
            self.want(key, value, bound)
        if key in self._pending:
            self.done()
        return self._values[key]

    def done(self) -> None:
        """Read what is pending (one sync) and raise for a failed check."""
        if not (self._checks or self._pending):
            return
        xp = self.xp
        items = [(ok, 1) for ok, _ in self._checks] + list(self._pending.values())
        dev = _device(items[0][0])
        idx = default_index_dtype(xp, dev)
        limit = xp.iinfo(idx).max
        radix = 1
        for _, bound in items:
            radix *= bound + 1
        if radix <= limit:
            packed = xp.zeros((), dtype=idx, device=dev)
            place = 1
            for v, bound in items:
                packed = packed + xp.astype(v, idx) * place
                place *= bound + 1
            token = int(packed)
            self.reads += 1
            values = []
            for _, bound in items:
                token, v = divmod(token, bound + 1)
                values.append(v)
        else:  # too many or too large to pack: one read each (huge batches only)
            values = [int(xp.astype(v, idx)) for v, _ in items]
            self.reads += len(values)
        flags, sizes = values[: len(self._checks)], values[len(self._checks) :]
        checks, self._checks = self._checks, []
        for (_, raise_if_bad), ok in zip(checks, flags, strict=True):
            if not ok:
                raise_if_bad()
        for key, v in zip(self._pending, sizes, strict=True):
            self._values[key] = v
        self._pending = {}


def check_flag(name: str, value: Any) -> bool:
    """The ``check`` option: a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool (True or False), got {type(value).__name__}")
    return value


def reads_are_cheap(xp: Any) -> bool:
    """NumPy and array-api-strict compute on the host: reading a value costs
    nothing there, so their fast paths may still branch on data."""
    return is_numpy_namespace(xp) or is_array_api_strict_namespace(xp)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}: expected one of {allowed}, got {value!r}")


def check_real(name: str, value: Any, expected: str = "a finite number") -> float:
    """A real number (Python or NumPy; not bool) as a Python float.

    One too large for a float (``10**400``) is a ValueError saying
    ``expected``, not Python's OverflowError.
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name}: expected {expected}, got {_too_large(value)}") from None


def _too_large(value: Any) -> str:
    if isinstance(value, Integral):
        return _show_int(int(value))
    return f"a {type(value).__name__} too large for a float"


def _show_int(value: int) -> str:
    """The int itself, or its size when long (str() of a huge int can raise)."""
    if abs(value) < 10**30:
        return str(value)
    digits = int(abs(value).bit_length() * math.log10(2)) + 1
    return f"{'a negative' if value < 0 else 'an'} integer of about {digits} digits"


def check_margin(name: str, value: Any) -> float:
    value = check_real(name, value, "a finite number >= 0")
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
    value = check_real("alpha", value, "a number in [0, 1]")
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"alpha: expected a number in [0, 1], got {value!r}")
    return value


# class indices live in int64 (the index dtype): more classes cannot be indexed
MAX_CLASSES = 2**63 - 1


def check_num_classes(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(
            f"num_classes: expected an integer, got {type(value).__name__}"
        )
    if value < 1:
        raise ValueError(f"num_classes: expected an integer >= 1, got {value}")
    if value > MAX_CLASSES:
        raise ValueError(
            f"num_classes: expected an integer <= 2**63 - 1 (int64 class indices), "
            f"got {_show_int(int(value))}"
        )
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


# --------------------------------------------------------------------------
# state kept across calls (RunningCenters): concrete, detached, never wrapped


def check_concrete(name: str, a: Any) -> None:
    """A state that outlives the call must hold values, not a JAX tracer."""
    if is_traced(a):
        raise TypeError(
            f"{name}: expected a concrete array, got a JAX tracer (state kept across "
            f"calls cannot be updated inside jax.jit, grad or vmap: call it outside "
            f"the transformation)"
        )


def detached(a: Any) -> Any:
    """``a`` without its autograd history (torch), else ``a`` itself.

    Stored state must not hold a graph: it would keep every activation of
    the step alive and make the next step's backward fail.
    """
    from array_api_compat import is_torch_array

    return a.detach() if is_torch_array(a) else a


def check_same_library(name: str, a: Any, ref_name: str, ref: Any) -> None:
    """``a`` is an array of the library of ``ref`` (no silent conversion)."""
    ok = is_array_api_obj(a)
    if ok:
        try:
            ok = array_namespace(a) is array_namespace(ref)
        except TypeError:
            ok = False
    if not ok:
        raise TypeError(
            f"{name}: expected an array of the library of {ref_name} ({_library(ref)}), "
            f"got {type(a).__module__}.{type(a).__qualname__}"
        )


def check_counts(xp: Any, name: str, counts: Any, dtype: Any) -> Any:
    """Whole, non-negative counts that fit the integer ``dtype``, converted to it.

    Integer counts of any width (unsigned included) and whole floating
    counts are accepted; a count at or above ``2**(bits - 1)`` raises instead
    of wrapping negative. Only the comparisons every backend has for every
    integer dtype are used (torch has no ``<`` for uint16/32/64).
    """
    info = xp.iinfo(dtype)
    kind = counts.dtype
    too_big = False
    if xp.isdtype(kind, "real floating"):
        if not bool(xp.all(counts == xp.round(counts))):
            raise ValueError(f"{name}: expected whole numbers, got a fraction")
        if bool(xp.any(counts < 0)):
            raise ValueError(f"{name}: expected non-negative counts, got a negative one")
        # float(2**63 - 1) rounds to 2**63: compare with the first count that does not fit
        too_big = bool(xp.any(counts >= 2.0 ** (info.bits - 1)))
    elif xp.isdtype(kind, "unsigned integer"):
        wide = xp.iinfo(kind)
        if wide.max > info.max:
            if wide.bits == info.bits:  # two's complement: a count >= 2**(bits-1) turns negative
                too_big = bool(xp.any(xp.astype(counts, dtype) < 0))
            else:
                too_big = bool(xp.any(counts > info.max))
    elif xp.isdtype(kind, "signed integer"):
        if bool(xp.any(counts < 0)):
            raise ValueError(f"{name}: expected non-negative counts, got a negative one")
        if xp.iinfo(kind).max > info.max:
            too_big = bool(xp.any(counts > info.max))
    else:
        raise TypeError(f"{name}: expected an integer or floating dtype, got {kind}")
    if too_big:
        raise ValueError(
            f"{name}: expected counts below 2**{info.bits - 1} (kept as {dtype}), "
            f"got a larger one"
        )
    return xp.astype(counts, dtype)


def counts_ok(xp: Any, name: str, counts: Any, dtype: Any) -> Any:
    """0-d flag: :func:`check_counts` would pass (its dtype's TypeError is
    raised here; nothing is read)."""
    info = xp.iinfo(dtype)
    kind = counts.dtype
    if xp.isdtype(kind, "real floating"):
        return (
            xp.all(counts == xp.round(counts))
            & ~xp.any(counts < 0)
            & ~xp.any(counts >= 2.0 ** (info.bits - 1))
        )
    ok = xp.all(xp.ones(counts.shape, dtype=xp.bool, device=_device(counts)))
    if xp.isdtype(kind, "unsigned integer"):
        wide = xp.iinfo(kind)
        if wide.max > info.max:
            if wide.bits == info.bits:
                ok = ok & ~xp.any(xp.astype(counts, dtype) < 0)
            else:
                ok = ok & ~xp.any(counts > info.max)
    elif xp.isdtype(kind, "signed integer"):
        ok = ok & ~xp.any(counts < 0)
        if xp.iinfo(kind).max > info.max:
            ok = ok & ~xp.any(counts > info.max)
    else:
        raise TypeError(f"{name}: expected an integer or floating dtype, got {kind}")
    return ok


def check_running_total(xp: Any, name: str, counts: Any, total: Any) -> None:
    """``total + counts`` stays within the integer dtype of ``total`` (no wrap)."""
    room = xp.iinfo(total.dtype).max - total  # >= 0: totals are never negative
    if bool(xp.any(counts > room)):
        raise ValueError(
            f"{name}: expected counts whose running total stays below "
            f"2**{xp.iinfo(total.dtype).bits - 1} ({total.dtype}), got one that overflows it"
        )


def check_no_overflow(xp: Any, name: str, a: Any, what: str) -> None:
    """A result computed from finite inputs is still finite (no overflow)."""
    if not bool(xp.all(xp.isfinite(a))):
        raise ValueError(f"{name}: expected values whose {what} stay finite, got an overflow")


def check_row_range(name: str, value: Any, rows: int) -> tuple[int, int] | None:
    """None, or a pair ``(start, stop)`` of ints with ``0 <= start <= stop <= rows``
    (a block of rows of a batch of ``rows``), returned as a tuple of ints."""
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or len(value) != 2 or any(
        isinstance(v, bool) or not isinstance(v, Integral) for v in value
    ):
        shown = type(value).__name__ if not isinstance(value, (tuple, list)) else repr(value)
        raise TypeError(f"{name}: expected None or a pair (start, stop) of ints, got {shown}")
    start, stop = int(value[0]), int(value[1])
    if not 0 <= start <= stop <= rows:
        raise ValueError(
            f"{name}: expected 0 <= start <= stop <= {rows} (the rows of x), "
            f"got ({start}, {stop})"
        )
    return start, stop


def check_anchor_rows(value: Any, rows: int, reduction: str) -> tuple[int, int] | None:
    """``anchor_rows`` of the labeled-batch losses: None or ``(start, stop)``
    (:func:`check_row_range`); a block's reduction is a share of the batch's,
    which "mean_nonzero" (its count and τ depend on every term) has not."""
    block = check_row_range("anchor_rows", value, rows)
    if block is not None and reduction == "mean_nonzero":
        raise ValueError(
            "reduction: expected 'none', 'sum' or 'mean' with anchor_rows (the count of "
            "'mean_nonzero' and its tolerance depend on every term of the batch), "
            "got 'mean_nonzero'"
        )
    return block
