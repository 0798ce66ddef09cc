r"""The cross-check harness: search for inputs where a candidate loss disagrees
with a refloss reference (or a compat preset), in value and gradient.

:func:`crosscheck` draws inputs with :mod:`refloss.testing.strategies` (which
inputs is read from the reference's signature: a labeled batch, explicit
triplets, pairs, a batch with centers), feeds the same values to both
functions — the candidate in its framework and dtype, the reference in
float64 NumPy — compares every output and the gradient of the first, and
lets Hypothesis shrink the first disagreement to a small counterexample.

Gradients. The candidate's come from its framework's autograd (torch,
JAX, TensorFlow, through :mod:`refloss.adapters.bridges`), from its analytic
rule when it carries one (a refloss function or compat preset), or, for a
plain NumPy function, from central differences along random directions.
The reference's come from :func:`refloss.vjp`. A non-scalar output is
differentiated against a random cotangent.

Kinks. Where the reference is not differentiable (a distance exactly 0, a
hinge exactly at 0, a tie in a max or min) frameworks legitimately pick
different subgradients, so a gradient difference there is *skipped*, not
reported: when a gradient differs, the reference's one-sided difference
quotients along the direction of the difference are compared, and a jump
between them marks a kink. A NaN or inf gradient is never excused. Values
are always compared, ties included. With ``ties=False`` (the float32
default) a value difference is also skipped where the reference itself
changes under a perturbation of the inputs at the dtype's rounding level.

Tolerances follow the dtype (:data:`TOLERANCES`): an output agrees when
:math:`\lVert c - r\rVert_\infty \le \mathrm{tol}\cdot\max(\lVert r\rVert_\infty,
\mathrm{floor})`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from hypothesis import strategies as st

from ._causes import separate
from ._domain import Domain
from ._judge import TOLERANCES, Tolerance, _evaluate, _fd_gradient, _Outcome
from ._probes import (
    _Event,
    cotangent_words,
    crash_event,
    generators_restored,
    reseeded,
    shrink_crash,
)
from ._report import Counterexample, Report, load_counterexample
from ._run import _arrays, _call_candidate, _is_index, _run_reference
from ._search import (
    _as_bundle,
    _default_strategy,
    _example_bundle,
    _Found,
    _minimize,
    _search,
    _Stats,
)
from ._setup import (
    FRAMEWORKS,
    CandidateError,
    CrosscheckError,
    _CandidateFailure,
    _check_options,
    _make_setup,
    _ReferenceFailure,
    _Setup,
    detect_framework,
    load_candidate,
    reference_name,
    resolve_reference,
)

__all__ = [
    "FRAMEWORKS",
    "TOLERANCES",
    "CandidateError",
    "CrosscheckError",
    "Tolerance",
    "assert_matches",
    "crosscheck",
    "detect_framework",
    "load_candidate",
    "reference_name",
    "replay",
    "resolve_reference",
]


def _both_gradients(setup: _Setup, outcome: _Outcome) -> tuple[dict, dict]:
    """Both gradients at a counterexample whose values already differ (the
    search stops at the value), for the report; empty where unavailable."""
    if not setup.grad or setup.index_mode:
        return {}, {}
    inputs = outcome.inputs
    ref_in = _arrays(setup, inputs, "float64")
    try:
        _, ref_pull = _run_reference(setup, ref_in, with_grad=True)
        ref_grads = {r: g for r, g in ref_pull(outcome.cotangent).items() if g is not None}
        if setup.grad_method == "finite differences":
            return {}, ref_grads
        _, cand_pull = _call_candidate(setup, inputs, with_grad=True)
        cand_grads = {r: g for r, g in cand_pull(outcome.cotangent).items()
                      if g is not None and r in ref_grads}
    except (_CandidateFailure, _ReferenceFailure):
        return {}, {}
    return cand_grads, ref_grads


def _counterexample(setup: _Setup, outcome: _Outcome, cause: str = "") -> Counterexample:
    cand_grads = dict(outcome.cand_grads)
    ref_grads = dict(outcome.ref_grads)
    if outcome.kind == "value":
        cand_grads, ref_grads = _both_gradients(setup, outcome)
    if setup.grad_method == "finite differences" and outcome.kind in ("value", "gradient"):
        for role in ref_grads:
            g = _fd_gradient(setup, outcome.inputs, role, outcome.cotangent)
            if g is not None:
                cand_grads[role] = g
    return Counterexample(
        cause=cause,
        kind=outcome.kind, inputs=dict(outcome.inputs),
        candidate_value=tuple(outcome.cand_outputs), reference_value=tuple(outcome.ref_outputs),
        candidate_grads=cand_grads, reference_grads=ref_grads, role=outcome.role,
        cotangent=np.asarray(outcome.cotangent), message=outcome.message,
        value_error=outcome.value_error, grad_error=outcome.grad_error,
        rng_seed=outcome.rng_seed,
    )


def _differences(setup: _Setup, outcome: _Outcome, found: _Found) -> list[Counterexample]:
    """The counterexample with its named cause; when it mixes two causes, an
    example for each cause alone where one is found, first (``separate``)."""
    # a crash, a nondeterministic value or an out-of-range random choice is
    # no variant of the reference: only plain value/gradient differences get a cause
    if outcome.kind not in ("value", "gradient") or outcome.message:
        return [_counterexample(setup, outcome)]

    def evaluate(inputs: Mapping, rng_seed: int) -> _Outcome:
        with reseeded(setup.reseed):
            return _evaluate(setup, inputs, rng_seed)

    return [_counterexample(setup, o, words)
            for o, words in separate(setup, outcome, found.failures, evaluate=evaluate)]


def _event_counterexample(setup: _Setup, event: _Event) -> Counterexample:
    ref_value: tuple = tuple(event.ref_outputs)
    if not ref_value:  # a crash: show what the reference gives there
        try:
            ref_value, _ = _run_reference(setup, _arrays(setup, event.inputs, "float64"),
                                          with_grad=False)
        except _ReferenceFailure:
            ref_value = ()
    return Counterexample(
        kind=event.kind, inputs=dict(event.inputs), candidate_value=tuple(event.values),
        reference_value=tuple(ref_value), message=event.message, rng_seed=event.rng_seed,
        frames=list(event.frames), second_value=tuple(event.second),
    )


def _report(setup: _Setup, stats: _Stats, failing: _Outcome | None, seed,
            found: _Found | None = None) -> Report:
    found = found or _Found()
    meta = {
        "candidate_spec": setup.candidate_spec,
        "ref_roles": setup.ref_roles,
        "cand_roles": setup.cand_roles,
        "grad": setup.grad,
        "ties": setup.ties,
        "domain": setup.domain.as_dict(),
        "reseed": setup.reseed,
        "init_kwargs": setup.init_kwargs,
        "output": setup.output,
        "same": None if setup.cand_same.is_default else ",".join(
            [setup.cand_same.dtype] + (["1=different"] if setup.cand_same.one_is_different
                                       else []) + (["column"] if setup.cand_same.column
                                                   else [])),
        "crashes": stats.crashes,
        "nondeterministic_examples": stats.nondeterministic,
    }
    value_error, grad_error = stats.value_error, stats.grad_error
    if failing is not None:  # the minimized counterexample is not in the statistics
        value_error = max(value_error, failing.value_error)
        if failing.grad_error is not None:
            grad_error = max(grad_error or 0.0, failing.grad_error)
    findings = [] if failing is None else _differences(setup, failing, found)
    for event in (found.outside, found.crash, found.nondeterminism):
        if event is not None:
            findings.append(_event_counterexample(setup, event))
    if any(cx.kind != "nondeterministic" for cx in findings):
        verdict = "disagree"
    elif findings:
        verdict = "nondeterministic"
    else:
        verdict = "agree"
    return Report(
        candidate=setup.candidate_name, reference=setup.ref_name, framework=setup.framework,
        dtype=setup.dtype, verdict=verdict,
        examples=stats.examples, skipped=stats.skipped, value_error=value_error,
        grad_error=grad_error if setup.grad else None,
        tolerance=setup.tol.as_dict(setup.grad_method == "finite differences"),
        counterexample=findings[0] if findings else None, findings=findings,
        reference_kwargs=setup.ref_kwargs, candidate_kwargs=setup.cand_kwargs, seed=seed,
        grad_method=setup.grad_method if setup.grad else "none", meta=meta,
        notes=list(setup.notes),
        at_ties=stats.at_tie, tie_note=stats.tie_note,
    )


def crosscheck(
    candidate: Callable,
    reference: Callable | str,
    *,
    framework: str = "auto",
    reference_kwargs: Mapping[str, Any] | None = None,
    candidate_kwargs: Mapping[str, Any] | None = None,
    grad: bool = True,
    dtype: str = "float64",
    max_examples: int = 100,
    seed: int | None = 0,
    ties: bool | None = None,
    inputs: st.SearchStrategy | None = None,
    name: str | None = None,
    domain: Mapping[str, Any] | None = None,
    reseed: bool = False,
    init_kwargs: Mapping[str, Any] | None = None,
    output: int | None = None,
    same: str | None = None,
    world_size: int | None = None,
    grad_reduce: str = "sum",
    even_shards: bool = False,
) -> Report:
    """Search for inputs where ``candidate`` disagrees with ``reference``.

    Args:
        candidate: the implementation under test, called positionally with
            the reference's inputs — in the order of its own parameter names
            when they name the same inputs (``embeddings, labels``;
            ``y_true, y_pred``; ``anchor, positive, negative``; ``a, b, same``
            ...), in the reference's order otherwise — as arrays of
            ``framework`` in ``dtype`` (labels int64, ``same`` bool).
        reference: a refloss function or compat preset, or its name
            (``"batch_hard_triplet_loss"``, ``"compat.caffe.center_loss"``).
        framework: "numpy", "torch", "jax" or "tensorflow": how inputs are
            built and how the candidate's gradient is taken (autograd; for
            "numpy", the candidate's refloss VJP rule if it has one, else
            central differences in float64). ``"auto"`` (default) guesses it
            from the candidate's module (and what it imports or subclasses);
            when that says NumPy but the first call on NumPy arrays fails the
            way another framework's function does (a torch function's
            "must be Tensor, not numpy.ndarray"), that framework is used if
            installed, and the report's notes say so; otherwise a note says
            which ``framework=`` to pass.
        reference_kwargs: keyword options of the reference (the candidate's
            own settings, written in refloss terms: ``{"margin": 0.2}``).
        candidate_kwargs: keyword arguments passed to the candidate.
        grad: compare gradients too (only where the reference has a VJP).
        dtype: "float64" or "float32" (tolerances follow it, see
            :data:`TOLERANCES`).
        max_examples: inputs to try before shrinking.
        seed: the search's seed; None for a random one. The same seed gives
            the same search in the same program, but Hypothesis also draws
            constants it collects from the imported non-installed modules, so
            importing other local code can change where the search lands
            (replay a saved counterexample to reproduce one exactly).
        ties: draw inputs with exact distance ties and hinges at 0 (default:
            True in float64, False in float32).
        inputs: a strategy of your own drawing dicts (or the records of
            :mod:`refloss.testing.strategies`) keyed by role.
        name: how the candidate is called in the report.
        domain: the inputs the candidate is meant for, drawn and shrunk
            inside: ``{"balanced": True}`` (P×K batches), ``"min_per_class"``,
            ``"min_classes"``, ``"max_classes"``, ``"singletons": False``,
            ``"duplicates": False`` (no two equal rows), ``"batch_size"``
            (``n`` or ``(lo, hi)`` rows).
        reseed: reseed Python's, NumPy's and torch's global generators before
            every call of the candidate (restored afterwards), so that a
            candidate drawing from them is judged as one function; without
            it, a candidate whose value changes between two calls on one
            input is NONDETERMINISTIC.
        init_kwargs: when ``candidate`` is a class (a loss module), the
            keyword arguments of its constructor; the instance is called.
        output: the index of the candidate's value when it returns a tuple
            (``(loss, n_triplets)``: 0).
        same: the candidate's convention for pair flags: ``"bool"``
            (default), ``"int"`` or ``"float"`` 0/1, plus ``"1=different"``
            (1 marks a dissimilar pair) and ``"column"`` (shape ``[B, 1]``),
            e.g. ``"float,1=different"``.
        world_size: cross-check a *distributed* torch candidate: it runs on
            the shards of each batch (uneven, rank order) in a gloo group of
            this many CPU processes, and its value (the same on every rank)
            and each shard's gradient (``world_size`` × ∂L/∂x_r, DDP's
            convention) are compared with the reference on the whole batch;
            a disagreement names the fault (gradient × W or ÷ W, no
            gradient, shard-local mining, values differing across ranks).
            Returns a :class:`refloss.testing._distributed.DistributedReport`;
            see ``docs/distributed.md``. Batches are drawn with NumPy from
            ``seed`` and not shrunk; only ``reference_kwargs``,
            ``candidate_kwargs``, ``grad``, ``dtype``, ``max_examples``,
            ``seed``, ``name`` and ``output`` apply.
        grad_reduce: with ``world_size``: ``"sum"`` expects each shard's
            gradient to be W·∂L/∂x_r (DDP averages it), ``"mean"`` the plain
            ∂L/∂x_r.
        even_shards: with ``world_size``: equal shards only (for candidates
            built on a plain ``all_gather``, which needs equal sizes).

    A value of shape (1,) where the reference returns a scalar is compared
    as the scalar (the report notes it). A torch module that holds an input
    of the reference as a parameter (``self.centers``) is called through
    ``torch.func.functional_call`` with the drawn array in its place.

    Returns:
        A :class:`refloss.testing.Report`; ``report.agrees`` is the verdict
        and ``report.counterexample`` the shrunk input with both outputs and
        both gradients.

    A candidate that raises on a valid input is a finding (kind
    ``"raises"``, shrunk, with its own traceback frames), and the search goes
    on for value and gradient differences; ``report.findings`` lists all.

    Raises:
        ValueError, TypeError: bad arguments (an unknown reference, keyword
            or framework).
        CrosscheckError: the search could not run.

    Example::

        report = crosscheck(my_torch_batch_hard, "batch_hard_triplet_loss",
                            framework="torch", reference_kwargs={"margin": 0.2})
        print(report)
    """
    if world_size is not None:
        from ._distributed import crosscheck_distributed

        return crosscheck_distributed(
            candidate, reference, world_size=world_size, reference_kwargs=reference_kwargs,
            candidate_kwargs=candidate_kwargs, grad=grad, dtype=dtype,
            max_examples=max_examples, seed=seed, name=name, output=output,
            grad_reduce=grad_reduce, even_shards=even_shards)
    guessed = framework == "auto"
    if guessed:
        framework = detect_framework(candidate)
    _check_options(framework, dtype, grad, max_examples, seed, ties)
    if not isinstance(reseed, bool):
        raise TypeError(f"reseed: expected True or False, got {type(reseed).__name__}")

    def prepared(framework: str) -> _Setup:
        setup = _make_setup(candidate, reference, framework=framework,
                            reference_kwargs=reference_kwargs,
                            candidate_kwargs=candidate_kwargs, grad=grad, dtype=dtype,
                            ties=ties, name=name, init_kwargs=init_kwargs, output=output,
                            same=same)
        setup.domain = Domain.from_options(domain)
        setup.reseed = reseed
        _set_index_mode(setup, _example_bundle(setup))
        return setup

    setup = prepared(framework)
    if guessed and framework == "numpy":
        setup = _framework_from_first_call(setup, prepared)
    if inputs is None:
        strategy = _default_strategy(setup)
    elif not setup.domain.is_default:
        raise ValueError("domain: applies to the default inputs; with inputs= your strategy "
                         "draws the domain")
    elif isinstance(inputs, st.SearchStrategy):
        strategy = inputs.map(_as_bundle(setup))
    else:
        raise TypeError(f"inputs: expected a Hypothesis strategy, got {type(inputs).__name__}")
    stats, failing, found = _search(setup, strategy, max_examples, seed)
    with generators_restored(setup.reseed):
        if failing is not None and inputs is None:
            failing = _minimize(setup, failing)
        if failing is not None and failing.kind == "gradient":
            failing.message = cotangent_words(setup, failing) or failing.message
        if found.crash is not None and inputs is None:
            found.crash = shrink_crash(setup, found.crash)
    return _report(setup, stats, failing, seed, found)


#: how a framework's function fails on NumPy arrays: words of the message
_FAILS_ON_NUMPY = (
    ("torch", ("must be Tensor", "expected Tensor", "not numpy.ndarray", "torch")),
    ("jax", ("jax", "jnp.")),
    ("tensorflow", ("tensorflow", "tf.", "EagerTensor")),
)


def _framework_from_first_call(setup: _Setup, prepared: Callable[[str], _Setup]) -> _Setup:
    """A candidate guessed to be NumPy's, called once on NumPy arrays: when it
    fails as another framework's function does, the setup of that framework
    (if installed) with a note; else the same setup with a note saying which
    ``framework=`` to pass."""
    bundle = _arrays(setup, _example_bundle(setup), setup.dtype)
    try:
        with generators_restored(setup.reseed):
            _call_candidate(setup, bundle, with_grad=False)
        return setup
    except _CandidateFailure as failure:
        found = _framework_of_failure(failure.__cause__, failure.message)
        what = failure.message
    if found is None:
        return setup
    try:
        other = prepared(found)
    except (ImportError, ValueError, CrosscheckError):  # not installed here
        setup.notes.append(
            f"on NumPy arrays the candidate {what}: it looks like a {found} function, "
            f"but {found} is not installed here; pass framework={found!r} where it is")
        return setup
    other.notes.append(f"framework {found!r} inferred from the first call (on NumPy arrays "
                       f"the candidate {what}); pass framework={found!r} to say so")
    return other


def _framework_of_failure(exc: BaseException | None, message: str) -> str | None:
    """The framework whose function raised ``exc`` on NumPy input, or None."""
    if not isinstance(exc, (TypeError, AttributeError, ValueError)):
        return None
    tb = exc.__traceback__
    while tb is not None:  # raised inside a framework's own code
        path = tb.tb_frame.f_code.co_filename.replace("\\", "/")
        for name in ("torch", "jax", "tensorflow"):
            if f"/{name}/" in path:
                return name
        tb = tb.tb_next
    if isinstance(exc, AttributeError) and "'numpy.ndarray' object has no attribute" in message:
        attr = message.rsplit(" ", 1)[-1].strip("'")
        owners = [name for name in ("torch", "jax", "tensorflow")
                  if _array_has(name, attr)]
        return owners[0] if len(owners) == 1 else None
    for name, words in _FAILS_ON_NUMPY:
        if any(w in message for w in words):
            return name
    return None


def _array_has(framework: str, attr: str) -> bool:
    """Whether ``framework``'s array type (when installed) has ``attr``."""
    import importlib
    import importlib.util

    if importlib.util.find_spec(framework) is None:
        return False
    if framework == "torch":
        return hasattr(importlib.import_module("torch").Tensor, attr)
    if framework == "jax":
        return hasattr(importlib.import_module("jax").Array, attr)
    return hasattr(importlib.import_module("tensorflow").Tensor, attr)


