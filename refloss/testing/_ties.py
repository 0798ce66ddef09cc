r"""Ties judged by the reference: the subdifferential at an exact tie.

Where the reference's selection is tied — equal hardest positives or
negatives (batch-hard), equal semi-hard candidates, a hinge argument exactly
0, a swapped negative distance equal to the plain one, a linear contrastive
hinge exactly at its margin — the loss is not differentiable, and every
convex combination of the tied choices' gradients is a valid subgradient.
This module enumerates the tied choices on the exact input with the
reference's public miners and distances (:func:`refloss.mine_batch_hard`,
:func:`refloss.mine_semihard`, :func:`refloss.pairwise_distances`,
:func:`refloss.paired_distances`), one *group* per anchor, positive pair,
triplet or pair, and maps each choice to an input gradient through the
distances' own VJP (a sparse B×B weight matrix for a labeled batch, a
one-hot cotangent for explicit triplets and pairs).

The set of admissible gradients is the reference's gradient plus, per group
independently, the convex hull of (choice − the reference's choice):

.. math:: S = g_{\mathrm{ref}} + \sum_g \operatorname{conv}\{v_{g,k} - v_{g,\mathrm{ref}}\}.

A candidate's gradient agrees when its distance to S (a small least-squares
problem with non-negative weights summing to 1 per group, solved exactly by
Lawson–Hanson) is within the dtype's gradient tolerance; a finite-difference
slope along a direction v agrees when it lies in the interval of
:math:`\langle s, v\rangle` over S. Distances exactly 0 (a ball of
subgradients) are not enumerated: the reference's 0 there is the only
vertex.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._run import _silenced


@dataclass
class _Group:
    """One independent tie: the alternatives of one anchor, pair or triplet.

    ``where`` names it ("anchor 0"); ``choices`` are dicts of the choice's
    components ({"positive": 3, "negative": 5, "slope": 1.0}); ``vecs`` is
    (k, n), each choice's contribution to the flattened input gradient;
    ``ref`` the index of the reference's own choice; ``names`` the words of
    each component ({"positive": "hardest positive"}); ``tied`` the options
    of each component.
    """

    where: str
    choices: list[dict]
    vecs: np.ndarray
    ref: int
    names: dict
    tied: dict


@dataclass
class TieModel:
    """The groups of tied choices of one reference at one input."""

    roles: list[str]
    shapes: dict
    groups: list[_Group] = field(default_factory=list)
    # the value itself jumps here (a "mean_nonzero" count that a hinge at 0
    # would change, a semi-hard negative exactly at d_ap): no slope exists,
    # so finite differences cannot be judged by the subdifferential
    jumps: bool = False
    # with paths=True: the reference's gradient split by the distance it flows
    # through, positive pairs (d_ap) and negative pairs (d_an); None otherwise
    paths: dict | None = None

    def add_path(self, which: str, v: np.ndarray) -> None:
        if self.paths is not None:
            self.paths[which] = self.paths.get(which, 0.0) + v

    def flat(self, grads: Mapping) -> np.ndarray:
        return np.concatenate([np.asarray(grads[r], dtype=np.float64).ravel()
                               for r in self.roles])

    def unflat(self, v: np.ndarray) -> dict:
        out, k = {}, 0
        for r in self.roles:
            n = int(np.prod(self.shapes[r]))
            out[r] = v[k:k + n].reshape(self.shapes[r])
            k += n
        return out


# --------------------------------------------------------------------------
# membership


def _nnls(a: np.ndarray, b: np.ndarray, iters: int = 500) -> np.ndarray:
    """min ||a x - b|| over x >= 0 (Lawson–Hanson active set)."""
    m, n = a.shape
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    w = a.T @ (b - a @ x)
    tol = 1e-12 * max(1.0, float(np.max(np.abs(a))) if a.size else 1.0) * max(m, n)
    for _ in range(iters):
        if passive.all() or np.max(np.where(passive, -np.inf, w)) <= tol:
            break
        j = int(np.argmax(np.where(passive, -np.inf, w)))
        passive[j] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if np.all(z[passive] > 0):
                x = z
                break
            neg = passive & (z <= 0)
            alpha = np.min(x[neg] / (x[neg] - z[neg]))
            x = x + alpha * (z - x)
            passive &= x > 1e-15
            x[~passive] = 0.0
        w = a.T @ (b - a @ x)
    return x


def closest(model: TieModel, ref_flat: np.ndarray, cand_flat: np.ndarray):
    """The point of S closest to the candidate: ``(point, weights per group)``."""
    cols, owner = [], []
    for gi, g in enumerate(model.groups):
        for k in range(len(g.choices)):
            cols.append(g.vecs[k] - g.vecs[g.ref])
            owner.append(gi)
    n_groups = len(model.groups)
    delta = np.stack(cols, axis=1) if cols else np.zeros((ref_flat.size, 0))
    r = cand_flat - ref_flat
    # solved on data scaled to 1, the sums to 1 weighted 1e4 times more
    scale = max(float(np.max(np.abs(delta))) if delta.size else 0.0,
                float(np.max(np.abs(r))) if r.size else 0.0)
    scale = scale if scale > 0 and np.isfinite(scale) else 1.0
    weight = 1e4
    e = np.zeros((n_groups, len(cols)))
    e[owner, np.arange(len(cols))] = weight
    lam = _nnls(np.vstack([delta / scale, e]),
                np.concatenate([r / scale, np.full(n_groups, weight)]))
    weights, k = [], 0
    for g in model.groups:
        part = lam[k:k + len(g.choices)]
        total = part.sum()
        part = part / total if total > 0 else np.eye(len(g.choices))[g.ref]
        weights.append(part)
        k += len(g.choices)
    lam = np.concatenate(weights) if weights else lam
    return ref_flat + delta @ lam, weights


def slope_range(model: TieModel, ref_flat: np.ndarray, v_flat: np.ndarray):
    """``(lo, hi)`` of <s, v> over S (per group, the extreme choices)."""
    base = float(ref_flat @ v_flat)
    lo = hi = base
    for g in model.groups:
        s = g.vecs @ v_flat - float(g.vecs[g.ref] @ v_flat)
        lo += float(np.min(s))
        hi += float(np.max(s))
    return lo, hi


# --------------------------------------------------------------------------
# words


def words(model: TieModel, weights: list[np.ndarray]) -> str:
    """The first group where the candidate's combination departs from the
    reference's choice, in words ("" when none does)."""
    for g, lam in zip(model.groups, weights, strict=True):
        if lam[g.ref] > 1 - 1e-6:
            continue
        for comp, options in g.tied.items():
            cand = _marginal(g, lam, comp)
            ref_val = g.choices[g.ref][comp]
            if len(cand) == 1 and next(iter(cand)) == ref_val:
                continue
            name = g.names[comp]
            if comp == "subgradient":
                return (f"at the distance {g.where}, candidate takes a "
                        f"non-zero subgradient of the distance (inside the unit ball), "
                        f"reference 0")
            if comp == "slope":
                c = sum(val * w for val, w in cand.items())
                return (f"at {name} ({g.where}), candidate passes gradient {_short(c)} "
                        f"through it, reference {_short(ref_val)}")
            ties = ", ".join(str(o) for o in options)
            if len(cand) == 1:
                got = f"gives the whole gradient to index {next(iter(cand))}"
            else:
                got = "splits it " + " / ".join(
                    f"{_short(w)} to {i}" for i, w in sorted(cand.items()))
            return (f"at a tie of {g.where}'s {name} (indices {ties}), candidate {got}, "
                    f"reference gives it to index {ref_val}")
    return ""


