"""refloss.compat.pml against pytorch-metric-learning itself, side by side.

Two oracles, both written here independently of refloss:

* the real package (skipped when pytorch_metric_learning is absent): the
  same batch through ``TripletMarginLoss`` / ``BatchHardMiner`` /
  ``TripletMarginMiner`` / ``ContrastiveLoss`` with the matching
  ``LpDistance`` and reducer, value and torch-autograd gradient in float64;
* a NumPy transcription of the PML source (``get_all_triplets_indices``,
  ``TripletMarginLoss.compute_loss``, the miners, ``ContrastiveLoss``, the
  reducers, ``F.normalize`` and cdist's exact kernel) with explicit loops,
  which runs everywhere, plus central differences for the gradient.

Batches are built from seeded normal rows (generic: no accidental ties or
margin coincidences) with drawn structure — duplicated rows within and
across classes, rows below F.normalize's eps, one class, single-sample
classes, no valid triplet. Ties
between duplicated rows are exact in both implementations and are part of
what is checked. Every documented difference has a test that shows it.
"""

from __future__ import annotations

import functools
import tracemalloc

import numpy as np
import pytest
from helpers import assert_close, directional_fd, to_numpy, unit_directions
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import refloss as rl
from refloss.compat import pml

REDUCERS = ("avg_non_zero", "mean", "sum")
TYPES = ("all", "hard", "semihard", "easy")
MARGINS = (0.0, 0.05, 0.3, 1.0)
VALUE_TOL = {"rtol": 1e-10, "atol": 1e-12}


# --------------------------------------------------------------------------
# batches


@st.composite
def batches(draw, min_rows=0, max_rows=10, min_dim=1, duplicates=True):
    n = draw(st.integers(min_rows, max_rows))
    dim = draw(st.integers(min_dim, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.normal(size=(n, dim)) * draw(st.sampled_from([0.1, 1.0, 10.0]))
    layout = draw(st.sampled_from(["drawn", "one class", "singletons", "pairs"]))
    if layout == "drawn":
        classes = draw(st.integers(1, 4))
        labels = draw(st.lists(st.integers(0, classes - 1), min_size=n, max_size=n))
        labels = np.asarray(labels, dtype=np.int64)
    elif layout == "one class":
        labels = np.zeros(n, dtype=np.int64)
    elif layout == "singletons":
        labels = np.arange(n, dtype=np.int64)
    else:
        labels = np.arange(n, dtype=np.int64) // 2
    if duplicates and n > 1:
        copies = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)),
                               max_size=3))
        for dst, src in copies:
            x[dst] = x[src]
        # a row below F.normalize's eps: divided by 1e-12, gradient × 1e12
        for row in draw(st.lists(st.integers(0, n - 1), max_size=1)):
            x[row] = 1e-13 * rng.normal(size=dim)
    return x, labels


distance_options = {
    "normalize_embeddings": st.booleans(),
    "power": st.sampled_from([1.0, 2.0, 1.5]),
    "reducer": st.sampled_from(REDUCERS),
}
triplet_options = st.fixed_dictionaries({
    "margin": st.sampled_from(MARGINS),
    "swap": st.booleans(),
    "smooth_loss": st.booleans(),
    **distance_options,
})
miner_options = st.fixed_dictionaries({
    "type_of_triplets": st.sampled_from(TYPES),
    "miner_margin": st.sampled_from([0.0, 0.2, 0.7]),
    "margin": st.sampled_from(MARGINS),
    "swap": st.booleans(),
    "smooth_loss": st.booleans(),
    **distance_options,
})
contrastive_options = st.fixed_dictionaries({
    "pos_margin": st.sampled_from([0.0, 0.1, 0.5]),
    "neg_margin": st.sampled_from([1.0, 0.5, 1.7]),
    **distance_options,
})


# --------------------------------------------------------------------------
# oracle 1: the real package


