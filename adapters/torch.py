r"""PyTorch adapter: refloss losses as ``torch.autograd.Function`` and ``nn.Module``.

Every differentiable refloss function carries an analytic rule,
``fn.__refloss_vjp__ = (forward, backward)`` (see :mod:`refloss.vjp`). The
core already runs on torch tensors through array-api-compat, so the glue is
thin and holds no math:

* ``Function.forward`` calls the rule's ``forward`` on the tensors themselves
  (CPU or CUDA, float16 to float64) and keeps its residuals on ``ctx``;
* ``Function.backward`` calls the rule's ``backward`` with the upstream
  gradient. Autograd never re-runs or traces the forward: the gradient is
  refloss's analytic VJP, with every convention of the core (0 at a
  euclidean distance of 0, 0 at a hinge exactly at 0, ties to the lowest
  index).

The backward is first-order only: under ``create_graph=True`` the gradients
it returns carry a node whose backward raises, so a double backward (a
gradient penalty through the loss, a Hessian) fails with a RuntimeError
instead of silently treating refloss's gradient as a constant. Inputs that
require grad, and inputs the residuals share memory with (labels), are saved
with ``ctx.save_for_backward``: modifying one in place between forward and
backward raises torch's usual error instead of giving a wrong gradient.

Functional wrappers have the names, signatures and defaults of the core
(``refloss.adapters.torch.batch_all_triplet_loss(x, labels, *, margin=1.0,
...)``); arrays bound by position *or* by name receive a gradient, labels and
``same`` never do. Modules: :class:`TripletLoss`, :class:`TripletMarginLoss`,
:class:`ContrastiveLoss` and :class:`CenterLoss`. Bad input raises the core's
TypeError / ValueError, message for message.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import refloss as rl

__all__ = [
    "BatchAllTripletLossFunction",
    "BatchHardTripletLossFunction",
    "CenterLoss",
    "CenterLossFunction",
    "ContrastiveLoss",
    "ContrastiveLossAllPairsFunction",
    "ContrastiveLossFunction",
    "HardestNegativeTripletLossFunction",
    "PairedDistancesFunction",
    "PairwiseDistancesFunction",
    "SemihardTripletLossFunction",
    "TripletLoss",
    "TripletMarginLoss",
    "TripletMarginLossFunction",
    "batch_all_triplet_loss",
    "batch_hard_triplet_loss",
    "center_loss",
    "contrastive_loss",
    "contrastive_loss_all_pairs",
    "hardest_negative_triplet_loss",
    "paired_distances",
    "pairwise_distances",
    "semihard_triplet_loss",
    "triplet_margin_loss",
]

Tensor = torch.Tensor

_HALF = (torch.float16, torch.bfloat16)


# --------------------------------------------------------------------------
# the glue: one forward and one backward shared by every Function


def _require_tensors(names: tuple[str, ...], arrays: tuple, optional: tuple[str, ...] = ()):
    for name, a in zip(names, arrays):
        if a is None and name in optional:
            continue
        if not isinstance(a, torch.Tensor):
            raise TypeError(
                f"{name}: expected a torch.Tensor, got "
                f"{type(a).__module__}.{type(a).__qualname__}"
            )


def _tensors_in(obj: Any, found: list, depth: int = 0) -> None:
    """Collect the tensors reachable from a residuals structure."""
    if isinstance(obj, torch.Tensor):
        found.append(obj)
        return
    if depth > 12 or isinstance(obj, (str, bytes, int, float, types.ModuleType, type)):
        return
    if isinstance(obj, dict):
        items = obj.values()
    elif isinstance(obj, (tuple, list)):
        items = obj
    elif hasattr(obj, "__dict__"):
        items = vars(obj).values()
    else:
        return
    for item in items:
        _tensors_in(item, found, depth + 1)


def _storage(t: Tensor) -> int | None:
    storage = t.untyped_storage()
    return storage.data_ptr() if storage.nbytes() else None


def _forward(ctx: Any, core: Callable, options: dict, arrays: tuple) -> Tensor:
    forward, backward = core.__refloss_vjp__
    value, residuals = forward(*arrays, **options)
    ctx.refloss_name = core.__name__
    ctx.refloss_backward = backward
    ctx.refloss_residuals = residuals
    ctx.refloss_arity = len(arrays)
    # Saved the torch way (for its in-place version check): the inputs that
    # require grad, as every torch op saves them, and the inputs the residuals
    # share memory with (labels), whose in-place change would corrupt the
    # gradient. A buffer such as CenterLoss's centers is neither.
    held: list = []
    _tensors_in(residuals, held)
    shared = {_storage(t) for t in held} - {None}
    ctx.save_for_backward(
        *(
            a
            for a in arrays
            if isinstance(a, torch.Tensor) and (a.requires_grad or _storage(a) in shared)
        )
    )
    if any(t is value for t in held):
        # never hand out a tensor that ctx also holds (a reference cycle)
        value = value.clone()
    return value


class _FirstOrderOnly(torch.autograd.Function):
    """Identity on a gradient whose own backward raises: marks a refloss
    gradient computed under ``create_graph=True`` as not differentiable, so
    that a double backward fails loudly instead of treating it as a constant."""

    @staticmethod
    def forward(ctx: Any, name: str, grad: Tensor, *anchors: Tensor) -> Tensor:
        ctx.refloss_name = name
        return grad.clone()

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple:
        raise RuntimeError(
            f"{ctx.refloss_name}: refloss's analytic backward is first-order only; "
            f"differentiating its gradient (double backward, e.g. a gradient penalty "
            f"through this loss) is not supported"
        )


class _RefflossFunction(torch.autograd.Function):
    """Shared backward: refloss's analytic VJP (first order only)."""

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple:
        saved = ctx.saved_tensors  # raises if a saved input was modified in place
        with torch.no_grad():
            g = grad.to(torch.float32) if grad.dtype in _HALF else grad  # the core's compute dtype
            grads = tuple(ctx.refloss_backward(ctx.refloss_residuals, g))
        n = ctx.refloss_arity
        grads = (grads + (None,) * n)[:n]
        if torch.is_grad_enabled():  # create_graph=True: guard against a double backward
            anchors = tuple(t for t in (grad, *saved) if t.requires_grad)
            if anchors:
                grads = tuple(
                    None if gi is None else _FirstOrderOnly.apply(ctx.refloss_name, gi, *anchors)
                    for gi in grads
                )
        return (None, *grads)  # nothing for the options dict