def _marginal(g: _Group, lam: np.ndarray, comp: str) -> dict:
    """Weight of each value of one component; for index components only the
    choices that pass gradient count (a zero slope gives nothing to anyone)."""
    out: dict = {}
    for ch, w in zip(g.choices, lam, strict=True):
        if w <= 1e-9 or (comp != "slope" and ch.get("slope", 1.0) == 0.0):
            continue
        out[ch[comp]] = out.get(ch[comp], 0.0) + float(w)
    total = sum(out.values())
    if total <= 0:
        return {g.choices[g.ref][comp]: 1.0}
    out = {k: v / total for k, v in out.items() if v / total > 1e-6}
    return out


def _short(v: float) -> str:
    return f"{float(v) + 0.0:.4g}"  # + 0.0: no "-0"


# --------------------------------------------------------------------------
# the models


def tie_model(setup: Any, ref_in: Mapping, cot: Any, *, paths: bool = False
              ) -> TieModel | None:
    """The tie groups of ``setup.reference`` at ``ref_in`` (float64), or None
    when the reference has no model here (then the caller falls back to its
    kink probe) — an unknown reference or option. A model with no group means
    the reference is differentiable at the input (as far as ties go)."""
    import refloss

    models = {
        refloss.batch_hard_triplet_loss: _batch_hard,
        refloss.semihard_triplet_loss: _semihard,
        refloss.hardest_negative_triplet_loss: _hardest_negative,
        refloss.batch_all_triplet_loss: _batch_all,
        refloss.triplet_margin_loss: _triplet,
        refloss.contrastive_loss: _contrastive,
        refloss.contrastive_loss_all_pairs: _contrastive_all_pairs,
    }
    build = models.get(setup.reference)
    if build is None:
        return None
    kw = dict(setup.ref_kwargs)
    if kw.get("normalize") or kw.get("metric") == "cosine":
        # a zero row is a singularity of the normalisation, not a tie
        for a in ref_in.values():
            a = np.asarray(a)
            if a.dtype.kind == "f" and a.ndim == 2 and np.any(np.all(a == 0, axis=1)):
                return None
    try:
        with _silenced():
            model = build(ref_in, kw, np.asarray(cot, dtype=np.float64), paths)
    except _NoModel:
        return None
    return model


