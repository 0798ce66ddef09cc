r"""Cross-checking a distributed loss: the candidate runs under a gloo process
group on the shards of each drawn batch, and its value and every shard's
gradient are compared with the reference on the whole batch.

The whole batch is the concatenation of the shards in rank order,
:math:`X = [X_0; \dots; X_{W-1}]`. The candidate, called on rank r with
``(x_r, labels_r)``, must return :math:`L(X, Y)` on every rank, and after
every rank backpropagates its value, ``x_r.grad`` must be

.. math::  s\,\partial L/\partial X_r, \qquad s = W \text{ (grad_reduce="sum",
   DDP's convention) or } 1 \text{ ("mean")}.

With the sum convention, DistributedDataParallel's average of the parameter
gradients over the ranks is the single-process gradient of :math:`L`
(see ``docs/distributed.md``). At the first batch that disagrees the search
stops and names the fault from its signature (:data:`FAULTS`).

One group of processes serves the whole search (spawning one costs
seconds); batches are drawn with NumPy from ``seed``, small first, and are
not shrunk. The group lives in :mod:`refloss.adapters._gloo_group` (torch);
this module imports it only when a distributed cross-check runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: the faults a distributed cross-check names, and their signatures
FAULTS = {
    "values differ across ranks":
        "the ranks return different values (beyond the tolerance)",
    "own shard only":
        "rank r returns the loss of its own shard, L(X_r, Y_r): nothing is gathered",
    "parts of the loss":
        "the ranks' values sum (or average) to L: each computes a part, e.g. the terms "
        "of its own anchors",
    "shard-local mining":
        "the common value is the mean (or sum) over ranks of the per-shard losses "
        "L(X_r, Y_r): each rank mined only within its own shard",
    "value × W":
        "the common value is W·L: a world-size factor in the value (the gradient may "
        "still be right)",
    "value ÷ W":
        "the common value is L/W",
    "no gradient":
        "the shards get no gradient: a plain all_gather (no backward) and the local "
        "rows not put back into the gathered batch",
    "gradient × W":
        "x_r.grad is W times the expected one on every rank: a world-size factor too "
        "many (a backward that sums over ranks, then × W again)",
    "gradient ÷ W":
        "x_r.grad is the expected one divided by W: the factor W is missing (the local "
        "slice's gradient ∂L/∂X_r without loss × W, then DDP averages it down by W)",
    "gradient scaled":
        "x_r.grad = c × the expected gradient on every rank, c neither W nor 1/W",
    "gradient of the own shard's loss":
        "x_r.grad ∝ ∂L(X_r, Y_r)/∂X_r: the backward sees only the shard-local loss",
    "raises":
        "a rank raised, or hung in a collective another rank never joined",
    "values differ from the reference":
        "the common value is none of the above",
    "gradient differs":
        "x_r.grad is none of the above",
}


@dataclass
class ShardResult:
    value: float | None
    grad: np.ndarray | None
    error: str = ""
    note: str = ""


@dataclass
class DistributedReport:
    """The outcome of a distributed cross-check (``crosscheck(..., world_size=W)``)."""

    candidate: str
    reference: str
    world_size: int
    dtype: str
    grad_reduce: str
    verdict: str  # "agree" or "disagree"
    examples: int
    faults: list[str] = field(default_factory=list)  # keys of FAULTS
    details: list[str] = field(default_factory=list)  # one line each, numbers included
    x: np.ndarray | None = None  # the failing batch
    labels: np.ndarray | None = None
    sizes: list[int] = field(default_factory=list)
    reference_value: float | None = None
    values: list[float | None] = field(default_factory=list)
    value_error: float = 0.0
    grad_error: float | None = None
    reference_kwargs: dict = field(default_factory=dict)
    seed: int | None = 0

    @property
    def agrees(self) -> bool:
        return self.verdict == "agree"

    def __bool__(self) -> bool:
        return self.agrees

    def summary(self) -> str:
        if self.agrees:
            return (f"AGREE: {self.examples} batches on {self.world_size} ranks "
                    f"(max value error {self.value_error:.1e}, gradient "
                    f"{self.grad_error if self.grad_error is None else f'{self.grad_error:.1e}'})")
        return f"DISAGREE: {', '.join(self.faults)}"

    def __str__(self) -> str:
        expected = "W·∂L/∂X_r" if self.grad_reduce == "sum" else "∂L/∂X_r"
        batches = f"{self.examples} batch{'es' if self.examples != 1 else ''}"
        head = (f"crosscheck  {self.candidate} on {self.world_size} gloo ranks (each "
                f"batch in shards, rank order)\n"
                f"       vs   {self.reference}{_kwargs(self.reference_kwargs) or '()'} "
                f"on the whole batch\n"
                f"{self.dtype}, x_r.grad expected {expected} (grad_reduce="
                f"{self.grad_reduce!r}), {batches}, seed {self.seed}\n"
                f"verdict: {self.verdict.upper()}")
        lines = [head]
        if self.agrees:
            lines.append(f"  value error {self.value_error:.1e}"
                         + ("" if self.grad_error is None
                            else f", gradient error {self.grad_error:.1e}"))
            return "\n".join(lines)
        for fault in self.faults:
            lines.append(f"  fault: {fault}: {FAULTS[fault]}")
        lines.extend(f"  {d}" for d in self.details)
        if self.x is not None:
            lines.append(f"  batch: {self.x.shape[0]} rows, D = {self.x.shape[1]}, shards "
                         f"{self.sizes} (rank order), labels {self.labels.tolist()}")
            with np.printoptions(precision=4, suppress=True):
                lines.append("  x = " + str(self.x).replace("\n", "\n      "))
        return "\n".join(lines)


def _kwargs(kw: Mapping) -> str:
    return "(" + ", ".join(f"{k}={v!r}" for k, v in kw.items()) + ")" if kw else ""


def _batches(world: int, n: int, seed: int | None, even: bool):
    """``n`` labeled batches, small first, with their shard sizes (rank order).

    Every shard has at least 3 rows, among them a positive pair and a
    negative: then a shard-local loss is not zero and shows its signature.
    Shards are uneven unless ``even``.
    """
    rng = np.random.default_rng(seed)
    for i in range(n):
        if even:
            sizes = [3 + int(rng.integers(0, 1 + i // 4))] * world
        else:
            extra = rng.multinomial(int(rng.integers(1, 3 + i // 2)), np.full(world, 1 / world))
            sizes = (3 + extra).tolist()
            if world > 1 and len(set(sizes)) == 1:
                sizes[0] += 1
        classes = int(rng.integers(2, 4 + i // 8))
        labels = []
        for size in sizes:
            p, q = rng.choice(classes, 2, replace=False)
            shard = np.concatenate([[p, p, q], rng.integers(0, classes, size - 3)])
            labels.append(rng.permutation(shard))
        labels = np.concatenate(labels).astype(np.int64)
        x = rng.standard_normal((labels.shape[0], int(rng.integers(2, 5))))
        yield x, labels, [int(s) for s in sizes]


def _close(a: float, b: float, tol: float, floor: float) -> bool:
    return abs(a - b) <= tol * max(abs(b), floor)


def crosscheck_distributed(
    candidate: Callable,
    reference: Callable | str,
    *,
    world_size: int,
    reference_kwargs: Mapping[str, Any] | None = None,
    candidate_kwargs: Mapping[str, Any] | None = None,
    grad: bool = True,
    dtype: str = "float64",
    max_examples: int = 20,
    seed: int | None = 0,
    name: str | None = None,
    grad_reduce: str = "sum",
    even_shards: bool = False,
    output: int | None = None,
    timeout: float = 60.0,
    group: Any = None,
) -> DistributedReport:
    """The distributed cross-check behind ``crosscheck(..., world_size=W)``;
    ``group`` reuses a running :class:`refloss.adapters._gloo_group.GlooGroup`
    of ``world_size`` ranks (the tests share one), else one is spawned and
    closed here."""
    import refloss as rl

    from ._judge import TOLERANCES
    from ._names import _candidate_name, reference_name, resolve_reference
    from ._setup import _check_kwargs, _check_options, _reference_roles

    _check_options("torch", dtype, grad, max_examples, seed, None)
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size: expected an integer >= 1, got {world_size!r}")
    if grad_reduce not in ("sum", "mean"):
        raise ValueError(f"grad_reduce: expected 'sum' or 'mean', got {grad_reduce!r}")
    ref = resolve_reference(reference)
    ref_name = reference_name(ref)
    ref_kwargs = _check_kwargs(ref, ref_name, reference_kwargs, "reference_kwargs")
    cand_kwargs = dict(candidate_kwargs or {})
    roles = _reference_roles(ref, ref_name, ref_kwargs)
    if roles != ["x", "labels"]:
        raise ValueError(f"world_size: a distributed cross-check takes a labeled-batch "
                         f"reference of (x, labels), got {ref_name} of ({', '.join(roles)})")
    if not callable(candidate):
        raise TypeError(f"candidate: expected a callable, got {type(candidate).__name__}")
    cand_name = name if isinstance(name, str) else _candidate_name(candidate)
    tol = TOLERANCES[dtype]
    with_grad = grad and hasattr(ref, "__refloss_vjp__")
    scale = world_size if grad_reduce == "sum" else 1

    from refloss.adapters import _gloo_group

    # a candidate loaded from MODULE:FUNCTION is a wrapper that does not
    # pickle: the ranks load it again from its spec
    spec = getattr(candidate, "__refloss_candidate__", None)
    sent = (("spec", spec, getattr(candidate, "__refloss_init_kwargs__", None))
            if isinstance(spec, str) else candidate)
    import pickle

    try:
        pickle.dumps(sent)
    except Exception as exc:  # a lambda, a local function, an unpicklable module
        raise TypeError(f"candidate: expected a picklable callable for world_size (a "
                        f"module-level function, or a module whose parts pickle), got "
                        f"{cand_name} ({type(exc).__name__}: {exc})") from None
    own = group is None
    if own:
        group = _gloo_group.GlooGroup(world_size, timeout=timeout)
    elif group.world_size != world_size:
        raise ValueError(f"group: expected a group of {world_size} ranks, got "
                         f"{group.world_size}")
    report = DistributedReport(
        candidate=cand_name, reference=ref_name, world_size=world_size, dtype=dtype,
        grad_reduce=grad_reduce, verdict="agree", examples=0, reference_kwargs=ref_kwargs,
        seed=seed, grad_error=0.0 if with_grad else None)
    try:
        for x, labels, sizes in _batches(world_size, max_examples, seed, even_shards):
            report.examples += 1
            value, pull = rl.vjp(ref, x, labels, **ref_kwargs)
            ref_value = float(np.asarray(value[0] if isinstance(value, tuple) else value))
            ref_grad = np.asarray(pull(1.0)[0]) if with_grad else None
            payload = {"candidate": sent, "kwargs": cand_kwargs, "x": x,
                       "labels": labels, "sizes": sizes, "dtype": dtype, "output": output}
            shards = _run(group, _gloo_group, payload)
            fault = _judge(report, shards, x, labels, sizes, ref, ref_kwargs, ref_value,
                           ref_grad, scale, tol, with_grad)
            if fault:
                report.verdict = "disagree"
                report.x, report.labels, report.sizes = x, labels, sizes
                report.reference_value = ref_value
                report.values = [s.value for s in shards]
                break
            if shards is None:  # the group hung: nothing more can run
                break
    finally:
        if own:
            group.close()
    return report


def _run(group: Any, module: Any, payload: dict) -> list[ShardResult]:
    try:
        answers = group.run(module.candidate_step, payload)
    except module.GroupHang as exc:
        out = []
        for r in range(group.world_size):
            ok, res = exc.done.get(r, (False, "hung: " + str(exc)))
            out.append(ShardResult(res["value"], res["grad"], note=res["note"]) if ok
                       else ShardResult(None, None, error=_last_line(res)))
        return out
    return [ShardResult(res["value"], res["grad"], note=res["note"]) if ok
            else ShardResult(None, None, error=_last_line(res)) for ok, res in answers]


def _last_line(text: str) -> str:
    lines = [ln for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else str(text)


def _judge(report: DistributedReport, shards: list[ShardResult], x, labels, sizes, ref,
           ref_kwargs, ref_value, ref_grad, scale, tol, with_grad) -> bool:
    """Record this batch in ``report``; True (with the faults named) when it disagrees."""
    import refloss as rl

    world = len(sizes)
    errors = [(r, s.error) for r, s in enumerate(shards) if s.error]
    if errors:
        report.faults.append("raises")
        report.details.extend(f"rank {r}: {e}" for r, e in errors)
        return True
    bounds = np.cumsum([0, *sizes])
    values = [s.value for s in shards]
    local = []
    for r in range(world):  # the per-shard reference: what shard-local code computes
        xs, ys = x[bounds[r]:bounds[r + 1]], labels[bounds[r]:bounds[r + 1]]
        v, pull = rl.vjp(ref, xs, ys, **ref_kwargs)
        local.append((float(np.asarray(v[0] if isinstance(v, tuple) else v)),
                      np.asarray(pull(1.0)[0]) if with_grad else None))

    def close(a, b):
        return _close(a, b, tol.value, tol.floor)

    value_error = max(abs(v - ref_value) / max(abs(ref_value), tol.floor) for v in values)
    report.value_error = max(report.value_error, value_error)
    faults, details = [], []
    if not all(close(v, values[0]) for v in values):
        faults.append("values differ across ranks")
        details.append("values by rank: " + ", ".join(f"{v:.6g}" for v in values)
                       + f"; reference on the whole batch {ref_value:.6g}")
        if all(close(v, lv) for v, (lv, _) in zip(values, local, strict=True)):
            faults.append("own shard only")
        elif close(sum(values), ref_value) or close(sum(values) / world, ref_value):
            faults.append("parts of the loss")
    elif not close(values[0], ref_value):
        v = values[0]
        details.append(f"value {v:.6g} on every rank; reference on the whole batch "
                       f"{ref_value:.6g}; per-shard losses "
                       + ", ".join(f"{lv:.6g}" for lv, _ in local))
        lvs = [lv for lv, _ in local]
        if close(v, sum(lvs) / world) or close(v, sum(lvs)):
            faults.append("shard-local mining")
        elif ref_value != 0 and close(v, world * ref_value):
            faults.append("value × W")
        elif ref_value != 0 and close(v, ref_value / world):
            faults.append("value ÷ W")
        else:
            faults.append("values differ from the reference")
    if with_grad:
        faults_g, details_g = _judge_grad(report, shards, ref_grad, local, bounds, scale,
                                          tol, world)
        faults += faults_g
        details += details_g or ["gradient: as expected on every rank"]
    if faults:
        report.faults.extend(faults)
        report.details.extend(details)
        report.details.extend(f"rank {r}: {s.note}" for r, s in enumerate(shards) if s.note)
        return True
    return False


def _judge_grad(report, shards, ref_grad, local, bounds, scale, tol, world):
    expected = scale * ref_grad
    size = max(float(np.max(np.abs(expected))) if expected.size else 0.0, tol.floor)
    if any(s.grad is None for s in shards):
        got = None
    else:
        got = np.concatenate([s.grad for s in shards])
    if got is None or got.shape != expected.shape:
        err = float("inf")
    else:
        err = float(np.max(np.abs(got - expected))) / size
    report.grad_error = max(report.grad_error or 0.0, err)
    if err <= tol.grad:
        return [], []
    missing = [r for r, s in enumerate(shards) if s.grad is None]
    local_grad = np.concatenate([g for _, g in local])
    if got is not None and not np.any(got) and not np.any(local_grad):
        return ["gradient of the own shard's loss"], [
            "x.grad is zero, as is the gradient of every shard's own loss"]
    if got is None or not np.any(got):
        if np.any(expected):
            which = f"ranks {missing} have no x.grad" if missing else "x.grad is zero"
            return ["no gradient"], [f"{which}; expected max |x.grad| {size:.3g}"]
        return [], []
    details = [f"gradient error {err:.2e} (max |x.grad − {'W' if scale > 1 else '1'}·∂L/∂x_r| "
               f"relative to max |{'W' if scale > 1 else '1'}·∂L/∂x_r| = {size:.3g})"]
    c = _fit(got, expected)
    if c is not None and np.max(np.abs(got - c * expected)) <= tol.grad * size * max(1, abs(c)):
        details.append(f"x.grad = {c:.6g} × the expected gradient on every rank (W = {world})")
        if abs(c - world) <= 1e-6 * world:
            return ["gradient × W"], details
        if abs(c - 1 / world) <= 1e-6:
            return ["gradient ÷ W"], details
        return ["gradient scaled"], details
    c = _fit(got, local_grad)
    if c is not None and np.max(np.abs(got - c * local_grad)) <= tol.grad * size * max(1, abs(c)):
        details.append(f"x.grad = {c:.6g} × ∂L(X_r, Y_r)/∂X_r (the shard's own loss)")
        return ["gradient of the own shard's loss"], details
    per_rank = []
    for r, s in enumerate(shards):
        e = expected[bounds[r]:bounds[r + 1]]
        per_rank.append(f"rank {r} error {np.max(np.abs(s.grad - e), initial=0) / size:.2e}")
    details.append("; ".join(per_rank))
    return ["gradient differs"], details


def _fit(got: np.ndarray, base: np.ndarray) -> float | None:
    norm = float(np.sum(base * base))
    if norm == 0.0:
        return None
    return float(np.sum(got * base)) / norm