def run_pml(kind, x, labels, **options):
    """PML's value and autograd gradient; ``kind`` is "all" (no miner),
    "batch_hard", "contrastive" or "miner" (TripletMarginMiner)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning import distances, losses, miners, reducers

    distance = distances.LpDistance(
        normalize_embeddings=options.get("normalize_embeddings", True), p=2,
        power=options.get("power", 1.0),
    )
    reducer = {
        "avg_non_zero": reducers.AvgNonZeroReducer,
        "mean": reducers.MeanReducer,
        "sum": reducers.SumReducer,
    }[options.get("reducer", "avg_non_zero")]()
    emb = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    lab = torch.tensor(labels)
    if kind == "contrastive":
        loss_fn = losses.ContrastiveLoss(
            pos_margin=options.get("pos_margin", 0), neg_margin=options.get("neg_margin", 1),
            distance=distance, reducer=reducer,
        )
        loss = loss_fn(emb, lab)
    else:
        loss_fn = losses.TripletMarginLoss(
            margin=options.get("margin", 0.05), swap=options.get("swap", False),
            smooth_loss=options.get("smooth_loss", False), distance=distance, reducer=reducer,
        )
        if kind == "all":
            loss = loss_fn(emb, lab)
        elif kind == "batch_hard":
            loss = loss_fn(emb, lab, miners.BatchHardMiner(distance=distance)(emb, lab))
        else:
            miner = miners.TripletMarginMiner(
                margin=options.get("miner_margin", 0.2),
                type_of_triplets=options.get("type_of_triplets", "all"), distance=distance,
            )
            loss = loss_fn(emb, lab, miner(emb, lab))
    loss.backward()
    return loss.item(), emb.grad.numpy()


PRESETS = {
    "all": pml.triplet_margin_loss,
    "batch_hard": pml.batch_hard_triplet_margin_loss,
    "miner": pml.triplet_margin_miner_loss,
    "contrastive": pml.contrastive_loss,
}


def assert_matches_pml(kind, x, labels, **options):
    value, (grad, glabels) = rl.value_and_grad(PRESETS[kind], x, labels, **options)
    expected, expected_grad = run_pml(kind, x, labels, **options)
    np.testing.assert_allclose(float(value), expected, **VALUE_TOL)
    assert glabels is None
    scale = max(1.0, float(np.max(np.abs(expected_grad), initial=0.0)))
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-9, atol=1e-10 * scale)


# --------------------------------------------------------------------------
# oracle 2: a NumPy transcription of the PML source


def np_lp_distance(x, normalize_embeddings=True, power=1.0):
    """LpDistance.forward: F.normalize (x / max(‖x‖, 1e-12)), then torch.cdist's
    exact kernel sqrt(Σ (x_i − x_j)²), then ** power."""
    if normalize_embeddings:
        norm = np.sqrt(np.sum(x * x, axis=1, keepdims=True))
        x = x / np.maximum(norm, 1e-12)
    b = x.shape[0]
    mat = np.zeros((b, b))
    for i in range(b):
        for j in range(b):
            mat[i, j] = np.sqrt(np.sum((x[i] - x[j]) ** 2))
    return mat if power == 1 else mat**power


def np_all_triplets(labels):
    """get_all_triplets_indices: torch.where(matches[:, :, None] * diffs[:, None, :])."""
    b = len(labels)
    return [(a, p, n) for a in range(b) for p in range(b) for n in range(b)
            if p != a and labels[p] == labels[a] and labels[n] != labels[a]]


def np_batch_hard_miner(mat, labels):
    """BatchEasyHardMiner(hard, hard): first argmax positive, first argmin negative."""
    out = []
    for a in range(len(labels)):
        pos = [p for p in range(len(labels)) if p != a and labels[p] == labels[a]]
        neg = [n for n in range(len(labels)) if labels[n] != labels[a]]
        if pos and neg:
            p = max(pos, key=lambda j: (mat[a, j], -j))
            n = min(neg, key=lambda j: (mat[a, j], j))
            out.append((a, p, n))
    return out


def np_triplet_margin_miner(mat, triplets, miner_margin, type_of_triplets):
    """TripletMarginMiner.mine on triplet_margin = an_dist − ap_dist."""
    kept = []
    for a, p, n in triplets:
        delta = mat[a, n] - mat[a, p]
        if type_of_triplets == "easy":
            keep = delta > miner_margin
        else:
            keep = delta <= miner_margin
            if type_of_triplets == "hard":
                keep = keep and delta <= 0
            elif type_of_triplets == "semihard":
                keep = keep and delta > 0
        if keep:
            kept.append((a, p, n))
    return kept


def np_softplus(z):
    return z if z > 20 else float(np.log1p(np.exp(z)))


def np_reduce(terms, reducer):
    """AvgNonZeroReducer (mean of the terms > 0), MeanReducer, SumReducer; no term: 0."""
    terms = np.asarray(terms, dtype=np.float64)
    if terms.size == 0:
        return 0.0
    if reducer == "sum":
        return float(terms.sum())
    if reducer == "mean":
        return float(terms.mean())
    kept = terms[terms > 0]
    return float(kept.mean()) if kept.size else 0.0


def np_triplet_terms(mat, triplets, margin, swap, smooth_loss):
    """TripletMarginLoss.compute_loss on explicit triplets."""
    terms = []
    for a, p, n in triplets:
        ap, an = mat[a, p], mat[a, n]
        if swap:
            an = min(an, mat[p, n])
        violation = (ap - an) + margin
        terms.append(np_softplus(violation) if smooth_loss else max(violation, 0.0))
    return terms


def np_pml(kind, x, labels, *, margin=0.05, swap=False, smooth_loss=False,
           normalize_embeddings=True, power=1.0, reducer="avg_non_zero", miner_margin=0.2,
           type_of_triplets="all", pos_margin=0.0, neg_margin=1.0):
    mat = np_lp_distance(x, normalize_embeddings, power)
    b = len(labels)
    if kind == "contrastive":
        pos = [max(mat[i, j] - pos_margin, 0.0) for i in range(b) for j in range(b)
               if i != j and labels[i] == labels[j]]
        neg = [max(neg_margin - mat[i, j], 0.0) for i in range(b) for j in range(b)
               if labels[i] != labels[j]]
        return np_reduce(pos, reducer) + np_reduce(neg, reducer)
    if kind == "batch_hard":
        triplets = np_batch_hard_miner(mat, labels)
    else:
        triplets = np_all_triplets(labels)
        if kind == "miner":
            triplets = np_triplet_margin_miner(mat, triplets, miner_margin, type_of_triplets)
    return np_reduce(np_triplet_terms(mat, triplets, margin, swap, smooth_loss), reducer)


def np_kink_gap(kind, x, labels, *, margin=0.05, swap=False, smooth_loss=False,
                normalize_embeddings=True, power=1.0, miner_margin=0.2,
                type_of_triplets="all", pos_margin=0.0, neg_margin=1.0, **_):
    """How far the batch is from every kink of the loss (hinge at 0, miner
    boundaries, max/min and swap choices, d = 0): central differences are
    valid when this is well above the step."""
    mat = np_lp_distance(x, normalize_embeddings, power)
    b = len(labels)
    off = mat[~np.eye(b, dtype=bool)]
    gaps = [float(np.min(off, initial=np.inf))]
    if kind == "contrastive":
        same = labels[:, None] == labels[None, :]
        gaps.append(float(np.min(np.abs(mat[same] - pos_margin), initial=np.inf)))
        gaps.append(float(np.min(np.abs(neg_margin - mat[~same]), initial=np.inf)))
        return min(gaps)
    triplets = np_all_triplets(labels)
    if kind == "batch_hard":
        for a in range(b):
            pos = sorted(mat[a, p] for p in range(b) if p != a and labels[p] == labels[a])
            neg = sorted(mat[a, n] for n in range(b) if labels[n] != labels[a])
            if len(pos) > 1:
                gaps.append(pos[-1] - pos[-2])
            if len(neg) > 1:
                gaps.append(neg[1] - neg[0])
        triplets = np_batch_hard_miner(mat, labels)
    for a, p, n in triplets:
        ap, an = mat[a, p], mat[a, n]
        if kind == "miner":
            gaps += [abs(an - ap - miner_margin), abs(an - ap)]
        if swap:
            gaps.append(abs(an - mat[p, n]))
            an = min(an, mat[p, n])
        if not smooth_loss:
            gaps.append(abs(ap - an + margin))
    return min(gaps)


# --------------------------------------------------------------------------
# side by side with the real package: value and gradient


@given(batches(), triplet_options)
def test_triplet_margin_loss_matches_pml(data, options):
    assert_matches_pml("all", *data, **options)


@given(batches(min_rows=1), triplet_options)  # BatchHardMiner raises on an empty batch
def test_batch_hard_matches_pml_with_batch_hard_miner(data, options):
    assert_matches_pml("batch_hard", *data, **options)


@given(batches(), miner_options)
def test_triplet_margin_miner_loss_matches_pml_with_triplet_margin_miner(data, options):
    assert_matches_pml("miner", *data, **options)


@given(batches(), triplet_options, st.sampled_from([0.0, 0.2, 0.7]))
def test_semihard_matches_pml_with_semihard_triplet_margin_miner(data, options, miner_margin):
    x, labels = data
    value, (grad, _) = rl.value_and_grad(pml.semihard_triplet_margin_loss, x, labels,
                                         miner_margin=miner_margin, **options)
    expected, expected_grad = run_pml("miner", x, labels, type_of_triplets="semihard",
                                      miner_margin=miner_margin, **options)
    np.testing.assert_allclose(float(value), expected, **VALUE_TOL)
    scale = max(1.0, float(np.max(np.abs(expected_grad), initial=0.0)))
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-9, atol=1e-10 * scale)


@given(batches(), contrastive_options)
def test_contrastive_matches_pml(data, options):
    assert_matches_pml("contrastive", *data, **options)


@pytest.mark.parametrize("kind", ["all", "batch_hard", "miner", "contrastive"])
def test_pml_defaults_match_on_a_batch_with_duplicates_and_a_single_sample_class(kind):
    x = np.array([[1.0, 0.2, -0.3], [1.0, 0.2, -0.3], [0.1, 1.1, 0.4], [-0.7, 0.3, 0.9],
                  [0.1, 1.1, 0.4], [0.5, -0.8, 0.2], [0.3, 0.3, 0.3]])
    labels = np.array([0, 0, 1, 1, 0, 2, 3])  # rows 0, 1, 4 share a point across classes
    assert_matches_pml(kind, x, labels)


@pytest.mark.parametrize("kind", ["all", "batch_hard", "miner", "contrastive"])
@pytest.mark.parametrize("layout", ["one class", "singletons", "one sample"])
def test_batches_without_triplets_match_pml(kind, layout):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1 if layout == "one sample" else 5, 3))
    labels = np.zeros(len(x), dtype=np.int64) if layout != "singletons" else np.arange(5)
    assert_matches_pml(kind, x, labels)
    if kind != "contrastive":  # no triplet: 0 with zero gradient
        value, (grad, _) = rl.value_and_grad(PRESETS[kind], x, labels)
        assert float(value) == 0.0
        assert not np.any(grad)


@pytest.mark.parametrize("kind", ["all", "batch_hard", "miner", "contrastive"])
def test_empty_batch_gives_zero(kind):
    x = np.zeros((0, 3))
    labels = np.zeros(0, dtype=np.int64)
    value, (grad, _) = rl.value_and_grad(PRESETS[kind], x, labels)
    assert float(value) == 0.0
    assert grad.shape == (0, 3)
    if kind != "batch_hard":  # BatchHardMiner raises on an empty batch (documented)
        assert run_pml(kind, x, labels)[0] == 0.0


def test_batch_hard_miner_raises_on_an_empty_batch_where_the_preset_gives_zero():
    with pytest.raises(IndexError):
        run_pml("batch_hard", np.zeros((0, 3)), np.zeros(0, dtype=np.int64))
    assert float(pml.batch_hard_triplet_margin_loss(np.zeros((0, 3)),
                                                    np.zeros(0, dtype=np.int64))) == 0.0


# --------------------------------------------------------------------------
# the NumPy transcription (runs without torch) and central differences


@settings(max_examples=15)
@given(batches(max_rows=8), st.sampled_from(list(PRESETS)), miner_options, contrastive_options)
def test_presets_match_the_numpy_transcription(data, kind, options, coptions):
    x, labels = data
    if kind == "contrastive":
        options = coptions
    elif kind != "miner":
        options = {k: v for k, v in options.items()
                   if k not in ("type_of_triplets", "miner_margin")}
    np.testing.assert_allclose(float(PRESETS[kind](x, labels, **options)),
                               np_pml(kind, x, labels, **options), **VALUE_TOL)


@settings(max_examples=15)
@given(batches(min_rows=2, max_rows=7, min_dim=2, duplicates=False),
       st.sampled_from(list(PRESETS)), miner_options, contrastive_options,
       st.integers(0, 2**16))
def test_preset_gradients_match_central_differences(data, kind, options, coptions, seed):
    x, labels = data
    if kind == "contrastive":
        options = coptions
    elif kind != "miner":
        options = {k: v for k, v in options.items()
                   if k not in ("type_of_triplets", "miner_margin")}
    assume(np_kink_gap(kind, x, labels, **options) > 1e-4)
    fn = functools.partial(PRESETS[kind], **options)
    _, pullback = rl.vjp(PRESETS[kind], x, labels, **options)
    grad = pullback(1.0)[0]
    for v in unit_directions(np.random.default_rng(seed), x.shape, n=2):
        fd = directional_fd(fn, [x, labels], 0, v)
        np.testing.assert_allclose(np.sum(grad * v), fd, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------
# documented differences and conventions, each shown


SEMIHARD_X = np.array([[0.0], [1.0], [1.25], [1.375]])  # dyadic: every distance exact
SEMIHARD_Y = np.array([0, 0, 1, 1])


def test_pml_semihard_is_not_tensorflow_semihard():
    """PML keeps every negative with 0 < d_an − d_ap ≤ M and averages the
    non-zero terms; TensorFlow picks one negative per positive pair (the
    nearest farther one, else the farthest) and averages over the pairs.
    By hand, margin = M = 0.5: PML's terms .25, .125, .375, .25 → 0.25;
    TensorFlow's .25, 1.125 (fallback), .375, .25 → 0.5."""
    kw = {"margin": 0.5, "normalize_embeddings": False}
    got = pml.semihard_triplet_margin_loss(SEMIHARD_X, SEMIHARD_Y, miner_margin=0.5, **kw)
    np.testing.assert_allclose(float(got), 0.25, rtol=1e-12)
    tf = rl.semihard_triplet_loss(SEMIHARD_X, SEMIHARD_Y, margin=0.5)
    np.testing.assert_allclose(float(tf), 0.5, rtol=1e-12)


