r"""Center loss (Wen et al., ECCV 2016) and the class-center updates.

Loss: :math:`l_i = \tfrac12\lVert x_i - c_{y_i}\rVert^2`, reduced by "sum"
(the paper's :math:`L_C`, TensorFlow's ``tf.nn.l2_loss``), "mean" (divided by
the batch size B, as the original Caffe layer) or "none".

Gradients: :math:`\partial L/\partial x_i = w_i (x_i - c_{y_i})` and
:math:`\partial L/\partial c_j = -\sum_{i: y_i = j} w_i (x_i - c_j)`, where
:math:`w_i` is the upstream gradient of term i after the reduction.

Center updates all derive from the per-class statistics
:math:`s_j = \sum_{y_i = j} x_i` and :math:`n_j = \#\{i : y_i = j\}`
(:func:`center_stats`): duplicate labels accumulate, classes absent from the
batch never move, and because statistics add, the update from the summed
statistics of any split of a batch (data-parallel shards after an
all-reduce) equals the update from the whole batch (up to the rounding of
the summation order).

* ``"wen"`` (the paper's Eq. 4): :math:`c_j \leftarrow c_j - \alpha\,(n_j c_j - s_j)/(1 + n_j)`;
* ``"ema"``: for :math:`n_j > 0`, :math:`c_j \leftarrow \delta c_j + (1-\delta)\, s_j/n_j`
  with decay :math:`\delta = 1 - \alpha`;
* ``"mean"`` (:class:`RunningCenters` only): the cumulative mean
  :math:`S_j/N_j` of everything seen; a class never seen keeps its initial center.

Per-class sums are one-hot GEMMs (``onehot.T @ x``), chunked over classes:
exact, deterministic and scatter-free (a fancy-index ``+=`` drops duplicate
labels on NumPy, torch and CuPy).
"""

from __future__ import annotations

import functools
import threading
from numbers import Integral
from typing import Any

import numpy as np
from array_api_compat import device as _device
from array_api_compat import to_device

from . import _checks
from .reductions import reduce_backward, reduce_forward
from .vjp import defvjp

__all__ = [
    "RunningCenters",
    "center_loss",
    "center_stats",
    "update_centers",
    "update_centers_from_stats",
]

UPDATE_RULES = ("wen", "ema")
RUNNING_RULES = ("wen", "ema", "mean")
CENTER_REDUCTIONS = ("sum", "mean", "none")
_ONEHOT_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------
# per-class statistics


