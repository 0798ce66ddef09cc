"""The PyTorch adapter, refloss.adapters.torch: autograd Functions, functional
wrappers and nn.Modules around refloss's analytic VJPs.

Oracles, written here independently of refloss:

* plain-torch transcriptions of every loss (broadcast differences, explicit
  masks, Python loops for the mining), differentiated by torch autograd;
* ``torch.autograd.gradcheck`` (finite differences) in float64;
* a NumPy loop transcription of the three center update rules (Wen et al.
  Eq. 4, the EMA of batch means, the cumulative mean).

Every test runs on the CPU and, when torch sees one, on CUDA.
"""

from __future__ import annotations

import inspect
import io
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refloss as rl

torch = pytest.importorskip("torch")
rt = pytest.importorskip("refloss.adapters.torch")

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    ),
]
F64 = {"rtol": 1e-9, "atol": 1e-11}
F32 = {"rtol": 1.4e-3, "atol": 1e-5}
SEEDS = st.integers(0, 2**32 - 1)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # tiny tensors: intra-op threads only contend for the shared cores
    # (measured 100x slower with 2 threads on a loaded 2-core machine)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def close(actual, expected, tol=F64):
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(
        actual.detach().cpu().double().numpy(), expected.detach().cpu().double().numpy(), **tol
    )


# --------------------------------------------------------------------------
# plain-torch transcriptions (the oracles)


def o_sqrt(d2):
    # sqrt with the derivative 0 at 0 (the reference's subgradient), not NaN
    pos = d2 > 0
    return torch.where(pos, torch.where(pos, d2, torch.ones_like(d2)).sqrt(), torch.zeros_like(d2))


def o_unit(x):
    return x / x.norm(dim=1, keepdim=True)


def o_pairwise(x, y=None, *, metric="euclidean"):
    y = x if y is None else y
    if metric == "cosine":
        return 1.0 - o_unit(x) @ o_unit(y).T
    diff = x[:, None, :] - y[None, :, :]
    d2 = (diff * diff).sum(-1)
    return d2 if metric == "sqeuclidean" else o_sqrt(d2)


def o_paired(a, b, *, metric="euclidean"):
    if metric == "cosine":
        return 1.0 - (o_unit(a) * o_unit(b)).sum(1)
    d2 = ((a - b) ** 2).sum(1)
    return d2 if metric == "sqeuclidean" else o_sqrt(d2)


def o_reduce(terms, reduction, count=None):
    if reduction == "none":
        return terms
    total = terms.sum()
    if reduction == "sum":
        return total
    n = terms.numel() if count is None else int(count)
    if reduction == "mean_nonzero":
        n = int((terms > 0).sum())
    return total / n if n > 0 else total * 0.0


def o_hinge(z, soft):
    return torch.nn.functional.softplus(z) if soft else torch.relu(z)


def o_center_loss(x, labels, centers, *, reduction="sum"):
    terms = 0.5 * ((x - centers[labels]) ** 2).sum(1)
    return o_reduce(terms, reduction)


def o_contrastive_terms(d, same, margin, pos_margin, power):
    return torch.where(
        same, torch.relu(d - pos_margin) ** power, torch.relu(margin - d) ** power
    )


def o_contrastive_loss(a, b, same, *, margin=1.0, pos_margin=0.0, power=2,
                       metric="euclidean", normalize=False, reduction="mean"):
    if normalize:
        a, b = o_unit(a), o_unit(b)
    terms = o_contrastive_terms(o_paired(a, b, metric=metric), same, margin, pos_margin, power)
    return o_reduce(terms, reduction)


def o_contrastive_all_pairs(x, labels, *, margin=1.0, pos_margin=0.0, power=2,
                            metric="euclidean", normalize=False, reduction="mean"):
    if normalize:
        x = o_unit(x)
    i, j = torch.triu_indices(x.shape[0], x.shape[0], 1, device=x.device)
    d = o_pairwise(x, metric=metric)[i, j]
    terms = o_contrastive_terms(d, labels[i] == labels[j], margin, pos_margin, power)
    return o_reduce(terms, reduction)


def o_triplet_margin_loss(anchor, positive, negative, *, margin=1.0, metric="euclidean",
                          soft=False, swap=False, normalize=False, reduction="mean"):
    if normalize:
        anchor, positive, negative = o_unit(anchor), o_unit(positive), o_unit(negative)
    d_ap = o_paired(anchor, positive, metric=metric)
    d_an = o_paired(anchor, negative, metric=metric)
    if swap:
        d_pn = o_paired(positive, negative, metric=metric)
        d_an = torch.where(d_pn < d_an, d_pn, d_an)
    z = d_ap - d_an + (0.0 if soft else margin)
    return o_reduce(o_hinge(z, soft), reduction)


def _pos_neg(labels):
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def o_batch_all(x, labels, *, margin=1.0, metric="euclidean", soft=False, normalize=False,
                reduction="mean_nonzero"):
    if normalize:
        x = o_unit(x)
    d = o_pairwise(x, metric=metric)
    pos, neg = _pos_neg(labels)
    z = d[:, :, None] - d[:, None, :] + (0.0 if soft else margin)  # [a, p, n]
    valid = pos[:, :, None] & neg[:, None, :]
    terms = torch.where(valid, o_hinge(z, soft), torch.zeros_like(z))
    if reduction == "none":
        return terms.sum(2)
    if reduction == "mean_nonzero":
        return o_reduce(terms[valid], "mean_nonzero")
    return o_reduce(terms[valid], reduction)