def test_pml_semihard_constructed_batch_matches_pml():
    expected, _ = run_pml("miner", SEMIHARD_X, SEMIHARD_Y, type_of_triplets="semihard",
                          miner_margin=0.5, margin=0.5, normalize_embeddings=False)
    np.testing.assert_allclose(expected, 0.25, rtol=1e-12)


def test_semihard_with_default_margins_counts_only_delta_below_the_loss_margin():
    """Miner 0.2 and loss 0.05: a mined triplet with 0.05 <= Δ <= 0.2 has term 0."""
    x = np.array([[0.0], [1.0], [1.03], [1.15]])
    y = np.array([0, 0, 1, 1])
    kw = {"normalize_embeddings": False}
    got = pml.semihard_triplet_margin_loss(x, y, **kw)
    # mined (0 < Δ <= .2): (0, 1, 2) Δ = .03 → term .02; (0, 1, 3) Δ = .15 → term 0;
    # (3, 2, 1) Δ = .15 − .12 = .03 → term .02. Two non-zero terms of three mined.
    first = 0.05 - (1.03 - 1.0)
    second = 0.05 - ((1.15 - 1.0) - (1.15 - 1.03))
    np.testing.assert_allclose(float(got), (first + second) / 2, rtol=1e-12)
    mean = pml.semihard_triplet_margin_loss(x, y, reducer="mean", **kw)
    np.testing.assert_allclose(float(mean), (first + second) / 3, rtol=1e-12)
    expected, _ = run_pml("miner", x, y, type_of_triplets="semihard", reducer="mean", **kw)
    np.testing.assert_allclose(expected, (first + second) / 3, rtol=1e-12)


