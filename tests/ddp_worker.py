"""The rank side of tests/test_distributed.py: one spawned gloo process group
runs every check and saves what each rank saw; the test module compares it
with the single-process results on the concatenated batch.

Kept apart from the test module so that spawned children import only this
(torch, refloss) and not pytest or Hypothesis.
"""

from __future__ import annotations

import numpy as np
import refloss.adapters.distributed as rd
import torch

LOSS_CASES = [
    ("batch_all_triplet_loss", {}),
    ("batch_all_triplet_loss", {"soft": True, "reduction": "sum"}),
    ("batch_hard_triplet_loss", {"margin": 0.5}),
    ("batch_hard_triplet_loss", {"metric": "sqeuclidean", "reduction": "none"}),
    ("semihard_triplet_loss", {"normalize": True}),
    ("contrastive_loss_all_pairs", {"margin": 2.0}),
    ("contrastive_loss_all_pairs", {"power": 1, "metric": "cosine", "reduction": "sum"}),
    ("center_loss", {"reduction": "mean"}),
]
# anchors="local": each rank's anchors against the global batch
LOCAL_CASES = [
    ("batch_all_triplet_loss", {"reduction": "mean"}),
    ("batch_all_triplet_loss", {"soft": True, "reduction": "sum"}),
    ("batch_all_triplet_loss", {"reduction": "none", "pairs": "unordered"}),
    ("batch_hard_triplet_loss", {"margin": 0.5}),
    ("batch_hard_triplet_loss", {"metric": "sqeuclidean", "reduction": "none",
                                 "anchor_as_positive": True}),
    ("semihard_triplet_loss", {"normalize": True}),
    ("semihard_triplet_loss", {"reduction": "none", "margin": 0.3}),
    ("contrastive_loss_all_pairs", {"margin": 2.0, "reduction": "sum"}),
    ("contrastive_loss_all_pairs", {"power": 1, "metric": "cosine", "reduction": "none"}),
]
CENTER_RULES = [("wen", 0.5), ("ema", 0.3)]
RUNNING_RULES = ["wen", "ema", "mean"]


def splits(rows: int, world: int, seed: int) -> list[int]:
    """Uneven shard sizes summing to ``rows``; the second shard is empty when world > 2."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.integers(0, rows + 1, size=world - 1))
    sizes = np.diff(np.concatenate([[0], cuts, [rows]])).tolist()
    if world > 2:
        sizes[0] += sizes[1]
        sizes[1] = 0
    return sizes


def batches(world: int) -> list[dict]:
    """The global batches of the loss cases (NumPy, float64), with their split."""
    rng = np.random.default_rng(world)
    out = []
    for i, (name, options) in enumerate(LOSS_CASES):
        rows, dim, classes = 17, 3, 4
        x = rng.normal(size=(rows, dim))
        x[5] = x[2]  # an exact duplicate: euclidean distance 0 across shards
        labels = rng.integers(0, classes, size=rows)
        out.append({
            "name": name, "options": options, "x": x, "labels": labels,
            "centers": rng.normal(size=(classes, dim)), "weights": rng.uniform(size=rows),
            "sizes": splits(rows, world, seed=100 * world + i),
        })
    return out


def terms_shape(name: str, rows: int) -> tuple[int, ...]:
    """The shape of the global batch's ``reduction="none"`` terms."""
    if name == "batch_hard_triplet_loss":
        return (rows,)
    if name == "contrastive_loss_all_pairs":
        return (rows * (rows - 1) // 2,)
    return (rows, rows)


def local_batches(world: int) -> list[dict]:
    """The global batches of the local-anchor cases, with weights for the
    terms of ``reduction="none"`` (the objective is their weighted sum)."""
    rng = np.random.default_rng(50 + world)
    out = []
    for i, (name, options) in enumerate(LOCAL_CASES):
        rows, dim, classes = 17, 3, 4
        x = rng.normal(size=(rows, dim))
        x[5] = x[2]  # an exact duplicate: euclidean distance 0 across shards
        out.append({
            "name": name, "options": options, "x": x,
            "labels": rng.integers(0, classes, size=rows),
            "weights": rng.uniform(size=terms_shape(name, rows)),
            "sizes": splits(rows, world, seed=300 * world + i),
        })
    return out


def own_terms(case: dict, rank: int) -> slice:
    """Where rank's terms sit in the global batch's ``"none"`` terms (first axis)."""
    rows, sizes = case["x"].shape[0], case["sizes"]
    start, stop = sum(sizes[:rank]), sum(sizes[: rank + 1])
    if case["name"] != "contrastive_loss_all_pairs":
        return slice(start, stop)

    def first(i: int) -> int:  # pairs i < j in row-major order: row i starts here
        return i * (2 * rows - i - 1) // 2

    return slice(first(start), first(stop))


def center_batches(world: int, steps: int = 3) -> list[dict]:
    rng = np.random.default_rng(1000 + world)
    return [
        {"x": rng.normal(size=(15, 3)), "labels": rng.integers(0, 5, size=15),
         "sizes": splits(15, world, seed=2000 + 10 * world + s)}
        for s in range(steps)
    ]


def training_data(steps: int = 6, batch: int = 24) -> list[tuple[np.ndarray, np.ndarray]]:
    """Clustered inputs in 8-D, 4 classes: one global batch per step."""
    rng = np.random.default_rng(7)
    means = rng.normal(scale=2.0, size=(4, 8))
    data = []
    for _ in range(steps):
        labels = rng.integers(0, 4, size=batch)
        data.append((means[labels] + rng.normal(size=(batch, 8)), labels))
    return data


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4)
    ).double()


