"""Soak: many random inputs through every public loss and distance, on every backend.

Four properties, each over every metric, reduction (``"none"`` with a random
cotangent) and option that changes the math (soft, swap, normalize, power,
pos_margin):

(a) finite input gives a finite value and finite gradients, in the caller's
    namespace, on its device, in its dtype — float32 and float64, with exact
    duplicates, zero rows, near-duplicates, common offsets and scales across
    the dtype's range (as far as the true value and gradient are
    representable); distances also match a brute-force oracle at every scale;
(b) float64 analytic gradients equal central finite differences along random
    unit directions, on inputs the oracle finds away from every kink; the
    value equals the oracle's;
(c) NumPy and torch agree (value, gradient, mined triplets) in float64 on
    continuous data;
(d) bit-identical rows give bit-identical distances to every other row, and
    the miners pick the same triplets on every backend (the oracle's, in
    float64).

Oracles are the brute-force transcriptions in ``helpers.py``. Budget: under
``HYPOTHESIS_PROFILE=soak`` each test checks ``SOAK_EXAMPLES[test]`` examples
(per function where it is parametrised by one) times ``REFLOSS_SOAK_SCALE``
times the backend's ``BACKEND_SHARE`` — 103,264 in all with the five CPU
backends — and the session ends with a table of the examples checked. Under
every other profile each test runs ``SMOKE_EXAMPLES`` examples (JAX skipped),
so CI exercises the soak's code for a few seconds and it cannot rot. See
docs/testing.md, "Soak".
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import array_api_compat.numpy
import numpy as np
import pytest
from array_api_compat import array_namespace
from array_api_compat import device as array_device
from conftest import REDUCED_EXAMPLES, Backend
from helpers import oracle_loss, oracle_mine, oracle_pairwise, oracle_unit, to_numpy
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import refloss as rl

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "dev")
SOAK = PROFILE == "soak"
SCALE = float(os.environ.get("REFLOSS_SOAK_SCALE", "1"))
SMOKE_EXAMPLES = 2

# examples per test (and per function where a test is parametrised by one)
# under the soak profile, before BACKEND_SHARE; see soak_budget() for the total
SOAK_EXAMPLES = {
    "finite": 2000,  # x 7 losses
    "distances": 4000,
    "finite_differences": 1200,  # x 7 losses + 2 distances
    "numpy_equals_torch": 2800,  # x 9 functions, one NumPy/torch pair each
    "duplicates": 4000,
}
# The share of SOAK_EXAMPLES each backend checks. array-api-strict runs
# NumPy's code paths through a pure-Python wrapper, 3-5x slower; what it adds
# (the standard alone, and on device1 every array created on the right
# device) shows in a few hundred examples. JAX compiles each operation anew
# per shape and per data-dependent size (~10 s per new shape here).
BACKEND_SHARE = {"numpy": 1.0, "torch": 1.0, "array_api_strict": 0.25,
                 "array_api_strict:device1": 0.1, "jax": 0.03}
HEALTH = [HealthCheck.too_slow, HealthCheck.differing_executors, HealthCheck.filter_too_much]

LOSSES = [
    "center_loss",
    "contrastive_loss",
    "contrastive_loss_all_pairs",
    "triplet_margin_loss",
    "batch_all_triplet_loss",
    "batch_hard_triplet_loss",
    "semihard_triplet_loss",
]
DISTANCES = ["pairwise_distances", "paired_distances"]
LABELED = {"batch_all_triplet_loss", "batch_hard_triplet_loss", "semihard_triplet_loss"}
METRICS = ["euclidean", "sqeuclidean", "cosine"]
REDUCTIONS = ["none", "sum", "mean", "mean_nonzero"]
KINK = 1e-4  # finite differences (h = 1e-6) keep this far from every kink
MAX_EXP = {"float64": 308, "float32": 38}
MIN_EXP = {"float64": -307, "float32": -37}


def quota(test: str, backend: str) -> int:
    """Examples ``backend`` checks for ``test`` (per function) under the soak."""
    return max(1, round(SOAK_EXAMPLES[test] * SCALE * BACKEND_SHARE.get(backend, 1.0)))


def soak_budget(backends=("numpy", "torch", "array_api_strict", "array_api_strict:device1",
                          "jax")) -> int:
    """The soak's planned total over ``backends`` (the five CPU ones by default)."""
    functions = {"finite": len(LOSSES), "distances": 1,
                 "finite_differences": len(LOSSES) + len(DISTANCES), "duplicates": 1}
    total = sum(quota(t, b) * n for t, n in functions.items() for b in backends)
    return total + quota("numpy_equals_torch", "numpy") * (len(LOSSES) + len(DISTANCES))


