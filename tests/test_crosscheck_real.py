"""The cross-check on code as people really write it.

Each candidate here is a short function or module written for this file in
the style of common public implementations: a positive mask reshaped with
``view(N, -1)``, a hand-written ``torch.autograd.Function`` whose backward
ignores ``grad_output``, a random semi-hard negative, a loss module with
constructor arguments and its own ``centers`` parameter, a loss returning
``(loss, n_triplets)`` or a value of shape (1,), pair labels with 1 meaning
"dissimilar". Each must be reported as what it is — without a wrapper.
"""

from __future__ import annotations

import numpy as np
import pytest

from refloss.testing import crosscheck, load_counterexample, replay
from refloss.testing import strategies as rst

torch = pytest.importorskip("torch")

# --------------------------------------------------------------------------
# shared pieces (torch, float64)


def distances(x):
    """Euclidean distances with gradient 0 at distance 0 (as the reference)."""
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return torch.where(d2 > 0, d2.clamp_min(1e-300).sqrt(), torch.zeros_like(d2))


def counts_of(labels):
    return np.unique(np.asarray(labels), return_counts=True)[1]


# --------------------------------------------------------------------------
# point 1: a crash does not end the search


def view_batch_hard(embeddings, labels, margin=1.0):
    """Batch-hard with the positive/negative masks reshaped by ``view(N, -1)``:
    right on balanced batches, raises when the counts do not divide, silently
    wrong when they do (e.g. classes of 3, 1, 1, 1)."""
    n = labels.shape[0]
    d = distances(embeddings)
    same = labels[:, None] == labels[None, :]
    pos = same & ~torch.eye(n, dtype=torch.bool)
    hardest_pos = d[pos].view(n, -1).max(1).values
    hardest_neg = d[~same].view(n, -1).min(1).values
    return torch.relu(hardest_pos - hardest_neg + margin).mean()


def test_view_reshape_is_caught_as_a_crash_and_as_a_wrong_value():
    report = crosscheck(view_batch_hard, "batch_hard_triplet_loss", framework="torch",
                        grad=False, ties=False, max_examples=100,
                        domain={"batch_size": (2, 8), "min_classes": 2})
    assert report.verdict_name == "DISAGREE"
    assert set(report.kinds) == {"value", "raises"}, str(report)
    value, crash = report.findings
    # the wrong value sits on an unbalanced batch whose counts divide evenly
    counts = counts_of(value.inputs["labels"])
    assert np.unique(counts).size > 1
    assert np.sum(counts * (counts - 1)) % counts.sum() == 0
    # the crash: torch's own message, the candidate's own line, shrunk
    assert crash.message.startswith("raised RuntimeError: shape '[")
    assert any("view_batch_hard" in f and ".view(n, -1)" in f for f in crash.frames)
    assert crash.size <= 3 and crash.inputs["x"].shape[1] == 1
    text = str(report)
    assert "verdict: DISAGREE (value, raises)" in text
    assert "also a crash: raised RuntimeError" in text


def test_view_reshape_agrees_inside_the_balanced_domain():
    report = crosscheck(view_batch_hard, "batch_hard_triplet_loss", framework="torch",
                        grad=False, ties=False, max_examples=20,
                        domain={"balanced": True, "min_classes": 2, "min_per_class": 2})
    assert report.agrees, str(report)
    assert "domain: min_classes=2, min_per_class=2, balanced=True" in str(report)


def test_shrinking_stays_1_minimal_inside_the_domain():
    def self_positive_batch_all(x, labels, margin=1.0):
        d = distances(x)
        same = labels[:, None] == labels[None, :]
        t = torch.relu(d[:, :, None] - d[:, None, :] + margin)
        t = t * (same[:, :, None] & ~same[:, None, :])  # p == a kept: the bug
        k = (t > 0).sum()
        return t.sum() / k if k else t.sum()

    report = crosscheck(self_positive_batch_all, "batch_all_triplet_loss",
                        framework="torch", max_examples=30, grad=False,
                        domain={"balanced": True, "min_per_class": 2, "min_classes": 2})
    assert report.kinds[0] == "value"
    counts = counts_of(report.counterexample.inputs["labels"])
    # inside the domain and as small as it allows: 2 classes of 2
    assert counts.tolist() == [2, 2]


