r"""PyTorch core: ``torch.nn.functional`` triplet losses and ``pairwise_distance``.

* :func:`pairwise_distance` reproduces ``F.pairwise_distance(x1, x2, p, eps)``
  = ``norm(x1 - x2 + eps, p, dim=-1)`` (ATen ``Distance.cpp``): **eps is added
  to every component of the difference**, so d(x, x) = eps·D^{1/p}, not 0,
  and d(x1, x2) ≠ d(x2, x1) by O(eps).
* :func:`triplet_margin_loss` reproduces ``F.triplet_margin_loss`` /
  ``nn.TripletMarginLoss`` (ATen ``Loss.cpp``): that distance, the optional
  swap ``min(d_an, d_pn)``, and ``clamp_min(margin + d_ap − d_an, 0)``, whose
  gradient at exactly 0 is 1 (``clamp_min`` passes where its input is >= the
  bound) where the reference's relu gives 0.
* :func:`triplet_margin_with_distance_loss` reproduces
  ``F.triplet_margin_with_distance_loss`` / ``nn.TripletMarginWithDistanceLoss``
  (``torch/nn/functional.py``), with ``distance_function`` any refloss
  function of two ``[N, D]`` arrays that has an analytic VJP.

The elementwise min of the swap follows torch's derivative: on a tie each
side receives half the gradient. The inputs are explicit triplets (rows of
three ``[N, D]`` arrays); there are no labels and no mining.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any

from .. import _checks
from ..mining import check_bool
from ..reductions import reduce_backward, reduce_forward
from ..vjp import defvjp, vjp
from ._meta import PresetInfo, preset

__all__ = ["pairwise_distance", "triplet_margin_loss", "triplet_margin_with_distance_loss"]

REDUCTIONS = ("mean", "sum", "none")
_TORCH_SOURCE = "pytorch/pytorch (torch 2.13) : "


# --------------------------------------------------------------------------
# validation


def _real(name, value):
    value = _checks.check_real(name, value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return value


def _check_p(p):
    p = _real("p", p)
    if p < 1.0:
        raise ValueError(f"p: expected a finite number >= 1, got {p!r}")
    return p


def _check_margin(margin):
    # torch/nn/functional.py: `if margin <= 0: raise ValueError(...)`
    margin = _real("margin", margin)
    if margin <= 0.0:
        raise ValueError(f"margin: expected a finite number > 0, got {margin!r}")
    return margin


def _check_rows(names, arrays):
    """Same-shaped 2-D floating arrays of one dtype; returns the namespace."""
    xp = _checks.namespace(**dict(zip(names, arrays)))
    first, ref = names[0], arrays[0]
    for name, a in zip(names, arrays):
        _checks.check_float(xp, name, a)
        _checks.check_rank(name, a, 2, "a 2-D array (batch, dim)")
    for name, a in zip(names[1:], arrays[1:]):
        if tuple(a.shape) != tuple(ref.shape):
            raise ValueError(
                f"{name}: expected shape {tuple(ref.shape)} (as {first}), got {tuple(a.shape)}"
            )
        if a.dtype != ref.dtype:
            raise TypeError(f"{name}: expected the dtype of {first} ({ref.dtype}), got {a.dtype}")
    return xp


def _check_finite(xp, names, arrays, check):
    """The arrays finite: one read for all, none with ``check=False``."""
    fetch = _checks.Fetch(xp, check=_checks.check_flag("check", check))
    for name, a in zip(names, arrays):
        fetch.finite(name, a)
    fetch.done()


# --------------------------------------------------------------------------
# pairwise_distance: ‖x1 − x2 + eps‖_p


def distance_forward(xp, x1, x2, p, eps):
    """``(d, residuals)`` with d_i = ‖x1_i − x2_i + eps‖_p (compute dtype)."""
    # Distance.cpp: at::norm(x1 - x2 + eps, p, innermost_dim)
    v = (x1 - x2) + eps
    if p == 2.0:
        d2 = xp.sum(v * v, axis=1)
        live = d2 > 0
        d = xp.where(live, xp.sqrt(xp.where(live, d2, 1.0)), 0.0)
    elif p == 1.0:
        d = xp.sum(xp.abs(v), axis=1)
    else:
        s = xp.sum(xp.abs(v) ** p, axis=1)
        d = s ** (1.0 / p)
    return d, (v, d, p)


def distance_backward(xp, residuals, g):
    """``(∂L/∂x1, ∂L/∂x2)``: torch's norm backward, 0 where the norm is 0."""
    v, d, p = residuals
    live = d > 0
    if p == 1.0:
        # sgn(v) * grad (sgn(0) = 0)
        gv = g[:, None] * xp.sign(v)
    else:
        # p = 2: v / ‖v‖; otherwise sgn(v)|v|^(p−1) / ‖v‖^(p−1); masked where ‖v‖ = 0
        safe = xp.where(live, d, 1.0)
        if p == 2.0:
            unit = v / safe[:, None]
        else:
            unit = xp.sign(v) * xp.abs(v) ** (p - 1.0) / (safe ** (p - 1.0))[:, None]
        gv = xp.where(live[:, None], g[:, None] * unit, 0.0)
    return gv, -gv


