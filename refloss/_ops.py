"""Small element-wise helpers that every backend runs natively.

``clip`` replaces ``xp.clip``: array-api-compat's generic ``clip`` (CuPy
in every release so far, torch in the oldest releases this project allows)
writes the bounds through boolean masks, ``out[x < lo] = lo``, and each
boolean-mask write is a device-to-host sync on a GPU (the mask's
``nonzero``). A ``where`` is one element-wise kernel on every library.

``row_ranges`` splits B×B-sized work (row-wise searches, soft batch-all
triplets, the distance backward's K = G/D) into at most ``BLOCKS`` row
blocks of ceil(B²/BLOCKS) elements, so that the number of blocks (hence of
ops and kernel launches) does not grow with B while their working arrays
stay a fraction of one B×B matrix (peak memory); never smaller than the
floor: 2²² elements on CPU arrays (a block is a few ms of streaming work,
so its ~20 ops cost nothing), 2²⁴ on accelerators (each op is a kernel
launch of ~10 µs host time). ``RowBlocks`` carries a B×B result (∂L/∂D) as
those blocks from the loss's backward into the distance backward, which
consumes it block by block: it is never joined into one B×B array.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import device as _device

BLOCKS = 4
BLOCK_FLOOR_CPU = 1 << 22
BLOCK_FLOOR = 1 << 24


def clip(xp: Any, x: Any, lo: float | None = None, hi: float | None = None) -> Any:
    """``x`` clipped to ``[lo, hi]`` (either bound may be ``None``), in ``x``'s dtype.

    ``lo`` and ``hi`` are Python numbers representable in ``x``'s dtype. An
    entry is replaced only when it lies strictly beyond a bound: an entry
    equal to a bound is kept, its sign of zero included (as array-api-compat's
    generic ``clip`` and ``torch.clamp`` do; ``numpy.clip`` differs only in the
    sign of a zero clipped against a zero bound, which no caller does), and
    NaN stays NaN. Under autograd the gradient passes where
    ``lo <= x <= hi``, as ``torch.clamp``'s does.
    """
    if lo is not None:
        x = xp.where(x < lo, lo, x)
    if hi is not None:
        x = xp.where(x > hi, hi, x)
    return x


def on_cpu(a: Any) -> bool:
    """Whether ``a`` lives in host memory (NumPy, array-api-strict, torch or
    JAX CPU arrays; not CuPy or an accelerator)."""
    dev = _device(a)
    kind = getattr(dev, "type", None) or getattr(dev, "platform", None)
    if kind is None:  # NumPy ("cpu"), array-api-strict devices, CuPy devices
        return not type(dev).__module__.startswith("cupy")
    return kind == "cpu"


def block_elements(a: Any, cells: int) -> int:
    """Elements of one block of work the size of ``cells`` distances (B×B, or
    b×B for an anchor block: its blocks stay O(b·B)) on the device of ``a``."""
    floor = BLOCK_FLOOR_CPU if on_cpu(a) else BLOCK_FLOOR
    return max(-(-cells // BLOCKS), floor)


def row_ranges(like: Any, rows: int, width: int) -> list[tuple[int, int]]:
    """``[(r0, r1), ...]``: at most ``BLOCKS`` row blocks of a ``rows × width``
    array (:func:`block_elements` of ``like``'s device)."""
    step = max(1, block_elements(like, rows * width) // max(width, 1))
    return [(r0, min(r0 + step, rows)) for r0 in range(0, rows, step)]


class RowBlocks:
    """A ``rows × width`` array given by its row blocks, made on demand:
    ``make(r0, r1)`` returns rows ``r0:r1`` for each of ``ranges`` (the
    ranges :func:`row_ranges` gives).

    A consumer that walks the same ranges makes one block at a time and lets
    it go before the next (one block alive instead of the whole array, and
    no B×B concatenation); any other consumer calls :meth:`whole`.
    """

    __slots__ = ("make", "ranges")

    def __init__(self, ranges: list[tuple[int, int]], make: Any) -> None:
        self.ranges, self.make = list(ranges), make

    def whole(self, xp: Any) -> Any:
        """The array itself (every block, concatenated)."""
        parts = [self.make(r0, r1) for r0, r1 in self.ranges]
        return parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)
