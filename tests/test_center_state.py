"""State that does not rot: RunningCenters and the torch CenterLoss (issue 10).

Each test is one property of the stored state: no autograd graph kept, a
wide accumulator whatever the centers' dtype, counts that never wrap, state
arrays checked before they are adopted, tracers refused, pickling and deep
copies, and no update lost to concurrent threads. Oracles are plain
integers and NumPy sums of exactly representable values, so every expected
state is exact.
"""

from __future__ import annotations

import copy
import pickle
import sys
import threading

import numpy as np
import pytest
from array_api_compat import device
from helpers import to_numpy as _to_numpy

import refloss as rl

C, D = 3, 2


def to_numpy(a):
    """helpers.to_numpy, with torch bfloat16 widened first (NumPy has no bfloat16)."""
    if type(a).__module__.startswith("torch") and str(a.dtype) == "torch.bfloat16":
        a = a.float()
    return _to_numpy(a)


def snapshot(rc):
    """Everything observable, arrays as (dtype name, shape, bytes)."""
    def exact(a):
        a = to_numpy(a)
        return (str(a.dtype), a.shape, a.tobytes())

    state = rc.state_dict()
    out = {k: exact(v) if k in ("centers", "sums", "counts") else v for k, v in state.items()}
    out["centers_attr"] = exact(rc.centers)
    return out


def fed(rule="mean", like=None):
    """A NumPy float64 RunningCenters after one batch of small integers."""
    like = np.zeros(1) if like is None else like
    rc = rl.RunningCenters(C, D, rule=rule, alpha=0.5, like=like)
    rc.update(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), np.array([0, 0, 2]))
    return rc


# --------------------------------------------------------------------------
# autograd: nothing of the graph is stored