class _NoModel(Exception):
    pass


def _options(kw: Mapping, known: Mapping) -> dict:
    """The reference's options with defaults; an option the model does not
    know means no model."""
    out = dict(known)
    for k, v in kw.items():
        if k not in known:
            raise _NoModel(k)
        out[k] = v
    return out


def _eq(u: float, v: float) -> bool:
    """Equal up to a few ulps: refloss's distance GEMM can round an exact tie
    by one ulp, and a tie it splits is still a tie for the candidate."""
    return abs(u - v) <= 8 * np.finfo(np.float64).eps * max(1.0, abs(u), abs(v))


def _weight(reduction: str, cot: np.ndarray, count: float, index=None) -> float:
    """The upstream weight of one term: the cotangent itself for "none", else
    the scalar cotangent over the reduction's count (0 when it is 0)."""
    if reduction == "none":
        return float(cot[index])
    g = float(cot)
    if reduction == "sum":
        return g
    if reduction == "mean_nonzero":
        # no term counted yet: a hinge at 0 that turns positive is counted
        # alone, as if the count were 1
        return g / max(count, 1)
    return g / count if count > 0 else 0.0


class _Embed:
    """x -> (normalised) -> D, with the VJP of a one-hot D entry cached."""

    def __init__(self, x: np.ndarray, metric: str, normalize: bool) -> None:
        import refloss

        self.x = x
        self.pull_n = None
        xn = x
        if normalize:
            xn, self.pull_n = refloss.vjp(refloss.l2_normalize, x)
        self.d, self.pull_d = refloss.vjp(refloss.pairwise_distances, xn, metric=metric)
        self.d = np.asarray(self.d, dtype=np.float64)
        self.cache: dict = {}
        self.metric = metric
        self.radius: dict = {}  # zero-distance entry -> largest |weight| it can get

    def weigh(self, i: int, j: int, c: float) -> None:
        """Record that D[i, j] gets a weight of magnitude up to ``c``."""
        if self.metric == "euclidean" and c != 0 and self.d[i, j] == 0:
            self.radius[(i, j)] = self.radius.get((i, j), 0.0) + abs(c)

    def balls(self, model: TieModel) -> None:
        """One group per zero distance with weight: the euclidean distance's
        subgradients there fill the unit ball (the reference takes 0)."""
        for (i, j), c in self.radius.items():
            vecs = [np.zeros(self.x.size)]
            for u in _ball_vertices(self.x.shape[1]):
                g = np.zeros_like(self.x)
                g[i] += c * u
                g[j] -= c * u
                if self.pull_n is not None:
                    g = np.asarray(self.pull_n(g)[0], dtype=np.float64)
                vecs.append(g.ravel())
            model.groups.append(_ball_group(f"d({i}, {j}) = 0", vecs))

    def entry(self, i: int, j: int) -> np.ndarray:
        key = (i, j)
        if key not in self.cache:
            g = np.zeros_like(self.d)
            g[i, j] = 1.0
            gx = np.asarray(self.pull_d(g)[0], dtype=np.float64)
            if self.pull_n is not None:
                gx = np.asarray(self.pull_n(gx)[0], dtype=np.float64)
            self.cache[key] = gx.ravel()
        return self.cache[key]

    def vec(self, entries) -> np.ndarray:
        out = np.zeros(self.x.size)
        for i, j, c in entries:
            if c != 0:
                out = out + c * self.entry(i, j)
        return out


