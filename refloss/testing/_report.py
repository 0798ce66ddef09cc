"""The result of a cross-check: verdict, statistics and the shrunk counterexample.

A :class:`Report` prints as a readable block (``str(report)``) and as one
line (:meth:`Report.summary`); its counterexample saves to an ``.npz`` file
(:meth:`Report.save`) that :func:`refloss.testing.replay` and
``refloss crosscheck --replay FILE`` run again. The file holds only arrays
and one JSON string (``allow_pickle=False`` loads it). The words of a
difference come from :mod:`refloss.testing._diagnose`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._diagnose import _num, describe

__all__ = ["Counterexample", "Report", "describe", "load_counterexample"]


FORMAT_VERSION = 1
_ALSO = {"raises": "a crash", "nondeterministic": "nondeterminism", "value": "a value difference",
         "gradient": "a gradient difference"}


@dataclass
class Counterexample:
    """One input on which the candidate and the reference disagree.

    ``inputs`` maps each role ("x", "labels", "centers", "anchor", "positive",
    "negative", "a", "b", "same") to the array given to the candidate (in the
    cross-check's dtype); ``candidate_value`` / ``reference_value`` are tuples
    of output arrays; ``candidate_grads`` / ``reference_grads`` map each
    floating role to its gradient (for a NumPy candidate checked by finite
    differences, ``candidate_grads`` holds a central-difference gradient
    computed for the report). ``kind`` is "value", "gradient", "indices",
    "raises" (the candidate raised, or returned what cannot be compared:
    ``message`` says what, ``frames`` hold its own traceback, innermost last)
    or "nondeterministic" (``candidate_value`` and ``second_value`` are two
    calls on the same input); ``role`` names the differing gradient;
    ``cotangent`` is the upstream gradient used (a random scale for a scalar
    loss, a random array otherwise);
    ``cause`` the named variant of the reference that explains the difference
    on every example tried, or "".
    """

    kind: str
    inputs: dict[str, np.ndarray]
    candidate_value: tuple = ()
    reference_value: tuple = ()
    candidate_grads: dict[str, np.ndarray] = field(default_factory=dict)
    reference_grads: dict[str, np.ndarray] = field(default_factory=dict)
    role: str | None = None
    cotangent: np.ndarray | None = None
    message: str = ""
    value_error: float = 0.0
    grad_error: float | None = None
    rng_seed: int = 0
    frames: list[str] = field(default_factory=list)
    second_value: tuple = ()
    cause: str = ""  # the named cause that explains it ("" when none does)

    @property
    def size(self) -> int:
        """The number of samples (rows) in the counterexample."""
        for role in ("x", "anchor", "a"):
            if role in self.inputs:
                return int(self.inputs[role].shape[0])
        return 0


@dataclass
class Report:
    """What :func:`refloss.testing.crosscheck` found.

    ``verdict`` is "agree", "disagree" or "nondeterministic" (``verdict_name``
    in capitals, as printed); ``findings`` lists every difference found —
    a value, gradient or mined-triplet difference first, then a crash
    (kind "raises"), then nondeterminism — and ``counterexample`` is the
    first of them; ``kinds`` their kinds. ``examples`` counts the inputs
    compared during the search (shrinking not included), ``skipped`` those
    where a gradient sat on a kink or a float32 value was ill-conditioned
    (see docs/crosscheck.md); ``value_error`` / ``grad_error`` are the worst
    relative errors seen (``grad_error`` None when gradients were not
    compared); ``tolerance`` the bounds they were held to; ``at_ties``
    counts the examples where the gradients differ at an exact tie of the
    reference and the candidate's lies in the reference's subdifferential
    (agreements), ``tie_note`` says how on the first of them.
    """

    candidate: str
    reference: str
    framework: str
    dtype: str
    verdict: str
    examples: int
    skipped: int
    value_error: float
    grad_error: float | None
    tolerance: dict[str, float]
    counterexample: Counterexample | None = None
    reference_kwargs: dict = field(default_factory=dict)
    candidate_kwargs: dict = field(default_factory=dict)
    seed: int | None = 0
    grad_method: str = "autograd"
    meta: dict = field(default_factory=dict)
    saved_to: str | None = None
    findings: list[Counterexample] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    at_ties: int = 0
    tie_note: str = ""

    def __post_init__(self) -> None:
        if self.counterexample is not None and not self.findings:
            self.findings = [self.counterexample]

    @property
    def agrees(self) -> bool:
        return self.verdict == "agree"

    @property
    def verdict_name(self) -> str:
        """AGREE, DISAGREE or NONDETERMINISTIC."""
        return self.verdict.upper()

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds of the findings, e.g. ``("value", "raises")``."""
        return tuple(cx.kind for cx in self.findings)

    def _head(self) -> str:
        kinds = [k for k in self.kinds if k != "nondeterministic"]
        if self.verdict == "disagree" and kinds:
            return f"{self.verdict_name} ({', '.join(dict.fromkeys(kinds))})"
        return self.verdict_name

    def __bool__(self) -> bool:
        return self.agrees

    @property
    def difference(self) -> str:
        """The first difference, in words ("" when they agree)."""
        if self.counterexample is None:
            return ""
        return describe(self.counterexample)

    def summary(self) -> str:
        """One line: verdict, who against whom, and the first difference."""
        head = self.verdict_name
        line = f"{head} {self.candidate} vs {_call(self.reference, self.reference_kwargs)}"
        line += f" [{self.framework}, {self.dtype}, {_count(self.examples, 'example')}]"
        if not self.agrees:
            line += f": {self.difference}"
            more = [cx.kind for cx in self.findings[1:]]
            if more:
                line += f" (also: {', '.join(more)})"
        return line

    def __str__(self) -> str:
        lines = [
            f"crosscheck  {self.candidate}",
            f"       vs   {_call(self.reference, self.reference_kwargs)}",
        ]
        if self.candidate_kwargs:
            lines.append(f"candidate kwargs: {_kwargs(self.candidate_kwargs)}")
        seed = "random" if self.seed is None else str(self.seed)
        extra = ""
        if self.meta.get("crashes"):
            extra += f", {self.meta['crashes']} raised"
        if self.meta.get("nondeterministic_examples"):
            extra += f", {self.meta['nondeterministic_examples']} nondeterministic"
        lines.append(
            f"framework {self.framework}, {self.dtype}, gradient by {self.grad_method}, "
            f"{_count(self.examples, 'example')} ({self.skipped} skipped at a kink or "
            f"rounding{extra}), seed {seed}"
        )
        if self.meta.get("domain"):
            lines.append(f"domain: {_kwargs(self.meta['domain'])}")
        lines.append(f"verdict: {self._head()}")
        if self.at_ties:
            lines.append(
                f"ties: {_count(self.at_ties, 'example')} at a tie of the reference, where "
                f"the candidate's gradient lies in its subdifferential; first: {self.tie_note}"
            )
        grad = "not compared" if self.grad_error is None else _num(self.grad_error)
        tol = ", ".join(f"{k} {_num(v)}" for k, v in self.tolerance.items())
        lines.append(
            f"worst relative error: value {_num(self.value_error)}, gradient {grad} "
            f"(tolerance: {tol})"
        )
        for note in self.notes:
            lines.append(f"note: {note}")
        for i, cx in enumerate(self.findings):
            if i == 0:
                lines.append(f"first difference: {describe(cx)}")
            else:
                lines.append(f"also {_ALSO.get(cx.kind, 'found')}: {describe(cx)}")
            if cx.frames:
                lines.append("  candidate traceback (innermost last):")
                lines.extend(f"    {f}" for f in cx.frames)
            shrunk = "" if cx.kind == "nondeterministic" else "shrunk, "
            lines.append(f"{'counterexample' if i == 0 else 'its input'} ({shrunk}"
                         f"{_count(cx.size, 'sample')}):")
            lines.extend(_counterexample_lines(cx))
        if self.saved_to:
            lines.append(
                f"saved to {self.saved_to} (replay: refloss crosscheck --replay {self.saved_to})"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """The report as a JSON-ready dict (``refloss crosscheck --format
        json``; the schema is in docs/crosscheck.md, "Machine-readable
        output")."""
        from ._json import report_dict

        return report_dict(self)

    # ------------------------------------------------------------------
    # persistence

    def save(self, path: str | os.PathLike) -> str:
        """Write the counterexample (inputs, both outputs, both gradients) and
        what is needed to replay it to ``path`` (``.npz``); returns the path.

        Raises ValueError when there is no counterexample (the two agreed).
        """
        cx = self.counterexample
        if cx is None:
            raise ValueError("report: nothing to save, the candidate agreed with the reference")
        path = os.fspath(path)
        arrays: dict[str, np.ndarray] = {}
        for role, a in cx.inputs.items():
            arrays[f"input.{role}"] = np.asarray(a)
        for i, a in enumerate(cx.candidate_value):
            arrays[f"candidate.value.{i}"] = np.asarray(a)
        for i, a in enumerate(cx.reference_value):
            arrays[f"reference.value.{i}"] = np.asarray(a)
        for role, a in cx.candidate_grads.items():
            arrays[f"candidate.grad.{role}"] = np.asarray(a)
        for role, a in cx.reference_grads.items():
            arrays[f"reference.grad.{role}"] = np.asarray(a)
        if cx.cotangent is not None:
            arrays["cotangent"] = np.asarray(cx.cotangent)
        others = []
        for j, other in enumerate(self.findings[1:]):
            for role, a in other.inputs.items():
                arrays[f"finding.{j}.input.{role}"] = np.asarray(a)
            for i, a in enumerate(other.candidate_value):
                arrays[f"finding.{j}.candidate.value.{i}"] = np.asarray(a)
            for i, a in enumerate(other.second_value):
                arrays[f"finding.{j}.second.value.{i}"] = np.asarray(a)
            for i, a in enumerate(other.reference_value):
                arrays[f"finding.{j}.reference.value.{i}"] = np.asarray(a)
            others.append({"kind": other.kind, "role": other.role,
                           "message": other.message, "cause": other.cause,
                           "value_error": other.value_error,
                           "grad_error": other.grad_error,
                           "frames": other.frames, "rng_seed": other.rng_seed})
        for i, a in enumerate(cx.second_value):
            arrays[f"second.value.{i}"] = np.asarray(a)
        meta = dict(self.meta)
        meta.update(
            version=FORMAT_VERSION,
            candidate=self.candidate,
            reference=self.reference,
            framework=self.framework,
            dtype=self.dtype,
            reference_kwargs=self.reference_kwargs,
            candidate_kwargs=self.candidate_kwargs,
            kind=cx.kind,
            role=cx.role,
            message=cx.message,
            rng_seed=cx.rng_seed,
            cause=cx.cause,
            value_error=cx.value_error,
            grad_error=cx.grad_error,
            grad_method=self.grad_method,
            seed=self.seed,
            verdict=self.verdict,
            verdict_name=self.verdict_name,
            kinds=list(self.kinds),
            frames=cx.frames,
            findings=others,
            notes=self.notes,
        )
        arrays["meta"] = np.asarray(json.dumps(meta))
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
        self.saved_to = path
        return path


def load_counterexample(path: str | os.PathLike) -> tuple[Counterexample, dict]:
    """``(counterexample, meta)`` from a file written by :meth:`Report.save`.

    Raises ValueError naming the file when it is not such a file.
    """
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            files = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise ValueError(f"replay: no such file {path!r}") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"replay: {path!r} is not a saved counterexample ({exc})") from None
    if "meta" not in files:
        raise ValueError(f"replay: {path!r} is not a saved counterexample (no 'meta' entry)")
    try:
        meta = json.loads(str(files.pop("meta")))
    except json.JSONDecodeError as exc:
        raise ValueError(f"replay: {path!r} has an unreadable 'meta' entry ({exc})") from None
    if meta.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"replay: {path!r} has format version {meta.get('version')!r}, "
            f"expected {FORMAT_VERSION}"
        )

    def grouped(prefix):
        return {k[len(prefix):]: v for k, v in files.items() if k.startswith(prefix)}

    def ordered(d):
        return tuple(d[k] for k in sorted(d, key=int))

    files = {k: v for k, v in files.items() if not k.startswith("finding.")}
    cx = Counterexample(
        kind=meta.get("kind", "value"),
        inputs=grouped("input."),
        candidate_value=ordered(grouped("candidate.value.")),
        reference_value=ordered(grouped("reference.value.")),
        candidate_grads=grouped("candidate.grad."),
        reference_grads=grouped("reference.grad."),
        role=meta.get("role"),
        cotangent=files.get("cotangent"),
        message=meta.get("message", ""),
        value_error=float(meta.get("value_error") or 0.0),
        grad_error=meta.get("grad_error"),
        rng_seed=int(meta.get("rng_seed", 0)),
        frames=list(meta.get("frames") or []),
        second_value=ordered(grouped("second.value.")),
        cause=str(meta.get("cause", "")),
    )
    return cx, meta


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _kwargs(kw: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kw.items())


