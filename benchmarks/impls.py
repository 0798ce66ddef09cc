r"""What is measured: one forward + backward step per (implementation, loss, backend).

Every builder takes the embeddings ``x`` (``[B, D]``, already in the
backend's namespace, device and dtype) and the integer ``labels`` (``[B]``)
and returns ``step``: a zero-argument callable that runs the forward and
the backward once and returns ``(value, grad)`` (``grad`` is ``None`` for
the floor, which has no backward).

Implementations:

* ``refloss``: the core on the backend's arrays through the array API,
  ``refloss.value_and_grad(loss, x, labels)`` with every option at its
  default (margin 1, euclidean, no normalisation).
* ``refloss-adapter``: ``refloss.adapters.torch.<loss>(x, labels)`` and
  ``.backward()``, when that module exists (it is optional).
* ``pml``: pytorch-metric-learning with its defaults (normalised
  embeddings, margin 0.05, AvgNonZeroReducer), torch autograd backward.
  ``batch_all`` is ``TripletMarginLoss()`` on every triplet, ``batch_hard``
  adds ``BatchHardMiner()``, ``semihard`` adds
  ``TripletMarginMiner(type_of_triplets="semihard")`` (which enumerates every
  triplet first), ``contrastive`` is ``ContrastiveLoss()``.
* ``torch-hand``: the versions people write with torch autograd —
  batch-all with the B×B×B broadcast of :math:`d_{ap} - d_{an} + m` and a
  B×B×B validity mask (omoindrot's ``batch_all_triplet_loss``), batch-hard
  with B×B masks (omoindrot's ``batch_hard_triplet_loss``).
* ``floor``: one B×B GEMM :math:`x x^\top` and one row-wise value sort of
  that B×B matrix (``xp.sort(axis=1, stable=False)``: the fastest sort the
  backend has, since a value sort's result does not depend on stability),
  forward only — the cost no exact O(B² log B) loss can go below on the
  same backend.

The peers compute different numbers (other distances, margins and
reductions; PEERS.md §1): the comparison is of the work each does on the
same embeddings and labels, not of the values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

IMPLS = ("refloss", "refloss-adapter", "pml", "torch-hand", "floor")
LOSSES = ("batch_all", "semihard", "batch_hard", "contrastive")
# refloss only, on request (--loss): the other options whose memory and op
# counts the docs report. "<loss>:none" is reduction="none" with a cotangent
# of ones through refloss.vjp; "batch_all:soft" the soft margin (O(B³) work);
# "mine_semihard" the miner (forward only, indices).
VARIANTS = ("batch_all:none", "semihard:none", "batch_hard:none", "contrastive:none",
            "batch_all:soft", "batch_all:soft:none", "mine_semihard")
ALL_LOSSES = LOSSES + VARIANTS
FLOOR = "gemm+sort"
CPU_BACKENDS = ("numpy", "torch")
GPU_BACKENDS = ("torch:cuda", "cupy")

# The public refloss function behind each loss name.
REFLOSS_FUNCTIONS = {
    "batch_all": "batch_all_triplet_loss",
    "semihard": "semihard_triplet_loss",
    "batch_hard": "batch_hard_triplet_loss",
    "contrastive": "contrastive_loss_all_pairs",
}

# What each implementation runs for each loss name (shown in the docs).
DESCRIPTIONS = {
    ("refloss", "batch_all"): "batch_all_triplet_loss (hinge, mean_nonzero)",
    ("refloss", "semihard"): "semihard_triplet_loss",
    ("refloss", "batch_hard"): "batch_hard_triplet_loss",
    ("refloss", "contrastive"): "contrastive_loss_all_pairs",
    ("refloss", "batch_all:none"): 'batch_all_triplet_loss(reduction="none"), vjp with ones',
    ("refloss", "semihard:none"): 'semihard_triplet_loss(reduction="none"), vjp with ones',
    ("refloss", "batch_hard:none"): 'batch_hard_triplet_loss(reduction="none"), vjp with ones',
    ("refloss", "contrastive:none"): 'contrastive_loss_all_pairs(reduction="none"), vjp',
    ("refloss", "batch_all:soft"): "batch_all_triplet_loss(soft=True)",
    ("refloss", "batch_all:soft:none"): 'batch_all_triplet_loss(soft=True, reduction="none")',
    ("refloss", "mine_semihard"): "mine_semihard (forward only)",
    ("pml", "batch_all"): "TripletMarginLoss() (all triplets)",
    ("pml", "semihard"): 'TripletMarginLoss() + TripletMarginMiner(type_of_triplets="semihard")',
    ("pml", "batch_hard"): "TripletMarginLoss() + BatchHardMiner()",
    ("pml", "contrastive"): "ContrastiveLoss()",
    ("torch-hand", "batch_all"): "B×B×B broadcast + mask (omoindrot batch_all)",
    ("torch-hand", "batch_hard"): "B×B masks (omoindrot batch_hard)",
    ("floor", FLOOR): "x @ x.T, then sort(axis=1, stable=False)",
}
DESCRIPTIONS.update(
    {("refloss-adapter", loss): f"refloss.adapters.torch.{fn}" for loss, fn in
     REFLOSS_FUNCTIONS.items()}
)


def backends_of(impl: str) -> tuple[str, ...]:
    """The backends an implementation runs on."""
    if impl in ("refloss", "floor"):
        return CPU_BACKENDS + GPU_BACKENDS
    return ("torch", "torch:cuda")


def losses_of(impl: str) -> tuple[str, ...]:
    """The loss names an implementation provides."""
    if impl == "floor":
        return (FLOOR,)
    if impl == "refloss":
        return ALL_LOSSES
    if impl == "torch-hand":
        return ("batch_all", "batch_hard")
    return LOSSES


def build(impl: str, loss: str, x: Any, labels: Any, xp: Any) -> Callable[[], tuple]:
    """``step()`` running one forward + backward of ``impl``'s ``loss``."""
    if impl == "floor":
        return _floor(x, xp)
    if impl == "refloss":
        return _refloss(loss, x, labels)
    if impl == "refloss-adapter":
        return _autograd(_adapter_loss(loss), x, labels)
    if impl == "pml":
        return _autograd(_pml_loss(loss), x, labels)
    if impl == "torch-hand":
        fn = {"batch_all": hand_batch_all, "batch_hard": hand_batch_hard}[loss]
        return _autograd(fn, x, labels)
    raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")


