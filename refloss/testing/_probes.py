"""Findings beyond one comparison of values and gradients.

* **Crashes.** A candidate that raises (or returns what cannot be compared)
  on a valid input is a finding, not the end of the search: the first one is
  recorded with the candidate's own traceback frames, shrunk inside the
  input domain (rows and classes deleted, coordinates simplified, as long as
  the same exception comes back), and the search goes on.
* **Nondeterminism.** The candidate runs twice on every input; values that
  differ beyond the value tolerance make the verdict NONDETERMINISTIC. With
  ``reseed`` the global generators of Python, NumPy and torch are reseeded
  before every call (and restored afterwards), so a candidate that draws
  from them is judged as one deterministic function.
* **Upstream gradients.** When a gradient differs under a cotangent other
  than 1, the candidate is pulled back again with cotangent 1 to tell a
  backward that ignores or mis-scales ``grad_output`` from other causes.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._judge import _evaluate, _rel_error
from ._run import _arrays, _call_candidate, _run_reference
from ._setup import KINDS, _CandidateFailure, _ReferenceFailure, _Setup

_HERE = os.path.dirname(os.path.abspath(__file__))
_MAX_FRAMES = 6
_REPEATS_AT_A_MISMATCH = 3


@dataclass
class _Event:
    """A finding that is not a plain value/gradient mismatch."""

    kind: str  # "raises", "nondeterministic", or "value" (outside the admissible range)
    inputs: dict
    message: str
    rng_seed: int = 0
    key: str = ""  # what makes two crashes "the same" while shrinking
    frames: list[str] = field(default_factory=list)
    values: tuple = ()  # the candidate's outputs (first call)
    second: tuple = ()  # nondeterministic: the outputs of the second call
    ref_outputs: tuple = ()


# --------------------------------------------------------------------------
# crashes


def _internal(filename: str) -> bool:
    path = os.path.abspath(filename)
    if path.startswith(_HERE + os.sep):
        return True
    bridges = sys.modules.get("refloss.adapters.bridges")
    origin = getattr(bridges, "__file__", None)
    return origin is not None and path == os.path.abspath(origin)


def _shown(filename: str) -> str:
    """A file under the working directory by its relative path."""
    path = os.path.abspath(filename)
    here = os.getcwd() + os.sep
    return path[len(here):] if path.startswith(here) else filename


def frames_of(exc: BaseException) -> list[str]:
    """The traceback of the candidate's own exception, without refloss's
    harness frames (the last few, innermost last)."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    out = []
    for f in traceback.extract_tb(cause.__traceback__):
        if _internal(f.filename):
            continue
        line = f"{_shown(f.filename)}:{f.lineno} in {f.name}"
        if f.line:
            line += f": {f.line.strip()}"
        out.append(line)
    return out[-_MAX_FRAMES:]


def _crash_key(exc: _CandidateFailure) -> str:
    cause = exc.__cause__
    where = "gradient" if exc.message.startswith("gradient") else "value"
    if cause is None:  # a shape or output-count problem, no exception
        return f"{where}:{exc.message.split(' of ')[0]}"
    return f"{where}:{type(cause).__name__}"


def crash_event(exc: _CandidateFailure, inputs: Mapping, rng_seed: int) -> _Event:
    return _Event(kind="raises", inputs=dict(inputs), message=exc.message,
                  rng_seed=rng_seed, key=_crash_key(exc), frames=frames_of(exc))


def _crashes_alike(setup: _Setup, inputs: Mapping, rng_seed: int, key: str) -> _Event | None:
    try:
        with reseeded(setup.reseed):
            _evaluate(setup, inputs, rng_seed)
    except _CandidateFailure as exc:
        ev = crash_event(exc, _arrays(setup, inputs, setup.dtype), rng_seed)
        return ev if ev.key == key else None
    except _ReferenceFailure:
        return None
    return None


