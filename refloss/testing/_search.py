"""The search: default input strategies read from the reference's roles and
options, the Hypothesis search that stops at the first disagreement, and the
deletion pass that makes the shrunk counterexample 1-minimal.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.errors import Flaky, HypothesisException, Unsatisfiable

from . import strategies as rst
from ._choices import admissible_range
from ._domain import PER_ROW as _PER_ROW
from ._judge import _evaluate, _Outcome
from ._probes import (
    _Event,
    confirm_deterministic,
    crash_event,
    generators_restored,
    repeat_differs,
    reseeded,
)
from ._run import _arrays
from ._setup import (
    KINDS,
    CrosscheckError,
    _CandidateFailure,
    _ReferenceFailure,
    _Setup,
    _signature,
)


class _Mismatch(Exception):
    def __init__(self, outcome: _Outcome) -> None:
        super().__init__(outcome.kind)
        self.outcome = outcome


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
    dom = setup.domain
    common = {"dtype": setup.dtype, "ties": setup.ties}
    margin = _margin_of(setup)

    def size(lo: int, hi: int) -> tuple[int, int]:
        return dom.batch_size if dom.batch_size is not None else (lo, hi)

    if roles != {"x", "labels"} and dom.labeled_only:
        raise ValueError(
            f"domain: {', '.join(dom.labeled_only)} applies to labeled batches; "
            f"{setup.ref_name} takes {', '.join(setup.ref_roles)}"
        )
    if roles == {"x", "labels"}:
        # room for the smallest batch the class options allow
        least = (dom.min_classes or 1) * max(dom.min_per_class, 1 if dom.singletons else 2)
        lo, hi = size(1, max(8, least))
        if hi < least:
            raise ValueError(f"domain: batch_size: expected room for {least} samples "
                             f"(min_classes × min_per_class), got {dom.batch_size}")
        max_classes = dom.max_classes if dom.max_classes is not None else max(
            4, dom.min_classes or 1)
        s = rst.labeled_batches(
            min_size=lo, max_size=hi, max_dim=3, margin=margin,
            min_classes=dom.min_classes or 1, max_classes=max_classes,
            balanced=dom.balanced, min_per_class=dom.min_per_class,
            singletons=dom.singletons and dom.min_per_class < 2,
            duplicates=dom.duplicates, **common)
    elif roles in ({"x", "labels", "centers"}, {"x", "labels", "centers", "counts"}):
        lo, hi = size(1, 6)
        shape = setup.fixed_shapes.get("centers")
        if shape is not None:  # a module's own centers: their shape is fixed
            s = rst.center_batches(min_size=lo, max_size=hi, min_dim=shape[1],
                                   max_dim=shape[1], num_classes=shape[0],
                                   dtype=setup.dtype, duplicates=dom.duplicates)
        else:
            s = rst.center_batches(min_size=lo, max_size=hi, max_dim=3, dtype=setup.dtype,
                                   duplicates=dom.duplicates)
        if "counts" in roles:
            s = st.tuples(s, st.lists(st.integers(0, 3), min_size=16, max_size=16)).map(
                lambda t: {**t[0]._asdict(), "counts": np.asarray(
                    t[1][:t[0].centers.shape[0]], dtype=setup.dtype)})
    elif roles == {"anchor", "positive", "negative"}:
        lo, hi = size(1, 4)
        s = rst.triplets(min_rows=lo, max_rows=hi, max_dim=3, margin=margin,
                         duplicates=dom.duplicates, **common)
    elif roles == {"a", "b", "same"}:
        lo, hi = size(1, 4)
        s = rst.pairs(min_rows=lo, max_rows=hi, max_dim=3, margin=margin,
                      duplicates=dom.duplicates, **common)
    elif roles == {"a", "b"}:
        lo, hi = size(1, 4)
        s = rst.pairs(min_rows=lo, max_rows=hi, max_dim=3, duplicates=dom.duplicates,
                      **common)
    elif roles == {"same", "distances"}:
        lo, hi = size(1, 4)
        s = rst.pairs(min_rows=lo, max_rows=hi, max_dim=1, margin=margin,
                      duplicates=dom.duplicates, **common).map(
            lambda p: {"same": p.same, "distances": np.abs(p.a[:, 0] - p.b[:, 0])})
    elif roles == {"x"}:
        lo, hi = size(1, 6)
        s = rst.embeddings(min_rows=lo, max_rows=hi, max_dim=3, duplicates=dom.duplicates,
                           **common)
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
        "distances": np.array([0.5, 1.5]), "counts": np.array([1.0, 2.0]),
    }


@dataclass
class _Stats:
    examples: int = 0
    skipped: int = 0
    failed: bool = False
    value_error: float = 0.0
    grad_error: float | None = None
    crashes: int = 0
    nondeterministic: int = 0
    at_tie: int = 0  # agreements judged by the reference's subdifferential
    tie_note: str = ""

    def add(self, outcome: _Outcome) -> None:
        if not self.failed:
            self.examples += 1
            self.skipped += int(outcome.skipped)
            if outcome.agree and outcome.tie_note:
                self.at_tie += 1
                self.tie_note = self.tie_note or outcome.tie_note
        self.value_error = max(self.value_error, outcome.value_error)
        if outcome.grad_error is not None:
            self.grad_error = max(self.grad_error or 0.0, outcome.grad_error)
        if not outcome.agree:
            self.failed = True


@dataclass
class _Found:
    """What the search found besides the first mismatch."""

    crash: _Event | None = None
    nondeterminism: _Event | None = None
    outside: _Event | None = None  # a random choice's value outside the admissible range
    first_mismatch: _Outcome | None = None
    # the last failing inputs met while shrinking: where a single cause may show
    failures: list = field(default_factory=list)


def _search(setup: _Setup, strategy: st.SearchStrategy, max_examples: int,
            seed: int | None) -> tuple[_Stats, _Outcome | None, _Found]:
    """Run the search. A crash or a nondeterministic value is recorded and
    the search goes on; the first value/gradient mismatch stops it and is
    shrunk by Hypothesis."""
    stats = _Stats()
    found = _Found()

    @settings(
        max_examples=max_examples, deadline=None, database=None, derandomize=False,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck), report_multiple_bugs=False,
        verbosity=Verbosity.quiet, print_blob=False,
    )
    @given(bundle=strategy, rng_seed=st.integers(0, 2**16 - 1))
    def search(bundle, rng_seed):
        try:
            with reseeded(setup.reseed):
                outcome = _evaluate(setup, bundle, rng_seed)
        except _CandidateFailure as exc:
            stats.crashes += 1
            if found.crash is None:
                found.crash = crash_event(exc, _arrays(setup, bundle, setup.dtype), rng_seed)
            return
        second = repeat_differs(setup, outcome.inputs, outcome.cand_outputs)
        if second is None and not outcome.agree and outcome.kind in ("value", "indices"):
            second = confirm_deterministic(setup, outcome.inputs, outcome.cand_outputs)
        if second is not None:
            _nondeterministic(setup, outcome, second, stats, found)
            return
        stats.add(outcome)
        if not outcome.agree:
            if found.first_mismatch is None:
                found.first_mismatch = outcome
            found.failures = [*found.failures[-7:], outcome]
            raise _Mismatch(outcome)

    if seed is not None:
        search = hypothesis_seed(seed)(search)
    try:
        with generators_restored(setup.reseed):
            search()
    except _Mismatch as exc:
        return stats, exc.outcome, found
    except _ReferenceFailure as exc:
        raise CrosscheckError(f"reference {exc}") from None
    except Unsatisfiable:
        raise CrosscheckError(
            "inputs: the strategy could not draw enough valid examples"
        ) from None
    except Flaky:
        # a candidate that changed its mind while Hypothesis replayed the failure
        return stats, found.first_mismatch, found
    except HypothesisException as exc:
        raise CrosscheckError(f"search failed: {type(exc).__name__}: {exc}") from None
    return stats, None, found


def _nondeterministic(setup: _Setup, outcome: _Outcome, second: tuple, stats: _Stats,
                      found: _Found) -> None:
    """Record a value that changed between two calls, and judge both calls
    against the admissible random choices where the reference has them."""
    stats.nondeterministic += 1
    first = tuple(outcome.cand_outputs)
    event = _Event(kind="nondeterministic", inputs=dict(outcome.inputs),
                   message=f"{_fmt(first[0])} then {_fmt(second[0])} on the same input",
                   rng_seed=outcome.rng_seed, values=first, second=second,
                   ref_outputs=tuple(outcome.ref_outputs))
    if found.nondeterminism is None:
        found.nondeterminism = event
    if setup.index_mode or found.outside is not None:
        return
    ref_in = _arrays(setup, outcome.inputs, "float64")
    bounds = admissible_range(setup, ref_in, outcome.ref_outputs[0])
    if bounds is None:
        return
    lo, hi, what = bounds
    slack = setup.tol.value * max(abs(lo), abs(hi), setup.tol.floor)
    for value in (first[0], second[0]):
        v = float(np.asarray(value, dtype=np.float64).reshape(-1)[0]) \
            if np.size(value) == 1 else math.nan
        if not (lo - slack <= v <= hi + slack):
            found.outside = _Event(
                kind="value", inputs=dict(outcome.inputs), rng_seed=outcome.rng_seed,
                message=(f"value {v:.6g} lies outside [{lo:.6g}, {hi:.6g}], the values "
                         f"{what} can give (the candidate is nondeterministic: "
                         f"{_fmt(first[0])} then {_fmt(second[0])} on one input)"),
                values=(np.asarray(value),), ref_outputs=tuple(outcome.ref_outputs))
            return
    event.message += (f"; both lie in [{lo:.6g}, {hi:.6g}], the values {what} can give "
                      f"(reference {_fmt(outcome.ref_outputs[0])})")


def _fmt(a: Any) -> str:
    a = np.asarray(a, dtype=np.float64)
    if a.size == 1:
        return f"{float(a.reshape(-1)[0]):.6g}"
    return np.array2string(a, precision=6, separator=", ", threshold=8).replace("\n", "")


def _minimize(setup: _Setup, outcome: _Outcome) -> _Outcome:
    """Delete rows (one sample, or one pair or triplet, at a time; for a
    labeled batch also one class, or one sample of every class), then
    columns, while the candidate still disagrees and the input stays in the
    domain: Hypothesis's shrinker can stop where two deletions at once would
    be needed; this makes the counterexample 1-minimal inside the domain."""
    best = outcome

    def same_kind(inputs) -> _Outcome | None:
        try:
            with reseeded(setup.reseed):
                trial = _evaluate(setup, inputs, best.rng_seed)
        except (_CandidateFailure, _ReferenceFailure):
            return None
        if trial.agree or (trial.kind, trial.role) != (outcome.kind, outcome.role):
            return None
        return trial

    progress = True
    while progress:
        progress = False
        for smaller in setup.domain.deletions(best.inputs):
            trial = same_kind(smaller)
            if trial is not None:
                best, progress = trial, True
                break
    progress = not setup.fixed_shapes  # a module's parameter fixes the dimension
    while progress:
        progress = False
        size = _extent(best.inputs, 1)
        # never below one column: the strategies draw none
        for i in range(size if size > 1 else 0):
            trial = same_kind(_drop(best.inputs, 1, i))
            if trial is not None:
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
        elif axis == 1 and KINDS[role] == "float" and a.ndim == 2:
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
