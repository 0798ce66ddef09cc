r"""The cross-check harness: search for inputs where a candidate loss disagrees
with a refloss reference (or a compat preset), in value and gradient.

:func:`crosscheck` draws inputs with :mod:`refloss.testing.strategies` (which
inputs is read from the reference's signature: a labeled batch, explicit
triplets, pairs, a batch with centers), feeds the same values to both
functions — the candidate in its framework and dtype, the reference in
float64 NumPy — compares every output and the gradient of the first, and
lets Hypothesis shrink the first disagreement to a small counterexample.

Gradients. The candidate's come from its framework's autograd (torch,
JAX, TensorFlow, through :mod:`refloss.adapters.bridges`), from its analytic
rule when it carries one (a refloss function or compat preset), or, for a
plain NumPy function, from central differences along random directions.
The reference's come from :func:`refloss.vjp`. A non-scalar output is
differentiated against a random cotangent.

Kinks. Where the reference is not differentiable (a distance exactly 0, a
hinge exactly at 0, a tie in a max or min) frameworks legitimately pick
different subgradients, so a gradient difference there is *skipped*, not
reported: when a gradient differs, the reference's one-sided difference
quotients along the direction of the difference are compared, and a jump
between them marks a kink. A NaN or inf gradient is never excused. Values
are always compared, ties included. With ``ties=False`` (the float32
default) a value difference is also skipped where the reference itself
changes under a perturbation of the inputs at the dtype's rounding level.

Tolerances follow the dtype (:data:`TOLERANCES`): an output agrees when
:math:`\lVert c - r\rVert_\infty \le \mathrm{tol}\cdot\max(\lVert r\rVert_\infty,
\mathrm{floor})`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import math
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.errors import Flaky, HypothesisException, Unsatisfiable

from . import strategies as rst
from ._report import Counterexample, Report, load_counterexample

__all__ = [
    "FRAMEWORKS",
    "TOLERANCES",
    "CandidateError",
    "CrosscheckError",
    "Tolerance",
    "assert_matches",
    "crosscheck",
    "detect_framework",
    "load_candidate",
    "reference_name",
    "replay",
    "resolve_reference",
]

FRAMEWORKS = ("numpy", "torch", "jax", "tensorflow")

# parameter names -> the role of the array passed there
ROLE_SYNONYMS = {
    "x": "x", "embeddings": "x", "embedding": "x", "emb": "x", "features": "x",
    "feature": "x", "feat": "x", "feats": "x", "y_pred": "x", "inputs": "x", "input": "x",
    "labels": "labels", "label": "labels", "y_true": "labels", "targets": "labels",
    "target": "labels", "pids": "labels",
    "centers": "centers", "centres": "centers",
    "anchor": "anchor", "anchors": "anchor", "positive": "positive",
    "positives": "positive", "negative": "negative", "negatives": "negative",
    "a": "a", "b": "b", "x1": "a", "x2": "b", "input1": "a", "input2": "b",
    "embeddings_anchor": "a", "embeddings_positive": "b",
    "same": "same", "similar": "same", "is_same": "same",
}
FLOAT_ROLES = ("x", "centers", "anchor", "positive", "negative", "a", "b")
KINDS = {**{r: "float" for r in FLOAT_ROLES}, "labels": "int", "same": "bool"}


@dataclass(frozen=True)
class Tolerance:
    """Relative tolerances of one dtype: ``value`` for outputs, ``grad`` for
    autograd / analytic gradients, ``fd`` for finite-difference directional
    derivatives; magnitudes below ``floor`` are compared absolutely
    (against ``tol * floor``)."""

    value: float
    grad: float
    fd: float
    floor: float

    def as_dict(self, fd: bool) -> dict[str, float]:
        return {"value": self.value, "gradient": self.fd if fd else self.grad}


#: float64: a few hundred ulps; float32 against a float64 reference:
#: about 4·sqrt(eps32) for values and 16·sqrt(eps32) for gradients. Finite
#: differences always run in float64 (h = 1e-6): truncation and rounding
#: stay below 1e-5 relative away from kinks.
TOLERANCES = {
    "float64": Tolerance(value=1e-7, grad=1e-6, fd=1e-5, floor=1e-2),
    "float32": Tolerance(value=1.5e-3, grad=5e-3, fd=1e-5, floor=1e-2),
}
# step of the kink probe, times max(1, max|x|): a kink closer than this counts
_KINK_H = {"float64": 1e-6, "float32": 1e-5}
_KINK_JUMP = 1e-3  # relative jump between one-sided slopes that marks a kink
_FD_H = 1e-6
_FD_DIRECTIONS = 2
# slopes below this are compared absolutely (1e-5 * 0.1 = 1e-6: the
# difference quotients' own rounding and truncation stay below it)
_FD_FLOOR = 0.1


class CrosscheckError(Exception):
    """The cross-check could not run (bad usage); the message is one line."""


class CandidateError(CrosscheckError):
    """The candidate raised, or returned something that cannot be compared
    (wrong number of outputs, wrong shape). ``inputs`` holds the (shrunk)
    input it failed on, when the failure came up during the search."""

    def __init__(self, message: str, inputs: dict | None = None) -> None:
        super().__init__(message)
        self.inputs = inputs or {}


class _Mismatch(Exception):
    def __init__(self, outcome: _Outcome) -> None:
        super().__init__(outcome.kind)
        self.outcome = outcome


class _CandidateFailure(Exception):
    def __init__(self, message: str, inputs: dict) -> None:
        super().__init__(message)
        self.message = message
        self.inputs = inputs


class _ReferenceFailure(Exception):
    pass


# --------------------------------------------------------------------------
# resolving names


def resolve_reference(reference: Any) -> Callable:
    """The reference function: a callable as is, or a name —
    ``"batch_hard_triplet_loss"`` (``refloss.``/``rl.`` prefixes allowed),
    ``"compat.caffe.center_loss"`` or ``"caffe.center_loss"`` (a compat
    preset), or ``"package.module:function"``.

    Raises ValueError naming what does not exist, TypeError for a non-name.
    """
    if callable(reference):
        return reference
    if not isinstance(reference, str):
        raise TypeError(
            f"reference: expected a refloss function, a compat preset or its name, "
            f"got {type(reference).__name__}"
        )
    name = reference.strip()
    for prefix in ("refloss.", "rl."):
        if name.startswith(prefix):
            name = name[len(prefix):]
    if ":" in name:
        fn = _import_attr(name, "reference")
    elif "." in name:
        mod_name, attr = name.rsplit(".", 1)
        if mod_name.startswith("compat."):
            mod_name = mod_name[len("compat."):]
        full = f"refloss.compat.{mod_name}"
        try:
            mod = importlib.import_module(full)
        except ImportError as exc:
            raise ValueError(
                f"reference: no compat module {full!r} ({type(exc).__name__}: {exc})"
            ) from None
        fn = getattr(mod, attr, None)
        if fn is None or not callable(fn):
            have = ", ".join(getattr(mod, "__all__", [])) or "none"
            raise ValueError(f"reference: {full} has no preset {attr!r} (it has: {have})")
    else:
        import refloss

        fn = getattr(refloss, name, None)
        if fn is None or name not in refloss.__all__ or not callable(fn) or isinstance(fn, type):
            known = ", ".join(n for n in refloss.__all__ if _is_function(getattr(refloss, n)))
            raise ValueError(
                f"reference: no refloss function named {reference!r} (known: {known}; "
                f"or a preset such as 'compat.caffe.center_loss')"
            )
    return fn


def _is_function(obj: Any) -> bool:
    return callable(obj) and not isinstance(obj, type)


def reference_name(fn: Callable) -> str:
    """A readable, resolvable name of a reference ("refloss.center_loss",
    "refloss.compat.caffe.center_loss")."""
    import refloss

    name = getattr(fn, "__name__", None)
    if name and getattr(refloss, name, None) is fn:
        return f"refloss.{name}"
    mod = getattr(fn, "__module__", None)
    if mod and name:
        return f"{mod}.{name}" if mod.startswith("refloss.") else f"{mod}:{fn.__qualname__}"
    return repr(fn)


def _import_attr(spec: str, what: str) -> Any:
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise ValueError(f"{what}: expected MODULE:FUNCTION, got {spec!r}")
    try:
        obj = importlib.import_module(mod_name)
    except Exception as exc:  # any import-time failure of user code is bad usage
        raise ValueError(
            f"{what}: cannot import module {mod_name!r} ({type(exc).__name__}: {exc})"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{what}: module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def load_candidate(spec: str) -> Callable:
    """The candidate named by ``spec``: ``"package.module:function"`` (a class
    is instantiated with no arguments, e.g. a loss module), or
    ``"known:<name>"`` for an entry of :mod:`refloss.adapters.known`.

    The returned callable remembers ``spec`` so that a saved counterexample
    can be replayed. Raises ValueError naming what fails to import.
    """
    if not isinstance(spec, str):
        raise TypeError(f"candidate: expected 'MODULE:FUNCTION', got {type(spec).__name__}")
    if spec.startswith("known:"):
        from refloss.adapters import known

        entry = known.get(spec[len("known:"):])
        return entry.candidate()
    obj = _import_attr(spec, "candidate")
    if isinstance(obj, type):
        try:
            obj = obj()
        except Exception as exc:
            raise ValueError(
                f"candidate: cannot instantiate {spec} with no arguments "
                f"({type(exc).__name__}: {exc})"
            ) from None
    if not callable(obj):
        raise ValueError(f"candidate: {spec} is a {type(obj).__name__}, not callable")

    # a wrapper carries the spec, so that the user's function is left untouched
    @functools.wraps(obj)
    def candidate(*args: Any, **kwargs: Any) -> Any:
        return obj(*args, **kwargs)

    candidate.__refloss_candidate__ = spec
    return candidate


_FRAMEWORK_ROOTS = {
    "torch": "torch", "pytorch_metric_learning": "torch", "jax": "jax", "jaxlib": "jax",
    "flax": "jax", "optax": "jax", "equinox": "jax", "tensorflow": "tensorflow",
    "keras": "tensorflow", "tf_keras": "tensorflow", "tensorflow_addons": "tensorflow",
}


def detect_framework(candidate: Callable) -> str:
    """A guess of the candidate's framework from where it is defined and what
    its module imports ("numpy" when nothing points elsewhere)."""
    obj = inspect.unwrap(candidate)
    while hasattr(obj, "func") and callable(obj.func):  # functools.partial
        obj = inspect.unwrap(obj.func)
    mod = getattr(obj, "__module__", None) or type(obj).__module__
    if not isinstance(obj, type) and not inspect.isroutine(obj):
        mod = type(obj).__module__
    root = (mod or "").split(".")[0]
    if root in _FRAMEWORK_ROOTS:
        return _FRAMEWORK_ROOTS[root]
    names = getattr(obj, "__globals__", None)
    if names is None and mod in sys.modules:
        names = vars(sys.modules[mod])
    found = set()
    for value in (names or {}).values():
        if isinstance(value, ModuleType):
            r = value.__name__.split(".")[0]
            if r in _FRAMEWORK_ROOTS:
                found.add(_FRAMEWORK_ROOTS[r])
    return found.pop() if len(found) == 1 else "numpy"


def _candidate_name(candidate: Callable) -> str:
    spec = getattr(candidate, "__refloss_candidate__", None)
    if isinstance(spec, str):
        return spec
    if inspect.isroutine(candidate) or isinstance(candidate, type):
        return f"{candidate.__module__}:{candidate.__qualname__}"
    cls = type(candidate)
    return f"{cls.__module__}:{cls.__qualname__}()"


def _candidate_spec(candidate: Callable) -> str | None:
    spec = getattr(candidate, "__refloss_candidate__", None)
    if isinstance(spec, str):
        return spec
    if inspect.isroutine(candidate) and "<" not in candidate.__qualname__:
        spec = f"{candidate.__module__}:{candidate.__qualname__}"
        try:
            if _import_attr(spec, "candidate") is candidate:
                return spec
        except ValueError:
            return None
    return None


# --------------------------------------------------------------------------
# roles: which array goes to which parameter


def _signature(fn: Callable) -> inspect.Signature | None:
    target = inspect.unwrap(fn) if not hasattr(fn, "__signature__") else fn
    if not inspect.isroutine(target) and hasattr(target, "forward") and callable(
            target.forward):
        target = target.forward  # torch modules: (*args, **kwargs) on __call__
    try:
        return inspect.signature(target)
    except (TypeError, ValueError):
        return None


def _reference_roles(fn: Callable, name: str, kwargs: Mapping) -> list[str]:
    sig = _signature(fn)
    if sig is None:
        raise ValueError(f"reference: cannot read the signature of {name}")
    roles = []
    for p in sig.parameters.values():
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            break
        if p.name in kwargs or p.default is not p.empty:
            continue
        role = ROLE_SYNONYMS.get(p.name.lower())
        if role is None:
            raise ValueError(
                f"reference: cannot tell what to pass as {name}'s parameter {p.name!r} "
                f"(known inputs: x, labels, centers, anchor/positive/negative, a/b/same); "
                f"give it in reference_kwargs"
            )
        roles.append(role)
    if not roles:
        raise ValueError(f"reference: {name} takes no array arguments")
    if len(set(roles)) != len(roles):
        raise ValueError(f"reference: {name} takes the same input twice ({roles})")
    return roles


def _candidate_roles(fn: Callable, ref_roles: list[str]) -> list[str]:
    """The candidate's argument order, read from its parameter names when they
    name the same inputs as the reference's; the reference's order otherwise."""
    sig = _signature(fn)
    if sig is None:
        return list(ref_roles)
    roles = []
    for p in sig.parameters.values():
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            break
        roles.append(ROLE_SYNONYMS.get(p.name.lower()))
        if len(roles) == len(ref_roles):
            break
    if len(roles) == len(ref_roles) and None not in roles and set(roles) == set(ref_roles):
        return roles
    return list(ref_roles)


def _check_kwargs(fn: Callable, name: str, kwargs: Any, what: str) -> dict:
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping):
        raise TypeError(f"{what}: expected a dict of keyword arguments, got "
                        f"{type(kwargs).__name__}")
    kwargs = dict(kwargs)
    for k in kwargs:
        if not isinstance(k, str) or not k.isidentifier():
            raise ValueError(f"{what}: expected keyword names, got {k!r}")
    sig = _signature(fn)
    if sig is not None and not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        takes = [p.name for p in sig.parameters.values()
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        for k in kwargs:
            if k not in takes:
                raise ValueError(
                    f"{what}: {name} has no keyword {k!r} (it takes: {', '.join(takes)})"
                )
    return kwargs


# --------------------------------------------------------------------------
# the comparison of one input


@dataclass
class _Setup:
    candidate: Callable
    candidate_name: str
    candidate_spec: str | None
    reference: Callable
    ref_name: str
    framework: str
    bridge: Any
    dtype: str
    tol: Tolerance
    ref_roles: list[str]
    cand_roles: list[str]
    ref_kwargs: dict
    cand_kwargs: dict
    grad: bool
    grad_method: str
    ties: bool
    index_mode: bool = False


@dataclass
class _Outcome:
    agree: bool
    kind: str = ""
    role: str | None = None
    message: str = ""
    skipped: bool = False
    value_error: float = 0.0
    grad_error: float | None = None
    inputs: dict = field(default_factory=dict)
    cand_outputs: tuple = ()
    ref_outputs: tuple = ()
    cand_grads: dict = field(default_factory=dict)
    ref_grads: dict = field(default_factory=dict)
    cotangent: Any = None
    rng_seed: int = 0


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


def _rel_error(c: np.ndarray, r: np.ndarray, floor: float) -> float:
    """``max|c - r| / max(max|r|, floor)``; inf where NaN/inf do not line up."""
    c = np.asarray(c, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    if c.size == 0:
        return 0.0
    nan_c, nan_r = np.isnan(c), np.isnan(r)
    if np.any(nan_c != nan_r):
        return math.inf
    inf_c, inf_r = np.isinf(c), np.isinf(r)
    if np.any(inf_c != inf_r) or np.any(c[inf_c] != r[inf_r]):
        return math.inf
    live = np.isfinite(c) & np.isfinite(r)
    if not np.any(live):
        return 0.0
    diff = float(np.max(np.abs(c[live] - r[live])))
    scale = max(float(np.max(np.abs(r[live]))), floor)
    return diff / scale


def _cotangent(rng: np.random.Generator, shape: tuple) -> np.ndarray | float:
    if shape == ():
        return np.asarray(1.0)
    # dyadic values: exact in float32 too
    return np.round(rng.normal(size=shape) * 64.0) / 64.0


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
    args = [inputs[r] for r in setup.ref_roles]
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
    args = [inputs[r] for r in setup.cand_roles]
    try:
        with _silenced():
            if setup.bridge is not None:
                kinds = [KINDS[r] for r in setup.cand_roles]
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
            f"returned {len(cand)} outputs, expected {len(ref)} (as {setup.ref_name})",
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


def _evaluate(setup: _Setup, bundle: Mapping, rng_seed: int) -> _Outcome:
    """Compare candidate and reference on one input (NaN and inf in the
    comparison's own arithmetic are expected, never a warning)."""
    with np.errstate(all="ignore"):
        return _evaluate_once(setup, bundle, rng_seed)


def _evaluate_once(setup: _Setup, bundle: Mapping, rng_seed: int) -> _Outcome:
    rng = np.random.default_rng(rng_seed)
    cand_in = _arrays(setup, bundle, setup.dtype)
    ref_in = _arrays(setup, cand_in, "float64")
    ref_out, ref_pull = _run_reference(setup, ref_in, with_grad=setup.grad)
    cot = _cotangent(rng, ref_out[0].shape)
    want_pull = setup.grad and setup.grad_method != "finite differences"
    cand_out, cand_pull = _call_candidate(setup, cand_in, with_grad=want_pull)
    c_out, r_out = _match_outputs(setup, cand_out, ref_out, cand_in)
    base = {"inputs": cand_in, "cand_outputs": cand_out, "ref_outputs": ref_out,
            "cotangent": cot, "rng_seed": rng_seed}

    if setup.index_mode:
        if _rows(c_out) == _rows(r_out):
            return _Outcome(agree=True, **base)
        if _excused(setup, ref_in, ref_out, rng):
            return _Outcome(agree=True, skipped=True, **base)
        return _Outcome(agree=False, kind="indices", value_error=math.inf, **base)

    value_error = max(_rel_error(c, r, setup.tol.floor) for c, r in zip(c_out, r_out,
                                                                       strict=True))
    base["value_error"] = value_error
    if value_error > setup.tol.value:
        if _excused(setup, ref_in, ref_out, rng):
            return _Outcome(agree=True, skipped=True, **base)
        return _Outcome(agree=False, kind="value", **base)
    if not setup.grad:
        return _Outcome(agree=True, **base)

    ref_grads = ref_pull(cot)
    base["ref_grads"] = {r: g for r, g in ref_grads.items() if g is not None}
    if cand_pull is not None:
        return _compare_grads(setup, ref_in, cand_pull(cot), ref_grads, cot, base)
    return _compare_fd(setup, ref_in, ref_grads, cot, rng, base)


def _compare_grads(setup, ref_in, cand_grads, ref_grads, cot, base) -> _Outcome:
    worst, skipped = 0.0, False
    shown = {}
    for role in setup.ref_roles:
        r = ref_grads.get(role)
        if r is None or KINDS[role] != "float":
            continue
        c = cand_grads.get(role)
        c = np.zeros_like(r) if c is None else c
        shown[role] = c
        if c.shape != r.shape:
            raise _CandidateFailure(
                f"returned a gradient of {role} of shape {c.shape}, expected {r.shape}",
                dict(base["inputs"]))
        err = _rel_error(c, r, setup.tol.floor)
        bad = bool(np.any(~np.isfinite(c) & np.isfinite(r)))
        if err > setup.tol.grad:
            if not bad and _reference_kink(setup, ref_in, role, c - r, cot, r):
                skipped = True
                continue
            base["cand_grads"] = {**shown, **{k: v for k, v in cand_grads.items()
                                              if v is not None and k not in shown}}
            return _Outcome(agree=False, kind="gradient", role=role, grad_error=err, **base)
        worst = max(worst, err)
    base["cand_grads"] = shown
    return _Outcome(agree=True, skipped=skipped, grad_error=worst, **base)


def _compare_fd(setup, ref_in, ref_grads, cot, rng, base) -> _Outcome:
    worst, skipped = 0.0, False
    x64 = {r: a for r, a in ref_in.items()}
    f0 = _candidate_scalar(setup, x64, cot)
    for role in setup.ref_roles:
        r = ref_grads.get(role)
        if r is None or KINDS[role] != "float" or r.size == 0:
            continue
        x = x64[role]
        h = _FD_H * max(1.0, float(np.max(np.abs(x))))
        for _ in range(_FD_DIRECTIONS):
            v = rng.normal(size=x.shape)
            v /= max(np.linalg.norm(v), 1e-300)
            fp = _candidate_scalar(setup, {**x64, role: x + h * v}, cot)
            fm = _candidate_scalar(setup, {**x64, role: x - h * v}, cot)
            s_c = (fp - fm) / (2 * h)
            s_r = float(np.sum(r * v))
            err = (abs(s_c - s_r) / max(abs(s_r), _FD_FLOOR) if math.isfinite(s_c)
                   else math.inf)
            if err > setup.tol.fd:
                sp, sm = (fp - f0) / h, (f0 - fm) / h
                kink_c = math.isfinite(sp) and math.isfinite(sm) and _jump(sp, sm)
                if kink_c or _reference_kink(setup, ref_in, role, v, cot, r):
                    skipped = True
                    continue
                msg = (f"directional derivative of the value in {role} along a random "
                       f"direction: candidate (finite differences) {s_c:.9g} vs reference "
                       f"{s_r:.9g}")
                return _Outcome(agree=False, kind="gradient", role=role, grad_error=err,
                                message=msg, **base)
            worst = max(worst, err)
    return _Outcome(agree=True, skipped=skipped, grad_error=worst, **base)


def _candidate_scalar(setup: _Setup, inputs64: Mapping, cot: Any) -> float:
    """sum(cot * first output) of a NumPy candidate at float64 ``inputs64``."""
    args = [inputs64[r] for r in setup.cand_roles]
    try:
        with _silenced():
            out = _outputs(setup.candidate(*args, **setup.cand_kwargs))
    except Exception as exc:
        raise _CandidateFailure(_raised(exc), dict(inputs64)) from exc
    if out[0].shape != np.shape(cot):
        return math.nan
    return float(np.sum(np.asarray(cot) * out[0].astype(np.float64)))


def _jump(sp: float, sm: float) -> bool:
    return abs(sp - sm) > _KINK_JUMP * max(1.0, abs(sp), abs(sm))


def _reference_kink(setup: _Setup, ref_in: Mapping, role: str, direction: np.ndarray,
                    cot: Any, ref_grad: np.ndarray) -> bool:
    """Whether the reference is not differentiable at the input along
    ``direction`` in ``role``: one of its one-sided difference quotients
    departs from its derivative there (a kink: the two sides differ; a jump:
    both blow up alike)."""
    v = np.asarray(direction, dtype=np.float64)
    norm = np.linalg.norm(v)
    if not math.isfinite(norm) or norm == 0:
        return False
    v = v / norm
    x = ref_in[role]
    h = _KINK_H[setup.dtype] * max(1.0, float(np.max(np.abs(x))))
    f0 = _reference_primary(setup, ref_in, cot)
    fp = _reference_primary(setup, {**ref_in, role: x + h * v}, cot)
    fm = _reference_primary(setup, {**ref_in, role: x - h * v}, cot)
    sp, sm = (fp - f0) / h, (f0 - fm) / h
    if not (math.isfinite(sp) and math.isfinite(sm)):
        return True
    slope = float(np.sum(ref_grad * v))
    return _jump(sp, slope) or _jump(sm, slope)


def _excused(setup: _Setup, ref_in: Mapping, ref_out: tuple,
             rng: np.random.Generator) -> bool:
    """Whether a value difference is rounding, not semantics: the reference's
    result moves under perturbations at the dtype's rounding level, and either
    ties are not drawn (float32: rounding decides near-ties in any
    implementation) or the reference's own distances are not exact here."""
    if setup.ties and not _reference_inexact(setup, ref_in):
        return False
    return _ill_conditioned(setup, ref_in, ref_out, rng)


def _reference_inexact(setup: _Setup, ref_in: Mapping) -> bool:
    """Whether refloss's distance matrix of a labeled batch differs from the
    direct differences — the centred GEMM rounds (by an ulp) when the batch
    mean is not a binary fraction, which can break an exact tie."""
    if not {"x", "labels"} <= set(setup.ref_roles):
        return False
    metric = setup.ref_kwargs.get("metric", "euclidean")
    if metric not in ("euclidean", "sqeuclidean") or setup.ref_kwargs.get("normalize"):
        return False
    import refloss

    x = np.asarray(ref_in["x"], dtype=np.float64)
    diff = x[:, None, :] - x[None, :, :]
    exact = np.sum(diff * diff, axis=-1)
    if metric == "euclidean":
        exact = np.sqrt(exact)
    with _silenced():
        got = np.asarray(refloss.pairwise_distances(x, metric=metric))
    return not np.array_equal(got, exact)


def _ill_conditioned(setup: _Setup, ref_in: Mapping, ref_out: tuple,
                     rng: np.random.Generator) -> bool:
    """Whether the reference's outputs move under input perturbations at the
    dtype's rounding level (so that the candidate cannot be held to them)."""
    delta = 8 * float(np.finfo(setup.dtype).eps)
    for _ in range(2):
        moved = dict(ref_in)
        for role in setup.ref_roles:
            if KINDS[role] == "float" and ref_in[role].size:
                a = ref_in[role]
                step = delta * max(1.0, float(np.max(np.abs(a))))
                moved[role] = a + step * rng.choice([-1.0, 1.0], size=a.shape)
        out, _ = _run_reference(setup, moved, with_grad=False)
        if setup.index_mode:
            if _rows(out) != _rows(ref_out):
                return True
            continue
        for c, r in zip(out, ref_out, strict=False):
            if _rel_error(c, r, setup.tol.floor) > setup.tol.value:
                return True
    return False


# --------------------------------------------------------------------------
# inputs


def _margin_of(setup: _Setup) -> float | None:
    m = setup.ref_kwargs.get("margin")
    if m is None:
        sig = _signature(setup.reference)
        p = sig.parameters.get("margin") if sig is not None else None
        m = p.default if p is not None and p.default is not p.empty else None
    if isinstance(m, (int, float)) and not isinstance(m, bool) and math.isfinite(m) and m >= 0:
        return float(m)
    return None


def _default_strategy(setup: _Setup) -> st.SearchStrategy:
    roles = set(setup.ref_roles)
    common = {"dtype": setup.dtype, "ties": setup.ties}
    margin = _margin_of(setup)
    if roles == {"x", "labels"}:
        s = rst.labeled_batches(max_size=8, max_dim=3, margin=margin, **common)
    elif roles == {"x", "labels", "centers"}:
        s = rst.center_batches(max_size=6, max_dim=3, dtype=setup.dtype)
    elif roles == {"anchor", "positive", "negative"}:
        s = rst.triplets(max_rows=4, max_dim=3, margin=margin, **common)
    elif roles == {"a", "b", "same"}:
        s = rst.pairs(max_rows=4, max_dim=3, margin=margin, **common)
    elif roles == {"a", "b"}:
        s = rst.pairs(max_rows=4, max_dim=3, **common)
    elif roles == {"x"}:
        s = rst.embeddings(max_rows=6, max_dim=3, **common)
    else:
        raise ValueError(
            f"reference: no default inputs for {setup.ref_name}'s arguments "
            f"{setup.ref_roles}; pass inputs=<a strategy of dicts>"
        )
    return s.map(_as_bundle(setup))


def _as_bundle(setup: _Setup) -> Callable[[Any], dict]:
    def convert(value: Any) -> dict:
        if isinstance(value, Mapping):
            return dict(value)
        if hasattr(value, "_asdict"):
            return dict(value._asdict())
        if isinstance(value, np.ndarray):
            return {setup.ref_roles[0]: value}
        if isinstance(value, (tuple, list)) and len(value) == len(setup.ref_roles):
            return dict(zip(setup.ref_roles, value, strict=True))
        raise TypeError(
            f"inputs: expected the strategy to draw a dict of arrays by role "
            f"({', '.join(setup.ref_roles)}), got {type(value).__name__}"
        )

    return convert


def _example_bundle(setup: _Setup) -> dict:
    """A small fixed input, run once before the search so that a candidate
    that cannot run at all is reported at once, not after shrinking."""
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    return {
        "x": x, "labels": np.array([0, 0, 1, 1]), "centers": np.array([[0.5, 0.0], [1.0, 1.0]]),
        "anchor": x[:2], "positive": x[1:3], "negative": x[2:4],
        "a": x[:2], "b": x[2:4], "same": np.array([True, False]),
    }


# --------------------------------------------------------------------------
# the search


def _check_options(framework, dtype, grad, max_examples, seed, ties):
    if framework not in FRAMEWORKS:
        raise ValueError(
            f"framework: expected one of {', '.join(map(repr, FRAMEWORKS))}, got {framework!r}"
        )
    if dtype not in TOLERANCES:
        raise ValueError(f"dtype: expected 'float64' or 'float32', got {dtype!r}")
    if not isinstance(grad, bool):
        raise TypeError(f"grad: expected True or False, got {type(grad).__name__}")
    if isinstance(max_examples, bool) or not isinstance(max_examples, int):
        raise TypeError(f"max_examples: expected an integer, got {type(max_examples).__name__}")
    if max_examples < 1:
        raise ValueError(f"max_examples: expected an integer >= 1, got {max_examples}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed: expected an integer or None, got {type(seed).__name__}")
    if ties is not None and not isinstance(ties, bool):
        raise TypeError(f"ties: expected True, False or None, got {type(ties).__name__}")


def _make_setup(candidate, reference, *, framework, reference_kwargs, candidate_kwargs,
                grad, dtype, ties, name) -> _Setup:
    if not callable(candidate):
        raise TypeError(f"candidate: expected a callable, got {type(candidate).__name__}")
    ref = resolve_reference(reference)
    ref_name = reference_name(ref)
    ref_kwargs = _check_kwargs(ref, ref_name, reference_kwargs, "reference_kwargs")
    cand_name = name if isinstance(name, str) else _candidate_name(candidate)
    cand_kwargs = _check_kwargs(candidate, cand_name, candidate_kwargs, "candidate_kwargs")
    ref_roles = _reference_roles(ref, ref_name, ref_kwargs)
    cand_roles = _candidate_roles(candidate, ref_roles)
    has_rule = hasattr(ref, "__refloss_vjp__")
    bridge = None
    if framework != "numpy":
        try:
            from refloss.adapters import bridges
        except ImportError as exc:  # pragma: no cover - the adapters ship with refloss
            raise CrosscheckError(f"framework: refloss.adapters is missing ({exc})") from None
        bridge = bridges.get(framework)  # ValueError/ImportError name the framework
        method = "autograd"
    elif hasattr(candidate, "__refloss_vjp__"):
        method = "analytic"
    else:
        method = "finite differences"
    return _Setup(
        candidate=candidate, candidate_name=cand_name,
        candidate_spec=_candidate_spec(candidate), reference=ref, ref_name=ref_name,
        framework=framework, bridge=bridge, dtype=dtype, tol=TOLERANCES[dtype],
        ref_roles=ref_roles, cand_roles=cand_roles, ref_kwargs=ref_kwargs,
        cand_kwargs=cand_kwargs, grad=bool(grad and has_rule), grad_method=method,
        ties=_default_ties(ref, ref_kwargs, dtype) if ties is None else ties,
    )


def _default_ties(ref: Callable, kwargs: Mapping, dtype: str) -> bool:
    """Exact ties are drawn in float64 only, and not when the reference
    normalises first or uses cosine distances: rounding of the norms then
    decides lattice ties, so they are not exact in any implementation."""
    if dtype != "float64":
        return False
    sig = _signature(ref)
    params = sig.parameters if sig is not None else {}

    def option(name):
        if name in kwargs:
            return kwargs[name]
        p = params.get(name)
        return None if p is None or p.default is p.empty else p.default

    if option("normalize") is True or option("normalize_embeddings") is True:
        return False
    return (option("metric") not in ("cosine", "angular")
            and option("distance_metric") != "angular")


@dataclass
class _Stats:
    examples: int = 0
    skipped: int = 0
    failed: bool = False
    value_error: float = 0.0
    grad_error: float | None = None

    def add(self, outcome: _Outcome) -> None:
        if not self.failed:
            self.examples += 1
            self.skipped += int(outcome.skipped)
        self.value_error = max(self.value_error, outcome.value_error)
        if outcome.grad_error is not None:
            self.grad_error = max(self.grad_error or 0.0, outcome.grad_error)
        if not outcome.agree:
            self.failed = True


def _search(setup: _Setup, strategy: st.SearchStrategy, max_examples: int,
            seed: int | None) -> tuple[_Stats, _Outcome | None]:
    stats = _Stats()

    @settings(
        max_examples=max_examples, deadline=None, database=None, derandomize=False,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck), report_multiple_bugs=False,
        verbosity=Verbosity.quiet, print_blob=False,
    )
    @given(bundle=strategy, rng_seed=st.integers(0, 2**16 - 1))
    def search(bundle, rng_seed):
        outcome = _evaluate(setup, bundle, rng_seed)
        stats.add(outcome)
        if not outcome.agree:
            raise _Mismatch(outcome)

    if seed is not None:
        search = hypothesis_seed(seed)(search)
    try:
        search()
    except _Mismatch as exc:
        return stats, exc.outcome
    except _CandidateFailure as exc:
        raise CandidateError(
            f"candidate {setup.candidate_name} {exc.message} on {_inputs_words(exc.inputs)}",
            exc.inputs,
        ) from None
    except _ReferenceFailure as exc:
        raise CrosscheckError(f"reference {exc}") from None
    except Unsatisfiable:
        raise CrosscheckError(
            "inputs: the strategy could not draw enough valid examples"
        ) from None
    except Flaky as exc:
        raise CrosscheckError(
            f"candidate {setup.candidate_name} is not deterministic: the same input gave "
            f"different results ({type(exc).__name__})"
        ) from None
    except HypothesisException as exc:
        raise CrosscheckError(f"search failed: {type(exc).__name__}: {exc}") from None
    return stats, None