def shrink_crash(setup: _Setup, event: _Event) -> _Event:
    """Delete rows and classes (inside the domain), then columns, then
    simplify coordinates, while the same exception comes back: a 1-minimal
    crashing input."""
    best = event
    progress = True
    while progress:
        progress = False
        for smaller in setup.domain.deletions(best.inputs):
            trial = _crashes_alike(setup, smaller, best.rng_seed, event.key)
            if trial is not None:
                best, progress = trial, True
                break
    progress = not setup.fixed_shapes  # a module's parameter fixes the dimension
    while progress:
        progress = False
        width = next((np.shape(best.inputs[r])[1] for r in ("x", "anchor", "a")
                      if r in best.inputs and np.ndim(best.inputs[r]) == 2), 0)
        for i in range(width if width > 1 else 0):
            narrower = {r: (np.delete(a, i, axis=1) if KINDS.get(r) == "float"
                            and np.ndim(a) == 2 else a) for r, a in best.inputs.items()}
            trial = _crashes_alike(setup, narrower, best.rng_seed, event.key)
            if trial is not None:
                best, progress = trial, True
                break
    for simplify in (np.round, np.zeros_like):
        trial_in = {r: (simplify(a) if KINDS.get(r) == "float" else a)
                    for r, a in best.inputs.items()}
        if not setup.domain.accepts(trial_in):
            continue
        trial = _crashes_alike(setup, trial_in, best.rng_seed, event.key)
        if trial is not None:
            best = trial
    return best


# --------------------------------------------------------------------------
# nondeterminism


@contextlib.contextmanager
def reseeded(on: bool, seed: int = 0):
    """Reseed Python's, NumPy's and (when imported) torch's global generators."""
    if on:
        random.seed(seed)
        np.random.seed(seed)
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.manual_seed(seed)
    yield


@contextlib.contextmanager
def generators_restored(on: bool):
    """Put the global generators back as they were (``reseed`` touches them)."""
    if not on:
        yield
        return
    py, npy = random.getstate(), np.random.get_state()
    torch = sys.modules.get("torch")
    tstate = torch.get_rng_state() if torch is not None else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        if torch is not None and tstate is not None:
            torch.set_rng_state(tstate)


def _differ(setup: _Setup, a: tuple, b: tuple) -> bool:
    if len(a) != len(b):
        return True
    for u, v in zip(a, b, strict=True):
        if np.shape(u) != np.shape(v):
            return True
        if setup.index_mode:
            if not np.array_equal(u, v):
                return True
        elif _rel_error(u, v, setup.tol.floor) > setup.tol.value:
            return True
    return False


def repeat_differs(setup: _Setup, inputs: Mapping, first: tuple, times: int = 1
                   ) -> tuple | None:
    """The outputs of a repeated call that differ from ``first``, or None."""
    for _ in range(times):
        try:
            with reseeded(setup.reseed):
                out, _ = _call_candidate(setup, inputs, with_grad=False)
        except _CandidateFailure:
            return None
        if _differ(setup, tuple(out), tuple(first)):
            return tuple(out)
    return None


def confirm_deterministic(setup: _Setup, inputs: Mapping, first: tuple) -> tuple | None:
    """At a value mismatch, a few more calls: a candidate that draws at random
    can repeat itself once by chance."""
    return repeat_differs(setup, inputs, first, _REPEATS_AT_A_MISMATCH)


# --------------------------------------------------------------------------
# upstream gradients


def cotangent_words(setup: _Setup, outcome: Any) -> str:
    """Why a gradient differs, when the upstream gradient is the cause: "" otherwise."""
    if outcome.kind != "gradient" or setup.grad_method == "finite differences":
        return ""
    cot = np.asarray(outcome.cotangent, dtype=np.float64)
    ones = np.ones_like(cot)
    if np.array_equal(cot, ones):
        return ""
    role = outcome.role
    try:
        _, cand_pull = _call_candidate(setup, outcome.inputs, with_grad=True)
        c_one = cand_pull(ones if cot.ndim else 1.0).get(role)
        c_cot = cand_pull(cot if cot.ndim else float(cot)).get(role)
        ref_in = _arrays(setup, outcome.inputs, "float64")
        _, ref_pull = _run_reference(setup, ref_in, with_grad=True)
        r_one = ref_pull(ones if cot.ndim else 1.0).get(role)
    except (_CandidateFailure, _ReferenceFailure):
        return ""
    if c_one is None or c_cot is None or r_one is None:
        return ""
    tol = setup.tol.grad
    right_at_one = _rel_error(c_one, r_one, setup.tol.floor) <= tol
    if not right_at_one:
        return ""
    if cot.ndim == 0:
        given, unit = f"grad_output = {_num(float(cot))}", "grad_output = 1"
    else:
        given, unit = "a random grad_output", "a grad_output of ones"
    if _rel_error(c_cot, c_one, setup.tol.floor) <= tol:
        return (f"gradient does not scale with the upstream gradient: the candidate's "
                f"gradient of {role} is the same for {given} as for {unit} (its backward "
                f"ignores grad_output); it is right for {unit}")
    return (f"gradient does not scale with the upstream gradient: the candidate's gradient "
            f"of {role} is right for {unit} but not for {given}")


def _num(v: float) -> str:
    return f"{v:.6g}"
