"""One reading of a refloss function's signature, shared by every adapter.

A refloss function with an analytic VJP (``fn.__refloss_vjp__``) has
positional array parameters (``x``, ``labels``, ``centers``, ``a``, ``b``,
``same``, ...; ``y=None`` is an optional array) and keyword-only options.
The adapters (torch, JAX, distributed) read that split from the signature
instead of re-typing it, and bind a call the same way, so a new option or a
new loss in the core reaches every adapter without a line of glue.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Parameters", "adapt", "bind", "parameters"]

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


@dataclass(frozen=True)
class Parameters:
    """The split of a refloss function's signature.

    ``arrays`` are the names of the positional parameters in order,
    ``optional`` those of them whose default is ``None`` (an absent array),
    ``options`` the keyword-only parameters with their defaults.
    """

    fn: Callable
    signature: inspect.Signature
    arrays: tuple[str, ...]
    optional: tuple[str, ...]
    options: tuple[inspect.Parameter, ...]

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.options)

    @property
    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.options}


def parameters(fn: Callable) -> Parameters:
    """Read ``fn``'s positional arrays and keyword-only options.

    Raises:
        TypeError: ``fn`` has no analytic VJP, or has variadic parameters.
    """
    if getattr(fn, "__refloss_vjp__", None) is None:
        raise TypeError(
            f"fn: expected a refloss function with an analytic VJP "
            f"(fn.__refloss_vjp__), got {fn!r}"
        )
    signature = inspect.signature(fn)
    params = list(signature.parameters.values())
    variadic = [p.name for p in params if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if variadic:
        raise TypeError(
            f"fn: expected positional array parameters and keyword-only options, "
            f"got variadic parameter(s) {', '.join(variadic)}"
        )
    positional = [p for p in params if p.kind in _POSITIONAL]
    return Parameters(
        fn=fn,
        signature=signature,
        arrays=tuple(p.name for p in positional),
        optional=tuple(p.name for p in positional if p.default is None),
        options=tuple(p for p in params if p.kind == p.KEYWORD_ONLY),
    )


def bind(params: Parameters, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """``(arrays, options)`` of one call: arrays in signature order whether
    passed by position or by name, options with their defaults filled in.

    A call that does not fit the signature raises Python's usual TypeError.
    """
    bound = params.signature.bind(*args, **kwargs)
    bound.apply_defaults()
    arrays = tuple(bound.arguments[name] for name in params.arrays)
    options = {p.name: bound.arguments[p.name] for p in params.options}
    return arrays, options


def adapt(params: Parameters, call: Callable[[tuple, dict], Any], note: str) -> Callable:
    """The public face of an adapter: a function with ``params.fn``'s name,
    signature and docstring (``note`` appended) that binds each call as
    :func:`bind` does and returns ``call(arrays, options)``.

    Each adapter supplies only ``call`` (its framework's bridge) and its
    note, so signatures, defaults and docstrings are read from the core in
    one place and never re-typed.
    """
    fn = params.fn

    @functools.wraps(fn)
    def adapted(*args: Any, **kwargs: Any) -> Any:
        arrays, options = bind(params, args, kwargs)
        return call(arrays, options)

    adapted.__doc__ = (fn.__doc__ or "").rstrip() + note
    return adapted

