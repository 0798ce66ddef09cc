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


# ---------------------------------------------------------------------------
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
