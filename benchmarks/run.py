"""The benchmark sweep: refloss against pytorch-metric-learning, hand-written torch and the floor.

    python -m benchmarks --quick                  # ~2 minutes: prints the table and targets
    python -m benchmarks                          # the full sweep; writes docs/benchmarks.*
    python -m benchmarks --device cuda            # torch CUDA and CuPy, B up to 65536,
                                                  # merged into docs/benchmarks.csv
    benchmarks/gpu.sh                             # the suite on CUDA/CuPy, then the above
    python -m benchmarks --from-csv docs/benchmarks.csv --write-docs   # page from the CSV
    python -m benchmarks --from-csv other.csv --merge --write-docs     # other.csv's rows into docs/

Each configuration (implementation, loss, backend, dtype, B, label layout)
runs in a fresh subprocess with the BLAS/OpenMP/torch thread counts pinned,
under a wall-clock timeout and a memory limit (the parent watches the
child's RSS and kills it; on CPU an address-space limit backs it up). A
peer that runs out of memory or time at some B is reported so at that B
and skipped at every larger B.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import pathlib
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable

if __package__ in (None, ""):  # run as a script: python benchmarks/run.py
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from . import impls, report
from .child import MARKER, Config, parse_layout

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FULL_SIZES = (256, 512, 1024, 2048, 4096, 8192, 16384)
GPU_SIZES = (*FULL_SIZES, 32768, 65536)
QUICK_SIZES = (256, 1024)
POLL_S = 0.05
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


# ---------------------------------------------------------------------------
# one configuration in a subprocess


def child_env(threads: int) -> dict:
    """The child's environment: thread counts pinned, the repository importable."""
    env = dict(os.environ)
    for name in THREAD_VARIABLES:
        env[name] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    # A caller's PYTHONWARNINGS=error would turn a peer's harmless warning
    # into a failed measurement.
    env.pop("PYTHONWARNINGS", None)
    return env


def _rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_config(cfg: Config, *, timeout: float, mem_limit_mib: float) -> dict:
    """Measure ``cfg`` in a fresh process; the child's result plus a status.

    status: "ok", "OOM" (killed by the memory watcher, by the system, or an
    allocation failure the child reported), "timeout", "unavailable" (a
    backend or an optional module missing) or "error" (with the tail of the
    child's stderr in ``note``).
    """
    cmd = [sys.executable, "-m", "benchmarks", "--child", cfg.to_json()]
    gpu = cfg.backend in impls.GPU_BACKENDS

    def limit_address_space():
        # A safety net under the RSS watcher: one huge allocation fails at
        # once instead of paging in faster than the watcher polls. CUDA maps
        # huge virtual ranges, so never on a GPU backend.
        cap = int((1.5 * mem_limit_mib + 4096) * 2**20)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT,
                                env=child_env(cfg.threads),
                                preexec_fn=None if gpu else limit_address_space)
        start = time.monotonic()
        killed = None
        watched_peak = 0.0
        reaped = False
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    reaped = True
                    break
                rss = _rss_mib(proc.pid)
                watched_peak = max(watched_peak, rss)
                if killed is None and time.monotonic() - start > timeout:
                    killed = "timeout"
                    proc.kill()
                elif killed is None and rss > mem_limit_mib:
                    killed = "OOM"
                    proc.kill()
                time.sleep(POLL_S)
        finally:
            if not reaped:  # interrupted: never leave a child running
                proc.kill()
                proc.wait()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    wall = time.monotonic() - start
    scale = 1 if sys.platform == "darwin" else 1024
    process_peak = max(usage.ru_maxrss * scale / 2**20, watched_peak)

    lines = [ln for ln in stdout.splitlines() if ln.startswith(MARKER)]
    if killed:
        limit = (f"{timeout:g} s" if killed == "timeout" else f"{mem_limit_mib / 1024:.3g} GiB")
        result = {"status": killed, "note": f"killed after {wall:.1f} s (limit {limit})",
                  "peak_rss_mib": process_peak}
    elif lines:
        result = json.loads(lines[-1][len(MARKER):])
    elif proc.returncode == -signal.SIGKILL:
        result = {"status": "OOM", "note": "killed by the system (SIGKILL)",
                  "peak_rss_mib": process_peak}
    else:
        tail = " | ".join(stderr.strip().splitlines()[-3:])[-400:]
        result = {"status": "error", "note": f"exit {proc.returncode}: {tail}"}
    result["wall_s"] = wall
    return result


# ---------------------------------------------------------------------------
# the sweep