@pytest.mark.parametrize("rule", ["wen", "ema", "mean"])
def test_running_centers_keep_no_graph_across_training_steps(rule):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, D, dtype=torch.float64)
    inputs = torch.randn(8, 4, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    rc = rl.RunningCenters(C, D, rule=rule, like=inputs)
    for _ in range(3):
        features = layer(inputs)
        loss = ((features - rc.centers[labels]) ** 2).sum()
        loss.backward()  # the second step failed: the centers held step 1's freed graph
        rc.update(features, labels)
        rc.update_from_stats(*rl.center_stats(2 * features, labels, C))
        stored = [rc.centers, rc.counts, *rc.state_dict().values()]
        assert all(not t.requires_grad and t.grad_fn is None
                   for t in stored if isinstance(t, torch.Tensor))


def test_running_centers_init_that_requires_grad_is_not_stored_with_its_graph():
    torch = pytest.importorskip("torch")
    init = torch.ones((C, D), dtype=torch.float64, requires_grad=True) * 2.0
    rc = rl.RunningCenters(C, D, init=init)
    assert not rc.centers.requires_grad and rc.centers.grad_fn is None


# --------------------------------------------------------------------------
# a wide accumulator whatever the centers' dtype


def half_backends():
    out = [("numpy", "float16")]
    try:
        import torch  # noqa: F401

        out += [("torch", "float16"), ("torch", "bfloat16")]
    except ImportError:
        pass
    return out


def make(lib, dtype_name, values):
    if lib == "numpy":
        return np.asarray(values, dtype=dtype_name)
    import torch

    return torch.tensor(np.asarray(values, dtype=np.float64), dtype=getattr(torch, dtype_name))


def int_labels(lib, values):
    if lib == "numpy":
        return np.asarray(values)
    import torch

    return torch.tensor(values)


@pytest.mark.parametrize(("lib", "dtype_name"), half_backends())
def test_half_precision_running_mean_of_ones_stays_one(lib, dtype_name):
    # bfloat16 sums stall at 256 (256 + 1 rounds back); float16 sums of 3
    # per batch stop being exact past 2048
    rows, steps = (1, 300) if dtype_name == "bfloat16" else (3, 700)
    x, labels = make(lib, dtype_name, np.ones((rows, D))), int_labels(lib, [0] * rows)
    rc = rl.RunningCenters(C, D, rule="mean", like=x)
    for _ in range(steps):
        rc.update(x, labels)
    assert to_numpy(rc.counts).tolist() == [steps * rows, 0, 0]
    np.testing.assert_array_equal(to_numpy(rc.state_dict()["sums"])[0], [steps * rows] * D)
    np.testing.assert_array_equal(to_numpy(rc.centers)[0], [1.0, 1.0])
    assert rc.centers.dtype == x.dtype


@pytest.mark.parametrize(("lib", "dtype_name"), [b for b in half_backends() if b[1] == "float16"])
def test_float16_sums_do_not_overflow_and_the_state_reloads(lib, dtype_name):
    big = 60000.0  # finite in float16; twice it overflows
    x, labels = make(lib, dtype_name, [[big, -big]]), int_labels(lib, [1])
    rc = rl.RunningCenters(C, D, rule="mean", like=x)
    for _ in range(4):
        rc.update(x, labels)
    expected = to_numpy(x).astype(np.float64)[0]
    np.testing.assert_array_equal(to_numpy(rc.state_dict()["sums"])[1], 4 * expected)
    np.testing.assert_array_equal(to_numpy(rc.centers)[1], expected)
    other = rl.RunningCenters(C, D, rule="mean", like=x)
    other.load_state_dict(rc.state_dict())
    assert snapshot(other) == snapshot(rc)
    rc.update(x, labels)  # still updatable
    assert to_numpy(rc.counts).tolist() == [0, 5, 0]


@pytest.mark.parametrize(("lib", "dtype_name"), half_backends())
def test_accumulator_is_float32_for_half_centers_and_old_half_states_load(lib, dtype_name):
    x = make(lib, dtype_name, np.zeros((1, D)))
    rc = rl.RunningCenters(C, D, rule="mean", like=x)
    state = rc.state_dict()
    assert str(state["sums"].dtype).endswith("float32")
    assert state["centers"].dtype == x.dtype
    # a state written before the accumulator was widened: sums in the centers' dtype
    old = {**state, "sums": make(lib, dtype_name, [[0.5, 3.0], [0.0, 0.0], [7.0, 1.0]]),
           "counts": int_labels(lib, [1, 0, 2])}
    rc.load_state_dict(old)
    np.testing.assert_array_equal(to_numpy(rc.state_dict()["sums"]),
                                  [[0.5, 3.0], [0.0, 0.0], [7.0, 1.0]])


@pytest.mark.parametrize(("dtype", "acc"), [("float32", "float32"), ("float64", "float64")])
def test_accumulator_of_full_precision_centers_is_their_dtype(dtype, acc):
    rc = rl.RunningCenters(C, D, like=np.zeros(1, dtype=dtype))
    assert rc.state_dict()["sums"].dtype == np.dtype(acc)
    assert rc.state_dict()["counts"].dtype == np.int64


# --------------------------------------------------------------------------
# counts never wrap; state arrays are checked; state unchanged on error


def _uint64_counts(lib, values):
    if lib == "numpy":
        return np.asarray(values, dtype=np.uint64)
    torch = pytest.importorskip("torch")
    return torch.tensor(np.asarray(values, dtype=np.uint64).astype(np.int64)).to(torch.uint64)


def _stats_like(lib, rc):
    if lib == "numpy":
        return np.zeros((C, D))
    torch = pytest.importorskip("torch")
    return torch.zeros((C, D), dtype=torch.float64)


def _rc(lib, rule="mean"):
    if lib == "numpy":
        return fed(rule)
    pytest.importorskip("torch")
    return _torch_fed(rule)


def _torch_fed(rule):
    import torch

    rc = rl.RunningCenters(C, D, rule=rule, alpha=0.5, like=torch.zeros(1, dtype=torch.float64))
    rc.update(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=torch.float64),
              torch.tensor([0, 0, 2]))
    return rc


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_uint64_counts_in_range_are_accepted(lib):
    rc = _rc(lib)
    rc.update_from_stats(_stats_like(lib, rc), _uint64_counts(lib, [1, 2, 0]))
    assert to_numpy(rc.counts).tolist() == [3, 2, 1]
    new = rl.update_centers_from_stats(rc.centers, _stats_like(lib, rc),
                                       _uint64_counts(lib, [1, 0, 0]), rule="ema", alpha=1.0)
    np.testing.assert_array_equal(to_numpy(new)[0], [0.0, 0.0])


