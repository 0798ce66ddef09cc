r"""L2 normalisation of embeddings, with its analytic gradient.

.. math::  \hat x_i = x_i / \lVert x_i \rVert_2, \qquad
           \frac{\partial L}{\partial x_i}
             = \frac{g_i - \hat x_i\,(\hat x_i \cdot g_i)}{\lVert x_i \rVert_2}

where :math:`g_i = \partial L / \partial \hat x_i`: the upstream gradient
projected onto the tangent plane of the unit sphere at :math:`\hat x_i`,
divided by the norm.

Convention for a zero row (it has no direction): its normalised form is the
zero vector and its gradient is 0 — finite, where the common
``x / max(‖x‖, eps)`` gives ``g / eps``.
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import device as _device

from . import _checks
from .vjp import defvjp


def tree_sum(xp: Any, a: Any) -> Any:
    """Sum over the last axis in one fixed pairwise order, with elementwise adds only.

    A library's ``sum`` may order a reduction by position (vector width,
    threads, tiles); here each level adds the two halves of the axis, so the
    result depends on the row's values alone: bit-identical rows give
    bit-identical sums on every backend. Rounding error O(log(dim)·eps).
    """
    if a.shape[-1] == 0:
        return xp.zeros(a.shape[:-1], dtype=a.dtype, device=_device(a))
    while a.shape[-1] > 1:
        n = a.shape[-1]
        half = n // 2
        head = a[..., :half] + a[..., half : 2 * half]
        a = head if n % 2 == 0 else xp.concat([head, a[..., 2 * half :]], axis=-1)
    return a[..., 0]


def normalize_forward(xp: Any, x: Any):
    """``(x̂, residuals)`` for rows of ``x`` (compute dtype already applied)."""
    # scale each row by its largest |entry| first, so that squaring neither
    # underflows (tiny rows would look like zero rows) nor overflows
    if x.shape[-1]:
        peak = xp.max(xp.abs(x), axis=-1)
    else:
        peak = xp.zeros(x.shape[:1], dtype=x.dtype, device=_device(x))
    nonzero = peak > 0
    # double where: no division by 0 and no sqrt at 0 is ever evaluated, so
    # autograd through this forward agrees with the zero-row convention
    peak = xp.where(nonzero, peak, xp.ones_like(peak))
    # rows above max/16 are scaled by 1/16 (exact) first, so that 1/peak
    # stays normal: XLA on CPU divides by a broadcast value through its
    # reciprocal and flushes subnormals, which would zero such rows
    one = xp.ones_like(peak)
    big = 2.0 ** (math.frexp(float(xp.finfo(x.dtype).max))[1] - 5)
    c = xp.where(peak > big, 0.0625 * one, one)
    peak = peak * c
    scaled = (x * c[:, None]) / peak[:, None]
    # a fixed-order sum: bit-identical rows get bit-identical unit vectors,
    # which the distances' tie rule relies on
    norm = xp.sqrt(xp.where(nonzero, tree_sum(xp, scaled * scaled), xp.ones_like(peak)))
    xhat = xp.where(nonzero[:, None], scaled / norm[:, None], xp.zeros_like(x))
    return xhat, (xhat, peak, nonzero, norm, c)


def normalize_backward(xp: Any, residuals: Any, g: Any) -> Any:
    xhat, peak, nonzero, norm, c = residuals
    radial = xp.sum(xhat * g, axis=-1)
    # divide by the scaled norm (in [1, sqrt(dim)]) first and by the peak
    # last: ‖x‖ = peak·norm itself would round in the subnormal range (up to
    # 40 % off) and g/‖x‖ could overflow where the result does not
    gx = (((g - xhat * radial[:, None]) / norm[:, None]) / peak[:, None]) * c[:, None]
    return xp.where(nonzero[:, None], gx, xp.zeros_like(gx))


def _l2_normalize_fwd(x, *, check=True):
    check = _checks.check_flag("check", check)
    xp = _checks.namespace(x=x)
    _checks.check_float(xp, "x", x)
    _checks.check_rank("x", x, 2, "a 2-D array (batch, dim)")
    fetch = _checks.Fetch(xp, check=check)
    fetch.finite("x", x)
    fetch.done()
    dtype = x.dtype
    xc = xp.astype(x, _checks.compute_dtype(xp, dtype))
    xhat, res = normalize_forward(xp, xc)
    return xp.astype(xhat, dtype), (xp, dtype, res)


def _l2_normalize_bwd(residuals, g):
    xp, dtype, res = residuals
    return (xp.astype(normalize_backward(xp, res, g), dtype),)


@defvjp(_l2_normalize_fwd, _l2_normalize_bwd)
def l2_normalize(x: Any, *, check: bool = True) -> Any:
    r"""Rows of ``x`` scaled to unit Euclidean norm.

    .. math:: \hat x_i = x_i / \lVert x_i \rVert_2

    Gradient (through :func:`refloss.vjp`):
    :math:`\partial L/\partial x_i = (g_i - \hat x_i (\hat x_i\cdot g_i)) / \lVert x_i\rVert`.

    A zero row stays zero and receives gradient 0 (see the module docstring).
    This is the normalisation applied by ``normalize=True`` in every
    pairwise loss; ``torch.nn.functional.normalize`` and TensorFlow's
    ``tf.math.l2_normalize`` differ only in their epsilon for tiny norms.

    Args:
        x: ``[batch, dim]`` floating array.
        check: check that ``x`` is finite (one read; default True).
            ``check=False`` reads nothing (docs/errors.md, "Checks and syncs").

    Returns:
        ``[batch, dim]`` array in the namespace, device and dtype of ``x``.
    """
    return _l2_normalize_fwd(x, check=check)[0]
