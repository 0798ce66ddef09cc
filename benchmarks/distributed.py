"""Data-parallel loss step on 1, 2 and 4 gloo processes: time and peak memory per rank.

    python -m benchmarks.distributed [--batch 1024 --dim 64 --worlds 1 2 4 --repeats 3]
                                     [--anchors global local]

One step is what a DDP training step adds for the loss: the metadata
agreement, the all-gather of the shards (B·D values in), the global batch's
``batch_hard_triplet_loss`` forward and backward (O(B²) on every rank), the
backward's all-reduce of the B×D gradient, and one :func:`update_centers`
(all-gather of W·C·D statistics). The global batch B is fixed and split
evenly, so the loss's work per rank stays that of the whole batch: what
shrinks with W is the encoder's share (not measured here), what grows is the
communication. Each world size runs in fresh processes (spawn, one thread
each); time is the median over ``--repeats`` steps after one warm-up step,
memory the rise of each rank's peak RSS over its RSS before the first step
(inputs made, process group up). World sizes above the number of cores oversubscribe them: the times
then measure contention too. ``--anchors local`` measures ``anchors="local"``
(each rank's anchors only: a B_r×B block per rank, the same communication).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import resource
import statistics
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a script: python benchmarks/distributed.py
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _rank(rank: int, world: int, store: str, out: str, batch: int, dim: int,
          classes: int, repeats: int, anchors: str = "global") -> None:
    import refloss.adapters.distributed as rd
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=world)
    gen = torch.Generator().manual_seed(0)
    x_all = torch.randn(batch, dim, generator=gen)
    labels_all = torch.arange(batch) % classes
    rows = torch.tensor_split(torch.arange(batch), world)[rank]
    x, labels = x_all[rows], labels_all[rows]
    centers = torch.zeros(classes, dim)

    def step() -> float:
        dist.barrier()
        start = time.perf_counter()
        xs = x.clone().requires_grad_(True)
        rd.batch_hard_triplet_loss(xs, labels, margin=0.3, anchors=anchors).backward()
        rd.update_centers(centers, xs.detach(), labels)
        return time.perf_counter() - start

    before = _current_rss_mib()
    step()  # warm-up
    times = [step() for _ in range(repeats)]
    peak = _rss_mib()
    with open(os.path.join(out, f"rank{rank}.txt"), "w") as f:
        f.write(f"{statistics.median(times)} {peak - before} {peak}\n")
    dist.destroy_process_group()


def measure(world: int, batch: int, dim: int, classes: int, repeats: int,
            anchors: str = "global") -> list[tuple]:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(_rank, args=(world, os.path.join(tmp, "store"), tmp, batch, dim,
                                        classes, repeats, anchors),
                           nprocs=world, start_method="spawn")
        out = []
        for r in range(world):
            with open(os.path.join(tmp, f"rank{r}.txt")) as f:
                out.append(tuple(float(v) for v in f.read().split()))
        return out


def paper(world: int, batch: int, dim: int, classes: int, itemsize: int = 4,
          anchors: str = "global") -> dict:
    """Bytes each rank receives per step, and the loss's distance entries per
    rank (B×B, or B_r×B with local anchors)."""
    shard = batch / world
    gather = (batch - shard) * (dim * itemsize + 8)  # rows and int64 labels in
    reduce = (world - 1) * shard * dim * itemsize  # reduce-scatter of the B×D gradient
    stats = (world - 1) * classes * (dim * itemsize + 8)
    return {"comm_mib": (gather + reduce + stats) / 2**20 if world > 1 else 0.0,
            "pairs": batch * (batch if anchors == "global" else -(-batch // world))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--classes", type=int, default=128)
    parser.add_argument("--worlds", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--anchors", nargs="+", default=["global"], choices=["global", "local"])
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(f"global batch B={args.batch}, D={args.dim}, C={args.classes}, float32, "
          f"batch_hard_triplet_loss + update_centers; {os.cpu_count()} cores\n")
    print("| processes | anchors | comm in per rank (MiB) | pairs per rank | time per step (s), "
          "median of ranks | peak RSS rise per rank (MiB) | peak RSS per rank (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for world in args.worlds:
        for anchors in args.anchors:
            ranks = measure(world, args.batch, args.dim, args.classes, args.repeats, anchors)
            p = paper(world, args.batch, args.dim, args.classes, anchors=anchors)
            t = statistics.median(r[0] for r in ranks)
            rise = max(r[1] for r in ranks)
            peak = max(r[2] for r in ranks)
            print(f"| {world} | {anchors} | {p['comm_mib']:.2f} | {p['pairs']:,} | {t:.3f} | "
                  f"{rise:.0f} | {peak:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
