r"""Data-parallel refloss on ``torch.distributed``: every rank passes its shard, every
rank gets the loss of the global batch.

The global batch is the concatenation of the shards in rank order,
:math:`X = [X_0; X_1; \dots; X_{W-1}]` with labels :math:`Y` likewise (shards
may have different numbers of rows, including none). Each labeled-batch loss
here is the function of the same name in :mod:`refloss.adapters.torch`, with
the same keyword options and defaults, applied to :math:`(X, Y)`:

* forward: one small all-gather of each rank's metadata (three integers:
  failed or not, rows, a digest of D, dtypes and options; the full metadata
  and the error follow only when a shard is malformed or the ranks disagree:
  then *every* rank raises, none hangs), then an all-gather of the rows
  padded to the largest shard, unpadded and concatenated; labels likewise.
  Every rank computes the loss of the same global batch, so the value is bit
  for bit the same on every rank, and its value checks (one read, none with
  ``check=False`` but the sizes of a distance matrix) fail alike on every rank;
* backward (:math:`J_r` the objective rank r differentiates, usually the loss
  itself): the gradient of the gathered batch is summed over ranks and each
  rank receives the rows it owns (one reduce-scatter),

  .. math::
      \texttt{x\_shard.grad} = \sum_r \partial J_r/\partial X_{\text{own rows}}
      = W\,\partial L/\partial X_{\text{own rows}}
      \quad (J_r = L \text{ on every rank}),

  so that after DistributedDataParallel *averages* parameter gradients over the
  W ranks they equal the single-process gradient of :math:`L`. With
  ``grad_reduce="mean"`` the sum is divided by W, and each rank sees the
  plain :math:`\partial L/\partial X_{\text{own rows}}` (for a loop that sums
  gradients itself, or no DDP).

**Local anchors** (``anchors="local"``, the four labeled-batch losses): rank
r's loss has only the anchors of its own rows :math:`A_r` (start = the rows of
the ranks before it), against the whole gathered batch: it returns
:math:`L_r` = the core loss with ``anchor_rows=(start, start + B_r)`` on
:math:`(X, Y)` — O(B_r·B) distances per rank instead of O(B²), the same
communication. ``"sum"``: the sum of the terms of its anchors; ``"mean"``:
that sum over the number of terms of the global batch; ``"none"``: its
anchors' terms (``"mean_nonzero"`` is refused). So :math:`\sum_r L_r = L`
(``"none"``: the terms concatenate, in rank order, to those of L): an
all-reduce (sum) of the detached values gives L. The backward routes every
rank's gradient to the owner of the rows as above; as the ranks' objectives
are now the parts of L, :math:`\sum_r \partial L_r/\partial X = \partial
L/\partial X`, and ``grad_reduce`` keeps its meaning in terms of L:
``"sum"`` gives :math:`W\,\partial L/\partial X_{\text{own rows}}` (the
backward multiplies by W), ``"mean"`` gives :math:`\partial L/\partial
X_{\text{own rows}}`. In general x_shard.grad :math:`= c \sum_r \partial
J_r/\partial X_{\text{own rows}}` with c = W (``"sum"``) or 1 (``"mean"``).
The gradients, hence DDP's averaged parameter gradient and the training
trajectory, are those of ``anchors="global"``; only the returned value is
each rank's part.

Every rank must call the loss and backpropagate through it (the backward is a
collective, as DDP's own). Centers: :func:`update_centers` and
:class:`RunningCenters` fold the per-class statistics of all shards, gathered
and summed in rank order on every rank, so the new centers are bit-identical
across ranks; :func:`center_loss` is the center loss of the global batch.

Reference: PyTorch, ``torch.distributed`` collectives and
``DistributedDataParallel`` (gradients averaged over ranks);
pytorch-metric-learning's ``DistributedLossWrapper`` (which multiplies by the
world size for the same reason).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

import array_api_compat.torch as _xtorch
import torch
import torch.distributed as dist

import refloss as rl
from refloss import _checks

from . import _bind
from . import torch as _rt

__all__ = [
    "RunningCenters",
    "all_gather_rows",
    "batch_all_triplet_loss",
    "batch_hard_triplet_loss",
    "center_loss",
    "contrastive_loss_all_pairs",
    "semihard_triplet_loss",
    "spawn_gloo",
    "update_centers",
    "wrap",
]

Tensor = torch.Tensor

GRAD_REDUCTIONS = ("sum", "mean")
# whose anchors a rank's loss has: the global batch's, or its own shard's
ANCHORS = ("global", "local")


# --------------------------------------------------------------------------
# process group and cross-rank agreement


def _world(group: Any) -> tuple[int, int]:
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "refloss.adapters.distributed: no torch.distributed process group is "
            "initialised; call torch.distributed.init_process_group(...) on every rank "
            "first (on one process use refloss.adapters.torch)"
        )
    return dist.get_rank(group), dist.get_world_size(group)


def _agree(group: Any, local: Callable[[], dict]) -> list[dict]:
    """Every rank's metadata, or the same exception on every rank.

    ``local()`` validates this rank's input and returns its metadata (host
    values only: shapes, dtypes, options). Every rank sends three integers —
    failed or not, its rows, a digest of the rest — in one ``all_gather`` of
    a small int64 tensor, read back once (on a CPU group no device read at
    all). When a rank failed or the digests differ, the full metadata and
    the TypeError / ValueError follow in an ``all_gather_object``, so that a
    malformed shard on one rank makes every rank raise (the same message)
    instead of leaving the others in a collective.
    """
    rank, world = _world(group)
    try:
        meta: Any = local()
    except (TypeError, ValueError) as exc:
        meta = exc
    failed = isinstance(meta, BaseException)
    mine = [int(failed), 0 if failed else int(meta.get("rows", 0)),
            0 if failed else _digest(meta)]
    device = _object_device(group)
    pieces = [torch.empty(3, dtype=torch.int64, device=device) for _ in range(world)]
    dist.all_gather(pieces, torch.tensor(mine, dtype=torch.int64, device=device), group=group)
    table = torch.stack(pieces).cpu().tolist()  # the one read
    if not any(f for f, _, _ in table) and len({d for _, _, d in table}) == 1:
        return [{**meta, "rows": rows} for _, rows, _ in table]
    return _agree_slowly(group, meta, rank, world)


def _digest(meta: dict) -> int:
    """The metadata but its rows (which may differ per rank) as a 56-bit int."""
    text = repr(sorted((k, v) for k, v in meta.items() if k != "rows"))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=7).digest(), "big")


def _object_device(group: Any) -> torch.device:
    """Where the group's collectives take small host values (CPU for gloo,
    the current GPU for NCCL), as ``all_gather_object`` picks it."""
    try:
        from torch.distributed.distributed_c10d import _get_object_coll_device

        return torch.device(_get_object_coll_device(group))
    except (ImportError, AttributeError, RuntimeError, TypeError, ValueError):
        return torch.device("cpu")


def _agree_slowly(group: Any, meta: Any, rank: int, world: int) -> list[dict]:
    """The failure path of :func:`_agree`: every rank's metadata or exception."""
    gathered: list = [None] * world
    dist.all_gather_object(gathered, meta, group=group)
    for r, m in enumerate(gathered):
        if isinstance(m, BaseException):
            if r == rank:
                raise m
            raise type(m)(f"{m} (on rank {r} of {world}; every rank raises)")
    return gathered


