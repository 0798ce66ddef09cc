"""Forward + backward of the O(B² log B) triplet losses at a large batch, on NumPy.

Runs ``refloss.value_and_grad`` of the batch-all (hinge) and semi-hard
triplet losses, each in a fresh subprocess, and prints a Markdown table with
the wall time of the call and the peak resident memory of the child process
(``ru_maxrss``, from ``os.wait4``). Memory is O(B²): at B = 8192 one B×B
float32 matrix is 256 MiB, one B×B int64 index matrix 512 MiB.

    python benchmarks/scale.py [--batch 8192 --dim 128 --dtype float32]

The batch is P×K shaped (K = 8 samples per class), embeddings standard
normal, default margin and metric (euclidean).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

LOSSES = {
    "batch_all (hinge)": "batch_all_triplet_loss",
    "semi-hard": "semihard_triplet_loss",
}
SAMPLES_PER_CLASS = 8


def child(loss: str, batch: int, dim: int, dtype: str) -> None:
    import numpy as np

    import refloss as rl

    fn = getattr(rl, LOSSES[loss])
    rng = np.random.default_rng(0)
    labels = np.arange(batch) // SAMPLES_PER_CLASS
    # warm-up on a tiny batch: imports and first-call costs stay out of the timing
    rl.value_and_grad(fn, rng.standard_normal((16, dim)).astype(dtype), labels[:16])
    x = rng.standard_normal((batch, dim)).astype(dtype)
    start = time.perf_counter()
    value, (gx, _) = rl.value_and_grad(fn, x, labels)
    seconds = time.perf_counter() - start
    assert np.isfinite(float(value)) and np.all(np.isfinite(gx))
    print(json.dumps({"seconds": seconds, "value": float(value)}))


def run_child(loss: str, batch: int, dim: int, dtype: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", loss,
           "--batch", str(batch), "--dim", str(dim), "--dtype", dtype]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{loss}: child failed with {proc.returncode}\n{err}")
    result = json.loads(out.strip().splitlines()[-1])
    # ru_maxrss is in KiB on Linux, in bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    result["peak_rss_mib"] = usage.ru_maxrss * scale / 2**20
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--child", choices=list(LOSSES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.batch, args.dim, args.dtype)
        return
    itemsize = 4 if args.dtype == "float32" else 8
    print("| loss | B | D | dtype | seconds | peak RSS (MiB) |")
    print("|---|---:|---:|---|---:|---:|")
    for loss in LOSSES:
        r = run_child(loss, args.batch, args.dim, args.dtype)
        print(f"| {loss} | {args.batch} | {args.dim} | {args.dtype} | "
              f"{r['seconds']:.2f} | {r['peak_rss_mib']:.0f} |", flush=True)
    b2 = args.batch * args.batch * itemsize / 2**20
    print(f"\nOne B×B {args.dtype} matrix: {b2:.0f} MiB. forward + backward "
          f"(refloss.value_and_grad), one call after a warm-up, NumPy, "
          f"{os.cpu_count()} CPU(s).")


if __name__ == "__main__":
    main()