_PER_ROW = ("x", "labels", "anchor", "positive", "negative", "a", "b", "same")


def _minimize(setup: _Setup, outcome: _Outcome) -> _Outcome:
    """Delete rows (one sample, or one pair or triplet, at a time), then
    columns, while the candidate still disagrees: Hypothesis's shrinker can
    stop where two deletions at once would be needed; this makes the
    counterexample 1-minimal (no single row or column can go)."""
    best = outcome
    for axis in (0, 1):
        progress = True
        while progress:
            progress = False
            size = _extent(best.inputs, axis)
            # never below one row or column: the strategies draw none of those,
            # and an empty batch is a different question (its own convention)
            for i in range(size if size > 1 else 0):
                smaller = _drop(best.inputs, axis, i)
                try:
                    trial = _evaluate(setup, smaller, best.rng_seed)
                except (_CandidateFailure, _ReferenceFailure):
                    continue
                if not trial.agree and (trial.kind, trial.role) == (outcome.kind, outcome.role):
                    best, progress = trial, True
                    break
    return best


def _extent(inputs: Mapping, axis: int) -> int:
    for role in ("x", "anchor", "a"):
        if role in inputs:
            return int(np.shape(inputs[role])[axis])
    return 0


def _drop(inputs: Mapping, axis: int, i: int) -> dict:
    out = {}
    for role, a in inputs.items():
        a = np.asarray(a)
        if axis == 0 and role in _PER_ROW:
            a = np.delete(a, i, axis=0)
        elif axis == 1 and KINDS[role] == "float":
            a = np.delete(a, i, axis=1)
        out[role] = a
    return out