@pytest.mark.parametrize("lib", ["numpy", "torch"])
@pytest.mark.parametrize("kind", ["uint64 2**63", "float 1e19"])
def test_counts_at_or_above_2_63_raise_and_change_nothing(lib, kind):
    rc = _rc(lib)
    before = snapshot(rc)
    if kind == "uint64 2**63":
        counts = _uint64_counts(lib, [0, 2**63, 0])
    else:
        counts = _stats_like(lib, rc)[:, 0] + np.float64(1e19)
    with pytest.raises(ValueError, match=r"^counts: expected counts below 2\*\*63"):
        rc.update_from_stats(_stats_like(lib, rc), counts)
    assert snapshot(rc) == before


def test_a_running_count_total_past_int64_raises_and_changes_nothing():
    rc = fed()
    state = rc.state_dict()
    state["counts"] = np.array([2**63 - 1, 0, 1], dtype=np.int64)
    rc.load_state_dict(state)
    before = snapshot(rc)
    with pytest.raises(ValueError, match=r"^labels: expected counts whose running total"):
        rc.update(np.ones((1, D)), np.array([0]))
    with pytest.raises(ValueError, match=r"^counts: expected counts whose running total"):
        rc.update_from_stats(np.zeros((C, D)), np.array([1, 0, 0]))
    assert snapshot(rc) == before


def test_sums_that_would_overflow_the_accumulator_raise_and_change_nothing():
    rc = rl.RunningCenters(C, D, rule="mean", like=np.zeros(1, dtype=np.float32))
    big = np.full((1, D), 3e38, dtype=np.float32)
    rc.update(big, np.array([0]))
    before = snapshot(rc)
    with pytest.raises(ValueError, match=r"^x: expected values whose running sums .* stay finite"):
        rc.update(big, np.array([0]))
    assert snapshot(rc) == before


def _bad_state(case):
    rc = fed()
    state = rc.state_dict()
    if case == "fractional counts":
        state["counts"] = [1.5, 0.0, 1.0]
    elif case == "float counts":
        state["counts"] = np.array([1.5, 0.0, 1.0])
    elif case == "uint64 counts >= 2**63":
        state["counts"] = np.array([2**63, 0, 1], dtype=np.uint64)
    elif case == "complex centers":
        state["centers"] = state["centers"] + 1j
    elif case == "complex sums":
        state["sums"] = state["sums"] + 0j
    elif case == "centers of another library":
        torch = pytest.importorskip("torch")
        state["centers"] = torch.zeros((C, D), dtype=torch.float64)
    elif case == "counts as a list":
        state["counts"] = [1, 0, 1]
    return rc, state


BAD_STATES = {
    "fractional counts": (TypeError, r"^state\['counts'\]: expected an array of the library"),
    "counts as a list": (TypeError, r"^state\['counts'\]: expected an array of the library"),
    "float counts": (TypeError, r"^state\['counts'\]: expected an integer dtype, got float64"),
    "uint64 counts >= 2**63": (ValueError, r"^state\['counts'\]: expected counts below 2\*\*63"),
    "complex centers": (TypeError, r"^state\['centers'\]: expected a real floating dtype"),
    "complex sums": (TypeError, r"^state\['sums'\]: expected a real floating dtype"),
    "centers of another library": (
        TypeError, r"^state\['centers'\]: expected an array of the library of the centers \(numpy\)"
    ),
}


