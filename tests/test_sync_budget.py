"""The GPU budget of every loss, counted on the CPU with a torch dispatch mode.

DESIGN ("GPU behaviour"): at most one device→host sync per call, none in a
backward, and a number of ops that does not grow with the batch. On CPU
tensors nothing waits, but :mod:`benchmarks.counting` sees every aten op
and names the ones a GPU would wait on, so the budget holds on every CI run.

Each loss runs through ``rl.vjp`` (the forward) and its pullback with the
number 1 (the backward: refloss makes that cotangent itself), on random,
clustered (tight classes of near-duplicate rows) and exactly duplicated
rows, with ``reduction`` "mean" and "none". ``check=False`` turns the value
checks off and, but for the soft margin's class width, every read.

``python tests/test_sync_budget.py`` prints the table of docs/benchmarks.md
("Syncs per call").
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pytest

import refloss as rl

torch = pytest.importorskip("torch")
from benchmarks.counting import counting  # noqa: E402  (the harness's counter)

DIM = 8  # the op counts do not depend on the dim
PER_CLASS = 16  # wider than the loop width of the semi-hard table path
KINDS = ("random", "clustered", "duplicated")


def _data(kind: str, b: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(b) // PER_CLASS)
    n_classes = int(labels.max()) + 1 if b else 1
    if kind == "random":
        x = rng.standard_normal((b, DIM))
    else:
        centers = 10.0 * rng.standard_normal((n_classes, DIM))
        x = centers[labels]
        if kind == "clustered":  # tight classes: every within-class pair is refined
            x = x + 1e-5 * rng.standard_normal((b, DIM))
        else:  # exact copies of each class's first row for half the batch
            x = np.where((np.arange(b) % 2 == 0)[:, None], x, rng.standard_normal((b, DIM)))
    return (
        torch.asarray(x, dtype=torch.float32),
        torch.asarray(labels, dtype=torch.int64),
        torch.asarray(10.0 * rng.standard_normal((n_classes, DIM)), dtype=torch.float32),
    )


@dataclass(frozen=True)
class Loss:
    name: str
    fn: object
    kwargs: tuple = ()

    def call(self, x, labels, centers):
        """``(fn, args)`` of one call on a labeled batch."""
        if self.fn is rl.center_loss:
            return (x, labels, centers)
        if self.fn is rl.contrastive_loss:
            return (x, torch.roll(x, 1, 0), labels == torch.roll(labels, 1, 0))
        if self.fn is rl.triplet_margin_loss:
            return (x, torch.roll(x, 1, 0), torch.roll(x, 2, 0))
        return (x, labels)


LOSSES = [
    Loss("center", rl.center_loss),
    Loss("contrastive", rl.contrastive_loss),
    Loss("contrastive_all_pairs", rl.contrastive_loss_all_pairs),
    Loss("triplet_margin", rl.triplet_margin_loss),
    Loss("batch_hard", rl.batch_hard_triplet_loss),
    Loss("batch_all", rl.batch_all_triplet_loss),
    Loss("batch_all_soft", rl.batch_all_triplet_loss, (("soft", True),)),
    Loss("semihard", rl.semihard_triplet_loss),
    Loss("hardest_negative", rl.hardest_negative_triplet_loss),
]
BY_NAME = {loss.name: loss for loss in LOSSES}


def measure(
    loss: Loss, kind: str, b: int, *, reduction: str = "mean", check: bool = True,
    anchor_rows: tuple[int, int] | None = None,
):
    """``(forward, backward)`` counters of one call."""
    args = loss.call(*_data(kind, b))
    kwargs = dict(loss.kwargs, reduction=reduction)
    if not check:
        kwargs["check"] = False
    if anchor_rows is not None:
        kwargs["anchor_rows"] = anchor_rows
    with counting() as fwd:
        _, pullback = rl.vjp(loss.fn, *args, **kwargs)
    with counting() as bwd:
        pullback(1.0)
    return fwd, bwd


# --------------------------------------------------------------------------
# syncs: at most one per call, none in the backward

SYNC_CASES = [
    pytest.param(loss, kind, reduction, id=f"{loss.name}-{kind}-{reduction}")
    for loss in LOSSES
    for kind in KINDS
    for reduction in ("mean", "none")
]


@pytest.mark.parametrize(("loss", "kind", "reduction"), SYNC_CASES)
def test_one_sync_per_call_with_checks(loss, kind, reduction):
    fwd, bwd = measure(loss, kind, 64, reduction=reduction)
    assert fwd.syncs <= 1, dict(fwd.sync_ops)
    assert bwd.syncs == 0, dict(bwd.sync_ops)


@pytest.mark.parametrize(("loss", "kind", "reduction"), SYNC_CASES)
def test_no_sync_without_checks(loss, kind, reduction):
    fwd, bwd = measure(loss, kind, 64, reduction=reduction, check=False)
    assert fwd.syncs <= SIZE_READS.get(loss.name, 0), dict(fwd.sync_ops)
    assert bwd.syncs == 0, dict(bwd.sync_ops)


# With checks off no size is read (the exact recomputation has a static
# capacity, the hinge losses skip the positive table), but for the soft
# margin's class width W: without it the soft batch-all evaluates B³
# triplets instead of B²·W.
SIZE_READS = {"batch_all_soft": 1}


# Anchor blocks (anchor_rows): the b×B block's sizes and the positive table's
# width travel in the same one read as the full batch's.
BLOCK_LOSSES = [
    BY_NAME[name]
    for name in ("contrastive_all_pairs", "batch_hard", "batch_all", "batch_all_soft", "semihard")
]


@pytest.mark.parametrize(
    ("loss", "kind", "reduction"),
    [
        pytest.param(loss, kind, reduction, id=f"{loss.name}-{kind}-{reduction}")
        for loss in BLOCK_LOSSES
        for kind in KINDS
        for reduction in ("mean", "none")
    ],
)
def test_anchor_block_is_one_sync(loss, kind, reduction):
    fwd, bwd = measure(loss, kind, 64, reduction=reduction, anchor_rows=(16, 40))
    assert fwd.syncs <= 1, dict(fwd.sync_ops)
    assert bwd.syncs == 0, dict(bwd.sync_ops)


def test_value_and_grad_is_one_sync():
    x, labels, _ = _data("clustered", 64)
    with counting() as c:
        rl.value_and_grad(rl.semihard_triplet_loss, x, labels)
    assert c.syncs <= 1, dict(c.sync_ops)


@pytest.mark.parametrize("loss", LOSSES, ids=[loss.name for loss in LOSSES])
def test_check_false_does_not_raise_on_nan(loss):
    x, labels, centers = _data("random", 32)
    x = torch.where(torch.arange(32)[:, None] == 3, float("nan"), x)
    args = loss.call(x, labels, centers)
    with pytest.raises(ValueError, match=r"^(x|a|anchor): expected finite values"):
        rl.vjp(loss.fn, *args, **dict(loss.kwargs))
    rl.vjp(loss.fn, *args, **dict(loss.kwargs, check=False))[1](1.0)  # no error


@pytest.mark.parametrize("bad", [1, None, "no"])
def test_check_must_be_a_bool(bad):
    x, labels, _ = _data("random", 8)
    with pytest.raises(TypeError, match=r"^check: expected a bool"):
        rl.batch_hard_triplet_loss(x, labels, check=bad)


# --------------------------------------------------------------------------
# the CuPy path, forced on torch: the portable row search and the generic clip


@pytest.fixture
def cupy_like(monkeypatch):
    import array_api_compat.torch as xtorch
    from array_api_compat.common import _aliases

    import refloss.mining
    import refloss.triplet

    search = refloss.mining.row_searchsorted
    portable = functools.partial(search, portable=True)
    for module in (refloss.mining, refloss.triplet):
        monkeypatch.setattr(module, "row_searchsorted", portable)
    monkeypatch.setattr(xtorch, "clip", functools.partial(_aliases.clip, xp=torch))


@pytest.mark.parametrize(
    ("loss", "kind"),
    [pytest.param(loss, kind, id=f"{loss.name}-{kind}") for loss in LOSSES for kind in KINDS],
)
def test_cupy_path_sync_budget(cupy_like, loss, kind):
    fwd, bwd = measure(loss, kind, 64)
    assert fwd.syncs <= 1, dict(fwd.sync_ops)
    assert bwd.syncs == 0, dict(bwd.sync_ops)


# --------------------------------------------------------------------------
# ops: at B = 4096 at most twice the count at B = 256

SMALL, LARGE = 256, 4096
# soft batch-all evaluates B·W·B triplets (W the class width): measured from 64 to 512
SOFT_SMALL, SOFT_LARGE = 64, 512

# The fewest B = 4096 runs that cover every loss and every kind of data.
GROWTH_CASES = [
    ("center", "random"),
    ("contrastive", "duplicated"),
    ("contrastive_all_pairs", "clustered"),
    ("triplet_margin", "random"),
    ("batch_hard", "duplicated"),
    ("batch_all", "clustered"),
    ("batch_all_soft", "random"),
    ("semihard", "random"),
    ("hardest_negative", "duplicated"),
]


@pytest.mark.parametrize(
    ("name", "kind"),
    [pytest.param(name, kind, id=f"{name}-{kind}") for name, kind in GROWTH_CASES],
)
def test_ops_nearly_independent_of_batch_size(name, kind):
    loss = BY_NAME[name]
    small, large = (SOFT_SMALL, SOFT_LARGE) if name == "batch_all_soft" else (SMALL, LARGE)
    counts = []
    for b in (small, large):
        fwd, bwd = measure(loss, kind, b)
        counts.append(fwd.ops + bwd.ops)
        assert fwd.syncs <= 1 and bwd.syncs == 0
    assert counts[1] <= 2 * counts[0], counts


# --------------------------------------------------------------------------
# the table of docs/benchmarks.md


def _table() -> None:
    """Syncs (forward + backward) and ops at B = 256, reduction "mean"."""
    print("| loss | syncs: random | clustered | duplicated | check=False | ops: random |")
    print("|---|---|---|---|---|---|")
    for loss in LOSSES:
        row = [loss.name]
        for kind in KINDS:
            fwd, bwd = measure(loss, kind, 256)
            row.append(f"{fwd.syncs} + {bwd.syncs}")
            if kind == "random":
                ops = f"{fwd.ops} + {bwd.ops}"
        try:
            off = [measure(loss, kind, 256, check=False) for kind in KINDS]
            row.append(" / ".join(f"{f.syncs} + {b.syncs}" for f, b in off))
        except TypeError:  # a version without the check option
            row.append("n/a")
        row.append(ops)
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    _table()
