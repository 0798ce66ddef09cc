"""The search: default input strategies read from the reference's roles and
options, the Hypothesis search that stops at the first disagreement, and the
deletion pass that makes the shrunk counterexample 1-minimal.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.errors import Flaky, HypothesisException, Unsatisfiable

from . import strategies as rst
from ._judge import _evaluate, _Outcome
from ._setup import (
    KINDS,
    CandidateError,
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


@dataclass
class _Stats:
    examples: int = 0
    skipped: int = 0
    failed: bool = False
    value_error: float = 0.0
    grad_error: float | None = None
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