def _pairwise_fwd(x1, x2, *, p=2.0, eps=1e-6, check=True):
    names = ("x1", "x2")
    xp = _check_rows(names, (x1, x2))
    p = _check_p(p)
    eps = _real("eps", eps)
    _check_finite(xp, names, (x1, x2), check)
    dtype = x1.dtype
    cdt = _checks.compute_dtype(xp, dtype)
    d, res = distance_forward(xp, xp.astype(x1, cdt), xp.astype(x2, cdt), p, eps)
    return xp.astype(d, dtype), (xp, dtype, res)


def _pairwise_bwd(residuals, g):
    xp, dtype, res = residuals
    g1, g2 = distance_backward(xp, res, g)
    return xp.astype(g1, dtype), xp.astype(g2, dtype)


@preset(
    PresetInfo(
        implementation="torch.nn.functional.pairwise_distance (nn.PairwiseDistance)",
        distance="‖x1 − x2 + eps‖_p row-wise (p ≥ 1)",
        squared="no",
        margin="n/a",
        reduction="none: one distance per row",
        labels="none (explicit row pairs)",
        edge_cases=(
            "d(x, x) = eps·D^(1/p), not 0, with gradient sgn·|eps|^(p−1)/d^(p−1) "
            "(p = 2: 1/√D per coordinate); d(x1, x2) ≠ d(x2, x1) by O(eps); "
            "gradient 0 only where x1 − x2 = −eps exactly"
        ),
        epsilon="eps = 1e-6 added to every component of the difference (not to the norm)",
        source=_TORCH_SOURCE + "aten/src/ATen/native/Distance.cpp (pairwise_distance); "
        "torch/csrc/autograd/FunctionsManual.cpp (norm_backward)",
    )
)
@defvjp(_pairwise_fwd, _pairwise_bwd)
def pairwise_distance(
    x1: Any, x2: Any, *, p: float = 2.0, eps: float = 1e-6, check: bool = True
) -> Any:
    r"""``torch.nn.functional.pairwise_distance(x1, x2, p, eps)``.

    .. math:: d_i = \lVert x1_i - x2_i + \varepsilon\mathbf 1\rVert_p

    Gradient (through :func:`refloss.vjp`), with :math:`v_i = x1_i - x2_i + \varepsilon`
    and :math:`g_i` the upstream weight: :math:`\partial L/\partial x1_i =
    g_i\,\mathrm{sgn}(v_i)\,|v_i|^{p-1}/d_i^{p-1}` (p = 2: :math:`g_i v_i/d_i`;
    p = 1: :math:`g_i\,\mathrm{sgn}(v_i)`), 0 where :math:`d_i = 0`;
    :math:`\partial L/\partial x2_i` is its negative. This is torch's
    ``norm_backward``.

    Differences:
        * From :func:`refloss.paired_distances`: eps is added to every
          component of the difference, so identical rows are
          :math:`\varepsilon D^{1/p}` apart (1e-6·√D by default) with a unit
          gradient (:math:`\mathbf 1/\sqrt D` for p = 2), where the reference
          gives 0 and gradient 0; the distance is not symmetric.
        * Only ``[N, D]`` inputs of one shape (torch also broadcasts and
          accepts 1-D rows), no ``keepdim``; p must be finite and >= 1
          (torch also takes p < 1 and inf); eps must be finite.
        * float16/bfloat16 are computed in float32 and cast back.

    Args:
        x1, x2: ``[N, D]`` floating arrays of one dtype.
        p: the norm order, a finite number >= 1 (default 2).
        eps: added to each component of x1 − x2 (default 1e-6).
        check: check the values (finite inputs) in one read (default
            True); ``check=False`` reads nothing (docs/errors.md, "Checks and syncs").

    Returns:
        ``[N]`` array in the namespace, device and dtype of ``x1``.

    Source:
        pytorch/pytorch, ``aten/src/ATen/native/Distance.cpp``
        (``pairwise_distance``: ``at::norm(x1 - x2 + eps, p, innermost_dim)``).
    """
    return _pairwise_fwd(x1, x2, p=p, eps=eps, check=check)[0]


