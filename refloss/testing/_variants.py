r"""The reference with another euclidean distance: eps inside the sqrt, or a
clamped squared distance — the hypotheses of :mod:`._causes` that need the
loss recomputed from a distance refloss does not offer.

Hand-written losses avoid the NaN gradient of :math:`\sqrt{\cdot}` at 0 in
two ways:

* ``inside``: :math:`d = \sqrt{\lVert a-b\rVert^2 + \varepsilon}` (every
  distance moves, and a = b gives :math:`\sqrt\varepsilon`);
* ``clamp``: :math:`d = \sqrt{\max(\lVert a-b\rVert^2, \varepsilon)}`
  (``d2.clamp(min=eps).sqrt()``, TensorFlow Addons' ``maximum``): only the
  distances below :math:`\sqrt\varepsilon` move, to :math:`\sqrt\varepsilon`,
  and pass no gradient.

No new math: each variant is refloss's own loss, with its analytic VJP
(:func:`refloss.vjp`), evaluated on inputs rewritten so that its plain
euclidean distance *is* the variant's distance:

* a loss on explicit pairs or triplets gets extra columns. Rows that meet in
  one pair get orthogonal offsets: :math:`\lVert(a, s) - (b, 0)\rVert^2 =
  \lVert a-b\rVert^2 + s^2`, with :math:`s^2 = \varepsilon` (``inside``) or,
  for ``clamp``, :math:`s^2 = \varepsilon` on the pairs whose squared
  distance is below it after moving b onto a (so the pair's distance is the
  constant :math:`\sqrt\varepsilon` and its gradient, :math:`(a-b)/d`, is 0);
* a loss on a labeled batch is the same loss on the triplets (pairs) it
  selects — :func:`refloss.mine_batch_hard`, :func:`refloss.mine_semihard`,
  :func:`refloss.mine_hardest_negative`, every valid triplet for batch-all,
  every pair i < j for the all-pairs contrastive loss (the identities their
  docstrings state) — whose gradients are summed back onto the rows of the
  batch. Both distances are monotone in :math:`\lVert a-b\rVert^2`, so the
  selection is the reference's own (``clamp`` ties the distances below
  :math:`\sqrt\varepsilon`; those are exact duplicates in the inputs the
  harness draws).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = ["MODES", "applies", "evaluate"]

MODES = ("inside", "clamp")

_LABELED_TRIPLET = ("batch_hard_triplet_loss", "batch_all_triplet_loss",
                    "semihard_triplet_loss", "hardest_negative_triplet_loss")
_ALL = (*_LABELED_TRIPLET, "triplet_margin_loss", "contrastive_loss",
        "contrastive_loss_all_pairs")


def _name(fn: Callable) -> str | None:
    import refloss

    return next((n for n in _ALL if fn is getattr(refloss, n, None)), None)


def applies(fn: Callable, kw: Mapping, mode: str) -> bool:
    """Whether ``fn(**kw)`` takes plain euclidean distances that the variant
    can replace (not normalized; a reduction over terms, not ``"none"``)."""
    name = _name(fn)
    if name is None:
        return False
    opts = _options(fn, kw)
    if opts.get("metric") != "euclidean" or opts.get("normalize"):
        return False
    if name != "triplet_margin_loss" and name != "contrastive_loss" and \
            opts.get("reduction") == "none":
        return False  # per-anchor / per-pair layouts: not rebuilt here
    if name == "batch_hard_triplet_loss" and opts.get("anchor_as_positive"):
        return False  # d(a, a) = 0 is the reference's constant, no pair
    return not (mode == "clamp" and name == "triplet_margin_loss" and opts.get("swap"))


def _options(fn: Callable, kw: Mapping) -> dict:
    import inspect

    out = {n: p.default for n, p in inspect.signature(fn).parameters.items()
           if p.default is not p.empty}
    out.update(kw)
    return out


def evaluate(fn: Callable, kw: Mapping, inputs: Mapping, cot: Any, want_grad: bool,
             *, mode: str, eps: float) -> tuple[tuple, dict | None]:
    """``((value,), grads or None)`` of ``fn(**kw)`` on ``inputs`` (float64
    NumPy, by role) with the ``mode`` distance at ``eps``; ``grads`` maps each
    floating role to ``cot``'s pullback."""
    import refloss

    name = _name(fn)
    kw = dict(kw)
    if name in ("triplet_margin_loss", "contrastive_loss"):
        roles = ("anchor", "positive", "negative") if name == "triplet_margin_loss" \
            else ("a", "b")
        rows = [np.asarray(inputs[r], dtype=np.float64) for r in roles]
        extra = (np.asarray(inputs["same"], dtype=bool),) if name == "contrastive_loss" else ()
        value, grads = _on_rows(fn, kw, rows, extra, cot, want_grad, mode, eps)
        return (value,), (dict(zip(roles, grads, strict=True)) if want_grad else None)

    x = np.asarray(inputs["x"], dtype=np.float64)
    labels = np.asarray(inputs["labels"])
    if name == "contrastive_loss_all_pairs":
        i, j = np.triu_indices(x.shape[0], 1)
        value, grads = _on_rows(refloss.contrastive_loss, kw, [x[i], x[j]],
                                (labels[i] == labels[j],), cot, want_grad, mode, eps)
        index = (i, j)
    else:
        idx = _triplets(name, x, labels, kw)
        kw = {k: v for k, v in _options(fn, kw).items()
              if k in ("margin", "soft", "reduction")}  # the rest selects, or is euclidean
        value, grads = _on_rows(refloss.triplet_margin_loss, kw, [x[k] for k in idx], (),
                                cot, want_grad, mode, eps)
        index = idx
    if not want_grad:
        return (value,), None
    gx = np.zeros_like(x)
    for k, g in zip(index, grads, strict=True):
        np.add.at(gx, k, g)  # a gather's pullback: rows chosen several times add up
    return (value,), {"x": gx}