def _labeled_model(ref_in, paths=False):
    x = np.asarray(ref_in["x"], dtype=np.float64)
    labels = np.asarray(ref_in["labels"])
    return x, labels, TieModel(roles=["x"], shapes={"x": x.shape},
                               paths={} if paths else None)


def _hinge_slopes(z: float, soft: bool) -> list[float]:
    """The hinge's slopes at z (both near 0), the reference's own first
    (relu: 1 only where z > 0)."""
    if soft:
        return [float(1.0 / (1.0 + np.exp(-z)))]
    own = 1.0 if z > 0 else 0.0
    return [own, 1.0 - own] if _eq(z, 0.0) else [own]


def _batch_hard(ref_in, kw, cot, paths=False):
    import refloss

    o = _options(kw, {"margin": 1.0, "metric": "euclidean", "soft": False,
                      "normalize": False, "reduction": "mean",
                      "anchor_as_positive": False})
    x, labels, model = _labeled_model(ref_in, paths)
    if x.shape[0] == 0:
        return model
    emb = _Embed(x, o["metric"], o["normalize"])
    d = emb.d
    if o["anchor_as_positive"]:
        anchors, pos, neg = _batch_hard_with_self(d, labels)
    else:
        anchors, pos, neg = (np.asarray(v) for v in refloss.mine_batch_hard(
            x, labels, metric=o["metric"], normalize=o["normalize"]))
    own = o["anchor_as_positive"]  # the anchor is one of its own positives
    zs = []
    for a, p, n in zip(anchors, pos, neg, strict=True):
        zs.append(d[a, p] - d[a, n] if o["soft"] else (d[a, p] + o["margin"]) - d[a, n])
    terms = [_term(z, o["soft"]) for z in zs]
    count = len(anchors) if o["reduction"] == "mean" else sum(t > 0 for t in terms)
    for a, p, n, z in zip(anchors, pos, neg, zs, strict=True):
        same = labels == labels[a]
        ps = [int(j) for j in np.flatnonzero(same)
              if (own or j != a) and _eq(d[a, j], d[a, p])]
        ns = [int(j) for j in np.flatnonzero(~same) if _eq(d[a, j], d[a, n])]
        slopes = _hinge_slopes(z, o["soft"])
        w = _weight(o["reduction"], cot, count, int(a))
        for j in ps + ns:
            if j != a:  # d(a, a) is 0 for every x: no ball there
                emb.weigh(int(a), j, w * max(slopes))
        if paths:
            model.add_path("positive", emb.vec([(int(a), int(p), w * slopes[0])]))
            model.add_path("negative", emb.vec([(int(a), int(n), -w * slopes[0])]))
        if len(ps) == len(ns) == len(slopes) == 1 or slopes == [0.0]:
            continue
        s_ref = slopes[0]
        choices, vecs, ref = [], [], 0
        for s in slopes:
            for pp in ps:
                for nn in ns:
                    if (s, pp, nn) == (s_ref, int(p), int(n)):
                        ref = len(choices)
                    choices.append({"positive": pp, "negative": nn, "slope": s})
                    vecs.append(emb.vec([(int(a), pp, w * s), (int(a), nn, -w * s)]))
        tied = {k: v for k, v in (("positive", ps), ("negative", ns), ("slope", slopes))
                if len(v) > 1}
        model.groups.append(_Group(
            where=f"anchor {int(a)}", choices=choices, vecs=np.array(vecs), ref=ref,
            names={"positive": "hardest positives", "negative": "hardest negatives",
                   "slope": "a hinge exactly at 0"}, tied=tied))
    emb.balls(model)
    return _mark_jumps(model, o["reduction"], count)