def skip_jax_outside_the_soak(backend) -> None:
    """Outside the soak, JAX's per-shape compiles would cost ~20 s for paths
    the rest of the suite already runs on JAX."""
    if not SOAK and backend.name == "jax":
        pytest.skip("JAX runs the soak only under HYPOTHESIS_PROFILE=soak")


def soak_settings(test: str):
    """Hypothesis settings of a soak test; under the soak, max_examples is set
    per backend when the test runs (_Quota below)."""

    def mark(fn):
        fn = settings(max_examples=SMOKE_EXAMPLES, suppress_health_check=HEALTH)(fn)
        fn._refloss_soak_test = test
        return fn

    return mark


class _Quota:
    """Sets each soak test's max_examples to its backend's quota, the way
    conftest gives JAX a third (this wrapper runs outside conftest's, which
    then divides by REDUCED_EXAMPLES: multiply first)."""

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        fn = getattr(item, "obj", None)
        test = getattr(fn, "_refloss_soak_test", None)
        if test is None:
            yield
            return
        params = getattr(getattr(item, "callspec", None), "params", {})
        backend = params.get("backend", "numpy")
        current = fn._hypothesis_internal_use_settings
        n = quota(test, backend) * REDUCED_EXAMPLES.get(backend, 1)
        fn._hypothesis_internal_use_settings = settings(current, max_examples=n)
        try:
            yield
        finally:
            fn._hypothesis_internal_use_settings = current


# --------------------------------------------------------------------------
# the example count: every test body that reaches its end adds one, and the
# session ends with a table (and, with REFLOSS_SOAK_REPORT=path, a JSON file)

_COUNTS: Counter = Counter()
_SECONDS: Counter = Counter()


@contextmanager
def checked(key: str, backend: str):
    """Counts an example that ran to the end, and the time its body took."""
    started = time.perf_counter()
    yield
    _COUNTS[(key, backend)] += 1
    _SECONDS[(key, backend)] += time.perf_counter() - started


class _Summary:
    def pytest_terminal_summary(self, terminalreporter):
        if not _COUNTS:
            return
        tr = terminalreporter
        tr.section(f"refloss soak: examples checked (profile {PROFILE}, scale {SCALE:g})")
        rows = sorted(_COUNTS)
        for key in rows:
            n, s = _COUNTS[key], _SECONDS[key]
            tr.write_line(f"{key[0]:<42} {key[1]:<25} {n:>7} {1e3 * s / n:8.2f} ms/example")
        total, seconds = sum(_COUNTS.values()), sum(_SECONDS.values())
        tr.write_line(f"{'total':<42} {'':<25} {total:>7} {1e3 * seconds / total:8.2f} ms/example")
        tr.write_line(f"planned with the five CPU backends: {soak_budget()}; body time "
                      f"{seconds:.0f} s")
        path = os.environ.get("REFLOSS_SOAK_REPORT")
        if path:
            with open(path, "w") as fh:
                json.dump({"profile": PROFILE, "scale": SCALE, "total": total,
                           "planned": soak_budget(), "body_seconds": seconds,
                           "tests": [{"test": k[0], "backend": k[1], "examples": _COUNTS[k],
                                      "body_seconds": _SECONDS[k]} for k in rows]},
                          fh, indent=1)