# --------------------------------------------------------------------------
# the triplet stage shared by both losses


def _hinge_forward(xp, d_ap, d_an, d_pn, margin, reduction):
    """swap min, clamp_min(margin + d_ap − d_an, 0) and the reduction."""
    share = None
    if d_pn is not None:
        # at::min(dist_neg, dist_swap) / torch.minimum: a tie splits the gradient
        dtype = d_an.dtype
        share = xp.astype(d_an < d_pn, dtype) + 0.5 * xp.astype(d_an == d_pn, dtype)
        d_an = xp.where(d_pn < d_an, d_pn, d_an)
    z = (margin + d_ap) - d_an
    out = xp.where(z > 0, z, 0.0)
    # clamp_min backward: where(self >= min, grad, 0) — 1 at exactly 0
    slope = xp.astype(z >= 0, z.dtype)
    # an empty "mean" is 0 here (torch: the mean of nothing, NaN)
    value, rres = reduce_forward(xp, out, reduction)
    return value, (rres, out, slope, share)


def _hinge_backward(xp, residuals, g):
    """``(∂L/∂d_ap, ∂L/∂d_an, ∂L/∂d_pn or None)``."""
    rres, out, slope, share = residuals
    w = reduce_backward(xp, rres, g, out) * slope
    if share is None:
        return w, -w, None
    return w, -w * share, -w * (1.0 - share)


def _check_loss_options(margin, swap, reduction):
    margin = _check_margin(margin)
    check_bool("swap", swap)
    _checks.check_choice("reduction", reduction, REDUCTIONS)
    return margin


_TRIPLET_NAMES = ("anchor", "positive", "negative")


# --------------------------------------------------------------------------
# triplet_margin_loss


def _triplet_fwd(anchor, positive, negative, *, margin=1.0, p=2.0, eps=1e-6, swap=False,
                 reduction="mean", check=True):
    arrays = (anchor, positive, negative)
    xp = _check_rows(_TRIPLET_NAMES, arrays)
    margin = _check_loss_options(margin, swap, reduction)
    p = _check_p(p)
    eps = _real("eps", eps)
    _check_finite(xp, _TRIPLET_NAMES, arrays, check)
    dtype = anchor.dtype
    cdt = _checks.compute_dtype(xp, dtype)
    a, pos, neg = (xp.astype(v, cdt) for v in arrays)
    d_ap, r_ap = distance_forward(xp, a, pos, p, eps)
    d_an, r_an = distance_forward(xp, a, neg, p, eps)
    d_pn, r_pn = distance_forward(xp, pos, neg, p, eps) if swap else (None, None)
    value, hres = _hinge_forward(xp, d_ap, d_an, d_pn, margin, reduction)
    return xp.astype(value, dtype), (xp, dtype, hres, r_ap, r_an, r_pn)