def _batch_hard_with_self(d: np.ndarray, labels: np.ndarray):
    """Batch-hard triplets with the anchor among its own positives: every
    anchor with a negative; the hardest positive over the class, the anchor
    included (index a, distance 0), ties to the lowest index, as the
    reference's selection (exact comparisons on the same distances)."""
    anchors, pos, neg = [], [], []
    for a in range(d.shape[0]):
        same = labels == labels[a]
        if not np.any(~same):
            continue
        cls, others = np.flatnonzero(same), np.flatnonzero(~same)
        anchors.append(a)
        pos.append(int(cls[np.argmax(d[a, cls])]))
        neg.append(int(others[np.argmin(d[a, others])]))
    return np.array(anchors, dtype=int), np.array(pos, dtype=int), np.array(neg, dtype=int)


def _mark_jumps(model: TieModel, reduction: str, count: float) -> TieModel:
    """A "mean_nonzero" count that a hinge at 0 can change is a jump of the
    value (unless nothing is counted yet: then the value is continuous)."""
    if reduction == "mean_nonzero" and count > 0 and any(
            "slope" in g.tied for g in model.groups):
        model.jumps = True
    return model


def _term(z: float, soft: bool) -> float:
    if soft:
        return float(np.logaddexp(0.0, z))
    return max(z, 0.0)


def _semihard(ref_in, kw, cot, paths=False, hardest=False):
    import refloss

    known = {"margin": 1.0, "metric": "euclidean", "normalize": False, "reduction": "mean"}
    if hardest:
        known["soft"] = False
    o = _options(kw, known)
    soft = bool(o.get("soft", False))
    x, labels, model = _labeled_model(ref_in, paths)
    if x.shape[0] == 0:
        return model
    emb = _Embed(x, o["metric"], o["normalize"])
    d = emb.d
    miner = refloss.mine_hardest_negative if hardest else refloss.mine_semihard
    anchors, pos, neg = (np.asarray(v) for v in miner(
        x, labels, metric=o["metric"], normalize=o["normalize"]))
    zs = [d[a, p] - d[a, n] if soft else (d[a, p] + o["margin"]) - d[a, n]
          for a, p, n in zip(anchors, pos, neg, strict=True)]
    terms = [_term(z, soft) for z in zs]
    count = len(anchors) if o["reduction"] == "mean" else sum(t > 0 for t in terms)
    for a, p, n, z in zip(anchors, pos, neg, zs, strict=True):
        a, p, n = int(a), int(p), int(n)
        ns = [int(j) for j in np.flatnonzero(labels != labels[a]) if _eq(d[a, j], d[a, n])]
        slopes = _hinge_slopes(z, soft)
        w = _weight(o["reduction"], cot, count, (a, p))
        for j in [p, *ns]:
            emb.weigh(a, j, w * max(slopes))
        if paths:
            model.add_path("positive", emb.vec([(a, p, w * slopes[0])]))
            model.add_path("negative", emb.vec([(a, n, -w * slopes[0])]))
        if (len(ns) == 1 and len(slopes) == 1) or slopes == [0.0]:
            continue
        s_ref = slopes[0]
        choices, vecs, ref = [], [], 0
        for s in slopes:
            for nn in ns:
                if (s, nn) == (s_ref, n):
                    ref = len(choices)
                choices.append({"negative": nn, "slope": s})
                vecs.append(emb.vec([(a, p, w * s), (a, nn, -w * s)]))
        tied = {k: v for k, v in (("negative", ns), ("slope", slopes)) if len(v) > 1}
        model.groups.append(_Group(
            where=f"positive pair ({a}, {p})", choices=choices, vecs=np.array(vecs),
            ref=ref, names={"negative": "hardest negatives" if hardest else
                            "semi-hard negatives", "slope": "a hinge exactly at 0"},
            tied=tied))
    # a negative exactly at d_ap is not semi-hard, one farther by any epsilon is
    if not hardest and any(_eq(d[a, p], d[a, j]) for a, p in zip(anchors, pos, strict=True)
           for j in np.flatnonzero(labels != labels[a])):
        model.jumps = True
    emb.balls(model)
    return _mark_jumps(model, o["reduction"], count)


def _hardest_negative(ref_in, kw, cot, paths=False):
    return _semihard(ref_in, kw, cot, paths, hardest=True)


