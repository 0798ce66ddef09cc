"""Named causes: a difference is explained by a known variant of the reference.

Each candidate is written here in the style of common public implementations
and carries one real variant: unordered anchor-positive pairs, a flipped
``same`` convention, a ``.detach()`` on the negative distance, Hadsell's ½.
The report must name that variant (checked on the counterexample and on
fresh inputs), not a ratio that holds on one input only; "k × reference"
appears only when one k holds on every example, and a difference no
hypothesis explains is left in numbers.

The eps causes: ``sqrt(d2 + eps)`` (inside the sqrt), ``d2.clamp(min=eps)
.sqrt()`` (clamped) and torch's eps on the differences differ only at
duplicate rows or nearly so; the search draws duplicates, and a pair closer
than √eps tells the first two apart. A candidate with two faults gets a first
counterexample that one of them explains alone.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import strategies as st

from refloss.testing import crosscheck

torch = pytest.importorskip("torch")

EXAMPLES = 25

# explicit counterexamples keep these tests cheap (Hypothesis's shrinking is
# most of a search's time); the causes are still checked on fresh inputs
THREE = st.just({"x": np.array([[0.0], [1.0], [1.5]]), "labels": np.array([0, 0, 1])})


def _masks(labels):
    same = labels[:, None] == labels[None, :]
    return same & ~torch.eye(len(labels), dtype=torch.bool), ~same


def torch_batch_all_unordered(x, labels, margin=1.0):
    """omoindrot-style 3-D tensor, but the positive mask is ``triu``: each
    positive pair once (an easy slip when the mask is built from pairs)."""
    d = torch.cdist(x, x)
    same = labels[:, None] == labels[None, :]
    pos = torch.triu(same, diagonal=1)
    valid = pos[:, :, None] & (~same)[:, None, :]
    t = torch.relu(d[:, :, None] - d[:, None, :] + margin) * valid
    return t.sum() / (t > 0).sum().clamp(min=1)


def torch_contrastive_flipped(a, b, same):
    """Hadsell's convention (label 1 = dissimilar) fed TensorFlow's labels."""
    d = torch.linalg.vector_norm(a - b, dim=1)
    dissimilar = same
    return torch.where(dissimilar, torch.relu(1.0 - d) ** 2, d * d).mean()


def torch_hadsell(a, b, same):
    """Hadsell et al. (2006), Eq. 4: ½·D² + ½·max(0, m − D)²."""
    d = torch.linalg.vector_norm(a - b, dim=1)
    return torch.mean(0.5 * torch.where(same, d ** 2, torch.clamp(1.0 - d, min=0) ** 2))


def torch_batch_hard_detached(x, labels):
    """Batch-hard whose hardest-negative distance is ``.detach()``-ed."""
    d = torch.cdist(x, x)
    pos, neg = _masks(labels)
    hardest_p = torch.where(pos, d, torch.zeros_like(d)).max(dim=1).values
    hardest_n = torch.where(neg, d, torch.full_like(d, 1e9)).min(dim=1).values.detach()
    valid = pos.any(dim=1) & neg.any(dim=1)
    terms = torch.relu(hardest_p - hardest_n + 1.0)[valid]
    return terms.mean() if terms.numel() else x.sum() * 0


def torch_batch_hard_squared_sum(x, labels):
    """Two slips at once: squared distances and a sum."""
    d = torch.cdist(x, x) ** 2
    pos, neg = _masks(labels)
    hardest_p = torch.where(pos, d, torch.zeros_like(d)).max(dim=1).values
    hardest_n = torch.where(neg, d, torch.full_like(d, 1e9)).min(dim=1).values
    valid = pos.any(dim=1) & neg.any(dim=1)
    return torch.relu(hardest_p - hardest_n + 1.0)[valid].sum()


def _d2(x):
    return ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)


def _batch_hard_from(d, labels):
    pos, neg = _masks(labels)
    hardest_p = torch.where(pos, d, torch.zeros_like(d)).amax(dim=1)
    hardest_n = torch.where(neg, d, torch.full_like(d, 1e9)).amin(dim=1)
    valid = pos.any(dim=1) & neg.any(dim=1)
    terms = torch.relu(hardest_p - hardest_n + 1.0)[valid]
    return terms.mean() if terms.numel() else d.sum() * 0


def torch_batch_hard_eps_inside(x, labels):
    """The usual guard against sqrt's infinite slope at 0: eps inside."""
    return _batch_hard_from(torch.sqrt(_d2(x) + 1e-9), labels)