@pytest.fixture(scope="module", autouse=True)
def _soak_summary(request):
    pm = request.config.pluginmanager
    if SOAK and not pm.has_plugin("refloss-soak-quota"):
        pm.register(_Quota(), "refloss-soak-quota")
    if (SOAK or os.environ.get("REFLOSS_SOAK_REPORT")) and not pm.has_plugin(
            "refloss-soak-summary"):
        pm.register(_Summary(), "refloss-soak-summary")
    yield


# --------------------------------------------------------------------------
# cases: a function, its positional arguments (NumPy) and its options


@dataclass
class Case:
    name: str
    args: list  # NumPy arrays: floating arguments, labels, same flags
    opts: dict = field(default_factory=dict)

    @property
    def fn(self):
        return getattr(rl, self.name)

    @property
    def floats(self) -> list:
        return [i for i, a in enumerate(self.args) if a.dtype.kind == "f"]

    @property
    def aux(self):
        others = [a for a in self.args if a.dtype.kind != "f"]
        return others[0] if others else None

    def oracle(self):
        return oracle_loss(self.name, [self.args[i] for i in self.floats], self.aux, self.opts)


def scale_power(name: str, opts: dict) -> int:
    """How the largest true quantity (value or gradient) grows with the input's scale."""
    metric = 0 if opts.get("normalize") or opts.get("metric") == "cosine" else (
        2 if opts.get("metric") == "sqeuclidean" else 1)
    if name == "center_loss":
        return 2
    if name.startswith("contrastive"):
        return metric * opts["power"]
    return metric


def wild_pool(rng: np.random.Generator, rows: int, dim: int, dtype: str, exp: int,
              offset: float) -> np.ndarray:
    """Rows that break GEMM distances: exact duplicates, near-duplicates,
    zero rows, a common offset, all scaled by 10**exp, in ``dtype``."""
    base = rng.normal(size=(rows, dim))
    for i in range(1, rows):
        kind = rng.choice(4, p=[0.5, 0.3, 0.1, 0.1])
        j = rng.integers(0, i)
        if kind == 1:
            base[i] = base[j]
        elif kind == 2:
            base[i] = base[j] * (1 + 10.0 ** -rng.integers(3, 10) * rng.normal(size=dim))
    base = base + offset * rng.normal(size=dim)
    for i in range(rows):
        if rng.random() < 0.08:
            base[i] = 0.0
    return (base * 10.0**exp).astype(dtype)