# --------------------------------------------------------------------------
# autograd Functions: ``Fn.apply(options, *arrays)``, options a dict of the
# core's keyword arguments (the functional wrappers below build it)


class PairwiseDistancesFunction(_RefflossFunction):
    """:func:`refloss.pairwise_distances` with its analytic VJP; ``apply(options, x, y)``."""

    @staticmethod
    def forward(ctx: Any, options: dict, x: Tensor, y: Tensor | None) -> Tensor:
        _require_tensors(("x", "y"), (x, y), optional=("y",))
        return _forward(ctx, rl.pairwise_distances, options, (x, y))


class PairedDistancesFunction(_RefflossFunction):
    """:func:`refloss.paired_distances` with its analytic VJP; ``apply(options, a, b)``."""

    @staticmethod
    def forward(ctx: Any, options: dict, a: Tensor, b: Tensor) -> Tensor:
        _require_tensors(("a", "b"), (a, b))
        return _forward(ctx, rl.paired_distances, options, (a, b))


class CenterLossFunction(_RefflossFunction):
    """:func:`refloss.center_loss`; ``apply(options, x, labels, centers)``."""

    @staticmethod
    def forward(ctx: Any, options: dict, x: Tensor, labels: Tensor, centers: Tensor) -> Tensor:
        _require_tensors(("x", "labels", "centers"), (x, labels, centers))
        return _forward(ctx, rl.center_loss, options, (x, labels, centers))


class ContrastiveLossFunction(_RefflossFunction):
    """:func:`refloss.contrastive_loss`; ``apply(options, a, b, same)``."""

    @staticmethod
    def forward(ctx: Any, options: dict, a: Tensor, b: Tensor, same: Tensor) -> Tensor:
        _require_tensors(("a", "b", "same"), (a, b, same))
        return _forward(ctx, rl.contrastive_loss, options, (a, b, same))


class ContrastiveLossAllPairsFunction(_RefflossFunction):
    """:func:`refloss.contrastive_loss_all_pairs`; ``apply(options, x, labels)``."""

    @staticmethod
    def forward(ctx: Any, options: dict, x: Tensor, labels: Tensor) -> Tensor:
        _require_tensors(("x", "labels"), (x, labels))
        return _forward(ctx, rl.contrastive_loss_all_pairs, options, (x, labels))


class TripletMarginLossFunction(_RefflossFunction):
    """:func:`refloss.triplet_margin_loss`; ``apply(options, anchor, positive, negative)``."""

    @staticmethod
    def forward(
        ctx: Any, options: dict, anchor: Tensor, positive: Tensor, negative: Tensor
    ) -> Tensor:
        _require_tensors(("anchor", "positive", "negative"), (anchor, positive, negative))
        return _forward(ctx, rl.triplet_margin_loss, options, (anchor, positive, negative))


class BatchAllTripletLossFunction(_RefflossFunction):
    """:func:`refloss.batch_all_triplet_loss`; ``apply(options, x, labels)``."""

    @staticmethod
    def forward(ctx: Any, options: dict, x: Tensor, labels: Tensor) -> Tensor:
        _require_tensors(("x", "labels"), (x, labels))
        return _forward(ctx, rl.batch_all_triplet_loss, options, (x, labels))


