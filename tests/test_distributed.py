"""refloss.adapters.distributed under real gloo process groups (2 and 4 CPU processes).

One spawned group per world size runs every check (tests/ddp_worker.py) and
saves what each rank saw; each test below reads one property off it, against
refloss.adapters.torch / refloss on the concatenated batch in this process.
Shards are uneven, and with 4 ranks one of them is empty.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

import ddp_worker as worker  # noqa: E402
import refloss.adapters.distributed as rd  # noqa: E402
import refloss.adapters.torch as rt  # noqa: E402

import refloss as rl  # noqa: E402

WORLDS = [2, 4]
REL = 1e-12


@pytest.fixture(scope="module", params=WORLDS, ids=lambda w: f"world{w}")
def ranks(request):
    """What every rank saw: a list indexed by rank, and the world size."""
    world = request.param
    return rd.spawn_gloo(worker.run, world, timeout=300), world


def close(got, expected, rel=REL):
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-300)
    assert float(np.abs(got - expected).max(initial=0.0)) <= rel * scale


def reference(case, rank=None):
    """Value and gradients (x, and centers for center_loss) of the
    single-process loss on the concatenated batch, or of the anchor block of
    ``rank``'s rows; the objective weights the terms of ``"none"`` (a block:
    its part of the global weights)."""
    x = torch.tensor(case["x"], requires_grad=True)
    extra, kw = (), {}
    if case["name"] == "center_loss":
        extra = (torch.tensor(case["centers"], requires_grad=True),)
    if rank is not None:
        block = rows(case, rank)
        kw["anchor_rows"] = (block.start, block.stop)
    value = getattr(rt, case["name"])(x, torch.tensor(case["labels"]), *extra,
                                      **case["options"], **kw)
    objective = value
    if value.ndim:
        weights = torch.tensor(case["weights"])
        if rank is not None:
            weights = weights[worker.own_terms(case, rank)]
        objective = (value * weights).sum()
    objective.backward()
    return value.detach(), x.grad, extra[0].grad if extra else None


def rows(case, rank):
    start = sum(case["sizes"][:rank])
    return slice(start, start + case["sizes"][rank])


def test_the_second_shard_is_empty_with_four_ranks_and_shards_are_uneven():
    sizes = [case["sizes"] for case in worker.batches(4)]
    assert all(s[1] == 0 for s in sizes)
    assert all(len(set(s)) > 1 for s in worker.batches(2) for s in [s["sizes"]])


@pytest.mark.parametrize("i", range(len(worker.LOSS_CASES)),
                         ids=[f"{n}-{o}" for n, o in worker.LOSS_CASES])
def test_every_rank_returns_the_loss_of_the_global_batch(ranks, i):
    seen, world = ranks
    case = worker.batches(world)[i]
    value, _, _ = reference(case)
    for r in range(world):
        for mode in ("sum", "mean"):
            got = seen[r]["losses"][i][mode]["value"]
            close(got, value)
            assert torch.equal(got, seen[0]["losses"][i][mode]["value"])


@pytest.mark.parametrize("i", range(len(worker.LOSS_CASES)),
                         ids=[f"{n}-{o}" for n, o in worker.LOSS_CASES])
@pytest.mark.parametrize("mode", ["sum", "mean"], ids=lambda m: f"grad_reduce={m}")
def test_each_rank_gets_its_rows_of_the_gradient_scaled_by_grad_reduce(ranks, mode, i):
    """grad_reduce="sum": W times the rank's rows of the global gradient (what
    DDP's averaging expects); "mean": the plain rows."""
    seen, world = ranks
    case = worker.batches(world)[i]
    _, grad, _ = reference(case)
    scale = world if mode == "sum" else 1
    for r in range(world):
        close(seen[r]["losses"][i][mode]["grad"], scale * grad[rows(case, r)])


LOCAL_IDS = [f"{n}-{o}" for n, o in worker.LOCAL_CASES]


