r"""omoindrot/tensorflow-triplet-loss ``model/triplet_loss.py``: batch-all and
batch-hard triplet losses with online mining (the code of the blog post
"Triplet Loss and Online Triplet Mining in TensorFlow").

* :func:`batch_all_triplet_loss` — every valid triplet; the sum of the
  hinges divided by the number of triplets whose loss exceeds **1e-16**
  (plus 1e-16), and the fraction of such triplets among the valid ones.
* :func:`batch_hard_triplet_loss` — per anchor the hardest positive
  (``max`` of ``mask·D``: 0 when there is none) and the hardest negative
  (``min`` of ``D + rowmax·(1 − mask)``: the row maximum when there is
  none); the mean over **all** B anchors.

``_pairwise_distances`` takes the squared norms from the diagonal of the Gram
matrix (so the diagonal is exactly 0), clips at 0 and, unless ``squared``,
takes ``sqrt(D² + 1e-16·[D² = 0])·[D² ≠ 0]``.

The original forms B×B×B tensors for batch-all. Here memory is O(B²): each
anchor's negatives are sorted once and prefix-summed (the core's batch-all
machinery, :mod:`refloss.triplet`), and the counts that the 1e-16 threshold
needs come from a row-wise binary search whose test is the original's own
floating-point expression ``fl(fl(d_ap − d_an) + m) > 1e-16`` — monotone in
``d_an``, so the triplets that pass it form a prefix of the sorted negatives.
O(B² log B) time.
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import device as _device

from .. import _checks
from ..mining import check_bool, label_masks
from ..reductions import as_array
from ..vjp import defvjp
from . import tfa
from ._meta import PresetInfo, preset

__all__ = ["batch_all_triplet_loss", "batch_hard_triplet_loss"]

# _pairwise_distances: added under the sqrt where D² = 0, then multiplied away
SQRT_EPSILON = 1e-16
# batch_all_triplet_loss: a triplet counts as positive when its loss is > 1e-16,
# and both divisions add 1e-16 to the denominator
POSITIVE_THRESHOLD = 1e-16
DENOMINATOR_EPSILON = 1e-16
SOURCE = "omoindrot/tensorflow-triplet-loss @ fc69836 : model/triplet_loss.py"


# --------------------------------------------------------------------------
# validation and _pairwise_distances


def _check(labels, embeddings, margin, squared, check):
    xp = _checks.namespace(labels=labels, embeddings=embeddings)
    tfa.check_embeddings(xp, "embeddings", embeddings)
    labels = tfa.label_vector(
        xp, "labels", labels, embeddings.shape[0], "embeddings", column_ok=False
    )
    margin = _checks.check_margin("margin", margin)
    check_bool("squared", squared)
    fetch = _checks.Fetch(xp, check=_checks.check_flag("check", check))
    fetch.finite("embeddings", embeddings)
    fetch.done()
    return xp, margin, labels


def _distances(xp, x, squared):
    """``_pairwise_distances(embeddings, squared)``: ``(D, residuals)``."""
    b = x.shape[0]
    dot = x @ x.T
    r = xp.arange(b, device=_device(x))
    eye = r[:, None] == r[None, :]
    square_norm = xp.sum(xp.where(eye, dot, 0.0), axis=1)  # diag_part(dot), exactly
    raw = (square_norm[:, None] - 2.0 * dot) + square_norm[None, :]
    d2 = xp.where(raw > 0, raw, 0.0)  # tf.maximum(., 0.0)
    if squared:
        # tf.maximum passes the gradient where raw >= 0 (the diagonal included)
        return d2, (x, d2, raw >= 0, True)
    zero = d2 == 0
    d = xp.where(zero, 0.0, xp.sqrt(xp.where(zero, SQRT_EPSILON, d2)))
    return d, (x, d, ~zero, False)


def _distances_backward(xp, res, g):
    x, d, live, squared = res
    if squared:
        k = xp.where(live, g, 0.0)
    else:  # sqrt's 0.5 / y; the masked zeros pass nothing
        k = xp.where(live, 0.5 * g / xp.where(live, d, 1.0), 0.0)
    return tfa.gram_backward(xp, x, k)


# --------------------------------------------------------------------------
# row-wise search with the original's own test


def prefix_count(xp: Any, sorted_rows: Any, queries: Any, test: Any) -> Any:
    r"""Per row r and query j, the length of the prefix of ``sorted_rows[r]`` on
    which ``test(value, queries[r, j])`` holds.

    ``test`` must hold on a prefix of each row and fail at +inf (the padding).
    Branch-free binary lifting, :math:`\lceil\log_2(n+1)\rceil` rounds of
    ``take_along_axis`` — :func:`refloss.mining.row_searchsorted` with an
    arbitrary monotone test instead of ``<`` / ``<=``.
    """
    rows, n = sorted_rows.shape
    idx = _checks.default_index_dtype(xp, _device(queries))
    pos = xp.zeros(queries.shape, dtype=idx, device=_device(queries))
    if n == 0:
        return pos
    rounds = n.bit_length()
    width = (1 << rounds) - 1
    s = sorted_rows
    if width > n:
        pad = xp.full((rows, width - n), math.inf, dtype=s.dtype, device=_device(s))
        s = xp.concat([s, pad], axis=1)
    step = 1 << (rounds - 1)
    while step:
        probe = xp.take_along_axis(s, pos + (step - 1), axis=1)
        pos = xp.where(test(probe, queries), pos + step, pos)
        step >>= 1
    return xp.minimum(pos, n)


# --------------------------------------------------------------------------
# batch_all_triplet_loss


def _batch_all_fwd(labels, embeddings, margin, squared=False, *, check=True):
    xp, margin, labels = _check(labels, embeddings, margin, squared, check)
    dtype = embeddings.dtype
    b = embeddings.shape[0]
    if b == 0:
        zero = xp.zeros((), dtype=dtype, device=_device(embeddings))
        return (zero, zero), (xp, dtype, embeddings, None)
    x = xp.astype(embeddings, _checks.compute_dtype(xp, dtype))
    d, dres = _distances(xp, x, squared)
    dt = d.dtype
    pos, neg, cols = label_masks(xp, labels, d)
    n_neg = xp.count_nonzero(neg, axis=1)
    n_pos = xp.count_nonzero(pos, axis=1)
    s = xp.sort(xp.where(neg, d, math.inf), axis=1)

    def hinge(cmp):  # the original's test on fl(fl(d_ap - d_an) + margin)
        return lambda s_n, d_ap: cmp((d_ap - s_n) + margin)

    k_sum = prefix_count(xp, s, d, hinge(lambda t: t > 0))
    k_counted = prefix_count(xp, s, d, hinge(lambda t: t > POSITIVE_THRESHOLD))
    k_grad = prefix_count(xp, s, d, hinge(lambda t: t >= 0))  # tf.maximum passes at 0

    # Σ_{n < k} ((d_ap - s_n) + m) = k (d_ap - s_0) - Σ_{n < k} (s_n - s_0) + k m: the
    # margin added last, as the original does (a term like 0 + 2^-60 survives)
    first = xp.where(n_neg > 0, s[:, 0], 0.0)
    in_range = cols[None, :] < n_neg[:, None]
    prefix = xp.cumulative_sum(xp.where(in_range, s - first[:, None], 0.0), axis=1,
                               include_initial=True)
    k = xp.where(pos, k_sum, 0)
    kf = xp.astype(k, dt)
    sums = (kf * (d - first[:, None]) - xp.take_along_axis(prefix, k, axis=1)) + kf * margin
    sums = xp.where(sums > 0, sums, 0.0)
    num_positive = xp.astype(xp.sum(xp.where(pos, k_counted, 0)), dt)
    num_valid = xp.astype(xp.sum(n_pos * n_neg), dt)
    denom = num_positive + DENOMINATOR_EPSILON
    loss = xp.sum(sums) / denom
    fraction = num_positive / (num_valid + DENOMINATOR_EPSILON)
    value = (as_array(xp, xp.astype(loss, dtype)), as_array(xp, xp.astype(fraction, dtype)))
    state = (dres, d, pos, neg, s, n_pos, k_grad, margin, denom)
    return value, (xp, dtype, embeddings, state)


def _batch_all_bwd(residuals, g):
    xp, dtype, embeddings, state = residuals
    if state is None:
        return None, tfa.empty_grad(xp, embeddings), None, None
    dres, d, pos, neg, _, n_pos, k_grad, margin, denom = state
    dt = d.dtype
    w = g / denom
    # ∂/∂d_ap: w per triplet with fl(fl(d_ap - d_an) + m) >= 0
    gd = xp.where(pos, w * xp.astype(k_grad, dt), 0.0)
    # ∂/∂d_an: -w per positive p with the same test; it holds on a suffix of
    # the anchor's positives sorted by distance, so count the failing prefix
    sorted_p = xp.sort(xp.where(pos, d, math.inf), axis=1)
    failing = prefix_count(xp, sorted_p, d, lambda d_ap, d_an: ((d_ap - d_an) + margin) < 0)
    passing = xp.astype(n_pos[:, None] - failing, dt)
    gd = gd - xp.where(neg, w * passing, 0.0)
    return None, xp.astype(_distances_backward(xp, dres, gd), dtype), None, None


@preset(
    PresetInfo(
        implementation="omoindrot batch_all_triplet_loss (TensorFlow)",
        distance="L2 by the GEMM expansion, norms from diag(E·Eᵀ) (squared=False default)",
        squared="no (squared=True: yes)",
        margin="none (required; 0.5 in the repository's params.json)",
        reduction="Σ hinges / (#triplets with loss > 1e-16 + 1e-16)",
        labels="integer [B]",
        edge_cases=(
            "returns (loss, fraction of valid triplets with loss > 1e-16); terms in (0, 1e-16] "
            "summed but not counted (all of them: sum / 1e-16); a term exactly 0 still passes "
            "gradient; no valid triplet → (0, 0)"
        ),
        epsilon="sqrt(D² + 1e-16·[D² = 0])·[D² ≠ 0]; 1e-16 threshold and denominators",
        source=f"{SOURCE} (batch_all_triplet_loss, _pairwise_distances, _get_triplet_mask)",
    )
)
@defvjp(_batch_all_fwd, _batch_all_bwd)
def batch_all_triplet_loss(
    labels: Any, embeddings: Any, margin: float, squared: bool = False,
    *,
    check: bool = True,
) -> tuple[Any, Any]:
    r"""omoindrot's ``batch_all_triplet_loss(labels, embeddings, margin, squared=False)``.

    Returns ``(loss, fraction_positive_triplets)``:

    .. math::

        t_{apn} = \max\bigl((D_{ap} - D_{an}) + m,\ 0\bigr),\qquad
        N_+ = \#\{(a, p, n) : t_{apn} > 10^{-16}\},

    .. math::

        \text{loss} = \frac{\sum_{apn} t_{apn}}{N_+ + 10^{-16}},\qquad
        \text{fraction} = \frac{N_+}{N_\text{valid} + 10^{-16}},

    over the valid triplets (:math:`a \ne p`, :math:`y_p = y_a \ne y_n`).

    Gradient (of the loss; :func:`refloss.vjp` differentiates the first
    output), as TF's autodiff gives it: :math:`N_+` is a constant, and every
    valid triplet with :math:`(D_{ap} - D_{an}) + m \ge 0` — exactly 0
    included, ``tf.maximum`` passes there — adds :math:`w = g/(N_+ + 10^{-16})`
    to :math:`\partial/\partial D_{ap}` and :math:`-w` to
    :math:`\partial/\partial D_{an}`; then the distance's gradient (0 at
    :math:`D = 0` for the non-squared distance).

    O(B²) memory, O(B² log B) time (the original: several B³ tensors).

    Differences from the reference (:func:`refloss.batch_all_triplet_loss`,
    ``reduction="mean_nonzero"``):
        * The count uses ``> 1e-16``, not ``> 0``: a term in (0, 1e-16] adds to
          the sum but not to the count, and if every positive term is that
          small the sum is divided by 1e-16 (e.g. one term of 5e-17 gives
          the loss 0.5). The reference divides by the number of terms > 0 and
          gives 0 when there is none.
        * A triplet exactly at the margin (term 0) passes gradient (the
          reference's relu gives it 0).
        * Distances are the GEMM expansion (near-duplicates cancel; exactly
          0 only where the expansion is <= 0). The original runs in float32
          only (``tf.to_float`` masks); the preset computes in the input's
          dtype, with the 1e-16 constants in that dtype.
        * It returns the fraction of positive triplets as a second value;
          ``margin`` is required (no default) and must be a finite number >= 0.

    Args:
        labels: ``[B]`` integer labels.
        embeddings: ``[B, D]`` floating embeddings.
        margin: the margin (the repository's configs use 0.5).
        squared: squared Euclidean distances.
        check: check the values (finite inputs) in one read (default
            True); ``check=False`` reads nothing (docs/errors.md, "Checks and syncs").

    Returns:
        ``(loss, fraction)``: two 0-d arrays in the namespace, device and dtype
        of ``embeddings``.

    Source:
        omoindrot/tensorflow-triplet-loss @ fc69836, ``model/triplet_loss.py``
        (``batch_all_triplet_loss``, ``_pairwise_distances``, ``_get_triplet_mask``).
    """
    return _batch_all_fwd(labels, embeddings, margin, squared, check=check)[0]


# --------------------------------------------------------------------------
# batch_hard_triplet_loss


def _batch_hard_fwd(labels, embeddings, margin, squared=False, *, check=True):
    xp, margin, labels = _check(labels, embeddings, margin, squared, check)
    dtype = embeddings.dtype
    b = embeddings.shape[0]
    if b == 0:
        return xp.zeros((), dtype=dtype, device=_device(embeddings)), (
            xp, dtype, embeddings, None)
    x = xp.astype(embeddings, _checks.compute_dtype(xp, dtype))
    d, dres = _distances(xp, x, squared)
    dt = d.dtype
    pos, neg, _ = label_masks(xp, labels, d)
    posf, negf = xp.astype(pos, dt), xp.astype(neg, dt)
    positive_d = posf * d
    hardest_positive = xp.max(positive_d, axis=1)
    row_max = xp.max(d, axis=1)
    negative_d = d + row_max[:, None] * (1.0 - negf)
    hardest_negative = xp.min(negative_d, axis=1)
    z = (hardest_positive - hardest_negative) + margin
    terms = xp.where(z > 0, z, 0.0)
    value = xp.sum(terms) / b
    state = (dres, d, posf, negf, positive_d, hardest_positive, row_max, negative_d,
             hardest_negative, xp.astype(z >= 0, dt))
    return as_array(xp, xp.astype(value, dtype)), (xp, dtype, embeddings, state)


def _split(xp, values, target):
    """reduce_max / reduce_min's gradient: 1/count on each entry equal to the result."""
    hit = xp.astype(values == target[:, None], values.dtype)
    return hit / xp.sum(hit, axis=1)[:, None]


def _batch_hard_bwd(residuals, g):
    xp, dtype, embeddings, state = residuals
    if state is None:
        return None, tfa.empty_grad(xp, embeddings), None, None
    (dres, d, posf, negf, positive_d, hardest_positive, row_max, negative_d,
     hardest_negative, slope) = state
    u = (g / d.shape[0]) * slope
    gd = u[:, None] * _split(xp, positive_d, hardest_positive) * posf
    share = -u[:, None] * _split(xp, negative_d, hardest_negative)
    gd = gd + share
    # the row max added to the non-negatives is differentiated too
    g_row_max = xp.sum(share * (1.0 - negf), axis=1)
    gd = gd + g_row_max[:, None] * _split(xp, d, row_max)
    return None, xp.astype(_distances_backward(xp, dres, gd), dtype), None, None


@preset(
    PresetInfo(
        implementation="omoindrot batch_hard_triplet_loss (TensorFlow)",
        distance="L2 by the GEMM expansion, norms from diag(E·Eᵀ) (squared=False default)",
        squared="no (squared=True: yes)",
        margin="none (required; 0.5 in the repository's params.json)",
        reduction="mean over all B anchors",
        labels="integer [B]",
        edge_cases=(
            "anchor without positive: hardest positive 0, counted (pushes negatives); without "
            "negative: hardest negative = row max; hinge at 0 passes gradient; ties split; "
            "empty batch 0"
        ),
        epsilon="sqrt(D² + 1e-16·[D² = 0])·[D² ≠ 0]",
        source=f"{SOURCE} (batch_hard_triplet_loss, _pairwise_distances)",
    )
)
@defvjp(_batch_hard_fwd, _batch_hard_bwd)
def batch_hard_triplet_loss(
    labels: Any, embeddings: Any, margin: float, squared: bool = False,
    *,
    check: bool = True,
) -> Any:
    r"""omoindrot's ``batch_hard_triplet_loss(labels, embeddings, margin, squared=False)``.

    .. math::

        h^+_a = \max_j P_{aj} D_{aj},\qquad
        h^-_a = \min_j\bigl(D_{aj} + R_a (1 - N_{aj})\bigr),\quad R_a = \max_j D_{aj},

    .. math:: L = \frac1B\sum_{a=1}^{B}\bigl[(h^+_a - h^-_a) + m\bigr]_+

    with P the positives (:math:`j \ne a`, same label) and N the negatives.

    Gradient: TF's autodiff, written out: the hinge passes where its argument
    is >= 0; ``reduce_max`` / ``reduce_min`` split among tied entries; the
    :math:`R_a` added to the non-negatives is differentiated (it reaches the
    row's farthest entries when a non-negative ties for the minimum); then
    the distance's gradient.

    Differences from the reference (:func:`refloss.batch_hard_triplet_loss`):
        * Every anchor is counted: one without a positive has
          :math:`h^+ = 0` and still pushes its hardest negative away (term
          :math:`[m - h^-]_+`); one without a negative has :math:`h^- = R_a`.
          The reference drops both and averages over the others.
        * The hinge passes gradient at exactly 0; ties split the gradient;
          distances are the GEMM expansion; an empty batch gives 0 (TF: NaN);
          ``margin`` is required and must be a finite number >= 0.

    Args:
        labels: ``[B]`` integer labels.
        embeddings: ``[B, D]`` floating embeddings.
        margin: the margin (the repository's configs use 0.5).
        squared: squared Euclidean distances.
        check: check the values (finite inputs) in one read (default
            True); ``check=False`` reads nothing (docs/errors.md, "Checks and syncs").

    Returns:
        A 0-d array in the namespace, device and dtype of ``embeddings``.

    Source:
        omoindrot/tensorflow-triplet-loss @ fc69836, ``model/triplet_loss.py``
        (``batch_hard_triplet_loss``, ``_pairwise_distances``).
    """
    return _batch_hard_fwd(labels, embeddings, margin, squared, check=check)[0]
