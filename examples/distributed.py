"""Data-parallel metric learning with refloss on torch.distributed: 2 gloo processes on CPU.

Each rank embeds its shard of the global batch with a DistributedDataParallel
model; the batch-hard triplet loss and the center loss are those of the
global batch (every rank's shard, in rank order), and the class centers are
updated from every shard, identically on both ranks. At the end, rank 0
checks that the two processes trained exactly as one process does on the
whole batch.

    python examples/distributed.py
"""

import os
import tempfile

import refloss.adapters.distributed as rd
import refloss.adapters.torch as rt
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import refloss as rl

STEPS, BATCH, CLASSES, DIM = 4, 24, 4, 3


def data():
    gen = torch.Generator().manual_seed(0)
    means = 3 * torch.randn(CLASSES, 8, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, CLASSES, (STEPS, BATCH), generator=gen)
    return means[labels] + torch.randn(STEPS, BATCH, 8, generator=gen, dtype=torch.float64), labels


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(),
                               torch.nn.Linear(16, DIM)).double()


def train(net, loss_fn, update_fn, shard):
    """SGD steps of triplet + 0.1 x center loss; returns the losses and final centers."""
    inputs, labels = data()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    centers = torch.zeros(CLASSES, DIM, dtype=torch.float64)
    losses = []
    for x, y in zip(inputs, labels):
        x, y = x[shard], y[shard]
        emb = net(x)
        loss = loss_fn["triplet"](emb, y, margin=0.5) + 0.1 * loss_fn["center"](emb, y, centers)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        centers = update_fn(centers, emb.detach(), y, rule="wen", alpha=0.5)
        losses.append(loss.item())
    return losses, centers


def rank_main(rank, world, store):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    # uneven shards: 14 rows on rank 0, 10 on rank 1
    shard = slice(0, 14) if rank == 0 else slice(14, BATCH)
    net = torch.nn.parallel.DistributedDataParallel(model())
    losses, centers = train(
        net, {"triplet": rd.batch_hard_triplet_loss, "center": rd.center_loss},
        rd.update_centers, shard,
    )
    gathered = [None] * world
    dist.all_gather_object(gathered, centers)
    if rank == 0:
        single, single_centers = train(
            model(), {"triplet": rt.batch_hard_triplet_loss, "center": rt.center_loss},
            rl.update_centers, slice(None),
        )
        print("2 processes:", [round(v, 6) for v in losses])
        print("1 process:  ", [round(v, 6) for v in single])
        assert all(abs(a - b) <= 1e-9 * abs(b) for a, b in zip(losses, single))
        assert torch.equal(gathered[0], gathered[1])  # the same centers on both ranks
        assert torch.allclose(centers, single_centers, rtol=1e-12, atol=1e-12)
        print("same trajectory and centers as one process on the global batch")
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(rank_main, args=(2, os.path.join(tmp, "store")), nprocs=2)