def _shard(a: np.ndarray, sizes: list[int], rank: int) -> np.ndarray:
    start = sum(sizes[:rank])
    return a[start : start + sizes[rank]]


def _error(fn) -> tuple[str, str] | None:
    try:
        fn()
    except (TypeError, ValueError, RuntimeError) as exc:
        return type(exc).__name__, str(exc)
    return None


def run(rank: int, world: int) -> dict:
    """Every check on this rank (inside refloss.adapters.distributed.spawn_gloo)."""
    results = {"losses": [], "local": [], "centers": {}, "running": {}, "errors": {}}
    for case in batches(world):
        results["losses"].append(_loss_case(case, rank))
    for case in local_batches(world):
        results["local"].append(_local_case(case, rank))
    for rule, alpha in CENTER_RULES:
        results["centers"][rule] = _center_case(world, rank, rule, alpha)
    for rule in RUNNING_RULES:
        running = rd.RunningCenters(5, 3, rule=rule, alpha=0.3,
                                    like=torch.zeros((), dtype=torch.float64))
        for b in center_batches(world):
            running.update(torch.tensor(_shard(b["x"], b["sizes"], rank)),
                           torch.tensor(_shard(b["labels"], b["sizes"], rank)))
        results["running"][rule] = running.state_dict()
    results["errors"] = _error_cases(rank)
    if world == 2:
        results["training"] = _train(rank, world)
    return results


def _loss_case(case: dict, rank: int) -> dict:
    fn = getattr(rd, case["name"])
    got = {}
    for grad_reduce in ("sum", "mean"):
        x = torch.tensor(_shard(case["x"], case["sizes"], rank), requires_grad=True)
        labels = torch.tensor(_shard(case["labels"], case["sizes"], rank))
        extra = ()
        if case["name"] == "center_loss":
            extra = (torch.tensor(case["centers"], requires_grad=True),)
        value = fn(x, labels, *extra, grad_reduce=grad_reduce, **case["options"])
        objective = value
        if value.ndim:
            objective = (value * torch.tensor(case["weights"])).sum()
        objective.backward()
        got[grad_reduce] = {
            "value": value.detach(), "grad": x.grad,
            "centers_grad": extra[0].grad if extra else None,
        }
    return got


