"""Ties are judged by the reference: a candidate gradient in the subdifferential agrees.

At an exact tie (equal hardest positives, a hinge exactly at 0, a linear
contrastive hinge exactly at its margin, a distance exactly 0) every convex
combination of the tied choices' gradients is a valid subgradient. The
candidates here are written in the style of common public implementations
(torch ``max(dim=1)``, ``amax``, ``clamp(min=0)``, NumPy ``argmax``); each
must agree where it picks another valid subgradient than the reference, and
a gradient off the subdifferential must still be reported.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import strategies as st

import refloss as rl
from refloss.testing import crosscheck

torch = pytest.importorskip("torch")

# anchor 0 has two positives at distance exactly 1 (rows 1 and 2); refloss's
# distance GEMM rounds d(0, 1) one ulp below d(0, 2) here (B = 5), so the
# reference gives the tie to index 2, torch's exact cdist to index 1
TIED = {"x": np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.5, 0.0], [-1.5, -2.0]]),
        "labels": np.array([0, 0, 0, 1, 1])}
# the same shape with the negatives far away: every soft-margin slope is
# below 1e-3, under the old kink detector's floor
TIED_FAR = {"x": np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-9.0, 0.0], [-9.0, -1.0]]),
            "labels": np.array([0, 0, 0, 1, 1])}


def torch_batch_hard_max(x, labels, margin=1.0, soft=False):
    """The common re-ID form: masked cdist, ``max(dim=1)`` / ``min(dim=1)``."""
    d = torch.cdist(x, x)
    same = labels[:, None] == labels[None, :]
    pos = same & ~torch.eye(len(labels), dtype=torch.bool)
    hardest_p = torch.where(pos, d, torch.zeros_like(d)).max(dim=1).values
    hardest_n = torch.where(~same, d, torch.full_like(d, 1e9)).min(dim=1).values
    valid = pos.any(dim=1) & (~same).any(dim=1)
    z = hardest_p - hardest_n
    terms = torch.nn.functional.softplus(z) if soft else torch.relu(z + margin)
    return terms[valid].mean() if valid.any() else x.sum() * 0


def torch_batch_hard_soft(x, labels):
    return torch_batch_hard_max(x, labels, soft=True)


def torch_batch_hard_amax(x, labels, soft=False):
    """``amax`` splits a tied maximum's gradient evenly."""
    d = torch.cdist(x, x)
    same = labels[:, None] == labels[None, :]
    pos = same & ~torch.eye(len(labels), dtype=torch.bool)
    hardest_p = torch.where(pos, d, torch.zeros_like(d)).amax(dim=1)
    hardest_n = torch.where(~same, d, torch.full_like(d, 1e9)).amin(dim=1)
    valid = pos.any(dim=1) & (~same).any(dim=1)
    z = hardest_p - hardest_n
    return (torch.nn.functional.softplus(z) if soft else torch.relu(z + 1.0))[valid].mean()


def torch_batch_hard_amax_soft(x, labels):
    return torch_batch_hard_amax(x, labels, soft=True)


def torch_batch_hard_every_tie(x, labels):
    """Wrong: the value is right, but every tied positive gets the whole
    gradient (a sum of the vertices, not a convex combination)."""
    d = torch.cdist(x, x)
    same = labels[:, None] == labels[None, :]
    pos = same & ~torch.eye(len(labels), dtype=torch.bool)
    hardest = torch.where(pos, d, torch.zeros_like(d)).amax(dim=1, keepdim=True)
    tied = torch.where(pos & (d == hardest.detach()), d, torch.zeros_like(d)).sum(dim=1)
    hardest_p = hardest[:, 0].detach() + (tied - tied.detach())
    hardest_n = torch.where(~same, d, torch.full_like(d, 1e9)).amin(dim=1)
    valid = pos.any(dim=1) & (~same).any(dim=1)
    return torch.relu(hardest_p - hardest_n + 1.0)[valid].mean()