class BatchHardTripletLossFunction(_RefflossFunction):
    """:func:`refloss.batch_hard_triplet_loss`; ``apply(options, x, labels)``."""

    @staticmethod
    def forward(ctx: Any, options: dict, x: Tensor, labels: Tensor) -> Tensor:
        _require_tensors(("x", "labels"), (x, labels))
        return _forward(ctx, rl.batch_hard_triplet_loss, options, (x, labels))


class HardestNegativeTripletLossFunction(_RefflossFunction):
    """:func:`refloss.hardest_negative_triplet_loss`; ``apply(options, x, labels)``."""

    @staticmethod
    def forward(ctx: Any, options: dict, x: Tensor, labels: Tensor) -> Tensor:
        _require_tensors(("x", "labels"), (x, labels))
        return _forward(ctx, rl.hardest_negative_triplet_loss, options, (x, labels))


class SemihardTripletLossFunction(_RefflossFunction):
    """:func:`refloss.semihard_triplet_loss`; ``apply(options, x, labels)``."""

    @staticmethod
    def forward(ctx: Any, options: dict, x: Tensor, labels: Tensor) -> Tensor:
        _require_tensors(("x", "labels"), (x, labels))
        return _forward(ctx, rl.semihard_triplet_loss, options, (x, labels))


# --------------------------------------------------------------------------
# functional wrappers: the core's names, signatures and defaults


def pairwise_distances(x: Tensor, y: Tensor | None = None, *, metric: str = "euclidean") -> Tensor:
    r"""Distance matrix :math:`D_{ij} = d(x_i, y_j)` (``y=None`` means ``y = x``), differentiable.

    Metrics: ``"euclidean"`` :math:`\lVert x_i - y_j\rVert`, ``"sqeuclidean"``
    its square, ``"cosine"`` :math:`1 - \hat x_i\cdot\hat y_j`.

    Gradient (refloss's analytic VJP, :func:`refloss.pairwise_distances`), with
    :math:`G = \partial L/\partial D`: :math:`\partial L/\partial X =
    \mathrm{diag}(K\mathbf 1)X - KY`, :math:`\partial L/\partial Y =
    \mathrm{diag}(K^\top\mathbf 1)Y - K^\top X`, :math:`K = G/D` (0 where
    D = 0) for euclidean, :math:`2G` for sqeuclidean; cosine goes through the
    normalisation. Identical rows have distance exactly 0 and euclidean
    gradient 0 (``torch.cdist`` gives neither).

    Reference: :func:`refloss.pairwise_distances` (``refloss/distances.py``).
    """
    return PairwiseDistancesFunction.apply({"metric": metric}, x, y)


def paired_distances(a: Tensor, b: Tensor, *, metric: str = "euclidean") -> Tensor:
    r"""Row-wise distances :math:`d_i = d(a_i, b_i)`, differentiable.

    Gradient (analytic): euclidean :math:`g_i (a_i - b_i)/d_i` (0 where
    :math:`d_i = 0`), sqeuclidean :math:`2 g_i (a_i - b_i)`, cosine through the
    normalisation; ``b`` gets the mirror image. No epsilon is added to the
    difference (``torch.nn.functional.pairwise_distance`` adds 1e-6).

    Reference: :func:`refloss.paired_distances` (``refloss/distances.py``).
    """
    return PairedDistancesFunction.apply({"metric": metric}, a, b)


def center_loss(x: Tensor, labels: Tensor, centers: Tensor, *, reduction: str = "sum") -> Tensor:
    r"""Center loss :math:`l_i = \tfrac12\lVert x_i - c_{y_i}\rVert^2`, reduced, differentiable.

    ``"sum"`` is the paper's :math:`L_C`, ``"mean"`` divides by B (Caffe),
    ``"none"`` returns the B terms. Gradients (analytic), :math:`w_i` the
    upstream weight of term i: :math:`\partial L/\partial x_i = w_i (x_i - c_{y_i})`,
    :math:`\partial L/\partial c_j = -\sum_{y_i = j} w_i (x_i - c_j)` (the true
    derivative; for the paper's Eq. 4 update use :class:`CenterLoss`).
    ``labels`` gets no gradient.

    Reference: Wen et al., ECCV 2016, Eq. 2; :func:`refloss.center_loss`
    (``refloss/center.py``).
    """
    return CenterLossFunction.apply({"reduction": reduction}, x, labels, centers)