@pytest.mark.parametrize("i", range(len(worker.LOCAL_CASES)), ids=LOCAL_IDS)
def test_local_anchors_give_each_rank_the_loss_of_its_own_anchor_block(ranks, i):
    seen, world = ranks
    case = worker.local_batches(world)[i]
    for r in range(world):
        value, _, _ = reference(case, r)
        for mode in ("sum", "mean"):
            close(seen[r]["local"][i][mode]["value"], value)


@pytest.mark.parametrize("i", range(len(worker.LOCAL_CASES)), ids=LOCAL_IDS)
def test_local_anchor_values_add_up_to_the_global_loss(ranks, i):
    """"sum" and "mean": the ranks' values sum to L; "none": they are the
    global terms, cut in rank order."""
    seen, world = ranks
    case = worker.local_batches(world)[i]
    value, _, _ = reference(case)
    parts = [seen[r]["local"][i]["sum"]["value"] for r in range(world)]
    total = torch.cat(parts) if value.ndim else sum(parts)
    close(total, value)


@pytest.mark.parametrize("i", range(len(worker.LOCAL_CASES)), ids=LOCAL_IDS)
def test_local_anchors_give_the_gradient_of_global_anchors(ranks, i):
    """x.grad = W·∂L/∂X_r ("sum") or ∂L/∂X_r ("mean"), L the global loss (the
    sum of the ranks' values): the same gradient as anchors="global"."""
    seen, world = ranks
    case = worker.local_batches(world)[i]
    _, grad, _ = reference(case)
    for r in range(world):
        close(seen[r]["local"][i]["sum"]["grad"], world * grad[rows(case, r)])
        close(seen[r]["local"][i]["mean"]["grad"], grad[rows(case, r)])


def test_center_loss_gives_every_rank_the_global_centers_gradient(ranks):
    seen, world = ranks
    i = [n for n, _ in worker.LOSS_CASES].index("center_loss")
    _, _, centers_grad = reference(worker.batches(world)[i])
    for r in range(world):
        close(seen[r]["losses"][i]["sum"]["centers_grad"], centers_grad)


@pytest.mark.parametrize(("rule", "alpha"), worker.CENTER_RULES)
def test_update_centers_is_the_update_on_the_concatenated_batch(ranks, rule, alpha):
    seen, world = ranks
    centers = np.zeros((5, 3))
    for step, b in enumerate(worker.center_batches(world)):
        centers = rl.update_centers(centers, b["x"], b["labels"], rule=rule, alpha=alpha)
        for r in range(world):
            close(seen[r]["centers"][rule][step], centers)


@pytest.mark.parametrize(("rule", "alpha"), worker.CENTER_RULES)
def test_updated_centers_are_bit_identical_on_every_rank(ranks, rule, alpha):
    seen, world = ranks
    for r in range(1, world):
        for mine, first in zip(seen[r]["centers"][rule], seen[0]["centers"][rule]):
            assert torch.equal(mine, first)


@pytest.mark.parametrize("rule", worker.RUNNING_RULES)
def test_running_centers_follow_one_process_fed_the_concatenated_batches(ranks, rule):
    seen, world = ranks
    single = rl.RunningCenters(5, 3, rule=rule, alpha=0.3, like=np.zeros(()))
    for b in worker.center_batches(world):
        single.update(b["x"], b["labels"])
    expected = single.state_dict()
    for r in range(world):
        state = seen[r]["running"][rule]
        close(state["centers"], expected["centers"])
        close(state["sums"], expected["sums"])
        assert np.array_equal(state["counts"], expected["counts"])
        for key in ("centers", "sums", "counts"):
            assert torch.equal(state[key], seen[0]["running"][rule][key])