def _inputs_words(inputs: Mapping) -> str:
    parts = []
    for role, a in inputs.items():
        a = np.asarray(a)
        text = np.array2string(a, separator=",", threshold=40).replace("\n", "")
        parts.append(f"{role}={text}")
    return "input " + " ".join(parts) if parts else "an input"


def _dry_run(setup: _Setup) -> None:
    bundle = _example_bundle(setup)
    try:
        _evaluate(setup, bundle, 0)
    except _CandidateFailure as exc:
        raise CandidateError(
            f"candidate {setup.candidate_name} {exc.message} on the example "
            f"{_inputs_words({r: exc.inputs[r] for r in setup.cand_roles if r in exc.inputs})}",
            exc.inputs,
        ) from None
    except _ReferenceFailure as exc:
        raise ValueError(f"reference_kwargs: reference {exc}") from None


def _fd_gradient(setup: _Setup, inputs: Mapping, role: str, cot: Any) -> np.ndarray | None:
    """A full central-difference gradient of a NumPy candidate (for the report)."""
    x = np.asarray(inputs[role], dtype=np.float64)
    if x.size > 256:
        return None
    x64 = {r: (np.asarray(a, dtype=np.float64) if KINDS[r] == "float" else a)
           for r, a in inputs.items()}
    h = _FD_H * max(1.0, float(np.max(np.abs(x)))) if x.size else _FD_H
    g = np.zeros_like(x)
    try:
        for k in range(x.size):
            e = np.zeros(x.size)
            e[k] = h
            e = e.reshape(x.shape)
            fp = _candidate_scalar(setup, {**x64, role: x + e}, cot)
            fm = _candidate_scalar(setup, {**x64, role: x - e}, cot)
            g.flat[k] = (fp - fm) / (2 * h)
    except _CandidateFailure:
        return None
    return g