def o_batch_hard(x, labels, *, margin=1.0, metric="euclidean", soft=False, normalize=False,
                 reduction="mean"):
    if normalize:
        x = o_unit(x)
    d = o_pairwise(x, metric=metric)
    dv = d.detach().cpu().numpy()
    y = labels.tolist()
    b = len(y)
    terms, valid = [], []
    for a in range(b):
        pos = [p for p in range(b) if p != a and y[p] == y[a]]
        neg = [n for n in range(b) if y[n] != y[a]]
        if not pos or not neg:
            terms.append(d[a, a] * 0.0)
            continue
        p = max(pos, key=lambda j: dv[a, j])  # first (lowest) index among ties
        n = min(neg, key=lambda j: dv[a, j])
        terms.append(o_hinge(d[a, p] - d[a, n] + (0.0 if soft else margin), soft))
        valid.append(a)
    terms = torch.stack(terms) if terms else d.reshape(-1)[:0]
    if reduction == "none":
        return terms
    if reduction == "mean_nonzero":
        return o_reduce(terms[valid], "mean_nonzero")
    return o_reduce(terms, reduction, count=len(valid))


def o_semihard(x, labels, *, margin=1.0, metric="euclidean", normalize=False,
               reduction="mean"):
    if normalize:
        x = o_unit(x)
    d = o_pairwise(x, metric=metric)
    dv = d.detach().cpu().numpy()
    y = labels.tolist()
    b = len(y)
    zero = d[0, 0] * 0.0 if b else d.sum()
    rows, counted = [], []
    for a in range(b):
        neg = [n for n in range(b) if y[n] != y[a]]
        row = []
        for p in range(b):
            if p == a or y[p] != y[a] or not neg:
                row.append(zero)
                continue
            farther = [n for n in neg if dv[a, n] > dv[a, p]]
            if farther:
                n = min(farther, key=lambda j: dv[a, j])
            else:
                n = max(neg, key=lambda j: dv[a, j])
            term = torch.relu(d[a, p] - d[a, n] + margin)
            row.append(term)
            counted.append(term)
        rows.append(torch.stack(row))
    if reduction == "none":
        return torch.stack(rows) if rows else d
    counted = torch.stack(counted) if counted else d.reshape(-1)[:0]
    return o_reduce(counted, reduction)


# --------------------------------------------------------------------------
# cases: adapter function, oracle, inputs


def _embed(rng, rows, dim, device, dtype):
    return torch.tensor(rng.normal(size=(rows, dim)), dtype=dtype, device=device)


def _labels(rng, rows, device):
    return torch.tensor(rng.integers(0, rng.integers(1, 4), rows), device=device)


def labeled_inputs(rng, device, dtype):
    rows, dim = int(rng.integers(2, 8)), int(rng.integers(2, 5))
    return (_embed(rng, rows, dim, device, dtype), _labels(rng, rows, device)), (0,)


def center_inputs(rng, device, dtype):
    rows, dim, c = int(rng.integers(1, 8)), int(rng.integers(1, 4)), int(rng.integers(1, 4))
    x = _embed(rng, rows, dim, device, dtype)
    labels = torch.tensor(rng.integers(0, c, rows), device=device)
    return (x, labels, _embed(rng, c, dim, device, dtype)), (0, 2)


def pair_inputs(rng, device, dtype):
    rows, dim = int(rng.integers(1, 7)), int(rng.integers(2, 5))
    a, b = _embed(rng, rows, dim, device, dtype), _embed(rng, rows, dim, device, dtype)
    return (a, b), (0, 1)


def contrastive_inputs(rng, device, dtype):
    (a, b), _ = pair_inputs(rng, device, dtype)
    same = torch.tensor(rng.integers(0, 2, a.shape[0]).astype(bool), device=device)
    return (a, b, same), (0, 1)


def triplet_inputs(rng, device, dtype):
    rows, dim = int(rng.integers(1, 7)), int(rng.integers(2, 5))
    return tuple(_embed(rng, rows, dim, device, dtype) for _ in range(3)), (0, 1, 2)


def pairwise_self_inputs(rng, device, dtype):
    rows, dim = int(rng.integers(1, 7)), int(rng.integers(2, 5))
    return (_embed(rng, rows, dim, device, dtype),), (0,)


def pairwise_two_inputs(rng, device, dtype):
    rows, dim = int(rng.integers(1, 7)), int(rng.integers(2, 5))
    y = _embed(rng, int(rng.integers(1, 6)), dim, device, dtype)
    return (_embed(rng, rows, dim, device, dtype), y), (0, 1)


@dataclass(frozen=True)
class Case:
    name: str
    fn: Any
    oracle: Any
    inputs: Any
    options: dict = field(default_factory=dict)

    def __str__(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.name}[{opts}]"

    def draw(self, seed, device, dtype=torch.float64):
        args, wrt = self.inputs(np.random.default_rng(seed), device, dtype)
        args = tuple(a.requires_grad_() if i in wrt else a for i, a in enumerate(args))
        return args, wrt


def _cases(name, fn, oracle, inputs, option_sets):
    return [Case(name, fn, oracle, inputs, opts) for opts in option_sets]


