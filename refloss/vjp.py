r"""Vector-Jacobian products of refloss functions: ``vjp`` and ``value_and_grad``.

Every differentiable public function ``f`` carries an analytic rule: a
forward that returns ``(value, residuals)`` and a backward that maps an
upstream gradient ``g`` (shaped like the value) and the residuals to one
gradient per array parameter. A loss is the composition
distance → per-term loss → reduction, and its backward is the chain of the
stages' backwards, written out by hand — there is no general autodiff engine.

The rule lives on the function object itself (``f.__refloss_vjp__``), so
there is no registry and no global state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Real
from typing import Any

import numpy as np
from array_api_compat import device as _device
from array_api_compat import is_array_api_obj

from . import _checks

__all__ = ["defvjp", "value_and_grad", "vjp"]


def defvjp(forward: Callable, backward: Callable) -> Callable:
    """Attach an analytic VJP rule to a public function (a decorator).

    ``forward(*args, **kwargs) -> (value, residuals)`` must validate its
    input exactly as the public function does; ``backward(residuals, g)``
    returns a tuple with one entry per positional parameter of the public
    function (``None`` for the non-differentiable ones). When ``value`` is a
    tuple (a preset that returns a loss and a statistic), the rule
    differentiates its first element.
    """

    def attach(fn: Callable) -> Callable:
        fn.__refloss_vjp__ = (forward, backward)
        return fn

    return attach


def vjp(loss_fn: Callable, *args: Any, **kwargs: Any):
    r"""Evaluate ``loss_fn(*args, **kwargs)`` and return ``(value, pullback)``.

    ``pullback(g)`` maps an upstream gradient ``g`` — a number (Python or
    NumPy scalar, broadcast to the value's shape; for a scalar value also a
    0-d NumPy array) or an array shaped like the (first) value, in its
    namespace and on its device — to ``grads``, a tuple with one entry per positional argument: the
    gradient :math:`g^\top \partial\,\mathrm{value}/\partial\,\mathrm{arg}` for each
    floating array argument, ``None`` for labels, ``same`` and other
    non-differentiable arguments. Arrays passed by keyword get no gradient.

    Each gradient is in the namespace, device and dtype of its argument.
    The pullback can be called any number of times. It reads nothing back
    from the device, except to check that an array ``g`` is finite, which
    ``check=False`` (passed on to ``loss_fn``) turns off; a number ``g`` is
    checked on the host.

    Example:
        >>> import numpy as np, refloss as rl
        >>> x = np.array([[0.0, 0.0], [3.0, 4.0]])
        >>> value, pullback = rl.vjp(rl.pairwise_distances, x)
        >>> pullback(np.ones((2, 2)))[0]
        array([[-1.2, -1.6],
               [ 1.2,  1.6]])
    """
    forward, backward = _rule(loss_fn)
    value, residuals = forward(*args, **kwargs)
    primary = value[0] if isinstance(value, tuple) else value
    n_args = len(args)
    check = kwargs.get("check", True) is not False

    def pullback(g: Any) -> tuple:
        cotangent = _as_cotangent(primary, g, check)
        grads = tuple(backward(residuals, cotangent))
        return grads[:n_args] + (None,) * (n_args - len(grads))

    return value, pullback


def value_and_grad(loss_fn: Callable, *args: Any, **kwargs: Any):
    """``(value, grads)`` of a scalar loss: :func:`vjp` with upstream gradient 1.

    The value must be a 0-d array (use :func:`vjp` with a cotangent for
    ``reduction="none"`` or for distance matrices).
    """
    value, pullback = vjp(loss_fn, *args, **kwargs)
    primary = value[0] if isinstance(value, tuple) else value
    if primary.ndim != 0:
        raise ValueError(
            f"loss_fn: value_and_grad expected a scalar loss, got shape "
            f"{tuple(primary.shape)} (use vjp with a cotangent, or a reduction "
            f"other than 'none')"
        )
    return value, pullback(1.0)


def _rule(loss_fn: Callable):
    rule = getattr(loss_fn, "__refloss_vjp__", None)
    if rule is None:
        raise TypeError(
            f"loss_fn: expected a refloss loss or distance "
            f"(a function with an analytic VJP), got {loss_fn!r}"
        )
    return rule


def _as_cotangent(value: Any, g: Any, check: bool = True) -> Any:
    xp = _checks.namespace(value=value)
    dtype = _checks.compute_dtype(xp, value.dtype)
    # a NumPy scalar (np.float64(1.0), np.float32, np.int64) is a number, for a
    # loss of any library; so is a 0-d NumPy array for a scalar loss
    if type(g) is np.ndarray and g.ndim == 0 and value.ndim == 0:
        g = g[()]
    if isinstance(g, np.generic) or not is_array_api_obj(g):
        if isinstance(g, bool) or not isinstance(g, Real):
            raise TypeError(
                f"g: expected a number or an array shaped like the value, "
                f"got {type(g).__name__}"
            )
        g = _checks.check_real("g", g)
        if not math.isfinite(g):  # checked here: the array made below is not read back
            raise ValueError("g: expected finite values, got NaN or inf")
        return xp.full(tuple(value.shape), g, dtype=dtype, device=_device(value))
    else:
        try:
            _checks.namespace(value=value, g=g)
        except (TypeError, ValueError) as exc:
            msg = str(exc).replace("value, g:", "g:").replace("value is", "the loss is")
            raise type(exc)(msg) from None
        if tuple(g.shape) != tuple(value.shape):
            raise ValueError(
                f"g: expected shape {tuple(value.shape)} (the shape of the value), "
                f"got {tuple(g.shape)}"
            )
        if not (xp.isdtype(g.dtype, "real floating") or xp.isdtype(g.dtype, "integral")):
            raise TypeError(f"g: expected a real dtype, got {g.dtype}")
        g = xp.astype(g, dtype, copy=False)  # no B×B copy of a "none" cotangent
    if check:
        _checks.check_finite(xp, "g", g)
    return g