def plan(args: argparse.Namespace) -> list[tuple]:
    """The groups (impl, loss, backend, dtype, labels) to sweep over B, in order."""
    groups = []
    for dtype in args.dtype:
        for backend in args.backend:
            if "floor" in args.impl:
                groups.append(("floor", impls.FLOOR, backend, dtype, "-"))
            for labels in args.labels:
                for loss in args.loss:
                    for impl in args.impl:
                        if impl == "floor":
                            continue
                        if backend in impls.backends_of(impl) and loss in impls.losses_of(impl):
                            groups.append((impl, loss, backend, dtype, labels))
    return groups


def sweep(args: argparse.Namespace, rows: list[dict], *, log=sys.stderr) -> list[dict]:
    """Run every configuration into ``rows``; B ascending, all groups at one B side by side.

    Interleaving the groups at each B keeps a loss and its floor measured
    minutes apart at most, so a change in the machine's load shifts both.
    """
    groups = plan(args)
    stopped: dict[tuple, str] = {}
    total = len(groups) * len(args.sizes)
    count = 0
    for batch in args.sizes:
        for group in groups:
            count += 1
            impl, loss, backend, dtype, labels = group
            cfg = Config(impl=impl, loss=loss, backend=backend, dtype=dtype, batch=batch,
                         labels=labels, dim=args.dim, repeats=args.repeats,
                         budget=args.budget, slow=args.slow, threads=args.threads,
                         accuracy=batch <= args.accuracy_max_b, seed=args.seed)
            row = {**json.loads(cfg.to_json())}
            if group in stopped:
                result = {"status": "skipped", "note": stopped[group]}
            else:
                result = run_config(cfg, timeout=args.timeout, mem_limit_mib=args.mem_limit_mib)
                if result["status"] in ("OOM", "timeout"):
                    stopped[group] = f"{result['status']} at B={batch}"
                elif result["status"] == "unavailable":
                    stopped[group] = f"unavailable: {result.get('note', '')}"
            row.update(result)
            rows.append(row)
            print(f"[{count}/{total}] {report.progress_line(row)}", file=log, flush=True)
    return rows


# ---------------------------------------------------------------------------
# the run's description


def _read(path: str) -> str:
    try:
        return pathlib.Path(path).read_text()
    except OSError:
        return ""


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return "not installed"


def _git(*argv: str) -> str:
    try:
        return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True,
                              timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> dict:
    """CPU model, cores, RAM, OS and GPU (when asked for) of this machine."""
    cpu = next((ln.split(":", 1)[1].strip() for ln in _read("/proc/cpuinfo").splitlines()
                if ln.startswith("model name")), platform.processor() or platform.machine())
    mem = next((int(ln.split()[1]) for ln in _read("/proc/meminfo").splitlines()
                if ln.startswith("MemTotal:")), 0)
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return {"cpu": cpu, "cores": os.cpu_count() or 1, "usable_cores": usable,
            "ram_gib": round(mem / 2**20, 1), "os": platform.platform(),
            "python": platform.python_version()}


def _gpu_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return "none"