@st.composite
def cases(draw, name: str, regime: str, dtype: str = "float64", fixed: bool = False):
    """``regime`` "wild" (property a) or "smooth" (b, c: continuous N(0, 1) data);
    ``fixed``: one shape per function (JAX compiles every op anew for each shape)."""
    opts: dict = {}
    if name in DISTANCES:
        opts["metric"] = draw(st.sampled_from(METRICS))
    elif name != "center_loss":
        opts["metric"] = draw(st.sampled_from(METRICS))
        opts["normalize"] = draw(st.booleans())
        opts["margin"] = draw(st.sampled_from([0.0, 0.2, 1.0, 2.5]))
        if name.startswith("contrastive"):
            opts["power"] = draw(st.sampled_from([1, 2]))
            opts["pos_margin"] = draw(st.sampled_from([0.0, 0.25, 1.0]))
        if name in ("triplet_margin_loss", "batch_all_triplet_loss", "batch_hard_triplet_loss"):
            opts["soft"] = draw(st.booleans())
        if name == "triplet_margin_loss":
            opts["swap"] = draw(st.booleans())
    reductions = ["none", "sum", "mean"] if name == "center_loss" else REDUCTIONS
    if name not in DISTANCES:
        opts["reduction"] = draw(st.sampled_from(reductions))
    angular = opts.get("metric") == "cosine" or opts.get("normalize", False)
    labeled = name in LABELED or name == "contrastive_loss_all_pairs"
    if fixed:
        dim, rows = 3, 6 if labeled else 4
    else:
        dim = draw(st.integers(2 if angular and regime == "smooth" else 1, 4))
        rows = draw(st.integers(2 if labeled else 1, 8 if labeled else 5))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)

    if regime == "smooth":
        def pool(n):
            return rng.normal(size=(n, dim))
    else:
        power = scale_power(name, opts)
        hi = (MAX_EXP[dtype] - 11) // max(power, 1)
        exp = draw(st.integers(MIN_EXP[dtype] + 8, hi))
        offset = draw(st.sampled_from([0.0, 1.0, 1e4]))

        def pool(n):
            src = wild_pool(rng, 2 * n, dim, dtype, exp, offset)
            return src[rng.integers(0, 2 * n, size=n)]

    classes = draw(st.integers(1, 4))
    if name == "pairwise_distances":
        args = [pool(rows)]
        if draw(st.booleans()):
            args.append(pool(3 if fixed else draw(st.integers(1, 5))))
    elif name in ("paired_distances", "contrastive_loss"):
        both = pool(2 * rows)
        args = [both[:rows], both[rows:]]
        if name == "contrastive_loss":
            args.append(rng.random(rows) < 0.5)
    elif name == "triplet_margin_loss":
        three = pool(3 * rows)
        args = [three[:rows], three[rows:2 * rows], three[2 * rows:]]
    elif name == "center_loss":
        both = pool(rows + classes)
        args = [both[:rows], rng.integers(0, classes, size=rows), both[rows:]]
    else:
        args = [pool(rows), rng.integers(0, classes, size=rows)]
    return Case(name, args, opts)


# --------------------------------------------------------------------------
# calling refloss on a backend


def on(backend, case: Case) -> list:
    return [backend.asarray(a) for a in case.args]


def cotangent(rng: np.random.Generator, value: Any, backend) -> Any:
    """A random upstream gradient: an array shaped like a non-scalar value, else a number."""
    if value.ndim == 0:
        return float(rng.normal())
    g = rng.normal(size=tuple(value.shape))
    return backend.xp.asarray(g, dtype=value.dtype, device=backend.device)


def check_array(a: Any, backend, dtype: Any, shape: tuple | None = None) -> np.ndarray:
    """The caller's namespace, device and dtype (and shape); returns the values."""
    assert array_namespace(a) is backend.xp, f"namespace {array_namespace(a)}"
    assert array_device(a) == backend.device, f"device {array_device(a)}"
    assert a.dtype == dtype, f"dtype {a.dtype} is not {dtype}"
    if shape is not None:
        assert tuple(a.shape) == tuple(shape), f"shape {tuple(a.shape)} is not {shape}"
    return to_numpy(a)


def value_and_grads(backend, case: Case, rng: np.random.Generator):
    """(value, cotangent as NumPy, grads of the floating arguments), all checked for
    namespace, device and dtype."""
    args = on(backend, case)
    dtype = args[case.floats[0]].dtype
    value, pullback = rl.vjp(case.fn, *args, **case.opts)
    v = check_array(value, backend, dtype)
    g = cotangent(rng, value, backend)
    grads = pullback(g)
    out = [check_array(grads[i], backend, args[i].dtype, case.args[i].shape)
           for i in case.floats]
    return v, (g if isinstance(g, float) else to_numpy(g)), out


def assert_finite(what: str, a: np.ndarray, case: Case) -> None:
    assert np.all(np.isfinite(a)), f"{what} is not finite for {case.name} {case.opts}: {a}"


# --------------------------------------------------------------------------
# (a) finite values and gradients, the caller's namespace / device / dtype


@pytest.mark.parametrize("name", LOSSES)
@soak_settings("finite")
@given(data=st.data(), dtype=st.sampled_from(["float64", "float32"]),
       seed=st.integers(0, 2**32 - 1))