def _both_gradients(setup: _Setup, outcome: _Outcome) -> tuple[dict, dict]:
    """Both gradients at a counterexample whose values already differ (the
    search stops at the value), for the report; empty where unavailable."""
    if not setup.grad or setup.index_mode:
        return {}, {}
    inputs = outcome.inputs
    ref_in = _arrays(setup, inputs, "float64")
    try:
        _, ref_pull = _run_reference(setup, ref_in, with_grad=True)
        ref_grads = {r: g for r, g in ref_pull(outcome.cotangent).items() if g is not None}
        if setup.grad_method == "finite differences":
            return {}, ref_grads
        _, cand_pull = _call_candidate(setup, inputs, with_grad=True)
        cand_grads = {r: g for r, g in cand_pull(outcome.cotangent).items()
                      if g is not None and r in ref_grads}
    except (_CandidateFailure, _ReferenceFailure):
        return {}, {}
    return cand_grads, ref_grads


def _counterexample(setup: _Setup, outcome: _Outcome) -> Counterexample:
    cand_grads = dict(outcome.cand_grads)
    ref_grads = dict(outcome.ref_grads)
    if outcome.kind == "value":
        cand_grads, ref_grads = _both_gradients(setup, outcome)
    if setup.grad_method == "finite differences" and outcome.kind in ("value", "gradient"):
        for role in ref_grads:
            g = _fd_gradient(setup, outcome.inputs, role, outcome.cotangent)
            if g is not None:
                cand_grads[role] = g
    return Counterexample(
        kind=outcome.kind, inputs=dict(outcome.inputs),
        candidate_value=tuple(outcome.cand_outputs), reference_value=tuple(outcome.ref_outputs),
        candidate_grads=cand_grads, reference_grads=ref_grads, role=outcome.role,
        cotangent=np.asarray(outcome.cotangent), message=outcome.message,
        value_error=outcome.value_error, grad_error=outcome.grad_error,
        rng_seed=outcome.rng_seed,
    )