def _set_index_mode(setup: _Setup, bundle: Mapping) -> None:
    """Index outputs (a miner's triplets) are compared as sets, without gradients."""
    try:
        first, _ = _run_reference(setup, _arrays(setup, bundle, "float64"), with_grad=False)
    except _ReferenceFailure as exc:
        raise ValueError(f"reference_kwargs: reference {exc}") from None
    setup.index_mode = len(first) > 1 and all(_is_index(a) for a in first)
    setup.scalar_reference = first[0].shape == ()
    if setup.index_mode:
        setup.grad = False


def assert_matches(candidate: Callable, reference: Callable | str, **kwargs: Any) -> Report:
    """:func:`crosscheck`, raising AssertionError with the report when the
    candidate disagrees (for use inside a test); returns the report otherwise.

    Example::

        def test_my_loss():
            assert_matches(my_loss, "batch_all_triplet_loss", framework="torch")
    """
    report = crosscheck(candidate, reference, **kwargs)
    if not report.agrees:
        raise AssertionError(f"{report.summary()}\n\n{report}")
    return report


def replay(path: str | os.PathLike, *, candidate: Callable | None = None,
           reference: Callable | str | None = None) -> Report:
    """Run a saved counterexample again (see :meth:`Report.save`).

    The candidate is re-imported from the name saved with it (a
    ``module:function`` or a ``known:`` entry) unless given; so is the
    reference. The report's verdict says whether they still disagree on that
    input (``examples`` is 1).
    """
    cx, meta = load_counterexample(path)
    if candidate is None:
        spec = meta.get("candidate_spec")
        if not spec:
            raise ValueError(
                f"replay: {os.fspath(path)!r} was saved from a candidate that cannot be "
                f"imported by name ({meta.get('candidate')}); pass candidate="
            )
        candidate = load_candidate(spec, meta.get("init_kwargs") or None)
    if reference is None:
        reference = meta.get("reference")
    framework = meta.get("framework", "numpy")
    dtype = meta.get("dtype", "float64")
    _check_options(framework, dtype, True, 1, 0, None)
    setup = _make_setup(
        candidate, reference, framework=framework,
        reference_kwargs=meta.get("reference_kwargs") or {},
        candidate_kwargs=meta.get("candidate_kwargs") or {},
        grad=bool(meta.get("grad", True)), dtype=dtype, ties=meta.get("ties"),
        name=meta.get("candidate"), output=meta.get("output"), same=meta.get("same"),
    )
    missing = [r for r in setup.ref_roles if r not in cx.inputs]
    if missing:
        raise ValueError(
            f"replay: {os.fspath(path)!r} holds inputs {sorted(cx.inputs)}, but "
            f"{setup.ref_name} needs {setup.ref_roles}"
        )
    _set_index_mode(setup, cx.inputs)
    stats = _Stats()
    found = _Found()
    outcome = None
    try:
        outcome = _evaluate(setup, cx.inputs, cx.rng_seed)
    except _CandidateFailure as exc:
        found.crash = crash_event(exc, _arrays(setup, cx.inputs, setup.dtype), cx.rng_seed)
    except _ReferenceFailure as exc:
        raise CrosscheckError(f"reference {exc}") from None
    if outcome is not None:
        stats.add(outcome)
    failing = None if outcome is None or outcome.agree else outcome
    report = _report(setup, stats, failing, meta.get("seed"), found)
    report.meta["replayed_from"] = os.fspath(path)
    return report
