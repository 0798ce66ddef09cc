r"""JAX adapter: refloss's analytic gradients plugged into JAX autodiff with ``jax.custom_vjp``.

Every function here has the name, signature, value and semantics of its
counterpart in :mod:`refloss` (same formula, same conventions, same errors),
and differentiates under ``jax.grad``, ``jax.vjp``, ``jax.value_and_grad``,
``jax.jit`` and their compositions with refloss's hand-written backward
instead of JAX tracing through the forward:

.. math::

    \text{value} = f(\text{arrays};\ \text{options}), \qquad
    \bar{\text{arrays}} = f^{\text{VJP}}(\text{residuals}, \bar{\text{value}})

where ``(value, residuals) = forward(*arrays, **options)`` and
``grads = backward(residuals, g)`` are the pair ``fn.__refloss_vjp__`` that
:func:`refloss.vjp` uses (see ``docs/vjp.md``). The adapter holds no math.

Wiring:

* the positional parameters (``x``, ``labels``, ``centers``, ``a``, ``b``,
  ``same``, ...) are the primal inputs of the ``custom_vjp``; the keyword-only
  options (``margin``, ``metric``, ``reduction``, ...) are closed over, so they
  are static Python values (pass them by keyword; under ``jax.jit`` close over
  them or name them in ``static_argnames``);
* labels and ``same`` are primal inputs too, so they may be traced under
  ``jax.jit`` like any array; the backward returns ``None`` for them, which
  JAX turns into the zero cotangent of their dtype (``float0`` for integer and
  boolean arrays) — no float0 bookkeeping, and no closure over tracers;
* the residuals the core's forward saves are handed to JAX as a pytree whose
  leaves are the arrays among them; the rest (the namespace, dtypes, option
  strings, Python numbers) rides along as static tree structure, so the
  forward is never recomputed in the backward;
* the upstream gradient is cast to the compute dtype (float32 for
  float16/bfloat16 values), as :func:`refloss.vjp` does, and each gradient
  comes back in its argument's dtype.

Inputs: JAX arrays; NumPy arrays are converted with ``jnp.asarray`` as any
``jax.numpy`` function would. Anything else is refused with the core's
TypeError (``"x: expected an array ..."``), and arrays of another library with
a TypeError naming the argument. On concrete arrays (eager calls, and eager
``jax.grad``) every check of the core runs, the NaN/inf check included; on
traced arrays (inside ``jax.jit`` or ``jax.vmap``) the value checks are
skipped and only shape, dtype and option checks run (``docs/errors.md``).

Only reverse mode is defined: ``jax.jvp`` and ``jax.jacfwd`` of these
functions raise, as for every ``custom_vjp``.

Reference: JAX documentation, "Custom derivative rules for JAX-transformable
Python functions" (``jax.custom_vjp``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import refloss as _rl
from refloss import _checks

from . import _bind

__all__ = [
    "batch_all_triplet_loss",
    "batch_hard_triplet_loss",
    "center_loss",
    "contrastive_loss",
    "contrastive_loss_all_pairs",
    "hardest_negative_triplet_loss",
    "paired_distances",
    "pairwise_distances",
    "semihard_triplet_loss",
    "triplet_margin_loss",
    "wrap",
]

# --------------------------------------------------------------------------
# residuals as a pytree


@jax.tree_util.register_pytree_node_class
class _Residuals:
    """The core's residuals, split into array leaves and a static skeleton.

    ``custom_vjp`` accepts only JAX types as residuals, while the core's are
    nested tuples, named tuples and small records mixing arrays with the
    namespace module, dtypes and strings.
    """

    __slots__ = ("leaves", "skeleton")

    def __init__(self, leaves: tuple, skeleton: Any) -> None:
        self.leaves = leaves
        self.skeleton = skeleton

    @classmethod
    def of(cls, residuals: Any) -> _Residuals:
        leaves: list = []
        skeleton = _split(residuals, leaves)
        return cls(tuple(leaves), skeleton)

    def restore(self) -> Any:
        return _join(self.skeleton, iter(self.leaves))

    def tree_flatten(self):
        return self.leaves, self.skeleton

    @classmethod
    def tree_unflatten(cls, skeleton, leaves):
        return cls(tuple(leaves), skeleton)


_ARRAY, _TUPLE, _NAMEDTUPLE, _LIST, _DICT, _RECORD, _STATIC = range(7)


def _split(node: Any, leaves: list) -> tuple:
    if isinstance(node, (jax.Array, np.ndarray)):
        leaves.append(node)
        return (_ARRAY,)
    if isinstance(node, tuple):
        parts = tuple(_split(v, leaves) for v in node)
        if hasattr(type(node), "_fields"):
            return (_NAMEDTUPLE, type(node), parts)
        return (_TUPLE, parts)
    if isinstance(node, list):
        return (_LIST, tuple(_split(v, leaves) for v in node))
    if isinstance(node, dict):
        keys = tuple(node)
        return (_DICT, keys, tuple(_split(node[k], leaves) for k in keys))
    if _is_refloss_record(node):
        names = _record_fields(node)
        return (_RECORD, type(node), names, tuple(_split(getattr(node, n), leaves) for n in names))
    return (_STATIC, node)


def _join(skeleton: tuple, leaves: Iterator) -> Any:
    kind = skeleton[0]
    if kind == _ARRAY:
        return next(leaves)
    if kind == _TUPLE:
        return tuple(_join(s, leaves) for s in skeleton[1])
    if kind == _NAMEDTUPLE:
        return skeleton[1](*(_join(s, leaves) for s in skeleton[2]))
    if kind == _LIST:
        return [_join(s, leaves) for s in skeleton[1]]
    if kind == _DICT:
        return {k: _join(s, leaves) for k, s in zip(skeleton[1], skeleton[2])}
    if kind == _RECORD:
        cls, names, parts = skeleton[1:]
        record = cls.__new__(cls)
        for name, part in zip(names, parts):
            # records may be frozen or slotted: bypass their __setattr__
            object.__setattr__(record, name, _join(part, leaves))
        return record
    return skeleton[1]


def _is_refloss_record(node: Any) -> bool:
    # only refloss's own small records (selection objects) are opened; a
    # module, a dtype or any foreign object stays static
    cls = type(node)
    if isinstance(node, type) or not cls.__module__.startswith("refloss."):
        return False
    return hasattr(node, "__dict__") or any("__slots__" in vars(k) for k in cls.__mro__)


def _record_fields(node: Any) -> tuple:
    names: list = []
    for klass in type(node).__mro__:
        slots = vars(klass).get("__slots__", ())
        names.extend([slots] if isinstance(slots, str) else slots)
    names.extend(getattr(node, "__dict__", {}))
    # an unset slot has nothing to carry
    return tuple(n for n in dict.fromkeys(names) if n != "__dict__" and hasattr(node, n))


# --------------------------------------------------------------------------
# the adapter


def wrap(fn: Callable) -> Callable:
    r"""A JAX-differentiable version of a refloss function with an analytic VJP.

    ``fn`` is any function carrying ``fn.__refloss_vjp__`` (every refloss
    loss and distance, and every ``refloss.compat`` preset). The result has
    ``fn``'s name, signature and docstring; its positional (array) parameters
    become the inputs of a ``jax.custom_vjp`` whose forward is
    ``forward(*arrays, **options)`` and whose backward is
    ``backward(residuals, g)``, so that for a scalar loss
    :math:`L`, ``jax.grad`` returns refloss's :math:`\partial L/\partial x`
    (e.g. :math:`x_i - c_{y_i}` per row for ``center_loss`` with "sum").
    Keyword-only options are static. Non-differentiable inputs (labels,
    ``same``) receive JAX's zero cotangent (``float0`` for integers and
    booleans). When ``fn`` returns a tuple (a preset returning a loss and a
    statistic), its first element is differentiated and the others are
    constants for the gradient, as in :func:`refloss.vjp`.

    Example:
        >>> import jax, jax.numpy as jnp, refloss as rl
        >>> from refloss.adapters.jax import wrap
        >>> dist = wrap(rl.paired_distances)
        >>> jax.grad(lambda a: dist(a, jnp.zeros((1, 2))).sum())(jnp.array([[3.0, 4.0]]))
        Array([[0.6, 0.8]], dtype=float32)

    Raises:
        TypeError: ``fn`` has no analytic VJP, or has variadic parameters.

    References:
        JAX documentation, "Custom derivative rules for JAX-transformable
        Python functions" (``jax.custom_vjp``, ``defvjp``, zero cotangents
        returned as ``None``).
    """
    params = _bind.parameters(fn)
    forward, backward = fn.__refloss_vjp__
    names, optional = params.arrays, params.optional

    def call(given: tuple, options: dict) -> Any:
        arrays = {n: _as_jax(a) for n, a in zip(names, given)}
        _check_jax(optional, arrays)
        # an absent optional array (y=None) is not an input of the custom_vjp
        present = [i for i, n in enumerate(names) if arrays[n] is not None]
        values = [arrays[n] for n in names]

        def full(inputs: tuple) -> list:
            out = list(values)
            for i, v in zip(present, _one_trace(inputs)):
                out[i] = v
            return out

        @jax.custom_vjp
        def primal(*inputs):
            return fn(*full(inputs), **options)

        def fwd(*inputs):
            value, residuals = forward(*full(inputs), **options)
            return value, _Residuals.of(residuals)

        def bwd(saved, g):
            if isinstance(g, tuple):  # only the first output is differentiated
                g = g[0]
            g = g.astype(_checks.compute_dtype(jnp, g.dtype))
            grads = tuple(backward(saved.restore(), g))
            grads = grads + (None,) * (len(names) - len(grads))
            return tuple(grads[i] for i in present)

        primal.defvjp(fwd, bwd)
        return primal(*(values[i] for i in present))

    origin = f"{fn.__module__}.{fn.__qualname__}"
    return _bind.adapt(params, call, _ADAPTER_NOTE.format(origin=origin))


_ADAPTER_NOTE = """

    JAX adapter: this is ``{origin}`` wrapped in ``jax.custom_vjp`` by
    :func:`refloss.adapters.jax.wrap`: JAX differentiates it with the analytic
    backward above; keyword options are static; labels and ``same`` get a
    zero (float0) cotangent.