def test_soak_losses_are_finite_in_the_callers_namespace(backend, name, data, dtype, seed):
    skip_jax_outside_the_soak(backend)
    with checked(f"finite[{name}]", backend.name):
        case = data.draw(cases(name, "wild", dtype, fixed=backend.name == "jax"))
        value, _, grads = value_and_grads(backend, case, np.random.default_rng(seed))
        assert_finite("value", value, case)
        for k, gr in zip(case.floats, grads):
            assert_finite(f"gradient {k}", gr, case)


@soak_settings("distances")
@given(data=st.data(), dtype=st.sampled_from(["float64", "float32"]),
       seed=st.integers(0, 2**32 - 1))
def test_soak_distances_match_the_oracle_at_every_scale(backend, data, dtype, seed):
    skip_jax_outside_the_soak(backend)
    with checked("distances", backend.name):
        name = data.draw(st.sampled_from(DISTANCES))
        case = data.draw(cases(name, "wild", dtype, fixed=backend.name == "jax"))
        value, _, grads = value_and_grads(backend, case, np.random.default_rng(seed))
        assert_finite("value", value, case)
        for k, gr in zip(case.floats, grads):
            assert_finite(f"gradient {k}", gr, case)
        expected, _ = case.oracle()
        # The accuracy distances.py states, at every scale: paired distances to a
        # few ulps; the GEMM's entries to ~1e-12 (float64) / ~1e-4 (float32)
        # relative, 10x margin kept for float64; cosine to a few ulps of 1 (the
        # scale of 1 − x̂·ŷ). Below the smallest normal number a value may be
        # flushed to 0 (XLA) or rounded there.
        eps, tiny = np.finfo(dtype).eps, np.finfo(dtype).tiny
        if name == "paired_distances":
            rtol = 16 * eps
        else:
            rtol = 1e-11 if dtype == "float64" else 1e-4
        atol = 8 * eps if case.opts["metric"] == "cosine" else 4 * tiny
        np.testing.assert_allclose(value.astype(np.float64), expected, rtol=rtol, atol=atol,
                                   err_msg=f"{name} {case.opts} {dtype}")


# --------------------------------------------------------------------------
# (b) float64 gradients against central finite differences, away from kinks


@pytest.mark.parametrize("name", LOSSES + DISTANCES)
@soak_settings("finite_differences")
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_soak_gradients_equal_finite_differences(backend, name, data, seed):
    skip_jax_outside_the_soak(backend)
    with checked(f"finite_differences[{name}]", backend.name):
        case = data.draw(cases(name, "smooth", fixed=backend.name == "jax"))
        expected, kink = case.oracle()
        assume(kink > KINK)
        rng = np.random.default_rng(seed)
        value, g, grads = value_and_grads(backend, case, rng)
        np.testing.assert_allclose(value, expected, rtol=1e-9, atol=1e-12,
                                   err_msg=f"value of {name} {case.opts}")

        def f(shift):
            args = list(case.args)
            for i, s in zip(case.floats, shift):
                args[i] = args[i] + s
            out = to_numpy(case.fn(*(backend.asarray(a) for a in args), **case.opts))
            return float(np.sum(g * out))

        h = 1e-6
        for _ in range(2):
            v = [rng.normal(size=case.args[i].shape) for i in case.floats]
            norm = math.sqrt(sum(float(np.sum(u * u)) for u in v)) or 1.0
            v = [u / norm for u in v]
            fp, fm = f([h * u for u in v]), f([-h * u for u in v])
            fd = (fp - fm) / (2 * h)
            analytic = sum(float(np.sum(gr * u)) for gr, u in zip(grads, v))
            tol = 1e-5 * max(abs(fd), abs(analytic)) + 1e-6 + 1e-8 * max(abs(fp), abs(fm))
            assert abs(fd - analytic) <= tol, (
                f"{name} {case.opts}: <grad, v> = {analytic!r}, central difference {fd!r}")