def np_batch_hard_last(x, labels):
    """NumPy, ties to the highest index (argmax of the reversed row)."""
    diff = x[:, None, :] - x[None, :, :]
    d = np.sqrt(np.sum(diff * diff, axis=-1))
    terms = []
    for a in range(len(labels)):
        pos = [p for p in range(len(labels)) if p != a and labels[p] == labels[a]]
        neg = [n for n in range(len(labels)) if labels[n] != labels[a]]
        if pos and neg:
            p = max(reversed(pos), key=lambda j: d[a, j])
            n = min(reversed(neg), key=lambda j: d[a, j])
            terms.append(max((d[a, p] + 1.0) - d[a, n], 0.0))
    return np.asarray(np.mean(terms) if terms else 0.0)


def torch_contrastive_linear_clamp(a, b, same):
    """pytorch-metric-learning style linear hinge with ``clamp(min=0)``:
    gradient 1 at the margin, where the reference's relu passes 0."""
    d = torch.linalg.vector_norm(a - b, dim=1)
    return torch.where(same, d, torch.clamp(1.0 - d, min=0)).mean()


def _at(inputs):
    return st.just(inputs)


@pytest.mark.parametrize("seed", range(10))
def test_torch_max_batch_hard_agrees_over_the_search(seed):
    report = crosscheck(torch_batch_hard_max, "batch_hard_triplet_loss", framework="torch",
                        seed=seed, max_examples=15)
    assert report.agrees, str(report)


def test_torch_max_batch_hard_at_a_tie_it_breaks_otherwise():
    report = crosscheck(torch_batch_hard_max, "batch_hard_triplet_loss", framework="torch",
                        inputs=_at(TIED), max_examples=1)
    assert report.agrees, str(report)
    assert report.at_ties == 1 and report.skipped == 0
    assert report.tie_note == ("at a tie of anchor 0's hardest positives (indices 1, 2), "
                               "candidate gives the whole gradient to index 1, reference "
                               "gives it to index 2")


def test_amax_split_agrees_and_says_so():
    report = crosscheck(torch_batch_hard_amax, "batch_hard_triplet_loss", framework="torch",
                        inputs=_at(TIED), max_examples=1)
    assert report.agrees, str(report)
    assert "candidate splits it 0.5 to 1 / 0.5 to 2" in report.tie_note


def test_soft_margin_batch_hard_at_a_tie_with_a_tiny_slope_agrees():
    # the slopes are ~3e-4: the old kink probe's 1e-3 floor called this a difference
    report = crosscheck(torch_batch_hard_amax_soft, "batch_hard_triplet_loss",
                        framework="torch", reference_kwargs={"soft": True},
                        inputs=_at(TIED_FAR), max_examples=1)
    assert report.agrees, str(report)
    assert report.at_ties == 1


@pytest.mark.parametrize("seed", range(3))
def test_soft_margin_batch_hard_agrees_over_the_search(seed):
    report = crosscheck(torch_batch_hard_soft, "batch_hard_triplet_loss", framework="torch",
                        reference_kwargs={"soft": True}, seed=seed, max_examples=15)
    assert report.agrees, str(report)


def test_a_gradient_off_the_subdifferential_is_reported():
    report = crosscheck(torch_batch_hard_every_tie, "batch_hard_triplet_loss",
                        framework="torch", inputs=_at(TIED), max_examples=1)
    assert not report.agrees
    cx = report.counterexample
    assert cx.kind == "gradient" and cx.role == "x"
    assert cx.candidate_value[0] == pytest.approx(cx.reference_value[0])
    assert "off the reference's subdifferential at its ties (anchor 0)" in report.difference


def test_finite_differences_at_a_tie_lie_in_the_reference_range():
    report = crosscheck(np_batch_hard_last, "batch_hard_triplet_loss", inputs=_at(TIED),
                        max_examples=1)
    assert report.agrees, str(report)
    assert report.grad_method == "finite differences"
    assert report.at_ties == 1 and "lies in the reference's range" in report.tie_note


