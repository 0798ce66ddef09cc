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

import contextlib
import functools
import inspect
import threading
import types
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import refloss as rl

from . import _bind

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
    "function",
    "hardest_negative_triplet_loss",
    "paired_distances",
    "pairwise_distances",
    "semihard_triplet_loss",
    "triplet_margin_loss",
    "wrap",
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
# the bridge: one autograd Function and one functional wrapper per core
# function, generated from its signature and its ``__refloss_vjp__``


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _backward_without_autocast(ctx: Any, grad: Tensor, *_: Tensor) -> tuple:
    with _no_autocast(grad):
        return _RefflossFunction.backward(ctx, grad)


def function(core: Callable, *, autocast: bool = True) -> type[torch.autograd.Function]:
    r"""The ``torch.autograd.Function`` of a refloss function with an analytic VJP.

    ``Fn.apply(options, *arrays)`` runs ``core``'s rule forward on the tensors
    (``options`` a dict of its keyword arguments, ``arrays`` its positional
    parameters in order) and refloss's analytic backward under autograd. The
    class is named after ``core`` (``batch_hard_triplet_loss`` →
    ``BatchHardTripletLossFunction``), and so is its autograd node.

    Args:
        core: a refloss function carrying ``core.__refloss_vjp__``.
        autocast: ``False`` runs forward and backward with ``torch.autocast``
            switched off for the first array's device (the core then picks its
            compute dtype itself; :func:`center_loss` needs this, or autocast
            would run the one-hot GEMM of its center gradient in half precision).

    Raises:
        TypeError: ``core`` has no analytic VJP or has variadic parameters.
    """
    params = _bind.parameters(core)
    names, optional = params.arrays, params.optional

    def forward(ctx: Any, options: dict, *arrays: Tensor) -> Tensor:
        _require_tensors(names, arrays, optional)
        if autocast:
            return _forward(ctx, core, options, arrays)
        with _no_autocast(arrays[0]):
            return _forward(ctx, core, options, arrays)

    name = _camel(core.__name__) + "Function"
    body = {
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": (
            f":func:`{core.__module__}.{core.__name__}` with its analytic VJP; "
            f"``apply(options, {', '.join(names)})``."
        ),
        "forward": staticmethod(forward),
    }
    if not autocast:
        body["backward"] = staticmethod(_backward_without_autocast)
    # built by the metaclass like a class statement, so that the autograd
    # node is named after the loss (``BatchHardTripletLossFunctionBackward``)
    return type(name, (_RefflossFunction,), body)


def wrap(core: Callable, *, autocast: bool = True) -> Callable:
    r"""A torch-differentiable version of a refloss function with an analytic VJP.

    The result has ``core``'s name, signature, defaults and docstring and
    calls ``function(core).apply(options, *arrays)`` (the Function is
    ``wrapped.function``): arrays bound by position or by name are the
    Function's inputs and receive a gradient (``None`` for labels and
    ``same``), the keyword-only options go into ``options`` with their
    defaults filled in. Every public function of this module is
    ``wrap(rl.<name>)``; a new core loss needs no other glue.

    Example:
        >>> import torch, refloss as rl
        >>> from refloss.adapters.torch import wrap
        >>> dist = wrap(rl.paired_distances)
        >>> a = torch.tensor([[3.0, 4.0]], requires_grad=True)
        >>> dist(a, torch.zeros(1, 2)).sum().backward()
        >>> a.grad
        tensor([[0.6000, 0.8000]])
    """
    params = _bind.parameters(core)
    fn = function(core, autocast=autocast)

    @functools.wraps(core)
    def adapted(*args: Any, **kwargs: Any) -> Tensor:
        arrays, options = _bind.bind(params, args, kwargs)
        return fn.apply(options, *arrays)

    adapted.__module__ = __name__
    adapted.__doc__ = (core.__doc__ or "").rstrip() + _ADAPTER_NOTE.format(
        origin=f"{core.__module__}.{core.__qualname__}", function=fn.__name__
    )
    adapted.function = fn
    return adapted


_ADAPTER_NOTE = """

    PyTorch adapter: this is ``{origin}`` as the ``torch.autograd.Function``
    ``{function}`` (``{function}.apply(options, *arrays)``): autograd calls the
    analytic backward above and never traces the forward; arrays bound by
    position or by name receive a gradient, labels and ``same`` none; the
    backward is first order only (a double backward raises).
"""