# --------------------------------------------------------------------------
# point 4: a backward that ignores grad_output


class CenterLossFunction(torch.autograd.Function):
    """½ Σ ‖x − c_y‖² with a hand-written backward (the common pattern)."""

    @staticmethod
    def forward(ctx, x, labels, centers):
        ctx.save_for_backward(x, labels, centers)
        return 0.5 * ((x - centers[labels]) ** 2).sum()

    @staticmethod
    def backward(ctx, grad_output):
        x, labels, centers = ctx.saved_tensors
        diff = x - centers[labels]
        grad_centers = torch.zeros_like(centers).index_add(0, labels, -diff)
        return diff, None, grad_centers  # grad_output forgotten


class ScaledCenterLossFunction(CenterLossFunction):
    @staticmethod
    def backward(ctx, grad_output):
        gx, _, gc = CenterLossFunction.backward(ctx, grad_output)
        return grad_output * gx, None, grad_output * gc


def test_backward_ignoring_grad_output_is_caught_in_words():
    report = crosscheck(CenterLossFunction.apply, "center_loss", framework="torch",
                        max_examples=10)
    assert report.kinds == ("gradient",), str(report)
    assert report.difference.startswith(
        "gradient does not scale with the upstream gradient: the candidate's gradient of "
        "x is the same for grad_output = ")
    assert "(its backward ignores grad_output)" in report.difference
    assert float(report.counterexample.cotangent) != 1.0


class PerSampleCenterLossFunction(torch.autograd.Function):
    """½ ‖x_i − c_{y_i}‖² per sample (reduction="none"), backward as if the
    upstream gradient were all ones."""

    @staticmethod
    def forward(ctx, x, labels, centers):
        ctx.save_for_backward(x, labels, centers)
        return 0.5 * ((x - centers[labels]) ** 2).sum(1)

    @staticmethod
    def backward(ctx, grad_output):
        return CenterLossFunction.backward(ctx, grad_output)


def test_per_sample_backward_ignoring_grad_output_is_caught():
    report = crosscheck(PerSampleCenterLossFunction.apply, "center_loss", framework="torch",
                        reference_kwargs={"reduction": "none"}, max_examples=10)
    assert report.kinds == ("gradient",), str(report)
    assert report.difference.startswith(
        "gradient does not scale with the upstream gradient: the candidate's gradient of x "
        "is the same for a random grad_output as for a grad_output of ones")


def test_backward_scaling_grad_output_agrees():
    report = crosscheck(ScaledCenterLossFunction.apply, "center_loss", framework="torch",
                        max_examples=10)
    assert report.agrees, str(report)


# --------------------------------------------------------------------------
# point 5: nondeterminism


def random_semihard(embeddings, labels, margin=1.0):
    """For each positive pair, a random semi-hard negative (d_ap < d_an <
    d_ap + m); without one, TensorFlow's choice (the nearest farther negative,
    else the farthest)."""
    d = distances(embeddings)
    n = labels.shape[0]
    terms = []
    for a in range(n):
        negs = [k for k in range(n) if labels[k] != labels[a]]
        if not negs:
            continue
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            semi = [k for k in negs if d[a, p] < d[a, k] < d[a, p] + margin]
            if semi:
                k = semi[int(torch.randint(len(semi), ()))]
            else:
                row = d[a].tolist()
                farther = [k for k in negs if row[k] > row[p]]
                k = (min(farther, key=row.__getitem__) if farther
                     else max(negs, key=row.__getitem__))
            terms.append(torch.relu(d[a, p] - d[a, k] + margin))
    return torch.stack(terms).mean() if terms else embeddings.sum() * 0