def _triplets(name: str, x: np.ndarray, labels: np.ndarray, kw: Mapping) -> tuple:
    import refloss

    if name == "batch_hard_triplet_loss":
        return tuple(np.asarray(k) for k in refloss.mine_batch_hard(x, labels))
    if name == "semihard_triplet_loss":
        return tuple(np.asarray(k) for k in refloss.mine_semihard(x, labels))
    if name == "hardest_negative_triplet_loss":
        return tuple(np.asarray(k) for k in refloss.mine_hardest_negative(x, labels))
    same = labels[:, None] == labels[None, :]
    a, p = np.nonzero(same & ~np.eye(len(labels), dtype=bool))
    if kw.get("pairs", "ordered") == "unordered":
        a, p = a[a < p], p[a < p]
    out = [(ai, pi, n) for ai, pi in zip(a, p, strict=True) for n in np.nonzero(~same[ai])[0]]
    if not out:
        return tuple(np.zeros(0, dtype=np.int64) for _ in range(3))
    return tuple(np.asarray(c) for c in zip(*out, strict=True))


def _on_rows(loss: Callable, kw: Mapping, rows: list, extra: tuple, cot: Any,
             want_grad: bool, mode: str, eps: float):
    """The loss on explicit rows (pairs: 2, triplets: 3) whose distances
    become the variant's; the gradients of the original rows."""
    import refloss

    n, dim = rows[0].shape
    k = len(rows)
    if mode == "inside":
        # k orthogonal offsets of length √(ε/2): every two rows of a pair or
        # triplet are √ε apart in the new columns
        s = np.sqrt(eps / 2.0)
        lifted = [np.concatenate([r, np.zeros((n, k))], axis=1) for r in rows]
        for i, r in enumerate(lifted):
            r[:, dim + i] = s
    elif mode == "clamp":
        # the pairs of the first row (anchor) with each other row: below ε the
        # other row moves onto the first (distance 0, gradient 0) and a column
        # of its own adds ε; it carries the anchor's other offsets, so that
        # only its own pair moves
        first = rows[0]
        low = [_sq(first, r) < eps for r in rows[1:]]
        rows = [first] + [np.where(lo[:, None], first, r) for lo, r in
                          zip(low, rows[1:], strict=True)]
        offsets = np.stack([np.where(lo, np.sqrt(eps), 0.0) for lo in low], axis=1)
        lifted = [np.concatenate([first, offsets], axis=1)]
        for i, r in enumerate(rows[1:]):
            own = offsets.copy()
            own[:, i] = 0.0
            lifted.append(np.concatenate([r, own], axis=1))
    else:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    if not want_grad:
        return np.asarray(loss(*lifted, *extra, **kw), dtype=np.float64), None
    value, pull = refloss.vjp(loss, *lifted, *extra, **kw)
    grads = [np.asarray(g, dtype=np.float64)[:, :dim] for g in pull(cot)[:k]]
    return np.asarray(value, dtype=np.float64), grads


def _sq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum((a - b) ** 2, axis=1)
