"""Framework bridges for ``refloss.testing.crosscheck``: NumPy in, NumPy out.

A bridge turns the NumPy inputs the harness draws into the framework's
arrays (floating inputs in the requested dtype and watched for gradients,
labels int64, ``same`` flags bool), calls the candidate, and hands back its
outputs as NumPy arrays together with a pullback that runs the framework's
own autograd (torch.autograd.grad, jax.vjp, tf.GradientTape) for an upstream
gradient. It holds no math. Each framework is imported when its bridge is
first used, never at import time of this module.

``vjp(fn, args, kinds, *, dtype, kwargs, grad)`` returns ``(outputs,
pullback)``: ``outputs`` a tuple of NumPy arrays (one per output of ``fn``),
``pullback(cotangent)`` (None when ``grad`` is False) a tuple with one
gradient per argument — a NumPy float64 array for each floating argument
(zeros when the output does not depend on it), None for the others. The
gradient is that of the first output.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["JaxBridge", "TensorFlowBridge", "TorchBridge", "get"]


def _require(module: str, framework: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"framework: {framework!r} needs {module}, which is not installed ({exc})"
        ) from None


def _tree(value: Any, convert: Callable[[Any], np.ndarray]) -> tuple:
    if isinstance(value, (tuple, list)):
        return tuple(convert(v) for v in value)
    return (convert(value),)


def _zeros_for(arg: np.ndarray) -> np.ndarray:
    return np.zeros(np.shape(arg), dtype=np.float64)


class TorchBridge:
    """PyTorch: CPU tensors, gradients by ``torch.autograd.grad``."""

    name = "torch"

    def __init__(self) -> None:
        self.torch = _require("torch", "torch")

    def _tensor(self, a: np.ndarray, kind: str, dtype: str) -> Any:
        torch = self.torch
        if kind == "float":
            return torch.tensor(np.asarray(a), dtype=getattr(torch, dtype), requires_grad=True)
        if kind == "int":
            return torch.tensor(np.asarray(a), dtype=torch.int64)
        return torch.tensor(np.asarray(a), dtype=torch.bool)

    @staticmethod
    def to_numpy(t: Any) -> np.ndarray:
        if hasattr(t, "detach"):
            return t.detach().cpu().numpy()
        return np.asarray(t)

    @contextlib.contextmanager
    def _one_thread(self):
        # the inputs are a few rows: on a loaded machine torch's intra-op thread
        # pool costs milliseconds per call for nothing (restored afterwards)
        torch = self.torch
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def vjp(self, fn: Callable, args: Sequence[np.ndarray], kinds: Sequence[str], *,
            dtype: str, kwargs: dict, grad: bool):
        torch = self.torch
        targs = [self._tensor(a, k, dtype) for a, k in zip(args, kinds, strict=True)]
        with self._one_thread():
            out = fn(*targs, **kwargs)
        outputs = _tree(out, self.to_numpy)
        if not grad:
            return outputs, None
        primary = out[0] if isinstance(out, (tuple, list)) else out
        watched = [(i, t) for i, (t, k) in enumerate(zip(targs, kinds, strict=True))
                   if k == "float"]

        def pullback(cot: np.ndarray) -> tuple:
            grads: list = [None] * len(targs)
            for i, _ in watched:
                grads[i] = _zeros_for(args[i])
            if not isinstance(primary, torch.Tensor):
                raise TypeError(
                    f"the candidate returned a {type(primary).__name__}, not a tensor: "
                    f"torch cannot differentiate it (compare values only with grad=False)"
                )
            if not primary.requires_grad:
                return tuple(grads)  # a constant output: its gradient is 0
            g = torch.as_tensor(np.asarray(cot), dtype=primary.dtype)
            with self._one_thread():
                got = torch.autograd.grad(primary, [t for _, t in watched], grad_outputs=g,
                                          allow_unused=True, retain_graph=True)
            for (i, _), gi in zip(watched, got, strict=True):
                if gi is not None:
                    grads[i] = gi.detach().cpu().numpy().astype(np.float64)
            return tuple(grads)

        return outputs, pullback


class JaxBridge:
    """JAX: ``jax.numpy`` arrays, gradients by ``jax.vjp``; float64 runs under
    a local ``enable_x64`` context (the global setting is left alone)."""

    name = "jax"

    def __init__(self) -> None:
        self.jax = _require("jax", "jax")
        self.jnp = _require("jax.numpy", "jax")

    def _x64(self, on: bool) -> Any:
        jax = self.jax
        ctx = getattr(jax, "enable_x64", None)
        if ctx is None:  # older JAX keeps it in jax.experimental
            ctx = importlib.import_module("jax.experimental").enable_x64
        return ctx(on) if on else contextlib.nullcontext()

    def _array(self, a: np.ndarray, kind: str, dtype: str) -> Any:
        jnp = self.jnp
        if kind == "float":
            return jnp.asarray(np.asarray(a), dtype=getattr(jnp, dtype))
        if kind == "int":
            return jnp.asarray(np.asarray(a), dtype=jnp.int64 if dtype == "float64"
                               else jnp.int32)
        return jnp.asarray(np.asarray(a), dtype=jnp.bool_)

    def vjp(self, fn: Callable, args: Sequence[np.ndarray], kinds: Sequence[str], *,
            dtype: str, kwargs: dict, grad: bool):
        jax = self.jax
        x64 = dtype == "float64"
        with self._x64(x64):
            jargs = [self._array(a, k, dtype) for a, k in zip(args, kinds, strict=True)]
            if not grad:
                return _tree(fn(*jargs, **kwargs), np.asarray), None
            floats = [i for i, k in enumerate(kinds) if k == "float"]

            def split(*diff):
                full = list(jargs)
                for i, d in zip(floats, diff, strict=True):
                    full[i] = d
                out = fn(*full, **kwargs)
                if isinstance(out, (tuple, list)):
                    return out[0], tuple(out[1:])
                return out, ()

            primary, pull, rest = jax.vjp(split, *[jargs[i] for i in floats], has_aux=True)
            outputs = (np.asarray(primary), *(np.asarray(r) for r in rest))

        def pullback(cot: np.ndarray) -> tuple:
            with self._x64(x64):
                got = pull(self.jnp.asarray(np.asarray(cot), dtype=primary.dtype))
            grads: list = [None] * len(jargs)
            for i, gi in zip(floats, got, strict=True):
                grads[i] = np.asarray(gi).astype(np.float64)
            return tuple(grads)

        return outputs, pullback


class TensorFlowBridge:
    """TensorFlow 2 (eager): ``tf.constant`` inputs, gradients by ``tf.GradientTape``."""

    name = "tensorflow"

    def __init__(self) -> None:
        self.tf = _require("tensorflow", "tensorflow")

    def _tensor(self, a: np.ndarray, kind: str, dtype: str) -> Any:
        tf = self.tf
        if kind == "float":
            return tf.constant(np.asarray(a), dtype=getattr(tf, dtype))
        if kind == "int":
            return tf.constant(np.asarray(a), dtype=tf.int64)
        return tf.constant(np.asarray(a), dtype=tf.bool)

    @staticmethod
    def to_numpy(t: Any) -> np.ndarray:
        return np.asarray(t.numpy() if hasattr(t, "numpy") else t)

    def vjp(self, fn: Callable, args: Sequence[np.ndarray], kinds: Sequence[str], *,
            dtype: str, kwargs: dict, grad: bool):
        tf = self.tf
        targs = [self._tensor(a, k, dtype) for a, k in zip(args, kinds, strict=True)]
        watched = [i for i, k in enumerate(kinds) if k == "float"]
        with tf.GradientTape(persistent=True) as tape:
            for i in watched:
                tape.watch(targs[i])
            out = fn(*targs, **kwargs)
        outputs = _tree(out, self.to_numpy)
        if not grad:
            return outputs, None
        primary = out[0] if isinstance(out, (tuple, list)) else out

        def pullback(cot: np.ndarray) -> tuple:
            g = tf.constant(np.asarray(cot), dtype=primary.dtype)
            got = tape.gradient(primary, [targs[i] for i in watched], output_gradients=g,
                                unconnected_gradients=tf.UnconnectedGradients.ZERO)
            grads: list = [None] * len(targs)
            for i, gi in zip(watched, got, strict=True):
                grads[i] = np.asarray(tf.convert_to_tensor(gi).numpy()).astype(np.float64)
            return tuple(grads)

        return outputs, pullback


_BRIDGES = {"torch": TorchBridge, "jax": JaxBridge, "tensorflow": TensorFlowBridge}


def get(framework: str) -> Any:
    """The bridge of ``framework`` ("torch", "jax" or "tensorflow").

    Raises ValueError for an unknown name and ImportError (naming the
    package) when the framework is not installed.
    """
    if framework not in _BRIDGES:
        raise ValueError(
            f"framework: expected one of {', '.join(map(repr, _BRIDGES))}, got {framework!r}"
        )
    return _BRIDGES[framework]()