def random_any_negative(embeddings, labels, margin=1.0):
    """A random negative of any kind per positive pair (not semi-hard)."""
    d = distances(embeddings)
    n = labels.shape[0]
    terms = []
    for a in range(n):
        negs = [k for k in range(n) if labels[k] != labels[a]]
        for p in range(n):
            if negs and p != a and labels[p] == labels[a]:
                k = negs[int(torch.randint(len(negs), ()))]
                terms.append(torch.relu(d[a, p] - d[a, k] + margin))
    return torch.stack(terms).mean() if terms else embeddings.sum() * 0


# a margin wide enough (coordinates lie in [-10, 10]) that pairs have several
# semi-hard negatives to choose from
WIDE_MARGIN = {"reference_kwargs": {"margin": 8.0}, "candidate_kwargs": {"margin": 8.0},
               "domain": {"batch_size": (4, 8)}}


def test_random_semihard_is_nondeterministic_within_the_admissible_range():
    torch.manual_seed(0)  # the candidates draw from torch's global generator
    report = crosscheck(random_semihard, "semihard_triplet_loss", framework="torch",
                        ties=False, max_examples=25, **WIDE_MARGIN)
    assert report.verdict == "nondeterministic" and report.verdict_name == \
        "NONDETERMINISTIC", str(report)
    assert not report.agrees
    cx = report.counterexample
    assert cx.kind == "nondeterministic" and cx.second_value
    assert "on the same input; both lie in [" in report.difference
    assert "a random semi-hard negative per positive pair can give" in report.difference


def test_random_negative_of_any_kind_falls_outside_the_admissible_range():
    torch.manual_seed(0)
    report = crosscheck(random_any_negative, "semihard_triplet_loss", framework="torch",
                        ties=False, max_examples=40, **WIDE_MARGIN)
    assert report.verdict == "disagree", str(report)
    assert "value" in report.kinds and "nondeterministic" in report.kinds
    assert "lies outside [" in report.difference


def random_hard_negative(embeddings, labels, margin=1.0):
    """For each positive pair, a random negative that violates the margin."""
    d = distances(embeddings)
    n = labels.shape[0]
    terms = []
    for a in range(n):
        row = d[a].tolist()
        negs = [k for k in range(n) if labels[k] != labels[a]]
        for p in range(n):
            if not negs or p == a or labels[p] != labels[a]:
                continue
            hard = [k for k in negs if row[k] < row[p] + margin] or negs
            k = hard[int(torch.randint(len(hard), ()))]
            terms.append(torch.relu(d[a, p] - d[a, k] + margin))
    return torch.stack(terms).mean() if terms else embeddings.sum() * 0


def test_random_hard_negative_is_judged_against_hardest_negative():
    torch.manual_seed(0)
    report = crosscheck(random_hard_negative, "hardest_negative_triplet_loss",
                        framework="torch", ties=False, max_examples=25, **WIDE_MARGIN)
    assert report.verdict_name == "NONDETERMINISTIC", str(report)
    assert "a random margin-violating negative per positive pair" in report.difference


def test_reseeding_makes_a_seeded_random_choice_one_function():
    report = crosscheck(random_semihard, "semihard_triplet_loss", framework="torch",
                        ties=False, max_examples=8, reseed=True, grad=False,
                        reference_kwargs={"margin": 8.0}, candidate_kwargs={"margin": 8.0},
                        domain={"batch_size": (4, 6)})
    # one function now, whose random choice is not the reference's nearest one
    assert report.kinds == ("value",), str(report)


# --------------------------------------------------------------------------
# point 7: no glue