def _triplet_bwd(residuals, g):
    xp, dtype, hres, r_ap, r_an, r_pn = residuals
    w_ap, w_an, w_pn = _hinge_backward(xp, hres, g)
    ga, gp = distance_backward(xp, r_ap, w_ap)
    ga2, gn = distance_backward(xp, r_an, w_an)
    ga = ga + ga2
    if w_pn is not None:
        gp2, gn2 = distance_backward(xp, r_pn, w_pn)
        gp, gn = gp + gp2, gn + gn2
    return tuple(xp.astype(v, dtype) for v in (ga, gp, gn))


@preset(
    PresetInfo(
        implementation="torch.nn.functional.triplet_margin_loss (nn.TripletMarginLoss)",
        distance="pairwise_distance: ‖a − p + eps‖_p per triplet (p = 2 default, p ≥ 1)",
        squared="no",
        margin="1.0 (must be > 0)",
        reduction="mean over the N triplets, zeros included ('sum', 'none')",
        labels="none: explicit (anchor, positive, negative) rows",
        edge_cases=(
            "hinge clamp_min(margin + d_ap − d_an, 0): gradient 1 at exactly 0; swap "
            "min(d_an, d_pn), a tie splits the gradient ½/½; empty batch 0 (torch: NaN)"
        ),
        epsilon="eps = 1e-6 added to every component of each difference: d(x, x) = eps·D^(1/p)",
        source=_TORCH_SOURCE + "aten/src/ATen/native/Loss.cpp (triplet_margin_loss), "
        "Distance.cpp (pairwise_distance), torch/nn/functional.py (margin check)",
    )
)
@defvjp(_triplet_fwd, _triplet_bwd)
def triplet_margin_loss(
    anchor: Any,
    positive: Any,
    negative: Any,
    *,
    margin: float = 1.0,
    p: float = 2.0,
    eps: float = 1e-6,
    swap: bool = False,
    reduction: str = "mean",
    check: bool = True,
) -> Any:
    r"""``torch.nn.functional.triplet_margin_loss(anchor, positive, negative, ...)``.

    .. math::

        l_i = \max\big((m + d(a_i, p_i)) - d(a_i, n_i),\ 0\big), \qquad
        d(x, y) = \lVert x - y + \varepsilon\mathbf 1\rVert_p,

    with, for ``swap=True``, :math:`d(a_i, n_i) \leftarrow \min(d(a_i, n_i),
    d(p_i, n_i))`; reduced by the mean over the N triplets (zeros included),
    the sum, or not at all.

    Gradient (through :func:`refloss.vjp`): with :math:`w_i` the upstream
    weight of term i times ``clamp_min``'s derivative :math:`[z_i \ge 0]`
    (**1 at exactly 0**), :math:`\partial L/\partial d_{ap,i} = w_i` and
    :math:`\partial L/\partial d_{an,i} = -w_i` (split with :math:`d_{pn,i}`
    by the swap's min: all to the smaller, ½/½ on a tie), then
    :func:`pairwise_distance`'s VJP.

    Differences:
        * From :func:`refloss.triplet_margin_loss`: the distance carries
          torch's eps (d(x, x) = 1e-6·√D with a unit gradient), the hinge's
          gradient at exactly 0 is 1 (``clamp_min``) instead of 0, a swap tie
          splits the gradient instead of giving it to d_an, and the margin
          must be > 0 (torch raises ``ValueError`` for margin <= 0).
        * An empty batch gives 0 with ``"mean"`` (torch: NaN, the mean of
          nothing), as every refloss function.
        * Only ``[N, D]`` inputs (torch also takes one unbatched ``[D]``
          triplet), no ``size_average``/``reduce``; p finite and >= 1;
          float16/bfloat16 computed in float32.

    Args:
        anchor, positive, negative: ``[N, D]`` floating arrays of one dtype.
        margin: m > 0 (default 1.0).
        p: the norm order, finite and >= 1 (default 2).
        eps: added to each component of the differences (default 1e-6).
        swap: the distance swap of Balntas et al. 2016.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (the ``[N]`` terms).
        check: check the values (finite inputs) in one read (default
            True); ``check=False`` reads nothing (docs/errors.md, "Checks and syncs").

    Returns:
        A 0-d array (``[N]`` for ``"none"``) in the namespace, device and
        dtype of ``anchor``.

    Source:
        pytorch/pytorch, ``aten/src/ATen/native/Loss.cpp``
        (``triplet_margin_loss``), ``Distance.cpp`` (``pairwise_distance``),
        ``torch/nn/functional.py`` (``triplet_margin_loss``: the margin check).
    """
    return _triplet_fwd(anchor, positive, negative, margin=margin, p=p, eps=eps, swap=swap,
                        reduction=reduction, check=check)[0]