def contrastive_loss(
    a: Tensor,
    b: Tensor,
    same: Tensor,
    *,
    margin: float = 1.0,
    pos_margin: float = 0.0,
    power: int = 2,
    metric: str = "euclidean",
    normalize: bool = False,
    reduction: str = "mean",
    scale: float = 1.0,
) -> Tensor:
    r"""Contrastive loss of explicit pairs, differentiable.

    :math:`l_i = c\,(s_i [d_i - m_+]_+^p + (1 - s_i)[m - d_i]_+^p)` with
    :math:`d_i = d(a_i, b_i)`, ``same`` boolean and :math:`c` = ``scale``.
    Gradient (analytic):
    :math:`\partial l/\partial d = c\,(s\,p\,[d - m_+]_+^{p-1} - (1 - s)\,p\,[m - d]_+^{p-1})`
    (a hinge exactly at 0 has subgradient 0), chained through the distance
    and, with ``normalize=True``, the normalisation. No factor ½ by default
    (as TensorFlow Addons); ``scale=0.5`` is Hadsell's ½ form. ``same`` gets
    no gradient.

    Reference: Hadsell, Chopra, LeCun, CVPR 2006; :func:`refloss.contrastive_loss`
    (``refloss/contrastive.py``).
    """
    options = {
        "margin": margin, "pos_margin": pos_margin, "power": power, "metric": metric,
        "normalize": normalize, "reduction": reduction, "scale": scale,
    }
    return ContrastiveLossFunction.apply(options, a, b, same)


def contrastive_loss_all_pairs(
    x: Tensor,
    labels: Tensor,
    *,
    margin: float = 1.0,
    pos_margin: float = 0.0,
    power: int = 2,
    metric: str = "euclidean",
    normalize: bool = False,
    reduction: str = "mean",
    scale: float = 1.0,
) -> Tensor:
    r"""Contrastive loss over every pair i < j of a labeled batch, differentiable.

    :func:`contrastive_loss` on the B(B−1)/2 pairs with
    :math:`s_{ij} = (y_i = y_j)`; ``"none"`` returns the terms in row-major
    order (0,1), (0,2), …, (1,2), …; every term times ``scale``. Gradient: the analytic
    :math:`\partial l/\partial d_{ij}` of :func:`contrastive_loss` through the
    scatter-free matrix VJP of the distances. ``labels`` gets no gradient.

    Reference: Hadsell et al. 2006; :func:`refloss.contrastive_loss_all_pairs`
    (``refloss/contrastive.py``).
    """
    options = {
        "margin": margin, "pos_margin": pos_margin, "power": power, "metric": metric,
        "normalize": normalize, "reduction": reduction, "scale": scale,
    }
    return ContrastiveLossAllPairsFunction.apply(options, x, labels)


def triplet_margin_loss(
    anchor: Tensor,
    positive: Tensor,
    negative: Tensor,
    *,
    margin: float = 1.0,
    metric: str = "euclidean",
    soft: bool = False,
    swap: bool = False,
    normalize: bool = False,
    reduction: str = "mean",
) -> Tensor:
    r"""Triplet loss on explicit triplets, differentiable.

    :math:`l_i = [d(a_i, p_i) - d(a_i, n_i) + m]_+`, or
    :math:`\log(1 + e^{d_{ap} - d_{an}})` with ``soft=True``; ``swap=True``
    uses :math:`\min(d_{an}, d_{pn})`. Gradient (analytic):
    :math:`\pm w_i` on :math:`d_{ap}` / :math:`d_{an}` times the hinge's
    derivative (0 at exactly 0, :math:`\sigma(z)` when soft), then the
    paired-distance VJP. Unlike ``torch.nn.functional.triplet_margin_loss``
    no epsilon is added to the differences.

    Reference: Schroff et al., FaceNet, CVPR 2015; :func:`refloss.triplet_margin_loss`
    (``refloss/triplet.py``).
    """
    options = {
        "margin": margin, "metric": metric, "soft": soft, "swap": swap,
        "normalize": normalize, "reduction": reduction,
    }
    return TripletMarginLossFunction.apply(options, anchor, positive, negative)


def batch_all_triplet_loss(
    x: Tensor,
    labels: Tensor,
    *,
    margin: float = 1.0,
    metric: str = "euclidean",
    soft: bool = False,
    normalize: bool = False,
    reduction: str = "mean_nonzero",
    pairs: str = "ordered",
) -> Tensor:
    r"""Batch-all triplet loss over every valid (a, p, n) of a labeled batch, differentiable.

    :math:`L = \mathrm{reduce}\,[d_{ap} - d_{an} + m]_+` (soft: softplus);
    ``"mean_nonzero"`` (default) divides by the number of terms > 0,
    ``"none"`` gives the ``[B, B]`` per-pair sums. Gradient (analytic, O(B²
    log B) for the hinge): :math:`\partial L/\partial d_{ap} = w\,k_{ap}`,
    :math:`\partial L/\partial d_{an} = -w\,\#\{p : d_{ap} + m > d_{an}\}`, then
    the distance VJP; the non-zero count is a constant. ``pairs="unordered"``
    keeps each positive pair {a, p} once, a < p.

    Reference: Hermans, Beyer, Leibe 2017 (:math:`L_{BA\ne0}`);
    :func:`refloss.batch_all_triplet_loss` (``refloss/triplet.py``).
    """
    options = {
        "margin": margin, "metric": metric, "soft": soft, "normalize": normalize,
        "reduction": reduction, "pairs": pairs,
    }
    return BatchAllTripletLossFunction.apply(options, x, labels)


