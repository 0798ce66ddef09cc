"""One measurement, run in a fresh process: ``python -m benchmarks --child CONFIG``.

The child builds the inputs, warms up, measures forward + backward time and
peak memory for one configuration and prints one line ``RESULT <json>`` on
stdout. Thread counts are pinned by the parent through the environment
(OMP/MKL/OpenBLAS) before NumPy loads; torch's intra-op pool is pinned here.

Protocol of one measurement:

1. imports, inputs (NumPy float64 standard normal from a fixed seed, cast
   to the dtype, moved to the backend) and the step;
2. a warm-up on the first ``min(B, 64)`` rows (lazy imports, first-call
   costs);
3. the kernel's peak-RSS counter is reset (Linux: ``/proc/self/clear_refs``)
   and the baseline read from it (interpreter, libraries, inputs); on a
   GPU, the allocator's peak is reset too;
4. one full-size step: discarded as a warm-up when it took less than
   ``slow`` seconds, kept as a sample otherwise (re-running an 8 s step only
   to throw it away buys nothing);
5. more steps until ``repeats`` samples or ``budget`` seconds of samples;
6. peak RSS (``ru_maxrss``) is read before any check runs, so the checks
   (float64 reference, dtype trace) never count in the memory;
7. on torch, one more step under :func:`benchmarks.counting.count_ops`
   gives the aten op count and the host syncs of one step.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from . import impls

MARKER = "RESULT "
WARMUP_ROWS = 64


@dataclass(frozen=True)
class Config:
    """One configuration: everything a child needs to measure it."""

    impl: str
    loss: str
    backend: str
    dtype: str
    batch: int
    labels: str
    dim: int = 128
    repeats: int = 5
    budget: float = 20.0
    slow: float = 5.0
    threads: int = 1
    accuracy: bool = False
    seed: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Config:
        return cls(**json.loads(text))


@dataclass
class Result:
    """What a child reports (the parent adds status for killed children)."""

    status: str = "ok"
    note: str = ""
    n: int = 0
    median_s: float | None = None
    min_s: float | None = None
    max_s: float | None = None
    samples: list = field(default_factory=list)
    warmup_s: float | None = None
    baseline_rss_mib: float | None = None
    peak_rss_mib: float | None = None
    peak_rss_delta_mib: float | None = None
    peak_reset: bool = False
    gpu_peak_mib: float | None = None
    gpu_peak_delta_mib: float | None = None
    value: float | None = None
    value_dtype: str | None = None
    grad_dtype: str | None = None
    rel_err_f64: float | None = None
    grad_rel_err_f64: float | None = None
    float64_ops: list | None = None
    ops: int | None = None
    syncs: int | None = None
    sync_ops: dict | None = None


# ---------------------------------------------------------------------------
# labels and inputs


LABEL_LAYOUTS = ("4-per-class", "8-classes")


def make_labels(layout: str, batch: int, seed: int):
    """Integer labels for a layout ``"K-per-class"`` (B/K classes) or ``"C-classes"``.

    The sweep uses "4-per-class" and "8-classes". The labels are shuffled by
    a fixed permutation, so that no implementation profits from classes
    stored in contiguous blocks.
    """
    import numpy as np

    count, kind = parse_layout(layout)
    rows = np.arange(batch)
    base = rows // count if kind == "per-class" else rows % count
    return np.random.default_rng(seed + 1).permutation(base).astype(np.int64)


def parse_layout(layout: str) -> tuple[int, str]:
    """``"4-per-class"`` → (4, "per-class"); ``"8-classes"`` → (8, "classes")."""
    head, _, kind = str(layout).partition("-")
    if not head.isdigit() or int(head) < 1 or kind not in ("per-class", "classes"):
        raise ValueError(
            f"labels must look like '4-per-class' or '8-classes', got {layout!r}")
    return int(head), kind


def make_embeddings(batch: int, dim: int, dtype: str, seed: int):
    """Standard-normal ``[batch, dim]`` embeddings, identical for every implementation."""
    import numpy as np

    return np.random.default_rng(seed).standard_normal((batch, dim)).astype(dtype)


class Backend:
    """The namespace, the array conversion and the synchronisation of a backend."""

    def __init__(self, name: str, threads: int):
        self.name = name
        if name == "numpy":
            import array_api_compat.numpy as xp

            self.xp = xp
            return
        if name in ("torch", "torch:cuda"):
            import array_api_compat.torch as xp
            import torch

            torch.set_num_threads(threads)
            self.torch = torch
            self.xp = xp
            self.device = torch.device("cuda" if name == "torch:cuda" else "cpu")
            if name == "torch:cuda" and not torch.cuda.is_available():
                raise LookupError("no CUDA device")
            return
        if name == "cupy":
            try:
                import cupy
            except ImportError as exc:
                raise LookupError(f"cupy not installed ({exc})") from None
            try:
                if cupy.cuda.runtime.getDeviceCount() < 1:
                    raise LookupError("no CUDA device")
            except cupy.cuda.runtime.CUDARuntimeError as exc:
                raise LookupError(f"no CUDA driver ({exc})") from None
            import array_api_compat.cupy as xp

            self.cupy = cupy
            self.xp = xp
            return
        raise ValueError(f"backend must be numpy, torch, torch:cuda or cupy, got {name!r}")

    @property
    def gpu(self) -> bool:
        return self.name in ("torch:cuda", "cupy")

    def asarray(self, a):
        if self.name == "numpy":
            return a.copy()
        if self.name == "cupy":
            return self.cupy.asarray(a)
        return self.torch.from_numpy(a.copy()).to(self.device)

    def to_numpy(self, a):
        import numpy as np

        if self.name == "numpy":
            return np.asarray(a)
        if self.name == "cupy":
            return self.cupy.asnumpy(a)
        return a.detach().cpu().numpy()

    def sync(self) -> None:
        if self.name == "torch:cuda":
            self.torch.cuda.synchronize()
        elif self.name == "cupy":
            self.cupy.cuda.Device().synchronize()

    def reset_gpu_peak(self) -> float | None:
        if self.name == "torch:cuda":
            self.torch.cuda.reset_peak_memory_stats()
            return self.torch.cuda.memory_allocated() / 2**20
        if self.name == "cupy":
            pool = self.cupy.get_default_memory_pool()
            pool.free_all_blocks()
            return pool.used_bytes() / 2**20
        return None

    def gpu_peak(self) -> float | None:
        if self.name == "torch:cuda":
            return self.torch.cuda.max_memory_allocated() / 2**20
        if self.name == "cupy":
            # CuPy keeps no high-water mark; its pool holds every block it
            # ever needed at once (freed blocks stay cached), so the pool's
            # total after the run bounds the peak from above.
            return self.cupy.get_default_memory_pool().total_bytes() / 2**20
        return None


# ---------------------------------------------------------------------------
# memory


def peak_rss_mib() -> float:
    """``ru_maxrss`` of this process in MiB (KiB on Linux, bytes on macOS)."""
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux ≥ 4.0); False where impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError, torch's CPU/CUDA allocation failures, CuPy's pool errors."""
    if isinstance(exc, MemoryError):
        return True
    text = f"{type(exc).__name__}: {exc}".lower()
    return any(s in text for s in ("out of memory", "outofmemory", "can't allocate memory",
                                   "cannot allocate memory", "not enough memory"))


