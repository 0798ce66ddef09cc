"""Distributed candidate losses for tests/test_crosscheck_distributed.py: one
correct wrapper on refloss.adapters.distributed and one planted fault of
each classic kind. Module-level, so that spawned ranks can import them."""

from __future__ import annotations

import refloss.adapters.distributed as rd
import refloss.adapters.torch as rt
import torch
import torch.distributed as dist


def correct(x, labels, margin=0.3):
    """The global batch-hard loss, gradient W·∂L/∂x_r (refloss's own wrapper)."""
    return rd.batch_hard_triplet_loss(x, labels, margin=margin)


def _plain_gather(t):
    """A plain all_gather of uneven shards (sizes first, then the rows padded
    to the largest): no backward."""
    world = dist.get_world_size()
    n = torch.tensor([t.shape[0]])
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    pad = t.new_zeros((max(sizes), *t.shape[1:]))
    pad[: t.shape[0]] = t.detach()
    out = [torch.empty_like(pad) for _ in range(world)]
    dist.all_gather(out, pad)
    return [o[:s] for o, s in zip(out, sizes)]


def no_backward(x, labels, margin=0.3):
    """Plain all_gather of everything: the gathered batch has no graph."""
    xs, ys = _plain_gather(x), _plain_gather(labels)
    return rt.batch_hard_triplet_loss(torch.cat(xs), torch.cat(ys), margin=margin)


def local_slice(x, labels, margin=0.3):
    """Plain all_gather with the local rows put back (gradient only through
    them) and no loss × W: each rank gets ∂L/∂x_r, DDP then averages it to ∂L/(W ∂θ)."""
    xs, ys = _plain_gather(x), _plain_gather(labels)
    xs[dist.get_rank()] = x
    return rt.batch_hard_triplet_loss(torch.cat(xs), torch.cat(ys), margin=margin)


class _Scale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, c):
        ctx.c = c
        return v.clone()

    @staticmethod
    def backward(ctx, g):
        return g * ctx.c, None


def times_world(x, labels, margin=0.3):
    """The differentiable gather (whose backward already sums over ranks) and
    a world-size factor on top in the backward: x_r.grad = W²·∂L/∂x_r."""
    value = rd.batch_hard_triplet_loss(x, labels, margin=margin)
    return _Scale.apply(value, dist.get_world_size())


def shard_local(x, labels, margin=0.3):
    """Each rank mines within its own shard; the values are averaged over the
    ranks so that every rank logs the same number."""
    own = rt.batch_hard_triplet_loss(x, labels, margin=margin)
    mean = own.detach().clone()
    dist.all_reduce(mean)
    return own + (mean / dist.get_world_size() - own.detach())


def own_shard(x, labels, margin=0.3):
    """No gather at all: each rank's loss of its own shard."""
    return rt.batch_hard_triplet_loss(x, labels, margin=margin)


def raises_on_rank_one(x, labels, margin=0.3):
    """Rank 1 raises before the gather: rank 0 waits in it for ever."""
    if dist.get_rank() == 1:
        raise ValueError("planted: rank 1 gives up")
    return rd.batch_hard_triplet_loss(x, labels, margin=margin)
