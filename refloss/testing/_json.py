"""Reports as JSON-ready dicts (``refloss crosscheck --format json``).

The schema is documented in docs/crosscheck.md ("Machine-readable output");
:data:`SCHEMA_VERSION` changes whenever a field changes meaning or goes away
(new fields may be added without a change). Arrays become nested lists;
non-finite numbers, which JSON has no literal for, become the strings
``"NaN"``, ``"Infinity"`` and ``"-Infinity"``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._diagnose import describe

SCHEMA_VERSION = 1


def plain(value: Any) -> Any:
    """``value`` with arrays, NumPy scalars, tuples and non-finite floats made
    JSON-serialisable (``json.dumps(..., allow_nan=False)`` accepts it)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic)):
        return plain(np.asarray(value).tolist())
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    return str(value)


def finding_dict(cx: Any) -> dict:
    """One finding (a :class:`~refloss.testing.Counterexample`)."""
    return plain({
        "kind": cx.kind,
        "description": describe(cx),
        "cause": cx.cause,
        "message": cx.message,
        "role": cx.role,
        "samples": cx.size,
        "value_error": cx.value_error,
        "grad_error": cx.grad_error,
        "inputs": cx.inputs,
        "candidate_value": list(cx.candidate_value),
        "reference_value": list(cx.reference_value),
        "second_value": list(cx.second_value),
        "candidate_grads": cx.candidate_grads,
        "reference_grads": cx.reference_grads,
        "cotangent": cx.cotangent,
        "frames": list(cx.frames),
        "rng_seed": cx.rng_seed,
    })


def report_dict(report: Any) -> dict:
    """A :class:`~refloss.testing.Report` (one candidate, or a replay)."""
    findings = [finding_dict(cx) for cx in report.findings]
    return plain({
        "schema_version": SCHEMA_VERSION,
        "mode": "replay" if report.meta.get("replayed_from") else "candidate",
        "candidate": report.candidate,
        "reference": report.reference,
        "reference_kwargs": report.reference_kwargs,
        "candidate_kwargs": report.candidate_kwargs,
        "framework": report.framework,
        "dtype": report.dtype,
        "verdict": report.verdict,
        "kinds": list(report.kinds),
        "examples": report.examples,
        "skipped": report.skipped,
        "value_error": report.value_error,
        "grad_error": report.grad_error,
        "tolerance": report.tolerance,
        "grad_method": report.grad_method,
        "seed": report.seed,
        "domain": report.meta.get("domain") or {},
        "notes": list(report.notes),
        "at_ties": report.at_ties,
        "tie_note": report.tie_note,
        "summary": report.summary(),
        "findings": findings,
        "counterexample": findings[0] if findings else None,
        "saved_to": report.saved_to,
        "replayed_from": report.meta.get("replayed_from"),
    })


def distributed_dict(report: Any) -> dict:
    """A distributed report (``crosscheck(..., world_size=W)``)."""
    return plain({
        "schema_version": SCHEMA_VERSION,
        "mode": "distributed",
        "candidate": report.candidate,
        "reference": report.reference,
        "reference_kwargs": report.reference_kwargs,
        "world_size": report.world_size,
        "dtype": report.dtype,
        "grad_reduce": report.grad_reduce,
        "verdict": report.verdict,
        "examples": report.examples,
        "faults": list(report.faults),
        "details": list(report.details),
        "value_error": report.value_error,
        "grad_error": report.grad_error,
        "seed": report.seed,
        "summary": report.summary(),
        "x": report.x,
        "labels": report.labels,
        "sizes": list(report.sizes),
    })