class BatchAllLoss(torch.nn.Module):
    """A loss module with constructor arguments returning (loss, n_triplets)."""

    def __init__(self, margin, *, with_count=False, as_vector=False):
        super().__init__()
        self.margin, self.with_count, self.as_vector = margin, with_count, as_vector

    def forward(self, embeddings, labels):
        d = distances(embeddings)
        same = labels[:, None] == labels[None, :]
        pos = same & ~torch.eye(labels.shape[0], dtype=torch.bool)
        mask = pos[:, :, None] & ~same[:, None, :]
        t = torch.relu(d[:, :, None] - d[:, None, :] + self.margin) * mask
        k = (t > 0).sum()
        loss = t.sum() / k if k else t.sum()
        if self.as_vector:
            loss = loss.reshape(1)
        return (loss, k) if self.with_count else loss


def test_class_candidate_with_init_kwargs():
    report = crosscheck(BatchAllLoss, "batch_all_triplet_loss", framework="torch",
                        init_kwargs={"margin": 0.2}, reference_kwargs={"margin": 0.2},
                        max_examples=10)
    assert report.agrees, str(report)


def test_tuple_output_with_output_index():
    module = BatchAllLoss(1.0, with_count=True)
    report = crosscheck(module, "batch_all_triplet_loss", framework="torch", output=0,
                        max_examples=10)
    assert report.agrees, str(report)
    # without it: a finding that says what came back
    report = crosscheck(module, "batch_all_triplet_loss", framework="torch", max_examples=3)
    assert report.kinds == ("raises",)
    assert "returned 2 outputs, expected 1" in report.difference
    assert "pick the value with output=N" in report.difference  # Python's words...
    from refloss.cli import cli_hints

    assert "pick the value with --output N" in cli_hints(report.difference)  # ...the CLI's


def test_value_of_shape_1_is_compared_as_the_scalar_with_a_note():
    report = crosscheck(BatchAllLoss(1.0, as_vector=True), "batch_all_triplet_loss",
                        framework="torch", max_examples=10)
    assert report.agrees, str(report)
    assert report.notes == ["the candidate returns its value with shape (1,); it is "
                            "compared as the scalar the reference returns"]
    assert "note: the candidate returns its value with shape (1,)" in str(report)


def hadsell_contrastive(left, right, label, margin=0.2):
    """Hadsell et al.: label 1 = dissimilar, float, ½, mean over the pairs."""
    d2 = ((left - right) ** 2).sum(1)
    d = torch.where(d2 > 0, d2.clamp_min(1e-300).sqrt(), torch.zeros_like(d2))
    loss = (1 - label) * d2 + label * torch.relu(margin - d) ** 2
    return 0.5 * loss.mean()


def test_same_as_one_means_different_against_the_hadsell_preset():
    # the preset's TensorFlow NaN at a = b is off: the candidate's gradient there is 0
    options = {"reference_kwargs": {"reproduce_nan": False}, "framework": "torch",
               "max_examples": 15}
    report = crosscheck(hadsell_contrastive, "compat.hadsell.contrastive_loss",
                        same="float,1=different", **options)
    assert report.agrees, str(report)
    report = crosscheck(hadsell_contrastive, "compat.hadsell.contrastive_loss", **options)
    assert not report.agrees  # told nothing, it gets True for a similar pair


def test_half_hadsell_agrees_with_the_scaled_contrastive_reference():
    report = crosscheck(hadsell_contrastive, "contrastive_loss", framework="torch",
                        reference_kwargs={"scale": 0.5, "margin": 0.2},
                        same="float,1=different", max_examples=15)
    assert report.agrees, str(report)


def test_same_flags_as_a_column():
    def contrastive_column(a, b, same):  # same: [B, 1] int, 1 = similar
        d2 = ((a - b) ** 2).sum(1, keepdim=True)
        d = torch.where(d2 > 0, d2.clamp_min(1e-300).sqrt(), torch.zeros_like(d2))
        s = same.to(a.dtype)
        return (s * d2 + (1 - s) * torch.relu(1.0 - d) ** 2).mean()

    report = crosscheck(contrastive_column, "contrastive_loss", framework="torch",
                        same="int,column", max_examples=10)
    assert report.agrees, str(report)


