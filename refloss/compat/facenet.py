r"""davidsandberg/facenet: ``src/facenet.py::center_loss``.

The TensorFlow center loss of the facenet repository (and of the many
projects that copied it). In TensorFlow the centers are a non-trainable
variable; here they are an argument, and the function returns
``(loss, new_centers)`` — the loss and the value of the ``scatter_sub`` op
the original returns. The update is the "exponential moving average"
snippet: ``c[y_i] -= (1 − alfa)·(c[y_i] − x_i)`` for every sample, with
duplicate labels accumulating and no ``1/(1 + n)``.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import device as _device

from .. import _checks
from ..center import _check_centers, class_sums
from ..reductions import as_array
from ..vjp import defvjp
from ._meta import PresetInfo, preset

__all__ = ["center_loss"]


def _check(features, label, centers, alfa, check):
    fetch = _checks.Fetch(None, check=_checks.check_flag("check", check))
    xp = _checks.namespace(features=features, label=label, centers=centers)
    _checks.check_float(xp, "features", features)
    _checks.check_rank("features", features, 2, "a 2-D array (batch, nrof_features)")
    label = _checks.check_labels(xp, "label", label, features.shape[0], "features")
    fetch.xp = xp
    fetch.finite("features", features)
    try:
        _check_centers(xp, centers, features, fetch)
        alfa = _checks.check_alpha(alfa)
    except (TypeError, ValueError) as exc:
        msg = str(exc)
        if msg.startswith("alpha:"):
            msg = "alfa:" + msg[len("alpha:"):]
        raise type(exc)(msg.replace("(the dim of x)", "(the dim of features)")
                        .replace("the dtype of x", "the dtype of features")) from None
    fetch.label_range("label", label, centers.shape[0])
    fetch.done()
    return xp, alfa, label


def _center_loss_fwd(features, label, centers, alfa, *, check=True):
    xp, alfa, label = _check(features, label, centers, alfa, check)
    dtype = features.dtype
    cdt = _checks.compute_dtype(xp, dtype)
    fc, cc = xp.astype(features, cdt), xp.astype(centers, cdt)
    centers_batch = xp.take(cc, label, axis=0)  # gathered before the update
    diff = (1.0 - alfa) * (centers_batch - fc)
    new_centers = cc - class_sums(xp, diff, label, centers.shape[0])  # scatter_sub
    err = fc - centers_batch
    size = features.shape[0] * features.shape[1]
    if size == 0:
        loss = xp.zeros((), dtype=cdt, device=_device(features))
    else:
        loss = xp.sum(err * err) / size  # reduce_mean(square(...)) over B·D
    value = (as_array(xp, xp.astype(loss, dtype)), xp.astype(new_centers, dtype))
    return value, (xp, dtype, err, label, centers.shape[0], size)


def _center_loss_bwd(residuals, g):
    xp, dtype, err, label, num_classes, size = residuals
    gx = (2.0 * g / max(size, 1)) * err
    gc = -class_sums(xp, gx, label, num_classes)
    return xp.astype(gx, dtype), None, xp.astype(gc, dtype), None


@preset(
    PresetInfo(
        implementation="davidsandberg/facenet center_loss (TensorFlow)",
        distance="(x − c_y)² elementwise",
        squared="yes",
        margin="n/a",
        reduction="mean over B·D elements (no ½)",
        labels="integer class index in [0, C)",
        edge_cases=(
            "returns (loss, new_centers); loss uses the centers before the update; "
            "update c − (1 − alfa)·Σ(c − x) by scatter_sub: duplicates accumulate, no 1/(1 + n), "
            "overshoots the batch mean when (1 − alfa)·n > 1; empty batch 0"
        ),
        epsilon="none",
        source="davidsandberg/facenet @ 096ed77 : src/facenet.py (center_loss)",
    )
)
@defvjp(_center_loss_fwd, _center_loss_bwd)
def center_loss(
    features: Any, label: Any, centers: Any, alfa: float, *, check: bool = True
) -> tuple[Any, Any]:
    r"""facenet's ``center_loss(features, label, alfa, nrof_classes)`` with explicit centers.

    Returns ``(loss, new_centers)``:

    .. math::

        \mathrm{loss} = \frac{1}{B\,D}\sum_{i=1}^{B}\sum_{k=1}^{D}(x_{ik} - c_{y_i k})^2,
        \qquad
        c'_j = c_j - (1 - \mathrm{alfa})\sum_{i: y_i = j}(c_j - x_i),

    the loss computed with the centers gathered *before* the update
    (``centers_batch``), the update the ``tf.scatter_sub`` of
    :math:`(1-\mathrm{alfa})(c_{y_i} - x_i)` for every sample (duplicate labels
    accumulate). ``nrof_classes`` is ``centers.shape[0]``; facenet's
    ``train_softmax.py`` defaults to ``center_loss_alfa=0.95``.

    The VJP (:func:`refloss.vjp`) differentiates the loss, the first output:
    :math:`\partial/\partial x_i = \frac{2g}{BD}(x_i - c_{y_i})` and the true
    derivative for the centers, :math:`-\frac{2g}{BD}\sum_{y_i=j}(x_i - c_j)`
    (in TensorFlow the centers are not trainable, so it is never used there).

    Differences from the reference:
        * Loss: mean over the B·D elements, no ½ — equal to
          ``2 * refloss.center_loss(x, labels, centers, reduction="sum") / (B * D)``
          (older facenet versions used ``tf.nn.l2_loss``, the reference "sum").
        * Update: no 1/(1 + n_j) (Eq. 4 has it) and not an average: with
          n_j = 1 it is ``refloss.update_centers(rule="ema", alpha=1 - alfa)``,
          but a class seen n_j times moves by (1 − alfa)·n_j times its mean
          offset, which overshoots the batch mean when (1 − alfa)·n_j > 1.
          Classes absent from the batch do not move.
        * The returned new centers are summed per class before the subtraction
          (TensorFlow subtracts each sample's row in turn): equal up to rounding.
        * ``alfa`` must lie in [0, 1] (facenet accepts any number); an empty
          batch gives loss 0 (``tf.reduce_mean`` of nothing is NaN).

    Args:
        features: ``[B, D]`` floating embeddings.
        label: ``[B]`` integer labels in ``[0, C)``.
        centers: ``[C, D]`` current centers (facenet's ``centers`` variable).
        alfa: the update's decay in [0, 1]; each sample moves its center by
            ``1 - alfa`` of the offset.
        check: check the values (finite inputs, labels in range) in one read
            (default True); ``check=False`` reads nothing (docs/errors.md,
            "Checks and syncs").

    Returns:
        ``(loss, new_centers)``: a 0-d array and a ``[C, D]`` array in the
        namespace, device and dtype of ``features``.

    Source:
        davidsandberg/facenet @ 096ed77, ``src/facenet.py`` (``center_loss``);
        the same update as the "exponential moving window" answer in
        "How to Implement Center Loss and Other Running Averages of Labeled
        Embeddings" (Stack Overflow, 2016, ``get_embed_centers``, decay = alfa).
    """
    return _center_loss_fwd(features, label, centers, alfa, check=check)[0]
