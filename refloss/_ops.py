"""Small element-wise helpers that every backend runs natively.

``clip`` replaces ``xp.clip``: array-api-compat's generic ``clip`` (CuPy
in every release so far, torch in the oldest releases this project allows)
writes the bounds through boolean masks, ``out[x < lo] = lo``, and each
boolean-mask write is a device-to-host sync on a GPU (the mask's
``nonzero``). A ``where`` is one element-wise kernel on every library.
"""

from __future__ import annotations

from typing import Any


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