CASES = [
    *_cases("pairwise_distances", rt.pairwise_distances, o_pairwise, pairwise_self_inputs,
            [{}, {"metric": "sqeuclidean"}, {"metric": "cosine"}]),
    *_cases("pairwise_distances", rt.pairwise_distances, o_pairwise, pairwise_two_inputs,
            [{}, {"metric": "sqeuclidean"}, {"metric": "cosine"}]),
    *_cases("paired_distances", rt.paired_distances, o_paired, pair_inputs,
            [{}, {"metric": "sqeuclidean"}, {"metric": "cosine"}]),
    *_cases("center_loss", rt.center_loss, o_center_loss, center_inputs,
            [{}, {"reduction": "mean"}, {"reduction": "none"}]),
    *_cases("contrastive_loss", rt.contrastive_loss, o_contrastive_loss, contrastive_inputs,
            [{}, {"power": 1, "pos_margin": 0.3, "margin": 2.0, "reduction": "sum"},
             {"metric": "cosine", "reduction": "none"},
             {"metric": "sqeuclidean", "normalize": True, "reduction": "mean_nonzero"}]),
    *_cases("contrastive_loss_all_pairs", rt.contrastive_loss_all_pairs,
            o_contrastive_all_pairs, labeled_inputs,
            [{}, {"power": 1, "pos_margin": 0.3, "margin": 2.0, "reduction": "sum"},
             {"metric": "cosine", "reduction": "none", "margin": 0.5},
             {"metric": "sqeuclidean", "normalize": True, "reduction": "mean_nonzero"}]),
    *_cases("triplet_margin_loss", rt.triplet_margin_loss, o_triplet_margin_loss,
            triplet_inputs,
            [{}, {"soft": True}, {"swap": True, "reduction": "none"},
             {"metric": "cosine", "margin": 0.3, "reduction": "sum"},
             {"metric": "sqeuclidean", "normalize": True, "reduction": "mean_nonzero"}]),
    *_cases("batch_all_triplet_loss", rt.batch_all_triplet_loss, o_batch_all, labeled_inputs,
            [{}, {"soft": True}, {"reduction": "mean"}, {"reduction": "none"},
             {"metric": "sqeuclidean", "reduction": "sum"},
             {"metric": "cosine", "normalize": True, "margin": 0.2}]),
    *_cases("batch_hard_triplet_loss", rt.batch_hard_triplet_loss, o_batch_hard,
            labeled_inputs,
            [{}, {"soft": True}, {"reduction": "none"}, {"reduction": "mean_nonzero"},
             {"metric": "sqeuclidean", "normalize": True},
             {"metric": "cosine", "reduction": "sum", "margin": 0.3}]),
    *_cases("semihard_triplet_loss", rt.semihard_triplet_loss, o_semihard, labeled_inputs,
            [{}, {"reduction": "none"}, {"metric": "sqeuclidean", "reduction": "sum"},
             {"reduction": "mean_nonzero"},
             {"metric": "cosine", "normalize": True, "margin": 0.2}]),
]


def weighted(out, seed):
    """A scalar whose upstream gradient is a random tensor shaped like ``out``."""
    w = torch.tensor(np.random.default_rng(seed + 1).normal(size=tuple(out.shape)),
                     dtype=out.dtype, device=out.device)
    return (out * w).sum()


# --------------------------------------------------------------------------
# functional wrappers: signatures, values, gradients


FUNCTIONS = [
    "pairwise_distances", "paired_distances", "center_loss", "contrastive_loss",
    "contrastive_loss_all_pairs", "triplet_margin_loss", "batch_all_triplet_loss",
    "batch_hard_triplet_loss", "semihard_triplet_loss",
]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_wrapper_has_the_core_signature(name):
    ours = inspect.signature(getattr(rt, name)).parameters
    core = inspect.signature(getattr(rl, name)).parameters
    assert [(p.name, p.kind, p.default) for p in ours.values()] == [
        (p.name, p.kind, p.default) for p in core.values()
    ]


def test_wrap_serves_any_function_with_an_analytic_vjp():
    from refloss.compat import torch_nn

    wrapped = rt.wrap(torch_nn.triplet_margin_loss)
    assert inspect.signature(wrapped) == inspect.signature(torch_nn.triplet_margin_loss)
    assert wrapped.function.__name__ == "TripletMarginLossFunction"
    rng = np.random.default_rng(3)
    a, p, n = (torch.tensor(rng.normal(size=(4, 3)), requires_grad=True) for _ in range(3))
    out = wrapped(a, p, n, margin=0.5, swap=True)
    value, grads = rl.value_and_grad(torch_nn.triplet_margin_loss, a.detach(), p.detach(),
                                     n.detach(), margin=0.5, swap=True)
    assert torch.equal(out.detach(), value)
    for got, expected in zip(torch.autograd.grad(out, [a, p, n]), grads):
        assert torch.equal(got, expected)


def test_wrap_refuses_a_function_without_a_vjp():
    with pytest.raises(TypeError, match=r"^fn: expected a refloss function with an analytic VJP"):
        rt.wrap(rl.center_stats)


@pytest.mark.parametrize(("module", "twin"), [
    (rt.ContrastiveLoss, rl.contrastive_loss_all_pairs),
    (rt.TripletMarginLoss, rl.triplet_margin_loss),
])
def test_module_options_are_the_twins_keyword_options(module, twin):
    ours = [(p.name, p.kind, p.default) for p in inspect.signature(module).parameters.values()]
    core = [(p.name, p.kind, p.default) for p in inspect.signature(twin).parameters.values()
            if p.kind == p.KEYWORD_ONLY]
    assert ours == core
    assert module().extra_repr() == ", ".join(f"{name}={d!r}" for name, _, d in core)


def test_triplet_loss_options_are_the_union_of_its_twins_with_mining_first():
    params = inspect.signature(rt.TripletLoss).parameters
    assert next(iter(params)) == "mining"
    names = set()
    for twin in (rl.batch_all_triplet_loss, rl.batch_hard_triplet_loss, rl.semihard_triplet_loss):
        names |= {p.name for p in inspect.signature(twin).parameters.values()
                  if p.kind == p.KEYWORD_ONLY}
    assert set(params) == {"mining"} | names
    assert params["reduction"].default is None  # the twins' defaults differ


def test_an_unknown_module_option_is_refused_by_name():
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'marginn'"):
        rt.ContrastiveLoss(marginn=1.0)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'marginn'"):
        rt.TripletLoss(mining="hard", marginn=1.0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=str)
