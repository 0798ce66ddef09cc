r"""Judging one input: tolerances, the comparison of values and gradients
(autograd, analytic, or finite differences along random directions), and the
excuses — a gradient difference at a kink of the reference, a value
difference that rounding decides (ill-conditioned float32, an inexact
reference distance).

Tolerances follow the dtype (:data:`TOLERANCES`): an output agrees when
:math:`\lVert c - r\rVert_\infty \le \mathrm{tol}\cdot\max(\lVert r\rVert_\infty,
\mathrm{floor})`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _ties
from ._run import (
    _arrays,
    _call_candidate,
    _candidate_scalar,
    _match_outputs,
    _reference_primary,
    _rows,
    _run_reference,
    _silenced,
)
from ._setup import KINDS, _CandidateFailure, _Setup

__all__ = ["TOLERANCES", "Tolerance"]


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
    tie_note: str = ""  # an agreement at a tie, in words


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
        # a random scale other than 1 (k/8 in [1/2, 2]): a backward that ignores
        # or mis-scales grad_output shows; dyadic, so exact in float32 too
        # (drawn from a child generator: the draws of rng stay as they were)
        k = int(np.random.default_rng(rng.bit_generator.seed_seq.spawn(1)[0]).integers(4, 16))
        return np.asarray((k + (k >= 8)) / 8.0)
    # dyadic values: exact in float32 too
    return np.round(rng.normal(size=shape) * 64.0) / 64.0


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
    shown, failed = {}, []
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
        if err > setup.tol.grad:
            failed.append((role, err, bool(np.any(~np.isfinite(c) & np.isfinite(r)))))
        else:
            worst = max(worst, err)
    if not failed:
        base["cand_grads"] = shown
        return _Outcome(agree=True, grad_error=worst, **base)
    model = None if any(bad for _, _, bad in failed) else _ties.tie_model(setup, ref_in, cot)
    if model is not None:
        # the reference knows its ties: the candidate agrees when its gradient
        # lies in the subdifferential, and only then
        at_tie = _in_subdifferential(setup, model, shown, ref_grads)
        if at_tie is not None:
            err, note = at_tie
            base["cand_grads"] = shown
            return _Outcome(agree=True, grad_error=max(worst, err), tie_note=note, **base)
        role, err, _ = failed[0]
        out = _disagree(cand_grads, shown, role, err, base)
        if model.groups:
            where = "; ".join(g.where for g in model.groups[:3])
            more = ", ..." if len(model.groups) > 3 else ""
            diff = float(np.max(np.abs(shown[role] - ref_grads[role])))
            out.message = (f"gradient of {role} differs (max |difference| {diff:.6g}) and lies "
                           f"off the reference's subdifferential at its ties ({where}{more})")
        return out
    for role, err, bad in failed:
        if not bad and _reference_kink(setup, ref_in, role, shown[role] - ref_grads[role],
                                       cot, ref_grads[role]):
            skipped = True
            continue
        return _disagree(cand_grads, shown, role, err, base)
    base["cand_grads"] = shown
    return _Outcome(agree=True, skipped=skipped, grad_error=worst, **base)


def _disagree(cand_grads, shown, role, err, base) -> _Outcome:
    base["cand_grads"] = {**shown, **{k: v for k, v in cand_grads.items()
                                      if v is not None and k not in shown}}
    return _Outcome(agree=False, kind="gradient", role=role, grad_error=err, **base)


def _in_subdifferential(setup, model, cand, ref_grads):
    """``(error, words)`` when the candidate's gradient lies in the reference's
    subdifferential at its ties (within the dtype's tolerance), else None."""
    if not model.groups:
        return None
    ref_flat = model.flat(ref_grads)
    point, weights = _ties.closest(model, ref_flat, model.flat(cand))
    fit = model.unflat(point)
    err = max(_rel_error(cand[r], fit[r], setup.tol.floor) for r in model.roles)
    if err > setup.tol.grad:
        return None
    return err, _ties.words(model, weights)


def _compare_fd(setup, ref_in, ref_grads, cot, rng, base) -> _Outcome:
    worst, skipped, note = 0.0, False, ""
    x64 = {r: a for r, a in ref_in.items()}
    f0 = _candidate_scalar(setup, x64, cot)
    model: Any = False  # not built yet
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
                if model is False:
                    model = _ties.tie_model(setup, ref_in, cot)
                if model is not None and not model.jumps:
                    # a central difference at a tie averages the one-sided slopes:
                    # it lies between the extremes of <s, v> over the subdifferential
                    tie = _fd_in_range(setup, model, ref_grads, role, v, s_c, s_r)
                    if tie is not None:
                        note = note or tie
                        continue
                else:
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
    return _Outcome(agree=True, skipped=skipped, grad_error=worst, tie_note=note, **base)


def _fd_in_range(setup, model, ref_grads, role, v, s_c, s_r) -> str | None:
    if not model.groups or not math.isfinite(s_c):
        return None
    direction = {k: np.zeros(model.shapes[k]) for k in model.roles}
    direction[role] = v
    lo, hi = _ties.slope_range(model, model.flat(ref_grads), model.flat(direction))
    slack = setup.tol.fd * max(abs(s_r), _FD_FLOOR)
    if not lo - slack <= s_c <= hi + slack:
        return None
    return (f"at a tie, the candidate's slope {s_c:.6g} along a random direction in {role} "
            f"lies in the reference's range [{lo:.6g}, {hi:.6g}] (its own {s_r:.6g})")


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