def torch_batch_hard_clamped(x, labels):
    """Re-ID style: the expanded d² clamped at 1e-12, then sqrt."""
    sq = (x ** 2).sum(dim=1, keepdim=True)
    d2 = sq + sq.t() - 2.0 * x @ x.t()
    return _batch_hard_from(d2.clamp(min=1e-12).sqrt(), labels)


def _contrastive_from(d, same, half=1.0):
    return torch.mean(half * torch.where(same, d ** 2, torch.relu(1.0 - d) ** 2))


def torch_contrastive_eps_inside(a, b, same):
    return _contrastive_from(torch.sqrt(((a - b) ** 2).sum(dim=1) + 1e-9), same)


def torch_contrastive_clamped(a, b, same):
    return _contrastive_from(((a - b) ** 2).sum(dim=1).clamp(min=1e-12).sqrt(), same)


def torch_hadsell_eps_inside(a, b, same):
    """Two faults against the default reference: Hadsell's ½ and an eps."""
    return _contrastive_from(torch.sqrt(((a - b) ** 2).sum(dim=1) + 1e-9), same, half=0.5)


def torch_triplet_eps_inside(anchor, positive, negative):
    d_ap = torch.sqrt(((anchor - positive) ** 2).sum(dim=1) + 1e-12)
    d_an = torch.sqrt(((anchor - negative) ** 2).sum(dim=1) + 1e-12)
    return torch.relu(d_ap - d_an + 1.0).mean()


def np_center_loss_times_three(x, labels, centers):
    return 1.5 * np.sum((x - centers[labels]) ** 2)


def np_center_loss_plus_one(x, labels, centers):
    return 0.5 * np.sum((x - centers[labels]) ** 2) + 1.0


@pytest.mark.parametrize(("candidate", "reference", "kind", "cause"), [
    pytest.param(torch_batch_all_unordered, "batch_all_triplet_loss", "value",
                 "cause: candidate counts each unordered anchor-positive pair once",
                 id="unordered-pairs"),  # not "5/4 × reference"
    pytest.param(torch_batch_hard_detached, "batch_hard_triplet_loss", "gradient",
                 "cause: candidate's gradient does not flow through the negative distances",
                 id="detached-negative"),  # not "2 × reference"
])
def test_a_variant_on_one_counterexample_is_named_not_a_ratio(candidate, reference, kind,
                                                               cause):
    report = crosscheck(candidate, reference, framework="torch", inputs=THREE, max_examples=1)
    assert not report.agrees and report.counterexample.kind == kind
    assert cause in report.difference, report.difference
    assert "×" not in report.difference


def test_flipped_contrastive_label_is_named():
    report = crosscheck(torch_contrastive_flipped, "contrastive_loss", framework="torch",
                        max_examples=EXAMPLES)
    assert not report.agrees and report.counterexample.size == 1
    assert "cause: candidate reads `same` the other way round" in report.difference
    assert "×" not in report.difference  # not "0 × reference"


def test_hadsell_half_agrees_with_the_scaled_reference():
    report = crosscheck(torch_hadsell, "contrastive_loss", framework="torch",
                        reference_kwargs={"scale": 0.5}, max_examples=EXAMPLES)
    assert report.agrees, str(report)


def test_hadsell_half_against_the_default_reference_is_named():
    report = crosscheck(torch_hadsell, "contrastive_loss", framework="torch",
                        max_examples=EXAMPLES)
    assert not report.agrees
    assert "cause: candidate has Hadsell's ½ factor (contrastive_loss(scale=0.5))" in \
        report.difference


