"""Forward + backward of the O(B² log B) triplet losses at one large batch, on NumPy.

A front end of the benchmark harness (``python -m benchmarks``) kept for its
short command: it measures ``refloss.value_and_grad`` of the batch-all
(hinge) and semi-hard triplet losses, each in a fresh subprocess with the
harness's protocol (warm-up, pinned threads, peak RSS above the baseline
and absolute), and prints a Markdown table. Memory is O(B²): at B = 8192
one B×B float32 matrix is 256 MiB, one B×B int64 index matrix 512 MiB.

    python benchmarks/scale.py [--batch 8192 --dim 128 --dtype float32 --repeats 1]

The batch is P×K shaped (K = 8 samples per class), embeddings standard
normal, default margin and metric (euclidean). The full comparison against
peers and the floor is ``python -m benchmarks``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

if __package__ in (None, ""):  # run as a script: python benchmarks/scale.py
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from .child import Config
from .run import default_mem_limit_mib, run_config

LOSSES = {"batch_all (hinge)": "batch_all", "semi-hard": "semihard"}
LABELS = "8-per-class"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed runs after the warm-up (median reported; default 1)")
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args(argv)
    try:
        threads = len(os.sched_getaffinity(0))
    except AttributeError:
        threads = os.cpu_count() or 1
    print("| loss | B | D | dtype | seconds | peak RSS (MiB) | peak above baseline (MiB) |")
    print("|---|---:|---:|---|---:|---:|---:|")
    failed = False
    for title, loss in LOSSES.items():
        cfg = Config(impl="refloss", loss=loss, backend="numpy", dtype=args.dtype,
                     batch=args.batch, labels=LABELS, dim=args.dim, repeats=args.repeats,
                     budget=1e9, slow=0.0, threads=threads)
        r = run_config(cfg, timeout=args.timeout, mem_limit_mib=default_mem_limit_mib())
        if r["status"] != "ok":
            failed = True
            print(f"| {title} | {args.batch} | {args.dim} | {args.dtype} | {r['status']} "
                  f"| | | ", flush=True)
            print(f"  {r.get('note', '')}", file=sys.stderr)
            continue
        print(f"| {title} | {args.batch} | {args.dim} | {args.dtype} | {r['median_s']:.2f} "
              f"| {r['peak_rss_mib']:.0f} | {r['peak_rss_delta_mib']:.0f} |", flush=True)
    itemsize = 4 if args.dtype == "float32" else 8
    b2 = args.batch * args.batch * itemsize / 2**20
    print(f"\nOne B×B {args.dtype} matrix: {b2:.0f} MiB. forward + backward "
          f"(refloss.value_and_grad), median of {args.repeats} after a warm-up, NumPy, "
          f"{threads} thread(s).")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