@settings(max_examples=4)
@given(seed=SEEDS)
def test_value_and_gradient_equal_autograd_through_a_torch_transcription(case, device, seed):
    args, wrt = case.draw(seed, device)
    out = case.fn(*args, **case.options)
    expected = case.oracle(*args, **case.options)
    assert out.dtype == torch.float64 and out.device.type == device
    core = getattr(rl, case.name)(*(a.detach() for a in args), **case.options)
    assert torch.equal(out, core)  # the core's value, bit for bit
    close(out, expected)
    inputs = [args[i] for i in wrt]
    grads = torch.autograd.grad(weighted(out, seed), inputs)
    expected_grads = torch.autograd.grad(weighted(expected, seed), inputs)
    for g, e, x in zip(grads, expected_grads, inputs):
        assert g.dtype == x.dtype and g.device == x.device
        close(g, e, {"rtol": 1e-8, "atol": 1e-10})


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("seed", [11, 12])
def test_gradcheck_passes_in_float64(case, device, seed):
    # fixed seeds, not Hypothesis: finite differences need points away from the
    # kinks (ties, hinge at 0), which generic normal draws are, deterministically
    args, wrt = case.draw(seed, device)

    def f(*floats):
        full = list(args)
        for i, v in zip(wrt, floats):
            full[i] = v
        return case.fn(*full, **case.options)

    assert torch.autograd.gradcheck(f, tuple(args[i] for i in wrt), eps=1e-6, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_float32_value_and_gradient_follow_float64(case, device):
    args64, wrt = case.draw(5, device)
    args32, _ = case.draw(5, device, torch.float32)
    out32 = case.fn(*args32, **case.options)
    out64 = case.fn(*args64, **case.options)
    assert out32.dtype == torch.float32
    close(out32, out64, F32)
    g32 = torch.autograd.grad(weighted(out32, 5), [args32[i] for i in wrt])
    g64 = torch.autograd.grad(weighted(out64, 5), [args64[i] for i in wrt])
    for a, b in zip(g32, g64):
        assert a.dtype == torch.float32
        close(a, b, {"rtol": 2e-3, "atol": 1e-4})


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types_are_computed_in_float32_and_cast_back(dtype):
    x = torch.tensor(np.random.default_rng(3).normal(size=(6, 3)), dtype=dtype,
                     requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    out = rt.batch_hard_triplet_loss(x, labels)
    (g,) = torch.autograd.grad(out, x)
    assert out.dtype == dtype and g.dtype == dtype
    x32 = x.detach().float().requires_grad_()
    out32 = rt.batch_hard_triplet_loss(x32, labels)
    (g32,) = torch.autograd.grad(out32, x32)
    assert out.item() == out32.to(dtype).item()
    assert torch.equal(g, g32.to(dtype))


@pytest.mark.parametrize("device", DEVICES)
def test_reduction_none_takes_an_upstream_gradient_shaped_like_the_output(device):
    x = torch.tensor(np.random.default_rng(0).normal(size=(5, 3)), device=device,
                     requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 1], device=device)
    out = rt.semihard_triplet_loss(x, labels, reduction="none")
    assert out.shape == (5, 5)
    g = torch.zeros_like(out)
    g[0, 1] = 1.0  # the gradient of the single term l_01
    out.backward(g)
    (term_grad,) = torch.autograd.grad(o_semihard(x, labels, reduction="none")[0, 1], x)
    close(x.grad, term_grad)


@pytest.mark.parametrize("device", DEVICES)
def test_arrays_bound_by_name_also_get_their_gradient(device):
    x = torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=torch.float64, device=device,
                     requires_grad=True)
    c = torch.zeros((2, 2), dtype=torch.float64, device=device, requires_grad=True)
    labels = torch.tensor([0, 1], device=device)
    out = rt.center_loss(x, labels=labels, centers=c)
    gx, gc = torch.autograd.grad(out, [x, c])
    close(gx, x.detach())
    close(gc, -x.detach())


def test_backward_is_the_cores_analytic_rule_not_autograd_of_the_forward():
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 1.0]], dtype=torch.float64,
                     requires_grad=True)
    out = rt.pairwise_distances(x)
    # one node, right above the leaf: nothing of the core's forward was traced
    assert out.grad_fn.name() == "PairwiseDistancesFunctionBackward"
    ((leaf, _),) = out.grad_fn.next_functions
    assert leaf.variable is x
    g = torch.tensor(np.random.default_rng(0).normal(size=(3, 3)))
    (ours,) = torch.autograd.grad(out, x, g)
    _, pullback = rl.vjp(rl.pairwise_distances, x.detach())
    assert torch.equal(ours, pullback(g)[0])


@pytest.mark.parametrize("device", DEVICES)
def test_double_backward_raises_a_clear_error(device):
    x = torch.tensor(np.random.default_rng(1).normal(size=(6, 2)), device=device,
                     requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2], device=device)
    (g,) = torch.autograd.grad(rt.batch_all_triplet_loss(x, labels), x, create_graph=True)
    (plain,) = torch.autograd.grad(rt.batch_all_triplet_loss(x, labels), x)
    assert torch.equal(g, plain)  # the first derivative itself is unchanged
    with pytest.raises(RuntimeError, match=r"^batch_all_triplet_loss: .*first-order only"):
        torch.autograd.grad((g**2).sum(), x)