def test_two_causes_at_once_are_both_named():
    report = crosscheck(torch_batch_hard_squared_sum, "batch_hard_triplet_loss",
                        framework="torch", inputs=THREE, max_examples=1)
    assert not report.agrees
    cause = report.counterexample.cause
    assert cause.startswith("two causes:") and "; two causes:" in report.difference
    assert "this counterexample mixes them, and no example tried shows one alone" in cause
    assert "squared euclidean distances" in cause and "reduction 'sum'" in cause


def test_a_constant_factor_on_every_example_is_given_as_k_times():
    centers = {"x": np.array([[1.0, 0.0], [0.0, 2.0]]), "labels": np.array([0, 1]),
               "centers": np.array([[0.0, 0.0], [1.0, 1.0]])}
    report = crosscheck(np_center_loss_times_three, "center_loss", inputs=st.just(centers),
                        max_examples=1)
    assert not report.agrees
    assert "cause: candidate = 3 × reference on every example (7 tried)" in \
        report.difference


def test_no_cause_leaves_the_numbers():
    report = crosscheck(np_center_loss_plus_one, "center_loss", max_examples=EXAMPLES)
    assert not report.agrees
    assert report.counterexample.cause == ""
    assert "cause" not in report.difference and "×" not in report.difference


def test_the_cause_survives_save_and_load(tmp_path):
    from refloss.testing import load_counterexample

    report = crosscheck(torch_contrastive_flipped, "contrastive_loss", framework="torch",
                        max_examples=EXAMPLES)
    cx, _ = load_counterexample(report.save(tmp_path / "flip.npz"))
    assert cx.cause == report.counterexample.cause != ""


def test_a_compat_preset_that_matches_is_named():
    losses = pytest.importorskip("pytorch_metric_learning.losses")
    loss = losses.ContrastiveLoss()

    def pml(embeddings, labels):
        return loss(embeddings, labels)

    batch = st.just({"x": np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
                     "labels": np.array([0, 0, 1])})
    report = crosscheck(pml, "contrastive_loss_all_pairs", framework="torch",
                        reference_kwargs={"power": 1, "normalize": True,
                                          "reduction": "mean_nonzero"},
                        inputs=batch, max_examples=1)
    assert not report.agrees
    assert ("cause: candidate computes the compat preset refloss.compat.pml.contrastive_loss"
            " with its defaults") in report.difference, report.difference


# a duplicate pair of two classes, no other tie, every hinge open: the eps
# shows at the duplicate only
DUPLICATES = {"x": np.array([[0.0, 1.0], [0.0, 1.0], [0.5, 1.0], [2.0, 0.0], [1.0, -0.5]]),
              "labels": np.array([0, 1, 1, 0, 0])}


@pytest.mark.parametrize(("candidate", "cause"), [
    pytest.param(torch_contrastive_eps_inside,
                 "cause: candidate adds eps 1e-9 inside the sqrt: sqrt(‖a−b‖² + 1e-9) (explains "
                 "all 7 examples tried, and a pair closer than √eps tells it from the squared "
                 "distance clamped at 1e-9)", id="eps-inside"),
    pytest.param(torch_contrastive_clamped,
                 "cause: candidate clamps the squared distance at 1e-12 before the sqrt: "
                 "sqrt(max(‖a−b‖², 1e-12)) (explains all 7 examples tried, and a pair closer "
                 "than √eps tells it from eps 1e-12 inside the sqrt)", id="clamped"),
])
def test_an_eps_cause_is_named_and_told_from_the_other(candidate, cause):
    report = crosscheck(candidate, "contrastive_loss", framework="torch", max_examples=EXAMPLES)
    assert not report.agrees and "a = b" in report.difference  # the search reached a = b
    assert cause in report.difference, report.difference