@pytest.mark.parametrize("case", list(BAD_STATES))
def test_a_state_that_does_not_fit_raises_and_changes_nothing(case):
    rc, state = _bad_state(case)
    if case != "centers of another library":
        state["centers"] = state["centers"] + 5.0  # would change the state if adopted
    before = snapshot(rc)
    kind, message = BAD_STATES[case]
    with pytest.raises(kind, match=message):
        rc.load_state_dict(state)
    assert snapshot(rc) == before


@pytest.mark.parametrize("method", ["update", "update_from_stats", "load_state_dict"])
def test_updates_inside_jax_jit_are_refused_and_change_nothing(method):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    rc = rl.RunningCenters(C, D, rule="mean", like=jnp.zeros(1))
    before = snapshot(rc)

    def traced(x):
        if method == "update":
            rc.update(x, jnp.array([0, 1]))
        elif method == "update_from_stats":
            rc.update_from_stats(jnp.zeros((C, D)) + x[0, 0], jnp.array([1, 0, 0]))
        else:
            rc.load_state_dict({**rc.state_dict(), "centers": jnp.zeros((C, D)) + x[0, 0]})
        return x

    with pytest.raises(TypeError, match=r"^(x|sums|state\['centers'\]): expected a concrete array"):
        jax.jit(traced)(jnp.ones((2, D)))
    assert snapshot(rc) == before


# --------------------------------------------------------------------------
# pickling and deep copies


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_running_centers_pickle_and_deepcopy_round_trip(backend, how):
    like = backend.asarray(np.zeros(1))
    rc = rl.RunningCenters(C, D, rule="wen", alpha=0.25, like=like)
    x = backend.asarray(np.array([[1.0, 2.0], [3.0, 5.0]]))
    labels = backend.asarray(np.array([0, 2]))
    rc.update(x, labels)
    twin = pickle.loads(pickle.dumps(rc)) if how == "pickle" else copy.deepcopy(rc)
    assert snapshot(twin) == snapshot(rc)
    assert device(twin.centers) == device(rc.centers) == backend.device
    assert (twin.rule, twin.alpha) == ("wen", 0.25)
    # both go on alike, independently: the twin has its own namespace and lock
    np.testing.assert_array_equal(to_numpy(twin.update(x, labels)),
                                  to_numpy(rc.update(x, labels)))
    assert snapshot(twin) == snapshot(rc)
    twin.update(x, labels)
    assert to_numpy(twin.counts).tolist() == [3, 0, 3] and to_numpy(rc.counts).tolist() == [2, 0, 2]


# --------------------------------------------------------------------------
# threads