def test_a_gradient_penalty_mixing_refloss_with_torch_ops_is_refused_not_wrong():
    # torch's @once_differentiable would return refloss's part as a constant here
    x = torch.tensor(np.random.default_rng(2).normal(size=(4, 2)), requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    loss = rt.contrastive_loss_all_pairs(x, labels) + (x**3).sum()
    (g,) = torch.autograd.grad(loss, x, create_graph=True)
    with pytest.raises(RuntimeError, match="first-order only"):
        (g**2).sum().backward()


def test_changing_labels_in_place_before_backward_raises():
    x = torch.tensor(np.random.default_rng(3).normal(size=(4, 2)), requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    c = torch.zeros((2, 2), dtype=torch.float64)
    out = rt.center_loss(x, labels, c)
    labels[0] = 1
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.backward()


def test_labels_and_same_get_no_gradient():
    x = torch.tensor(np.random.default_rng(4).normal(size=(4, 2)), requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    same = torch.tensor([True, False, True, False])
    out = rt.batch_hard_triplet_loss(x, labels) + rt.contrastive_loss(x, x.flip(0), same)
    (hard, _), (pairs, _) = out.grad_fn.next_functions
    assert hard.name() == "BatchHardTripletLossFunctionBackward"
    grads = hard.apply(torch.ones((), dtype=torch.float64))  # (options, x, labels)
    assert grads[0] is None and grads[1] is not None and grads[2] is None
    assert pairs.name() == "ContrastiveLossFunctionBackward"
    grads = pairs.apply(torch.ones((), dtype=torch.float64))  # (options, a, b, same)
    assert grads[0] is None and grads[1] is not None and grads[2] is not None
    assert grads[3] is None
    out.backward()
    assert labels.grad is None and same.grad is None


def test_an_empty_batch_gives_zero_and_a_zero_gradient():
    x = torch.zeros((0, 3), dtype=torch.float64, requires_grad=True)
    out = rt.batch_all_triplet_loss(x, torch.zeros((0,), dtype=torch.int64))
    out.backward()
    assert out.item() == 0.0 and x.grad.shape == (0, 3)


# --------------------------------------------------------------------------
# bad input: the core's errors, message for message


def _bad(name):
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(4, 2)))
    labels = torch.tensor([0, 0, 1, 1])
    if name == "non-floating x":
        return "batch_all_triplet_loss", (torch.ones((4, 2), dtype=torch.int64), labels), {}
    if name == "labels of rank 2":
        return "batch_hard_triplet_loss", (x, labels[:, None]), {}
    if name == "unknown metric":
        return "semihard_triplet_loss", (x, labels), {"metric": "manhattan"}
    if name == "negative margin":
        return "contrastive_loss_all_pairs", (x, labels), {"margin": -0.5}
    if name == "mismatched lengths":
        return "batch_all_triplet_loss", (x, labels[:3]), {}
    if name == "NaN in x":
        return "triplet_margin_loss", (x, x, x.clone().fill_(math.nan)), {}
    if name == "numeric same":
        return "contrastive_loss", (x, x, torch.tensor([1, 0, 1, 0])), {}
    if name == "labels out of range":
        return "center_loss", (x, labels, torch.zeros((1, 2), dtype=torch.float64)), {}
    if name == "unknown distance metric":
        return "pairwise_distances", (x,), {"metric": "l1"}
    raise AssertionError(name)


BAD = [
    "non-floating x", "labels of rank 2", "unknown metric", "negative margin",
    "mismatched lengths", "NaN in x", "numeric same", "labels out of range",
    "unknown distance metric",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_raises_the_cores_error(case):
    name, args, options = _bad(case)
    with pytest.raises((TypeError, ValueError)) as core:
        getattr(rl, name)(*args, **options)
    with pytest.raises(core.type) as ours:
        getattr(rt, name)(*args, **options)
    assert str(ours.value) == str(core.value)


def test_a_non_tensor_argument_is_refused_by_name():
    labels = torch.tensor([0, 1])
    with pytest.raises(TypeError, match=r"^labels: expected a torch.Tensor, got numpy.ndarray"):
        rt.batch_all_triplet_loss(torch.zeros((2, 2)), np.array([0, 1]))
    with pytest.raises(TypeError, match=r"^x: expected a torch.Tensor, got builtins.list"):
        rt.center_loss([[0.0]], labels, torch.zeros((2, 1)))


# --------------------------------------------------------------------------
# loss modules


def _batch(seed, device, rows=8, dim=3, classes=3):
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.normal(size=(rows, dim)), device=device, requires_grad=True)
    return x, torch.tensor(rng.integers(0, classes, rows), device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("mining", "twin", "default"),
    [("all", rt.batch_all_triplet_loss, "mean_nonzero"),
     ("hard", rt.batch_hard_triplet_loss, "mean"),
     ("semihard", rt.semihard_triplet_loss, "mean")],
)
@settings(max_examples=5)
@given(seed=SEEDS, margin=st.sampled_from([0.0, 0.3, 1.0]),
       metric=st.sampled_from(["euclidean", "sqeuclidean", "cosine"]))
def test_triplet_loss_module_is_its_functional_twin(device, mining, twin, default, seed,
                                                    margin, metric):
    x, labels = _batch(seed, device)
    module = rt.TripletLoss(mining=mining, margin=margin, metric=metric)
    assert module.reduction == default
    out = module(x, labels)
    expected = twin(x, labels, margin=margin, metric=metric)
    assert torch.equal(out, expected)
    assert torch.equal(torch.autograd.grad(out, x)[0], torch.autograd.grad(expected, x)[0])


def test_triplet_loss_module_passes_soft_normalize_and_reduction():
    x, labels = _batch(0, "cpu")
    module = rt.TripletLoss(mining="hard", soft=True, normalize=True, reduction="none")
    expected = rt.batch_hard_triplet_loss(x, labels, soft=True, normalize=True, reduction="none")
    assert torch.equal(module(x, labels), expected)


def test_triplet_loss_module_follows_an_attribute_changed_after_construction():
    x, labels = _batch(1, "cpu")
    module = rt.TripletLoss(mining="all")
    module.margin = 0.25
    assert torch.equal(module(x, labels), rt.batch_all_triplet_loss(x, labels, margin=0.25))


def test_triplet_loss_rejects_an_unknown_mining():
    with pytest.raises(ValueError, match=r"^mining: expected one of .*got 'easy'"):
        rt.TripletLoss(mining="easy")


def test_triplet_loss_rejects_a_soft_semihard():
    with pytest.raises(ValueError, match=r"^soft: expected False with mining='semihard'"):
        rt.TripletLoss(mining="semihard", soft=True)


@pytest.mark.parametrize(
    ("module", "core", "options"),
    [(rt.TripletLoss, rl.batch_all_triplet_loss, {"margin": -1.0}),
     (rt.TripletLoss, rl.batch_all_triplet_loss, {"metric": "l1"}),
     (rt.TripletLoss, rl.batch_all_triplet_loss, {"reduction": "avg"}),
     (rt.ContrastiveLoss, rl.contrastive_loss_all_pairs, {"power": 3}),
     (rt.ContrastiveLoss, rl.contrastive_loss_all_pairs, {"pos_margin": math.nan}),
     (rt.TripletMarginLoss, rl.triplet_margin_loss, {"swap": 1})],
    ids=["margin", "metric", "reduction", "power", "pos_margin", "swap"],
)
def test_bad_module_options_raise_the_cores_error_at_construction(module, core, options):
    x = torch.zeros((0, 1), dtype=torch.float64)
    args = (x, x, x) if core is rl.triplet_margin_loss else (x, torch.zeros(0, dtype=torch.int64))
    with pytest.raises((TypeError, ValueError)) as expected:
        core(*args, **options)
    with pytest.raises(expected.type) as got:
        module(**options)
    assert str(got.value) == str(expected.value)


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=5)
@given(seed=SEEDS, power=st.sampled_from([1, 2]),
       reduction=st.sampled_from(["mean", "sum", "mean_nonzero", "none"]))