# --------------------------------------------------------------------------
# triplet_margin_with_distance_loss


def _distance_rule(distance_function):
    """``(fn, args, kwargs)`` to call through :func:`refloss.vjp`, or TypeError."""
    if distance_function is None:
        return pairwise_distance, (), {"check": False}
    fn, args, kwargs = distance_function, (), {}
    if isinstance(fn, functools.partial):
        fn, args, kwargs = fn.func, fn.args, dict(fn.keywords)
    if not callable(fn) or not hasattr(fn, "__refloss_vjp__"):
        raise TypeError(
            f"distance_function: expected None or a refloss distance with an analytic VJP "
            f"(e.g. refloss.paired_distances, refloss.compat.torch_nn.pairwise_distance, or "
            f"a functools.partial of one), got {distance_function!r}"
        )
    # the rows it gets were checked by the loss (or checks are off), and the
    # cotangents its pullback gets are the loss's own: nothing to read again
    if "check" not in kwargs and "check" in inspect.signature(fn).parameters:
        kwargs["check"] = False
    return fn, args, kwargs


def _call_distance(xp, rule, x, y, rows):
    fn, args, kwargs = rule
    d, pullback = vjp(fn, *args, x, y, **kwargs)
    if (
        getattr(d, "ndim", None) != 1
        or d.shape[0] != rows
        or not xp.isdtype(d.dtype, "real floating")
    ):
        shape = tuple(getattr(d, "shape", ()))
        raise ValueError(
            f"distance_function: expected a floating [{rows}] array (one distance per row), "
            f"got shape {shape}"
        )
    return xp.astype(d, x.dtype), (pullback, len(args), d.dtype)


def _pull(xp, dres, w):
    pullback, skip, dtype = dres
    grads = pullback(xp.astype(w, dtype))
    return grads[skip], grads[skip + 1]


def _with_distance_fwd(anchor, positive, negative, *, distance_function=None, margin=1.0,
                       swap=False, reduction="mean", check=True):
    arrays = (anchor, positive, negative)
    xp = _check_rows(_TRIPLET_NAMES, arrays)
    margin = _check_loss_options(margin, swap, reduction)
    rule = _distance_rule(distance_function)
    _check_finite(xp, _TRIPLET_NAMES, arrays, check)
    dtype = anchor.dtype
    cdt = _checks.compute_dtype(xp, dtype)
    rows = anchor.shape[0]
    a, pos, neg = (xp.astype(v, cdt) for v in arrays)
    d_ap, r_ap = _call_distance(xp, rule, a, pos, rows)
    d_an, r_an = _call_distance(xp, rule, a, neg, rows)
    d_pn, r_pn = _call_distance(xp, rule, pos, neg, rows) if swap else (None, None)
    value, hres = _hinge_forward(xp, d_ap, d_an, d_pn, margin, reduction)
    return xp.astype(value, dtype), (xp, dtype, hres, r_ap, r_an, r_pn)


def _with_distance_bwd(residuals, g):
    xp, dtype, hres, r_ap, r_an, r_pn = residuals
    w_ap, w_an, w_pn = _hinge_backward(xp, hres, g)
    ga, gp = _pull(xp, r_ap, w_ap)
    ga2, gn = _pull(xp, r_an, w_an)
    ga = ga + ga2
    if w_pn is not None:
        gp2, gn2 = _pull(xp, r_pn, w_pn)
        gp, gn = gp + gp2, gn + gn2
    return tuple(xp.astype(v, dtype) for v in (ga, gp, gn))


