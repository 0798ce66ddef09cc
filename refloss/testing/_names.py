"""Names: a reference resolved from a name (a refloss function, a compat
preset, ``module:function``), a candidate loaded from ``MODULE:FUNCTION``
(a class instantiated with its constructor's keyword arguments), the
readable and replayable names of both, and a guess of a candidate's
framework.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any


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


def load_candidate(spec: str, init_kwargs: Mapping[str, Any] | None = None) -> Callable:
    """The candidate named by ``spec``: ``"package.module:function"`` (a class
    is instantiated with ``init_kwargs``, none by default, e.g. a loss
    module), or ``"known:<name>"`` for an entry of
    :mod:`refloss.adapters.known`.

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
    init_kwargs = _check_init_kwargs(init_kwargs)
    if isinstance(obj, type):
        obj = _instantiate(obj, spec, init_kwargs)
    elif init_kwargs:
        raise ValueError(f"init_kwargs: {spec} is not a class")
    if not callable(obj):
        raise ValueError(f"candidate: {spec} is a {type(obj).__name__}, not callable")

    # a wrapper carries the spec, so that the user's function is left untouched
    @functools.wraps(obj)
    def candidate(*args: Any, **kwargs: Any) -> Any:
        return obj(*args, **kwargs)

    candidate.__refloss_candidate__ = spec
    if init_kwargs:
        candidate.__refloss_init_kwargs__ = init_kwargs
    return candidate


_FRAMEWORK_ROOTS = {
    "torch": "torch", "pytorch_metric_learning": "torch", "jax": "jax", "jaxlib": "jax",
    "flax": "jax", "optax": "jax", "equinox": "jax", "tensorflow": "tensorflow",
    "keras": "tensorflow", "tf_keras": "tensorflow", "tensorflow_addons": "tensorflow",
}


def detect_framework(candidate: Callable) -> str:
    """A guess of the candidate's framework ("numpy" when nothing points
    elsewhere): where it is defined (a framework's own function or module
    class, or a subclass of one, such as a ``torch.nn.Module``), else what
    its code uses — the framework modules and functions its body names
    (``torch.cdist``, ``from torch import cdist``, an ``import torch``
    inside it), through the functions of its own module it calls. Other
    imports of its module do not count: a NumPy function next to torch code
    is NumPy's."""
    obj = inspect.unwrap(candidate)
    while hasattr(obj, "func") and callable(obj.func):  # functools.partial
        obj = inspect.unwrap(obj.func)
    mod = getattr(obj, "__module__", None) or type(obj).__module__
    if not isinstance(obj, type) and not inspect.isroutine(obj):
        mod = type(obj).__module__
    root = (mod or "").split(".")[0]
    if root in _FRAMEWORK_ROOTS:
        return _FRAMEWORK_ROOTS[root]
    # an instance or a class of a framework's base class (a torch.nn.Module subclass)
    cls = obj if isinstance(obj, type) else type(obj)
    for base in getattr(cls, "__mro__", ())[1:]:
        r = (getattr(base, "__module__", "") or "").split(".")[0]
        if r in _FRAMEWORK_ROOTS:
            return _FRAMEWORK_ROOTS[r]
    if inspect.isfunction(obj):
        found = _used_frameworks(obj, set())
    else:  # a callable object: the methods of its class
        found = set()
        for value in vars(cls).values():
            if inspect.isfunction(value):
                found |= _used_frameworks(value, set())
    return found.pop() if len(found) == 1 else "numpy"


def _framework_of(value: Any) -> str | None:
    """The framework a module, function or class comes from, or None."""
    if isinstance(value, ModuleType):
        name = value.__name__
    elif callable(value):
        name = getattr(value, "__module__", None)
    else:
        return None
    root = name.split(".")[0] if isinstance(name, str) else ""
    return _FRAMEWORK_ROOTS.get(root)


def _used_frameworks(fn: Callable, seen: set) -> set:
    """The frameworks the code of ``fn`` names, directly or through the
    functions of its own module it calls (``seen``: those already read)."""
    seen.add(fn)
    names = getattr(fn, "__globals__", {})
    found: set = set()

    def read(code: Any) -> None:
        for name in code.co_names:
            head = name.split(".")[0]
            if head in _FRAMEWORK_ROOTS and name not in names:  # an import in the body
                found.add(_FRAMEWORK_ROOTS[head])
                continue
            value = names.get(name)
            framework = _framework_of(value)
            if framework is not None:
                found.add(framework)
            elif (inspect.isfunction(value) and value not in seen
                  and value.__module__ == fn.__module__):
                found.update(_used_frameworks(value, seen))
        for const in code.co_consts:
            if hasattr(const, "co_names"):  # a nested function, lambda or comprehension
                read(const)

    code = getattr(fn, "__code__", None)
    if code is not None:
        read(code)
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            framework = _framework_of(cell.cell_contents)
        except ValueError:  # an empty cell
            continue
        if framework is not None:
            found.add(framework)
    return found


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


def _check_init_kwargs(init_kwargs: Any) -> dict:
    if init_kwargs is None:
        return {}
    if not isinstance(init_kwargs, Mapping):
        raise TypeError(f"init_kwargs: expected a dict of keyword arguments, got "
                        f"{type(init_kwargs).__name__}")
    return dict(init_kwargs)


def _instantiate(cls: type, name: str, init_kwargs: Mapping) -> Any:
    """``cls(**init_kwargs)``; a failure is bad usage, named."""
    try:
        obj = cls(**init_kwargs)
    except Exception as exc:
        given = f"init_kwargs {dict(init_kwargs)}" if init_kwargs else "no arguments"
        raise ValueError(f"init_kwargs: cannot instantiate {name} with {given} "
                         f"({type(exc).__name__}: {exc})") from None
    try:
        obj.__refloss_init_kwargs__ = dict(init_kwargs)
    except AttributeError:  # __slots__ or a C type: nothing to remember
        pass
    return obj