# ---------------------------------------------------------------------------
# measuring


def _timed(step, backend: Backend) -> tuple[float, Any]:
    backend.sync()
    start = time.perf_counter()
    out = step()
    backend.sync()
    return time.perf_counter() - start, out


def measure(cfg: Config) -> Result:
    """Measure one configuration in this process (the child's body)."""
    import numpy as np

    result = Result()
    try:
        backend = Backend(cfg.backend, cfg.threads)
    except (LookupError, ImportError) as exc:
        return Result(status="unavailable", note=str(exc))
    if cfg.impl == "refloss-adapter":
        why = impls.adapter_available()
        if why is not None:
            return Result(status="unavailable", note=why)

    x_np = make_embeddings(cfg.batch, cfg.dim, cfg.dtype, cfg.seed)
    labels_np = make_labels(cfg.labels if cfg.impl != "floor" else "8-classes",
                            cfg.batch, cfg.seed)
    x, labels = backend.asarray(x_np), backend.asarray(labels_np)
    try:
        small = min(cfg.batch, WARMUP_ROWS)
        warm = impls.build(cfg.impl, cfg.loss, backend.asarray(x_np[:small]),
                           backend.asarray(labels_np[:small]), backend.xp)
        warm()
        step = impls.build(cfg.impl, cfg.loss, x, labels, backend.xp)
    except LookupError as exc:
        return Result(status="unavailable", note=str(exc))
    del warm
    gc.collect()
    backend.sync()

    # After the reset the peak counter restarts at the RSS of this moment:
    # reading the baseline from that same counter keeps peak ≥ baseline
    # (VmRSS and the counter disagree by the kernel's per-thread slack).
    result.peak_reset = reset_peak_rss()
    result.baseline_rss_mib = peak_rss_mib()
    gpu_base = backend.reset_gpu_peak()

    try:
        first, out = _timed(step, backend)
        samples = [first] if first >= cfg.slow else []
        result.warmup_s = None if samples else first
        while len(samples) < max(cfg.repeats, 1) and (not samples or sum(samples) < cfg.budget):
            seconds, out = _timed(step, backend)
            samples.append(seconds)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        del step
        return Result(status="OOM", note=f"{type(exc).__name__}: {str(exc)[:200]}",
                      baseline_rss_mib=result.baseline_rss_mib, peak_rss_mib=peak_rss_mib())

    result.peak_rss_mib = peak_rss_mib()
    result.peak_rss_delta_mib = max(result.peak_rss_mib - result.baseline_rss_mib, 0.0)
    if gpu_base is not None:
        result.gpu_peak_mib = backend.gpu_peak()
        result.gpu_peak_delta_mib = result.gpu_peak_mib - gpu_base
    result.samples = samples
    result.n = len(samples)
    result.median_s = float(np.median(samples))
    result.min_s, result.max_s = float(min(samples)), float(max(samples))

    value, grad = out
    if isinstance(value, (int, float)):  # a miner: the number of triplets
        result.value = float(value)
    else:
        result.value = float(backend.to_numpy(value))
        result.value_dtype = str(value.dtype).replace("torch.", "")
    if grad is not None:
        result.grad_dtype = str(grad.dtype).replace("torch.", "")
        if not np.all(np.isfinite(backend.to_numpy(grad))):
            result.note = "non-finite gradient"
    if not np.isfinite(result.value):
        result.note = "non-finite value"
    del out, value, grad
    gc.collect()
    if cfg.backend in ("torch", "torch:cuda"):
        _count(step, backend, result)
    del step
    gc.collect()
    if (cfg.accuracy and cfg.impl == "refloss" and cfg.dtype == "float32"
            and cfg.loss != "mine_semihard"):  # a miner's indices have no float64 twin
        _accuracy(cfg, backend, x_np, labels, result)
    return result


