r"""TensorFlow Addons (``tfa.losses``, v0.11 and later): triplet losses,
contrastive loss and the pairwise distance they share.

* :func:`pairwise_distance` — ``metric_learning.pairwise_distance``: the GEMM
  expansion :math:`\lVert f_i\rVert^2 + \lVert f_j\rVert^2 - 2 f_i\cdot f_j`,
  clipped at 0, a square root taken with ``1e-16`` added where the clipped
  value is 0 (then multiplied away), and the diagonal forced to 0.
* :func:`triplet_semihard_loss` — FaceNet's semi-hard mining as TFA writes
  it: one term per ordered positive pair, the semi-hard negative found with
  the ``_masked_minimum`` / ``_masked_maximum`` offset trick, the sum divided
  by the number of positive pairs (NaN when there is none).
* :func:`triplet_hard_loss` — batch-hard with the same masked extremes, the
  mean over **all** anchors (a singleton's hardest positive is its row
  minimum, 0), hinge or the naive ``log1p(exp(·))`` soft margin.
* :func:`contrastive_loss` — the per-pair vector
  :math:`y\,d^2 + (1 - y)[m - d]_+^2` on distances the caller computed,
  ``y = 1`` similar.

TFA builds the semi-hard loss on a tiled ``(B², B)`` matrix (O(B³) memory);
here every quantity is O(B²): each anchor's negatives are sorted once and
each positive finds its semi-hard negative by a row-wise search
(:func:`refloss.mining.row_searchsorted`), as in the core's
:func:`refloss.semihard_triplet_loss`.

Gradients are the ones TensorFlow's autodiff computes through these graphs,
written out by hand: ``tf.maximum(x, 0)`` passes the gradient where
``x >= 0`` (a hinge exactly at 0 still pulls), ``reduce_max`` /
``reduce_min`` split it evenly among tied entries, and the row offsets of
the masked extremes route it to the row's maximum / minimum when the
offset trick makes every entry tie (see :func:`triplet_semihard_loss`).
The helpers are shared with :mod:`refloss.compat.tf_contrib` (whose
``pairwise_distance`` and semi-hard loss are the same code) and
:mod:`refloss.compat.omoindrot`.
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import device as _device

from .. import _checks, _ops
from ..mining import check_bool, label_masks, row_searchsorted
from ..reductions import as_array
from ..vjp import defvjp
from ._meta import PresetInfo, preset

__all__ = ["contrastive_loss", "pairwise_distance", "triplet_hard_loss", "triplet_semihard_loss"]

DISTANCE_METRICS = ("L2", "squared-L2", "angular")
# metric_learning.pairwise_distance: added under the sqrt where D² <= 0, then
# multiplied away; its only effect is a 0 (not NaN) gradient there
SQRT_EPSILON = 1e-16
# tf.math.l2_normalize: x * rsqrt(max(sum(x²), epsilon)), default epsilon
L2_NORMALIZE_EPSILON = 1e-12
SOURCE = "tensorflow/addons @ d208d75 (archived 2024, last release 0.23)"


# --------------------------------------------------------------------------
# validation


def check_embeddings(xp: Any, name: str, x: Any) -> None:
    _checks.check_float(xp, name, x)
    _checks.check_rank(name, x, 2, "a 2-D array (batch, dim)")


def label_vector(xp: Any, name: str, labels: Any, rows: int, rows_of: str, *,
                 column_ok: bool) -> Any:
    """Integer labels as a 1-D array in the default index dtype; ``[B, 1]`` is
    accepted when ``column_ok`` (TFA reshapes ``y_true`` to ``[B, 1]`` itself)."""
    if not xp.isdtype(labels.dtype, "integral"):
        raise TypeError(f"{name}: expected an integer dtype, got {labels.dtype}")
    shape = tuple(labels.shape)
    if column_ok and len(shape) == 2 and shape[1] == 1:
        labels = xp.reshape(labels, (shape[0],))
    elif len(shape) != 1:
        expected = "shape (B,) or (B, 1)" if column_ok else "a 1-D array"
        raise ValueError(f"{name}: expected {expected}, got shape {shape}")
    if labels.shape[0] != rows:
        raise ValueError(
            f"{name}: expected {rows} entries (one per row of {rows_of}), got {labels.shape[0]}"
        )
    return _checks.as_index(xp, name, labels)


def pair_labels(xp: Any, name: str, labels: Any, shape: tuple, why: str,
                fetch: Any = None) -> None:
    """Pair labels (TensorFlow casts them to float): integer, bool or floating,
    one per pair; floating ones finite (queued in ``fetch`` when given)."""
    ok = (labels.dtype == xp.bool or xp.isdtype(labels.dtype, "integral")
          or xp.isdtype(labels.dtype, "real floating"))
    if not ok:
        raise TypeError(
            f"{name}: expected an integer, boolean or floating dtype, got {labels.dtype}"
        )
    if tuple(labels.shape) != tuple(shape):
        raise ValueError(
            f"{name}: expected shape {tuple(shape)} ({why}), "
            f"got {tuple(labels.shape)}"
        )
    if xp.isdtype(labels.dtype, "real floating"):
        if fetch is None:
            _checks.check_finite(xp, name, labels)
        else:
            fetch.finite(name, labels)


def is_float(xp: Any, a: Any) -> bool:
    return xp.isdtype(a.dtype, "real floating")


# --------------------------------------------------------------------------
# distances (compute dtype), TensorFlow's gradients


def gram_backward(xp: Any, x: Any, k: Any) -> Any:
    r"""∂/∂X of :math:`\sum_{ij} K_{ij}\,(s_i + s_j - 2 x_i\cdot x_j)`,
    :math:`s_i = \lVert x_i\rVert^2`:
    :math:`2\,\mathrm{diag}(K\mathbf 1 + K^\top\mathbf 1)X - 2(K + K^\top)X` — what
    autodiff gives through the GEMM expansion (norms and matmul), two GEMMs."""
    return 2.0 * (xp.sum(k, axis=1) + xp.sum(k, axis=0))[:, None] * x - 2.0 * ((k + k.T) @ x)


def _gemm_forward(xp, x, squared):
    b = x.shape[0]
    sq = xp.sum(x * x, axis=1)
    raw = (sq[:, None] + sq[None, :]) - 2.0 * (x @ x.T)
    d2 = xp.where(raw > 0, raw, 0.0)  # tf.math.maximum(., 0.0)
    error = d2 <= 0
    d = d2 if squared else xp.sqrt(xp.where(error, SQRT_EPSILON, d2))
    r = xp.arange(b, device=_device(x))
    keep = ~error & (r[:, None] != r[None, :])  # (1 - error_mask) and mask_offdiagonals
    return xp.where(keep, d, 0.0), ("gemm", x, d, keep, squared)


def _gemm_backward(xp, res, g):
    _, x, d, keep, squared = res
    if squared:
        k = xp.where(keep, g, 0.0)
    else:  # sqrt's 0.5 / y; the zeroed entries pass nothing
        k = xp.where(keep, 0.5 * g / xp.where(keep, d, 1.0), 0.0)
    return gram_backward(xp, x, k)


def l2_normalize_forward(xp: Any, x: Any):
    """``tf.math.l2_normalize(x, axis=1)``: ``x * rsqrt(max(‖x‖², 1e-12))``."""
    ss = xp.sum(x * x, axis=1)
    live = ss >= L2_NORMALIZE_EPSILON  # tf.maximum passes to its first argument on ties
    inv = 1.0 / xp.sqrt(xp.where(live, ss, L2_NORMALIZE_EPSILON))
    return x * inv[:, None], (x, inv, live)


def l2_normalize_backward(xp: Any, res: Any, g: Any) -> Any:
    x, inv, live = res
    radial = xp.where(live, xp.sum(g * x, axis=1) * inv * inv * inv, 0.0)
    return g * inv[:, None] - radial[:, None] * x


def _angular_forward(xp, x):
    xhat, nres = l2_normalize_forward(xp, x)
    raw = 1.0 - xhat @ xhat.T
    return xp.where(raw > 0, raw, 0.0), ("angular", xhat, raw >= 0, nres)


def _angular_backward(xp, res, g):
    _, xhat, passes, nres = res
    k = xp.where(passes, g, 0.0)
    return l2_normalize_backward(xp, nres, -((k + k.T) @ xhat))


def distance_forward(xp: Any, x: Any, metric: str):
    """``(D, residuals)`` for ``distance_metric`` "L2", "squared-L2" or "angular"."""
    if metric == "angular":
        return _angular_forward(xp, x)
    return _gemm_forward(xp, x, squared=(metric == "squared-L2"))


def distance_backward(xp: Any, res: Any, g: Any) -> Any:
    if res[0] == "angular":
        return _angular_backward(xp, res, g)
    return _gemm_backward(xp, res, g)


# --------------------------------------------------------------------------
# _masked_maximum / _masked_minimum and their TensorFlow gradient


def masked_extreme_forward(xp: Any, d: Any, mask: Any, *, largest: bool):
    r"""TFA's ``_masked_maximum`` (``largest``) / ``_masked_minimum`` per row.

    :math:`\max_j((D_{aj} - \min_k D_{ak})\,M_{aj}) + \min_k D_{ak}` (and the
    mirror image): exact when the mask is non-empty, the row minimum
    (maximum) when it is empty.
    """
    maskf = xp.astype(mask, d.dtype)
    if largest:
        offset = xp.min(d, axis=1)
        v = (d - offset[:, None]) * maskf
        extreme = xp.max(v, axis=1)
    else:
        offset = xp.max(d, axis=1)
        v = (d - offset[:, None]) * maskf
        extreme = xp.min(v, axis=1)
    return extreme + offset, (d, maskf, v, extreme, offset)


def masked_extreme_backward(xp: Any, res: Any, u: Any) -> Any:
    """∂/∂D from the upstream gradient ``u`` of each row's value, by TF's rules:
    ``reduce_max/min`` split among ties, the offset's share goes to the row's
    own extreme entries (split likewise)."""
    d, maskf, v, extreme, offset = res
    hit = xp.astype(v == extreme[:, None], d.dtype)
    gd = (u[:, None] * (hit / xp.sum(hit, axis=1)[:, None])) * maskf
    rest = u - xp.sum(gd, axis=1)
    at = xp.astype(d == offset[:, None], d.dtype)
    return gd + (rest / xp.sum(at, axis=1))[:, None] * at


# --------------------------------------------------------------------------
# semi-hard (shared with tf_contrib)


def semihard_forward(xp: Any, d: Any, labels: Any, margin: float):
    """TFA's semi-hard loss matrix in O(B² log B): ``(terms, residuals)``.

    ``terms[a, p] = max(loss_mat[a, p], 0)`` on ordered positive pairs, 0
    elsewhere, with TFA's arithmetic: the semi-hard negative is
    ``(d* - rowmax) + rowmax`` (``_masked_minimum``), the fallback
    ``(largest negative - rowmin) + rowmin`` (``_masked_maximum``, the row
    minimum itself when the anchor has no negative), and
    ``loss_mat = margin + (D - negative)``.
    """
    b = d.shape[0]
    pos, neg, cols = label_masks(xp, labels, d)
    n_neg = xp.astype(xp.count_nonzero(neg, axis=1), cols.dtype)
    big = xp.max(d, axis=1)
    small = xp.min(d, axis=1)
    neg_d = xp.where(neg, d, math.inf)
    order = xp.argsort(neg_d, axis=1, stable=True)
    s = xp.take_along_axis(neg_d, order, axis=1)
    # the first negative strictly farther than d_ap sits at #{negatives <= d_ap}
    slot = row_searchsorted(xp, s, d, side="right")
    outside = slot < n_neg[:, None]
    s_last = xp.take_along_axis(s, _ops.clip(xp, n_neg - 1, 0, b - 1)[:, None], axis=1)[:, 0]
    d_star = xp.take_along_axis(s, _ops.clip(xp, slot, 0, b - 1), axis=1)
    outside_value = (d_star - big[:, None]) + big[:, None]
    inside_value = xp.where(n_neg > 0, (s_last - small) + small, small)
    negative = xp.where(outside, outside_value, inside_value[:, None])
    loss_mat = margin + (d - negative)
    terms = xp.where(pos & (loss_mat > 0), loss_mat, 0.0)
    # tf.maximum(loss_mat * mask, 0) passes the gradient where the product is >= 0
    active = pos & (loss_mat >= 0)
    state = (d, pos, cols, n_neg, big, small, order, s, outside, s_last, active)
    return terms, state


def semihard_backward(xp: Any, state: Any, w: Any) -> Any:
    r"""∂L/∂D given ``w``, the upstream weight of each term (B×B, 0 off the active pairs).

    ``+w[a, p]`` lands on :math:`D_{ap}`; ``-w[a, p]`` on the entries that TF's
    autodiff reaches through the chosen negative of (a, p):

    * semi-hard negative d* below the row maximum R: split evenly among the
      negatives farther than :math:`d_{ap}` whose ``fl(D - R)`` ties with
      ``fl(d* - R)``;
    * d* = R: every entry of the tiled row ties at 0 in ``_masked_minimum``,
      so each of the k negatives at R gets 1/B and the remaining
      :math:`1 - k/B` goes through the offset to the entries equal to R;
    * fallback (no farther negative): split among the negatives tied at the
      largest ``fl(D - rowmin)``; when that is 0 (or there is no negative)
      each negative gets 1/B and the rest goes to the entries equal to the
      row minimum.

    The weights landing on each sorted negative are differences of prefix
    sums over the anchor's positives sorted by distance (no scatter); ties
    spread them along runs of the sorted order; the inverse permutation maps
    them back to columns. O(B² log B).
    """
    d, pos, cols, n_neg, big, small, order, s, outside, s_last, _ = state
    b = d.shape[0]
    dt = d.dtype
    in_range = cols[None, :] < n_neg[:, None]
    w_out = xp.where(outside, w, 0.0)
    w_in = xp.sum(xp.where(outside, 0.0, w), axis=1)

    # h[a, j]: the weight of the positives whose semi-hard negative sits at sorted
    # slot j, i.e. s_{j-1} <= d_ap < s_j
    pos_d = xp.where(pos, d, math.inf)
    order_p = xp.argsort(pos_d, axis=1, stable=True)
    sorted_p = xp.take_along_axis(pos_d, order_p, axis=1)
    cw = xp.cumulative_sum(
        xp.take_along_axis(w_out, order_p, axis=1), axis=1, include_initial=True
    )
    cl = xp.take_along_axis(cw, row_searchsorted(xp, sorted_p, s, side="left"), axis=1)
    zero = xp.zeros((b, 1), dtype=dt, device=_device(d))
    h = xp.where(in_range, cl - xp.concat([zero, cl[:, :-1]], axis=1), 0.0)

    # ties of _masked_minimum live in fl(s - R); slot j spreads over [j, end_j)
    top = in_range & (s == big[:, None])
    shifted = s - big[:, None]
    end = row_searchsorted(xp, shifted, shifted, side="right")
    start = row_searchsorted(xp, shifted, shifted, side="left")
    span = xp.astype(end - cols[None, :], dt)
    q = xp.where(in_range & ~top, h / span, 0.0)
    qc = xp.cumulative_sum(q, axis=1, include_initial=True)
    recv = qc[:, 1:] - xp.take_along_axis(qc, start, axis=1)
    h_top = xp.sum(xp.where(top, h, 0.0), axis=1)
    k_top = xp.astype(xp.count_nonzero(top, axis=1), dt)
    recv = recv + xp.where(top, (h_top / b)[:, None], 0.0)
    to_big = h_top * (1.0 - k_top / b)

    # fallback: _masked_maximum, ties in fl(s - rowmin)
    has_neg = n_neg > 0
    largest = xp.where(has_neg, s_last - small, 0.0)
    flat = ~has_neg | (largest == 0)
    first = row_searchsorted(xp, s - small[:, None], largest[:, None], side="left")[:, 0]
    run = xp.astype(xp.where(flat, 1, n_neg - first), dt)
    in_last = in_range & (cols[None, :] >= first[:, None]) & ~flat[:, None]
    recv = recv + xp.where(in_last, (w_in / run)[:, None], 0.0)
    recv = recv + xp.where(in_range & flat[:, None], (w_in / b)[:, None], 0.0)
    to_small = xp.where(flat, w_in * (1.0 - xp.astype(n_neg, dt) / b), 0.0)

    rank = xp.argsort(order, axis=1, stable=True)  # inverse permutation
    neg_share = xp.take_along_axis(xp.where(in_range, recv, 0.0), rank, axis=1)
    at_big = xp.astype(d == big[:, None], dt)
    at_small = xp.astype(d == small[:, None], dt)
    offsets = (to_big / xp.sum(at_big, axis=1))[:, None] * at_big + (
        to_small / xp.sum(at_small, axis=1)
    )[:, None] * at_small
    return w - neg_share - offsets


def semihard_loss_fwd(xp: Any, x: Any, labels: Any, margin: float, metric: str,
                      reproduce_nan: bool):
    """Value and residuals of TFA / tf.contrib semi-hard on validated input."""
    dtype = x.dtype
    xc = xp.astype(x, _checks.compute_dtype(xp, dtype))
    b = x.shape[0]
    if b == 0:
        return xp.zeros((), dtype=dtype, device=_device(x)), (xp, dtype, None)
    d, dres = distance_forward(xp, xc, metric)
    terms, state = semihard_forward(xp, d, labels, margin)
    pos = state[1]
    n_pos = xp.astype(xp.count_nonzero(pos), d.dtype)
    none = n_pos == 0
    value = xp.sum(terms) / xp.where(none, 1.0, n_pos)
    value = xp.where(none, math.nan if reproduce_nan else 0.0, value)
    return as_array(xp, xp.astype(value, dtype)), (xp, dtype, (dres, state, n_pos, reproduce_nan))


def semihard_loss_bwd(residuals: Any, g: Any) -> Any:
    xp, dtype, res = residuals
    if res is None:  # empty batch
        return None
    dres, state, n_pos, reproduce_nan = res
    active = state[-1]
    none = n_pos == 0
    w = xp.where(active, g / xp.where(none, 1.0, n_pos), 0.0)
    gx = distance_backward(xp, dres, semihard_backward(xp, state, w))
    # 0/0: TF's 1/num_positives is inf, inf * (mask 0) is NaN everywhere
    gx = xp.where(none, math.nan if reproduce_nan else 0.0, gx)
    return xp.astype(gx, dtype)


def empty_grad(xp: Any, x: Any) -> Any:
    return xp.zeros(x.shape, dtype=x.dtype, device=_device(x))


# --------------------------------------------------------------------------
# pairwise_distance


def _pairwise_fwd(feature, squared=False, *, check=True):
    xp = _checks.namespace(feature=feature)
    check_embeddings(xp, "feature", feature)
    check_bool("squared", squared)
    fetch = _checks.Fetch(xp, check=_checks.check_flag("check", check))
    fetch.finite("feature", feature)
    fetch.done()
    dtype = feature.dtype
    xc = xp.astype(feature, _checks.compute_dtype(xp, dtype))
    d, res = _gemm_forward(xp, xc, squared)
    return xp.astype(d, dtype), (xp, dtype, res)


def _pairwise_bwd(residuals, g):
    xp, dtype, res = residuals
    return xp.astype(_gemm_backward(xp, res, g), dtype), None


@preset(
    PresetInfo(
        implementation="TensorFlow Addons metric_learning.pairwise_distance",
        distance="GEMM ‖f_i‖² + ‖f_j‖² − 2 f_i·f_j, clipped at 0",
        squared="no (squared=True: yes)",
        margin="n/a",
        reduction="none (B × B matrix)",
        labels="n/a",
        edge_cases=(
            "diagonal forced to 0; D² <= 0 (duplicates, cancellation) → 0 with gradient 0; "
            "near-duplicates keep the GEMM's cancellation error"
        ),
        epsilon="sqrt(D² + 1e-16·[D² <= 0])·[D² > 0]",
        source=f"{SOURCE} : tensorflow_addons/losses/metric_learning.py (pairwise_distance)",
    )
)
@defvjp(_pairwise_fwd, _pairwise_bwd)
def pairwise_distance(feature: Any, squared: bool = False, *, check: bool = True) -> Any:
    r"""TFA's ``metric_learning.pairwise_distance(feature, squared=False)``.

    .. math::

        D^2_{ij} = \max\bigl((\lVert f_i\rVert^2 + \lVert f_j\rVert^2) - 2 f_i\cdot f_j,\ 0\bigr),
        \qquad
        D_{ij} = \sqrt{D^2_{ij} + 10^{-16}[D^2_{ij} \le 0]}\;[D^2_{ij} > 0]\,[i \ne j]

    (``squared=True`` returns :math:`D^2` with the same zeroing).

    Gradient (what TF's autodiff gives): with :math:`K = G/(2D)` (``G`` the
    upstream gradient; :math:`K = G` when squared) on the entries with
    :math:`D^2 > 0` off the diagonal and 0 elsewhere,
    :math:`\partial L/\partial F
    = 2\,\mathrm{diag}(K\mathbf 1 + K^\top\mathbf 1)F - 2(K + K^\top)F`.

    Differences from the reference (:func:`refloss.pairwise_distances`):
        * The GEMM expansion is used as it is: near-duplicate rows lose their
          small distance to cancellation (a 1e-5 gap next to norms of 1e4 can
          come out 0 or be off by orders of magnitude), and an entry whose
          expansion is <= 0 gets distance 0 and gradient 0. The reference
          recomputes such entries exactly.
        * TFA casts its masks to float32, so the original rejects float64;
          the preset computes in the input's dtype (float16/bfloat16 in
          float32).

    Args:
        feature: ``[B, D]`` floating array.
        squared: return squared distances.
        check: check the values (finite inputs) in one read (default
            True); ``check=False`` reads nothing (docs/errors.md, "Checks and syncs").

    Returns:
        ``[B, B]`` array in the namespace, device and dtype of ``feature``.

    Source:
        tensorflow/addons @ d208d75, ``tensorflow_addons/losses/metric_learning.py``
        (``pairwise_distance``); tf.contrib's ``metric_loss_ops.pairwise_distance``
        is the same code.
    """
    return _pairwise_fwd(feature, squared, check=check)[0]


# --------------------------------------------------------------------------
# triplet_semihard_loss


def check_triplet_input(y_true, y_pred, margin, distance_metric, *, names=("y_true", "y_pred"),
                        column_ok=True, check=True):
    """Validate (labels, embeddings, margin, metric); returns (xp, labels, margin).
    The value check (finite embeddings) is one read, none with ``check=False``."""
    ln, en = names
    xp = _checks.namespace(**{ln: y_true, en: y_pred})
    check_embeddings(xp, en, y_pred)
    labels = label_vector(xp, ln, y_true, y_pred.shape[0], en, column_ok=column_ok)
    margin = _checks.check_margin("margin", margin)
    _checks.check_choice("distance_metric", distance_metric, DISTANCE_METRICS)
    fetch = _checks.Fetch(xp, check=_checks.check_flag("check", check))
    fetch.finite(en, y_pred)
    fetch.done()
    return xp, labels, margin


def _semihard_fwd(y_true, y_pred, margin=1.0, distance_metric="L2", *, reproduce_nan=True,
                  check=True):
    xp, labels, margin = check_triplet_input(y_true, y_pred, margin, distance_metric,
                                             check=check)
    check_bool("reproduce_nan", reproduce_nan)
    value, res = semihard_loss_fwd(xp, y_pred, labels, margin, distance_metric, reproduce_nan)
    return value, (res, y_pred)


def _semihard_bwd(residuals, g):
    res, y_pred = residuals
    gx = semihard_loss_bwd(res, g)
    if gx is None:
        gx = empty_grad(res[0], y_pred)
    return None, gx, None, None


@preset(
    PresetInfo(
        implementation="TensorFlow Addons triplet_semihard_loss",
        distance="distance_metric: 'L2' (GEMM, default), 'squared-L2', 'angular' (1 − cos)",
        squared="no ('squared-L2': yes; ≤ v0.10 'L2' meant squared)",
        margin="1.0",
        reduction="Σ terms / #ordered positive pairs (zero terms counted)",
        labels="y_true integer, shape [B] or [B, 1]",
        edge_cases=(
            "no positive pair → NaN value and NaN gradient; anchor without negatives → "
            "m + d_ap; no farther negative → the farthest; hinge exactly 0 passes gradient; "
            "ties split the gradient; empty batch 0"
        ),
        epsilon="pairwise_distance's sqrt(D² + 1e-16·[D² <= 0]); masked min/max offset by "
                "the row max/min",
        source=f"{SOURCE} : tensorflow_addons/losses/triplet.py (triplet_semihard_loss)",
    )
)
@defvjp(_semihard_fwd, _semihard_bwd)
def triplet_semihard_loss(
    y_true: Any,
    y_pred: Any,
    margin: float = 1.0,
    distance_metric: str = "L2",
    *,
    reproduce_nan: bool = True,
    check: bool = True,
) -> Any:
    r"""TFA's ``triplet_semihard_loss(y_true, y_pred, margin=1.0, distance_metric="L2")``.

    For every ordered positive pair (a, p), :math:`p \ne a`, :math:`y_p = y_a`:

    .. math::

        l_{ap} = \bigl[m + (D_{ap} - D_{an^*})\bigr]_+,\qquad
        L = \frac{\sum_{ap} l_{ap}}{\#\{\text{ordered positive pairs}\}},

    where :math:`D_{an^*}` is the smallest negative distance strictly greater
    than :math:`D_{ap}`, computed as ``(d* - rowmax) + rowmax``; if there is
    none, the largest negative distance, ``(d - rowmin) + rowmin``; if the
    anchor has no negative at all, the row minimum (0: the term is
    :math:`m + D_{ap}`). Zero terms are counted in the mean. There is no upper
    bound :math:`D_{ap} + m` on the negatives (TFA's docstring says otherwise).
    ``distance_metric`` picks :func:`pairwise_distance` ("L2"), its square
    ("squared-L2"), or ``max(1 − f̂_i·f̂_j, 0)`` with ``tf.math.l2_normalize``
    ("angular").

    Computed in O(B² log B) time and O(B²) memory (TFA tiles a ``(B², B)``
    matrix): each anchor's negatives are sorted once and every positive finds
    its semi-hard negative by a row-wise search.

    Gradient (through :func:`refloss.vjp`): TF's own, written out — with
    :math:`w = g/\#\text{pairs}` on the pairs whose :math:`m + D_{ap} - D_{an^*} \ge 0`
    (``tf.maximum`` passes at 0), :math:`+w` to :math:`D_{ap}` and :math:`-w` to
    the chosen negative, split evenly among tied negatives and, where the
    masked-extreme offset makes every entry tie, partly routed to the row's
    maximum / minimum entries exactly as ``reduce_max`` / ``reduce_min``
    do (see :func:`refloss.compat.tfa.semihard_backward`); then the
    distance's gradient.

    Differences from the reference (:func:`refloss.semihard_triplet_loss`):
        * No positive pair in a non-empty batch: **NaN** value and NaN
          gradient everywhere (TFA divides 0 by 0; addons #1676, #2447), by
          default. ``reproduce_nan=False`` gives 0 and a zero gradient, as the
          reference does. An empty batch gives 0 either way.
        * An anchor without negatives (a single class) gives the term
          :math:`[m + D_{ap}]_+` (the reference gives no term); docstring
          example: ``y=[0, 0]``, ``x=[[0, 1], [1, 0]]`` → :math:`1 + \sqrt2`.
        * The mean counts every ordered positive pair, zero terms included.
        * A hinge exactly at 0 passes gradient 1 (``tf.maximum``; the
          reference's relu passes 0), and ties split the gradient evenly
          (the reference sends it to the lowest index).
        * Distances are TFA's GEMM expansion (see :func:`pairwise_distance`),
          not the reference's exactly recomputed ones; "angular" normalises
          with ``tf.math.l2_normalize`` (``x / max(‖x‖, 1e-6)``: a zero row
          has gradient ``g·1e6``, where the reference gives 0) and does not
          force the diagonal to 0.
        * ``distance_metric`` takes the three names only (a callable needs its
          own VJP); ``margin`` must be a finite number >= 0; TFA's float32
          masks reject float64, which the preset computes as is.

    Args:
        y_true: ``[B]`` or ``[B, 1]`` integer labels.
        y_pred: ``[B, D]`` floating embeddings.
        margin: the margin (default 1.0).
        distance_metric: ``"L2"`` (default), ``"squared-L2"`` or ``"angular"``.
        reproduce_nan: keep TFA's NaN for a batch without positive pairs.
        check: check the values (finite inputs) in one read (default
            True); ``check=False`` reads nothing (docs/errors.md, "Checks and syncs").

    Returns:
        A 0-d array in the namespace, device and dtype of ``y_pred``.

    Source:
        tensorflow/addons @ d208d75, ``tensorflow_addons/losses/triplet.py``
        (``triplet_semihard_loss``, ``_masked_minimum``, ``_masked_maximum``).
    """
    return _semihard_fwd(
        y_true, y_pred, margin, distance_metric, reproduce_nan=reproduce_nan, check=check
    )[0]


# --------------------------------------------------------------------------
# triplet_hard_loss


def _naive_softplus(xp, z, reproduce_nan):
    """``(log1p(exp(z)), its slope)``: TF's naive form overflows to inf (slope
    NaN: inf·0 in exp's gradient); without ``reproduce_nan`` the stable form."""
    if not reproduce_nan:
        up = xp.where(z > 0, z, 0.0)
        down = xp.where(z > 0, 0.0, z)
        e = xp.exp(-xp.abs(z))
        slope = xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        return up + xp.log1p(xp.exp(down - up)), slope
    over = z > math.log(xp.finfo(z.dtype).max)
    e = xp.exp(xp.where(over, 0.0, z))
    value = xp.where(over, math.inf, xp.log1p(e))
    slope = xp.where(over, math.nan, e * (1.0 / (1.0 + e)))
    return value, slope


def _hard_fwd(y_true, y_pred, margin=1.0, soft=False, distance_metric="L2", *,
              reproduce_nan=True, check=True):
    xp, labels, margin = check_triplet_input(y_true, y_pred, margin, distance_metric,
                                             check=check)
    check_bool("soft", soft)
    check_bool("reproduce_nan", reproduce_nan)
    dtype = y_pred.dtype
    b = y_pred.shape[0]
    if b == 0:
        return xp.zeros((), dtype=dtype, device=_device(y_pred)), (xp, dtype, y_pred, None)
    xc = xp.astype(y_pred, _checks.compute_dtype(xp, dtype))
    d, dres = distance_forward(xp, xc, distance_metric)
    pos, neg, _ = label_masks(xp, labels, d)
    hp, hp_res = masked_extreme_forward(xp, d, pos, largest=True)
    hn, hn_res = masked_extreme_forward(xp, d, neg, largest=False)
    if soft:
        terms, slope = _naive_softplus(xp, hp - hn, reproduce_nan)
    else:
        z = (hp - hn) + margin
        terms = xp.where(z > 0, z, 0.0)
        slope = xp.astype(z >= 0, d.dtype)  # tf.maximum passes at 0
    value = xp.sum(terms) / b
    return as_array(xp, xp.astype(value, dtype)), (xp, dtype, y_pred, (dres, hp_res, hn_res, slope))


def _hard_bwd(residuals, g):
    xp, dtype, y_pred, res = residuals
    if res is None:
        return None, empty_grad(xp, y_pred), None, None, None
    dres, hp_res, hn_res, slope = res
    u = (g / slope.shape[0]) * slope
    gd = masked_extreme_backward(xp, hp_res, u) + masked_extreme_backward(xp, hn_res, -u)
    return None, xp.astype(distance_backward(xp, dres, gd), dtype), None, None, None


@preset(
    PresetInfo(
        implementation="TensorFlow Addons triplet_hard_loss",
        distance="distance_metric: 'L2' (GEMM, default), 'squared-L2', 'angular' (1 − cos)",
        squared="no ('squared-L2': yes)",
        margin="1.0; soft=True ignores it",
        reduction="mean over all B anchors",
        labels="y_true integer, shape [B] or [B, 1]",
        edge_cases=(
            "anchor without positive: hardest positive = row min (0), counted, pushes its "
            "negatives; without negative: hardest negative = row max; soft is naive "
            "log1p(exp(·)) (inf, NaN gradient past ~709); ties split; empty batch 0"
        ),
        epsilon="pairwise_distance's sqrt(D² + 1e-16·[D² <= 0]); masked min/max offset by "
                "the row max/min",
        source=f"{SOURCE} : tensorflow_addons/losses/triplet.py (triplet_hard_loss)",
    )
)
@defvjp(_hard_fwd, _hard_bwd)
def triplet_hard_loss(
    y_true: Any,
    y_pred: Any,
    margin: float = 1.0,
    soft: bool = False,
    distance_metric: str = "L2",
    *,
    reproduce_nan: bool = True,
    check: bool = True,
) -> Any:
    r"""TFA's ``triplet_hard_loss(y_true, y_pred, margin=1.0, soft=False, distance_metric="L2")``.

    .. math::

        h^+_a = \max_j\bigl((D_{aj} - \min_k D_{ak})\,P_{aj}\bigr) + \min_k D_{ak},\qquad
        h^-_a = \min_j\bigl((D_{aj} - \max_k D_{ak})\,N_{aj}\bigr) + \max_k D_{ak},

    with P the positives (:math:`j \ne a`, same label) and N the negatives;
    :math:`l_a = [(h^+_a - h^-_a) + m]_+`, or with ``soft=True``
    :math:`\log(1 + e^{h^+_a - h^-_a})` (margin ignored), and
    :math:`L = \frac1B\sum_a l_a` over **all** anchors.

    Gradient: TF's autodiff through the masked extremes, written out
    (:func:`refloss.compat.tfa.masked_extreme_backward`): the hinge passes
    where its argument is >= 0, ties split evenly, and an empty mask routes
    the gradient to the row's minimum / maximum entries; then the distance's
    gradient. Soft: :math:`e^z/(1 + e^z)`.

    Differences from the reference (:func:`refloss.batch_hard_triplet_loss`):
        * Every anchor is counted. An anchor without a positive has
          :math:`h^+ = ` row minimum (0 for "L2") and still pushes its hardest
          negative away; one without a negative has :math:`h^- =` the row
          maximum (term :math:`m` when the farthest point is a positive). The
          reference drops both kinds and averages over the others.
        * Soft margin: ``log1p(exp(z))`` as TF evaluates it — inf for
          :math:`z > \log(\text{float max})` (≈ 709 in float64, 88.7 in
          float32) with a NaN gradient there, by default;
          ``reproduce_nan=False`` uses the stable softplus.
        * Hinge exactly at 0 passes gradient 1; ties split; distances and
          "angular" as in :func:`triplet_semihard_loss`; ``margin`` must be a
          finite number >= 0; an empty batch gives 0 (TF: the mean of nothing,
          NaN).

    Args:
        y_true: ``[B]`` or ``[B, 1]`` integer labels.
        y_pred: ``[B, D]`` floating embeddings.
        margin: the margin (default 1.0).
        soft: soft margin instead of the hinge.
        distance_metric: ``"L2"`` (default), ``"squared-L2"`` or ``"angular"``.
        reproduce_nan: keep the naive soft margin's overflow.
        check: check the values (finite inputs) in one read (default
            True); ``check=False`` reads nothing (docs/errors.md, "Checks and syncs").

    Returns:
        A 0-d array in the namespace, device and dtype of ``y_pred``.

    Source:
        tensorflow/addons @ d208d75, ``tensorflow_addons/losses/triplet.py``
        (``triplet_hard_loss``).
    """
    return _hard_fwd(
        y_true, y_pred, margin, soft, distance_metric, reproduce_nan=reproduce_nan, check=check
    )[0]


# --------------------------------------------------------------------------
# contrastive_loss


def _contrastive_fwd(y_true, y_pred, margin=1.0, *, check=True):
    xp = _checks.namespace(y_true=y_true, y_pred=y_pred)
    fetch = _checks.Fetch(xp, check=_checks.check_flag("check", check))
    _checks.check_float(xp, "y_pred", y_pred)
    pair_labels(xp, "y_true", y_true, tuple(y_pred.shape), "the shape of y_pred", fetch)
    margin = _checks.check_margin("margin", margin)
    fetch.finite("y_pred", y_pred)
    fetch.done()
    dtype = y_pred.dtype
    cdt = _checks.compute_dtype(xp, dtype)
    d = xp.astype(y_pred, cdt)
    y = xp.astype(y_true, cdt)
    gap = margin - d
    hinge = xp.where(gap > 0, gap, 0.0)  # tf.math.maximum(margin - y_pred, 0.0)
    value = y * (d * d) + (1.0 - y) * (hinge * hinge)
    float_labels = is_float(xp, y_true)
    return xp.astype(value, dtype), (xp, dtype, d, y, hinge, float_labels, y_true.dtype)


def _contrastive_bwd(residuals, g):
    xp, dtype, d, y, hinge, float_labels, ydtype = residuals
    gd = g * (2.0 * y * d - 2.0 * (1.0 - y) * hinge)
    gy = xp.astype(g * (d * d - hinge * hinge), ydtype) if float_labels else None
    return gy, xp.astype(gd, dtype), None


@preset(
    PresetInfo(
        implementation="TensorFlow Addons contrastive_loss",
        distance="user-supplied d (y_pred), e.g. tf.linalg.norm(a − b, axis=1)",
        squared="y·d² and (1 − y)·[m − d]_+²",
        margin="1.0",
        reduction="none (per pair; the ContrastiveLoss class averages)",
        labels="y = 1 similar, 0 dissimilar (cast to float; other values enter linearly)",
        edge_cases="no ½; gradient finite at d = 0 (a NaN there comes from the user's norm)",
        epsilon="none",
        source=f"{SOURCE} : tensorflow_addons/losses/contrastive.py (contrastive_loss)",
    )
)
@defvjp(_contrastive_fwd, _contrastive_bwd)
def contrastive_loss(y_true: Any, y_pred: Any, margin: float = 1.0, *, check: bool = True) -> Any:
    r"""TFA's ``contrastive_loss(y_true, y_pred, margin=1.0)``: one term per pair.

    .. math:: l_i = y_i\,d_i^2 + (1 - y_i)\,[m - d_i]_+^2

    on the distances ``y_pred`` the caller computed; ``y = 1`` means similar.
    The ``tfa.losses.ContrastiveLoss`` class averages the terms (Keras'
    ``SUM_OVER_BATCH_SIZE``): ``mean(contrastive_loss(...))``.

    Gradient: :math:`\partial l_i/\partial d_i = 2y_i d_i - 2(1 - y_i)[m - d_i]_+`;
    for a floating ``y_true`` also :math:`\partial l_i/\partial y_i = d_i^2 - [m - d_i]_+^2`
    (None for integer or boolean labels).

    Differences from the reference (:func:`refloss.contrastive_loss`):
        * It takes distances, not embeddings, and returns the per-pair vector
          (the reference's ``reduction="none"`` on ``paired_distances``).
        * Labels are numbers with 1 = similar (Hadsell's paper and
          :mod:`refloss.compat.hadsell` use 1 = dissimilar); TF casts them to
          float, so a label outside {0, 1} enters the formula linearly. The
          reference takes a boolean ``same``.
        * TF broadcasts ``y_true`` against ``y_pred`` (``[B, 1]`` with ``[B]``
          gives a ``[B, B]`` result); the preset requires equal shapes.
          ``margin`` must be a finite number >= 0.

    Args:
        y_true: labels (integer, boolean or floating), shape of ``y_pred``.
        y_pred: floating distances, e.g. ``[B]``.
        margin: the margin (default 1.0).
        check: check the values (finite inputs) in one read (default
            True); ``check=False`` reads nothing (docs/errors.md, "Checks and syncs").

    Returns:
        An array shaped like ``y_pred``, in its namespace, device and dtype.

    Source:
        tensorflow/addons @ d208d75, ``tensorflow_addons/losses/contrastive.py``
        (``contrastive_loss``).
    """
    return _contrastive_fwd(y_true, y_pred, margin, check=check)[0]