def _batch_all(ref_in, kw, cot, paths=False):
    o = _options(kw, {"margin": 1.0, "metric": "euclidean", "soft": False,
                      "normalize": False, "reduction": "mean_nonzero", "pairs": "ordered"})
    unordered = o["pairs"] == "unordered"  # each positive pair once, lower index as anchor
    x, labels, model = _labeled_model(ref_in, paths)
    if o["soft"] or x.shape[0] == 0:
        return model  # softplus is smooth: no tie
    emb = _Embed(x, o["metric"], o["normalize"])
    d = emb.d
    b = x.shape[0]
    trip = [(a, p, n) for a in range(b) for p in range(b) for n in range(b)
            if (p > a if unordered else p != a) and labels[p] == labels[a]
            and labels[n] != labels[a]]
    zs = {t: (d[t[0], t[1]] + o["margin"]) - d[t[0], t[2]] for t in trip}
    count = len(trip) if o["reduction"] == "mean" else sum(z > 0 for z in zs.values())
    for (a, p, n), z in zs.items():
        w = _weight(o["reduction"], cot, count, (a, p))
        if z > 0 or _eq(z, 0.0):
            emb.weigh(a, p, w)
            emb.weigh(a, n, w)
        if paths and z > 0:
            model.add_path("positive", emb.vec([(a, p, w)]))
            model.add_path("negative", emb.vec([(a, n, -w)]))
        if not _eq(z, 0.0):
            continue
        vecs = [np.zeros(x.size), emb.vec([(a, p, w), (a, n, -w)])]
        model.groups.append(_Group(
            where=f"triplet ({a}, {p}, {n})", choices=[{"slope": 0.0}, {"slope": 1.0}],
            vecs=np.array(vecs), ref=int(z > 0), names={"slope": "a hinge exactly at 0"},
            tied={"slope": [0.0, 1.0]}))
    emb.balls(model)
    return _mark_jumps(model, o["reduction"], count)


def _ball_vertices(dim: int) -> list[np.ndarray]:
    """Points of the unit sphere whose hull stays inside the ball: ±e_k and,
    up to 4 dimensions, the cube's corners scaled to norm 1 (where eps-added
    differences point)."""
    eye = np.eye(dim)
    out = [*eye, *(-eye)]
    if 1 < dim <= 4:
        corners = np.array(np.meshgrid(*[[-1.0, 1.0]] * dim)).reshape(dim, -1).T
        out.extend(corners / np.sqrt(dim))
    return out


def _ball_group(where: str, vecs: list) -> _Group:
    choices = [{"subgradient": "0"}] + [{"subgradient": f"unit vector {k}"}
                                        for k in range(1, len(vecs))]
    return _Group(where=where, choices=choices, vecs=np.array(vecs), ref=0,
                  names={"subgradient": "the distance's subgradient"},
                  tied={"subgradient": ["the unit ball"]})