"""


def _one_trace(inputs: tuple) -> tuple:
    """``inputs`` with concrete arrays staged into the ambient trace when others are traced.

    Under ``jax.jit(jax.grad(...))`` the custom_vjp forward gets the traced
    primal of the differentiated input next to closed-over concrete constants
    (labels, centers); the core's device check cannot compare a tracer (no
    device) with a concrete array. ``stop_gradient`` stages a constant into the
    current trace (and a constant has no gradient to stop).
    """
    traced = [_checks.is_traced(a) for a in inputs]
    if all(traced) or not any(traced):
        return inputs
    return tuple(a if t else jax.lax.stop_gradient(a) for a, t in zip(inputs, traced))


def _as_jax(a: Any) -> Any:
    if isinstance(a, (np.ndarray, np.generic)):
        return jnp.asarray(a)
    return a


def _check_jax(optional: tuple, arrays: dict) -> None:
    # the core's own checks first: non-arrays, mixed libraries, devices. A
    # tracer has no device (array_api_compat gives None): comparing it with a
    # concrete array's would refuse every closed-over constant, so tracers
    # (JAX arrays by construction) are left out of this check
    concrete = {n: a for n, a in arrays.items() if not _checks.is_traced(a)}
    if any(a is not None for a in concrete.values()):
        _checks.namespace(optional=optional, **concrete)
    for name, a in arrays.items():
        if a is not None and not isinstance(a, jax.Array):
            kind = f"{type(a).__module__}.{type(a).__qualname__}"
            raise TypeError(
                f"{name}: expected a JAX array (refloss.adapters.jax differentiates "
                f"JAX arrays; call refloss directly on other libraries), got {kind}"
            )


# --------------------------------------------------------------------------
# the public functions: refloss's, differentiable by JAX

pairwise_distances = wrap(_rl.pairwise_distances)
paired_distances = wrap(_rl.paired_distances)
center_loss = wrap(_rl.center_loss)
contrastive_loss = wrap(_rl.contrastive_loss)
contrastive_loss_all_pairs = wrap(_rl.contrastive_loss_all_pairs)
triplet_margin_loss = wrap(_rl.triplet_margin_loss)
batch_all_triplet_loss = wrap(_rl.batch_all_triplet_loss)
batch_hard_triplet_loss = wrap(_rl.batch_hard_triplet_loss)
semihard_triplet_loss = wrap(_rl.semihard_triplet_loss)
hardest_negative_triplet_loss = wrap(_rl.hardest_negative_triplet_loss)