def test_contrastive_module_is_the_all_pairs_loss(device, seed, power, reduction):
    x, labels = _batch(seed, device)
    module = rt.ContrastiveLoss(margin=1.5, pos_margin=0.1, power=power, reduction=reduction)
    out = module(x, labels)
    expected = rt.contrastive_loss_all_pairs(x, labels, margin=1.5, pos_margin=0.1,
                                             power=power, reduction=reduction)
    assert torch.equal(out, expected)
    w = torch.ones_like(out)
    assert torch.equal(torch.autograd.grad(out, x, w)[0], torch.autograd.grad(expected, x, w)[0])


@pytest.mark.parametrize("device", DEVICES)
def test_triplet_margin_module_is_the_functional(device):
    rng = np.random.default_rng(7)
    a, p, n = (torch.tensor(rng.normal(size=(5, 3)), device=device, requires_grad=True)
               for _ in range(3))
    module = rt.TripletMarginLoss(margin=0.5, swap=True, reduction="sum")
    out = module(a, p, n)
    expected = rt.triplet_margin_loss(a, p, n, margin=0.5, swap=True, reduction="sum")
    assert torch.equal(out, expected)
    for g, e in zip(torch.autograd.grad(out, [a, p, n]), torch.autograd.grad(expected, [a, p, n])):
        assert torch.equal(g, e)


# --------------------------------------------------------------------------
# CenterLoss


def o_update(centers, sums, counts, x, labels, rule, alpha):
    """Loop transcription of the rules: Wen et al. Eq. 4, EMA of batch means,
    cumulative mean (S, N running)."""
    centers, sums, counts = centers.copy(), sums.copy(), counts.copy()
    new = centers.copy()
    for j in range(centers.shape[0]):
        members = [x[i] for i in range(len(labels)) if labels[i] == j]
        n = len(members)
        s = np.sum(members, axis=0) if n else np.zeros(centers.shape[1])
        sums[j] += s
        counts[j] += n
        if rule == "wen":
            delta = sum((centers[j] - m for m in members), np.zeros(centers.shape[1]))
            new[j] = centers[j] - alpha * delta / (1 + n)
        elif rule == "ema" and n:
            new[j] = (1 - alpha) * centers[j] + alpha * s / n
        elif rule == "mean" and counts[j]:
            new[j] = sums[j] / counts[j]
    return new, sums, counts


def _buffers(module):
    return {k: v.clone() for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}


def _same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rule", ["wen", "ema", "mean"])
@settings(max_examples=5)
@given(seed=SEEDS, alpha=st.sampled_from([0.0, 0.3, 0.5, 1.0]))
def test_center_update_follows_the_rule_batch_after_batch(device, rule, alpha, seed):
    rng = np.random.default_rng(seed)
    c, d = 4, 3
    init = rng.normal(size=(c, d))
    start = torch.tensor(init, device=device)
    module = rt.CenterLoss(c, d, rule=rule, alpha=alpha, dtype=torch.float64, device=device,
                           init=start)
    running = rl.RunningCenters(c, d, rule=rule, alpha=alpha, init=start)
    centers, sums, counts = init, np.zeros((c, d)), np.zeros(c, dtype=np.int64)
    for _ in range(3):
        rows = int(rng.integers(1, 7))
        x = rng.normal(size=(rows, d))
        labels = rng.integers(0, c - 1, rows)  # duplicates, and class c - 1 never seen
        xt, lt = torch.tensor(x, device=device), torch.tensor(labels, device=device)
        new = module.update(xt, lt)
        running.update(xt, lt)
        centers, sums, counts = o_update(centers, sums, counts, x, labels, rule, alpha)
        np.testing.assert_allclose(new.cpu().numpy(), centers, rtol=1e-12, atol=1e-12)
        assert torch.equal(module.centers, running.centers)  # the core's rule, bit for bit
    np.testing.assert_allclose(module.sums.cpu().numpy(), sums, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(module.counts.cpu().numpy(), counts)
    np.testing.assert_array_equal(module.centers[c - 1].cpu().numpy(), init[c - 1])


@pytest.mark.parametrize("device", DEVICES)
def test_center_loss_forward_is_the_functional_loss_with_frozen_centers(device):
    module = rt.CenterLoss(3, 2, dtype=torch.float64, device=device, reduction="mean",
                           init=torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]))
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0], [3.0, 2.0]], dtype=torch.float64, device=device,
                     requires_grad=True)
    labels = torch.tensor([0, 1, 2], device=device)
    out = module(x, labels)
    expected = o_center_loss(x, labels, module.centers, reduction="mean")
    close(out, expected)
    assert list(module.parameters()) == [] and not module.centers.requires_grad
    (g,) = torch.autograd.grad(out, x)
    close(g, torch.autograd.grad(expected, x)[0])


@pytest.mark.parametrize("device", DEVICES)
def test_center_update_records_nothing_for_autograd(device):
    module = rt.CenterLoss(2, 2, dtype=torch.float64, device=device)
    x, labels = _batch(0, device, rows=4, dim=2, classes=2)
    with torch.enable_grad():
        new = module.update(x * 2.0, labels)
    assert new.grad_fn is None and not new.requires_grad
    assert module.centers.grad_fn is None and not module.centers.requires_grad
    assert x.grad is None