# ---------------------------------------------------------------------------
# refloss


def _refloss(loss: str, x: Any, labels: Any) -> Callable[[], tuple]:
    from array_api_compat import array_namespace

    import refloss as rl

    if loss == "mine_semihard":
        def mine():
            anchor, _, _ = rl.mine_semihard(x, labels)
            return anchor.shape[0], None

        return mine
    base, _, option = loss.partition(":")
    options = {"soft": True} if option.startswith("soft") else {}
    fn = getattr(rl, REFLOSS_FUNCTIONS[base])
    if not loss.endswith(":none"):
        def step():
            value, grads = rl.value_and_grad(fn, x, labels, **options)
            return value, grads[0]

        return step

    def step_none():
        # the B×B (or B) terms and their VJP with a cotangent of ones: the
        # reported value is their sum
        terms, pullback = rl.vjp(fn, x, labels, reduction="none", **options)
        xp = array_namespace(terms)
        grads = pullback(xp.ones_like(terms))
        return xp.sum(terms), grads[0]

    return step_none


def refloss_value_and_grad(loss: str, x: Any, labels: Any) -> tuple:
    """The core's ``(value, grad)``: the float64 reference of the accuracy check."""
    return _refloss(loss, x, labels)()


def adapter_available() -> str | None:
    """``None`` when ``refloss.adapters.torch`` imports, else why it does not."""
    try:
        import refloss.adapters.torch  # noqa: F401
    except ImportError as exc:
        return f"refloss.adapters.torch not importable ({exc})"
    return None