def test_linear_contrastive_hinge_at_its_margin_agrees():
    at_margin = {"a": np.array([[0.0, 0.0]]), "b": np.array([[1.0, 0.0]]),
                 "same": np.array([False])}
    report = crosscheck(torch_contrastive_linear_clamp, "contrastive_loss", framework="torch",
                        reference_kwargs={"power": 1}, inputs=_at(at_margin),
                        max_examples=1)
    assert report.agrees, str(report)
    assert report.tie_note == ("at a hinge exactly at its margin (pair 0), candidate passes "
                               "gradient -1 through it, reference 0")


def test_eps_in_the_difference_is_a_subgradient_at_distance_zero():
    # torch's pairwise_distance adds 1e-6 to a - b: at a = b its gradient is
    # the unit vector (1, 1)/sqrt(2), inside the euclidean distance's ball
    def eps_distance(anchor, positive, negative):
        d_ap = torch.nn.functional.pairwise_distance(anchor, positive)
        d_an = torch.nn.functional.pairwise_distance(anchor, negative)
        return torch.relu(d_ap - d_an + 1.0).mean()

    same_point = {"anchor": np.array([[1.0, 1.0]]), "positive": np.array([[1.0, 1.0]]),
                  "negative": np.array([[1.0, 1.5]])}
    report = crosscheck(eps_distance, "triplet_margin_loss", framework="torch",
                        inputs=_at(same_point), max_examples=1, grad=True)
    # the value differs by the eps itself (1.4e-6 relative), the gradient is a subgradient
    assert not report.agrees and report.counterexample.kind == "value"
    loose = crosscheck(eps_distance, rl.triplet_margin_loss, framework="torch",
                       dtype="float32", inputs=_at(same_point), max_examples=1)
    assert loose.agrees, str(loose)
    assert "d(anchor 0, positive 0) = 0" in loose.tie_note


def torch_batch_hard_reid_amax(x, labels):
    """The re-ID mask keeps the diagonal (the anchor is its own positive)."""
    d = torch.cdist(x, x)
    same = labels[:, None] == labels[None, :]
    hardest_p = torch.where(same, d, torch.zeros_like(d)).amax(dim=1)
    hardest_n = torch.where(~same, d, torch.full_like(d, 1e9)).amin(dim=1)
    valid = (~same).any(dim=1)
    return torch.relu(hardest_p - hardest_n + 1.0)[valid].mean()


def torch_hardest_negative_amin(x, labels):
    """All positive pairs, each with the anchor's nearest negative (amin)."""
    d = torch.cdist(x, x)
    same = labels[:, None] == labels[None, :]
    pos = same & ~torch.eye(len(labels), dtype=torch.bool)
    hardest_n = torch.where(~same, d, torch.full_like(d, 1e9)).amin(dim=1, keepdim=True)
    valid = pos & (~same).any(dim=1, keepdim=True)
    return torch.relu(d - hardest_n + 1.0)[valid].mean()


# anchor 0's two negatives (3, 4) sit at distance exactly 1.5
NEG_TIE = {"x": np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.5, 0.0], [0.0, -1.5]]),
           "labels": np.array([0, 0, 0, 1, 1])}


@pytest.mark.parametrize(("candidate", "reference", "kwargs"), [
    (torch_batch_hard_reid_amax, "batch_hard_triplet_loss", {"anchor_as_positive": True}),
    (torch_hardest_negative_amin, "hardest_negative_triplet_loss", {}),
], ids=["anchor_as_positive", "hardest_negative"])
def test_variant_references_judge_their_ties(candidate, reference, kwargs):
    report = crosscheck(candidate, reference, framework="torch", reference_kwargs=kwargs,
                        inputs=_at(NEG_TIE), max_examples=1)
    assert report.agrees, str(report)
    assert report.at_ties == 1 and report.tie_note.startswith("at a tie of ")