def test_batch_hard_averages_over_nonzero_anchors_unlike_the_reference():
    x = np.array([[0.0], [0.1], [5.0], [3.0]])
    y = np.array([0, 0, 1, 1])
    kw = {"margin": 1.0, "normalize_embeddings": False}
    # anchors: 0 → [.1 − 3 + 1]_+ = 0; 1 → [.1 − 2.9 + 1]_+ = 0;
    # 2 → [2 − 4.9 + 1]_+ = 0; 3 → [2 − 2.9 + 1]_+ = .1: one non-zero term of four
    got = pml.batch_hard_triplet_margin_loss(x, y, **kw)
    np.testing.assert_allclose(float(got), 0.1, rtol=1e-12)
    ref = rl.batch_hard_triplet_loss(x, y, margin=1.0)  # mean over the 4 valid anchors
    np.testing.assert_allclose(float(ref), 0.1 / 4, rtol=1e-12)
    np.testing.assert_allclose(
        float(pml.batch_hard_triplet_margin_loss(x, y, reducer="mean", **kw)), 0.1 / 4,
        rtol=1e-12,
    )


def test_contrastive_sums_two_nonzero_means_unlike_one_mean_nonzero():
    x = np.array([[0.0, 0.0], [0.6, 0.0], [0.0, 0.3], [2.0, 2.0]])
    y = np.array([0, 0, 1, 1])
    kw = {"normalize_embeddings": False}
    got = float(pml.contrastive_loss(x, y, **kw))
    d = np_lp_distance(x, False)
    pos = [d[0, 1], d[2, 3]]  # each ordered pair twice: same mean
    neg = [1 - d[i, j] for i, j in [(0, 2), (1, 2)]]  # pairs with row 3 are beyond 1
    np.testing.assert_allclose(got, np.mean(pos) + np.mean(neg), rtol=1e-12)
    one_mean = float(rl.contrastive_loss_all_pairs(x, y, margin=1.0, power=1,
                                                   reduction="mean_nonzero"))
    np.testing.assert_allclose(one_mean, (sum(pos) + sum(neg)) / 4, rtol=1e-12)
    assert abs(got - one_mean) > 0.1