def _adapter_loss(loss: str) -> Callable:
    # The adapter is being written alongside this harness: its absence, or a
    # missing function, is a skip with a reason, never a crash.
    import refloss.adapters.torch as adapter

    name = REFLOSS_FUNCTIONS[loss]
    fn = getattr(adapter, name, None)
    if fn is None:
        raise LookupError(f"refloss.adapters.torch has no {name}")
    return fn


# ---------------------------------------------------------------------------
# torch autograd: pytorch-metric-learning and the hand-written versions


def _autograd(fn: Callable, x: Any, labels: Any) -> Callable[[], tuple]:
    leaf = x.detach().clone().requires_grad_(True)

    def step():
        leaf.grad = None
        value = fn(leaf, labels)
        value.backward()
        return value.detach(), leaf.grad

    return step


def _pml_loss(loss: str) -> Callable:
    from pytorch_metric_learning import losses, miners

    if loss == "batch_all":
        return losses.TripletMarginLoss()
    if loss == "contrastive":
        return losses.ContrastiveLoss()
    triplet = losses.TripletMarginLoss()
    if loss == "batch_hard":
        miner = miners.BatchHardMiner()
    elif loss == "semihard":
        miner = miners.TripletMarginMiner(type_of_triplets="semihard")
    else:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")

    def mined(x, labels):
        return triplet(x, labels, miner(x, labels))

    return mined


def _torch_distances(x: Any) -> Any:
    # The GEMM form everyone copies, with omoindrot's guard: sqrt is taken of
    # d² + 1e-16 where d² = 0 and the result zeroed there, so autograd gives
    # a zero gradient instead of NaN on the diagonal.
    import torch

    gram = x @ x.T
    sq = torch.diagonal(gram)
    d2 = torch.clamp_min(sq[:, None] - 2.0 * gram + sq[None, :], 0.0)
    zero = (d2 == 0.0).to(x.dtype)
    return torch.sqrt(d2 + zero * 1e-16) * (1.0 - zero)


def hand_batch_all(x: Any, labels: Any, margin: float = 1.0) -> Any:
    r"""Batch-all as people write it in torch: the whole B×B×B triplet tensor.

    :math:`t_{apn} = d_{ap} - d_{an} + m` by broadcasting, times the mask of
    valid triplets (a ≠ p, :math:`y_p = y_a`, :math:`y_n \ne y_a`), relu, and
    the sum over the number of terms > 1e-16 (omoindrot's
    ``batch_all_triplet_loss``). Memory O(B³).
    """
    import torch

    d = _torch_distances(x)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    valid = (same & ~eye)[:, :, None] & (~same)[:, None, :]
    terms = torch.relu((d[:, :, None] - d[:, None, :] + margin) * valid.to(x.dtype))
    count = torch.sum(terms > 1e-16).to(x.dtype)
    return torch.sum(terms) / (count + 1e-16)


def hand_batch_hard(x: Any, labels: Any, margin: float = 1.0) -> Any:
    r"""Batch-hard as people write it in torch: B×B masks, max and min per row.

    Hardest positive :math:`\max_p d_{ap}` over the positive mask (0 where none),
    hardest negative :math:`\min_n d_{an}` after adding the row maximum to every
    non-negative entry, then :math:`\mathrm{mean}_a [hp - hn + m]_+`
    (omoindrot's ``batch_hard_triplet_loss``).
    """
    import torch

    d = _torch_distances(x)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    hardest_pos = torch.amax(d * (same & ~eye).to(x.dtype), dim=1)
    row_max = torch.amax(d, dim=1, keepdim=True)
    hardest_neg = torch.amin(d + row_max * same.to(x.dtype), dim=1)
    return torch.mean(torch.relu(hardest_pos - hardest_neg + margin))


# ---------------------------------------------------------------------------
# the floor


def _floor(x: Any, xp: Any) -> Callable[[], tuple]:
    def step():
        gram = xp.matmul(x, xp.matrix_transpose(x))
        ordered = xp.sort(gram, axis=1, stable=False)
        return ordered[0, 0], None

    return step