def class_sums(xp: Any, values: Any, labels: Any, num_classes: int) -> Any:
    """``(C, D)`` array of :math:`\\sum_{y_i = j} v_i`: one-hot GEMMs over class chunks."""
    chunk = max(1, _ONEHOT_ELEMENTS // max(labels.shape[0], 1))
    # class indices in the index dtype: an arange in a narrow label dtype
    # (uint8 past 256 classes) would wrap into phantom classes
    idx = _checks.default_index_dtype(xp, _device(labels))
    parts = []
    for c0 in range(0, num_classes, chunk):
        cls = xp.arange(c0, min(c0 + chunk, num_classes), dtype=idx, device=_device(labels))
        onehot = xp.astype(labels[:, None] == cls[None, :], values.dtype)
        parts.append(onehot.T @ values)
    return xp.concat(parts, axis=0) if len(parts) > 1 else parts[0]


def class_counts(xp: Any, labels: Any, num_classes: int) -> Any:
    """``(C,)`` integer array of :math:`n_j`."""
    chunk = max(1, _ONEHOT_ELEMENTS // max(labels.shape[0], 1))
    dtype = _checks.default_index_dtype(xp, _device(labels))
    parts = []
    for c0 in range(0, num_classes, chunk):
        cls = xp.arange(c0, min(c0 + chunk, num_classes), dtype=dtype, device=_device(labels))
        hits = labels[:, None] == cls[None, :]
        parts.append(xp.astype(xp.count_nonzero(hits, axis=0), dtype))
    return xp.concat(parts) if len(parts) > 1 else parts[0]


def apply_update(xp: Any, centers: Any, sums: Any, counts: Any, rule: str, alpha: float):
    """New centers from statistics (all in one floating dtype)."""
    n = xp.astype(counts, centers.dtype)[:, None]
    if rule == "wen":
        return centers - alpha * (n * centers - sums) / (1.0 + n)
    # ema: only classes present in the batch move
    seen = n > 0
    mean = sums / xp.where(seen, n, xp.ones_like(n))
    moved = (1.0 - alpha) * centers + alpha * mean
    return xp.where(seen, moved, centers)


# --------------------------------------------------------------------------
# validation


def _check_batch(x, labels, centers=None, *, with_centers=True, fetch):
    """``(xp, labels)``, the labels in the default index dtype; the
    finiteness checks are queued in ``fetch`` (read once by the caller)."""
    optional = () if with_centers else ("centers",)
    xp = _checks.namespace(optional=optional, x=x, labels=labels, centers=centers)
    _checks.check_float(xp, "x", x)
    _checks.check_rank("x", x, 2, "a 2-D array (batch, dim)")
    labels = _checks.check_labels(xp, "labels", labels, x.shape[0], "x")
    if centers is not None:
        _check_centers(xp, centers, x, fetch)
    fetch.xp = xp
    fetch.finite("x", x)
    return xp, labels


def _check_centers(xp, centers, x, fetch):
    _checks.check_float(xp, "centers", centers)
    _checks.check_rank("centers", centers, 2, "a 2-D array (num_classes, dim)")
    if centers.shape[1] != x.shape[1]:
        raise ValueError(
            f"centers: expected {x.shape[1]} columns (the dim of x), "
            f"got {centers.shape[1]}"
        )
    if centers.dtype != x.dtype:
        raise TypeError(
            f"centers: expected the dtype of x ({x.dtype}), got {centers.dtype}"
        )
    if centers.shape[0] < 1:
        raise ValueError("centers: expected at least one class (row), got 0")
    fetch.xp = xp
    fetch.finite("centers", centers)


# --------------------------------------------------------------------------
# center loss


def _center_loss_fwd(x, labels, centers, *, reduction="sum", check=True):
    # one read for every value check: centers, x, then the label range
    fetch = _checks.Fetch(None, check=_checks.check_flag("check", check))
    xp, labels = _check_batch(x, labels, centers, fetch=fetch)
    _checks.check_choice("reduction", reduction, CENTER_REDUCTIONS)
    num_classes = centers.shape[0]
    fetch.label_range("labels", labels, num_classes)
    fetch.done()
    dtype = x.dtype
    cdt = _checks.compute_dtype(xp, dtype)
    diff = xp.astype(x, cdt) - xp.take(xp.astype(centers, cdt), labels, axis=0)
    terms = 0.5 * xp.sum(diff * diff, axis=1)
    value, rres = reduce_forward(xp, terms, reduction)
    return xp.astype(value, dtype), (xp, dtype, diff, labels, num_classes, rres, terms)


def _center_loss_bwd(residuals, g):
    xp, dtype, diff, labels, num_classes, rres, terms = residuals
    w = reduce_backward(xp, rres, g, terms)
    gx = w[:, None] * diff
    gc = -class_sums(xp, gx, labels, num_classes)
    return xp.astype(gx, dtype), None, xp.astype(gc, dtype)


@defvjp(_center_loss_fwd, _center_loss_bwd)
def center_loss(
    x: Any, labels: Any, centers: Any, *, reduction: str = "sum", check: bool = True
) -> Any:
    r"""Center loss :math:`l_i = \tfrac12\lVert x_i - c_{y_i}\rVert^2`, reduced.

    Reductions: ``"sum"`` (default) is the paper's
    :math:`L_C = \tfrac12\sum_i\lVert x_i - c_{y_i}\rVert^2` and TensorFlow's
    ``tf.nn.l2_loss(x - c_y)``; ``"mean"`` divides by the batch size B (the
    original Caffe layer's ``dot(D, D) / M / 2``); ``"none"`` returns the B terms.
    An empty batch gives 0.

    Gradients (through :func:`refloss.vjp`), with :math:`w_i` the upstream
    weight of term i: :math:`\partial L/\partial x_i = w_i (x_i - c_{y_i})`,
    :math:`\partial L/\partial c_j = -\sum_{i: y_i=j} w_i (x_i - c_j)` (the true
    derivative; the paper updates centers by Eq. 4 instead, see
    :func:`update_centers`).

    Args:
        x: ``[B, D]`` floating embeddings.
        labels: ``[B]`` integer class labels in ``[0, C)``.
        centers: ``[C, D]`` class centers, same dtype as ``x``.
        reduction: ``"sum"``, ``"mean"`` or ``"none"``.
        check: check that ``x`` and ``centers`` are finite and the labels in
            range (default True; docs/errors.md, "Checks and syncs").

    Returns:
        A 0-d array (or ``[B]`` for ``"none"``) in the namespace, device and
        dtype of ``x``.

    References:
        Wen, Zhang, Li, Qiao. A Discriminative Feature Learning Approach for
        Deep Face Recognition. ECCV 2016, Eq. 2. ydwen/caffe-face
        ``center_loss_layer.cpp``.
    """
    return _center_loss_fwd(x, labels, centers, reduction=reduction, check=check)[0]


# --------------------------------------------------------------------------
# statistics and updates


def center_stats(
    x: Any, labels: Any, num_classes: int, *, check: bool = True
) -> tuple[Any, Any]:
    r"""Per-class sufficient statistics :math:`(s, n)` of a batch.

    :math:`s_j = \sum_{i: y_i = j} x_i` (``[C, D]``, dtype of ``x``) and
    :math:`n_j = \#\{i : y_i = j\}` (``[C]``, the namespace's default index
    dtype). Duplicate labels accumulate; absent classes get zeros. Statistics
    of disjoint parts of a batch add up to those of the whole batch, which is
    what makes the center update data-parallel: all-reduce ``(s, n)``, then
    :func:`update_centers_from_stats`.

    Args:
        x: ``[B, D]`` floating embeddings.
        labels: ``[B]`` integer labels in ``[0, num_classes)``.
        num_classes: number of classes C (>= 1).
        check: check that ``x`` is finite and the labels in range, in one
            read (default True; docs/errors.md, "Checks and syncs").
    """
    fetch = _checks.Fetch(None, check=_checks.check_flag("check", check))
    xp, labels = _check_batch(x, labels, with_centers=False, fetch=fetch)
    num_classes = _checks.check_num_classes(num_classes)
    fetch.label_range("labels", labels, num_classes)
    fetch.done()
    cdt = _checks.compute_dtype(xp, x.dtype)
    sums = class_sums(xp, xp.astype(x, cdt), labels, num_classes)
    return xp.astype(sums, x.dtype), class_counts(xp, labels, num_classes)


def update_centers(
    centers: Any, x: Any, labels: Any, *, rule: str = "wen", alpha: float = 0.5,
    check: bool = True,
) -> Any:
    r"""New class centers after one batch (the input is not modified).

    * ``rule="wen"`` (Wen et al. 2016, Eq. 4):
      :math:`c_j \leftarrow c_j - \alpha\,\frac{n_j c_j - s_j}{1 + n_j}`,
      i.e. :math:`\Delta c_j = \sum_{y_i=j}(c_j - x_i)/(1 + n_j)`;
    * ``rule="ema"``: for :math:`n_j > 0`,
      :math:`c_j \leftarrow (1-\alpha)\,c_j + \alpha\, s_j / n_j`
      (an exponential moving average of the batch means, decay :math:`1 - \alpha`).

    Classes absent from the batch never move. For the cumulative running mean
    use :class:`RunningCenters` with ``rule="mean"``.

    Args:
        centers: ``[C, D]`` current centers.
        x: ``[B, D]`` embeddings, same dtype as ``centers``.
        labels: ``[B]`` integer labels in ``[0, C)``.
        rule: ``"wen"`` or ``"ema"``.
        alpha: step in ``[0, 1]``.
        check: check that ``centers`` and ``x`` are finite and the labels in
            range, in one read (default True; docs/errors.md, "Checks and syncs").
    """
    fetch = _checks.Fetch(None, check=_checks.check_flag("check", check))
    xp, labels = _check_batch(x, labels, centers, fetch=fetch)
    _check_rule(rule, UPDATE_RULES)
    alpha = _checks.check_alpha(alpha)
    fetch.label_range("labels", labels, centers.shape[0])
    fetch.done()
    cdt = _checks.compute_dtype(xp, x.dtype)
    sums = class_sums(xp, xp.astype(x, cdt), labels, centers.shape[0])
    counts = class_counts(xp, labels, centers.shape[0])
    new = apply_update(xp, xp.astype(centers, cdt), sums, counts, rule, alpha)
    return xp.astype(new, centers.dtype)


def update_centers_from_stats(
    centers: Any, sums: Any, counts: Any, *, rule: str = "wen", alpha: float = 0.5,
    check: bool = True,
) -> Any:
    r"""New centers from per-class statistics (e.g. all-reduced across workers).

    The same rules as :func:`update_centers`, which equals
    ``update_centers_from_stats(centers, *center_stats(x, labels, C), ...)``
    (bit for bit in float32/float64; for float16/bfloat16 ``center_stats``
    rounds the sums to the input dtype).

    Args:
        centers: ``[C, D]`` current centers.
        sums: ``[C, D]`` per-class sums, same dtype as ``centers``.
        counts: ``[C]`` non-negative per-class counts (integer or floating).
        rule: ``"wen"`` or ``"ema"``.
        alpha: step in ``[0, 1]``.
        check: check that ``centers``, ``sums`` (and floating ``counts``) are
            finite and the counts non-negative, in one read (default True;
            docs/errors.md, "Checks and syncs").
    """
    fetch = _checks.Fetch(None, check=_checks.check_flag("check", check))
    xp = _check_stats(centers, sums, counts, fetch)
    _check_rule(rule, UPDATE_RULES)
    alpha = _checks.check_alpha(alpha)
    fetch.done()
    cdt = _checks.compute_dtype(xp, centers.dtype)
    new = apply_update(
        xp, xp.astype(centers, cdt), xp.astype(sums, cdt), counts, rule, alpha
    )
    return xp.astype(new, centers.dtype)


def _check_rule(rule, rules):
    if rule == "mean" and "mean" not in rules:
        raise ValueError(
            "rule: expected 'wen' or 'ema', got 'mean' (the running mean needs "
            "accumulated statistics: use RunningCenters(rule='mean'))"
        )
    _checks.check_choice("rule", rule, rules)


def _check_stats(centers, sums, counts, fetch, *, own_centers=False):
    """The namespace; the value checks are queued in ``fetch`` (those of the
    centers only when they are not the caller's own state)."""
    xp = _checks.namespace(centers=centers, sums=sums, counts=counts)
    fetch.xp = xp
    _checks.check_float(xp, "centers", centers)
    _checks.check_rank("centers", centers, 2, "a 2-D array (num_classes, dim)")
    _checks.check_float(xp, "sums", sums)
    if tuple(sums.shape) != tuple(centers.shape):
        raise ValueError(
            f"sums: expected shape {tuple(centers.shape)} (as centers), "
            f"got {tuple(sums.shape)}"
        )
    if sums.dtype != centers.dtype:
        raise TypeError(
            f"sums: expected the dtype of centers ({centers.dtype}), got {sums.dtype}"
        )
    if not (xp.isdtype(counts.dtype, "integral") or xp.isdtype(counts.dtype, "real floating")):
        raise TypeError(f"counts: expected an integer or floating dtype, got {counts.dtype}")
    if tuple(counts.shape) != (centers.shape[0],):
        raise ValueError(
            f"counts: expected shape ({centers.shape[0]},) (one per class), "
            f"got {tuple(counts.shape)}"
        )
    if not own_centers:
        fetch.finite("centers", centers)
    fetch.finite("sums", sums)
    if xp.isdtype(counts.dtype, "real floating"):
        fetch.finite("counts", counts)
    # unsigned counts cannot be negative (and torch has no `<` for uint16/32/64)
    if counts.shape[0] and not xp.isdtype(counts.dtype, "unsigned integer"):
        fetch.require(lambda: ~xp.any(counts < 0), lambda: _check_not_negative(xp, counts))
    return xp


def _check_not_negative(xp, counts):
    negative = xp.any(counts < 0)
    if not _checks.is_traced(negative) and bool(negative):
        raise ValueError("counts: expected non-negative counts, got a negative one")


def _all_finite(xp, a):
    return xp.all(xp.isfinite(a))


def _counts_flag(xp, name, counts, dtype, dev):
    flag = _checks.counts_ok(xp, name, counts, dtype)
    return flag if _device(flag) == dev else to_device(flag, dev)


# --------------------------------------------------------------------------
# stateful convenience


class RunningCenters:
    r"""Class centers kept up to date batch after batch.

    ``rule="wen"`` and ``"ema"`` apply :func:`update_centers` to each batch;
    ``rule="mean"`` keeps the cumulative statistics :math:`S_j = \sum s_j`,
    :math:`N_j = \sum n_j` of every batch seen and sets
    :math:`c_j = S_j / N_j` (a class never seen keeps its initial center).
    Every rule also tracks ``S`` and ``N``, available in :meth:`state_dict`.

    State that does not rot:

    * the centers have the dtype of ``like`` (or ``init``); the running sums
      ``S`` are kept in a wide accumulator, float32 for float16, bfloat16 and
      float32 centers and float64 for float64 centers (the compute dtype), and
      the counts ``N`` in the namespace's default index dtype (int64), so
      half-precision sums neither stall nor overflow. A count total that
      would pass the integer range, or sums that would overflow the
      accumulator, raise instead of wrapping;
    * what is stored is detached from torch autograd, and a JAX tracer
      (an update inside ``jax.jit``/``grad``) is refused with a TypeError;
    * an update either applies whole or raises and leaves the state as it
      was, and updates from several threads are serialised by a lock, so
      none is lost;
    * :meth:`state_dict` / :meth:`load_state_dict` round-trip exactly, and the
      object pickles and deep-copies (the namespace and the lock are rebuilt).

    Args:
        num_classes: number of classes C.
        dim: embedding dimension D.
        rule: ``"wen"`` (default), ``"ema"`` or ``"mean"``.
        alpha: step in ``[0, 1]`` for "wen" and "ema" (ignored by "mean").
        like: an array whose namespace, device and floating dtype the centers
            take (default: NumPy float64).
        init: optional ``[C, D]`` initial centers (default zeros); when given
            without ``like``, it sets the namespace, device and dtype.

    Example:
        >>> import numpy as np, refloss as rl
        >>> rc = rl.RunningCenters(2, 2, rule="mean")
        >>> _ = rc.update(np.array([[1.0, 0.0], [3.0, 2.0]]), np.array([0, 0]))
        >>> rc.centers
        array([[2., 1.],
               [0., 0.]])
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        *,
        rule: str = "wen",
        alpha: float = 0.5,
        like: Any = None,
        init: Any = None,
    ) -> None:
        num_classes = _checks.check_num_classes(num_classes)
        if isinstance(dim, bool) or not isinstance(dim, Integral):
            raise TypeError(f"dim: expected an integer, got {type(dim).__name__}")
        if dim < 0:
            raise ValueError(f"dim: expected an integer >= 0, got {dim}")
        dim = int(dim)
        _checks.check_choice("rule", rule, RUNNING_RULES)
        alpha = _checks.check_alpha(alpha)
        if like is None and init is None:
            like = np.zeros((), dtype=np.float64)
        if like is not None:
            xp = _checks.namespace(like=like)
            _checks.check_float(xp, "like", like)
            _checks.check_concrete("like", like)
            dtype, dev = like.dtype, _device(like)
        if init is not None:
            xp = _checks.namespace(init=init) if like is None else _checks.namespace(
                like=like, init=init
            )
            _checks.check_concrete("init", init)
            init = _checks.detached(init)
            if like is None:
                _checks.check_float(xp, "init", init)
                dtype, dev = init.dtype, _device(init)
            if tuple(init.shape) != (num_classes, dim):
                raise ValueError(
                    f"init: expected shape ({num_classes}, {dim}), got {tuple(init.shape)}"
                )
            _checks.check_finite(xp, "init", init)
            centers = xp.asarray(init, dtype=dtype, device=dev, copy=True)
        else:
            centers = xp.zeros((num_classes, dim), dtype=dtype, device=dev)
        self._xp = xp
        self._rule = rule
        self._alpha = alpha
        self._centers = centers
        self._sums = xp.zeros(
            (num_classes, dim), dtype=_checks.compute_dtype(xp, dtype), device=dev
        )
        self._counts = xp.zeros(
            (num_classes,), dtype=_checks.default_index_dtype(xp, dev), device=dev
        )
        self._lock = threading.Lock()

    # the namespace (a module) and the lock do not pickle: rebuilt on load
    def __getstate__(self) -> dict:
        with self._lock:
            state = dict(self.__dict__)
        del state["_xp"], state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._xp = _checks.namespace(centers=self._centers)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        """``RunningCenters(num_classes=3, dim=2, rule='wen', alpha=0.5,
        dtype=float64, device=cpu, namespace=numpy, seen 4 samples of 2/3
        classes)``: the options, where the centers live, and how much data
        went into them (the state keeps per-class counts, not a count of
        updates)."""
        with self._lock:
            centers, counts = self._centers, self._counts
        xp = self._xp
        n_seen = int(xp.sum(counts))
        classes = int(xp.sum(xp.astype(counts > 0, counts.dtype)))
        alpha = "" if self._rule == "mean" else f", alpha={self._alpha!r}"
        namespace = getattr(xp, "__name__", type(centers).__module__)
        namespace = namespace.removeprefix("array_api_compat.")
        dtype = str(centers.dtype).rsplit(".", 1)[-1]  # torch.float32, array_api_strict.…
        return (
            f"RunningCenters(num_classes={centers.shape[0]}, dim={centers.shape[1]}, "
            f"rule={self._rule!r}{alpha}, dtype={dtype}, device={_device(centers)}, "
            f"namespace={namespace}, seen {n_seen} sample{'' if n_seen == 1 else 's'} of "
            f"{classes}/{centers.shape[0]} classes)"
        )

    @property
    def num_classes(self) -> int:
        return self._centers.shape[0]

    @property
    def dim(self) -> int:
        return self._centers.shape[1]

    @property
    def rule(self) -> str:
        return self._rule

    @property
    def alpha(self) -> float:
        return self._alpha

    @property
    def centers(self) -> Any:
        """``[C, D]`` current centers (a fresh array each time)."""
        return self._xp.asarray(self._centers, copy=True)

    @property
    def counts(self) -> Any:
        """``[C]`` number of samples seen per class."""
        return self._xp.asarray(self._counts, copy=True)

    def update(self, x: Any, labels: Any, *, check: bool = True) -> Any:
        """Fold one batch in; returns the new centers.

        The batch sums are taken in the accumulator's dtype (float32 for
        half-precision centers), not rounded to the centers' dtype first.

        ``check`` (default True): check that ``x`` is finite, the labels in
        range and the new state representable (counts within int64, sums and
        centers finite), all in one read, before anything is stored; with
        ``check=False`` nothing is read and nothing is checked by value
        (docs/errors.md, "Checks and syncs").
        """
        fetch = _checks.Fetch(None, check=_checks.check_flag("check", check))
        xp = _checks.namespace(centers=self._centers, x=x, labels=labels)
        _checks.check_concrete("x", x)
        _checks.check_concrete("labels", labels)
        x, labels = _checks.detached(x), _checks.detached(labels)
        _checks.check_float(xp, "x", x)
        _checks.check_rank("x", x, 2, "a 2-D array (batch, dim)")
        if x.shape[1] != self.dim:
            raise ValueError(
                f"x: expected {self.dim} columns (the dim of the centers), got {x.shape[1]}"
            )
        if x.dtype != self._centers.dtype:
            raise TypeError(
                f"x: expected the dtype of the centers ({self._centers.dtype}), got {x.dtype}"
            )
        # the centers are this object's own state: not checked again
        _, labels = _check_batch(x, labels, with_centers=False, fetch=fetch)
        fetch.label_range("labels", labels, self.num_classes)
        sums = class_sums(xp, xp.astype(x, self._sums.dtype), labels, self.num_classes)
        counts = class_counts(xp, labels, self.num_classes)
        return self._apply(sums, counts, ("x", "labels"), fetch)

    def update_from_stats(self, sums: Any, counts: Any, *, check: bool = True) -> Any:
        """Fold in statistics ``(s, n)`` (e.g. all-reduced across workers).

        ``counts`` may have any integer dtype (unsigned included) or hold
        whole floating values; each must be below ``2**63`` (the int64 range).
        ``check`` as in :meth:`update` (finite sums, whole non-negative
        counts, the new state representable; one read, or none).
        """
        fetch = _checks.Fetch(None, check=_checks.check_flag("check", check))
        return self._fold_stats(sums, counts, fetch)

    def _fold_stats(self, sums: Any, counts: Any, fetch: Any) -> Any:
        """:meth:`update_from_stats` whose value checks join ``fetch`` (a
        subclass may have queued checks of its own there first)."""
        _checks.check_concrete("sums", sums)
        _checks.check_concrete("counts", counts)
        sums, counts = _checks.detached(sums), _checks.detached(counts)
        xp = _check_stats(self._centers, sums, counts, fetch, own_centers=True)
        dtype = self._counts.dtype
        fetch.require(
            functools.partial(_checks.counts_ok, xp, "counts", counts, dtype),
            functools.partial(_checks.check_counts, xp, "counts", counts, dtype),
        )
        counts = xp.astype(counts, dtype)
        return self._apply(xp.astype(sums, self._sums.dtype), counts, ("sums", "counts"), fetch)

    def _apply(self, sums: Any, counts: Any, names: tuple[str, str], fetch: Any) -> Any:
        """Fold statistics (accumulator dtype, index dtype) into the state:
        the checks queued in ``fetch`` and those of the new state are read
        together, and raise before anything is stored."""
        xp = self._xp
        acc = self._sums.dtype
        # read, compute and commit under one lock: two threads must not both
        # start from the same old state (one update would be lost)
        with self._lock:
            total = self._counts
            fetch.require(
                lambda: ~xp.any(counts > xp.iinfo(total.dtype).max - total),
                lambda: _checks.check_running_total(xp, names[1], counts, total),
            )
            new_counts = self._counts + counts
            old = xp.astype(self._centers, acc)
            # an overflow is refused just below: NumPy need not warn about it first
            with np.errstate(over="ignore", invalid="ignore"):
                new_sums = self._sums + sums
                if self._rule == "mean":
                    n = xp.astype(new_counts, acc)[:, None]
                    seen = n > 0
                    mean = new_sums / xp.where(seen, n, xp.ones_like(n))
                    new = xp.where(seen, mean, old)
                else:
                    new = apply_update(xp, old, sums, counts, self._rule, self._alpha)
                new = xp.astype(new, self._centers.dtype)
            for value, what in ((new_sums, f"running sums ({acc})"),
                                (new, f"centers ({new.dtype})")):
                fetch.require(
                    functools.partial(_all_finite, xp, value),
                    functools.partial(_checks.check_no_overflow, xp, names[0], value, what),
                )
            fetch.done()  # the call's one read: raises before anything is stored
            # commit all three together: nothing is left half-updated
            self._centers, self._sums, self._counts = new, new_sums, new_counts
        return xp.asarray(new, copy=True)

    def state_dict(self) -> dict:
        """``{"rule", "alpha", "centers", "sums", "counts"}`` (arrays copied).

        ``sums`` has the accumulator's dtype and ``counts`` the index dtype.
        """
        xp = self._xp
        with self._lock:
            rule, alpha = self._rule, self._alpha
            centers, sums, counts = self._centers, self._sums, self._counts
        return {
            "rule": rule,
            "alpha": alpha,
            "centers": xp.asarray(centers, copy=True),
            "sums": xp.asarray(sums, copy=True),
            "counts": xp.asarray(counts, copy=True),
        }

    def load_state_dict(self, state: dict, *, check: bool = True) -> None:
        """Restore a :meth:`state_dict`; raises and changes nothing if it does not fit.

        The arrays must come from the library of the centers, ``centers`` and
        ``sums`` real floating and finite, ``counts`` integer, non-negative and
        below ``2**63``; they are converted to the object's dtypes and device
        (a state saved with half-precision ``sums`` widens exactly). The value
        checks (finite, counts in range) are read together, once; ``check=False``
        skips them (no read), for a state this library made itself.
        """
        fetch = _checks.Fetch(self._xp, check=_checks.check_flag("check", check))
        if not isinstance(state, dict):
            raise TypeError(f"state: expected a dict, got {type(state).__name__}")
        missing = {"rule", "alpha", "centers", "sums", "counts"} - set(state)
        if missing:
            raise ValueError(f"state: expected keys {sorted(missing)}, got {sorted(state)}")
        xp = self._xp
        _checks.check_choice("state['rule']", state["rule"], RUNNING_RULES)
        try:
            alpha = _checks.check_alpha(state["alpha"])
        except (TypeError, ValueError) as exc:
            raise type(exc)(str(exc).replace("alpha:", "state['alpha']:", 1)) from None
        dev = _device(self._centers)
        arrays = {}
        for key, shape, dtype in (
            ("centers", (self.num_classes, self.dim), self._centers.dtype),
            ("sums", (self.num_classes, self.dim), self._sums.dtype),
            ("counts", (self.num_classes,), self._counts.dtype),
        ):
            name = f"state[{key!r}]"
            a = state[key]
            _checks.check_same_library(name, a, "the centers", self._centers)
            _checks.check_concrete(name, a)
            a = _checks.detached(a)
            if tuple(a.shape) != shape:
                raise ValueError(f"{name}: expected shape {shape}, got {tuple(a.shape)}")
            if key == "counts":
                if not xp.isdtype(a.dtype, "integral"):
                    raise TypeError(f"{name}: expected an integer dtype, got {a.dtype}")
                # read on the original (a wide count must not wrap first),
                # the flag moved to the centers' device with the other flags
                fetch.require(
                    functools.partial(_counts_flag, xp, name, a, dtype, dev),
                    functools.partial(_checks.check_counts, xp, name, a, dtype),
                )
            else:
                _checks.check_float(xp, name, a)
            try:
                a = xp.asarray(xp.astype(a, dtype), device=dev, copy=True)
            except Exception as exc:
                raise TypeError(
                    f"{name}: expected an array convertible to {dtype} on {dev!r}, "
                    f"got {type(state[key]).__name__} ({exc})"
                ) from None
            if key != "counts":
                fetch.finite(name, a)
            arrays[key] = a
        fetch.done()  # one read for every value check, before anything changes
        with self._lock:
            self._rule, self._alpha = state["rule"], alpha
            self._centers, self._sums, self._counts = (
                arrays["centers"],
                arrays["sums"],
                arrays["counts"],
            )