# --------------------------------------------------------------------------
# the public functions and their Functions (``Fn.apply(options, *arrays)``)

pairwise_distances = wrap(rl.pairwise_distances)
paired_distances = wrap(rl.paired_distances)
center_loss = wrap(rl.center_loss, autocast=False)
contrastive_loss = wrap(rl.contrastive_loss)
contrastive_loss_all_pairs = wrap(rl.contrastive_loss_all_pairs)
triplet_margin_loss = wrap(rl.triplet_margin_loss)
batch_all_triplet_loss = wrap(rl.batch_all_triplet_loss)
batch_hard_triplet_loss = wrap(rl.batch_hard_triplet_loss)
semihard_triplet_loss = wrap(rl.semihard_triplet_loss)
hardest_negative_triplet_loss = wrap(rl.hardest_negative_triplet_loss)

PairwiseDistancesFunction = pairwise_distances.function
PairedDistancesFunction = paired_distances.function
CenterLossFunction = center_loss.function
ContrastiveLossFunction = contrastive_loss.function
ContrastiveLossAllPairsFunction = contrastive_loss_all_pairs.function
TripletMarginLossFunction = triplet_margin_loss.function
BatchAllTripletLossFunction = batch_all_triplet_loss.function
BatchHardTripletLossFunction = batch_hard_triplet_loss.function
SemihardTripletLossFunction = semihard_triplet_loss.function
HardestNegativeTripletLossFunction = hardest_negative_triplet_loss.function


# --------------------------------------------------------------------------
# modules: options read from the functional twin's keyword-only parameters

_PROBES = {"labels": torch.int64, "same": torch.bool}


def _probe_options(core: Callable, **options: Any) -> None:
    """Validate options up front with the core's own checks: a dry run on an
    empty batch (which the core defines as loss 0)."""
    params = _bind.parameters(core)
    arrays = [
        torch.zeros((0,), dtype=_PROBES[name]) if name in _PROBES
        else torch.zeros((0, 1), dtype=torch.float64)
        for name in params.arrays
        if name not in params.optional
    ]
    core(*arrays, **options)


def _init_signature(*twins: Callable, leading: tuple[inspect.Parameter, ...] = ()):
    """``(self, *, <leading>, <the twins' options>)``; an option whose default
    differs between twins defaults to ``None`` (the chosen twin's default)."""
    merged: dict[str, inspect.Parameter] = {}
    for twin in twins:
        for p in _bind.parameters(twin).options:
            seen = merged.setdefault(p.name, p)
            if seen.default != p.default:
                hint = seen.annotation
                if isinstance(hint, str) and not hint.endswith("None"):
                    hint = f"{hint} | None"
                merged[p.name] = seen.replace(default=None, annotation=hint)
    self = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return inspect.Signature([self, *leading, *merged.values()])


class _OptionsModule(nn.Module):
    """A loss module holding its functional twin's keyword-only options as
    attributes, read at every call (so ``module.margin = 0.5`` takes effect)."""

    _twin: Callable

    def _hold(self, twin: Callable, options: dict[str, Any]) -> None:
        params = _bind.parameters(twin)
        unknown = sorted(set(options) - set(params.option_names))
        if unknown:
            raise TypeError(
                f"{type(self).__name__}() got an unexpected keyword argument {unknown[0]!r}"
            )
        self._twin = twin
        self._option_names = params.option_names
        for name, default in params.defaults.items():
            setattr(self, name, options.get(name, default))
        _probe_options(twin, **self._options())

    def _options(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._option_names}

    def _repr_options(self) -> dict[str, Any]:
        return self._options()

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._repr_options().items())


_MINING = {
    "all": batch_all_triplet_loss,
    "hard": batch_hard_triplet_loss,
    "semihard": semihard_triplet_loss,
}


