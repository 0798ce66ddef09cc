"""Backend-aware assertions, finite differences and Hypothesis strategies.

Inputs are drawn as NumPy float64 (they shrink the same on every backend and
the finite differences run in NumPy) and moved with ``backend.asarray``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from array_api_compat import array_namespace
from array_api_compat import device as array_device
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

# ---------------------------------------------------------------------------
# conversion and assertions


def to_numpy(a: Any) -> np.ndarray:
    mod = type(a).__module__.split(".")[0]
    if mod == "torch":
        return a.detach().cpu().numpy()
    if mod == "array_api_strict":
        import array_api_strict as strict

        return np.asarray(a.to_device(strict.Device()))
    if mod == "cupy":
        return a.get()
    return np.asarray(a)


def tolerance(dtype_name: str) -> dict:
    """Float32 against a float64 reference: ≈ 4·sqrt(eps); float64: tight."""
    if dtype_name == "float64":
        return {"rtol": 1e-9, "atol": 1e-11}
    return {"rtol": 1.4e-3, "atol": 1e-5}


def assert_close(
    actual: Any,
    expected: Any,
    backend: Any,
    *,
    dtype: str | None = None,
    rtol: float = 1e-9,
    atol: float = 1e-11,
) -> None:
    """Namespace, device, dtype and shape of ``actual``, then its values."""
    xp = array_namespace(actual)
    assert xp is backend.xp, f"namespace {xp} is not {backend.xp}"
    assert array_device(actual) == backend.device, (
        f"device {array_device(actual)} is not {backend.device}"
    )
    if dtype is not None:
        assert actual.dtype == getattr(backend.xp, dtype), f"dtype {actual.dtype} is not {dtype}"
    got = to_numpy(actual)
    expected = to_numpy(expected) if hasattr(expected, "__array_namespace__") else expected
    expected = np.asarray(expected)
    assert got.shape == expected.shape, f"shape {got.shape} is not {expected.shape}"
    np.testing.assert_allclose(got.astype(np.float64), expected, rtol=rtol, atol=atol)


def nonzero_tol(max_d: float, margin: float, power: int = 1,
                eps: float = float(np.finfo(np.float64).eps)) -> float:
    """τ of "mean_nonzero", transcribed from docs/reductions.md: a term counts
    when it is > (16 ε (m + max d))^p (the hinge's rounding noise left out)."""
    return (16.0 * eps * (margin + max_d)) ** power


# ---------------------------------------------------------------------------
# finite differences (NumPy float64)


def directional_fd(f: Callable[..., float], args: list, index: int, v: np.ndarray,
                   h: float = 1e-6) -> float:
    """Central difference of scalar ``f`` along ``v`` in argument ``index``."""
    plus = list(args)
    minus = list(args)
    plus[index] = args[index] + h * v
    minus[index] = args[index] - h * v
    return (float(f(*plus)) - float(f(*minus))) / (2 * h)


def unit_directions(rng: np.random.Generator, shape: tuple, n: int = 3) -> list:
    out = []
    for _ in range(n):
        v = rng.normal(size=shape)
        out.append(v / max(np.linalg.norm(v), 1e-300))
    return out


# ---------------------------------------------------------------------------
# strategies

# subnormals excluded: XLA on CPU flushes them to zero, so JAX sees other inputs
finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False, allow_subnormal=False,
                  width=64)


@st.composite
def embeddings(draw, min_rows: int = 1, max_rows: int = 8, min_dim: int = 1,
               max_dim: int = 5, dim: int | None = None) -> np.ndarray:
    d = draw(st.integers(min_dim, max_dim)) if dim is None else dim
    n = draw(st.integers(min_rows, max_rows))
    return draw(hnp.arrays(np.float64, (n, d), elements=finite))


@st.composite
def hard_embeddings(draw, min_rows: int = 2, max_rows: int = 8, max_dim: int = 6) -> np.ndarray:
    """Batches built to stress the GEMM: exact duplicates, near-duplicates
    (relative gaps down to 1e-9) and a large common offset."""
    d = draw(st.integers(1, max_dim))
    n = draw(st.integers(min_rows, max_rows))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * draw(st.sampled_from([1e-3, 1.0, 1e3]))
    for i in range(1, n):
        kind = draw(st.sampled_from(["free", "dup", "near"]))
        j = draw(st.integers(0, i - 1))
        if kind == "dup":
            x[i] = x[j]
        elif kind == "near":
            gap = draw(st.sampled_from([1e-9, 1e-6, 1e-3]))
            x[i] = x[j] + gap * rng.normal(size=d) * (np.abs(x[j]).max() + 1e-300)
    offset = draw(st.sampled_from([0.0, 1.0, 1e4]))
    return x + offset * rng.normal(size=d)