def test_smooth_loss_keeps_the_margin_and_is_torch_softplus():
    """smooth_loss = softplus(d_ap − d_an + m) with the margin (Hermans et al.'s
    soft margin drops it), and torch's softplus is z itself above 20."""
    x = np.array([[0.0], [25.0], [1.0]])
    y = np.array([0, 0, 1])
    kw = {"smooth_loss": True, "margin": 0.5, "normalize_embeddings": False}
    # triplets (0, 1, 2): 25 − 1 + .5 = 24.5 (> 20: exactly z); (1, 0, 2): 25 − 24 + .5
    got = float(pml.triplet_margin_loss(x, y, **kw))
    expected = (24.5 + np.log1p(np.exp(1.5))) / 2
    assert got == pytest.approx(expected, rel=1e-14)
    exact_softplus = (24.5 + np.log1p(np.exp(-24.5)) + np.log1p(np.exp(1.5))) / 2
    assert abs(got - exact_softplus) > 1e-12
    soft_margin = float(rl.batch_all_triplet_loss(x, y, soft=True, reduction="mean"))
    np.testing.assert_allclose(soft_margin, (np.log1p(np.exp(24.0)) + np.log1p(np.exp(1.0))) / 2,
                               rtol=1e-12)
    assert_matches_pml("all", x, y, **kw)


def test_swap_tie_between_copies_by_hand():
    """a and p identical: d_an = d_pn exactly. Over every triplet the two
    orders (a, p, n) and (p, a, n) together give the same gradient whatever
    the tie rule; the batch-hard test below is the one where the ½/½ shows."""
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    y = np.array([0, 0, 1])
    kw = {"swap": True, "margin": 2.0, "normalize_embeddings": False}
    _, (grad, _) = rl.value_and_grad(pml.triplet_margin_loss, x, y, **kw)
    # two triplets (0,1,2), (1,0,2), each [0 − √2 + 2]; halves: rows 0 and 1 each get
    # −½(x_a − n)/√2 twice, the negative +(x_a − n)/√2 twice, averaged over 2 terms
    u = (x[0] - x[2]) / np.sqrt(2.0)
    np.testing.assert_allclose(grad, np.array([-u / 2, -u / 2, u]), rtol=1e-12, atol=1e-15)
    assert_matches_pml("all", x, y, **kw)
    for kind in ("batch_hard",):
        assert_matches_pml(kind, x, y, **kw)


def test_batch_hard_swap_tie_splits_half_and_half_by_hand():
    """Only anchor 0's term has d_an = d_pn (both 1); its halves land on rows 0
    and 1 instead of row 0 alone. Anchor 2's two negatives tie at 1: row 0,
    the lowest index, is taken. Hinges 6, 6.4, 5.6 and 6, each weighted 1/4."""
    x = np.array([[0.0], [2.0], [1.0], [2.6]])
    y = np.array([0, 0, 1, 1])
    kw = {"swap": True, "margin": 5.0, "normalize_embeddings": False}
    _, (grad, _) = rl.value_and_grad(pml.batch_hard_triplet_margin_loss, x, y, **kw)
    np.testing.assert_allclose(grad[:, 0], [-0.125, 0.875, -0.75, 0.0], atol=1e-15)
    all_to_d_an = [0.0, 1.0, -1.0, 0.0]
    assert not np.allclose(grad[:, 0], all_to_d_an)
    assert_matches_pml("batch_hard", x, y, **kw)


# a = 0, p = 1 (class 0); n = −1, n2 = 5 (class 1): with margin 0, the triplets
# (0, 1, n) and (1, 0, n) sit exactly at the hinge (d_ap = d_an, or = d_pn with swap)
HINGE_X = np.array([[0.0], [1.0], [-1.0], [5.0]])
HINGE_Y = np.array([0, 0, 1, 1])


@pytest.mark.parametrize(
    "kind, options",
    [
        ("all", {}),
        ("all", {"swap": True}),
        ("batch_hard", {}),
        ("batch_hard", {"swap": True}),
        ("miner", {"type_of_triplets": "all", "miner_margin": 10.0}),
        ("miner", {"type_of_triplets": "all", "miner_margin": 10.0, "swap": True}),
    ],
)
def test_a_hinge_exactly_at_zero_passes_no_gradient_and_is_not_counted(kind, options):
    kw = {"margin": 0.0, "normalize_embeddings": False, **options}
    assert_matches_pml(kind, HINGE_X, HINGE_Y, **kw)


def test_a_hinge_exactly_at_zero_by_hand():
    # terms: (0,1,2) 0, (1,0,2) 0, (0,1,3) −, (1,0,3) −, (2,3,0) 5, (2,3,1) 4,
    # (3,2,0) 1, (3,2,1) 2 with plain d_an: AvgNonZero = 12 / 4
    got = pml.triplet_margin_loss(HINGE_X, HINGE_Y, margin=0.0, normalize_embeddings=False)
    assert float(got) == 3.0