@pytest.mark.parametrize("device", DEVICES)
def test_center_update_between_forward_and_backward_leaves_the_gradient_alone(device):
    module = rt.CenterLoss(2, 2, dtype=torch.float64, device=device)
    x, labels = _batch(1, device, rows=4, dim=2, classes=2)
    out = module(x, labels)
    expected = torch.autograd.grad(o_center_loss(x, labels, module.centers.clone()), x)[0]
    module.update(x, labels)
    out.backward()
    close(x.grad, expected)


def _bad_update(case, device):
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64, device=device)
    labels = torch.tensor([0, 1], device=device)
    return {
        "labels out of range": (x, torch.tensor([0, 3], device=device)),
        "negative label": (x, torch.tensor([-1, 0], device=device)),
        "NaN in x": (x.clone().fill_(math.nan), labels),
        "wrong dim": (torch.ones((2, 3), dtype=torch.float64, device=device), labels),
        "wrong dtype": (x.float(), labels),
        "float labels": (x, labels.double()),
        "labels of another length": (x, labels[:1]),
    }[case]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rule", ["wen", "mean"])
@pytest.mark.parametrize("case", ["labels out of range", "negative label", "NaN in x",
                                  "wrong dim", "wrong dtype", "float labels",
                                  "labels of another length"])
def test_bad_update_raises_the_cores_error_and_changes_nothing(device, rule, case):
    module = rt.CenterLoss(3, 2, rule=rule, dtype=torch.float64, device=device)
    module.update(torch.tensor([[1.0, 1.0]], dtype=torch.float64, device=device),
                  torch.tensor([1], device=device))
    before = _buffers(module)
    x, labels = _bad_update(case, device)
    running = rl.RunningCenters(3, 2, rule=rule, like=module.centers)
    with pytest.raises((TypeError, ValueError)) as core:
        running.update(x, labels)
    with pytest.raises(core.type) as ours:
        module.update(x, labels)
    assert str(ours.value) == str(core.value)
    _same_state(_buffers(module), before)
    assert module.rule == rule


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rule", ["wen", "ema", "mean"])
def test_center_state_dict_round_trips_exactly(device, rule):
    rng = np.random.default_rng(8)
    module = rt.CenterLoss(4, 3, rule=rule, alpha=0.3, dtype=torch.float64, device=device)
    for _ in range(3):
        module.update(torch.tensor(rng.normal(size=(5, 3)), device=device),
                      torch.tensor(rng.integers(0, 4, 5), device=device))
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    other = rt.CenterLoss(4, 3, rule="ema" if rule != "ema" else "wen", alpha=0.9,
                          dtype=torch.float64, device=device)
    other.load_state_dict(state)
    assert (other.rule, other.alpha) == (rule, 0.3)
    _same_state(_buffers(other), _buffers(module))
    x = torch.tensor(rng.normal(size=(6, 3)), device=device)
    labels = torch.tensor(rng.integers(0, 4, 6), device=device)
    assert torch.equal(other.update(x, labels), module.update(x, labels))
    _same_state(_buffers(other), _buffers(module))


STATE_MISFITS = {
    "negative count": ("counts", torch.tensor([1, -1]), "state['counts']: expected non-negative"),
    "NaN center": ("centers", torch.full((2, 2), math.nan, dtype=torch.float64),
                   "state['centers']: expected finite values"),
    "sums of another shape": ("sums", torch.zeros((3, 2), dtype=torch.float64),
                              "state['sums']: expected shape (2, 2), got (3, 2)"),
    "float counts": ("counts", torch.tensor([1.0, 0.0]), "state['counts']: expected an integer"),
    "unknown rule": ("_extra_state", {"rule": "median", "alpha": 0.5},
                     "state['rule']: expected one of 'wen', 'ema', 'mean', got 'median'"),
    "alpha above 1": ("_extra_state", {"rule": "wen", "alpha": 1.5},
                      "state['alpha']: expected a number in [0, 1], got 1.5"),
    "missing sums": ("sums", None, 'Missing key(s) in state_dict: "sums"'),
}


@pytest.mark.parametrize("case", list(STATE_MISFITS))
def test_a_state_dict_that_does_not_fit_raises_and_loads_nothing(case):
    module = rt.CenterLoss(2, 2, rule="mean", dtype=torch.float64)
    module.update(torch.tensor([[1.0, 2.0]], dtype=torch.float64), torch.tensor([0]))
    before = _buffers(module)
    state = module.state_dict()
    state["centers"] = torch.full((2, 2), 7.0, dtype=torch.float64)  # would change
    key, value, message = STATE_MISFITS[case]
    if value is None:
        del state[key]
    else:
        state[key] = value
    with pytest.raises(RuntimeError, match=re.escape(message)):
        module.load_state_dict(state)
    _same_state(_buffers(module), before)
    assert (module.rule, module.alpha) == ("mean", 0.5)


@pytest.mark.parametrize("device", DEVICES)
def test_update_from_stats_of_shards_equals_update_on_the_batch(device):
    rng = np.random.default_rng(9)
    x = torch.tensor(rng.normal(size=(8, 3)), device=device)
    labels = torch.tensor(rng.integers(0, 4, 8), device=device)
    whole = rt.CenterLoss(4, 3, rule="mean", dtype=torch.float64, device=device)
    sharded = rt.CenterLoss(4, 3, rule="mean", dtype=torch.float64, device=device)
    whole.update(x, labels)
    s1, n1 = rl.center_stats(x[:5], labels[:5], 4)
    s2, n2 = rl.center_stats(x[5:], labels[5:], 4)
    sharded.update_from_stats(s1 + s2, n1 + n2)  # an all-reduce of (s, n)
    close(sharded.centers, whole.centers, {"rtol": 1e-14, "atol": 1e-15})
    assert torch.equal(sharded.counts, whole.counts)