@st.composite
def labeled_batch(draw, min_rows: int = 1, max_rows: int = 8, max_dim: int = 4,
                  max_classes: int = 4):
    x = draw(embeddings(min_rows=min_rows, max_rows=max_rows, max_dim=max_dim))
    c = draw(st.integers(1, max_classes))
    labels = np.asarray(draw(hnp.arrays(np.int64, (x.shape[0],),
                                        elements=st.integers(0, c - 1))))
    return x, labels, c


@st.composite
def continuous_batches(draw, min_rows: int = 1, max_rows: int = 8, max_dim: int = 4,
                       max_classes: int = 4):
    """``(x, labels)``: a labeled batch with continuous coordinates (Gaussian
    rows times a drawn scale), so no exact ties but the structural ones (D = 1
    cosine distances are 0 or 2 exactly); what the mined losses' brute-force
    tests draw."""
    b = draw(st.integers(min_rows, max_rows))
    dim = draw(st.integers(1, max_dim))
    classes = draw(st.integers(1, max_classes))
    labels = np.asarray(draw(hnp.arrays(np.int64, (b,), elements=st.integers(0, classes - 1))))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng.normal(size=(b, dim)) * draw(st.sampled_from([0.3, 1.0, 3.0])), labels


# ---------------------------------------------------------------------------
# brute-force oracles for the loss variants (loops over pairs and triplets,
# NumPy float64, transcribed from the definitions; they share no code with
# refloss). ``o_*`` return a value and the gradient the definition implies.


def o_dist(u: np.ndarray, v: np.ndarray, metric: str) -> float:
    diff = u - v
    sq = float(diff @ diff)
    if metric == "euclidean":
        return float(np.sqrt(sq))
    if metric == "sqeuclidean":
        return sq
    nu, nv = float(np.linalg.norm(u)), float(np.linalg.norm(v))
    if nu == 0.0 or nv == 0.0:  # a zero row has no direction: distance 1
        return 1.0
    w = u / nu - v / nv
    return 0.5 * float(w @ w)


def o_dist_grad(u: np.ndarray, v: np.ndarray, metric: str) -> tuple:
    """(∂d/∂u, ∂d/∂v); 0 at d = 0 for euclidean and for zero rows in cosine."""
    diff = u - v
    if metric == "euclidean":
        d = float(np.sqrt(float(diff @ diff)))
        if d == 0.0:
            return np.zeros_like(u), np.zeros_like(v)
        return diff / d, -diff / d
    if metric == "sqeuclidean":
        return 2.0 * diff, -2.0 * diff
    nu, nv = float(np.linalg.norm(u)), float(np.linalg.norm(v))
    if nu == 0.0 or nv == 0.0:
        return np.zeros_like(u), np.zeros_like(v)
    uh, vh = u / nu, v / nv
    c = float(uh @ vh)
    return -(vh - c * uh) / nu, -(uh - c * vh) / nv


def o_normalize(x: np.ndarray) -> np.ndarray:
    out = np.zeros_like(x)
    for i, row in enumerate(x):
        n = float(np.linalg.norm(row))
        if n > 0:
            out[i] = row / n
    return out