def run_metadata(args: argparse.Namespace, argv: list[str]) -> dict:
    """Everything the docs page states about a run, stored in the CSV's header."""
    commit = _git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    meta = {
        "command": " ".join(["python -m benchmarks", *argv]).strip(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "quick" if args.quick else "full",
        "sizes": list(args.sizes),
        "dim": args.dim,
        "repeats": args.repeats,
        "budget_s": args.budget,
        "slow_s": args.slow,
        "timeout_s": args.timeout,
        "mem_limit_gib": round(args.mem_limit_mib / 1024, 1),
        "threads": args.threads,
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "machine": machine(),
        "gpu": _gpu_name() if any(b in impls.GPU_BACKENDS for b in args.backend) else "not used",
        "versions": {name: _version(name) for name in (
            "numpy", "torch", "pytorch-metric-learning", "array-api-compat", "cupy",
            "refloss")},
        "commit": commit + (" + uncommitted changes" if dirty else ""),
    }
    if meta["versions"]["cupy"] == "not installed":
        meta["versions"].pop("cupy")
    return meta


# ---------------------------------------------------------------------------
# command line


def _csv_list(kind, choices: Iterable[str] | None = None):
    def parse(text: str):
        items = [s.strip() for s in text.split(",") if s.strip()]
        if not items:
            raise argparse.ArgumentTypeError("expected a comma-separated list, got nothing")
        out = []
        for item in items:
            try:
                value = kind(item)
            except ValueError:
                raise argparse.ArgumentTypeError(f"bad item {item!r}") from None
            if choices is not None and value not in choices:
                raise argparse.ArgumentTypeError(
                    f"{item!r} is not one of {', '.join(choices)}")
            out.append(value)
        return out

    return parse


def _layout(text: str) -> str:
    parse_layout(text)
    return text


def default_mem_limit_mib() -> float:
    """60 % of the machine's RAM, at most 32 GiB: a peer never takes the machine down."""
    mem = next((int(ln.split()[1]) for ln in _read("/proc/meminfo").splitlines()
                if ln.startswith("MemTotal:")), 16 * 2**20)
    return min(0.6 * mem / 1024, 32 * 1024.0)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Forward + backward time and peak memory of refloss against "
                    "pytorch-metric-learning, hand-written torch autograd and the floor "
                    "(one B×B GEMM plus one row-wise sort), each configuration in a fresh "
                    "process.")
    p.add_argument("--quick", action="store_true",
                   help="small sweep: float32, 8 classes, B in {256, 1024}, 3 repeats "
                        "(about 2 minutes on 2 quiet cores)")
    p.add_argument("--impl", type=_csv_list(str, impls.IMPLS), default=list(impls.IMPLS),
                   help=f"comma list of {', '.join(impls.IMPLS)} (default all)")
    p.add_argument("--loss", type=_csv_list(str, impls.ALL_LOSSES), default=list(impls.LOSSES),
                   help=f"comma list of {', '.join(impls.LOSSES)} (default all), or of "
                        f"the refloss-only variants {', '.join(impls.VARIANTS)}")
    p.add_argument("--device", choices=("cpu", "cuda", "all"), default="cpu",
                   help="cpu: numpy and torch; cuda: torch:cuda and cupy (default cpu)")
    p.add_argument("--backend", type=_csv_list(str, impls.CPU_BACKENDS + impls.GPU_BACKENDS),
                   help="comma list of backends (overrides --device)")
    p.add_argument("--dtype", type=_csv_list(str, ("float32", "float64")),
                   help="comma list (default float32,float64; --quick: float32)")
    p.add_argument("--labels", type=_csv_list(_layout),
                   help="comma list of label layouts 'K-per-class' / 'C-classes' "
                        "(default 4-per-class,8-classes; --quick: 8-classes)")
    p.add_argument("--sizes", type=_csv_list(int),
                   help="comma list of batch sizes B (default 256,...,16384; with cuda up "
                        "to 65536; --quick: 256,1024)")
    p.add_argument("--dim", type=int, default=128, help="embedding dimension D (default 128)")
    p.add_argument("--repeats", type=int, help="timed repeats after warm-up (default 5; "
                                               "--quick: 3)")
    p.add_argument("--budget", type=float,
                   help="seconds of timed repeats per configuration before stopping early "
                        "(default 20; --quick: 2)")
    p.add_argument("--slow", type=float, default=5.0,
                   help="a first full-size step slower than this many seconds is kept as a "
                        "sample instead of being discarded as warm-up (default 5)")
    p.add_argument("--timeout", type=float,
                   help="wall-clock seconds per configuration (default 600; --quick: 60)")
    p.add_argument("--mem-limit", type=float, dest="mem_limit_gib",
                   help="GiB of RSS per configuration (default 60%% of RAM, at most 32; "
                        "--quick: at most 8)")
    p.add_argument("--threads", type=int,
                   help="BLAS/OpenMP/torch threads per child (default: the usable cores)")
    p.add_argument("--accuracy-max-b", type=int, default=4096,
                   help="float32-vs-float64 and dtype checks for refloss up to this B "
                        "(default 4096)")
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--out", type=pathlib.Path,
                   help="directory for benchmarks.csv and benchmarks.png (default docs/ "
                        "for a full run; none for --quick)")
    p.add_argument("--write-docs", action="store_true",
                   help="write docs/benchmarks.{csv,png} and regenerate docs/benchmarks.md's "
                        "results section (implied by a full run into docs/)")
    p.add_argument("--from-csv", type=pathlib.Path,
                   help="measure nothing: report (and with --write-docs, regenerate the "
                        "page) from this CSV")
    p.add_argument("--merge", action=argparse.BooleanOptionalAction, default=None,
                   help="merge this run's rows into the existing benchmarks.csv of --out "
                        "(a row replaces the one of the same configuration) instead of "
                        "replacing the file (default: on for --device cuda, off otherwise)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the defaults that depend on --quick and --device."""
    if args.backend is None:
        args.backend = {"cpu": list(impls.CPU_BACKENDS), "cuda": list(impls.GPU_BACKENDS),
                        "all": list(impls.CPU_BACKENDS + impls.GPU_BACKENDS)}[args.device]
    gpu = any(b in impls.GPU_BACKENDS for b in args.backend)
    if args.dtype is None:
        args.dtype = ["float32"] if args.quick else ["float32", "float64"]
    if args.labels is None:
        args.labels = ["8-classes"] if args.quick else ["4-per-class", "8-classes"]
    if args.sizes is None:
        args.sizes = list(QUICK_SIZES if args.quick else GPU_SIZES if gpu else FULL_SIZES)
    args.sizes = sorted(set(args.sizes))
    if args.repeats is None:
        args.repeats = 3 if args.quick else 5
    if args.budget is None:
        args.budget = 2.0 if args.quick else 20.0
    if args.timeout is None:
        args.timeout = 60.0 if args.quick else 600.0
    if args.mem_limit_gib is not None:
        args.mem_limit_mib = args.mem_limit_gib * 1024
    else:
        # --quick stays below 8 GiB: enough for PML at B = 1024 (about 5 GiB),
        # and the B³ hand-written batch-all stops there instead of timing out.
        args.mem_limit_mib = min(default_mem_limit_mib(), 8192.0 if args.quick else math.inf)
    if args.threads is None:
        try:
            args.threads = len(os.sched_getaffinity(0))
        except AttributeError:
            args.threads = os.cpu_count() or 1
    if args.out is None and (args.write_docs or not args.quick):
        args.out = DOCS
    if args.write_docs and args.out.resolve() != DOCS.resolve():
        raise SystemExit("--write-docs writes docs/benchmarks.{md,csv,png}; "
                         f"--out must be docs/, got {args.out}")
    if args.merge is None:
        # a GPU run adds its rows to the CPU figures instead of wiping them
        args.merge = gpu and args.out is not None
    if args.merge and args.out is None:
        raise SystemExit("--merge merges into OUT/benchmarks.csv: give --out or --write-docs")
    return args


def gpu_problems(backends: Iterable[str]) -> dict[str, str]:
    """``{backend: why it cannot run here}`` for the requested GPU backends."""
    problems = {}
    for name in backends:
        if name == "torch:cuda":
            try:
                import torch
            except ImportError:
                problems[name] = "torch is not installed"
                continue
            if not torch.cuda.is_available():
                problems[name] = (f"torch.cuda.is_available() is False (torch "
                                  f"{torch.__version__}: no CUDA device, no driver, or a "
                                  "CPU-only build)")
        elif name == "cupy":
            try:
                import cupy
            except ImportError:
                problems[name] = "cupy is not installed (pip install cupy-cuda12x)"
                continue
            try:
                if cupy.cuda.runtime.getDeviceCount() < 1:
                    problems[name] = "cupy sees no CUDA device"
            except Exception as exc:  # no driver: CUDARuntimeError
                problems[name] = f"cupy finds no CUDA driver ({type(exc).__name__}: {exc})"
    return problems


def check_gpu(args: argparse.Namespace, *, log=sys.stderr) -> None:
    """Stop with a clear message when no requested GPU backend can run;
    warn when some cannot (their rows then read "unavailable")."""
    wanted = [b for b in args.backend if b in impls.GPU_BACKENDS]
    if not wanted:
        return
    problems = gpu_problems(wanted)
    text = "; ".join(f"{name}: {why}" for name, why in problems.items())
    if len(problems) == len(wanted):
        raise SystemExit(f"python -m benchmarks: no usable GPU backend for "
                         f"{', '.join(wanted)} ({text}). Run it on a machine with an NVIDIA "
                         "GPU, a CUDA build of torch and cupy (see benchmarks/gpu.sh).")
    if problems:
        print(f"warning: {text}; those rows will read 'unavailable'", file=log, flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    if args.child is not None:
        from .child import main as child_main

        return child_main(args.child)
    args = resolve(args)

    existing = None if args.out is None else args.out / "benchmarks.csv"
    if args.from_csv is not None:
        meta, rows = report.read_csv(args.from_csv)
        if (args.merge and existing is not None and existing.exists()
                and existing.resolve() != args.from_csv.resolve()):
            meta, rows = report.merge(*report.read_csv(existing), meta, rows)
    else:
        check_gpu(args)
        meta = run_metadata(args, argv)
        print(report.describe_run(meta), file=sys.stderr, flush=True)
        rows = []
        try:
            sweep(args, rows)
        except KeyboardInterrupt:
            print("interrupted: reporting what was measured", file=sys.stderr)
        if args.merge and existing is not None and existing.exists():
            meta, rows = report.merge(*report.read_csv(existing), meta, rows)
    rows = report.derive(rows)

    print(report.markdown_table(rows))
    print()
    print("Targets")
    print()
    print(report.targets_markdown(report.targets(rows)))

    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        if args.from_csv is None or args.from_csv.resolve() != (
                args.out / "benchmarks.csv").resolve():
            report.write_csv(args.out / "benchmarks.csv", meta, rows)
        png = args.out / "benchmarks.png"
        if args.no_plot:
            pass
        elif not report.plot(rows, meta, png):
            print("matplotlib is not installed: no plot written", file=sys.stderr)
        if args.out.resolve() == DOCS.resolve():
            report.write_docs(DOCS / "benchmarks.md", meta, rows)
        print(f"\nwrote {args.out}/benchmarks.csv" + ("" if args.no_plot else ", benchmarks.png")
              + (", docs/benchmarks.md" if args.out.resolve() == DOCS.resolve() else ""),
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