@pytest.mark.parametrize("device", DEVICES)
def test_learned_centers_are_a_parameter_with_the_true_gradient(device):
    module = rt.CenterLoss(3, 2, learn_centers=True, dtype=torch.float64, device=device,
                           init=torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]))
    assert [name for name, _ in module.named_parameters()] == ["centers"]
    assert [name for name, _ in module.named_buffers()] == []
    x, labels = _batch(2, device, rows=6, dim=2, classes=3)
    out = module(x, labels)
    expected = o_center_loss(x, labels, module.centers)
    close(out, expected)
    grads = torch.autograd.grad(out, [x, module.centers])
    for g, e in zip(grads, torch.autograd.grad(expected, [x, module.centers])):
        close(g, e)


def test_learned_centers_refuse_update():
    module = rt.CenterLoss(2, 2, learn_centers=True)
    before = module.centers.detach().clone()
    with pytest.raises(RuntimeError, match="learn_centers=True"):
        module.update(torch.zeros((1, 2)), torch.tensor([0]))
    assert torch.equal(module.centers.detach(), before)


def test_learned_centers_state_dict_round_trips_and_refuses_a_misfit():
    module = rt.CenterLoss(2, 3, learn_centers=True,
                           init=torch.arange(6, dtype=torch.float32).reshape(2, 3))
    other = rt.CenterLoss(2, 3, learn_centers=True)
    other.load_state_dict(module.state_dict())
    assert torch.equal(other.centers, module.centers)
    bad = {**module.state_dict(), "centers": torch.full((2, 3), math.inf)}
    with pytest.raises(RuntimeError, match=re.escape("state['centers']: expected finite")):
        other.load_state_dict(bad)
    assert torch.equal(other.centers, module.centers)


def test_casting_the_module_casts_centers_and_sums_not_counts():
    module = rt.CenterLoss(2, 2).double()
    assert module.centers.dtype == module.sums.dtype == torch.float64
    assert module.counts.dtype == torch.int64
    module.update(torch.ones((1, 2), dtype=torch.float64), torch.tensor([1]))
    assert module.counts.tolist() == [0, 1]


@pytest.mark.parametrize(
    ("options", "kind", "message"),
    [({"num_classes": 0}, ValueError, "num_classes: expected an integer >= 1, got 0"),
     ({"dim": -1}, ValueError, "dim: expected an integer >= 0, got -1"),
     ({"rule": "median"}, ValueError, "rule: expected one of 'wen', 'ema', 'mean', got 'median'"),
     ({"alpha": 1.5}, ValueError, "alpha: expected a number in [0, 1], got 1.5"),
     ({"reduction": "avg"}, ValueError, "reduction: expected one of 'sum', 'mean', 'none'"),
     ({"learn_centers": 1}, TypeError, "learn_centers: expected True or False, got int"),
     ({"dtype": torch.int64}, TypeError, "dtype: expected a floating torch.dtype"),
     ({"init": torch.zeros((2, 2))}, ValueError, "init: expected shape (3, 2), got (2, 2)")],
    ids=["num_classes", "dim", "rule", "alpha", "reduction", "learn_centers", "dtype", "init"],
)
def test_bad_center_loss_options_raise_at_construction(options, kind, message):
    args = {"num_classes": 3, "dim": 2, **options}
    with pytest.raises(kind) as info:
        rt.CenterLoss(args.pop("num_classes"), args.pop("dim"), **args)
    assert str(info.value).startswith(message)


# --------------------------------------------------------------------------
# training


def clustered(seed=0, per_class=16, classes=3, dim_in=6):
    g = torch.Generator().manual_seed(seed)
    means = torch.zeros(classes, dim_in)
    means[:, :2] = 3.0 * torch.randn(classes, 2, generator=g)  # the class signal
    labels = torch.arange(classes).repeat_interleave(per_class)
    return means[labels] + torch.randn(len(labels), dim_in, generator=g), labels


def intra_class_spread(f, labels):
    """Mean squared distance of a feature to its class mean."""
    total = sum(((f[labels == c] - f[labels == c].mean(0)) ** 2).sum() for c in labels.unique())
    return float(total) / len(labels)


def train(weight, *, rule="wen", learn_centers=False, steps=40, seed=0):
    x, labels = clustered(seed)
    torch.manual_seed(seed)
    features, head = torch.nn.Linear(6, 2), torch.nn.Linear(2, 3)
    center = rt.CenterLoss(3, 2, rule=rule, learn_centers=learn_centers, reduction="mean")
    # plain SGD written out (torch.optim's first use costs seconds of imports);
    # learned centers get their own step size, as in KaiyangZhou's recipe
    groups = [([*features.parameters(), *head.parameters()], 0.05),
              (list(center.parameters()), 0.5)]
    with torch.no_grad():
        start = intra_class_spread(features(x), labels)
        if not learn_centers:
            center.update(features(x), labels)
    for _ in range(steps):
        f = features(x)
        loss = torch.nn.functional.cross_entropy(head(f), labels) + weight * center(f, labels)
        params = [p for group, _ in groups for p in group]
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g, lr in zip(params, grads, [lr for group, lr in groups for _ in group]):
                p -= lr * g
        if not learn_centers:
            center.update(f, labels)
    with torch.no_grad():
        return start, intra_class_spread(features(x), labels)


@pytest.mark.parametrize(
    ("rule", "learn_centers"), [("wen", False), ("ema", False), ("mean", False), ("wen", True)],
)
def test_softmax_plus_center_loss_shrinks_the_intra_class_spread(rule, learn_centers):
    start, with_center = train(1.0, rule=rule, learn_centers=learn_centers)
    _, softmax_only = train(0.0)
    # measured over seeds 0-5: with_center / start 0.12-0.72 (0.40-0.65 at seed 0),
    # with_center / softmax_only 0.07-0.26; softmax alone spreads the features
    assert with_center < 0.8 * start
    assert with_center < 0.4 * softmax_only
