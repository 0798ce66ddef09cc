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

from array_api_compat import device as _device

REDUCTIONS = ("none", "sum", "mean", "mean_nonzero")


def reduce_forward(xp: Any, terms: Any, reduction: str, count: Any = None):
    """Reduce ``terms`` (1-D); returns ``(value, residuals)``.

    ``count`` is the number of valid terms for "mean" (a Python int or a 0-d
    integer array; default ``terms.shape[0]``): invalid terms are zeros that
    the caller keeps in ``terms`` and are not counted.
    """
    if reduction == "none":
        return terms, (reduction, None, None)
    total = xp.sum(terms)
    if reduction == "sum":
        return total, (reduction, None, None)
    if reduction == "mean":
        n = terms.shape[0] if count is None else count
    else:  # mean_nonzero
        n = xp.count_nonzero(terms > 0)
    denom, live = _safe_count(xp, n, terms)
    value = total / denom
    if live is not None:  # no counted term: the value is 0, whatever the terms
        value = xp.where(live, value, xp.zeros_like(value))
    return value, (reduction, denom, live)


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
