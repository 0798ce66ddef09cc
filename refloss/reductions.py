r"""Reductions: per-term losses to the value a loss returns.

A reduction maps a 1-D vector of per-term losses ``t`` (and, for the mining
losses, the number ``n`` of valid terms it holds) to the returned value:

=================  ==========================================  ============================
reduction          value                                       ∂value/∂t_k
=================  ==========================================  ============================
``"none"``         ``t`` itself                                ``g_k``
``"sum"``          :math:`\sum_k t_k`                          ``g``
``"mean"``         :math:`\sum_k t_k / n` (0 when n = 0)       ``g / n`` (0 when n = 0)
``"mean_nonzero"`` :math:`\sum_k t_k / N_+`                    ``g / N_+``
=================  ==========================================  ============================

"mean_nonzero" counts the terms above rounding noise,
:math:`N_+ = \#\{k: t_k > \tau\}`, with

.. math::

    \tau = (16\,\varepsilon\,s)^p, \qquad s = m + \max d,

where :math:`\varepsilon` is the machine epsilon of the dtype the terms are
computed in (float32 for float16/bfloat16 input), :math:`\max d` the largest
distance the loss computed for the batch, :math:`m` the margin inside the
hinge (``max(margin, pos_margin)`` for the contrastive losses) and :math:`p`
the power of the hinge (``power`` of the contrastive losses, 1 for the
triplet losses). The soft triplet margin has :math:`\tau = 0`: its softplus
terms are never 0 in exact arithmetic and a tiny one is accurate to its own
ulps, so none is noise. The terms are hinges
:math:`[u - v]_+^p` whose operands are at most :math:`s`: a term that is 0 in
exact arithmetic comes out as a few ulps of :math:`s` (4.4e-16 after
``normalize=True``), and 16 ulps of :math:`s` leaves room for the rounding of
the distances themselves. The rule depends on the values only, so it is the
same on every backend. A term in :math:`(0, \tau]` still enters the sum and
the gradient; it is only not counted. The compat presets keep their
source's own count (pytorch-metric-learning's ``AvgNonZeroReducer``: ``> 0``;
omoindrot: ``> 1e-16``).

The count in "mean_nonzero" is piecewise constant in ``t`` and is treated as
a constant by the gradient (its derivative is zero almost everywhere). No
reduction ever divides by zero: an empty count gives the value 0 and the
gradient 0. "mean_nonzero" is Hermans et al.'s :math:`L_{BA\neq0}` (and
pytorch-metric-learning's ``AvgNonZeroReducer`` up to the tolerance).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from array_api_compat import device as _device

REDUCTIONS = ("none", "sum", "mean", "mean_nonzero")

# τ of "mean_nonzero" in ulps of the hinge operands' scale (module docstring)
NONZERO_ULPS = 16


def nonzero_tolerance(xp: Any, reduction: str, d: Any, margin: float, power: int = 1) -> Any:
    """τ = (16 ε (margin + max d))^power for "mean_nonzero", else 0.0.

    ``d`` holds the distances the terms were computed from (any shape; the
    dtype the terms are computed in); ``margin`` the margin inside the hinge.
    """
    if reduction != "mean_nonzero":
        return 0.0
    scale = margin + xp.max(d) if math.prod(d.shape) else margin
    return (NONZERO_ULPS * xp.finfo(d.dtype).eps * scale) ** power


def reduce_forward(xp: Any, terms: Any, reduction: str, count: Any = None, tol: Any = 0.0):
    """Reduce ``terms`` (1-D); returns ``(value, residuals)``.

    ``count`` is the number of valid terms for "mean" (a Python int or a 0-d
    integer array; default ``terms.shape[0]``): invalid terms are zeros that
    the caller keeps in ``terms`` and are not counted. ``tol`` is τ of
    "mean_nonzero" (:func:`nonzero_tolerance`), which counts the terms > τ.
    """
    if reduction == "none":
        return terms, (reduction, None, None)
    total = xp.sum(terms)
    if reduction == "sum":
        return as_array(xp, total), (reduction, None, None)
    if reduction == "mean":
        n = terms.shape[0] if count is None else count
    else:  # mean_nonzero
        n = xp.count_nonzero(terms > tol)
    denom, live = _safe_count(xp, n, terms)
    value = total / denom
    if live is not None:  # no counted term: the value is 0, whatever the terms
        value = xp.where(live, value, xp.zeros_like(value))
    return as_array(xp, value), (reduction, denom, live)


def as_array(xp: Any, value: Any) -> Any:
    """``value`` as a 0-d array of ``xp``: NumPy's full reductions and its
    arithmetic on 0-d arrays give NumPy scalars (``np.float64``), which every
    loss promises not to return; other namespaces return arrays already."""
    return xp.asarray(value) if isinstance(value, np.generic) else value


def reduce_backward(xp: Any, residuals: Any, g: Any, like: Any) -> Any:
    """Upstream gradient ``g`` of the reduced value to the gradient of each term."""
    reduction, denom, live = residuals[0], residuals[1], residuals[2]
    if reduction == "none":
        return g
    scale = g if reduction == "sum" else g / denom
    if live is not None:
        scale = xp.where(live, scale, xp.zeros_like(scale))
    return xp.broadcast_to(scale, like.shape)


def _safe_count(xp: Any, n: Any, like: Any):
    """``(max(n, 1), n > 0)``: the divisor, and whether any term is counted
    (``None`` when that is known to be true)."""
    if isinstance(n, int):
        if n > 0:
            return float(n), None
        return 1.0, xp.asarray(False, device=_device(like))
    n = xp.astype(n, like.dtype)
    return xp.maximum(n, xp.ones_like(n)), n > 0