# --------------------------------------------------------------------------
# (c) NumPy = torch in float64 on continuous data, mined triplets included


def _numpy_backend():
    return Backend("numpy", array_api_compat.numpy, "cpu")


def _torch_backend():
    torch = pytest.importorskip("torch")
    import array_api_compat.torch as xtorch

    return _numpy_backend(), Backend("torch", xtorch, torch.device("cpu"))


def _mined(backend, x: np.ndarray, labels: np.ndarray, miner, metric: str, normalize: bool):
    got = miner(backend.asarray(x), backend.asarray(labels), metric=metric, normalize=normalize)
    return [check_array(t, backend, t.dtype) for t in got]


@pytest.mark.parametrize("name", LOSSES + DISTANCES)
@soak_settings("numpy_equals_torch")
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_soak_numpy_equals_torch(name, data, seed):
    with checked(f"numpy_equals_torch[{name}]", "numpy+torch"):
        np_b, torch_b = _torch_backend()
        case = data.draw(cases(name, "smooth"))
        _, kink = case.oracle()
        assume(kink > 1e-7)  # no rounding can flip a hinge, a tie or the semi-hard boundary
        vn, gn, grads_n = value_and_grads(np_b, case, np.random.default_rng(seed))
        vt, gt, grads_t = value_and_grads(torch_b, case, np.random.default_rng(seed))
        assert np.array_equal(np.asarray(gn), np.asarray(gt))
        np.testing.assert_allclose(vt, vn, rtol=1e-10, atol=1e-12, err_msg=f"{name} {case.opts}")
        for a, b in zip(grads_t, grads_n):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11, err_msg=f"{name} {case.opts}")
        if name in LABELED:
            x, labels = case.args
            for miner in (rl.mine_batch_hard, rl.mine_semihard):
                kw = {"metric": case.opts["metric"], "normalize": case.opts["normalize"]}
                tn = _mined(np_b, x, labels, miner, **kw)
                tt = _mined(torch_b, x, labels, miner, **kw)
                for a, b in zip(tt, tn):
                    np.testing.assert_array_equal(a, b, err_msg=f"{miner.__name__} {kw}")


# --------------------------------------------------------------------------
# (d) bit-identical rows tie bit-identically; every backend mines the same


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint64 if a.dtype == np.float64 else np.uint32)


def _assert_copies_tie(d: np.ndarray, groups: list, axis: int, what: str) -> None:
    """Copies (``groups`` of columns for axis 1, of rows for axis 0) are at
    bit-identical distances from every row (column)."""
    m = d if axis == 1 else d.T
    bits = _bits(m)
    for group in groups:
        ref = bits[:, group[0]]
        for j in group[1:]:
            bad = np.nonzero(bits[:, j] != ref)[0]
            side = "columns" if axis == 1 else "rows"
            assert bad.size == 0, (
                f"{what}: copies ({side}) {group[0]} and {j} are at different distances "
                f"from {bad.tolist()}: {m[bad, group[0]]!r} vs {m[bad, j]!r}")


def _groups(idx: np.ndarray) -> list:
    out = []
    for k in np.unique(idx):
        members = np.nonzero(idx == k)[0].tolist()
        if len(members) > 1:
            out.append(members)
    return out


def _distinct_values_separated(dm: np.ndarray, rtol: float) -> bool:
    """Within each row, values that are not exactly equal differ by more than rtol:
    the only ties are the exact ones (copies, zero rows under cosine)."""
    for a in range(dm.shape[0]):
        u = np.unique(np.delete(dm[a], a))
        if u.size > 1 and np.min(np.diff(u)) <= rtol * max(float(u[-1]), 1e-300):
            return False
    return True


@soak_settings("duplicates")
@given(data=st.data(), dtype=st.sampled_from(["float64", "float32"]),
       metric=st.sampled_from(METRICS), normalize=st.booleans(),
       distinct=st.integers(1, 4), rows=st.integers(2, 10), exp=st.integers(-8, 8),
       seed=st.integers(0, 2**32 - 1))