class TripletLoss(_OptionsModule):
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
        margin, metric, soft, normalize, ...: the twin's keyword options, with
            its defaults; an option another twin has and this one lacks (``soft``
            with ``"semihard"``) is accepted only at its default.
        reduction: ``None`` (the twin's default) or any reduction it accepts.

    Options are checked when the module is built, with the core's messages
    (and again by the core at every call, should an attribute be changed).

    Reference: Schroff et al. 2015; Hermans, Beyer, Leibe 2017.
    """

    def __init__(self, *, mining: str = "all", **options: Any) -> None:
        super().__init__()
        if not isinstance(mining, str) or mining not in _MINING:
            raise ValueError(f"mining: expected one of 'all', 'hard', 'semihard', got {mining!r}")
        twin = _MINING[mining]
        own = _bind.parameters(twin).defaults
        # None is "the twin's default" for an option whose default differs
        # between twins (reduction); any other None goes to the core's check
        given = {
            k: v for k, v in options.items()
            if not (v is None and k in _TWIN_DEFAULT and own.get(k) is not None)
        }
        siblings = {}
        for other in _MINING.values():
            siblings.update(_bind.parameters(other).defaults)
        for name in list(given):
            if name in own:
                continue
            if name not in siblings:
                raise TypeError(f"TripletLoss() got an unexpected keyword argument {name!r}")
            value = given.pop(name)
            if not (value is siblings[name] or (type(value) is type(siblings[name])
                                                and value == siblings[name])):
                raise ValueError(
                    f"{name}: expected {siblings[name]!r} with mining={mining!r} "
                    f"({twin.__name__} has no {name!r} option), got {value!r}"
                )
        for name, default in siblings.items():  # kept as attributes, never passed
            if name not in own:
                setattr(self, name, default)
        self.mining = mining
        self._hold(twin, given)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        return _MINING[self.mining](x, labels, **self._options())

    def _repr_options(self) -> dict[str, Any]:
        return {"mining": self.mining, **self._options()}


TripletLoss.__init__.__signature__ = _init_signature(
    *_MINING.values(),
    leading=(inspect.Parameter("mining", inspect.Parameter.KEYWORD_ONLY, default="all"),),
)
_TWIN_DEFAULT = frozenset(
    name for name, p in inspect.signature(TripletLoss).parameters.items() if p.default is None
)


class TripletMarginLoss(_OptionsModule):
    r"""Triplet loss on explicit triplets: ``TripletMarginLoss()(anchor, positive, negative)``.

    :math:`l_i = [d(a_i, p_i) - d(a_i, n_i) + m]_+` through
    :func:`triplet_margin_loss`. Differs from ``torch.nn.TripletMarginLoss``
    in that no epsilon is added to the differences and the hinge's gradient at
    exactly 0 is 0.

    Args:
        margin, metric, soft, swap, normalize, reduction, ...: the keyword
            options of :func:`refloss.triplet_margin_loss`, with its defaults.

    Reference: Schroff et al. 2015; Balntas et al. 2016 (swap).
    """

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self._hold(triplet_margin_loss, options)

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        return triplet_margin_loss(anchor, positive, negative, **self._options())


TripletMarginLoss.__init__.__signature__ = _init_signature(triplet_margin_loss)


class ContrastiveLoss(_OptionsModule):
    r"""Contrastive loss over every pair of a labeled batch: ``ContrastiveLoss()(x, labels)``.

    :math:`\mathrm{reduce}_{i<j}\; s_{ij}[d_{ij} - m_+]_+^p + (1 - s_{ij})[m - d_{ij}]_+^p`
    with :math:`s_{ij} = (y_i = y_j)`, through :func:`contrastive_loss_all_pairs`.
    The module takes ``(x, labels)`` like pytorch-metric-learning's
    ``ContrastiveLoss`` (the way a training loop calls a metric loss); for
    explicit pairs call :func:`contrastive_loss` ``(a, b, same)``.

    Args:
        margin, pos_margin, power, metric, normalize, reduction, ...: the
            keyword options of :func:`refloss.contrastive_loss_all_pairs`,
            with its defaults.

    Reference: Hadsell, Chopra, LeCun, CVPR 2006.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self._hold(contrastive_loss_all_pairs, options)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        return contrastive_loss_all_pairs(x, labels, **self._options())


ContrastiveLoss.__init__.__signature__ = _init_signature(contrastive_loss_all_pairs)

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
        check: the value checks of :meth:`forward` and :meth:`update` (one read
            each; default True; ``check=False`` reads nothing).

    ``state_dict`` holds ``centers``, ``sums``, ``counts`` and the rule and
    alpha (extra state); loading one that does not fit raises and changes
    nothing, and loading adopts its rule and alpha (as
    :meth:`refloss.RunningCenters.load_state_dict`). ``sums`` is kept in
    the accumulator dtype (float32 at least, also after ``.half()``) and
    ``counts`` in int64. Under ``torch.autocast`` (or with any float16 /
    bfloat16 ``x``) the features are cast up to wider centers, and the loss,
    its gradient and the update are computed outside autocast.

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
        check: bool = True,
    ) -> None:
        super().__init__()
        self.check = rl._checks.check_flag("check", check)
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
        self._update_lock = threading.Lock()

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        return center_loss(_widen_half(x, self.centers), labels, self.centers,
                           reduction=self.reduction, check=self.check)

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
        running.load_state_dict(self._core_state(), check=False)  # its own, checked state
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

        ``x`` is detached and nothing is recorded by autograd; float16 or
        bfloat16 ``x`` (from ``torch.autocast``) is cast up to wider centers.
        Bad input (labels out of range, NaN, wrong shape or dtype, ...) raises
        the core's error and leaves every buffer as it was. Updates from
        several threads are serialised by a lock.
        """
        with self._update_lock:
            running = self._running()
            _require_tensors(("x", "labels"), (x, labels))
            with _no_autocast(self.centers):
                running.update(_widen_half(x, self.centers).detach(), labels, check=self.check)
            return self._commit(running)

    @torch.no_grad()
    def update_from_stats(self, sums: Tensor, counts: Tensor) -> Tensor:
        r"""Fold in per-class statistics :math:`(s, n)` — e.g. from
        :func:`refloss.center_stats` all-reduced across data-parallel workers —
        exactly as :meth:`update` on the whole batch would."""
        with self._update_lock:
            running = self._running()
            _require_tensors(("sums", "counts"), (sums, counts))
            running.update_from_stats(sums.detach(), counts.detach(), check=self.check)
            return self._commit(running)

    # -- state

    def _apply(self, fn: Callable, recurse: bool = True) -> CenterLoss:
        # .half() / .bfloat16() cast every floating buffer; the running sums
        # stay in the accumulator dtype (float32 at least), cast from their
        # values before the call, never through half precision
        sums = self._buffers.get("sums")
        super()._apply(fn, recurse)
        if sums is not None:
            wide = _accumulator_dtype(self.centers.dtype)
            if self.sums.dtype != wide:
                self.sums = sums.to(device=self.sums.device, dtype=wide)
        return self

    # the lock does not pickle (torch.save, copy.deepcopy): a new one on load
    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_update_lock", None)
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._update_lock = threading.Lock()

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
        with self._update_lock:
            super()._load_from_state_dict(
                state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                error_msgs,
            )

    def extra_repr(self) -> str:
        mode = "learned" if self.learn_centers else f"rule={self.rule!r}, alpha={self.alpha!r}"
        return (
            f"num_classes={self.num_classes}, dim={self.dim}, {mode}, "
            f"reduction={self.reduction!r}"
        )


def _accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of RunningCenters' running sums: float32 at least."""
    return torch.promote_types(dtype, torch.float32)


def _widen_half(x: Any, centers: Tensor) -> Any:
    """float16/bfloat16 ``x`` (what ``torch.autocast`` produces) cast up to
    wider centers, exactly; any other dtype is left for the core to check."""
    if (
        isinstance(x, torch.Tensor)
        and x.dtype in _HALF
        and x.dtype != centers.dtype
        and torch.promote_types(x.dtype, centers.dtype) == centers.dtype
    ):
        return x.to(centers.dtype)
    return x


def _no_autocast(t: Tensor) -> Any:
    """A context that switches ``torch.autocast`` off for the device of ``t``."""
    kind = t.device.type
    if torch.amp.is_autocast_available(kind):
        return torch.autocast(kind, enabled=False)
    return contextlib.nullcontext()


def _probe_center_reduction(reduction: Any, centers: Tensor) -> None:
    x = torch.zeros((0, centers.shape[1]), dtype=centers.dtype, device=centers.device)
    labels = torch.zeros((0,), dtype=torch.int64, device=centers.device)
    rl.center_loss(x, labels, centers, reduction=reduction)
