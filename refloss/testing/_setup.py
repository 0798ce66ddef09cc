"""What a cross-check compares: the candidate and the reference (resolved by
:mod:`._names`), their frameworks, which array goes to which parameter
(roles), their keyword checks, the adaptations of :mod:`._adapt`, and the
:class:`_Setup` record the other stages read.

Errors of usage are raised here (ValueError/TypeError naming the argument,
:class:`CrosscheckError`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._domain import Domain
from ._names import (
    _candidate_name,
    _candidate_spec,
    _check_init_kwargs,
    _instantiate,
    detect_framework,
    load_candidate,
    reference_name,
    resolve_reference,
)

if TYPE_CHECKING:
    from ._judge import Tolerance

__all__ = [
    "FRAMEWORKS",
    "CandidateError",
    "CrosscheckError",
    "detect_framework",
    "load_candidate",
    "reference_name",
    "resolve_reference",
]


FRAMEWORKS = ("numpy", "torch", "jax", "tensorflow")
DTYPES = ("float64", "float32")  # the keys of _judge.TOLERANCES


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
    "left_feature": "a", "right_feature": "b", "left": "a", "right": "b",
    "distances": "distances", "dist": "distances",
    "sums": "centers", "cts": "counts", "counts": "counts",
    "same": "same", "similar": "same", "is_same": "same",
}


FLOAT_ROLES = ("x", "centers", "anchor", "positive", "negative", "a", "b", "distances",
               "counts")
#: references whose parameter names do not say what they take
REFERENCE_ROLES = {
    "refloss.compat.tfa.contrastive_loss": ["same", "distances"],  # y_pred: distances
}


KINDS = {**{r: "float" for r in FLOAT_ROLES}, "labels": "int", "same": "bool"}


class CrosscheckError(Exception):
    """The cross-check could not run (bad usage); the message is one line."""


class CandidateError(CrosscheckError):
    """The candidate raised, or returned something that cannot be compared.

    Kept for code that catches it: :func:`crosscheck` no longer raises it — a
    candidate's failure on a valid input is a finding of kind "raises" in
    the report. ``inputs`` holds the input it failed on."""

    def __init__(self, message: str, inputs: dict | None = None) -> None:
        super().__init__(message)
        self.inputs = inputs or {}


class _CandidateFailure(Exception):
    def __init__(self, message: str, inputs: dict) -> None:
        super().__init__(message)
        self.message = message
        self.inputs = inputs


class _ReferenceFailure(Exception):
    pass


def _signature(fn: Callable) -> inspect.Signature | None:
    target = inspect.unwrap(fn) if not hasattr(fn, "__signature__") else fn
    if not inspect.isroutine(target) and hasattr(target, "forward") and callable(
            target.forward):
        target = target.forward  # torch modules: (*args, **kwargs) on __call__
    try:
        return inspect.signature(target)
    except (TypeError, ValueError):
        return None


def _pairs_context(roles: list) -> list:
    """A label next to two embeddings ``a``, ``b`` is the pair flag."""
    if "a" in roles and "b" in roles:
        return ["same" if r == "labels" else r for r in roles]
    return roles


def _reference_roles(fn: Callable, name: str, kwargs: Mapping) -> list[str]:
    if name in REFERENCE_ROLES:
        return list(REFERENCE_ROLES[name])
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
                f"reference_kwargs: {name} needs {p.name!r}, which is not an input array "
                f"(known inputs: x, labels, centers, anchor/positive/negative, a/b/same): "
                f"give its value, e.g. {{{p.name!r}: ...}}"
            )
        roles.append(role)
    roles = _pairs_context(roles)
    if not roles:
        raise ValueError(f"reference: {name} takes no array arguments")
    if len(set(roles)) != len(roles):
        raise ValueError(f"reference: {name} takes the same input twice ({roles})")
    return roles


def _signature_roles(fn: Callable, limit: int) -> list:
    """The roles the first ``limit`` positional parameters name (None: unknown)."""
    sig = _signature(fn)
    if sig is None:
        return []
    roles = []
    for p in sig.parameters.values():
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) or len(roles) == limit:
            break
        roles.append(ROLE_SYNONYMS.get(p.name.lower()))
    return _pairs_context(roles)


def _candidate_roles(fn: Callable, ref_roles: list[str]) -> list[str]:
    """The candidate's argument order, read from its parameter names when they
    name the same inputs as the reference's; the reference's order otherwise."""
    roles = _signature_roles(fn, len(ref_roles))
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
    domain: Domain = field(default_factory=Domain)  # the inputs drawn and shrunk
    reseed: bool = False  # reseed the global generators before every candidate call
    notes: list = field(default_factory=list)  # said once in the report (adaptations)
    ref_same: Any = None  # _adapt.SameConvention of the reference's pair flags
    cand_same: Any = None  # ... and of the candidate's
    output: int | None = None  # which output of a tuple is the candidate's value
    params: dict = field(default_factory=dict)  # role -> module parameter name
    fixed_shapes: dict = field(default_factory=dict)  # role -> shape a module fixes
    scalar_reference: bool = False
    init_kwargs: dict = field(default_factory=dict)


def _check_options(framework, dtype, grad, max_examples, seed, ties):
    if framework not in FRAMEWORKS:
        raise ValueError(
            f"framework: expected one of {', '.join(map(repr, FRAMEWORKS))}, got {framework!r}"
        )
    if dtype not in DTYPES:
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
                grad, dtype, ties, name, init_kwargs=None, output=None, same=None) -> _Setup:
    from ._adapt import REFERENCE_SAME, SameConvention
    from ._judge import TOLERANCES  # _judge reads this module: imported when used

    init_kwargs = _check_init_kwargs(init_kwargs)
    if isinstance(candidate, type):
        candidate = _instantiate(candidate, _candidate_name(candidate), init_kwargs)
    elif init_kwargs and getattr(candidate, "__refloss_init_kwargs__", None) != init_kwargs:
        raise ValueError("init_kwargs: the candidate is not a class (pass the class itself, "
                         "or MODULE:CLASS on the command line)")
    if not callable(candidate):
        raise TypeError(f"candidate: expected a callable, got {type(candidate).__name__}")
    if output is not None and (isinstance(output, bool) or not isinstance(output, int)):
        raise TypeError(f"output: expected an integer index or None, got {output!r}")
    cand_same = SameConvention.parse(same)
    if same is None and callable(candidate) and not isinstance(candidate, type):
        # a compat preset as the candidate takes its own convention
        cand_same = REFERENCE_SAME.get(reference_name(candidate), cand_same)
    ref = resolve_reference(reference)
    ref_name = reference_name(ref)
    ref_kwargs = _check_kwargs(ref, ref_name, reference_kwargs, "reference_kwargs")
    cand_name = name if isinstance(name, str) else _candidate_name(candidate)
    cand_kwargs = _check_kwargs(candidate, cand_name, candidate_kwargs, "candidate_kwargs")
    ref_roles = _reference_roles(ref, ref_name, ref_kwargs)
    cand_roles = _candidate_roles(candidate, ref_roles)
    params, fixed = _module_inputs(candidate, ref_roles, framework)
    if params:
        named = [r for r in _signature_roles(candidate, len(ref_roles)) if r in ref_roles]
        cand_roles = named + [r for r in ref_roles if r in params]
    if not cand_same.is_default and "same" not in ref_roles:
        raise ValueError(f"same: {ref_name} takes no pair flags")
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
    setup = _Setup(
        candidate=candidate, candidate_name=cand_name,
        candidate_spec=_candidate_spec(candidate), reference=ref, ref_name=ref_name,
        framework=framework, bridge=bridge, dtype=dtype, tol=TOLERANCES[dtype],
        ref_roles=ref_roles, cand_roles=cand_roles, ref_kwargs=ref_kwargs,
        cand_kwargs=cand_kwargs, grad=bool(grad and has_rule), grad_method=method,
        ties=_default_ties(ref, ref_kwargs, dtype) if ties is None else ties,
        ref_same=REFERENCE_SAME.get(ref_name, SameConvention()), cand_same=cand_same,
        output=output, params=params, fixed_shapes=fixed, init_kwargs=init_kwargs,
    )
    if method != "analytic":
        setup.candidate = _adapted(setup, candidate)
    return setup


def _adapted(setup: _Setup, candidate: Callable) -> Callable:
    from ._adapt import adapted

    def note(text: str) -> None:
        if text not in setup.notes:
            setup.notes.append(text)

    return adapted(candidate, roles=setup.cand_roles, output=setup.output,
                   params=setup.params, scalar=lambda: setup.scalar_reference, note=note)


def _module_inputs(candidate: Callable, ref_roles: list[str], framework: str
                   ) -> tuple[dict, dict]:
    """Reference inputs a torch module candidate holds as parameters
    (``{role: name}``) and the shapes they fix (``{role: shape}``)."""
    from ._adapt import module_parameters, parameter_shape

    if framework != "torch":
        return {}, {}
    named = _signature_roles(candidate, len(ref_roles))
    missing = [r for r in ref_roles if r not in named]
    params = module_parameters(candidate, missing, ROLE_SYNONYMS)
    return params, {r: parameter_shape(candidate, p) for r, p in params.items()}


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
