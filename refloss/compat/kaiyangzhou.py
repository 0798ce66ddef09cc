r"""KaiyangZhou/pytorch-center-loss: ``CenterLoss.forward(x, labels)``.

The most-copied PyTorch center loss. It builds the full ``[B, C]`` matrix of
squared distances by the expanded formula
:math:`\lVert x_i\rVert^2 + \lVert c_j\rVert^2 - 2\,x_i\cdot c_j`, masks it with the
one-hot labels, clamps the *masked* matrix to ``[1e-12, 1e12]`` and divides
its sum by B. The B·(C − 1) masked-out zeros are clamped up to 1e-12, so the
value carries a constant (C − 1)·1e-12; the clamp also cuts the gradient of
any distance below 1e-12 or above 1e12. :func:`center_loss` reproduces the
value and the gradients torch autograd gives through that graph.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import device as _device_of

from .. import _checks, _ops
from ..center import _check_batch
from ..reductions import as_array
from ..vjp import defvjp
from ._meta import PresetInfo, preset

__all__ = ["center_loss"]

CLAMP_MIN = 1e-12
CLAMP_MAX = 1e12


def _center_loss_fwd(x, labels, centers, *, check=True):
    fetch = _checks.Fetch(None, check=_checks.check_flag("check", check))
    xp, labels = _check_batch(x, labels, centers, fetch=fetch)
    num_classes = centers.shape[0]
    fetch.label_range("labels", labels, num_classes)
    fetch.done()
    dtype = x.dtype
    cdt = _checks.compute_dtype(xp, dtype)
    xc, cc = xp.astype(x, cdt), xp.astype(centers, cdt)
    batch = x.shape[0]
    # distmat = ‖x‖² expanded + (‖c‖² expanded).t(), then addmm_(beta=1, alpha=-2, x, c.t())
    distmat = (xp.sum(xc * xc, axis=1)[:, None] + xp.sum(cc * cc, axis=1)[None, :]) + (
        -2.0 * (xc @ cc.T)
    )
    classes = xp.arange(num_classes, dtype=labels.dtype, device=_device_of(labels))
    mask = xp.astype(labels[:, None] == classes[None, :], cdt)
    dist = distmat * mask
    clamped = _ops.clip(xp, dist, CLAMP_MIN, CLAMP_MAX)
    # torch's clamp passes the gradient where min <= input <= max (both inclusive)
    inside = (dist >= CLAMP_MIN) & (dist <= CLAMP_MAX)
    if batch == 0:
        value = xp.zeros((), dtype=cdt, device=_device_of(x))
    else:
        value = xp.sum(clamped) / batch
    return as_array(xp, xp.astype(value, dtype)), (xp, dtype, xc, cc, mask, inside, batch)


def _center_loss_bwd(residuals, g):
    xp, dtype, xc, cc, mask, inside, batch = residuals
    # ∂L/∂distmat: (g / B) through the clamp, then through the mask product
    gd = xp.where(inside, (g / max(batch, 1)) * xp.ones_like(mask), xp.zeros_like(mask)) * mask
    # distmat = sx_i + sc_j - 2 x_i·c_j: pow backward (2x) plus the addmm backward (-2 G c)
    gx = xp.sum(gd, axis=1)[:, None] * (2.0 * xc) + (-2.0 * (gd @ cc))
    gc = xp.sum(gd, axis=0)[:, None] * (2.0 * cc) + (-2.0 * (gd.T @ xc))
    return xp.astype(gx, dtype), None, xp.astype(gc, dtype)


@preset(
    PresetInfo(
        implementation="KaiyangZhou/pytorch-center-loss CenterLoss",
        distance="expanded ‖x‖² + ‖c‖² − 2x·c, full B×C matrix",
        squared="yes",
        margin="n/a",
        reduction="sum / B (no ½)",
        labels="integer class index in [0, C); one-hot mask",
        edge_cases=(
            "masked matrix clamped to [1e-12, 1e12]: value + (C − 1)·1e-12; "
            "gradient 0 outside the clamp (d < 1e-12, incl. x = c_y); empty batch 0"
        ),
        epsilon="clamp(min=1e-12, max=1e12) after masking",
        source="KaiyangZhou/pytorch-center-loss @ 082ffa2 : center_loss.py (CenterLoss.forward)",
    )
)
@defvjp(_center_loss_fwd, _center_loss_bwd)
def center_loss(x: Any, labels: Any, centers: Any, *, check: bool = True) -> Any:
    r"""KaiyangZhou's ``CenterLoss()(x, labels)`` with its ``centers`` parameter explicit.

    .. math::

        L = \frac1B\sum_{i=1}^{B}\sum_{j=1}^{C}
            \mathrm{clamp}\big(\mathbb 1[y_i = j]\,\mathrm{dist}_{ij},\ 10^{-12},\ 10^{12}\big),
        \qquad \mathrm{dist}_{ij} = \lVert x_i\rVert^2 + \lVert c_j\rVert^2 - 2\,x_i\cdot c_j,

    so :math:`L = \frac1B\sum_i \mathrm{clamp}(\lVert x_i - c_{y_i}\rVert^2) + (C-1)\cdot10^{-12}`.

    Gradients are those of torch autograd through the original graph: with
    :math:`G_{ij} = \frac gB\,\mathbb 1[y_i = j]\,\mathbb 1[10^{-12} \le \mathrm{dist}_{ij}
    \le 10^{12}]`,
    :math:`\partial L/\partial x_i = 2 x_i\sum_j G_{ij} - 2\,(G c)_i` and
    :math:`\partial L/\partial c_j = 2 c_j\sum_i G_{ij} - 2\,(G^\top x)_j`,
    i.e. :math:`\frac{2g}{B}(x_i - c_{y_i})` and
    :math:`-\frac{2g}{B}\sum_{y_i = j}(x_i - c_j)` where the clamp is inactive.

    Differences from the reference:
        * The value is ``2 * refloss.center_loss(x, labels, centers,
          reduction="mean") + (C - 1) * 1e-12``: no ½, and the clamped zeros of
          the B·(C − 1) masked-out entries add (C − 1)·1e-12 (upstream commit
          97aa04e, mask-then-clamp).
        * The squared distance comes from the expanded formula, which cancels:
          for nearly equal x_i and c_{y_i} it is off by about
          eps·(‖x_i‖² + ‖c_{y_i}‖²) and can be negative; the reference subtracts
          first and is exact.
        * A sample whose squared distance is below 1e-12 (e.g. x_i = c_{y_i}) or
          above 1e12 contributes the clamp bound to the value and no gradient;
          the reference's gradient there is the (tiny or huge) true one.
        * The centers are an argument (``nn.Parameter(torch.randn(C, D))`` in
          the module); an empty batch gives 0 where torch computes 0/0 = NaN.

    Args:
        x: ``[B, D]`` floating features.
        labels: ``[B]`` integer labels in ``[0, C)``.
        centers: ``[C, D]`` centers, dtype of ``x``.
        check: check the values (finite inputs, labels in range) in one read
            (default True); ``check=False`` reads nothing (docs/errors.md,
            "Checks and syncs").

    Returns:
        A 0-d array in the namespace, device and dtype of ``x``.

    Source:
        KaiyangZhou/pytorch-center-loss @ 082ffa2, ``center_loss.py``
        (``CenterLoss.forward``).
    """
    return _center_loss_fwd(x, labels, centers, check=check)[0]