class _Paired:
    """Paired distances of named role pairs, with one-hot VJPs cached."""

    def __init__(self, ref_in, roles, metric, normalize) -> None:
        import refloss

        self.roles = roles
        self.arr = {r: np.asarray(ref_in[r], dtype=np.float64) for r in roles}
        self.pull_n = {}
        self.nrm = {}
        for r in roles:
            if normalize:
                self.nrm[r], self.pull_n[r] = refloss.vjp(refloss.l2_normalize, self.arr[r])
            else:
                self.nrm[r] = self.arr[r]
        self.metric = metric
        self.d, self.pulls = {}, {}
        self.cache: dict = {}
        self.sizes = [self.arr[r].size for r in roles]
        self.radius: dict = {}

    def weigh(self, u: str, v: str, i: int, c: float) -> None:
        if self.metric == "euclidean" and c != 0 and self.dist(u, v)[i] == 0:
            self.radius[(u, v, i)] = self.radius.get((u, v, i), 0.0) + abs(c)

    def balls(self, model: TieModel) -> None:
        for (u, v, i), c in self.radius.items():
            vecs = [np.zeros(sum(self.sizes))]
            for vec in _ball_vertices(self.arr[u].shape[1]):
                parts = {r: np.zeros_like(self.arr[r]) for r in self.roles}
                for r, sign in ((u, 1.0), (v, -1.0)):
                    g = np.zeros_like(self.arr[r])
                    g[i] = sign * c * vec
                    if r in self.pull_n:
                        g = np.asarray(self.pull_n[r](g)[0], dtype=np.float64)
                    parts[r] = parts[r] + g
                vecs.append(np.concatenate([parts[r].ravel() for r in self.roles]))
            model.groups.append(_ball_group(f"d({u} {i}, {v} {i}) = 0", vecs))

    def dist(self, u: str, v: str) -> np.ndarray:
        import refloss

        if (u, v) not in self.d:
            d, pull = refloss.vjp(refloss.paired_distances, self.nrm[u], self.nrm[v],
                                  metric=self.metric)
            self.d[(u, v)] = np.asarray(d, dtype=np.float64)
            self.pulls[(u, v)] = pull
        return self.d[(u, v)]

    def entry(self, u: str, v: str, i: int) -> np.ndarray:
        key = (u, v, i)
        if key not in self.cache:
            self.dist(u, v)
            g = np.zeros(self.d[(u, v)].shape)
            g[i] = 1.0
            gu, gv = (np.asarray(t, dtype=np.float64) for t in self.pulls[(u, v)](g))
            parts = {r: np.zeros_like(self.arr[r]) for r in self.roles}
            for r, gr in ((u, gu), (v, gv)):
                if r in self.pull_n:
                    gr = np.asarray(self.pull_n[r](gr)[0], dtype=np.float64)
                parts[r] = parts[r] + gr
            self.cache[key] = np.concatenate([parts[r].ravel() for r in self.roles])
        return self.cache[key]

    def vec(self, entries) -> np.ndarray:
        out = np.zeros(sum(self.sizes))
        for u, v, i, c in entries:
            if c != 0:
                out = out + c * self.entry(u, v, i)
        return out


def _triplet(ref_in, kw, cot, paths=False):
    o = _options(kw, {"margin": 1.0, "metric": "euclidean", "soft": False, "swap": False,
                      "normalize": False, "reduction": "mean"})
    roles = ["anchor", "positive", "negative"]
    pd = _Paired(ref_in, roles, o["metric"], o["normalize"])
    model = TieModel(roles=roles, shapes={r: pd.arr[r].shape for r in roles},
                     paths={} if paths else None)
    d_ap, d_an = pd.dist("anchor", "positive"), pd.dist("anchor", "negative")
    d_pn = pd.dist("positive", "negative") if o["swap"] else None
    zs, negs = [], []
    for i in range(d_ap.shape[0]):
        options = [("anchor", "negative")]
        if d_pn is not None and d_pn[i] < d_an[i]:
            options = [("positive", "negative")]
        elif d_pn is not None and _eq(d_pn[i], d_an[i]):
            options = [("anchor", "negative"), ("positive", "negative")]
        dn = pd.dist(*options[0])[i]
        zs.append(d_ap[i] - dn if o["soft"] else (d_ap[i] + o["margin"]) - dn)
        negs.append(options)
    terms = [_term(z, o["soft"]) for z in zs]
    count = len(zs) if o["reduction"] == "mean" else sum(t > 0 for t in terms)
    for i, (z, options) in enumerate(zip(zs, negs, strict=True)):
        slopes = _hinge_slopes(z, o["soft"])
        w = _weight(o["reduction"], cot, count, i)
        for u, v in [("anchor", "positive"), *options]:
            pd.weigh(u, v, i, w * max(slopes))
        if paths:
            model.add_path("positive", pd.vec([("anchor", "positive", i, w * slopes[0])]))
            model.add_path("negative", pd.vec([(*options[0], i, -w * slopes[0])]))
        if (len(options) == 1 and len(slopes) == 1) or slopes == [0.0]:
            continue
        s_ref = slopes[0]
        choices, vecs, ref = [], [], 0
        for s in slopes:
            for u, v in options:
                name = "d(anchor, negative)" if u == "anchor" else "d(positive, negative)"
                if s == s_ref and (u, v) == options[0]:
                    ref = len(choices)
                choices.append({"negative distance": name, "slope": s})
                vecs.append(pd.vec([("anchor", "positive", i, w * s), (u, v, i, -w * s)]))
        tied = {}
        if len(options) > 1:
            tied["negative distance"] = ["d(anchor, negative)", "d(positive, negative)"]
        if len(slopes) > 1:
            tied["slope"] = slopes
        model.groups.append(_Group(
            where=f"triplet {i}", choices=choices, vecs=np.array(vecs), ref=ref,
            names={"negative distance": "swapped negative distances",
                   "slope": "a hinge exactly at 0"}, tied=tied))
    pd.balls(model)
    return _mark_jumps(model, o["reduction"], count)