def _report(setup: _Setup, stats: _Stats, failing: _Outcome | None, seed) -> Report:
    meta = {
        "candidate_spec": setup.candidate_spec,
        "ref_roles": setup.ref_roles,
        "cand_roles": setup.cand_roles,
        "grad": setup.grad,
        "ties": setup.ties,
    }
    value_error, grad_error = stats.value_error, stats.grad_error
    if failing is not None:  # the minimized counterexample is not in the statistics
        value_error = max(value_error, failing.value_error)
        if failing.grad_error is not None:
            grad_error = max(grad_error or 0.0, failing.grad_error)
    return Report(
        candidate=setup.candidate_name, reference=setup.ref_name, framework=setup.framework,
        dtype=setup.dtype, verdict="agree" if failing is None else "disagree",
        examples=stats.examples, skipped=stats.skipped, value_error=value_error,
        grad_error=grad_error if setup.grad else None,
        tolerance=setup.tol.as_dict(setup.grad_method == "finite differences"),
        counterexample=None if failing is None else _counterexample(setup, failing),
        reference_kwargs=setup.ref_kwargs, candidate_kwargs=setup.cand_kwargs, seed=seed,
        grad_method=setup.grad_method if setup.grad else "none", meta=meta,
    )


def crosscheck(
    candidate: Callable,
    reference: Callable | str,
    *,
    framework: str = "numpy",
    reference_kwargs: Mapping[str, Any] | None = None,
    candidate_kwargs: Mapping[str, Any] | None = None,
    grad: bool = True,
    dtype: str = "float64",
    max_examples: int = 100,
    seed: int | None = 0,
    ties: bool | None = None,
    inputs: st.SearchStrategy | None = None,
    name: str | None = None,
) -> Report:
    """Search for inputs where ``candidate`` disagrees with ``reference``.

    Args:
        candidate: the implementation under test, called positionally with
            the reference's inputs — in the order of its own parameter names
            when they name the same inputs (``embeddings, labels``;
            ``y_true, y_pred``; ``anchor, positive, negative``; ``a, b, same``
            ...), in the reference's order otherwise — as arrays of
            ``framework`` in ``dtype`` (labels int64, ``same`` bool).
        reference: a refloss function or compat preset, or its name
            (``"batch_hard_triplet_loss"``, ``"compat.caffe.center_loss"``).
        framework: "numpy", "torch", "jax" or "tensorflow": how inputs are
            built and how the candidate's gradient is taken (autograd; for
            "numpy", the candidate's refloss VJP rule if it has one, else
            central differences in float64).
        reference_kwargs: keyword options of the reference (the candidate's
            own settings, written in refloss terms: ``{"margin": 0.2}``).
        candidate_kwargs: keyword arguments passed to the candidate.
        grad: compare gradients too (only where the reference has a VJP).
        dtype: "float64" or "float32" (tolerances follow it, see
            :data:`TOLERANCES`).
        max_examples: inputs to try before shrinking.
        seed: the search's seed; None for a random one. The same seed gives
            the same search in the same program, but Hypothesis also draws
            constants it collects from the imported non-installed modules, so
            importing other local code can change where the search lands
            (replay a saved counterexample to reproduce one exactly).
        ties: draw inputs with exact distance ties and hinges at 0 (default:
            True in float64, False in float32).
        inputs: a strategy of your own drawing dicts (or the records of
            :mod:`refloss.testing.strategies`) keyed by role.
        name: how the candidate is called in the report.

    Returns:
        A :class:`refloss.testing.Report`; ``report.agrees`` is the verdict
        and ``report.counterexample`` the shrunk input with both outputs and
        both gradients.

    Raises:
        CandidateError: the candidate raised or returned a wrong shape (the
            message names the input).
        ValueError, TypeError: bad arguments (an unknown reference, keyword
            or framework).
        CrosscheckError: the search could not run.

    Example::

        report = crosscheck(my_torch_batch_hard, "batch_hard_triplet_loss",
                            framework="torch", reference_kwargs={"margin": 0.2})
        print(report)
    """
    _check_options(framework, dtype, grad, max_examples, seed, ties)
    setup = _make_setup(candidate, reference, framework=framework,
                        reference_kwargs=reference_kwargs, candidate_kwargs=candidate_kwargs,
                        grad=grad, dtype=dtype, ties=ties, name=name)
    _set_index_mode(setup, _example_bundle(setup))
    _dry_run(setup)
    if inputs is None:
        strategy = _default_strategy(setup)
    elif isinstance(inputs, st.SearchStrategy):
        strategy = inputs.map(_as_bundle(setup))
    else:
        raise TypeError(f"inputs: expected a Hypothesis strategy, got {type(inputs).__name__}")
    stats, failing = _search(setup, strategy, max_examples, seed)
    if failing is not None and inputs is None:
        failing = _minimize(setup, failing)
    return _report(setup, stats, failing, seed)


