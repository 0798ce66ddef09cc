"""Counting the aten ops of a call, and the ones a GPU would wait on (tests only).

A :class:`~torch.utils._python_dispatch.TorchDispatchMode` sees every aten op
that torch runs below Python, autograd's included. On CPU tensors nothing
waits, but the same ops on a CUDA tensor would stall the host until the
stream has caught up: reading a value (``_local_scalar_dense``, behind
``int()``/``bool()``/``float()``/``.item()``), ops whose output shape depends
on the data (``nonzero``, boolean-mask indexing, ``unique``, ``masked_select``)
and copies to the host. Counting them on the CPU therefore measures what a
GPU would pay, on every CI run, without a GPU.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# ops that make the host wait for the device, by their overload packet
_SYNC_PACKETS = {
    aten._local_scalar_dense,
    aten.item,
    aten.is_nonzero,
    aten.nonzero,
    aten.nonzero_static,  # static shape, but still listed: never expected in refloss
    aten.masked_select,
    aten._unique,
    aten._unique2,
    aten.unique_consecutive,
    aten.unique_dim,
    aten.equal,
    aten.allclose,
}


def _is_sync(func, args, kwargs) -> bool:
    packet = func.overloadpacket
    if packet in _SYNC_PACKETS:
        return True
    if packet in (aten.index, aten.index_put, aten.index_put_, aten._index_put_impl):
        # x[bool_mask] (and x[bool_mask] = v): the mask's True count is read
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        return any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices
        )
    if packet in (aten._to_copy, aten.copy_, aten.to):  # device -> host
        src = args[0] if packet is not aten.copy_ else args[1]
        dst = kwargs.get("device")
        if packet is aten.copy_:
            dst = args[0].device
        return (
            isinstance(src, torch.Tensor)
            and src.device.type != "cpu"
            and dst is not None
            and torch.device(dst).type == "cpu"
        )
    return False


class DispatchCounter(TorchDispatchMode):
    """``ops`` (every aten op) and ``syncs`` (those a GPU would wait on),
    with ``sync_ops`` naming the latter."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0
        self.syncs = 0
        self.sync_ops: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops += 1
        if _is_sync(func, args, kwargs):
            self.syncs += 1
            self.sync_ops[str(func.overloadpacket)] += 1
        return func(*args, **kwargs)


@contextmanager
def counting():
    """``with counting() as c: ...`` then ``c.ops``, ``c.syncs``, ``c.sync_ops``."""
    counter = DispatchCounter()
    with counter:
        yield counter