def _contrastive_slopes(d: float, same: bool, o: Mapping) -> tuple[list[float], float]:
    """(dl/dd options, the reference's) of one pair: a kink only for the
    linear hinge (power 1) exactly at its margin."""
    if same:
        h = d - o["pos_margin"]
        sign = 1.0
    else:
        h = o["margin"] - d
        sign = -1.0
    if o["power"] == 2:
        v = sign * 2.0 * max(h, 0.0)
        return [v], v
    if _eq(h, 0.0):
        own = sign * float(h > 0)
        return [own, sign - own], own
    v = sign * float(h > 0)
    return [v], v


_CONTRASTIVE = {"margin": 1.0, "pos_margin": 0.0, "power": 2, "metric": "euclidean",
                "normalize": False, "reduction": "mean", "scale": 1.0}


def _contrastive(ref_in, kw, cot, paths=False):
    o = _options(kw, _CONTRASTIVE)
    roles = ["a", "b"]
    pd = _Paired(ref_in, roles, o["metric"], o["normalize"])
    model = TieModel(roles=roles, shapes={r: pd.arr[r].shape for r in roles})
    d = pd.dist("a", "b")
    same = np.asarray(ref_in["same"], dtype=bool)
    terms = [_contrastive_term(float(di), bool(si), o) for di, si in zip(d, same,
                                                                          strict=True)]
    count = len(terms) if o["reduction"] == "mean" else sum(t > 0 for t in terms)
    for i in range(d.shape[0]):
        slopes, s_ref = _contrastive_slopes(float(d[i]), bool(same[i]), o)
        w = _weight(o["reduction"], cot, count, i) * o["scale"]
        pd.weigh("a", "b", i, w * max(abs(t) for t in slopes))
        if len(slopes) == 1:
            continue
        vecs = [pd.vec([("a", "b", i, w * s)]) for s in slopes]
        model.groups.append(_Group(
            where=f"pair {i}", choices=[{"slope": s} for s in slopes],
            vecs=np.array(vecs), ref=slopes.index(s_ref),
            names={"slope": "a hinge exactly at its margin"}, tied={"slope": slopes}))
    pd.balls(model)
    return _mark_jumps(model, o["reduction"], count)


def _contrastive_term(d: float, same: bool, o: Mapping) -> float:
    h = max(d - o["pos_margin"], 0.0) if same else max(o["margin"] - d, 0.0)
    return h * h if o["power"] == 2 else h


def _contrastive_all_pairs(ref_in, kw, cot, paths=False):
    o = _options(kw, _CONTRASTIVE)
    x, labels, model = _labeled_model(ref_in, paths)
    b = x.shape[0]
    if b == 0:
        return model
    emb = _Embed(x, o["metric"], o["normalize"])
    pairs = [(i, j) for i in range(b) for j in range(i + 1, b)]
    terms = [_contrastive_term(emb.d[i, j], bool(labels[i] == labels[j]), o)
             for i, j in pairs]
    count = len(pairs) if o["reduction"] == "mean" else sum(t > 0 for t in terms)
    for k, (i, j) in enumerate(pairs):
        slopes, s_ref = _contrastive_slopes(float(emb.d[i, j]), bool(labels[i] == labels[j]),
                                            o)
        w = _weight(o["reduction"], cot, count, k) * o["scale"]
        emb.weigh(i, j, w * max(abs(t) for t in slopes))
        if len(slopes) == 1:
            continue
        vecs = [emb.vec([(i, j, w * s)]) for s in slopes]
        model.groups.append(_Group(
            where=f"pair ({i}, {j})", choices=[{"slope": s} for s in slopes],
            vecs=np.array(vecs), ref=slopes.index(s_ref),
            names={"slope": "a hinge exactly at its margin"}, tied={"slope": slopes}))
    emb.balls(model)
    return _mark_jumps(model, o["reduction"], count)
