"""A gloo group of CPU processes that stays alive between tasks: the
distributed cross-check sends it one batch after another instead of paying
a process spawn (seconds) per batch.

Each rank serves tasks from its own pipe: a task is a picklable
``(step, payload)``; the rank runs ``step(rank, world_size, payload)`` inside
the group and sends back ``(True, result)`` or ``(False, traceback text)``.
A task that keeps a rank past the timeout (a rank waiting in a collective
that another rank never joined) kills the group: :class:`GroupHang`.
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["GlooGroup", "GroupHang", "candidate_step"]


class GroupHang(RuntimeError):
    """A task did not finish on every rank within the timeout; the group is gone."""

    def __init__(self, message: str, done: dict) -> None:
        super().__init__(message)
        self.done = done  # rank -> (ok, result) of the ranks that answered


class GlooGroup:
    """``world_size`` spawned CPU processes in one gloo group, serving tasks.

    Use as a context manager (or call :meth:`close`)::

        with GlooGroup(2) as group:
            results = group.run(step, payload)   # step(rank, world, payload) per rank
    """

    def __init__(self, world_size: int, *, timeout: float = 60.0,
                 startup_timeout: float = 300.0) -> None:
        """Spawn the ranks and wait until each has joined the group
        (``startup_timeout``); ``timeout`` bounds each task."""
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size: expected an integer >= 1, got {world_size!r}")
        self.world_size = world_size
        self.timeout = float(timeout)
        self._tmp = tempfile.TemporaryDirectory()
        ctx = mp.get_context("spawn")
        self._conns, self._procs = [], []
        store = os.path.join(self._tmp.name, "store")
        for rank in range(world_size):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(rank, world_size, store, child),
                               daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        # the ranks import torch and join the group: not part of any task's time
        for rank, conn in enumerate(self._conns):
            if not conn.poll(startup_timeout):
                self.close(kill=True)
                raise GroupHang(f"rank {rank} of {world_size} did not start within "
                                f"{startup_timeout:g} s", {})
            conn.recv()

    def __enter__(self) -> GlooGroup:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        return bool(self._procs) and all(p.is_alive() for p in self._procs)

    def run(self, step: Callable, payload: Any) -> list[tuple[bool, Any]]:
        """``(ok, result or traceback)`` of every rank, in rank order."""
        if not self.alive:
            raise GroupHang("the process group is not running", {})
        for conn in self._conns:
            conn.send((step, payload))
        answers: dict = {}
        deadline = time.monotonic() + self.timeout
        while len(answers) < self.world_size:
            left = deadline - time.monotonic()
            waiting = [r for r in range(self.world_size) if r not in answers]
            ready = [r for r in waiting if self._conns[r].poll(max(0.0, min(left, 0.05)))]
            for r in ready:
                try:
                    answers[r] = self._conns[r].recv()
                except (EOFError, OSError):
                    answers[r] = (False, f"rank {r} exited")
            if left <= 0 and len(answers) < self.world_size:
                missing = [r for r in range(self.world_size) if r not in answers]
                self.close(kill=True)
                raise GroupHang(
                    f"rank(s) {', '.join(map(str, missing))} of {self.world_size} did not "
                    f"finish within {self.timeout:g} s (waiting in a collective another "
                    f"rank never joined)", answers)
        return [answers[r] for r in range(self.world_size)]

    def close(self, kill: bool = False) -> None:
        for conn in self._conns:
            if not kill:
                try:
                    conn.send(None)
                except (BrokenPipeError, OSError):
                    pass
        for proc in self._procs:
            if not kill:
                proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=10)
        for conn in self._conns:
            conn.close()
        self._conns, self._procs = [], []
        self._tmp.cleanup()


def _serve(rank: int, world: int, store: str, conn: Any) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=world)
    conn.send("ready")
    try:
        while True:
            try:
                task = conn.recv()
            except EOFError:
                return
            if task is None:
                return
            step, payload = task
            try:
                answer = (True, step(rank, world, payload))
            except Exception:  # shipped to the parent, which reports it
                answer = (False, traceback.format_exc())
            conn.send(answer)
    finally:
        dist.destroy_process_group()


def candidate_step(rank: int, world: int, payload: dict) -> dict:
    """Run a candidate loss on this rank's shard and backpropagate its value.

    ``payload``: ``candidate`` (picklable, or ``("spec", "MODULE:FUNCTION",
    init_kwargs)`` to load it here), ``kwargs``, ``x`` and ``labels``
    of the whole batch (NumPy), ``sizes`` (rows per rank, in rank order),
    ``dtype`` and ``output`` (the index of the value in a tuple, or None).
    Returns this rank's ``value`` (float), ``grad`` (NumPy, or None when the
    value has no graph or the shard got no gradient) and ``note``.
    """
    import numpy as np

    sizes = payload["sizes"]
    start = sum(sizes[:rank])
    rows = slice(start, start + sizes[rank])
    dtype = getattr(torch, payload["dtype"])
    x = torch.tensor(payload["x"][rows], dtype=dtype, requires_grad=True)
    labels = torch.tensor(payload["labels"][rows], dtype=torch.int64)
    candidate = payload["candidate"]
    if isinstance(candidate, tuple) and candidate[:1] == ("spec",):
        from refloss.testing import load_candidate

        candidate = load_candidate(candidate[1], candidate[2])
    value = candidate(x, labels, **payload["kwargs"])
    if isinstance(value, (tuple, list)):
        value = value[payload["output"] or 0]
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise TypeError(f"the candidate returned {type(value).__name__} "
                        f"{getattr(value, 'shape', '')}, expected a scalar tensor")
    note = ""
    if value.requires_grad:
        value.reshape(()).backward()
    else:
        note = "the value has no autograd graph"
    grad = None if x.grad is None else np.asarray(x.grad.detach().double().numpy())
    return {"value": float(value.detach().double().reshape(())), "grad": grad, "note": note}