class CenterLossModule(torch.nn.Module):
    """Center loss holding its centers as a parameter (called as f(x, labels))."""

    def __init__(self, num_classes, dim):
        super().__init__()
        self.centers = torch.nn.Parameter(torch.randn(num_classes, dim, dtype=torch.float64))

    def forward(self, x, labels):
        return 0.5 * ((x - self.centers[labels]) ** 2).sum()


def test_module_centers_are_an_input_through_functional_call():
    module = CenterLossModule(3, 2)
    before = module.centers.detach().clone()
    report = crosscheck(module, "center_loss", framework="torch", max_examples=10)
    assert report.agrees, str(report)
    assert report.meta["cand_roles"] == ["x", "labels", "centers"]
    assert torch.equal(module.centers.detach(), before)  # the module is left as it was

    class Halved(CenterLossModule):
        def forward(self, x, labels):
            return 0.25 * ((x - self.centers[labels]) ** 2).sum()

    report = crosscheck(Halved(3, 2), "center_loss", framework="torch", max_examples=10)
    assert report.kinds == ("value",)
    assert report.counterexample.inputs["centers"].shape == (3, 2)


# --------------------------------------------------------------------------
# saving and replaying what is new


def test_a_crash_saves_and_replays(tmp_path):
    report = crosscheck(view_batch_hard, "batch_hard_triplet_loss", framework="torch",
                        grad=False, ties=False, max_examples=5)
    assert report.kinds == ("raises",)
    path = report.save(tmp_path / "crash.npz")
    cx, meta = load_counterexample(path)
    assert meta["verdict_name"] == "DISAGREE" and meta["kinds"] == ["raises"]
    assert cx.kind == "raises" and cx.frames == report.counterexample.frames
    again = replay(path, candidate=view_batch_hard)
    assert again.kinds == ("raises",)


# --------------------------------------------------------------------------
# the strategies' domains


def test_balanced_batches_draw_p_by_k():
    from hypothesis import given, settings

    @settings(max_examples=30, deadline=None)
    @given(rst.labeled_batches(balanced=True, min_classes=2, max_size=8))
    def check(batch):
        counts = counts_of(batch.labels)
        assert counts.size >= 2 and np.unique(counts).size == 1 and batch.x.shape[0] <= 8

    check()


def test_min_per_class_batches():
    from hypothesis import given, settings

    @settings(max_examples=30, deadline=None)
    @given(rst.labeled_batches(min_per_class=3, max_size=8))
    def check(batch):
        assert counts_of(batch.labels).min() >= 3

    check()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_per_class": 0}, "min_per_class: expected an integer >= 1"),
        ({"balanced": 1}, "balanced: expected True or False"),
        ({"min_per_class": 5, "min_classes": 2, "max_size": 8}, "max_size: expected room"),
    ],
)
def test_domain_options_are_checked(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        rst.labeled_batches(**kwargs)


@pytest.mark.parametrize(
    ("domain", "message"),
    [
        ({"balanced": "yes"}, "domain: balanced: expected True or False"),
        ({"batch_size": (3, 2)}, "domain: batch_size: expected 1 <= min <= max"),
        ({"sizes": 3}, "domain: unknown option 'sizes'"),
        ({"batch_size": (2, 5), "min_classes": 3, "min_per_class": 2},
         "domain: batch_size: expected room for 6 samples"),
    ],
)
def test_crosscheck_domain_is_checked(domain, message):
    with pytest.raises((ValueError, TypeError), match=message):
        crosscheck(view_batch_hard, "batch_hard_triplet_loss", framework="torch",
                   domain=domain, max_examples=1)


def test_labeled_options_on_pairs_are_refused():
    with pytest.raises(ValueError, match="domain: balanced applies to labeled batches"):
        crosscheck(hadsell_contrastive, "contrastive_loss", framework="torch",
                   domain={"balanced": True}, max_examples=1)
