"""Count the aten ops and the host syncs of one call on torch tensors.

``count_ops(fn, *args, **kwargs) -> (result, ops, syncs, sync_ops)`` runs
``fn`` under a :class:`torch.utils._python_dispatch.TorchDispatchMode` that
sees every aten op torch dispatches (forward and backward, autograd's own
ops included) and counts:

* ``ops``: every aten op. On a GPU each one is at least a kernel launch
  (about 10 µs of host time), so this is the launch count of the call;
* ``syncs``: the ops after which the host must wait for the device, because
  they hand a value or a data-dependent shape back to Python:
  ``_local_scalar_dense`` (``.item()``, ``int()``, ``float()``, ``bool()``
  of a tensor), ``nonzero`` / ``masked_select`` / ``unique*`` (output shape
  depends on the data), ``index`` / ``index_put`` with a boolean index
  (a hidden ``nonzero``), and copies from a non-CPU tensor to the CPU;
* ``sync_ops``: ``{op name: count}`` of those syncs.

It runs on CPU tensors as well: the ops and the syncs a GPU would wait on
are the same calls, only cheaper. Used by the benchmark harness (the "ops"
and "syncs" columns) and by tests/test_sync_budget.py. Nothing here is
imported by refloss.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

__all__ = ["SYNC_OPS", "count_ops", "counting"]

# Ops that always make the host wait for the device.
SYNC_OPS = frozenset({
    "_local_scalar_dense", "nonzero", "nonzero_static", "nonzero_static_fallback", "masked_select",
    "_unique", "_unique2", "unique_consecutive", "unique_dim", "item", "is_nonzero",
    "equal", "allclose",
})
# Ops that sync only when one of their index arguments is boolean.
_MASK_INDEXING = frozenset({"index", "index_put", "index_put_", "_index_put_impl_"})
_COPIES = frozenset({"_to_copy", "copy_", "to"})


def _has_bool_index(torch, args) -> bool:
    for a in args:
        items = a if isinstance(a, (list, tuple)) else (a,)
        if any(isinstance(t, torch.Tensor) and t.dtype in (torch.bool, torch.uint8)
               for t in items):
            return True
    return False


def _is_device_to_host(torch, name, args, kwargs) -> bool:
    if name not in _COPIES:
        return False
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if name == "copy_":  # copy_(dst, src)
        return (len(tensors) >= 2 and tensors[0].device.type == "cpu"
                and tensors[1].device.type != "cpu")
    target = kwargs.get("device")
    return (bool(tensors) and tensors[0].device.type != "cpu" and target is not None
            and torch.device(target).type == "cpu")


def _is_sync(torch, name: str, args, kwargs) -> bool:
    return (name in SYNC_OPS
            or (name in _MASK_INDEXING and _has_bool_index(torch, args[1:]))
            or _is_device_to_host(torch, name, args, kwargs))


@contextmanager
def counting():
    """``with counting() as c: ...``, then ``c.ops``, ``c.syncs`` and ``c.sync_ops``
    (name → count) of everything dispatched inside the block."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Counter(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops, self.syncs, self.sync_ops = 0, 0, Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = func.overloadpacket.__name__
            self.ops += 1
            if _is_sync(torch, name, args, kwargs):
                self.syncs += 1
                self.sync_ops[name] += 1
            return func(*args, **kwargs)

    counter = _Counter()
    with counter:
        yield counter


def count_ops(fn: Callable, *args: Any, **kwargs: Any) -> tuple[Any, int, int, dict]:
    """``(fn(*args, **kwargs), ops, syncs, sync_ops)``: the aten ops ``fn`` dispatched,
    how many of them sync the host with the device, and which (name → count)."""
    with counting() as c:
        result = fn(*args, **kwargs)
    return result, c.ops, c.syncs, dict(c.sync_ops)