def test_soak_duplicated_rows_tie_identically(backend, data, dtype, metric, normalize, distinct,
                                              rows, exp, seed):
    skip_jax_outside_the_soak(backend)
    with checked("duplicates", backend.name):
        rng = np.random.default_rng(seed)
        angular = metric == "cosine" or normalize
        fixed = backend.name == "jax"  # one shape: JAX compiles every op anew per shape
        dim = 3 if fixed else data.draw(st.integers(2 if angular else 1, 5))
        offset = data.draw(st.sampled_from([0.0, 1.0, 1e3])) if dtype == "float64" else 0.0
        base = rng.normal(size=(distinct, dim)) + offset * rng.normal(size=dim)
        if metric == "cosine" and rng.random() < 0.2:
            # a zero row is at cosine distance exactly 1 from every row: exact ties
            # between distinct rows, by convention (after normalize=True a zero row
            # is at distance ≈ 1 from every unit row, with rounding: left out)
            base[0] = 0.0
        base = (base * 10.0**exp).astype(dtype)
        rows = 8 if fixed else max(rows, distinct + 1)
        idx = rng.integers(0, distinct, size=rows)
        x = base[idx]
        groups = _groups(idx)
        assume(groups)
        xb = backend.asarray(x)

        d = check_array(rl.pairwise_distances(xb, metric=metric), backend, xb.dtype, (rows, rows))
        _assert_copies_tie(d, groups, 1, f"pairwise_distances(x) {metric} {dtype}")
        _assert_copies_tie(d, groups, 0, f"pairwise_distances(x) {metric} {dtype}")
        for group in groups:
            if np.any(x[group[0]]) or metric != "cosine":
                assert np.all(d[np.ix_(group, group)] == 0), f"copies not at distance 0: {d}"
        perm = rng.permutation(rows)
        d2 = check_array(rl.pairwise_distances(xb, backend.asarray(x[perm]), metric=metric),
                         backend, xb.dtype, (rows, rows))
        _assert_copies_tie(d2, groups, 0, f"pairwise_distances(x, y) {metric} {dtype}")
        _assert_copies_tie(d2, _groups(idx[perm]), 1, f"pairwise_distances(x, y) {metric} {dtype}")
        # paired: identical (a_i, b_i) pairs give bit-identical distances
        pd = check_array(rl.paired_distances(xb, backend.asarray(x[perm]), metric=metric),
                         backend, xb.dtype, (rows,))
        for group in _groups(idx * distinct + idx[perm]):
            assert np.all(_bits(pd[group]) == _bits(pd[group[:1]])), (
                f"paired_distances {metric} {dtype}: identical pairs {group} give {pd[group]!r}")

        labels = rng.integers(0, data.draw(st.integers(1, 3)), size=rows)
        unit = np.array([oracle_unit(r) for r in x]).reshape(x.shape) if normalize else x
        dm = oracle_pairwise(unit, None, metric)
        assume(_distinct_values_separated(dm, 1e-9 if dtype == "float64" else 1e-4))
        np_b = _numpy_backend() if backend.name != "numpy" else None
        for miner, kind in ((rl.mine_batch_hard, "hard"), (rl.mine_semihard, "semihard")):
            got = _mined(backend, x, labels, miner, metric, normalize)
            if dtype == "float64":
                expected = np.array(oracle_mine(dm, labels, kind), dtype=np.int64).reshape(-1, 3).T
                for a, b in zip(got, expected):
                    np.testing.assert_array_equal(a, b, err_msg=f"{miner.__name__} vs the oracle")
            if np_b is not None:
                for a, b in zip(got, _mined(np_b, x, labels, miner, metric, normalize)):
                    np.testing.assert_array_equal(a, b, err_msg=f"{miner.__name__} vs NumPy")