def batch_hard_triplet_loss(
    x: Tensor,
    labels: Tensor,
    *,
    margin: float = 1.0,
    metric: str = "euclidean",
    soft: bool = False,
    normalize: bool = False,
    reduction: str = "mean",
    anchor_as_positive: bool = False,
) -> Tensor:
    r"""Batch-hard triplet loss, one term per anchor with a positive and a negative, differentiable.

    :math:`l_a = [\max_p d_{ap} - \min_n d_{an} + m]_+` (soft: softplus);
    ``"mean"`` over valid anchors, ``"none"`` the ``[B]`` terms (0 for
    invalid anchors). Gradient (analytic): :math:`G_{a p_a} = w_a`,
    :math:`G_{a n_a} = -w_a` on the selected pairs only (ties to the lowest
    index), then the distance VJP. ``anchor_as_positive=True`` counts the
    anchor as its own positive at distance 0 (the re-ID mask with the diagonal).

    Reference: Hermans, Beyer, Leibe 2017; :func:`refloss.batch_hard_triplet_loss`
    (``refloss/triplet.py``).
    """
    options = {
        "margin": margin, "metric": metric, "soft": soft, "normalize": normalize,
        "reduction": reduction, "anchor_as_positive": anchor_as_positive,
    }
    return BatchHardTripletLossFunction.apply(options, x, labels)


def semihard_triplet_loss(
    x: Tensor,
    labels: Tensor,
    *,
    margin: float = 1.0,
    metric: str = "euclidean",
    normalize: bool = False,
    reduction: str = "mean",
) -> Tensor:
    r"""Semi-hard triplet loss (TensorFlow's definition), one term per positive pair.

    :math:`l_{ap} = [d_{ap} - d_{an^*} + m]_+` with :math:`n^*` the nearest
    negative strictly farther than p, else the farthest negative; ``"none"``
    gives the ``[B, B]`` matrix. Gradient (analytic): :math:`G_{ap} = w_{ap}`,
    :math:`G_{an} = -\sum_{p:\,n^*_{ap} = n} w_{ap}`; the choice of
    :math:`n^*` carries no gradient.

    Reference: Schroff et al., FaceNet, CVPR 2015; TensorFlow Addons
    ``triplet_semihard_loss``; :func:`refloss.semihard_triplet_loss`
    (``refloss/triplet.py``).
    """
    options = {"margin": margin, "metric": metric, "normalize": normalize, "reduction": reduction}
    return SemihardTripletLossFunction.apply(options, x, labels)


def hardest_negative_triplet_loss(
    x: Tensor,
    labels: Tensor,
    *,
    margin: float = 1.0,
    metric: str = "euclidean",
    soft: bool = False,
    normalize: bool = False,
    reduction: str = "mean",
) -> Tensor:
    r"""All positives, hardest negative: one term per positive pair, differentiable.

    :math:`l_{ap} = [d_{ap} - \min_n d_{an} + m]_+` (soft: softplus) for every
    ordered positive pair whose anchor has a negative; ``"none"`` gives the
    ``[B, B]`` matrix. Gradient (analytic): :math:`G_{ap} = w_{ap}`,
    :math:`G_{an^*_a} = -\sum_p w_{ap}` (ties to the lowest index), then the
    distance VJP.

    Reference: :func:`refloss.hardest_negative_triplet_loss`
    (``refloss/hardest_negative.py``).
    """
    options = {
        "margin": margin, "metric": metric, "soft": soft, "normalize": normalize,
        "reduction": reduction,
    }
    return HardestNegativeTripletLossFunction.apply(options, x, labels)


# --------------------------------------------------------------------------
# modules


def _probe_options(fn: Callable, n_arrays: int, **options: Any) -> None:
    """Validate options up front with the core's own checks: a dry run on an
    empty batch (which the core defines as loss 0)."""
    x = torch.zeros((0, 1), dtype=torch.float64)
    if n_arrays == 3:
        fn(x, x, x, **options)
    else:
        fn(x, torch.zeros((0,), dtype=torch.int64), **options)


_MINING = {
    "all": batch_all_triplet_loss,
    "hard": batch_hard_triplet_loss,
    "semihard": semihard_triplet_loss,
}
_MINING_CORE = {
    "all": rl.batch_all_triplet_loss,
    "hard": rl.batch_hard_triplet_loss,
    "semihard": rl.semihard_triplet_loss,
}


