r"""Admissible random choices: what a candidate that picks its negative at
random may return, for the references whose selection has a random variant.

A deterministic reference picks one negative per positive pair; the random
variants common in public code pick *any* admissible one. Their loss is then
a random variable, and one call's value is judged against the set of values
the admissible choices can give. Each term :math:`l_{ap}` depends on its own
negative only, so that set is exactly the interval between the sums (means)
of the per-term minima and maxima — a candidate value outside it cannot come
from any admissible choice. The rule of each reference:

``semihard_triplet_loss`` (random semi-hard negative)
    For a counted positive pair (a, p) whose semi-hard set
    :math:`S_{ap} = \{n : y_n \ne y_a,\ d_{ap} < d_{an} < d_{ap} + m\}` is not
    empty, any :math:`n \in S_{ap}`: :math:`l_{ap} \in [d_{ap} - \max_S d_{an}
    + m,\ d_{ap} - \min_S d_{an} + m]` (the reference's choice is the upper
    end). Pairs without a semi-hard negative keep the reference's term.
``hardest_negative_triplet_loss`` (random hard negative)
    For a positive pair (a, p), any negative that violates the margin,
    :math:`H_{ap} = \{n : d_{an} < d_{ap} + m\}`: :math:`l_{ap}` between the
    smallest and the largest hinge over :math:`H_{ap}`; a pair without one
    gives 0 whichever negative is taken.

Only the ``"mean"`` and ``"sum"`` reductions have an interval here (a mean
over non-zero terms is not monotone in one term); other references and
reductions have no admissible set, and a nondeterministic candidate is then
reported as NONDETERMINISTIC without a judgement of its value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ._setup import _Setup

__all__ = ["admissible_range"]


def admissible_range(setup: _Setup, ref_in: Mapping[str, Any], ref_value: Any
                     ) -> tuple[float, float, str] | None:
    """``(low, high, description)`` of the values admissible random choices
    give on ``ref_in``, or None when the reference has no random variant."""
    name = getattr(setup.reference, "__name__", "")
    if not setup.ref_name.startswith("refloss.") or setup.ref_name.count(".") != 1:
        return None  # refloss functions only, not compat presets
    kw = setup.ref_kwargs
    reduction = kw.get("reduction", "mean")
    if reduction not in ("mean", "sum") or kw.get("soft"):
        return None
    if name not in ("semihard_triplet_loss", "hardest_negative_triplet_loss"):
        return None
    import refloss

    x = np.asarray(ref_in["x"], dtype=np.float64)
    labels = np.asarray(ref_in["labels"])
    margin = float(kw.get("margin", 1.0))
    x_n = refloss.l2_normalize(x) if kw.get("normalize") else x
    d = np.asarray(refloss.pairwise_distances(x_n, metric=kw.get("metric", "euclidean")),
                   dtype=np.float64)
    same = labels[:, None] == labels[None, :]
    lo_terms, hi_terms, count = [], [], 0
    for a in range(len(labels)):
        negs = d[a, ~same[a]]
        if negs.size == 0:
            continue  # both references: no term for an anchor without a negative
        for p in range(len(labels)):
            if p == a or not same[a, p]:
                continue
            count += 1
            dap = d[a, p]
            if name == "semihard_triplet_loss":
                semi = negs[(negs > dap) & (negs < dap + margin)]
                if semi.size:
                    lo_terms.append(dap - semi.max() + margin)
                    hi_terms.append(dap - semi.min() + margin)
                else:  # no semi-hard negative: the reference's own choice
                    farther = negs[negs > dap]
                    n_star = farther.min() if farther.size else negs.max()
                    t = max(dap - n_star + margin, 0.0)
                    lo_terms.append(t)
                    hi_terms.append(t)
            else:
                hard = negs[negs < dap + margin]
                if hard.size:
                    lo_terms.append(dap - hard.max() + margin)
                    hi_terms.append(dap - hard.min() + margin)
                else:
                    lo_terms.append(0.0)
                    hi_terms.append(0.0)
    if count == 0:
        lo = hi = 0.0
    else:
        lo, hi = float(np.sum(lo_terms)), float(np.sum(hi_terms))
        if reduction == "mean":
            lo, hi = lo / count, hi / count
    what = ("a random semi-hard negative per positive pair" if name == "semihard_triplet_loss"
            else "a random margin-violating negative per positive pair")
    return lo, hi, what
