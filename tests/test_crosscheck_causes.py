"""Named causes: a difference is explained by a known variant of the reference.

Each candidate is written here in the style of common public implementations
and carries one real variant: unordered anchor-positive pairs, a flipped
``same`` convention, a ``.detach()`` on the negative distance, Hadsell's ½.
The report must name that variant (checked on the counterexample and on
fresh inputs), not a ratio that holds on one input only; "k × reference"
appears only when one k holds on every example, and a difference no
hypothesis explains is left in numbers.
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


def np_center_loss_times_three(x, labels, centers):
    return 1.5 * np.sum((x - centers[labels]) ** 2)


def np_center_loss_plus_one(x, labels, centers):
    return 0.5 * np.sum((x - centers[labels]) ** 2) + 1.0


def test_unordered_pairs_are_named():
    report = crosscheck(torch_batch_all_unordered, "batch_all_triplet_loss",
                        framework="torch", inputs=THREE, max_examples=1)
    assert not report.agrees and report.counterexample.kind == "value"
    assert "cause: candidate counts each unordered anchor-positive pair once" in \
        report.difference, report.difference
    assert "×" not in report.difference  # not "5/4 × reference"


def test_flipped_contrastive_label_is_named():
    report = crosscheck(torch_contrastive_flipped, "contrastive_loss", framework="torch",
                        max_examples=EXAMPLES)
    assert not report.agrees and report.counterexample.size == 1
    assert "cause: candidate reads `same` the other way round" in report.difference
    assert "×" not in report.difference  # not "0 × reference"


def test_detached_negative_path_is_named():
    report = crosscheck(torch_batch_hard_detached, "batch_hard_triplet_loss",
                        framework="torch", inputs=THREE, max_examples=1)
    assert not report.agrees and report.counterexample.kind == "gradient"
    assert "cause: candidate's gradient does not flow through the negative distances" in \
        report.difference, report.difference
    assert "×" not in report.difference  # not "2 × reference"


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
