r"""Named causes: which known variant of the reference the candidate computes.

Before a difference is put in numbers, the counterexample and a few fresh
inputs are tested against *hypotheses*, each a real variant of the
reference evaluated with refloss's own functions and options (a reduction,
``pairs="unordered"``, ``anchor_as_positive=True``, ``scale=0.5``, the
squared metric, margin 0, a flipped ``same``, torch's eps preset, eps
inside the sqrt or a clamped squared distance (:mod:`._variants`), one
gradient path detached) — never a copy of the candidate. A hypothesis
*explains* the difference when the candidate matches it, within the dtype's
tolerance, on every example, the counterexample included; then the report
names it ("candidate counts each unordered anchor-positive pair once"). If no
single hypothesis does, pairs of them are tried ("½ factor and squared
distances"); failing that, "k × reference" is said only when one constant k
holds on every example, and otherwise the raw numbers stand alone.

When two causes explain the difference only together, :func:`separate`
looks, with a few more candidate calls, for an example that each explains
alone, so that the first counterexample isolates one cause.

The registry is :data:`CAUSES`; each :class:`Cause` says which references it
applies to, how to evaluate the variant, and its words.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._run import _arrays, _call_candidate, _match_outputs, _run_reference, _silenced
from ._setup import KINDS, _CandidateFailure, _ReferenceFailure

__all__ = ["CAUSES", "Cause", "Diagnosis", "diagnose", "name_cause", "separate"]


@dataclass(frozen=True)
class Cause:
    """One hypothesis: a variant of the reference.

    ``kwargs`` are reference options to change (a callable of the current
    options for those that depend on them); ``transform`` rewrites the inputs
    (a flipped ``same``); ``factor`` multiplies the value (a callable of the
    inputs for a batch-size-dependent mean); ``reference`` replaces the
    reference function (a compat preset) with ``ref_kwargs`` mapping the
    options; ``path`` keeps only the gradient through the positive or the
    negative distances (the other detached); ``applies`` says whether it is a
    variant of this reference at all.
    """

    name: str
    words: str | Callable[[Callable, Mapping], str]
    applies: Callable[[Callable, Mapping], bool]
    kwargs: Callable[[Mapping], dict] | None = None
    transform: Callable[[dict], dict] | None = None
    factor: Callable[[Mapping], float] | float = 1.0
    reference: Callable[[], Callable] | None = None
    ref_kwargs: Callable[[Mapping], dict] | None = None
    path: str | None = None
    roles: tuple | None = None  # the replacing reference's argument order
    distance: tuple | None = None  # (mode, eps): another euclidean distance (_variants)
    gradient_only: bool = False
    tags: frozenset = field(default_factory=frozenset)

    def say(self, fn: Callable, kw: Mapping) -> str:
        return self.words(fn, kw) if callable(self.words) else self.words


def _ref(*names: str) -> Callable[[Callable, Mapping], bool]:
    def applies(fn: Callable, kw: Mapping) -> bool:
        import refloss

        return any(fn is getattr(refloss, n, None) for n in names)
    return applies


def _takes(option: str, unless: Any = None) -> Callable[[Callable, Mapping], bool]:
    """The reference has ``option`` (and it is not already ``unless``)."""
    def applies(fn: Callable, kw: Mapping) -> bool:
        params = _params(fn)
        if option not in params:
            return False
        return unless is None or _current(fn, kw, option) != unless
    return applies


def _params(fn: Callable) -> Mapping:
    try:
        return inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}


def _current(fn: Callable, kw: Mapping, option: str) -> Any:
    if option in kw:
        return kw[option]
    p = _params(fn).get(option)
    return None if p is None or p.default is p.empty else p.default


def _both(*tests):
    return lambda fn, kw: all(t(fn, kw) for t in tests)


_LABELED_TRIPLET = ("batch_all_triplet_loss", "batch_hard_triplet_loss",
                    "semihard_triplet_loss", "hardest_negative_triplet_loss")
_PATHS = ("batch_all_triplet_loss", "batch_hard_triplet_loss", "semihard_triplet_loss",
          "hardest_negative_triplet_loss", "triplet_margin_loss")

_REDUCTION_WORDS = {
    "sum": "sums the terms",
    "mean": "averages over every valid term",
    "mean_nonzero": "averages over the non-zero terms only",
}


def _reduction(r: str) -> Cause:
    def words(fn: Callable, kw: Mapping) -> str:
        cur = _current(fn, kw, "reduction")
        return (f"candidate {_REDUCTION_WORDS[r]} (reduction '{r}'), the reference "
                f"{_REDUCTION_WORDS.get(cur, cur)} ('{cur}')")

    return Cause(
        name=f"reduction {r}", words=words,
        applies=lambda fn, kw: (_takes("reduction")(fn, kw)
                                and _current(fn, kw, "reduction") not in (r, "none")
                                and not (r == "mean_nonzero" and _is_center(fn))),
        kwargs=lambda kw: {"reduction": r}, tags=frozenset({"reduction"}))


def _is_center(fn: Callable) -> bool:
    import refloss

    return fn is refloss.center_loss


def _batch_size(inputs: Mapping) -> float:
    return 1.0 / max(int(np.shape(inputs["x"])[0]), 1)


def _torch_eps(eps: float) -> Cause:
    def preset():
        from refloss.compat import torch_nn

        return torch_nn.triplet_margin_loss

    e = _eps_text(eps)
    return Cause(
        name=f"eps {e} on the differences",
        words=f"candidate adds eps {e} to every difference before the norm "
              f"(torch's pairwise_distance: d(x, x) = {e}·√D)",
        applies=lambda fn, kw: (_ref("triplet_margin_loss")(fn, kw)
                                and _current(fn, kw, "metric") == "euclidean"
                                and not _current(fn, kw, "normalize")
                                and not _current(fn, kw, "soft")),
        reference=preset,
        ref_kwargs=lambda kw: {"margin": _current_kw(kw, "margin", 1.0), "eps": eps,
                               "swap": bool(kw.get("swap", False)),
                               "reduction": kw.get("reduction", "mean")},
        tags=frozenset({"eps"}))


def _eps_text(eps: float) -> str:
    return f"{eps:.0e}".replace("e-0", "e-")  # 1e-6, not 1e-06


def _distance(mode: str, eps: float) -> Cause:
    from . import _variants

    e = _eps_text(eps)
    if mode == "inside":
        name = f"eps {e} inside the sqrt"
        words = f"candidate adds eps {e} inside the sqrt: sqrt(‖a−b‖² + {e})"
    else:
        name = f"the squared distance clamped at {e}"
        words = (f"candidate clamps the squared distance at {e} before the sqrt: "
                 f"sqrt(max(‖a−b‖², {e}))")
    return Cause(name=name, words=words,
                 applies=lambda fn, kw: _variants.applies(fn, kw, mode),
                 distance=(mode, eps), tags=frozenset({"eps"}))


def _current_kw(kw: Mapping, name: str, default: Any) -> Any:
    return kw.get(name, default)


def _flip_same(inputs: dict) -> dict:
    return {**inputs, "same": ~np.asarray(inputs["same"], dtype=bool)}


#: The hypotheses, most specific first.
CAUSES: tuple[Cause, ...] = (
    Cause(name="flipped same",
          words="candidate reads `same` the other way round (True = dissimilar: "
                "Hadsell's 0 = similar against TensorFlow's 1 = similar)",
          applies=lambda fn, kw: "same" in _params(fn), transform=_flip_same,
          tags=frozenset({"same"})),
    Cause(name="unordered pairs",
          words="candidate counts each unordered anchor-positive pair once "
                "(batch_all_triplet_loss(pairs='unordered'))",
          applies=_takes("pairs", unless="unordered"),
          kwargs=lambda kw: {"pairs": "unordered"}, tags=frozenset({"pairs"})),
    Cause(name="ordered pairs",
          words="candidate counts every ordered anchor-positive pair "
                "(batch_all_triplet_loss(pairs='ordered'))",
          applies=_takes("pairs", unless="ordered"),
          kwargs=lambda kw: {"pairs": "ordered"}, tags=frozenset({"pairs"})),
    Cause(name="anchor as its own positive",
          words="candidate counts the anchor as its own positive (distance 0; "
                "batch_hard_triplet_loss(anchor_as_positive=True))",
          applies=_takes("anchor_as_positive", unless=True),
          kwargs=lambda kw: {"anchor_as_positive": True}, tags=frozenset({"self"})),
    Cause(name="half (Hadsell)",
          words="candidate has Hadsell's ½ factor (contrastive_loss(scale=0.5))",
          applies=_takes("scale"),
          kwargs=lambda kw: {"scale": 0.5 * float(kw.get("scale", 1.0))},
          tags=frozenset({"factor"})),
    Cause(name="half",
          words="candidate is ½ × the reference on every example (a ½ factor)",
          applies=lambda fn, kw: "scale" not in _params(fn), factor=0.5,
          tags=frozenset({"factor"})),
    Cause(name="double",
          words="candidate is 2 × the reference on every example (a factor 2)",
          applies=lambda fn, kw: True, factor=2.0, tags=frozenset({"factor"})),
    _reduction("sum"),
    _reduction("mean"),
    _reduction("mean_nonzero"),
    Cause(name="mean over the batch",
          words="candidate averages over every sample of the batch, anchors without a "
                "positive or a negative included",
          applies=lambda fn, kw: (_ref(*_LABELED_TRIPLET)(fn, kw)
                                  and _current(fn, kw, "reduction") != "none"),
          kwargs=lambda kw: {"reduction": "sum"}, factor=_batch_size,
          tags=frozenset({"reduction"})),
    Cause(name="squared distance",
          words="candidate uses squared euclidean distances",
          applies=lambda fn, kw: _current(fn, kw, "metric") == "euclidean",
          kwargs=lambda kw: {"metric": "sqeuclidean"}, tags=frozenset({"metric"})),
    Cause(name="plain distance",
          words="candidate uses plain (not squared) euclidean distances",
          applies=lambda fn, kw: _current(fn, kw, "metric") == "sqeuclidean",
          kwargs=lambda kw: {"metric": "euclidean"}, tags=frozenset({"metric"})),
    Cause(name="no margin",
          words="candidate has no margin (margin 0)",
          applies=lambda fn, kw: (_current(fn, kw, "margin") not in (None, 0, 0.0)
                                  and not _current(fn, kw, "soft")),
          kwargs=lambda kw: {"margin": 0.0}, tags=frozenset({"margin"})),
    _torch_eps(1e-6),
    _torch_eps(1e-9),
    _torch_eps(1e-12),
    *(_distance(mode, eps) for mode in ("inside", "clamp") for eps in (1e-6, 1e-9, 1e-12)),
    Cause(name="detached negative",
          words="candidate's gradient does not flow through the negative distances "
                "(d_an detached: only the positive path pulls)",
          applies=_ref(*_PATHS), path="positive", gradient_only=True,
          tags=frozenset({"path"})),
    Cause(name="detached positive",
          words="candidate's gradient does not flow through the positive distances "
                "(d_ap detached: only the negative path pushes)",
          applies=_ref(*_PATHS), path="negative", gradient_only=True,
          tags=frozenset({"path"})),
)


# --------------------------------------------------------------------------
# evaluation


@dataclass
class _Example:
    inputs: dict  # in the candidate's dtype
    ref64: dict
    cot: Any
    cand_value: tuple = ()
    cand_grads: dict | None = None


@dataclass
class Diagnosis:
    """What the named causes say of one difference: the explaining causes
    (one, two, or none), the words, and the examples they were tried on."""

    causes: tuple = ()
    words: str = ""
    examples: list = field(default_factory=list)
    want_grad: bool = False


def name_cause(setup: Any, outcome: Any, *, fresh: int = 6) -> str:
    """The words of the hypothesis that explains the difference on the
    counterexample and ``fresh`` new inputs ("cause: ..." or "two causes:
    ..."), or "" when none does."""
    return diagnose(setup, outcome, fresh=fresh).words


def diagnose(setup: Any, outcome: Any, *, fresh: int = 6) -> Diagnosis:
    """:func:`name_cause` with the causes themselves (an empty
    :class:`Diagnosis` when none explains the difference)."""
    if setup.index_mode:
        return Diagnosis()
    try:
        with _silenced(), np.errstate(all="ignore"):
            return _diagnose(setup, outcome, fresh)
    except (_CandidateFailure, _ReferenceFailure):
        return Diagnosis()


def _diagnose(setup, outcome, fresh: int) -> Diagnosis:
    want_grad = outcome.kind == "gradient"
    examples = [_example(setup, outcome.inputs, outcome.cotangent, want_grad)]
    rng = np.random.default_rng(outcome.rng_seed)
    for _ in range(fresh):
        bundle = _fresh(setup, rng)
        if bundle is None:
            break
        out, _ = _run_reference(setup, _arrays(setup, bundle, "float64"), with_grad=False)
        cot = _cot(rng, out[0].shape)
        try:
            examples.append(_example(setup, bundle, cot, want_grad))
        except _CandidateFailure:
            continue
    ref = (setup.reference, setup.ref_kwargs)
    applicable = [c for c in (*CAUSES, *_presets(setup)) if c.applies(*ref)
                  and (want_grad or not c.gradient_only)]
    n = len(examples)
    diag = Diagnosis(examples=examples, want_grad=want_grad)
    for cause in applicable:
        if _explains(setup, (cause,), examples, want_grad):
            diag.causes = (cause,)
            diag.words = f"cause: {cause.say(*ref)} (explains all {n} examples tried)"
            if "eps" in cause.tags:
                diag.words = _settle_eps(setup, cause, applicable, examples, want_grad)
            return diag
    singles = [c for c in applicable if not c.gradient_only]
    for a, b in itertools.combinations(singles, 2):
        if a.tags & b.tags or sum(c.reference is not None or c.distance is not None
                                  for c in (a, b)) > 1:
            continue
        if _explains(setup, (a, b), examples, want_grad):
            diag.causes = (a, b)
            diag.words = (f"two causes: {a.say(*ref)}; and {b.say(*ref)} (together they "
                          f"explain all {n} examples tried)")
            return diag
    k = _constant_ratio(examples, setup, want_grad)
    if k is not None:
        diag.words = f"cause: candidate = {k} × reference on every example ({n} tried)"
    return diag


# --------------------------------------------------------------------------
# eps: inside the sqrt, clamped, or on the differences


def _settle_eps(setup, first: Cause, applicable, examples, want_grad) -> str:
    """The words for an eps cause. At a = b, eps inside the sqrt and a clamp
    at the same eps give the same distance, √eps, and gradient 0, so the
    examples can leave several eps causes that explain them all; a probe
    with a pair √eps/2 apart (the counterexample's duplicate pulled apart
    that little) tells them apart: there, inside the sqrt moves the distance
    and passes a gradient, the clamp gives √eps and none."""
    ref = (setup.reference, setup.ref_kwargs)
    n = len(examples)
    group = [first] + [c for c in applicable if "eps" in c.tags and c is not first
                       and _explains(setup, (c,), examples, want_grad)]
    settled = f"cause: {first.say(*ref)} (explains all {n} examples tried)"
    if len(group) == 1:
        return settled
    grad = setup.grad and setup.grad_method != "finite differences"
    probes = []
    for eps in sorted({c.distance[1] for c in group if c.distance is not None}):
        bundle = _near_duplicate(examples[0].ref64, eps)
        if bundle is None:
            continue
        try:
            out, _ = _run_reference(setup, _arrays(setup, bundle, "float64"),
                                    with_grad=False)
            probes.append(_example(setup, bundle, _cot(np.random.default_rng(0),
                                                       out[0].shape), grad))
        except (_CandidateFailure, _ReferenceFailure):
            continue  # no probe: the words name every cause left
    left = [c for c in group if probes and _explains(setup, (c,), probes, grad)]
    if len(left) == 1:
        others = ", ".join(c.name for c in group if c is not left[0])
        return (f"cause: {left[0].say(*ref)} (explains all {n} examples tried, and a pair "
                f"closer than √eps tells it from {others})")
    left = left or group
    return (f"cause: {'; or '.join(c.say(*ref) for c in left)} (each explains all {n} "
            f"examples tried; none of them tells these apart)")


def _near_duplicate(inputs: Mapping, eps: float) -> dict | None:
    """The first exact duplicate of ``inputs`` (a = b, a row repeated) moved
    to the origin, its second copy δ apart along the first axis, δ the power
    of two at most √eps/2 (so δ² is exact and below eps); None without one."""
    delta = 2.0 ** np.floor(np.log2(np.sqrt(eps) / 2.0))
    out = {k: np.array(v, copy=True) for k, v in inputs.items()}
    if "x" in out and "centers" not in out:
        x = out["x"]
        for j in range(1, x.shape[0]):
            hit = np.nonzero(np.all(x[:j] == x[j], axis=1))[0]
            if hit.size:
                x -= x[hit[0]].copy()
                x[j, 0] = delta
                return out
        return None
    for first, second in (("anchor", "positive"), ("anchor", "negative"), ("a", "b")):
        if first in out and second in out:
            a, b = out[first], out[second]
            rows = np.nonzero(np.all(a == b, axis=1))[0]
            if rows.size and a.shape[1]:
                r = rows[0]
                shift = a[r].copy()
                for role in ("anchor", "positive", "negative", "a", "b"):
                    if role in out:
                        out[role][r] -= shift
                b[r, 0] = delta
                return out
    return None


# --------------------------------------------------------------------------
# one cause per counterexample


def separate(setup: Any, outcome: Any, pool: list, *, evaluate: Callable) -> list:
    """``[(outcome, cause words)]``: the counterexample and its cause, or,
    when it takes two causes together, an example that each cause explains
    alone where one is found — among the counterexample itself, the same
    with its duplicates pulled apart, the last failing inputs the search met
    (``pool``) and the fresh examples — first, then, for a cause that never
    shows alone, an example that needs both. A few candidate calls, no new
    search. ``evaluate(inputs, rng_seed)`` compares candidate and reference
    on one input."""
    diag = diagnose(setup, outcome)
    if len(diag.causes) != 2:
        return [(outcome, diag.words)]
    ref = (setup.reference, setup.ref_kwargs)
    n = len(diag.examples)
    pair = diag.causes
    alone: dict[int, Any] = {}
    mixed: list = []

    def consider(trial, ex, grad) -> None:
        which = _alone(setup, pair, ex, grad)
        if which is not None:
            alone.setdefault(which, trial)
        elif not mixed and _explains(setup, pair, [ex], grad):
            mixed.append(trial)

    def run(inputs) -> None:
        trial = _run(setup, evaluate, inputs, outcome.rng_seed)
        if trial is None:
            return
        grad = trial.kind == "gradient"
        try:
            ex = _example(setup, trial.inputs, trial.cotangent, grad)
        except _CandidateFailure:
            return
        consider(trial, ex, grad)

    with _silenced(), np.errstate(all="ignore"):
        consider(outcome, diag.examples[0], diag.want_grad)
        for inputs in [_spread(outcome.inputs), *(o.inputs for o in reversed(pool[-3:]))]:
            if len(alone) == 2:
                break
            if inputs is not None:
                run(inputs)
        for ex in diag.examples[1:]:  # already run: free to test, one call to report
            if len(alone) == 2 or (alone and mixed):
                break
            which = _alone(setup, pair, ex, diag.want_grad)
            if (which is not None and which not in alone) or (which is None and not mixed):
                run(ex.inputs)
    a, b = (c.say(*ref) for c in pair)
    if not alone:
        return [(outcome, diag.words[:-1] + "; this counterexample mixes them, and no "
                 "example tried shows one alone)")]
    out = [(alone[i], f"cause: {(a, b)[i]} (alone on this example; one of two causes, "
                      f"which together explain all {n} examples tried)") for i in sorted(alone)]
    if len(alone) == 1:
        i = 1 - next(iter(alone))
        out.append((mixed[0] if mixed else outcome,
                    f"second cause: {(a, b)[i]} (it shows here together with the first; "
                    f"no example tried shows it alone)"))
    return out


def _run(setup, evaluate, inputs, rng_seed):
    """The outcome of one value or gradient difference on ``inputs``, or None."""
    try:
        trial = evaluate(inputs, rng_seed)
    except (_CandidateFailure, _ReferenceFailure):
        return None
    if trial.agree or trial.message or trial.kind not in ("value", "gradient"):
        return None
    return trial


def _alone(setup, pair, ex, want_grad) -> int | None:
    """The index of the one cause of ``pair`` that explains ``ex`` by itself."""
    hits = [i for i, c in enumerate(pair) if _explains(setup, (c,), [ex], want_grad)]
    return hits[0] if len(hits) == 1 else None


def _spread(inputs: Mapping) -> dict | None:
    """``inputs`` with every exact duplicate (a = b, a repeated row) pulled
    apart: where an eps or a clamp is all that a duplicate shows."""
    out = {k: np.array(v, copy=True) for k, v in inputs.items()}
    moved = False
    if "x" in out and "centers" not in out and out["x"].ndim == 2 and out["x"].shape[1]:
        x = out["x"]
        for j in range(1, x.shape[0]):
            if np.any(np.all(x[:j] == x[j], axis=1)):
                x[j, 0] += 0.5 * j
                moved = True
    for first, second, step in (("anchor", "positive", 0.5), ("anchor", "negative", 0.75),
                                ("a", "b", 0.5)):
        if first in out and second in out and out[first].ndim == 2 and out[first].shape[1]:
            rows = np.all(out[first] == out[second], axis=1)
            if np.any(rows):
                out[second][rows, 0] += step
                moved = True
    return out if moved else None


def _presets(setup) -> list[Cause]:
    """Every compat preset that takes the reference's inputs, with its own
    defaults: "your loss is pytorch-metric-learning's" is a cause too."""
    import importlib
    import pkgutil

    import refloss.compat as compat

    from ._setup import _reference_roles, reference_name

    out = []
    for info in pkgutil.iter_modules(compat.__path__):
        if info.name.startswith("_"):
            continue
        try:
            mod = importlib.import_module(f"refloss.compat.{info.name}")
        except ImportError:
            continue
        for attr in getattr(mod, "__all__", []):
            fn = getattr(mod, attr, None)
            if fn is None or fn is setup.reference or not callable(fn):
                continue
            try:
                roles = _reference_roles(fn, attr, {})
            except ValueError:
                continue
            if set(roles) != set(setup.ref_roles):
                continue
            name = reference_name(fn)
            out.append(Cause(
                name=name, words=f"candidate computes the compat preset {name} with its "
                                 f"defaults", applies=lambda fn, kw: True,
                reference=lambda fn=fn: fn, ref_kwargs=lambda kw: {}, roles=tuple(roles),
                tags=frozenset({"preset"})))
    return out


def _cot(rng, shape):
    if shape == ():
        return np.asarray(1.0)
    return np.round(rng.normal(size=shape) * 64.0) / 64.0


def _example(setup, bundle, cot, want_grad) -> _Example:
    cand_in = _arrays(setup, bundle, setup.dtype)
    ref64 = _arrays(setup, cand_in, "float64")
    pull_wanted = want_grad and setup.grad_method != "finite differences"
    out, pull = _call_candidate(setup, cand_in, with_grad=pull_wanted)
    ref_out, _ = _run_reference(setup, ref64, with_grad=False)
    c_out, _ = _match_outputs(setup, out, ref_out, cand_in)
    ex = _Example(inputs=cand_in, ref64=ref64, cot=cot, cand_value=tuple(c_out))
    if want_grad:
        if pull is not None:
            ex.cand_grads = {r: g for r, g in pull(cot).items() if g is not None}
        else:
            from ._judge import _fd_gradient

            ex.cand_grads = {}
            for role in setup.ref_roles:
                if KINDS[role] == "float":
                    g = _fd_gradient(setup, cand_in, role, cot)
                    if g is not None:
                        ex.cand_grads[role] = g
    return ex


def _variant(setup, causes, inputs, cot, want_grad):
    """``(value, grads or None)`` of the reference changed by ``causes``."""
    import refloss

    fn, kw = setup.reference, dict(setup.ref_kwargs)
    inputs = dict(inputs)
    factor = 1.0
    path = None
    distance = None
    for c in causes:
        if c.reference is not None:
            fn = c.reference()
            kw = c.ref_kwargs(kw)
        if c.kwargs is not None:
            kw.update(c.kwargs(kw))
        if c.transform is not None:
            inputs = c.transform(inputs)
        factor *= c.factor(inputs) if callable(c.factor) else c.factor
        path = c.path or path
        distance = c.distance or distance
    if distance is not None:
        from . import _variants

        if path is not None or not _variants.applies(fn, kw, distance[0]):
            return None  # e.g. with the squared metric: no euclidean distance to change
        values, grads = _variants.evaluate(fn, kw, inputs, cot, want_grad,
                                           mode=distance[0], eps=distance[1])
        return (tuple(factor * v for v in values),
                None if grads is None else {r: factor * g for r, g in grads.items()})
    order = next((c.roles for c in causes if c.roles), None) or setup.ref_roles
    args = [inputs[r] for r in order]
    if path is not None:
        from ._ties import tie_model

        class _S:  # the reference as tie_model reads it
            reference = setup.reference
            ref_kwargs = setup.ref_kwargs

        value = fn(*args, **kw)
        model = tie_model(_S, inputs, cot, paths=True)
        if model is None or model.paths is None:
            return None
        flat = model.paths.get(path, np.zeros(sum(int(np.prod(model.shapes[r]))
                                                  for r in model.roles)))
        return (np.asarray(value, dtype=np.float64),), model.unflat(np.asarray(flat))
    if not want_grad:
        value = fn(*args, **kw)
        return tuple(factor * np.asarray(v, dtype=np.float64)
                     for v in (value if isinstance(value, tuple) else (value,))), None
    value, pull = refloss.vjp(fn, *args, **kw)
    grads = {r: factor * np.asarray(g, dtype=np.float64)
             for r, g in zip(order, pull(cot), strict=False) if g is not None}
    values = value if isinstance(value, tuple) else (value,)
    return tuple(factor * np.asarray(v, dtype=np.float64) for v in values), grads


def _explains(setup, causes, examples, want_grad) -> bool:
    from ._judge import _rel_error

    for ex in examples:
        try:
            got = _variant(setup, causes, ex.ref64, ex.cot, want_grad)
        except Exception:  # a variant the reference refuses on this input
            return False
        if got is None:
            return False
        values, grads = got
        for c, v in zip(ex.cand_value, values, strict=False):
            if c.shape != v.shape or _rel_error(c, v, setup.tol.floor) > setup.tol.value:
                return False
        if want_grad:
            if not grads or not ex.cand_grads:
                return False
            tol = setup.tol.fd if setup.grad_method == "finite differences" else setup.tol.grad
            for role, g in grads.items():
                c = ex.cand_grads.get(role)
                if c is None or _rel_error(c, g, setup.tol.floor) > 10 * tol:
                    return False
    return True


def _constant_ratio(examples, setup, want_grad) -> str | None:
    """``k`` in words when candidate = k × reference on every example."""
    from ._diagnose import _ratio

    ratios = []
    for ex in examples:
        ref_out, ref_pull = _run_reference(setup, ex.ref64, with_grad=want_grad)
        if want_grad:
            r = np.concatenate([np.ravel(g) for g in ref_pull(ex.cot).values()
                                if g is not None])
            c = np.concatenate([np.ravel(ex.cand_grads.get(role, np.zeros(0)))
                                for role, g in ref_pull(ex.cot).items() if g is not None])
            if c.shape != r.shape:
                return None
        else:
            r = np.ravel(np.asarray(ref_out[0], dtype=np.float64))
            c = np.ravel(np.asarray(ex.cand_value[0], dtype=np.float64))
        live = np.abs(r) > 1e-12
        if not np.any(live):
            if np.any(np.abs(c) > 1e-9):
                return None
            continue
        if np.any(np.abs(c[~live]) > 1e-9):
            return None
        ratios.extend((c[live] / r[live]).tolist())
    if not ratios:
        return None
    k = ratios[0]
    if abs(k - 1.0) < 1e-6 or not np.allclose(ratios, k, rtol=1e-5, atol=0):
        return None
    return _ratio(k)


# --------------------------------------------------------------------------
# fresh inputs: continuous values (no ties), every anchor with a positive and
# a negative, so that each variant shows


def _fresh(setup, rng) -> dict | None:
    roles = set(setup.ref_roles)

    def grid(shape):
        return np.round(rng.normal(size=shape) * 32.0) / 32.0

    dim = int(rng.integers(2, 4))
    if "labels" in roles:
        classes = int(rng.integers(2, 4))
        per = rng.integers(2, 4, size=classes)
        labels = np.repeat(np.arange(classes), per)
        rng.shuffle(labels)
        b = labels.size
        out = {"x": grid((b, dim)), "labels": labels}
        if "centers" in roles:
            out["centers"] = grid((classes + 1, dim))
        return out
    rows = int(rng.integers(3, 6))
    if roles >= {"anchor", "positive", "negative"}:
        return {r: grid((rows, dim)) for r in ("anchor", "positive", "negative")}
    if roles >= {"a", "b"}:
        out = {"a": grid((rows, dim)), "b": grid((rows, dim))}
        if "same" in roles:
            same = rng.integers(0, 2, size=rows).astype(bool)
            same[0], same[1] = True, False
            # dissimilar pairs inside the margin, similar ones apart: both branches live
            out["b"][~same] = out["a"][~same] + 0.25 * grid((int((~same).sum()), dim))
            out["same"] = same
        return out
    if roles == {"x"}:
        return {"x": grid((rows, dim))}
    return None