def _set_index_mode(setup: _Setup, bundle: Mapping) -> None:
    """Index outputs (a miner's triplets) are compared as sets, without gradients."""
    try:
        first, _ = _run_reference(setup, _arrays(setup, bundle, "float64"), with_grad=False)
    except _ReferenceFailure as exc:
        raise ValueError(f"reference_kwargs: reference {exc}") from None
    setup.index_mode = len(first) > 1 and all(_is_index(a) for a in first)
    if setup.index_mode:
        setup.grad = False


def assert_matches(candidate: Callable, reference: Callable | str, **kwargs: Any) -> Report:
    """:func:`crosscheck`, raising AssertionError with the report when the
    candidate disagrees (for use inside a test); returns the report otherwise.

    Example::

        def test_my_loss():
            assert_matches(my_loss, "batch_all_triplet_loss", framework="torch")
    """
    report = crosscheck(candidate, reference, **kwargs)
    if not report.agrees:
        raise AssertionError(f"{report.summary()}\n\n{report}")
    return report


def replay(path: str | os.PathLike, *, candidate: Callable | None = None,
           reference: Callable | str | None = None) -> Report:
    """Run a saved counterexample again (see :meth:`Report.save`).

    The candidate is re-imported from the name saved with it (a
    ``module:function`` or a ``known:`` entry) unless given; so is the
    reference. The report's verdict says whether they still disagree on that
    input (``examples`` is 1).
    """
    cx, meta = load_counterexample(path)
    if candidate is None:
        spec = meta.get("candidate_spec")
        if not spec:
            raise ValueError(
                f"replay: {os.fspath(path)!r} was saved from a candidate that cannot be "
                f"imported by name ({meta.get('candidate')}); pass candidate="
            )
        candidate = load_candidate(spec)
    if reference is None:
        reference = meta.get("reference")
    framework = meta.get("framework", "numpy")
    dtype = meta.get("dtype", "float64")
    _check_options(framework, dtype, True, 1, 0, None)
    setup = _make_setup(
        candidate, reference, framework=framework,
        reference_kwargs=meta.get("reference_kwargs") or {},
        candidate_kwargs=meta.get("candidate_kwargs") or {},
        grad=bool(meta.get("grad", True)), dtype=dtype, ties=meta.get("ties"),
        name=meta.get("candidate"),
    )
    missing = [r for r in setup.ref_roles if r not in cx.inputs]
    if missing:
        raise ValueError(
            f"replay: {os.fspath(path)!r} holds inputs {sorted(cx.inputs)}, but "
            f"{setup.ref_name} needs {setup.ref_roles}"
        )
    _set_index_mode(setup, cx.inputs)
    stats = _Stats()
    try:
        outcome = _evaluate(setup, cx.inputs, cx.rng_seed)
    except _CandidateFailure as exc:
        raise CandidateError(
            f"candidate {setup.candidate_name} {exc.message} on the saved "
            f"{_inputs_words(exc.inputs)}", exc.inputs) from None
    except _ReferenceFailure as exc:
        raise CrosscheckError(f"reference {exc}") from None
    stats.add(outcome)
    report = _report(setup, stats, None if outcome.agree else outcome, meta.get("seed"))
    report.meta["replayed_from"] = os.fspath(path)
    return report