def _same_everywhere(gathered: list[dict], key: str, name: str, what: str) -> None:
    first = gathered[0][key]
    for r, m in enumerate(gathered):
        if m[key] != first:
            kind = TypeError if key.endswith("dtype") else ValueError
            raise kind(
                f"{name}: expected the same {what} on every rank, got {first} on "
                f"rank 0 and {m[key]} on rank {r}"
            )


def _shard_meta(x: Any, labels: Any) -> dict:
    _rt._require_tensors(("x", "labels"), (x, labels))
    xp = _checks.namespace(x=x, labels=labels)
    _checks.check_rank("x", x, 2, "[B, D] embeddings")
    _checks.check_float(xp, "x", x)
    _checks.check_labels(xp, "labels", labels, x.shape[0], "x")
    return {
        "rows": int(x.shape[0]), "dim": int(x.shape[1]), "x dtype": str(x.dtype),
        "labels dtype": str(labels.dtype), "requires_grad": bool(x.requires_grad),
    }


def _check_shards(gathered: list[dict]) -> None:
    _same_everywhere(gathered, "dim", "x", "dim D")
    _same_everywhere(gathered, "x dtype", "x", "dtype")
    _same_everywhere(gathered, "labels dtype", "labels", "dtype")
    _same_everywhere(gathered, "requires_grad", "x", "requires_grad (the backward is a "
                     "collective every rank must join)")