def _count(step, backend: Backend, result: Result) -> None:
    """Ops and host syncs of one more step (torch only), after the peak was read."""
    from .counting import count_ops

    try:
        _, result.ops, result.syncs, result.sync_ops = count_ops(step)
    except ImportError:  # a torch without the dispatch-mode API
        return
    backend.sync()


def _accuracy(cfg: Config, backend: Backend, x_np, labels, result: Result) -> None:
    """float32 against the float64 reference on the same (float32-rounded) input.

    On torch, the float32 step also runs under a dispatch mode that records
    every aten op whose output is float64: any entry is a silent upcast.
    """
    import numpy as np

    x64 = backend.asarray(x_np.astype(np.float64))
    v64, g64 = impls.refloss_value_and_grad(cfg.loss, x64, labels)
    v64, g64 = float(backend.to_numpy(v64)), backend.to_numpy(g64)
    del x64
    x32 = backend.asarray(x_np)
    if cfg.backend in ("torch", "torch:cuda"):
        ops, (v32, g32) = _trace_float64(backend.torch, lambda: impls.refloss_value_and_grad(
            cfg.loss, x32, labels))
        result.float64_ops = ops
    else:
        v32, g32 = impls.refloss_value_and_grad(cfg.loss, x32, labels)
    v32, g32 = float(backend.to_numpy(v32)), backend.to_numpy(g32).astype(np.float64)
    result.rel_err_f64 = abs(v32 - v64) / max(abs(v64), np.finfo(np.float64).tiny)
    norm = float(np.linalg.norm(g64))
    result.grad_rel_err_f64 = float(np.linalg.norm(g32 - g64)) / norm if norm > 0 else float(
        np.linalg.norm(g32))


def _trace_float64(torch, fn) -> tuple[list, Any]:
    try:
        from torch.utils._python_dispatch import TorchDispatchMode
    except ImportError:
        return ["(dispatch trace unavailable)"], fn()

    seen: set[str] = set()

    class Float64Ops(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor) and t.dtype == torch.float64:
                    seen.add(str(func.overloadpacket.__name__))
            return out

    with Float64Ops():
        out = fn()
    return sorted(seen), out


def main(config_json: str) -> int:
    """Child entry point: measure and print ``RESULT <json>``."""
    cfg = Config.from_json(config_json)
    try:
        result = measure(cfg)
    except Exception as exc:
        status = "OOM" if is_out_of_memory(exc) else "error"
        result = Result(status=status, note=f"{type(exc).__name__}: {str(exc)[:300]}")
    sys.stdout.write(MARKER + json.dumps(asdict(result)) + "\n")
    sys.stdout.flush()
    # Skip interpreter teardown: freeing gigabytes of arrays and torch's
    # thread pools can take seconds and measures nothing.
    os._exit(0)