@pytest.mark.parametrize("swap", [False, True])
def test_each_type_of_triplets_matches_pml(swap):
    """One generic batch whose triplets fall in every band of Δ: the four
    types give four different losses, each PML's."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(10, 3))
    y = np.arange(10) % 3
    values = []
    for kind in TYPES:
        kw = {"type_of_triplets": kind, "miner_margin": 0.2, "margin": 0.3, "swap": swap}
        assert_matches_pml("miner", x, y, **kw)
        values.append(float(pml.triplet_margin_miner_loss(x, y, **kw)))
    assert len(set(values)) == 4 and min(values) > 0


def test_hard_triplets_include_delta_exactly_zero():
    """The negative duplicates the positive: Δ = 0 is "hard" (Δ <= 0), exactly."""
    x = np.array([[0.0], [1.0], [1.0], [3.0]])
    y = np.array([0, 0, 1, 1])
    kw = {"type_of_triplets": "hard", "margin": 0.5, "normalize_embeddings": False}
    assert_matches_pml("miner", x, y, **kw)
    # mined (Δ <= 0) and their terms: (0, 1, 2) Δ = 0 → .5; (1, 0, 2) Δ = −1 → 1.5;
    # (2, 3, 0) Δ = −1 → 1.5; (2, 3, 1) Δ = −2 → 2.5; (3, 2, 1) Δ = 0 → .5
    assert float(pml.triplet_margin_miner_loss(x, y, **kw)) == pytest.approx(6.5 / 5, rel=1e-15)


def test_semihard_bound_is_strict_to_the_last_bit():
    """A negative one ulp beyond the positive has Δ > 0 and is mined; the
    same distance would not be."""
    beyond = np.nextafter(1.0, 2.0)
    x = np.array([[0.0], [1.0], [beyond], [4.0]])
    y = np.array([0, 0, 1, 1])
    kw = {"margin": 0.5, "normalize_embeddings": False}
    assert_matches_pml("miner", x, y, type_of_triplets="semihard", **kw)
    got = float(pml.semihard_triplet_margin_loss(x, y, **kw))
    np.testing.assert_allclose(got, 0.5 - (beyond - 1.0), rtol=1e-15)
    x[2, 0] = 1.0
    assert float(pml.semihard_triplet_margin_loss(x, y, **kw)) == 0.0


def test_zero_row_gradient_is_normalize_eps_not_the_reference_zero():
    """F.normalize maps a zero row to 0 with gradient g / 1e-12; refloss's
    own normalisation gives it gradient 0. The zero row is a class of its
    own and the margins stay clear of d = 1, where its distances sit up to
    rounding."""
    x = np.array([[0.3, -0.2, 0.9], [0.4, -0.1, 0.7], [0.0, 0.0, 0.0], [-0.5, 0.8, 0.1]])
    y = np.array([0, 0, 1, 2])
    value, (grad, _) = rl.value_and_grad(pml.triplet_margin_loss, x, y, margin=1.0)
    assert np.max(np.abs(grad[2])) > 1e9
    ref_value, (ref_grad, _) = rl.value_and_grad(
        rl.batch_all_triplet_loss, x, y, margin=1.0, normalize=True)
    np.testing.assert_allclose(float(value), float(ref_value), rtol=1e-12)
    assert not np.any(ref_grad[2])
    assert_matches_pml("all", x, y, margin=1.0)
    assert_matches_pml("contrastive", x, y, neg_margin=1.5)


def test_tiny_rows_are_scaled_by_one_over_eps_not_normalised():
    x = np.array([[1e-13, 0.0], [0.0, 3e-13], [1.0, 1.0], [-1.0, 2.0]])
    y = np.array([0, 1, 0, 1])
    # x / max(‖x‖, 1e-12): the tiny rows become (0.1, 0) and (0, 0.3)
    d = np_lp_distance(x)
    np.testing.assert_allclose(d[0, 1], np.hypot(0.1, 0.3), rtol=1e-12)
    assert_matches_pml("all", x, y, margin=0.3)
    assert_matches_pml("contrastive", x, y)


def test_more_than_25_rows_pml_gemm_distances_count_a_duplicate_pair():
    """Above 25 rows torch.cdist uses ‖x‖² + ‖y‖² − 2x·y: a duplicated row can
    sit ≈ 1e-8 from its copy, and PML's ContrastiveLoss then counts that
    positive pair as a non-zero term. The preset keeps d = 0."""
    torch = pytest.importorskip("torch")
    for seed in range(64):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(30, 8))
        x[29] = x[3]
        xn = torch.nn.functional.normalize(torch.tensor(x), dim=1)
        if float(torch.cdist(xn, xn)[3, 29]) > 0:
            break
    else:
        pytest.skip("torch.cdist's GEMM path gave exact zeros for every seed tried")
    labels = np.arange(30) % 10
    labels[29] = labels[3]
    got = float(pml.contrastive_loss(x, labels))
    np.testing.assert_allclose(got, np_pml("contrastive", x, labels), rtol=1e-12)
    expected, _ = run_pml("contrastive", x, labels)
    # PML averages one more (tiny) positive term, pair (3, 29) in both orders
    assert abs(expected - got) > 1e-3 * got


def test_a_tie_between_duplicates_goes_to_the_lowest_index():
    """Duplicated rows are at bitwise-equal distances, as in torch.cdist's exact
    kernel, so anchor 0's hardest positive among the copies 1 and 2 is row 1,
    every time (a GEMM distance matrix can break such ties by rounding)."""
    rng = np.random.default_rng(11)
    y = np.array([0, 0, 0, 1])
    kw = {"normalize_embeddings": False, "margin": 10.0}
    for _ in range(40):
        x = rng.normal(size=(4, 5))
        x[2] = x[1]
        _, (grad, _) = rl.value_and_grad(pml.batch_hard_triplet_margin_loss, x, y, **kw)
        # anchors 1 and 2 pick row 0 and give their copies equal gradients; anchor
        # 0's positive term (weight 1/3: three non-zero hinges) lands on row 1 only
        pull = (x[1] - x[0]) / np.linalg.norm(x[1] - x[0]) / 3
        np.testing.assert_allclose(grad[1] - grad[2], pull, rtol=1e-12, atol=1e-15)
    assert_matches_pml("batch_hard", x, y, **kw)


def test_copies_still_tie_when_the_distance_gemm_rounds_them_apart(monkeypatch):
    """Simulate a GEMM whose rounding puts row 2 one ulp farther than its copy,
    row 1: the preset copies a duplicate's distances from its first copy, so
    the tie, and torch.max's lowest index, survive."""
    real = pml.pairwise_forward

    def rounded(xp, x, y, metric, *fetch):
        d, res = real(xp, x, y, metric, *fetch)
        bump = np.ones_like(d)
        bump[2, :] = bump[:, 2] = 1.0 + 2.0**-52  # zeros stay exactly zero
        return d * bump, res

    monkeypatch.setattr(pml, "pairwise_forward", rounded)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 5))
    x[2] = x[1]
    y = np.array([0, 0, 0, 1])
    kw = {"normalize_embeddings": False, "margin": 10.0}
    _, (grad, _) = rl.value_and_grad(pml.batch_hard_triplet_margin_loss, x, y, **kw)
    pull = (x[1] - x[0]) / np.linalg.norm(x[1] - x[0]) / 3
    np.testing.assert_allclose(grad[1] - grad[2], pull, rtol=1e-12, atol=1e-15)


