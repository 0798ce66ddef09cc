"""Calling the two sides on one input: NumPy arrays in the right dtype for
each role, the reference in float64 NumPy with its :func:`refloss.vjp`
pullback, the candidate through its framework's bridge (or its analytic
rule, or plain calls for finite differences), outputs back as NumPy, and the
candidate's failures turned into one-line messages.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ._setup import KINDS, _CandidateFailure, _ReferenceFailure

if TYPE_CHECKING:
    from ._setup import _Setup


@contextlib.contextmanager
def _silenced():
    """Candidates may warn (0/0 in NumPy): a warning is not a result, and a
    test suite that turns warnings into errors must not see them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            yield


def _to_numpy(obj: Any) -> np.ndarray:
    if isinstance(obj, np.ndarray):
        return obj
    if hasattr(obj, "detach") and callable(obj.detach):  # torch, without importing it
        obj = obj.detach()
        if hasattr(obj, "cpu"):
            obj = obj.cpu()
        return np.asarray(obj.numpy())
    if hasattr(obj, "numpy") and callable(obj.numpy):  # tensorflow
        return np.asarray(obj.numpy())
    return np.asarray(obj)


def _outputs(value: Any) -> tuple:
    if isinstance(value, (tuple, list)):
        return tuple(_to_numpy(v) for v in value)
    return (_to_numpy(value),)


def _is_index(a: np.ndarray) -> bool:
    return a.dtype.kind in "iu"


def _arrays(setup: _Setup, bundle: Mapping, dtype: str) -> dict[str, np.ndarray]:
    out = {}
    for role in setup.ref_roles:
        a = np.asarray(bundle[role])
        if KINDS[role] == "float":
            a = a.astype(dtype)
        elif KINDS[role] == "int":
            a = a.astype(np.int64)
        else:
            a = a.astype(bool)
        out[role] = a
    return out


def _run_reference(setup: _Setup, inputs: Mapping, *, with_grad: bool):
    args = [setup.ref_same.convert(inputs[r]) if r == "same" else inputs[r]
            for r in setup.ref_roles]
    try:
        with _silenced():
            if with_grad:
                import refloss

                value, pullback = refloss.vjp(setup.reference, *args, **setup.ref_kwargs)
            else:
                value, pullback = setup.reference(*args, **setup.ref_kwargs), None
    except Exception as exc:
        raise _ReferenceFailure(f"{setup.ref_name} raised {type(exc).__name__}: {exc}") from exc
    outputs = _outputs(value)
    if pullback is None:
        return outputs, None

    def grads(cot):
        g = pullback(np.asarray(cot, dtype=np.float64) if np.ndim(cot) else float(cot))
        return {r: (None if v is None else np.asarray(v, dtype=np.float64))
                for r, v in zip(setup.ref_roles, g, strict=False)}

    return outputs, grads


def _reference_primary(setup: _Setup, inputs: Mapping, cot: Any) -> float:
    out, _ = _run_reference(setup, inputs, with_grad=False)
    return float(np.sum(np.asarray(cot) * np.asarray(out[0], dtype=np.float64)))


def _call_candidate(setup: _Setup, inputs: Mapping, *, with_grad: bool):
    """``(outputs, pullback or None)`` of the candidate on ``inputs`` (in the
    candidate's dtype). Raises _CandidateFailure with a one-line message."""
    args = _candidate_args(setup, inputs)
    try:
        with _silenced():
            if setup.bridge is not None:
                kinds = [setup.cand_same.kind if r == "same" else KINDS[r]
                         for r in setup.cand_roles]
                outputs, pull = setup.bridge.vjp(
                    setup.candidate, args, kinds, dtype=setup.dtype,
                    kwargs=setup.cand_kwargs, grad=with_grad,
                )
            elif with_grad and setup.grad_method == "analytic":
                import refloss

                value, pull0 = refloss.vjp(setup.candidate, *args, **setup.cand_kwargs)
                outputs = _outputs(value)

                def pull(cot, _p=pull0):
                    return tuple(_p(np.asarray(cot) if np.ndim(cot) else float(cot)))
            else:
                outputs, pull = _outputs(setup.candidate(*args, **setup.cand_kwargs)), None
    except _CandidateFailure:
        raise
    except Exception as exc:
        raise _CandidateFailure(_raised(exc), dict(inputs)) from exc

    def grads(cot):
        try:
            with _silenced():
                g = pull(cot)
        except Exception as exc:
            raise _CandidateFailure(f"gradient {_raised(exc)}", dict(inputs)) from exc
        return {r: (None if v is None else _to_numpy(v).astype(np.float64))
                for r, v in zip(setup.cand_roles, g, strict=False)}

    return outputs, (grads if pull is not None else None)


def _candidate_scalar(setup: _Setup, inputs64: Mapping, cot: Any) -> float:
    """sum(cot * first output) of a NumPy candidate at float64 ``inputs64``."""
    args = _candidate_args(setup, inputs64)
    try:
        with _silenced():
            out = _outputs(setup.candidate(*args, **setup.cand_kwargs))
    except Exception as exc:
        raise _CandidateFailure(_raised(exc), dict(inputs64)) from exc
    if out[0].shape != np.shape(cot):
        return math.nan
    return float(np.sum(np.asarray(cot) * out[0].astype(np.float64)))


def _candidate_args(setup: _Setup, inputs: Mapping) -> list:
    """The candidate's positional arguments (``same`` in its convention)."""
    return [setup.cand_same.convert(inputs[r]) if r == "same" else inputs[r]
            for r in setup.cand_roles]


def _raised(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    first = msg[0] if msg else ""
    if len(first) > 200:
        first = first[:197] + "..."
    return f"raised {type(exc).__name__}: {first}" if first else f"raised {type(exc).__name__}"


def _match_outputs(setup: _Setup, cand: tuple, ref: tuple, inputs: Mapping) -> tuple:
    if setup.index_mode:
        if len(cand) != len(ref) or not all(_is_index(c) for c in cand):
            raise _CandidateFailure(
                f"returned {len(cand)} output(s) of dtypes "
                f"{[str(c.dtype) for c in cand]}, expected {len(ref)} integer index arrays "
                f"(as {setup.ref_name})", dict(inputs))
        lengths = {c.shape for c in cand}
        if len(lengths) != 1 or any(c.ndim != 1 for c in cand):
            raise _CandidateFailure(
                f"returned index arrays of shapes {[c.shape for c in cand]}, "
                f"expected {len(ref)} 1-D arrays of one length", dict(inputs))
        return cand, ref
    if len(cand) == len(ref):
        pairs = (cand, ref)
    elif len(cand) == 1:
        pairs = (cand, ref[:1])
    else:
        raise _CandidateFailure(
            f"returned {len(cand)} outputs, expected {len(ref)} (as {setup.ref_name}; "
            f"pick the value with output=N)",
            dict(inputs))
    for i, (c, r) in enumerate(zip(*pairs, strict=True)):
        if c.shape != r.shape:
            which = "a value" if len(pairs[1]) == 1 else f"output {i}"
            raise _CandidateFailure(
                f"returned {which} of shape {c.shape}, expected {r.shape} "
                f"(the shape {setup.ref_name} returns)", dict(inputs))
    return pairs


def _rows(outputs: tuple) -> list[tuple]:
    return sorted(zip(*(np.asarray(a).tolist() for a in outputs), strict=False))