ERRORS = {
    "dim": ("ValueError", r"^x: expected the same dim D on every rank, got 3 on rank 0 "
                          r"and 4 on rank 1"),
    "dtype": ("TypeError", r"^x: expected the same dtype on every rank, got torch.float64 "
                           r"on rank 0 and torch.float32 on rank 1"),
    "labels": ("ValueError", r"^labels: expected"),
    "bad option": ("ValueError", r"^margin: expected a finite number >= 0, got -1.0"),
    "options differ": ("ValueError", r"^options: expected the same value on every rank"),
    "requires_grad": ("ValueError", r"^x: expected the same requires_grad"),
    "label range": ("ValueError", r"^labels: expected"),
    "grad_reduce": ("ValueError", r"^grad_reduce: expected one of 'sum', 'mean', got 'avg'"),
    "anchors": ("ValueError", r"^anchors: expected one of 'global', 'local', got 'mine'"),
    "anchors differ": ("ValueError", r"^options: expected the same value on every rank"),
    "local mean_nonzero": ("ValueError", r"^reduction: expected 'none', 'sum' or 'mean' with "
                                         r"anchor_rows"),
}


@pytest.mark.parametrize("case", ERRORS)
def test_a_bad_shard_or_option_on_one_rank_makes_every_rank_raise(ranks, case):
    seen, world = ranks
    kind, message = ERRORS[case]
    for r in range(world):
        got = seen[r]["errors"][case]
        assert got is not None, f"rank {r} did not raise for {case}"
        assert got[0] == kind, got
        assert re.search(message, got[1]), got
    assert all(isinstance(seen[r]["errors"]["after"], float) for r in range(world))


def test_ddp_training_on_two_processes_follows_the_one_process_trajectory(ranks):
    seen, world = ranks
    if world != 2:
        pytest.skip("the training run uses 2 processes")
    single = worker.train_single()
    for r in range(world):
        close(seen[r]["training"]["losses"], single["losses"], rel=1e-10)
        close(seen[r]["training"]["params"], single["params"], rel=1e-10)
    assert single["losses"][-1] < single["losses"][0]  # it trains


def test_without_a_process_group_every_function_refuses_clearly():
    assert not dist.is_initialized()
    x, labels = torch.zeros((2, 2)), torch.tensor([0, 1])
    calls = [
        lambda: rd.batch_hard_triplet_loss(x, labels),
        lambda: rd.update_centers(torch.zeros((2, 2)), x, labels),
        lambda: rd.RunningCenters(2, 2, like=x).update(x, labels),
    ]
    for call in calls:
        with pytest.raises(RuntimeError, match=r"no torch\.distributed process group"):
            call()


def test_the_distributed_losses_have_the_torch_signatures_plus_group_and_grad_reduce():
    """The labeled-batch losses trade ``anchor_rows`` for ``anchors``."""
    import inspect

    for name in ("batch_all_triplet_loss", "batch_hard_triplet_loss", "semihard_triplet_loss",
                 "contrastive_loss_all_pairs", "center_loss"):
        ours = list(inspect.signature(getattr(rd, name)).parameters.values())
        twin = [p for p in inspect.signature(getattr(rt, name)).parameters.values()
                if p.name != "anchor_rows"]
        assert ours[: len(twin)] == twin
        extra = [("group", None), ("grad_reduce", "sum")]
        if name != "center_loss":
            extra.insert(0, ("anchors", "global"))
        assert [(p.name, p.default) for p in ours[len(twin):]] == extra


def test_anchor_rows_is_not_an_option_of_the_distributed_losses():
    x, labels = torch.zeros((2, 2)), torch.tensor([0, 1])
    with pytest.raises(TypeError, match=r"anchor_rows"):
        rd.batch_hard_triplet_loss(x, labels, anchor_rows=(0, 1))
    with pytest.raises(TypeError, match=r"anchors"):
        rd.center_loss(x, labels, torch.zeros((2, 2)), anchors="local")




def test_spawn_gloo_reports_a_rank_that_raised():
    with pytest.raises(RuntimeError, match=r"(?s)rank 1 raised:.*ValueError: planted"):
        rd.spawn_gloo(worker.raise_on_rank_one, 2, timeout=120)