def _local_case(case: dict, rank: int) -> dict:
    fn = getattr(rd, case["name"])
    got = {}
    for grad_reduce in ("sum", "mean"):
        x = torch.tensor(_shard(case["x"], case["sizes"], rank), requires_grad=True)
        labels = torch.tensor(_shard(case["labels"], case["sizes"], rank))
        value = fn(x, labels, anchors="local", grad_reduce=grad_reduce, **case["options"])
        objective = value
        if value.ndim:  # this rank's terms, weighted as in the global objective
            objective = (value * torch.tensor(case["weights"][own_terms(case, rank)])).sum()
        objective.backward()
        got[grad_reduce] = {"value": value.detach(), "grad": x.grad}
    return got


def _center_case(world: int, rank: int, rule: str, alpha: float) -> list:
    centers = torch.zeros((5, 3), dtype=torch.float64)
    trail = []
    for b in center_batches(world):
        centers = rd.update_centers(
            centers, torch.tensor(_shard(b["x"], b["sizes"], rank)),
            torch.tensor(_shard(b["labels"], b["sizes"], rank)), rule=rule, alpha=alpha,
        )
        trail.append(centers)
    return trail


def _error_cases(rank: int) -> dict:
    x = torch.randn(4, 3, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 1])
    centers = torch.zeros((2, 3), dtype=torch.float64)
    other = rank == 1
    cases = {
        "dim": lambda: rd.batch_hard_triplet_loss(
            torch.randn(4, 4 if other else 3, dtype=torch.float64), labels),
        "dtype": lambda: rd.batch_all_triplet_loss(x.float() if other else x, labels),
        "labels": lambda: rd.semihard_triplet_loss(
            x, labels[None] if other else labels),
        "bad option": lambda: rd.contrastive_loss_all_pairs(
            x, labels, margin=-1.0 if other else 1.0),
        "options differ": lambda: rd.batch_hard_triplet_loss(
            x, labels, margin=0.5 if other else 1.0),
        "requires_grad": lambda: rd.batch_hard_triplet_loss(
            x.clone().requires_grad_(other), labels),
        "label range": lambda: rd.update_centers(
            centers, x, labels + 2 if other else labels),
        "grad_reduce": lambda: rd.batch_hard_triplet_loss(x, labels, grad_reduce="avg"),
        "anchors": lambda: rd.semihard_triplet_loss(
            x, labels, anchors="mine" if other else "local"),
        "anchors differ": lambda: rd.batch_hard_triplet_loss(
            x, labels, anchors="local" if other else "global"),
        "local mean_nonzero": lambda: rd.batch_all_triplet_loss(x, labels, anchors="local"),
    }
    seen = {name: _error(fn) for name, fn in cases.items()}
    # the group still works after every refusal: nobody was left in a collective
    seen["after"] = float(rd.batch_hard_triplet_loss(x, labels))
    return seen


def _train(rank: int, world: int) -> dict:
    net = torch.nn.parallel.DistributedDataParallel(model())
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    losses = []
    for x, labels in training_data():
        sizes = [13, 11]
        xs = torch.tensor(_shard(x, sizes, rank))
        ys = torch.tensor(_shard(labels, sizes, rank))
        loss = rd.batch_hard_triplet_loss(net(xs), ys, margin=0.5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    params = torch.cat([p.detach().reshape(-1) for p in net.module.parameters()])
    return {"losses": torch.stack(losses), "params": params}


def train_single() -> dict:
    """The 1-process trajectory with the same global batches."""
    import refloss.adapters.torch as rt

    net = model()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    losses = []
    for x, labels in training_data():
        loss = rt.batch_hard_triplet_loss(net(torch.tensor(x)), torch.tensor(labels), margin=0.5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    params = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    return {"losses": torch.stack(losses), "params": params}



def raise_on_rank_one(rank: int, world: int) -> int:
    if rank == 1:
        raise ValueError("planted")
    return rank