def test_a_row_below_the_eps_gets_its_gradient_from_the_differences():
    """The 1e-12 row's gradient is × 1e12: its pair terms are summed from the
    differences, where they cancel exactly as in torch's backward (the GEMM
    form's rounding would show as ~1e-4 here, where PML has exactly 0)."""
    x = np.array([-0.14599295483478159, 0.24475779374210224, -0.5402603520457694,
                  0.3479433920526728, -3.779085455558977e-14])[:, None]
    y = np.array([1, 0, 1, 1, 2])
    kw = {"type_of_triplets": "all", "miner_margin": 0.0, "margin": 0.3, "reducer": "sum"}
    _, (grad, _) = rl.value_and_grad(pml.triplet_margin_miner_loss, x, y, **kw)
    np.testing.assert_allclose(grad, 0.0, atol=1e-10)
    assert_matches_pml("miner", x, y, **kw)


def test_float16_is_computed_in_float32():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 3)).astype(np.float16)
    y = np.array([0, 0, 1, 1, 2, 2])
    for fn in PRESETS.values():
        got = fn(x, y)
        assert got.dtype == np.float16
        assert got == np.float16(fn(x.astype(np.float32), y))


# --------------------------------------------------------------------------
# memory: O(B²), never a triplet list or a B³ array


def _peak_bytes(fn, rows, options):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 4))
    labels = rng.integers(0, 8, size=rows)
    tracemalloc.start()
    try:
        rl.value_and_grad(fn, x, labels, **options)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "fn, options, rows",
    [
        (pml.triplet_margin_loss, {}, 200),
        (pml.semihard_triplet_margin_loss, {}, 200),
        (pml.triplet_margin_loss, {"swap": True}, 80),
        (pml.batch_hard_triplet_margin_loss, {"swap": True}, 200),
        (pml.contrastive_loss, {}, 200),
    ],
)
def test_memory_stays_quadratic(monkeypatch, fn, options, rows):
    """Doubling the batch multiplies the peak by about 4, never 8, and the
    peak stays below one byte per triplet (PML's B×B×B mask alone)."""
    monkeypatch.setattr(pml, "_BLOCK_ELEMENTS", 1 << 14)
    small = _peak_bytes(fn, rows, options)
    large = _peak_bytes(fn, 2 * rows, options)
    assert large < 6 * small
    assert large < (2 * rows) ** 3


# --------------------------------------------------------------------------
# every backend, torch tensors included


BACKEND_X = np.array([[0.2, 1.0, -0.4], [0.9, -0.3, 0.5], [0.2, 1.0, -0.4], [-0.6, 0.1, 0.8],
                      [0.4, 0.4, -1.1], [1.3, 0.2, 0.1]])
BACKEND_Y = np.array([0, 0, 1, 1, 0, 2])


BACKEND_CASES = [
    (pml.triplet_margin_loss, {}),
    (pml.triplet_margin_loss, {"swap": True, "smooth_loss": True}),
    (pml.batch_hard_triplet_margin_loss, {"swap": True}),
    (pml.semihard_triplet_margin_loss, {"margin": 0.3, "miner_margin": 0.5}),
    (pml.triplet_margin_miner_loss, {"type_of_triplets": "hard", "margin": 0.4}),
    (pml.contrastive_loss, {"power": 2.0, "reducer": "mean"}),
]


@pytest.mark.parametrize("fn, options", BACKEND_CASES)
def test_presets_run_on_every_backend(backend, fn, options):
    if backend.name == "jax" and (fn, options) != BACKEND_CASES[0]:
        pytest.skip("JAX compiles every new op shape (seconds per preset); the first "
                    "case runs the shared stages there")
    value, (grad, glabels) = rl.value_and_grad(
        fn, backend.asarray(BACKEND_X), backend.asarray(BACKEND_Y), **options)
    ref_value, (ref_grad, _) = rl.value_and_grad(fn, BACKEND_X, BACKEND_Y, **options)
    assert glabels is None
    assert_close(value, ref_value, backend, dtype="float64", rtol=1e-12, atol=1e-14)
    assert_close(grad, ref_grad, backend, dtype="float64", rtol=1e-12, atol=1e-14)


def test_presets_run_on_torch_tensors_and_match_pml():
    torch = pytest.importorskip("torch")
    x, y = torch.tensor(BACKEND_X), torch.tensor(BACKEND_Y)
    got = pml.triplet_margin_loss(x, y)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    expected, _ = run_pml("all", BACKEND_X, BACKEND_Y)
    assert float(got) == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------
# the preset records and the VJP contract


ALL_PRESETS = [pml.triplet_margin_loss, pml.batch_hard_triplet_margin_loss,
               pml.triplet_margin_miner_loss, pml.semihard_triplet_margin_loss,
               pml.contrastive_loss]