def hammer(update, threads=4, per_thread=60):
    """Run ``update`` from several threads with the GIL switching as often as it can."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    errors = []

    def work():
        try:
            for _ in range(per_thread):
                update()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    try:
        workers = [threading.Thread(target=work) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors
    return threads * per_thread


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_concurrent_updates_lose_no_sample(lib):
    rows = np.array([[1.0, 2.0], [3.0, 4.0], [0.0, 1.0], [2.0, 2.0]])
    labels = [0, 1, 1, 2]
    if lib == "numpy":
        rc = rl.RunningCenters(C, D, rule="mean")
        x, y = rows, np.array(labels)
    else:
        torch = pytest.importorskip("torch")
        x, y = torch.tensor(rows), torch.tensor(labels)
        rc = rl.RunningCenters(C, D, rule="mean", like=x)
    calls = hammer(lambda: rc.update(x, y), per_thread=200)
    assert to_numpy(rc.counts).tolist() == [calls, 2 * calls, calls]
    np.testing.assert_array_equal(to_numpy(rc.state_dict()["sums"]),
                                  calls * np.array([[1.0, 2.0], [3.0, 5.0], [2.0, 2.0]]))


# --------------------------------------------------------------------------
# the torch CenterLoss


def _torch():
    torch = pytest.importorskip("torch")
    rt = pytest.importorskip("refloss.adapters.torch")
    return torch, rt


def test_center_loss_training_loop_keeps_no_graph():
    torch, rt = _torch()
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, D)
    inputs, labels = torch.randn(8, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    center = rt.CenterLoss(C, D, rule="mean")
    for _ in range(3):
        features = layer(inputs)
        center(features, labels).backward()
        center.update(features, labels)
        center.update_from_stats(*rl.center_stats(features, labels, C))
    assert all(not b.requires_grad and b.grad_fn is None for b in center.buffers())


def test_center_loss_works_under_cpu_autocast():
    torch, rt = _torch()
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, D)
    inputs, labels = torch.randn(8, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    center = rt.CenterLoss(C, D, rule="mean", init=torch.randn(C, D))
    reference = rt.CenterLoss(C, D, rule="mean", init=center.centers.clone())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = layer(inputs)
        loss = center(features, labels)
    assert features.dtype == torch.bfloat16 and loss.dtype == torch.float32
    (grad,) = torch.autograd.grad(loss, features)
    wide = features.detach().float().requires_grad_()
    expected = reference(wide, labels)
    assert torch.equal(loss.detach(), expected.detach())
    (grad_wide,) = torch.autograd.grad(expected, wide)
    assert grad.dtype == torch.bfloat16 and torch.equal(grad, grad_wide.bfloat16())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        center.update(features, labels)  # inside the region
    center.update(features, labels)      # and after it, with the bfloat16 features
    for _ in range(2):
        reference.update(wide.detach(), labels)
    for name in ("centers", "sums", "counts"):
        assert torch.equal(getattr(center, name), getattr(reference, name)), name


def test_center_gradient_is_the_same_inside_and_outside_autocast():
    torch, rt = _torch()
    torch.manual_seed(1)
    center = rt.CenterLoss(C, D, learn_centers=True, init=torch.randn(C, D))
    x, labels = torch.randn(16, D), torch.randint(0, C, (16,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = torch.autograd.grad(center(x, labels), center.centers)[0]
    outside = torch.autograd.grad(center(x, labels), center.centers)[0]
    assert torch.equal(inside, outside)


def test_half_module_keeps_float32_sums_and_a_growing_mean():
    torch, rt = _torch()
    center = rt.CenterLoss(C, D, rule="mean")
    center.update(torch.tensor([[0.1, 0.3]]), torch.tensor([0]))
    sums = center.sums.clone()
    center.bfloat16()
    assert center.centers.dtype == torch.bfloat16 and center.sums.dtype == torch.float32
    assert torch.equal(center.sums, sums)  # not rounded through bfloat16
    center = rt.CenterLoss(C, D, rule="mean", dtype=torch.bfloat16)
    assert center.sums.dtype == torch.float32 and center.counts.dtype == torch.int64
    ones = torch.ones((1, D), dtype=torch.bfloat16)
    for _ in range(300):  # bfloat16 sums stalled at 256
        center.update(ones, torch.tensor([1]))
    assert center.sums[1].tolist() == [300.0, 300.0] and center.centers[1].tolist() == [1.0, 1.0]
    # a checkpoint from before the wide accumulator: sums in bfloat16
    old = {**center.state_dict(), "sums": torch.full((C, D), 0.5, dtype=torch.bfloat16),
           "counts": torch.tensor([1, 1, 1])}
    center.load_state_dict(old)
    assert center.sums.dtype == torch.float32 and bool((center.sums == 0.5).all())


def test_center_loss_concurrent_updates_lose_no_sample_and_the_module_copies():
    torch, rt = _torch()
    center = rt.CenterLoss(C, D, rule="mean", dtype=torch.float64)
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    labels = torch.tensor([0, 2])
    calls = hammer(lambda: center.update(x, labels), per_thread=30)
    assert center.counts.tolist() == [calls, 0, calls]
    for twin in (copy.deepcopy(center), pickle.loads(pickle.dumps(center))):
        twin.update(x, labels)
        assert twin.counts.tolist() == [calls + 1, 0, calls + 1]
    assert center.counts.tolist() == [calls, 0, calls]
