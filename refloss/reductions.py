r"""Reductions: per-term losses to the value a loss returns.

A reduction maps a 1-D vector of per-term losses ``t`` (and, for the mining
losses, the number ``n`` of valid terms it holds) to the returned value:

=================  ==========================================  ============================
reduction          value                                       ∂value/∂t_k
=================  ==========================================  ============================
``"none"``         ``t`` itself                                ``g_k``
``"sum"``          :math:`\sum_k t_k`                          ``g``
``"mean"``         :math:`\sum_k t_k / n` (0 when n = 0)       ``g / n`` (0 when n = 0)
``"mean_nonzero"`` :math:`\sum_k t_k / \#\{k: t_k > 0\}`       ``g / #{k: t_k > 0}``
=================  ==========================================  ============================

The count in "mean_nonzero" is piecewise constant in ``t`` and is treated as
a constant by the gradient (its derivative is zero almost everywhere). No
reduction ever divides by zero: an empty count gives the value 0 and the
gradient 0. "mean_nonzero" follows pytorch-metric-learning's
``AvgNonZeroReducer`` (strict ``> 0``) and Hermans et al.'s :math:`L_{BA\neq0}`.
"""

from __future__ import annotations

from typing import Any

REDUCTIONS = ("none", "sum", "mean", "mean_nonzero")


def reduce_forward(xp: Any, terms: Any, reduction: str, count: Any = None):
    """Reduce ``terms`` (1-D); returns ``(value, residuals)``.

    ``count`` is the number of valid terms for "mean" (a Python int or a 0-d
    integer array; default ``terms.shape[0]``): invalid terms are zeros that
    the caller keeps in ``terms`` and are not counted.
    """
    if reduction == "none":
        return terms, (reduction, None)
    total = xp.sum(terms)
    if reduction == "sum":
        return total, (reduction, None)
    if reduction == "mean":
        n = terms.shape[0] if count is None else count
    else:  # mean_nonzero
        n = xp.count_nonzero(terms > 0)
    denom = _safe_count(xp, n, terms)
    return total / denom, (reduction, denom)


def reduce_backward(xp: Any, residuals: Any, g: Any, like: Any) -> Any:
    """Upstream gradient ``g`` of the reduced value to the gradient of each term."""
    reduction, denom = residuals
    if reduction == "none":
        return g
    scale = g if reduction == "sum" else g / denom
    return xp.broadcast_to(scale, like.shape)


def _safe_count(xp: Any, n: Any, like: Any) -> Any:
    """``max(n, 1)`` in the dtype of ``like``: a sum over zero terms is 0, so
    dividing it by 1 yields the documented value 0."""
    if isinstance(n, int):
        return float(max(n, 1))
    n = xp.astype(n, like.dtype)
    return xp.maximum(n, xp.ones_like(n))