# --------------------------------------------------------------------------
# the differentiable all-gather of rows


def _gather_padded(t: Tensor, rows: list[int], group: Any) -> Tensor:
    """All-gather tensors whose first dimension differs per rank: pad to the
    largest (at least 1 row), gather, cut each piece back, concatenate."""
    size = max(max(rows), 1)
    padded = t.new_zeros((size, *t.shape[1:]))
    padded[: t.shape[0]] = t
    pieces = [torch.empty_like(padded) for _ in rows]
    dist.all_gather(pieces, padded.contiguous(), group=group)
    return torch.cat([p[:n] for p, n in zip(pieces, rows)])


class _AllGatherRows(torch.autograd.Function):
    """Forward: the rows of every rank, in rank order. Backward: this rank's
    rows of the gathered gradient summed over ranks (or averaged)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, rows: list[int], group: Any, grad_reduce: str,
                parts: bool = False) -> Tensor:
        ctx.group, ctx.grad_reduce, ctx.rows, ctx.parts = group, grad_reduce, rows, parts
        ctx.rank = dist.get_rank(group)
        return _gather_padded(x.detach(), rows, group)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple:
        # every rank's objective may depend on every rank's rows: the owner of
        # a row collects the sum over ranks of the gradient with respect to it
        # (a reduce-scatter of the gathered gradient, padded to equal chunks)
        rows, size = ctx.rows, max(max(ctx.rows), 1)
        chunks = []
        for piece, n in zip(torch.split(grad, rows), rows):
            chunk = grad.new_zeros((size, *grad.shape[1:]))
            chunk[:n] = piece
            chunks.append(chunk)
        own = torch.empty_like(chunks[0])
        _reduce_scatter(own, chunks, ctx.group)
        own = own[: rows[ctx.rank]]
        # the sum over ranks is W·∂L/∂X when every rank computes L (global
        # anchors), and ∂L/∂X when the ranks' losses are the parts of L (local
        # anchors): "sum" gives W·∂L/∂X and "mean" ∂L/∂X either way
        if ctx.grad_reduce == "mean" and not ctx.parts:
            own = own / len(rows)
        elif ctx.grad_reduce == "sum" and ctx.parts:
            own = own * len(rows)
        return own, None, None, None, None


def _reduce_scatter(out: Tensor, chunks: list[Tensor], group: Any) -> None:
    try:
        dist.reduce_scatter(out, chunks, group=group)
    except (RuntimeError, NotImplementedError):  # a backend without reduce_scatter
        total = torch.cat(chunks)
        dist.all_reduce(total, group=group)
        out.copy_(total[dist.get_rank(group) * out.shape[0]:][: out.shape[0]])


def all_gather_rows(
    x: Tensor, labels: Tensor, *, group: Any = None, grad_reduce: str = "sum"
) -> tuple[Tensor, Tensor]:
    r"""The global batch ``(X, Y)``: every rank's shard in rank order, differentiable in ``x``.

    Shards may differ in their number of rows (an empty shard too), not in
    D, dtype or ``requires_grad``; a malformed shard on any rank makes every
    rank raise. The gradient of ``x`` is :math:`\sum_r \partial J_r/\partial X`
    restricted to this rank's rows (``grad_reduce="sum"``), or that divided
    by the world size (``"mean"``).

    Args:
        x: ``[B_r, D]`` floating embeddings of this rank.
        labels: ``[B_r]`` integer labels of this rank.
        group: the process group (default: the world).
        grad_reduce: ``"sum"`` (default) or ``"mean"``.

    Returns:
        ``(X [B, D], Y [B])`` with :math:`B = \sum_r B_r`, on ``x``'s device.
    """
    return _gather(x, labels, group, grad_reduce, lambda: {})[:2]


def _gather(x: Any, labels: Any, group: Any, grad_reduce: str,
            more: Callable[[], dict], parts: bool = False) -> tuple[Tensor, Tensor, list[int]]:
    def local() -> dict:
        _checks.check_choice("grad_reduce", grad_reduce, GRAD_REDUCTIONS)
        return {**_shard_meta(x, labels), "grad_reduce": grad_reduce, **more()}

    gathered = _agree(group, local)
    _check_shards(gathered)
    for key in ("grad_reduce", "options", "others"):
        if key in gathered[0]:
            _same_everywhere(gathered, key, key if key != "others" else "centers", "value")
    rows = [m["rows"] for m in gathered]
    return (
        _AllGatherRows.apply(x, rows, group, grad_reduce, parts),
        _gather_padded(labels, rows, group),
        rows,
    )


# --------------------------------------------------------------------------
# the losses: torch adapter's functions on the gathered batch


def wrap(twin: Callable) -> Callable:
    r"""The distributed version of a ``refloss.adapters.torch`` function whose
    first two parameters are ``(x, labels)``: same signature, plus the
    keyword-only ``group=None`` and ``grad_reduce="sum"``; ``x`` and ``labels``
    are this rank's shard, any further array (``centers``) is the same on every
    rank, and the result is ``twin`` of the global batch.

    A twin with ``anchor_rows`` (the labeled-batch losses) has instead
    ``anchors="global"`` (the loss of the global batch) or ``"local"`` (the
    part of it whose anchors are this rank's rows, ``twin(X, Y,
    anchor_rows=(start, stop))`` of the gathered batch; see the module
    docstring and ``docs/distributed.md``).
    """
    params = _bind.parameters(twin)
    if params.arrays[:2] != ("x", "labels"):
        raise TypeError(
            f"twin: expected a function of (x, labels, ...), got {twin.__name__}"
            f"({', '.join(params.arrays)})"
        )
    blocks = "anchor_rows" in params.option_names
    extra = (
        *([inspect.Parameter("anchors", inspect.Parameter.KEYWORD_ONLY, default="global")]
          if blocks else []),
        inspect.Parameter("group", inspect.Parameter.KEYWORD_ONLY, default=None),
        inspect.Parameter("grad_reduce", inspect.Parameter.KEYWORD_ONLY, default="sum"),
    )
    signature = params.signature.replace(parameters=[
        *(p for p in params.signature.parameters.values() if p.name != "anchor_rows"), *extra,
    ])

    @functools.wraps(twin)
    def distributed(*args: Any, group: Any = None, grad_reduce: str = "sum", **kwargs: Any):
        # bound against the public signature: no anchor_rows, anchors only
        # where the twin has anchor blocks
        bound = signature.bind(*args, group=group, grad_reduce=grad_reduce, **kwargs)
        anchors = bound.arguments.get("anchors", "global")
        kwargs.pop("anchors", None)
        arrays, options = _bind.bind(params, args, kwargs)
        options.pop("anchor_rows", None)  # set below from the shards' sizes
        others = arrays[2:]
        local = anchors == "local"

        def more() -> dict:
            # options and the shared arrays' layout checked on every rank
            # before any data moves: a rank whose forward raised would leave
            # the others waiting in the backward's reduce-scatter
            _checks.check_choice("anchors", anchors, ANCHORS)
            _rt._require_tensors(params.arrays[2:], others)
            block = {"anchor_rows": (0, 0)} if local else {}
            # the core's option checks, on an empty batch: nothing to read
            quiet = {"check": False} if "check" in params.option_names else {}
            with torch.no_grad():
                twin(arrays[0][:0], arrays[1][:0], *others, **{**options, **quiet}, **block)
            return {"options": repr(sorted({**options, "anchors": anchors}.items())),
                    "others": [(tuple(a.shape), str(a.dtype)) for a in others]}

        x, labels, rows = _gather(arrays[0], arrays[1], group, grad_reduce, more, local)
        if not local:
            return twin(x, labels, *others, **options)
        start = sum(rows[: dist.get_rank(group)])
        stop = start + int(arrays[0].shape[0])
        return twin(x, labels, *others, **options, anchor_rows=(start, stop))

    distributed.__module__ = __name__
    distributed.__signature__ = signature
    distributed.__doc__ = (
        f"``refloss.adapters.torch.{twin.__name__}`` of the global batch (the shards of "
        f"every rank in rank order), called on each rank with its shard; see "
        f":mod:`refloss.adapters.distributed` for the gradient convention "
        f"(``grad_reduce``) and ``docs/distributed.md``.\n\n"
        f"Formula, options and gradient (of the global batch):\n\n{twin.__doc__ or ''}"
    )
    return distributed


batch_all_triplet_loss = wrap(_rt.batch_all_triplet_loss)
batch_hard_triplet_loss = wrap(_rt.batch_hard_triplet_loss)
semihard_triplet_loss = wrap(_rt.semihard_triplet_loss)
contrastive_loss_all_pairs = wrap(_rt.contrastive_loss_all_pairs)
center_loss = wrap(_rt.center_loss)


# --------------------------------------------------------------------------
# centers: per-class statistics summed over ranks, the same bits everywhere


def _global_stats(x: Any, labels: Any, centers: Any, group: Any,
                  accumulate: Callable[[Tensor], torch.dtype], check: bool,
                  fetch: _checks.Fetch) -> tuple[Tensor, Tensor]:
    """``(s, n)`` of the global batch on every rank, bit-identical across ranks,
    with the sums in ``accumulate(centers)``.

    Each rank's statistics are all-gathered and summed in rank order on every
    rank. An all-reduce would move less data (C·D instead of W·C·D) but may
    add the ranks' sums in a different order on different ranks (ring and
    tree algorithms do), which would let the centers drift apart by rounding.

    The value checks of every shard (``x`` finite, labels in ``[0, C)``)
    travel with the counts, as one more entry per rank, and are queued in
    ``fetch`` (the caller's one read); a failed one makes every rank raise
    the failing rank's error.
    """

    def local() -> dict:
        _rt._require_tensors(("centers",), (centers,))
        meta = _shard_meta(x, labels)
        _checks.check_rank("centers", centers, 2, "[C, D] centers")
        if x.dtype != centers.dtype:
            raise TypeError(f"x: expected the dtype of the centers ({centers.dtype}), "
                            f"got {x.dtype}")
        if x.shape[1] != centers.shape[1]:
            raise ValueError(f"x: expected D = {centers.shape[1]} columns (the centers' "
                             f"dim), got {x.shape[1]}")
        _checks.namespace(x=x, labels=labels, centers=centers)
        _checks.check_flag("check", check)
        return {**meta, "centers": (tuple(centers.shape), str(centers.dtype)), "check": check}

    def shard_values() -> dict:  # the failure path: every rank's own message
        xp = _checks.namespace(x=x, labels=labels, centers=centers)
        _checks.check_label_range(xp, "labels", labels, centers.shape[0])
        _checks.check_finite(xp, "x", x)
        return {}

    gathered = _agree(group, local)
    _check_shards(gathered)
    _same_everywhere(gathered, "centers", "centers", "shape and dtype")
    _same_everywhere(gathered, "check", "check", "value")
    fetch.check = check  # validated on every rank by now
    num_classes = centers.shape[0]
    with torch.no_grad():
        x = x.detach()
        sums, counts = rl.center_stats(x.to(accumulate(centers)), labels, num_classes,
                                       check=False)
        if check:
            ok = torch.isfinite(x).all()
            if labels.shape[0]:
                ok = ok & (labels.min() >= 0) & (labels.max() < num_classes)
            counts = torch.cat([counts, ok.to(counts.dtype)[None]])
        world = len(gathered)
        all_sums = [torch.empty_like(sums) for _ in range(world)]
        all_counts = [torch.empty_like(counts) for _ in range(world)]
        dist.all_gather(all_sums, sums.contiguous(), group=group)
        dist.all_gather(all_counts, counts.contiguous(), group=group)
        total_sums, total_counts = all_sums[0], all_counts[0][:num_classes]
        for s, n in zip(all_sums[1:], all_counts[1:]):
            total_sums = total_sums + s
            total_counts = total_counts + n[:num_classes]
        if check:
            every = torch.stack([n[num_classes] for n in all_counts]).min() > 0
            fetch.require(lambda: every, lambda: _agree(group, shard_values))
    return total_sums, total_counts


def update_centers(
    centers: Tensor, x: Tensor, labels: Tensor, *, rule: str = "wen", alpha: float = 0.5,
    check: bool = True, group: Any = None,
) -> Tensor:
    r"""New centers after the global batch: :func:`refloss.update_centers` of
    the concatenated shards, the same bits on every rank.

    Each rank passes its shard ``(x, labels)`` and the common ``centers``
    (identical on every rank: start from the same init and apply this update
    everywhere). The per-class statistics :math:`s_j = \sum_{y_i = j} x_i`,
    :math:`n_j` of every shard are gathered and summed in rank order on every
    rank, then folded in by ``rule`` (``"wen"``: :math:`c_j \leftarrow c_j -
    \alpha (n_j c_j - s_j)/(1 + n_j)`; ``"ema"``: :math:`c_j \leftarrow
    (1-\alpha) c_j + \alpha s_j/n_j` for classes present). Equal to the
    single-process update on the concatenated batch up to the order of the
    class sums' additions (exact in float64 to rounding; bit-identical across
    ranks always). Nothing is differentiated; ``x`` is detached.

    Args:
        centers: ``[C, D]`` current centers, the same on every rank.
        x: ``[B_r, D]`` this rank's embeddings (dtype of ``centers``).
        labels: ``[B_r]`` this rank's labels in ``[0, C)``.
        rule: ``"wen"`` or ``"ema"``.
        alpha: step in ``[0, 1]``.
        check: check every shard (``x`` finite, labels in range) and
            ``centers`` (finite) in one read (default True; the same on every
            rank); ``check=False`` reads nothing.
        group: the process group (default: the world).

    Returns:
        ``[C, D]`` new centers, dtype and device of ``centers``.
    """
    fetch = _checks.Fetch(_xtorch)  # check is validated with every rank's input
    sums, counts = _global_stats(
        x, labels, centers, group, lambda c: _checks.compute_dtype(torch, c.dtype), check, fetch
    )
    fetch.finite("centers", centers)
    fetch.done()
    return rl.update_centers_from_stats(
        centers, sums.to(centers.dtype), counts, rule=rule, alpha=alpha, check=False
    )


class RunningCenters(rl.RunningCenters):
    r""":class:`refloss.RunningCenters` fed by the shards of every rank.

    ``update(x, labels)`` on each rank with its shard folds in the global
    batch's statistics (gathered, summed in rank order), so the state —
    centers, running sums and counts — stays bit-identical across ranks and
    equals a single-process ``RunningCenters`` fed the concatenated batches.
    ``update_from_stats`` folds in statistics as given (already global).
    Same constructor as :class:`refloss.RunningCenters` plus ``group``.
    """

    def __init__(self, num_classes: int, dim: int, *, group: Any = None, **kwargs: Any) -> None:
        super().__init__(num_classes, dim, **kwargs)
        self._group = group

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_group"] = None  # a process group does not pickle
        return state

    def update(self, x: Tensor, labels: Tensor, *, check: bool = True) -> Tensor:
        """Fold in the global batch (every rank's shard); ``check`` as in
        :meth:`refloss.RunningCenters.update` (every shard's values and the
        new state, one read), the same on every rank."""
        wide = self._sums.dtype  # the running sums' accumulator dtype
        fetch = _checks.Fetch(_xtorch)  # check is validated with every rank's input
        sums, counts = _global_stats(x, labels, self._centers, self._group, lambda c: wide,
                                     check, fetch)
        return self._fold_stats(sums, counts, fetch)


# --------------------------------------------------------------------------
# a gloo group of CPU processes, for tests and cross-checks


def spawn_gloo(fn: Callable, world_size: int, *args: Any, timeout: float = 300.0) -> list:
    """Run ``fn(rank, world_size, *args)`` on every rank of a fresh gloo group of
    ``world_size`` spawned CPU processes; return the ranks' results in rank order.

    ``fn`` must be importable by the children (a module-level function) and
    its result picklable. Each rank runs with one intra-op thread, and the
    group is set up (file store) and torn down around ``fn``. A rank's
    exception is raised here as a RuntimeError carrying its traceback; a
    group still running after ``timeout`` seconds is killed and reported
    (a rank left in a collective).
    """
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        context = mp.start_processes(
            _spawned_rank, args=(fn, world_size, args, tmp), nprocs=world_size,
            join=False, start_method="spawn",
        )
        deadline = time.monotonic() + timeout
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                for process in context.processes:
                    process.kill()
                raise RuntimeError(
                    f"spawn_gloo: the {world_size}-process group did not finish within "
                    f"{timeout} s (a rank is waiting in a collective)"
                )
        results = [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=False)
                   for r in range(world_size)]
    for rank, (ok, value) in enumerate(results):
        if not ok:
            raise RuntimeError(f"spawn_gloo: rank {rank} raised:\n{value}")
    return [value for _, value in results]


def _spawned_rank(rank: int, fn: Callable, world: int, args: tuple, tmp: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(tmp, 'store')}",
                            rank=rank, world_size=world)
    try:
        outcome = (True, fn(rank, world, *args))
    except Exception:  # shipped to the parent, which raises it
        outcome = (False, traceback.format_exc())
    finally:
        dist.destroy_process_group()
    torch.save(outcome, os.path.join(tmp, f"rank{rank}.pt"))