@preset(
    PresetInfo(
        implementation=(
            "torch.nn.functional.triplet_margin_with_distance_loss "
            "(nn.TripletMarginWithDistanceLoss)"
        ),
        distance=(
            "distance_function(x, y) -> [N]; default pairwise_distance (p = 2, eps = 1e-6 "
            "added to the difference)"
        ),
        squared="no (as the distance function returns it)",
        margin="1.0 (must be > 0)",
        reduction="mean over the N triplets, zeros included ('sum', 'none')",
        labels="none: explicit (anchor, positive, negative) rows",
        edge_cases=(
            "torch.clamp_min(margin + d_ap − d_an, 0): gradient 1 at exactly 0; swap "
            "torch.minimum(d_an, distance_function(p, n)), a tie splits ½/½; "
            "empty batch 0 (torch: NaN)"
        ),
        epsilon="that of the distance function (default: eps = 1e-6 inside the norm)",
        source=_TORCH_SOURCE + "torch/nn/functional.py (triplet_margin_with_distance_loss)",
    )
)
@defvjp(_with_distance_fwd, _with_distance_bwd)
def triplet_margin_with_distance_loss(
    anchor: Any,
    positive: Any,
    negative: Any,
    *,
    distance_function: Callable | None = None,
    margin: float = 1.0,
    swap: bool = False,
    reduction: str = "mean",
    check: bool = True,
) -> Any:
    r"""``torch.nn.functional.triplet_margin_with_distance_loss(anchor, positive, negative, ...)``.

    .. math:: l_i = \max\big((m + \delta(a_i, p_i)) - \delta(a_i, n_i),\ 0\big)

    with :math:`\delta` = ``distance_function`` (default
    :func:`pairwise_distance`: torch's ``pairwise_distance`` with p = 2,
    eps = 1e-6) and, for ``swap=True``, :math:`\delta(a_i, n_i) \leftarrow
    \min(\delta(a_i, n_i), \delta(p_i, n_i))`; reduced as
    :func:`triplet_margin_loss`.

    ``distance_function`` must be differentiable by refloss: a function of
    two ``[N, D]`` arrays returning ``[N]`` distances that carries an
    analytic VJP — :func:`refloss.paired_distances` (exact, d(x, x) = 0),
    :func:`pairwise_distance` here, or a ``functools.partial`` of one that
    fixes keyword options (``partial(pairwise_distance, p=1)`` is
    ``nn.PairwiseDistance(p=1)``).

    Gradient (through :func:`refloss.vjp`): as :func:`triplet_margin_loss`
    (``clamp_min``: 1 at exactly 0; ``torch.minimum``: ½/½ on a tie), pulled
    back through the distance function's own VJP.

    Differences:
        * ``distance_function`` is a refloss function, not a torch callable
          (refloss differentiates analytically, without autograd).
        * An empty batch gives 0 with ``"mean"`` (torch: NaN); only ``[N, D]``
          inputs; float16/bfloat16 computed in float32; the margin must be
          > 0, as torch requires.

    Args:
        anchor, positive, negative: ``[N, D]`` floating arrays of one dtype.
        distance_function: None (default) or a refloss distance, see above.
        margin: m > 0 (default 1.0).
        swap: the distance swap.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
        check: check the values (finite inputs) in one read (default
            True); ``check=False`` reads nothing (docs/errors.md, "Checks and syncs").

    Returns:
        A 0-d array (``[N]`` for ``"none"``) in the namespace, device and
        dtype of ``anchor``.

    Source:
        pytorch/pytorch, ``torch/nn/functional.py``
        (``triplet_margin_with_distance_loss``).
    """
    return _with_distance_fwd(anchor, positive, negative, distance_function=distance_function,
                              margin=margin, swap=swap, reduction=reduction, check=check)[0]