class TripletLoss(nn.Module):
    r"""Triplet loss over a labeled batch: ``TripletLoss(mining=...)(x, labels)``.

    ``mining`` picks the functional twin: ``"all"`` →
    :func:`batch_all_triplet_loss` (every valid triplet, default reduction
    ``"mean_nonzero"``), ``"hard"`` → :func:`batch_hard_triplet_loss` (hardest
    positive and negative per anchor, ``"mean"``), ``"semihard"`` →
    :func:`semihard_triplet_loss` (FaceNet / TensorFlow, ``"mean"``; no soft
    margin). The loss is :math:`[d_{ap} - d_{an} + m]_+` (softplus when
    ``soft``) and its gradient refloss's analytic VJP.

    Args:
        mining: ``"all"`` (default), ``"hard"`` or ``"semihard"``.
        margin: :math:`m \ge 0` (default 1.0).
        metric: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"``.
        soft: soft margin (not with ``"semihard"``).
        normalize: L2-normalise the embeddings first.
        reduction: ``None`` (the twin's default) or any reduction it accepts.

    Options are checked when the module is built, with the core's messages
    (and again by the core at every call, should an attribute be changed).

    Reference: Schroff et al. 2015; Hermans, Beyer, Leibe 2017.
    """

    def __init__(
        self,
        *,
        mining: str = "all",
        margin: float = 1.0,
        metric: str = "euclidean",
        soft: bool = False,
        normalize: bool = False,
        reduction: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(mining, str) or mining not in _MINING:
            raise ValueError(f"mining: expected one of 'all', 'hard', 'semihard', got {mining!r}")
        if mining == "semihard" and soft is not False:
            raise ValueError(
                f"soft: expected False with mining='semihard' (the semi-hard loss "
                f"has no soft margin), got {soft!r}"
            )
        if reduction is None:
            reduction = "mean_nonzero" if mining == "all" else "mean"
        self.mining = mining
        self.margin = margin
        self.metric = metric
        self.soft = soft
        self.normalize = normalize
        self.reduction = reduction
        _probe_options(_MINING_CORE[mining], 2, **self._options())

    def _options(self) -> dict[str, Any]:
        options = {
            "margin": self.margin, "metric": self.metric, "soft": self.soft,
            "normalize": self.normalize, "reduction": self.reduction,
        }
        if self.mining == "semihard":
            del options["soft"]
        return options

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        return _MINING[self.mining](x, labels, **self._options())

    def extra_repr(self) -> str:
        options = {"mining": self.mining, **self._options()}
        return ", ".join(f"{k}={v!r}" for k, v in options.items())


class TripletMarginLoss(nn.Module):
    r"""Triplet loss on explicit triplets: ``TripletMarginLoss()(anchor, positive, negative)``.

    :math:`l_i = [d(a_i, p_i) - d(a_i, n_i) + m]_+` through
    :func:`triplet_margin_loss`. Differs from ``torch.nn.TripletMarginLoss``
    in that no epsilon is added to the differences and the hinge's gradient at
    exactly 0 is 0.

    Args:
        margin, metric, soft, swap, normalize, reduction: as
            :func:`refloss.triplet_margin_loss` (reduction default ``"mean"``).

    Reference: Schroff et al. 2015; Balntas et al. 2016 (swap).
    """

    def __init__(
        self,
        *,
        margin: float = 1.0,
        metric: str = "euclidean",
        soft: bool = False,
        swap: bool = False,
        normalize: bool = False,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.margin = margin
        self.metric = metric
        self.soft = soft
        self.swap = swap
        self.normalize = normalize
        self.reduction = reduction
        _probe_options(rl.triplet_margin_loss, 3, **self._options())

    def _options(self) -> dict[str, Any]:
        return {
            "margin": self.margin, "metric": self.metric, "soft": self.soft,
            "swap": self.swap, "normalize": self.normalize, "reduction": self.reduction,
        }

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        return triplet_margin_loss(anchor, positive, negative, **self._options())

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._options().items())


class ContrastiveLoss(nn.Module):
    r"""Contrastive loss over every pair of a labeled batch: ``ContrastiveLoss()(x, labels)``.

    :math:`\mathrm{reduce}_{i<j}\; s_{ij}[d_{ij} - m_+]_+^p + (1 - s_{ij})[m - d_{ij}]_+^p`
    with :math:`s_{ij} = (y_i = y_j)`, through :func:`contrastive_loss_all_pairs`.
    The module takes ``(x, labels)`` like pytorch-metric-learning's
    ``ContrastiveLoss`` (the way a training loop calls a metric loss); for
    explicit pairs call :func:`contrastive_loss` ``(a, b, same)``.

    Args:
        margin, pos_margin, power, metric, normalize, reduction, scale: as
            :func:`refloss.contrastive_loss_all_pairs` (defaults 1.0, 0.0, 2,
            ``"euclidean"``, False, ``"mean"``, 1.0).

    Reference: Hadsell, Chopra, LeCun, CVPR 2006.
    """

    def __init__(
        self,
        *,
        margin: float = 1.0,
        pos_margin: float = 0.0,
        power: int = 2,
        metric: str = "euclidean",
        normalize: bool = False,
        reduction: str = "mean",
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.margin = margin
        self.pos_margin = pos_margin
        self.power = power
        self.metric = metric
        self.normalize = normalize
        self.reduction = reduction
        self.scale = scale
        _probe_options(rl.contrastive_loss_all_pairs, 2, **self._options())

    def _options(self) -> dict[str, Any]:
        return {
            "margin": self.margin, "pos_margin": self.pos_margin, "power": self.power,
            "metric": self.metric, "normalize": self.normalize, "reduction": self.reduction,
            "scale": self.scale,
        }

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        return contrastive_loss_all_pairs(x, labels, **self._options())

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._options().items())


class CenterLoss(nn.Module):
    r"""Center loss with class centers held by the module: ``CenterLoss(C, D)(x, labels)``.

    ``forward(x, labels)`` returns :func:`center_loss` ``(x, labels, centers)``,
    :math:`\mathrm{reduce}_i\ \tfrac12\lVert x_i - c_{y_i}\rVert^2`, with the
    analytic gradient :math:`w_i (x_i - c_{y_i})` for ``x``.

    Two ways to move the centers:

    * ``learn_centers=False`` (default, the paper): ``centers`` is a buffer
      that gets no gradient; call :meth:`update` ``(x, labels)`` after each
      step. It applies :class:`refloss.RunningCenters`' rule exactly, from the
      per-class statistics :math:`s_j = \sum_{y_i=j} x_i`, :math:`n_j`:
      ``"wen"`` :math:`c_j \leftarrow c_j - \alpha (n_j c_j - s_j)/(1 + n_j)`
      (Eq. 4), ``"ema"`` :math:`c_j \leftarrow (1 - \alpha) c_j + \alpha\,s_j/n_j`
      for classes in the batch, ``"mean"`` :math:`c_j = S_j / N_j` over every
      batch seen. The running ``sums`` :math:`S` and ``counts`` :math:`N` are
      buffers too, so ``state_dict`` round-trips exactly.
    * ``learn_centers=True`` (KaiyangZhou's style): ``centers`` is an
      ``nn.Parameter`` with the gradient
      :math:`-\sum_{y_i=j} w_i (x_i - c_j)`; give it to an optimizer.
      :meth:`update` then raises; ``rule`` and ``alpha`` are unused.

    Args:
        num_classes: C >= 1.
        dim: D >= 0.
        rule: ``"wen"`` (default), ``"ema"`` or ``"mean"``.
        alpha: step in [0, 1] for "wen" and "ema" (default 0.5).
        learn_centers: learn the centers by gradient instead.
        reduction: ``"sum"`` (default, the paper's :math:`L_C`), ``"mean"`` or ``"none"``.
        init: optional ``[C, D]`` initial centers (default zeros).
        device, dtype: of the centers (default CPU, torch's default dtype);
            ``x`` must have the dtype of the centers.

    ``state_dict`` holds ``centers``, ``sums``, ``counts`` and the rule and
    alpha (extra state); loading one that does not fit raises and changes
    nothing, and loading adopts its rule and alpha (as
    :meth:`refloss.RunningCenters.load_state_dict`).

    Reference: Wen, Zhang, Li, Qiao, ECCV 2016, Eq. 2 and 4; KaiyangZhou's
    pytorch-center-loss ``center_loss.py`` (learned centers).
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        *,
        rule: str = "wen",
        alpha: float = 0.5,
        learn_centers: bool = False,
        reduction: str = "sum",
        init: Tensor | None = None,
        device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(learn_centers, bool):
            raise TypeError(
                f"learn_centers: expected True or False, got {type(learn_centers).__name__}"
            )
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype: expected a floating torch.dtype, got {dtype!r}")
        like = torch.zeros((), dtype=dtype, device=device)
        if init is not None:
            _require_tensors(("init",), (init,))
            init = init.detach().to(device=like.device)  # RunningCenters casts the dtype
        running = rl.RunningCenters(num_classes, dim, rule=rule, alpha=alpha, like=like, init=init)
        state = running.state_dict()
        _probe_center_reduction(reduction, state["centers"])
        self.num_classes = running.num_classes
        self.dim = running.dim
        self.rule = running.rule
        self.alpha = running.alpha
        self.learn_centers = learn_centers
        self.reduction = reduction
        if learn_centers:
            self.centers = nn.Parameter(state["centers"])
        else:
            self.register_buffer("centers", state["centers"])
            self.register_buffer("sums", state["sums"])
            self.register_buffer("counts", state["counts"])

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        return center_loss(x, labels, self.centers, reduction=self.reduction)

    # -- updates (learn_centers=False)

    def _running(self) -> rl.RunningCenters:
        if self.learn_centers:
            raise RuntimeError(
                "update: this CenterLoss learns its centers by gradient "
                "(learn_centers=True); give CenterLoss.parameters() to an optimizer "
                "instead, or build it with learn_centers=False to use update()"
            )
        running = rl.RunningCenters(
            self.num_classes, self.dim, rule=self.rule, alpha=self.alpha, like=self.centers
        )
        running.load_state_dict(self._core_state())
        return running

    def _core_state(self) -> dict:
        return {
            "rule": self.rule,
            "alpha": self.alpha,
            "centers": self.centers,
            "sums": self.sums,
            "counts": self.counts,
        }

    def _commit(self, running: rl.RunningCenters) -> Tensor:
        state = running.state_dict()
        # in place, as BatchNorm's running statistics: the buffers keep their
        # identity (optimizers, DDP, user references); the loss's backward
        # holds copies, so a pending backward is unaffected
        self.centers.copy_(state["centers"])
        self.sums.copy_(state["sums"])
        self.counts.copy_(state["counts"])
        return state["centers"]

    @torch.no_grad()
    def update(self, x: Tensor, labels: Tensor) -> Tensor:
        r"""Fold one batch into the centers by ``rule``; returns the new centers (a copy).

        ``x`` is detached and nothing is recorded by autograd. Bad input
        (labels out of range, NaN, wrong shape or dtype, ...) raises the
        core's error and leaves every buffer as it was.
        """
        running = self._running()
        _require_tensors(("x", "labels"), (x, labels))
        running.update(x.detach(), labels)
        return self._commit(running)

    @torch.no_grad()
    def update_from_stats(self, sums: Tensor, counts: Tensor) -> Tensor:
        r"""Fold in per-class statistics :math:`(s, n)` — e.g. from
        :func:`refloss.center_stats` all-reduced across data-parallel workers —
        exactly as :meth:`update` on the whole batch would."""
        running = self._running()
        _require_tensors(("sums", "counts"), (sums, counts))
        running.update_from_stats(sums.detach(), counts.detach())
        return self._commit(running)

    # -- state

    def get_extra_state(self) -> dict:
        return {"rule": self.rule, "alpha": self.alpha}

    def set_extra_state(self, state: Any) -> None:
        # validated by _load_from_state_dict before anything was copied
        self.rule, self.alpha = state["rule"], float(state["alpha"])

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
        error_msgs,
    ) -> None:
        # Check the whole state with RunningCenters' rules first (shapes, finite
        # centers and sums, integer non-negative counts, rule, alpha), so that a
        # state that does not fit changes nothing, not even one buffer.
        candidate = self._core_state() if not self.learn_centers else {
            "rule": self.rule,
            "alpha": self.alpha,
            "centers": self.centers.detach(),
            "sums": torch.zeros_like(self.centers.detach()),
            "counts": torch.zeros(self.num_classes, dtype=torch.int64, device=self.centers.device),
        }
        extra = state_dict.get(prefix + "_extra_state")
        if extra is not None:
            if not isinstance(extra, dict) or not {"rule", "alpha"} <= set(extra):
                error_msgs.append(
                    f"{prefix}_extra_state: expected a dict with 'rule' and 'alpha', got {extra!r}"
                )
                return
            candidate.update(rule=extra["rule"], alpha=extra["alpha"])
        keys = ("centers",) if self.learn_centers else ("centers", "sums", "counts")
        missing = [prefix + k for k in (*keys, "_extra_state") if prefix + k not in state_dict]
        if strict and missing:
            # torch would copy the keys present and raise afterwards: copy none
            missing_keys.extend(missing)
            return
        for key in keys:
            if prefix + key in state_dict:
                candidate[key] = state_dict[prefix + key]
        scratch = rl.RunningCenters(
            self.num_classes, self.dim, rule=self.rule, alpha=self.alpha,
            like=self.centers.detach(),
        )
        try:
            scratch.load_state_dict(candidate)
        except (TypeError, ValueError) as exc:
            error_msgs.append(f"{prefix or 'CenterLoss '}state: {exc}")
            return
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        mode = "learned" if self.learn_centers else f"rule={self.rule!r}, alpha={self.alpha!r}"
        return (
            f"num_classes={self.num_classes}, dim={self.dim}, {mode}, "
            f"reduction={self.reduction!r}"
        )


def _probe_center_reduction(reduction: Any, centers: Tensor) -> None:
    x = torch.zeros((0, centers.shape[1]), dtype=centers.dtype, device=centers.device)
    labels = torch.zeros((0,), dtype=torch.int64, device=centers.device)
    rl.center_loss(x, labels, centers, reduction=reduction)