@pytest.mark.parametrize("fn", ALL_PRESETS)
def test_every_preset_has_a_record_a_vjp_and_its_differences(fn):
    assert fn.__name__ in pml.__all__
    info = fn.__refloss_preset__
    assert all(isinstance(v, str) and v.strip() for v in vars(info).values())
    assert "pytorch-metric-learning" in info.implementation
    assert hasattr(fn, "__refloss_vjp__")
    assert "Differences" in fn.__doc__


def test_inputs_are_not_mutated():
    x = BACKEND_X.copy()
    y = BACKEND_Y.copy()
    for fn in ALL_PRESETS:
        rl.value_and_grad(fn, x, y)
    np.testing.assert_array_equal(x, BACKEND_X)
    np.testing.assert_array_equal(y, BACKEND_Y)


# --------------------------------------------------------------------------
# bad input: TypeError / ValueError naming the argument


X3 = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
Y3 = np.array([0, 0, 1])
TRIPLET_PRESETS = [pml.triplet_margin_loss, pml.batch_hard_triplet_margin_loss,
                   pml.triplet_margin_miner_loss, pml.semihard_triplet_margin_loss]


def _raises(exc, start, fn, *args, **kw):
    with pytest.raises(exc) as info:
        fn(*args, **kw)
    assert str(info.value).startswith(start), str(info.value)


@pytest.mark.parametrize("fn", ALL_PRESETS)
def test_embeddings_must_be_an_array(fn):
    _raises(TypeError, "embeddings", fn, X3.tolist(), Y3)


@pytest.mark.parametrize("fn", ALL_PRESETS)
def test_embeddings_must_be_floating(fn):
    _raises(TypeError, "embeddings: expected a real floating dtype", fn, X3.astype(int), Y3)


@pytest.mark.parametrize("fn", ALL_PRESETS)
def test_embeddings_must_be_2d(fn):
    _raises(ValueError, "embeddings: expected a 2-D array", fn, X3[:, 0], Y3)


@pytest.mark.parametrize("fn", ALL_PRESETS)
def test_embeddings_must_be_finite(fn):
    bad = X3.copy()
    bad[1, 0] = np.nan
    _raises(ValueError, "embeddings: expected finite values", fn, bad, Y3)


@pytest.mark.parametrize("fn", ALL_PRESETS)
def test_labels_must_be_integers(fn):
    _raises(TypeError, "labels: expected an integer dtype", fn, X3, Y3.astype(float))


@pytest.mark.parametrize("fn", ALL_PRESETS)
def test_labels_must_have_one_entry_per_row(fn):
    _raises(ValueError, "labels: expected 3 entries", fn, X3, Y3[:2])


@pytest.mark.parametrize("fn", ALL_PRESETS)
def test_labels_must_be_1d(fn):
    _raises(ValueError, "labels: expected a 1-D array", fn, X3, Y3[:, None])


@pytest.mark.parametrize("fn", ALL_PRESETS)
def test_arrays_must_come_from_one_library(fn):
    torch = pytest.importorskip("torch")
    _raises(TypeError, "embeddings, labels: expected arrays from one library", fn, X3,
            torch.tensor(Y3))


@pytest.mark.parametrize("fn", TRIPLET_PRESETS)
def test_negative_margin_is_refused_although_pml_accepts_it(fn):
    _raises(ValueError, "margin: expected a finite number >= 0", fn, X3, Y3, margin=-0.1)


@pytest.mark.parametrize("fn", TRIPLET_PRESETS)
def test_margin_must_be_a_number(fn):
    _raises(TypeError, "margin: expected a real number", fn, X3, Y3, margin="0.05")


@pytest.mark.parametrize("fn", TRIPLET_PRESETS)
@pytest.mark.parametrize("name", ["swap", "smooth_loss"])
def test_switches_must_be_bools(fn, name):
    _raises(TypeError, f"{name}: expected a bool", fn, X3, Y3, **{name: 1})


@pytest.mark.parametrize("fn", ALL_PRESETS)
def test_normalize_embeddings_must_be_a_bool(fn):
    _raises(TypeError, "normalize_embeddings: expected a bool", fn, X3, Y3,
            normalize_embeddings="yes")


@pytest.mark.parametrize("fn", ALL_PRESETS)
def test_power_must_be_at_least_one(fn):
    _raises(ValueError, "power: expected a finite number >= 1", fn, X3, Y3, power=0.5)


@pytest.mark.parametrize("fn", ALL_PRESETS)
def test_power_must_be_a_number(fn):
    _raises(TypeError, "power: expected a real number", fn, X3, Y3, power=None)


@pytest.mark.parametrize("fn", ALL_PRESETS)
def test_reducer_must_be_known(fn):
    _raises(ValueError, "reducer: expected one of", fn, X3, Y3, reducer="MeanReducer")


def test_type_of_triplets_must_be_known():
    _raises(ValueError, "type_of_triplets: expected one of", pml.triplet_margin_miner_loss,
            X3, Y3, type_of_triplets="semi-hard")


@pytest.mark.parametrize("fn", [pml.triplet_margin_miner_loss, pml.semihard_triplet_margin_loss])
def test_miner_margin_must_be_nonnegative(fn):
    _raises(ValueError, "miner_margin: expected a finite number >= 0", fn, X3, Y3,
            miner_margin=-0.2)


@pytest.mark.parametrize("name", ["pos_margin", "neg_margin"])
def test_contrastive_margins_must_be_nonnegative(name):
    _raises(ValueError, f"{name}: expected a finite number >= 0", pml.contrastive_loss, X3,
            Y3, **{name: -1.0})


def test_value_and_grad_accepts_the_presets_and_returns_none_for_labels():
    for fn in ALL_PRESETS:
        value, grads = rl.value_and_grad(fn, X3, Y3)
        assert value.shape == () and len(grads) == 2 and grads[1] is None
        assert grads[0].shape == X3.shape
        assert to_numpy(grads[0]).dtype == np.float64
