r"""Hypothesis strategies for metric-learning inputs, for reuse in any test suite.

Each strategy draws NumPy arrays — embeddings, integer labels, boolean
``same`` flags — that shrink well (rows are list elements, coordinates shrink
towards small integers) and that a test moves to its own framework
(``torch.from_numpy``, ``jnp.asarray``, ``tf.constant``)::

    from hypothesis import given
    from refloss.testing import strategies as rst

    @given(rst.labeled_batches(max_size=6, dtype="float32", ties=False))
    def test_my_batch_hard(batch):
        x, labels = batch
        ...

Coordinates lie on the dyadic grid :math:`k/1024`, :math:`|k/1024| \le`
``scale``, so float32 and float64 hold exactly the same values (a float32
test compares against a float64 reference on identical inputs) and no value
is tiny-but-nonzero (no subnormals, no ``1e-300`` that a normalisation would
blow up).

The two regimes that matter for loss tests:

``ties=True`` (default)
    About half of the batches use lattice coordinates (integers in [-2, 2]),
    so equal distances, hinges exactly at 0 (integer margins) and points at
    distance exactly 0 are common. These are the inputs where conventions
    decide the answer: the lowest index wins a tie, a semi-hard negative
    must be *strictly* farther than the positive, the Euclidean gradient at
    d = 0 is 0. Use them in float64, where every implementation computes
    such distances exactly.

``ties=False``
    Distinct rows are kept at least ``min_gap`` apart, and distinct pairwise
    Euclidean distances of distinct rows differ by at least ``min_gap`` (and,
    with ``margin``, also :math:`|d_i - d_j + m| \ge` ``min_gap``), so no
    rounding can reorder two distances or flip a hinge. Use it for float32
    and for finite differences. Exact duplicates (``duplicates=True``) are
    still allowed: their distances are exactly 0 and their ties exact in every
    dtype. Gaps are measured on the raw embeddings with the Euclidean metric.

Every strategy takes ``dtype`` ("float64" or "float32"); labels are int64,
``same`` flags bool.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

__all__ = [
    "CenterBatch",
    "LabeledBatch",
    "Pairs",
    "Triplets",
    "center_batches",
    "embeddings",
    "labeled_batches",
    "margins",
    "pairs",
    "triplets",
]

DTYPES = ("float64", "float32")
# coordinates are multiples of 1/GRID: exact in float32 for |v| <= 2**24 / GRID
GRID = 1024
LATTICE = 2


class LabeledBatch(NamedTuple):
    """A labeled batch: ``x`` ``[B, D]`` floating, ``labels`` ``[B]`` int64."""

    x: np.ndarray
    labels: np.ndarray


class CenterBatch(NamedTuple):
    """A labeled batch with class centers ``[C, D]`` (C > max label)."""

    x: np.ndarray
    labels: np.ndarray
    centers: np.ndarray


class Triplets(NamedTuple):
    """Explicit triplets: three ``[N, D]`` arrays of one dtype."""

    anchor: np.ndarray
    positive: np.ndarray
    negative: np.ndarray


class Pairs(NamedTuple):
    """Explicit pairs: ``a``, ``b`` ``[N, D]`` and ``same`` ``[N]`` bool."""

    a: np.ndarray
    b: np.ndarray
    same: np.ndarray


# --------------------------------------------------------------------------
# argument checks (the strategies are public: bad options fail at once)


def _check_dtype(dtype: Any) -> np.dtype:
    if dtype not in DTYPES:
        raise ValueError(f"dtype: expected 'float64' or 'float32', got {dtype!r}")
    return np.dtype(dtype)


def _check_range(lo_name: str, lo: Any, hi_name: str, hi: Any, minimum: int) -> None:
    for name, v in ((lo_name, lo), (hi_name, hi)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name}: expected an integer, got {type(v).__name__}")
        if v < minimum:
            raise ValueError(f"{name}: expected an integer >= {minimum}, got {v}")
    if lo > hi:
        raise ValueError(f"{hi_name}: expected an integer >= {lo_name} ({lo}), got {hi}")


def _check_positive(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name}: expected a real number, got {type(v).__name__}")
    v = float(v)
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"{name}: expected a finite number > 0, got {v!r}")
    return v


def _check_margin(margin: Any) -> float | None:
    if margin is None:
        return None
    if isinstance(margin, bool) or not isinstance(
        margin, (int, float, np.floating, np.integer)
    ):
        raise TypeError(f"margin: expected a real number or None, got {type(margin).__name__}")
    margin = float(margin)
    if not (np.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin: expected a finite number >= 0 or None, got {margin!r}")
    return margin


def _check_flag(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"{name}: expected True or False, got {type(v).__name__}")
    return v


# --------------------------------------------------------------------------
# coordinates and gap checks


def _grid_value(scale: float) -> st.SearchStrategy[float]:
    # floats shrink towards small integers; rounding keeps them on the grid
    return st.floats(-scale, scale, allow_nan=False, allow_infinity=False).map(
        lambda v: round(v * GRID) / GRID
    )


def _coordinates(lattice: bool, scale: float) -> st.SearchStrategy[float]:
    if lattice:
        return st.integers(-LATTICE, LATTICE).map(float)
    return _grid_value(scale)


def _style(ties: bool) -> st.SearchStrategy[bool]:
    """Whether a batch uses lattice coordinates (only when ties are wanted)."""
    return st.booleans() if ties else st.just(False)


def _gaps_ok(distances: np.ndarray, gap: float, margin: float | None,
             zero_ok: np.ndarray | None = None) -> bool:
    """Distances away from 0 (unless ``zero_ok``), pairwise apart, and apart
    from the hinge kinks d_i - d_j + m = 0."""
    d = np.asarray(distances, dtype=np.float64).ravel()
    if d.size == 0:
        return True
    zero = d == 0 if zero_ok is None else np.asarray(zero_ok).ravel()
    live = d[~zero]
    if np.any(live < gap):
        return False
    if live.size > 1:
        diff = live[:, None] - live[None, :]
        off = ~np.eye(live.size, dtype=bool)
        if np.any(np.abs(diff[off]) < gap):
            return False
        if margin is not None and margin > 0 and np.any(np.abs(diff[off] + margin) < gap):
            return False
    if margin is not None and margin > 0 and np.any(np.abs(live - margin) < gap):
        return False
    return True


def _unique_rows(x: np.ndarray) -> np.ndarray:
    if x.shape[0] == 0:
        return x
    return np.unique(x, axis=0)


def _batch_gaps_ok(x: np.ndarray, gap: float, margin: float | None) -> bool:
    u = _unique_rows(x)
    if u.shape[0] < 2:
        return True
    diff = u[:, None, :] - u[None, :, :]
    d = np.sqrt(np.sum(diff * diff, axis=-1))
    iu = np.triu_indices(u.shape[0], 1)
    return _gaps_ok(d[iu], gap, margin, zero_ok=np.zeros(iu[0].size, dtype=bool))


@st.composite
def _rows(draw, n_min: int, n_max: int, dim: int, lattice: bool, scale: float,
          duplicates: bool, labels: st.SearchStrategy[int] | None = None):
    """``[n, dim]`` rows (and, with ``labels``, one label per row, drawn with
    its row so that shrinking deletes both together).

    With ``duplicates`` a row may be one of two prototype vectors drawn
    first, so exact copies survive the deletion of other rows; without, all
    rows are distinct.
    """
    coord = _coordinates(lattice, scale)
    vec = st.lists(coord, min_size=dim, max_size=dim)
    tag = st.just(0) if labels is None else labels
    if duplicates:
        pool = draw(st.lists(vec, min_size=2, max_size=2))
        row = st.tuples(tag, st.one_of(vec, st.sampled_from([0, 1])))
        raw = draw(st.lists(row, min_size=n_min, max_size=n_max))
        coords = [pool[r] if isinstance(r, int) else r for _, r in raw]
    else:
        row = st.tuples(tag, vec)
        raw = draw(st.lists(row, min_size=n_min, max_size=n_max,
                            unique_by=lambda r: tuple(r[1])))
        coords = [r for _, r in raw]
    x = np.asarray(coords, dtype=np.float64).reshape(len(raw), dim)
    if labels is None:
        return x
    return x, np.asarray([t for t, _ in raw], dtype=np.int64)


def _draw_dim(draw, min_dim: int, max_dim: int, x: np.ndarray) -> np.ndarray:
    """Keep the first ``dim`` columns; the dimension is drawn after the rows so
    that it shrinks without disturbing them."""
    dim = draw(st.integers(min_dim, max_dim))
    return np.ascontiguousarray(x[:, :dim])


# --------------------------------------------------------------------------
# public strategies


def margins(*, min_value: float = 0.0, max_value: float = 2.0) -> st.SearchStrategy[float]:
    """Margins in ``[min_value, max_value]``: the common defaults (0.05, 0.1,
    0.2, 0.5, 1.0 — PML, FaceNet, omoindrot, torch/TFA) where they fit, 0
    when allowed, and grid values in between.

    Example::

        @given(rst.labeled_batches(), rst.margins(max_value=1.0))
        def test_hinge(batch, margin): ...
    """
    for name, v in (("min_value", min_value), ("max_value", max_value)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise TypeError(f"{name}: expected a finite real number, got {v!r}")
    if min_value < 0:
        raise ValueError(f"min_value: expected a number >= 0, got {min_value!r}")
    if max_value < min_value:
        raise ValueError(f"max_value: expected a number >= min_value ({min_value}), "
                         f"got {max_value!r}")
    common = [m for m in (0.0, 0.05, 0.1, 0.2, 0.5, 1.0) if min_value <= m <= max_value]
    grid = st.floats(min_value, max_value, allow_nan=False).map(
        lambda v: min(max(round(v * GRID) / GRID, min_value), max_value)
    )
    return st.one_of(st.sampled_from(common), grid) if common else grid


def embeddings(
    *,
    min_rows: int = 1,
    max_rows: int = 8,
    min_dim: int = 1,
    max_dim: int = 4,
    dtype: str = "float64",
    duplicates: bool = True,
    ties: bool = True,
    min_gap: float = 1e-2,
    scale: float = 10.0,
) -> st.SearchStrategy[np.ndarray]:
    """An ``[n, d]`` array of embeddings (rows in ``[min_rows, max_rows]``).

    ``duplicates``: rows may be exact copies of earlier rows (distance 0);
    False makes every row distinct. ``ties``: lattice batches with exact
    distance ties are drawn (see the module docstring); ``ties=False`` keeps
    distinct rows and distinct distances ``min_gap`` apart. ``scale`` bounds
    the coordinates.
    """
    _check_range("min_rows", min_rows, "max_rows", max_rows, 0)
    _check_range("min_dim", min_dim, "max_dim", max_dim, 1)
    npdtype = _check_dtype(dtype)
    _check_flag("duplicates", duplicates)
    _check_flag("ties", ties)
    gap = _check_positive("min_gap", min_gap)
    scale = _check_positive("scale", scale)

    @st.composite
    def draw_embeddings(draw) -> np.ndarray:
        lattice = draw(_style(ties))
        x = draw(_rows(min_rows, max_rows, max_dim, lattice, scale, duplicates))
        x = _draw_dim(draw, min_dim, max_dim, x)
        if not duplicates:
            assume(_unique_rows(x).shape[0] == x.shape[0])
        if not ties:
            assume(_batch_gaps_ok(x, gap, None))
        return x.astype(npdtype)

    return draw_embeddings()


def labeled_batches(
    *,
    min_size: int = 1,
    max_size: int = 8,
    min_dim: int = 1,
    max_dim: int = 4,
    min_classes: int = 1,
    max_classes: int = 4,
    samples_per_class: int | tuple[int, int] | None = None,
    dtype: str = "float64",
    duplicates: bool = True,
    ties: bool = True,
    singletons: bool = True,
    single_class: bool = True,
    margin: float | None = None,
    min_gap: float = 1e-2,
    scale: float = 10.0,
    balanced: bool = False,
    min_per_class: int = 1,
) -> st.SearchStrategy[LabeledBatch]:
    """A labeled batch ``(x [B, D], labels [B] int64)``.

    Args:
        min_size, max_size: the batch size B (without ``samples_per_class``).
        min_dim, max_dim: the embedding dimension D.
        min_classes, max_classes: the number of distinct labels in the batch
            (labels are drawn from ``range(max_classes)``).
        samples_per_class: ``K`` or ``(k_min, k_max)``: every class present
            has that many samples — a P×K batch with P in
            ``[min_classes, max_classes]``, so B = P·K. ``None``: free.
        dtype: "float64" or "float32".
        duplicates: rows may be exact copies of earlier rows; False makes
            every row distinct.
        ties: allow exact distance ties (see the module docstring).
        singletons: allow classes with a single sample (anchors without a
            positive). False: a sample alone in its class takes its
            neighbour's label, so every class has two or more (and B != 1).
        single_class: allow batches of two or more samples with one class
            only (no negatives).
        margin: with ``ties=False``, also keep :math:`|d_i - d_j + m|` and
            :math:`|d_i - m|` away from 0, so no hinge sits at its kink.
        min_gap: the gap of ``ties=False``.
        scale: coordinates lie in ``[-scale, scale]``.
        balanced: every class present has the same number of samples K (a
            P×K batch, P in ``[min_classes, max_classes]``, K in
            ``samples_per_class`` or free, B = P·K in ``[min_size,
            max_size]``).
        min_per_class: every class present has at least this many samples
            (2 is ``singletons=False`` by construction).

    Balanced and ``min_per_class`` batches are drawn class by class (counts
    first, then rows, then a permutation), so every example lies in the
    domain and shrinking stays inside it.

    Example::

        @given(rst.labeled_batches(samples_per_class=2, min_classes=2))
        def test_every_anchor_has_a_positive(batch):
            x, labels = batch
            ...
    """
    _check_range("min_size", min_size, "max_size", max_size, 0)
    _check_range("min_dim", min_dim, "max_dim", max_dim, 1)
    _check_range("min_classes", min_classes, "max_classes", max_classes, 1)
    npdtype = _check_dtype(dtype)
    for name, flag in (("duplicates", duplicates), ("ties", ties),
                       ("singletons", singletons), ("single_class", single_class)):
        _check_flag(name, flag)
    margin = _check_margin(margin)
    gap = _check_positive("min_gap", min_gap)
    scale = _check_positive("scale", scale)
    spc = _check_samples_per_class(samples_per_class)
    _check_flag("balanced", balanced)
    _check_range("min_per_class", min_per_class, "min_per_class", min_per_class, 1)
    by_class = balanced or min_per_class > 1
    if by_class:
        k_lo = max(min_per_class, spc[0] if spc else 1, 1 if singletons else 2)
        k_hi = spc[1] if spc else max_size
        lo_p = max(min_classes, 1 if single_class else 2)
        if k_lo > k_hi or lo_p * k_lo > max_size:
            raise ValueError(
                f"max_size: expected room for {lo_p} class(es) of {k_lo} sample(s) "
                f"(min_classes, min_per_class, samples_per_class), got {max_size}"
            )
    if not single_class and max_classes < 2:
        raise ValueError(
            f"max_classes: expected >= 2 when single_class=False, got {max_classes}"
        )
    if spc is not None and not singletons and spc[1] < 2:
        raise ValueError(
            f"samples_per_class: expected at least 2 per class when singletons=False, "
            f"got {samples_per_class!r}"
        )

    @st.composite
    def draw_batch(draw) -> LabeledBatch:
        lattice = draw(_style(ties))
        if by_class:
            p = draw(st.integers(lo_p, max(lo_p, min(max_classes, max_size // k_lo))))
            top = max(k_lo, min(k_hi, max_size // p))
            if balanced:
                counts = [draw(st.integers(k_lo, top))] * p
            else:
                counts = [draw(st.integers(k_lo, top)) for _ in range(p)]
            labels = np.repeat(np.arange(p, dtype=np.int64), counts)
            b = labels.shape[0]
            assume(min_size <= b <= max_size)
            x = draw(_rows(b, b, max_dim, lattice, scale, duplicates))
            order = np.asarray(draw(st.permutations(range(b))), dtype=np.int64)
            labels = labels[order]
        elif spc is None:
            x, labels = draw(_rows(min_size, max_size, max_dim, lattice, scale, duplicates,
                                   labels=st.integers(0, max_classes - 1)))
            b = x.shape[0]
        else:
            lo_c = max(min_classes, 1 if single_class else 2)
            p = draw(st.integers(lo_c, max_classes))
            counts = [draw(st.integers(spc[0], spc[1])) for _ in range(p)]
            labels = np.repeat(np.arange(p, dtype=np.int64), counts)
            b = labels.shape[0]
            x = draw(_rows(b, b, max_dim, lattice, scale, duplicates))
            order = np.asarray(draw(st.permutations(range(b))), dtype=np.int64)
            labels = labels[order] if b else labels
        x = _draw_dim(draw, min_dim, max_dim, x)
        if not singletons and not by_class:
            assume(b != 1)
            labels = _merge_singletons(labels)
        classes, counts = np.unique(labels, return_counts=True)
        if b:
            assume(classes.size >= min_classes)
        if not single_class and b >= 2:
            assume(classes.size >= 2)
        if not duplicates:
            assume(_unique_rows(x).shape[0] == b)
        if not ties:
            assume(_batch_gaps_ok(x, gap, margin))
        return LabeledBatch(x.astype(npdtype), labels)

    return draw_batch()


def _merge_singletons(labels: np.ndarray) -> np.ndarray:
    """Give every sample whose class has no other sample the label of its
    neighbour (the previous row, or the next for row 0): by construction, so
    that ``singletons=False`` filters nothing out."""
    labels = labels.copy()
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    alone = counts[inverse] == 1
    for i in np.flatnonzero(alone):
        labels[i] = labels[i - 1] if i > 0 else labels[1]
    return labels


def _check_samples_per_class(spc: Any) -> tuple[int, int] | None:
    if spc is None:
        return None
    if isinstance(spc, (int, np.integer)) and not isinstance(spc, bool):
        _check_range("samples_per_class", spc, "samples_per_class", spc, 1)
        return int(spc), int(spc)
    if isinstance(spc, Sequence) and not isinstance(spc, str) and len(spc) == 2:
        _check_range("samples_per_class[0]", spc[0], "samples_per_class[1]", spc[1], 1)
        return int(spc[0]), int(spc[1])
    raise TypeError(
        f"samples_per_class: expected an integer, a (min, max) pair or None, got {spc!r}"
    )


def center_batches(
    *,
    min_size: int = 1,
    max_size: int = 8,
    min_dim: int = 1,
    max_dim: int = 4,
    max_classes: int = 4,
    extra_classes: int = 1,
    num_classes: int | None = None,
    dtype: str = "float64",
    duplicates: bool = True,
    scale: float = 10.0,
) -> st.SearchStrategy[CenterBatch]:
    """A labeled batch with class centers ``(x, labels, centers [C, D])``.

    C is max label + 1 + up to ``extra_classes`` classes absent from the
    batch, or exactly ``num_classes`` when given (labels then lie in
    ``range(num_classes)``: one shape for every example, for frameworks that
    compile per shape). With ``duplicates``, an embedding may equal its class
    center exactly (distance 0).
    """
    _check_range("min_size", min_size, "max_size", max_size, 0)
    _check_range("min_dim", min_dim, "max_dim", max_dim, 1)
    _check_range("max_classes", max_classes, "max_classes", max_classes, 1)
    _check_range("extra_classes", extra_classes, "extra_classes", extra_classes, 0)
    if num_classes is not None:
        _check_range("num_classes", num_classes, "num_classes", num_classes, 1)
    n_labels = max_classes if num_classes is None else num_classes
    npdtype = _check_dtype(dtype)
    _check_flag("duplicates", duplicates)
    scale = _check_positive("scale", scale)
    batches = labeled_batches(min_size=min_size, max_size=max_size, min_dim=min_dim,
                              max_dim=max_dim, max_classes=n_labels, duplicates=duplicates,
                              scale=scale)

    @st.composite
    def draw_centers(draw) -> CenterBatch:
        x, labels = draw(batches)
        if num_classes is not None:
            c = num_classes
        else:
            c = (int(labels.max()) + 1 if labels.size else 1) + draw(
                st.integers(0, extra_classes))
        lattice = draw(st.booleans())
        centers = draw(_rows(c, c, x.shape[1], lattice, scale, False))
        if duplicates and labels.size:
            at_center = draw(st.lists(st.booleans(), min_size=labels.size,
                                      max_size=labels.size))
            x = np.where(np.asarray(at_center)[:, None], centers[labels], x)
        return CenterBatch(x.astype(npdtype), labels, centers.astype(npdtype))

    return draw_centers()


def _distance(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.sqrt(np.sum((u - v) ** 2, axis=-1))


def _triplet_gaps_ok(a, p, n, gap, margin, duplicates) -> bool:
    for i in range(a.shape[0]):
        ds = np.array([_distance(a[i], p[i]), _distance(a[i], n[i]), _distance(p[i], n[i])])
        zero = (ds == 0) if duplicates else np.zeros(3, dtype=bool)
        if not _gaps_ok(ds, gap, margin, zero_ok=zero):
            return False
    return True


def _vectors(lattice: bool, scale: float, max_dim: int) -> st.SearchStrategy[list]:
    return st.lists(_coordinates(lattice, scale), min_size=max_dim, max_size=max_dim)


def triplets(
    *,
    min_rows: int = 1,
    max_rows: int = 4,
    min_dim: int = 1,
    max_dim: int = 4,
    dtype: str = "float64",
    duplicates: bool = True,
    ties: bool = True,
    margin: float | None = None,
    min_gap: float = 1e-2,
    scale: float = 10.0,
) -> st.SearchStrategy[Triplets]:
    """Explicit triplets ``(anchor, positive, negative)``, each ``[N, D]``.

    With ``ties``, lattice rows make :math:`d_{ap} = d_{an}` and hinges at
    exactly 0 common; ``ties=False`` keeps, per triplet, the three distances
    :math:`d_{ap}, d_{an}, d_{pn}` away from 0, from each other and (with
    ``margin``) from the hinge's kink. ``duplicates`` lets a positive or a
    negative equal its anchor; False keeps the three rows of a triplet
    distinct.
    """
    _check_range("min_rows", min_rows, "max_rows", max_rows, 0)
    _check_range("min_dim", min_dim, "max_dim", max_dim, 1)
    npdtype = _check_dtype(dtype)
    _check_flag("duplicates", duplicates)
    _check_flag("ties", ties)
    margin = _check_margin(margin)
    gap = _check_positive("min_gap", min_gap)
    scale = _check_positive("scale", scale)

    @st.composite
    def draw_triplets(draw) -> Triplets:
        lattice = draw(_style(ties))
        vec = _vectors(lattice, scale, max_dim)
        # each of p, n is a fresh vector or (with duplicates) a copy of the anchor
        other = st.one_of(vec, st.just(None)) if duplicates else vec
        rows = draw(st.lists(st.tuples(vec, other, other), min_size=min_rows,
                             max_size=max_rows))
        arrays = [np.zeros((len(rows), max_dim)) for _ in range(3)]
        for i, (a, p, q) in enumerate(rows):
            arrays[0][i] = a
            arrays[1][i] = a if p is None else p
            arrays[2][i] = a if q is None else q
        dim = draw(st.integers(min_dim, max_dim))
        a, p, n = (np.ascontiguousarray(v[:, :dim]) for v in arrays)
        if not duplicates:
            assume(not np.any(np.all(a == p, axis=1) | np.all(a == n, axis=1)
                              | np.all(p == n, axis=1)))
        if not ties:
            assume(_triplet_gaps_ok(a, p, n, gap, margin, duplicates))
        return Triplets(a.astype(npdtype), p.astype(npdtype), n.astype(npdtype))

    return draw_triplets()


def pairs(
    *,
    min_rows: int = 1,
    max_rows: int = 4,
    min_dim: int = 1,
    max_dim: int = 4,
    dtype: str = "float64",
    same: bool | None = None,
    duplicates: bool = True,
    ties: bool = True,
    margin: float | None = None,
    min_gap: float = 1e-2,
    scale: float = 10.0,
) -> st.SearchStrategy[Pairs]:
    """Explicit pairs ``(a, b, same)``: ``a``, ``b`` ``[N, D]``, ``same`` ``[N]`` bool.

    ``same``: None draws both kinds, True / False fixes every flag.
    ``duplicates`` lets ``b`` equal ``a`` (distance 0); False keeps them
    apart. ``ties=False`` keeps every distance ``min_gap`` away from 0
    (unless duplicated) and, with ``margin``, from the margin (the hinge's
    kink).
    """
    _check_range("min_rows", min_rows, "max_rows", max_rows, 0)
    _check_range("min_dim", min_dim, "max_dim", max_dim, 1)
    npdtype = _check_dtype(dtype)
    if same is not None:
        _check_flag("same", same)
    _check_flag("duplicates", duplicates)
    _check_flag("ties", ties)
    margin = _check_margin(margin)
    gap = _check_positive("min_gap", min_gap)
    scale = _check_positive("scale", scale)

    @st.composite
    def draw_pairs(draw) -> Pairs:
        lattice = draw(_style(ties))
        vec = _vectors(lattice, scale, max_dim)
        other = st.one_of(vec, st.just(None)) if duplicates else vec
        flag = st.booleans() if same is None else st.just(same)
        rows = draw(st.lists(st.tuples(vec, other, flag), min_size=min_rows,
                             max_size=max_rows))
        n = len(rows)
        a = np.zeros((n, max_dim))
        b = np.zeros((n, max_dim))
        flags = np.zeros(n, dtype=bool)
        for i, (u, v, s_) in enumerate(rows):
            a[i] = u
            b[i] = u if v is None else v
            flags[i] = s_
        dim = draw(st.integers(min_dim, max_dim))
        a, b = np.ascontiguousarray(a[:, :dim]), np.ascontiguousarray(b[:, :dim])
        d = _distance(a, b)
        if not duplicates:
            assume(bool(np.all(d > 0)))
        if not ties:
            live = d[d > 0] if duplicates else d
            assume(bool(np.all(live >= gap)))
            if margin is not None and margin > 0:
                assume(bool(np.all(np.abs(d - margin) >= gap)))
        return Pairs(a.astype(npdtype), b.astype(npdtype), flags)

    return draw_pairs()