def o_normalize_vjp(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    out = np.zeros_like(x)
    for i, row in enumerate(x):
        n = float(np.linalg.norm(row))
        if n > 0:
            h = row / n
            out[i] = (g[i] - h * float(h @ g[i])) / n
    return out


def o_sets(labels: np.ndarray, a: int) -> tuple[list, list]:
    """(positives p != a with y_p = y_a, negatives n with y_n != y_a) of anchor a."""
    pos = [p for p in range(len(labels)) if p != a and labels[p] == labels[a]]
    neg = [n for n in range(len(labels)) if labels[n] != labels[a]]
    return pos, neg


def o_valid_triplets(labels: np.ndarray) -> list:
    """Every valid triplet (a, p, n): p a positive and n a negative of a."""
    out = []
    for a in range(len(labels)):
        pos, neg = o_sets(labels, a)
        out += [(a, p, n) for p in pos for n in neg]
    return out


def o_matrix(x: np.ndarray, metric: str) -> np.ndarray:
    b = x.shape[0]
    return np.array([[o_dist(x[i], x[j], metric) for j in range(b)] for i in range(b)],
                    dtype=np.float64).reshape(b, b)


def o_reduce(terms: np.ndarray, flags: list, reduction: str) -> tuple:
    """``(value, weight)``: the reduced value and the upstream weight of every
    counted item (None for "none"); ``flags`` holds one bool per counted item
    (a triplet or a pair): whether its loss is > 0."""
    total = float(np.sum(terms))
    n, nz = len(flags), int(np.sum(flags))
    if reduction == "none":
        return terms, None
    if reduction == "sum":
        return total, 1.0
    if reduction == "mean":
        return (total / n, 1.0 / n) if n else (0.0, 0.0)
    return (total / nz, 1.0 / nz) if nz else (0.0, 0.0)


def o_chain(x: np.ndarray, xe: np.ndarray, gd: np.ndarray, metric: str,
            normalize: bool) -> np.ndarray:
    """∂L/∂x from ∂L/∂d_ij (``gd``, B×B), pair by pair; the diagonal is a
    constant d_ii = 0 and carries nothing."""
    ge = np.zeros_like(x)
    for i in range(x.shape[0]):
        for j in range(x.shape[0]):
            if i != j and gd[i, j] != 0.0:
                gu, gv = o_dist_grad(xe[i], xe[j], metric)
                ge[i] += gd[i, j] * gu
                ge[j] += gd[i, j] * gv
    return o_normalize_vjp(x, ge) if normalize else ge


def o_triplet_loss(x: np.ndarray, triplets: list, out_shape: tuple, *, margin: float,
                   metric: str, soft: bool, normalize: bool, reduction: str,
                   g: Any = None, tau: float = 0.0, dm: np.ndarray | None = None) -> tuple:
    """Value and gradient of a triplet loss given its triplets
    ``[(slot, a, p, n)]`` (slot: where the term lands for "none", summed).

    ``p == a`` stands for the anchor as its own positive: d_ap = 0 exactly,
    with no gradient. Hinge :math:`[d_ap - d_an + m]_+` (derivative 0 at 0);
    soft: softplus(d_ap - d_an). "mean" counts triplets, "mean_nonzero" the
    triplets whose loss is > ``tau`` (0, or :func:`nonzero_tol`). ``dm``: the
    distance matrix of the (normalised) rows, if the caller has it already.
    """
    b = x.shape[0]
    xe = o_normalize(x) if normalize else x
    dm = o_matrix(xe, metric) if dm is None else dm
    terms = np.zeros(out_shape)
    flags, derivs = [], []
    for slot, a, p, n in triplets:
        d_ap = 0.0 if p == a else dm[a, p]
        d_an = dm[a, n]
        if soft:
            z = d_ap - d_an
            val = float(np.logaddexp(0.0, z))
            der = 1.0 / (1.0 + np.exp(-z)) if z >= 0 else np.exp(z) / (1.0 + np.exp(z))
        else:
            z = (d_ap + margin) - d_an
            val, der = max(z, 0.0), 1.0 if z > 0 else 0.0
        terms[slot] += val
        flags.append(val > tau)
        derivs.append(der)
    value, weight = o_reduce(terms, flags, reduction)
    gd = np.zeros((b, b))
    for (slot, a, p, n), der in zip(triplets, derivs):
        w = (g[slot] if reduction == "none" else weight) * der
        gd[a, p] += w
        gd[a, n] -= w
    return value, o_chain(x, xe, gd, metric, normalize)


def o_contrastive(a: np.ndarray, b: np.ndarray, same: np.ndarray, *, margin: float = 1.0,
                  pos_margin: float = 0.0, power: int = 2, metric: str = "euclidean",
                  normalize: bool = False, reduction: str = "mean", scale: float = 1.0,
                  g: Any = None) -> tuple:
    """Paired contrastive loss ``scale * (s [d - m+]_+^p + (1 - s) [m - d]_+^p)``:
    value and (∂L/∂a, ∂L/∂b)."""
    ae, be = (o_normalize(a), o_normalize(b)) if normalize else (a, b)
    terms, flags, derivs = [], [], []
    for i in range(a.shape[0]):
        d = o_dist(ae[i], be[i], metric)
        h, sign = (d - pos_margin, 1.0) if same[i] else (margin - d, -1.0)
        h = max(h, 0.0)
        terms.append(scale * h**power)
        flags.append(scale * h**power > 0)
        derivs.append(sign * scale * (2.0 * h if power == 2 else float(h > 0)))
    value, weight = o_reduce(np.array(terms, dtype=np.float64), flags, reduction)
    ga, gb = np.zeros_like(a), np.zeros_like(b)
    for i, der in enumerate(derivs):
        w = (g[i] if reduction == "none" else weight) * der
        gu, gv = o_dist_grad(ae[i], be[i], metric)
        ga[i] += w * gu
        gb[i] += w * gv
    if normalize:
        ga, gb = o_normalize_vjp(a, ga), o_normalize_vjp(b, gb)
    return value, (ga, gb)


def kink_gap(x: np.ndarray, candidates: list, *, margin: float, metric: str, soft: bool,
             normalize: bool) -> float:
    """How far the input is from every kink of a mined loss: d = 0 between
    distinct rows, ties among an anchor's distances (a max/min could switch),
    hinge arguments of the ``candidates`` triplets ``(a, p, n)`` near 0, and
    (cosine, normalize) near-zero norms. Finite differences need it > h."""
    xe = o_normalize(x) if normalize else x
    dm = o_matrix(xe, metric)
    gaps = [np.inf]
    for i in range(x.shape[0]):
        others = np.sort(np.delete(dm[i], i))
        if others.size:
            gaps.append(others[0])
        if others.size > 1:
            gaps.append(np.diff(others).min())
    if not soft:
        for a, p, n in candidates:
            d_ap = 0.0 if p == a else dm[a, p]
            gaps.append(abs((d_ap + margin) - dm[a, n]))
    if (metric == "cosine" or normalize) and x.shape[0]:
        gaps.append(np.linalg.norm(x, axis=1).min())
    return float(min(gaps))
# brute-force oracles for the soak (tests/test_soak.py)
#
# Loops over rows, pairs and triplets in NumPy float64, transcribed from the
# definitions in DESIGN.md ("Semantics"); they share no code with refloss.
# Norms scale each row by its largest coordinate first, so every finite row
# (1e-300 or 1e300) has its true norm. Besides the value, each loss oracle
# returns how far its input lies from the nearest kink (distance 0, a zero
# row, a hinge at 0, a tie in a max / min, the semi-hard boundary), so a
# finite-difference test can keep away from them.


def oracle_norm(u: np.ndarray) -> float:
    """‖u‖ computed as peak·‖u / peak‖ (peak = max |u_k|): no under/overflow."""
    u = np.asarray(u, dtype=np.float64)
    peak = float(np.max(np.abs(u))) if u.size else 0.0
    if peak == 0.0:
        return 0.0
    s = u / peak
    return peak * math.sqrt(float(np.sum(s * s)))


def oracle_unit(u: np.ndarray) -> np.ndarray:
    """u / ‖u‖; a zero row stays zero."""
    u = np.asarray(u, dtype=np.float64)
    peak = float(np.max(np.abs(u))) if u.size else 0.0
    if peak == 0.0:
        return np.zeros_like(u)
    s = u / peak
    return s / math.sqrt(float(np.sum(s * s)))


def oracle_distance(u: np.ndarray, v: np.ndarray, metric: str) -> float:
    """d(u, v) from u − v; cosine is ½‖û − v̂‖², and 1 when either row is zero."""
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    if metric == "cosine":
        if not np.any(u) or not np.any(v):
            return 1.0
        w = oracle_unit(u) - oracle_unit(v)
        return 0.5 * float(np.sum(w * w))
    n = oracle_norm(u - v)
    return n if metric == "euclidean" else n * n


def oracle_pairwise(x: np.ndarray, y: np.ndarray | None, metric: str) -> np.ndarray:
    y = x if y is None else y
    out = np.zeros((x.shape[0], y.shape[0]))
    for i in range(x.shape[0]):
        for j in range(y.shape[0]):
            out[i, j] = oracle_distance(x[i], y[j], metric)
    return out


def oracle_mine(dm: np.ndarray, labels: np.ndarray, kind: str) -> list:
    """Mined (a, p, n) triplets; ties go to the lowest index (strict comparisons).

    kind "all": every valid triplet; "hard": per anchor the farthest positive
    and the nearest negative; "semihard": per positive pair the nearest
    negative strictly farther than the positive, else the farthest negative.
    """
    b = len(labels)
    out = []
    for a in range(b):
        pos = [p for p in range(b) if p != a and labels[p] == labels[a]]
        neg = [n for n in range(b) if labels[n] != labels[a]]
        if not pos or not neg:
            continue
        if kind == "all":
            out += [(a, p, n) for p in pos for n in neg]
        elif kind == "hard":
            p_star, n_star = pos[0], neg[0]
            for p in pos:
                if dm[a, p] > dm[a, p_star]:
                    p_star = p
            for n in neg:
                if dm[a, n] < dm[a, n_star]:
                    n_star = n
            out.append((a, p_star, n_star))
        else:
            for p in pos:
                n_star = None
                for n in neg:
                    if dm[a, n] > dm[a, p] and (n_star is None or dm[a, n] < dm[a, n_star]):
                        n_star = n
                if n_star is None:
                    n_star = neg[0]
                    for n in neg:
                        if dm[a, n] > dm[a, n_star]:
                            n_star = n
                out.append((a, p, n_star))
    return out


def _oracle_softplus(z: float) -> float:
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


def _oracle_reduce(terms: np.ndarray, n_terms: int, n_positive: int, reduction: str):
    if reduction == "none":
        return terms
    total = float(np.sum(terms))
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / n_terms if n_terms else 0.0
    return total / n_positive if n_positive else 0.0


def _oracle_row_gap(dm: np.ndarray, a: int) -> float:
    """Smallest gap between two entries of row a (the diagonal left out)."""
    row = np.sort(np.delete(dm[a], a))
    return float(np.min(np.diff(row))) if row.size > 1 else math.inf


def oracle_loss(name: str, arrays: list, aux: Any, opts: dict) -> tuple:
    """``(value, kink)`` of a public loss or distance by brute force.

    ``arrays`` are the floating arguments (NumPy), ``aux`` the labels or
    ``same`` flags (None for distances, the labels for center_loss), ``opts``
    the keyword options. ``kink`` is the distance to the nearest kink in
    units where 1e-4 is "safe for h = 1e-6 central differences": hinge and
    tie gaps as they are, distances to 0 and row norms divided by 100 (the
    curvature of ‖·‖ grows like 1/d there).
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    metric = opts.get("metric", "euclidean")
    reduction = opts.get("reduction", "mean")
    normalize = opts.get("normalize", False)
    kinks = [math.inf]

    def prep(x):
        if metric == "cosine" or normalize:
            kinks.extend(oracle_norm(r) / 100 for r in x)
        return np.array([oracle_unit(r) for r in x]).reshape(x.shape) if normalize else x

    def dist(u, v):
        d = oracle_distance(u, v, metric)
        if metric == "euclidean":
            kinks.append(d / 100)
        return d

    if name == "pairwise_distances":
        x = prep(arrays[0])
        y = prep(arrays[1]) if len(arrays) > 1 else None
        dm = oracle_pairwise(x, y, metric)
        if metric == "euclidean":
            off = dm if y is not None else dm[~np.eye(len(x), dtype=bool)]
            kinks.extend(off.ravel() / 100)
        return dm, min(kinks)
    if name == "paired_distances":
        a, b = prep(arrays[0]), prep(arrays[1])
        return np.array([dist(u, v) for u, v in zip(a, b)]).reshape(len(a)), min(kinks)
    if name == "center_loss":
        x, centers = arrays
        norms = [oracle_norm(x[i] - centers[aux[i]]) for i in range(len(x))]
        terms = np.array([0.5 * n * n for n in norms]).reshape(len(x))
        if reduction == "mean":  # the Caffe layer: divide by the batch size
            return (float(np.sum(terms)) / len(x) if len(x) else 0.0), min(kinks)
        return _oracle_reduce(terms, len(x), 0, reduction), min(kinks)

    margin = opts.get("margin", 1.0)
    if name in ("contrastive_loss", "contrastive_loss_all_pairs"):
        pos_margin, power = opts.get("pos_margin", 0.0), opts.get("power", 2)
        if name == "contrastive_loss":
            a, b = prep(arrays[0]), prep(arrays[1])
            pairs = [(a[i], b[i], bool(aux[i])) for i in range(len(a))]
        else:
            x = prep(arrays[0])
            pairs = [(x[i], x[j], bool(aux[i] == aux[j]))
                     for i in range(len(x)) for j in range(i + 1, len(x))]
        terms = []
        for u, v, same in pairs:
            d = dist(u, v)
            arg = d - pos_margin if same else margin - d
            kinks.append(abs(arg))
            terms.append(max(arg, 0.0) ** power)
        terms = np.array(terms, dtype=np.float64).reshape(len(pairs))
        return _oracle_reduce(terms, len(terms), int(np.sum(terms > 0)), reduction), min(kinks)

    soft = opts.get("soft", False)

    def term(d_ap, d_an):
        if soft:
            return _oracle_softplus(d_ap - d_an)
        kinks.append(abs(d_ap - d_an + margin))
        return max(d_ap - d_an + margin, 0.0)

    if name == "triplet_margin_loss":
        a, p, n = (prep(t) for t in arrays)
        terms = []
        for i in range(len(a)):
            d_ap, d_an = dist(a[i], p[i]), dist(a[i], n[i])
            if opts.get("swap", False):
                d_pn = dist(p[i], n[i])
                kinks.append(abs(d_an - d_pn))
                d_an = min(d_an, d_pn)
            terms.append(term(d_ap, d_an))
        terms = np.array(terms, dtype=np.float64).reshape(len(a))
        return _oracle_reduce(terms, len(terms), int(np.sum(terms > 0)), reduction), min(kinks)

    x = prep(arrays[0])
    labels = np.asarray(aux)
    b = len(x)
    dm = oracle_pairwise(x, None, metric)
    if metric == "euclidean":
        kinks.extend(dm[~np.eye(b, dtype=bool)].ravel() / 100)
    kind = {"batch_all_triplet_loss": "all", "batch_hard_triplet_loss": "hard",
            "semihard_triplet_loss": "semihard"}[name]
    triplets = oracle_mine(dm, labels, kind)
    if kind != "all":
        kinks.extend(_oracle_row_gap(dm, a) for a in {t[0] for t in triplets})
    terms = np.zeros((b,) if kind == "hard" else (b, b))
    values = []
    for a, p, n in triplets:
        v = term(dm[a, p], dm[a, n])
        values.append(v)
        terms[a if kind == "hard" else (a, p)] += v
    n_pos = sum(v > 0 for v in values)
    return _oracle_reduce(terms, len(triplets), n_pos, reduction), min(kinks)


# ---------------------------------------------------------------------------
# brute-force oracles for anchor blocks (``anchor_rows=(start, stop)``):
# the anchors start..stop-1 against the whole batch, the "mean" divisor being
# the number of terms of the whole batch (docs/triplet.md, "Anchor blocks")


def o_block_triplets(dm: np.ndarray, labels: np.ndarray, kind: str, start: int, stop: int,
                     *, anchor_as_positive: bool = False, pairs: str = "ordered") -> list:
    """``[(slot, a, p, n)]`` of the anchors a in start..stop-1 (slot relative to
    the block: a - start for batch-hard, (a - start, p) otherwise), mined
    over the whole batch with ties to the lowest index; ``p == a`` is the
    anchor as its own positive (batch-hard, ``anchor_as_positive``)."""
    b = len(labels)
    out = []
    for a in range(start, stop):
        pos = [p for p in range(b) if p != a and labels[p] == labels[a]
               and (pairs == "ordered" or p > a)]
        neg = [n for n in range(b) if labels[n] != labels[a]]
        if kind == "hard" and anchor_as_positive:
            pos = sorted([*pos, a])
        if not pos or not neg:
            continue

        def d(p, a=a):
            return 0.0 if p == a else dm[a, p]

        if kind == "all":
            out += [((a - start, p), a, p, n) for p in pos for n in neg]
        elif kind == "hard":
            p_star = max(pos, key=lambda p: (d(p), -p))
            n_star = min(neg, key=lambda n: (dm[a, n], n))
            out.append((a - start, a, p_star, n_star))
        else:
            for p in pos:
                above = [n for n in neg if dm[a, n] > dm[a, p]]
                if above:
                    n_star = min(above, key=lambda n: (dm[a, n], n))
                else:
                    n_star = max(neg, key=lambda n: (dm[a, n], -n))
                out.append(((a - start, p), a, p, n_star))
    return out


def o_batch_count(labels: np.ndarray, kind: str, *, anchor_as_positive: bool = False,
                  pairs: str = "ordered") -> int:
    """How many terms the whole batch has (counted by enumeration)."""
    b = len(labels)
    n = 0
    for a in range(b):
        pos = [p for p in range(b) if p != a and labels[p] == labels[a]
               and (pairs == "ordered" or p > a)]
        neg = [m for m in range(b) if labels[m] != labels[a]]
        if kind == "hard":
            n += bool((pos or anchor_as_positive) and neg)
        elif kind == "semihard":
            n += len(pos) if neg else 0
        elif kind == "all":
            n += len(pos) * len(neg)
        else:  # contrastive: the unordered pairs a < j
            n += b - 1 - a
    return n


def o_block_loss(x: np.ndarray, labels: np.ndarray, kind: str, start: int, stop: int, *,
                 reduction: str, g: Any = None, **opts: Any) -> tuple:
    """Value and ∂/∂x of an anchor block by brute force: the block's terms
    (``"none"``: [b] for "hard", [b, B] for "all"/"semihard", the block's
    pairs in row-major order for "contrastive"), their sum, or that sum
    divided by the number of terms of the whole batch (``"mean"``)."""
    b = x.shape[0]
    count = o_batch_count(labels, kind, anchor_as_positive=opts.get("anchor_as_positive", False),
                          pairs=opts.get("pairs", "ordered"))
    scale = 1.0 if reduction != "mean" else (1.0 / count if count else 0.0)
    metric, normalize = opts.get("metric", "euclidean"), opts.get("normalize", False)
    if kind == "contrastive":
        pairs = [(i, j) for i in range(start, stop) for j in range(i + 1, b)]
        rows = np.array([i for i, _ in pairs], dtype=int)
        cols = np.array([j for _, j in pairs], dtype=int)
        same = labels[rows] == labels[cols] if pairs else np.zeros(0, dtype=bool)
        kw = {k: v for k, v in opts.items() if k in ("margin", "pos_margin", "power", "scale")}
        shape = (len(pairs), x.shape[1])
        up = g if reduction == "none" else np.full(len(pairs), scale)
        terms, (ga, gb) = o_contrastive(x[rows].reshape(shape), x[cols].reshape(shape), same,
                                        metric=metric, normalize=normalize, reduction="none",
                                        g=up, **kw)
        grad = np.zeros_like(x)
        np.add.at(grad, rows, ga)
        np.add.at(grad, cols, gb)
        value = terms if reduction == "none" else scale * float(np.sum(terms))
        return value, grad
    xe = o_normalize(x) if normalize else x
    dm = o_matrix(xe, metric)
    triplets = o_block_triplets(dm, labels, kind, start, stop,
                                anchor_as_positive=opts.get("anchor_as_positive", False),
                                pairs=opts.get("pairs", "ordered"))
    shape = (stop - start,) if kind == "hard" else (stop - start, b)
    kw = {"margin": opts.get("margin", 1.0), "metric": metric,
          "soft": opts.get("soft", False), "normalize": normalize, "dm": dm}
    if reduction == "none":
        return o_triplet_loss(x, triplets, shape, reduction="none", g=g, **kw)
    total, grad = o_triplet_loss(x, triplets, shape, reduction="sum", **kw)
    return scale * total, scale * grad


# ---------------------------------------------------------------------------
# the CLI in process


def cli_run(workdir, args, capsys, monkeypatch) -> tuple:
    """``(status, out, err)`` of ``refloss crosscheck ARGS`` run in process
    (``cli.main``, what the script calls) from ``workdir``, with ``sys.path``
    restored afterwards."""
    import sys

    from refloss import cli

    monkeypatch.chdir(workdir)
    monkeypatch.setattr(sys, "path", list(sys.path))
    status = cli.main(["crosscheck", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err