def _call(name: str, kw: dict) -> str:
    return f"{name}({_kwargs(kw)})"


def _block(name: str, a: Any, indent: str = "    ") -> list[str]:
    text = np.array2string(np.asarray(a), precision=8, separator=", ", threshold=200)
    lines = text.splitlines()
    out = [f"{indent}{name} = {lines[0]}"]
    pad = indent + " " * (len(name) + 3)
    out.extend(pad + ln for ln in lines[1:])
    return out


def _counterexample_lines(cx: Counterexample) -> list[str]:
    lines = []
    for role, a in cx.inputs.items():
        lines.extend(_block(role, a))
    if cx.candidate_value or cx.reference_value:
        lines.append("  value:")
        for i, a in enumerate(cx.candidate_value):
            lines.extend(_block(f"candidate[{i}]" if len(cx.candidate_value) > 1
                                else "candidate", a))
        for i, a in enumerate(cx.second_value):
            lines.extend(_block(f"candidate again[{i}]" if len(cx.second_value) > 1
                                else "candidate again", a))
        for i, a in enumerate(cx.reference_value):
            lines.extend(_block(f"reference[{i}]" if len(cx.reference_value) > 1
                                else "reference", a))
    if cx.cotangent is not None and np.asarray(cx.cotangent).ndim > 0:
        lines.extend(_block("cotangent", cx.cotangent))
    elif cx.cotangent is not None and cx.candidate_grads:
        lines.append(f"  grad_output = {_num(float(cx.cotangent))} (a random scale)")
    roles = [r for r in cx.reference_grads if r in cx.candidate_grads]
    for role in roles:
        lines.append(f"  gradient of {role}:")
        lines.extend(_block("candidate", cx.candidate_grads[role]))
        lines.extend(_block("reference", cx.reference_grads[role]))
    return lines