@pytest.mark.parametrize(("candidate", "words"), [
    (torch_batch_hard_eps_inside, "cause: candidate adds eps 1e-9 inside the sqrt"),
    (torch_batch_hard_clamped, "cause: candidate clamps the squared distance at 1e-12"),
])
def test_eps_causes_are_named_on_a_labeled_batch(candidate, words):
    report = crosscheck(candidate, "batch_hard_triplet_loss", framework="torch",
                        inputs=st.just(DUPLICATES), max_examples=1)
    assert not report.agrees and report.counterexample.kind == "value"
    assert words in report.difference and "tells it from" in report.difference, \
        report.difference


def test_eps_inside_is_told_from_torchs_eps_on_the_differences():
    # in one dimension, d(x, x) = √1e-12 = 1e-6·√1, torch's eps on the
    # differences: the fresh inputs (two or three dimensions) tell them apart
    report = crosscheck(torch_triplet_eps_inside, "triplet_margin_loss", framework="torch",
                        max_examples=EXAMPLES)
    assert not report.agrees
    assert "cause: candidate adds eps 1e-12 inside the sqrt" in report.difference, \
        report.difference
    assert "on the differences" not in report.difference


def test_the_eps_variants_match_hand_written_losses_value_and_gradient():
    import refloss as rl
    from refloss.testing._variants import evaluate

    x, labels = DUPLICATES["x"], DUPLICATES["labels"]
    a, b = x[:3], np.array([[0.0, 1.0], [0.25, 0.0], [0.0, 1.0]])
    same = np.array([True, False, False])
    cases = [
        (torch_batch_hard_eps_inside, rl.batch_hard_triplet_loss, "inside", 1e-9,
         {"x": x, "labels": labels}),
        (torch_batch_hard_clamped, rl.batch_hard_triplet_loss, "clamp", 1e-12,
         {"x": x, "labels": labels}),
        (torch_contrastive_eps_inside, rl.contrastive_loss, "inside", 1e-9,
         {"a": a, "b": b, "same": same}),
        (torch_contrastive_clamped, rl.contrastive_loss, "clamp", 1e-12,
         {"a": a, "b": b, "same": same}),
    ]
    for candidate, reference, mode, eps, inputs in cases:
        tensors = {k: torch.tensor(v, requires_grad=v.dtype == np.float64)
                   for k, v in inputs.items()}
        value = candidate(*tensors.values())
        value.backward(torch.tensor(1.5, dtype=torch.float64))
        (got,), grads = evaluate(reference, {}, inputs, 1.5, True, mode=mode, eps=eps)
        np.testing.assert_allclose(got, value.item(), rtol=1e-13, atol=0)
        for role, g in grads.items():
            np.testing.assert_allclose(g, tensors[role].grad.numpy(), rtol=1e-9, atol=1e-12)


def test_a_first_counterexample_isolates_one_of_two_causes():
    report = crosscheck(torch_hadsell_eps_inside, "contrastive_loss", framework="torch",
                        max_examples=EXAMPLES)
    assert not report.agrees and len(report.findings) == 2, str(report)
    first, second = (cx.cause for cx in report.findings)
    assert first.startswith("cause: candidate has Hadsell's ½ factor") and \
        "alone on this example" in first, first
    assert "eps" not in first and "mixes" not in first
    assert second.startswith("second cause: candidate adds eps 1e-9 inside the sqrt"), second
    assert "mixes" not in str(report)


def test_a_saved_report_keeps_the_cause_of_every_finding(tmp_path):
    import json

    report = crosscheck(torch_hadsell_eps_inside, "contrastive_loss", framework="torch",
                        max_examples=EXAMPLES)
    assert len(report.findings) == 2, str(report)
    path = report.save(tmp_path / "two.npz")
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
    assert meta["cause"] == report.findings[0].cause
    (other,) = meta["findings"]
    assert other["cause"] == report.findings[1].cause
    assert other["cause"].startswith("second cause: candidate adds eps 1e-9 inside the sqrt")
