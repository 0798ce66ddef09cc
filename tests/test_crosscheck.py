"""The cross-check harness catches real bugs and passes correct implementations.

Every candidate here is written in this file, independently of refloss: plain
NumPy brute force (loops over pairs and triplets; the harness takes their
gradients by finite differences), torch autograd, a torch.autograd.Function
with a hand-written backward, JAX autograd and jax.custom_vjp. Each planted
bug must be reported as a disagreement whose shrunk counterexample is no
larger than the bug needs; each correct twin must agree.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import strategies as st

import refloss as rl
from refloss.testing import (
    TOLERANCES,
    Report,
    assert_matches,
    crosscheck,
    detect_framework,
    load_counterexample,
    replay,
    resolve_reference,
)

EXAMPLES = 40


# --------------------------------------------------------------------------
# NumPy candidates (brute force)


def np_distances(x):
    diff = x[:, None, :] - x[None, :, :]
    return np.sqrt(np.sum(diff * diff, axis=-1))


def np_batch_all(x, labels, *, margin=1.0, self_positive=False):
    """Batch-all triplet loss, mean over the terms > 0, by three loops."""
    d = np_distances(np.asarray(x, dtype=np.float64))
    terms = []
    for a in range(len(labels)):
        for p in range(len(labels)):
            if labels[p] != labels[a] or (p == a and not self_positive):
                continue
            for n in range(len(labels)):
                if labels[n] != labels[a]:
                    # (d_ap + m) - d_an, the reference's order of operations: at an
                    # exact kink the two orders can round to 0 and to 1e-16
                    terms.append(max((d[a, p] + margin) - d[a, n], 0.0))
    t = np.asarray(terms)
    k = int(np.count_nonzero(t > 0))
    return np.asarray(t.sum() / k if k else 0.0)


def np_batch_all_self_positive(x, labels):
    """Planted: the anchor counts as its own positive."""
    return np_batch_all(x, labels, self_positive=True)


def np_batch_all_correct(x, labels):
    return np_batch_all(x, labels)


def np_center_loss(x, labels, centers):
    return 0.5 * np.sum((x - centers[labels]) ** 2)


def np_center_loss_mean(x, labels, centers):
    """Planted: "sum" asked, the mean over the batch computed."""
    return 0.5 * np.mean(np.sum((x - centers[labels]) ** 2, axis=1))


def np_semihard_miner(x, labels, *, strict=True):
    """One (a, p, n) per ordered positive pair: the closest negative strictly
    farther than the positive, else the farthest (ties to the lowest index)."""
    d = np_distances(np.asarray(x, dtype=np.float64))
    out = []
    for a in range(len(labels)):
        negatives = [n for n in range(len(labels)) if labels[n] != labels[a]]
        if not negatives:
            continue
        for p in range(len(labels)):
            if p == a or labels[p] != labels[a]:
                continue
            farther = [n for n in negatives
                       if (d[a, n] > d[a, p] if strict else d[a, n] >= d[a, p])]
            if farther:
                n = min(farther, key=lambda n: (d[a, n], n))
            else:
                n = max(negatives, key=lambda n: (d[a, n], -n))
            out.append((a, p, n))
    t = np.asarray(out, dtype=np.int64).reshape(-1, 3)
    return t[:, 0], t[:, 1], t[:, 2]


def np_semihard_miner_ge(x, labels):
    """Planted: d_an >= d_ap instead of d_an > d_ap."""
    return np_semihard_miner(x, labels, strict=False)


def np_batch_hard_labels_first(y_true, y_pred):
    """Batch-hard with the TensorFlow argument order (labels first)."""
    d = np_distances(np.asarray(y_pred, dtype=np.float64))
    terms = []
    for a in range(len(y_true)):
        pos = [d[a, p] for p in range(len(y_true)) if p != a and y_true[p] == y_true[a]]
        neg = [d[a, n] for n in range(len(y_true)) if y_true[n] != y_true[a]]
        if pos and neg:
            terms.append(max((max(pos) + 1.0) - min(neg), 0.0))
    return np.asarray(np.mean(terms) if terms else 0.0)


# --------------------------------------------------------------------------
# torch candidates

torch = pytest.importorskip("torch")


def torch_norm_rows(diff):
    """Euclidean norm of rows with gradient 0 at 0 (double where)."""
    d2 = torch.sum(diff * diff, dim=1)
    live = d2 > 0
    return torch.where(live, torch.sqrt(torch.where(live, d2, torch.ones_like(d2))),
                       torch.zeros_like(d2))


def torch_contrastive(a, b, same):
    d = torch_norm_rows(a - b)
    return torch.where(same, d * d, torch.relu(1.0 - d) ** 2).mean()


def torch_contrastive_flipped(a, b, same):
    """Planted: True taken as dissimilar (the Hadsell / TFA mix-up)."""
    return torch_contrastive(a, b, ~same)


def torch_paired_distances(a, b):
    return torch_norm_rows(a - b)


def torch_paired_distances_nan(a, b):
    """Planted: sqrt of the sum of squares, whose gradient at a = b is 0/0."""
    return torch.sqrt(torch.sum((a - b) ** 2, dim=1))


class _Triplet(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, p, n, flip):
        dap, dan = torch_norm_rows(a - p), torch_norm_rows(a - n)
        z = (dap + 1.0) - dan
        ctx.save_for_backward(a, p, n, dap, dan, z)
        ctx.flip = flip
        return torch.relu(z).mean()

    @staticmethod
    def backward(ctx, g):
        a, p, n, dap, dan, z = ctx.saved_tensors
        w = (g * (z > 0).to(a.dtype) / a.shape[0])[:, None]
        uap = torch.where(dap[:, None] > 0, (a - p) / torch.where(dap > 0, dap, 1)[:, None],
                          0)
        uan = torch.where(dan[:, None] > 0, (a - n) / torch.where(dan > 0, dan, 1)[:, None],
                          0)
        sign = 1.0 if ctx.flip else -1.0  # planted: the d_an term's sign
        return w * (uap + sign * uan), -w * uap, w * uan, None


def torch_triplet_function(anchor, positive, negative):
    return _Triplet.apply(anchor, positive, negative, False)


def torch_triplet_function_flipped(anchor, positive, negative):
    return _Triplet.apply(anchor, positive, negative, True)


def torch_triplet_clamp(anchor, positive, negative):
    """Correct, with torch's clamp_min: gradient 1 at a hinge exactly at 0."""
    z = (torch_norm_rows(anchor - positive) + 1.0) - torch_norm_rows(anchor - negative)
    return torch.clamp(z, min=0).mean()


def torch_batch_hard(x, labels, margin=1.0):
    d = torch.cdist(x, x)
    same = labels[:, None] == labels[None, :]
    pos = same & ~torch.eye(len(labels), dtype=torch.bool)
    neg = ~same
    inf = torch.tensor(float("inf"), dtype=x.dtype)
    hardest_p = torch.where(pos, d, -inf).max(dim=1)
    hardest_n = torch.where(neg, d, inf).min(dim=1)
    valid = pos.any(dim=1) & neg.any(dim=1)
    ap = torch.where(valid, hardest_p.values, torch.zeros_like(hardest_p.values))
    an = torch.where(valid, hardest_n.values, torch.zeros_like(hardest_n.values))
    terms = torch.where(valid, torch.relu((ap + margin) - an), torch.zeros_like(ap))
    return terms.sum() / torch.clamp(valid.sum(), min=1)


def torch_batch_hard_self_positive(x, labels):
    """Planted: the diagonal stays in the positive mask."""
    d = torch.cdist(x, x)
    same = labels[:, None] == labels[None, :]
    inf = torch.tensor(float("inf"), dtype=x.dtype)
    hardest_p = torch.where(same, d, -inf).max(dim=1).values
    hardest_n = torch.where(~same, d, inf).min(dim=1).values
    valid = (~same).any(dim=1)
    terms = torch.where(valid, torch.relu(hardest_p + 1.0 - torch.where(valid, hardest_n, 0)),
                        torch.zeros_like(hardest_p))
    return terms.sum() / torch.clamp(valid.sum(), min=1)


# --------------------------------------------------------------------------
# planted bugs: each is reported, with a counterexample no larger than needed


@pytest.fixture(scope="module")
def mean_for_sum():
    """One disagreeing report, shared by the report and persistence tests."""
    return crosscheck(np_center_loss_mean, "center_loss", max_examples=EXAMPLES)


def test_self_positive_batch_all_is_caught_on_two_samples():
    report = crosscheck(np_batch_all_self_positive, "batch_all_triplet_loss",
                        max_examples=EXAMPLES)
    assert not report.agrees
    cx = report.counterexample
    assert cx.kind == "value" and cx.size == 2
    assert np.unique(cx.inputs["labels"]).size == 2  # two classes, no positive pair


def test_self_positive_batch_hard_in_torch_is_caught_on_two_samples():
    report = crosscheck(torch_batch_hard_self_positive, "batch_hard_triplet_loss",
                        framework="torch", max_examples=EXAMPLES)
    assert not report.agrees and report.counterexample.size == 2
    assert "no positive pair" in report.difference


def test_center_loss_mean_for_sum_is_caught_on_two_samples(mean_for_sum):
    report = mean_for_sum
    assert not report.agrees
    assert report.counterexample.size == 2
    # named, not "1/2 × reference": the ratio is 1/B, 1/2 only on this input
    assert "candidate averages over every valid term (reduction 'mean')" in report.difference


def test_flipped_contrastive_label_is_caught_on_one_pair():
    report = crosscheck(torch_contrastive_flipped, "contrastive_loss", framework="torch",
                        max_examples=EXAMPLES)
    assert not report.agrees
    cx = report.counterexample
    assert cx.kind == "value" and cx.size == 1


def test_semihard_miner_with_ge_is_caught_on_four_samples():
    report = crosscheck(np_semihard_miner_ge, "mine_semihard", max_examples=EXAMPLES)
    assert not report.agrees
    cx = report.counterexample
    assert cx.kind == "indices" and cx.size == 4  # a, p, the tied n, a farther n
    assert report.grad_error is None


def test_flipped_gradient_sign_is_caught_on_one_triplet():
    report = crosscheck(torch_triplet_function_flipped, "triplet_margin_loss",
                        framework="torch", max_examples=EXAMPLES)
    assert not report.agrees
    cx = report.counterexample
    assert cx.kind == "gradient" and cx.role == "anchor" and cx.size == 1
    assert cx.candidate_value[0] == pytest.approx(cx.reference_value[0])


def test_nan_gradient_at_zero_distance_is_caught_on_one_pair():
    report = crosscheck(torch_paired_distances_nan, "paired_distances", framework="torch",
                        max_examples=EXAMPLES)
    assert not report.agrees
    cx = report.counterexample
    assert cx.kind == "gradient" and cx.size == 1
    assert np.array_equal(cx.inputs["a"], cx.inputs["b"])
    assert "NaN" in report.difference


# --------------------------------------------------------------------------
# correct implementations agree


@pytest.mark.parametrize(
    ("candidate", "reference", "framework"),
    [
        (np_batch_all_correct, "batch_all_triplet_loss", "numpy"),
        (np_center_loss, "center_loss", "numpy"),
        (np_semihard_miner, "mine_semihard", "numpy"),
        (torch_contrastive, "contrastive_loss", "torch"),
        (torch_paired_distances, "paired_distances", "torch"),
        (torch_triplet_function, "triplet_margin_loss", "torch"),
        (torch_batch_hard, "batch_hard_triplet_loss", "torch"),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_correct_implementation_agrees(candidate, reference, framework):
    report = crosscheck(candidate, reference, framework=framework, max_examples=EXAMPLES)
    assert report.agrees, str(report)
    assert report.examples == EXAMPLES


def test_float32_torch_candidate_agrees_within_float32_tolerance():
    report = crosscheck(torch_batch_hard, "batch_hard_triplet_loss", framework="torch",
                        dtype="float32", max_examples=EXAMPLES)
    assert report.agrees, str(report)
    assert report.tolerance["value"] == TOLERANCES["float32"].value
    assert 0 < report.value_error < TOLERANCES["float32"].value


def test_candidate_taking_labels_first_is_called_in_its_own_order():
    report = crosscheck(np_batch_hard_labels_first, "batch_hard_triplet_loss",
                        max_examples=EXAMPLES)
    assert report.agrees, str(report)


def test_a_refloss_function_as_candidate_uses_its_analytic_rule():
    report = crosscheck(rl.triplet_margin_loss, rl.triplet_margin_loss, max_examples=10)
    assert report.agrees and report.grad_method == "analytic"
    assert report.grad_error == 0.0


# --------------------------------------------------------------------------
# conventions of the comparison


def test_tolerance_follows_the_dtype():
    def slightly_off(anchor, positive, negative):
        return rl.triplet_margin_loss(anchor, positive, negative) * (1 + 1e-6)

    f64 = crosscheck(slightly_off, "triplet_margin_loss", grad=False, max_examples=20)
    f32 = crosscheck(slightly_off, "triplet_margin_loss", grad=False, dtype="float32",
                     max_examples=20)
    assert not f64.agrees and f32.agrees


def test_clamp_min_candidate_agrees_over_the_search():
    report = crosscheck(torch_triplet_clamp, "triplet_margin_loss", framework="torch",
                        max_examples=EXAMPLES)
    assert report.agrees, str(report)


def test_subgradient_at_a_kink_is_not_a_disagreement():
    # clamp_min passes gradient 1 at a hinge exactly at 0 where relu passes 0;
    # d_ap = 1, d_an = 2, margin 1 puts the hinge exactly there on every CPU
    # (the search reaches such points too, but where it lands depends on the
    # constants Hypothesis collects from the imported modules)
    kink = {"anchor": np.zeros((1, 2)), "positive": np.array([[1.0, 0.0]]),
            "negative": np.array([[2.0, 0.0]])}
    report = crosscheck(torch_triplet_clamp, "triplet_margin_loss", framework="torch",
                        inputs=st.just(kink), max_examples=1)
    assert report.agrees, str(report)
    # judged by the reference's subdifferential, not skipped
    assert report.skipped == 0 and report.at_ties == 1
    assert report.tie_note == ("at a hinge exactly at 0 (triplet 0), candidate passes "
                               "gradient 1 through it, reference 0")


def test_finite_differences_catch_a_wrong_gradient_of_a_numpy_candidate():
    # the value is right at every tested point up to 1e-6, the slope is not
    def wobbly(x, labels, centers):
        return np_center_loss(x, labels, centers) + 1e-9 * np.sum(np.sin(1e4 * x))

    report = crosscheck(wobbly, "center_loss", max_examples=EXAMPLES)
    assert not report.agrees
    assert report.counterexample.kind == "gradient"
    assert report.grad_method == "finite differences"


# the settings some presets require (they have no default)
PRESET_SETTINGS = {"alfa": 0.5, "margin": 0.2, "alpha": 0.5}


def _every_preset():
    import importlib
    import inspect
    import pkgutil

    import refloss.compat as compat

    for info in pkgutil.iter_modules(compat.__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"refloss.compat.{info.name}")
        for name in mod.__all__:
            fn = getattr(mod, name)
            if hasattr(fn, "__refloss_preset__"):
                params = inspect.signature(fn).parameters
                required = {k: v for k, v in PRESET_SETTINGS.items()
                            if k in params and params[k].default is params[k].empty}
                yield pytest.param(fn, f"compat.{info.name}.{name}", required,
                                   id=f"{info.name}.{name}")


@pytest.mark.parametrize(("preset", "name", "settings"), list(_every_preset()))
def test_every_preset_is_usable_as_a_reference(preset, name, settings):
    # the preset against itself: its inputs are drawn, its pair label takes its
    # own convention (Hadsell's 1 = dissimilar float), and it agrees
    report = crosscheck(preset, name, reference_kwargs=settings, candidate_kwargs=settings,
                        max_examples=2)
    assert report.agrees, str(report)


def test_preset_as_reference_with_arguments_in_its_order():
    def caffe_layer(x, labels, centers):  # ½·sum/M, as CenterLossLayer::Forward_cpu
        return np.sum((x - centers[labels]) ** 2) / x.shape[0] / 2

    report = crosscheck(caffe_layer, "compat.caffe.center_loss", grad=False,
                        max_examples=20)
    assert report.agrees, str(report)
    assert report.reference == "refloss.compat.caffe.center_loss"


def test_a_crash_is_a_finding_shrunk_with_the_candidates_own_frames():
    def raises_on_one_class(x, labels):
        if np.unique(labels).size == 1:
            raise ZeroDivisionError("no negative")
        return rl.batch_hard_triplet_loss(x, labels)

    report = crosscheck(raises_on_one_class, "batch_hard_triplet_loss", max_examples=EXAMPLES)
    assert report.verdict == "disagree" and report.kinds == ("raises",)
    cx = report.counterexample
    assert cx.message == "raised ZeroDivisionError: no negative"
    assert cx.size == 1 and cx.inputs["x"].shape == (1, 1)  # shrunk: one sample, one column
    assert any("raises_on_one_class" in f and "ZeroDivisionError" in f for f in cx.frames)
    assert not any("refloss/testing" in f for f in cx.frames)
    assert "raised ZeroDivisionError: no negative on 1 sample" in report.difference
    assert "candidate traceback (innermost last):" in str(report)


def test_wrong_output_shape_is_a_finding():
    def per_sample(x, labels):
        return np.zeros(x.shape[0])

    report = crosscheck(per_sample, "batch_hard_triplet_loss", max_examples=5)
    assert report.kinds == ("raises",)
    assert re.search(r"shape \(2,\), expected \(\)", report.difference), report.difference


def test_wrong_number_of_outputs_is_a_finding():
    def two_arrays(x, labels):
        return np.arange(2), np.arange(2)

    report = crosscheck(two_arrays, "mine_batch_hard", max_examples=5)
    assert report.kinds == ("raises",)
    assert "expected 3 integer index arrays" in report.difference


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        ({"reference": "no_such_loss"}, ValueError, "reference: no refloss function named"),
        ({"reference": "compat.caffe.no_such"}, ValueError,
         "reference: refloss.compat.caffe has no"),
        ({"reference": 3}, TypeError, "reference: expected"),
        ({"reference_kwargs": {"margn": 1.0}}, ValueError,
         "reference_kwargs: .* no keyword 'margn'"),
        ({"reference_kwargs": {"margin": -1.0}}, ValueError,
         "reference_kwargs: .*margin: expected"),
        ({"framework": "mxnet"}, ValueError, "framework: expected"),
        ({"dtype": "float16"}, ValueError, "dtype: expected"),
        ({"max_examples": 0}, ValueError, "max_examples: expected"),
        ({"seed": "zero"}, TypeError, "seed: expected"),
        ({"candidate": "not callable"}, TypeError, "candidate: expected a callable"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_bad_argument_is_rejected_naming_it(kwargs, exc, message):
    call = {"candidate": np_batch_all_correct, "reference": "batch_all_triplet_loss",
            "max_examples": 5, **kwargs}
    with pytest.raises(exc, match=message):
        crosscheck(call.pop("candidate"), call.pop("reference"), **call)


# --------------------------------------------------------------------------
# report, persistence, replay, assert_matches


def test_report_prints_a_block_and_a_one_line_summary(mean_for_sum):
    report = mean_for_sum
    text = str(report)
    for part in ("verdict: DISAGREE", "worst relative error", "first difference",
                 "counterexample (shrunk, 2 samples)", "labels = ", "candidate = ",
                 "reference = "):
        assert part in text
    line = report.summary()
    assert "\n" not in line and line.startswith("DISAGREE ") and "center_loss" in line


def test_saved_counterexample_round_trips(mean_for_sum, tmp_path):
    report = mean_for_sum
    path = report.save(tmp_path / "cx.npz")
    cx, meta = load_counterexample(path)
    for role, a in report.counterexample.inputs.items():
        np.testing.assert_array_equal(cx.inputs[role], a)
    saved = report.counterexample
    np.testing.assert_array_equal(cx.candidate_value[0], saved.candidate_value[0])
    np.testing.assert_array_equal(cx.reference_value[0], saved.reference_value[0])
    assert meta["reference"] == "refloss.center_loss"
    assert json.loads(json.dumps(meta)) == meta  # plain JSON, no pickles
    with np.load(path, allow_pickle=False) as data:
        assert "meta" in data.files


def test_replay_reruns_the_saved_input(mean_for_sum, tmp_path):
    report = mean_for_sum
    path = report.save(tmp_path / "cx.npz")
    again = replay(path)  # the candidate is re-imported by name
    assert not again.agrees and again.examples == 1
    assert again.counterexample.value_error == pytest.approx(report.counterexample.value_error)
    fixed = replay(path, candidate=np_center_loss)
    assert fixed.agrees


def test_saving_an_agreement_is_refused(tmp_path):
    report = crosscheck(np_center_loss, "center_loss", max_examples=5)
    with pytest.raises(ValueError, match="nothing to save"):
        report.save(tmp_path / "none.npz")


def test_replay_of_a_file_that_is_not_a_counterexample(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, x=np.zeros(3))
    with pytest.raises(ValueError, match="not a saved counterexample"):
        replay(path)


def test_assert_matches_raises_with_the_report():
    with pytest.raises(AssertionError, match=r"(?s)DISAGREE.*counterexample"):
        assert_matches(torch_contrastive_flipped, "contrastive_loss", framework="torch",
                       max_examples=EXAMPLES)


def test_assert_matches_returns_the_report_when_they_agree():
    report = assert_matches(np_center_loss, "center_loss", max_examples=10)
    assert isinstance(report, Report) and report.agrees


def test_the_same_seed_gives_the_same_search():
    one, two = (crosscheck(np_batch_all_correct, "batch_all_triplet_loss", max_examples=10,
                           seed=7) for _ in range(2))
    assert one.examples == two.examples == 10
    assert one.value_error == two.value_error and one.grad_error == two.grad_error


# --------------------------------------------------------------------------
# names, frameworks and the registry


def test_reference_names_resolve():
    assert resolve_reference("rl.center_loss") is rl.center_loss
    assert resolve_reference("refloss.batch_hard_triplet_loss") is rl.batch_hard_triplet_loss
    from refloss.compat import caffe

    assert resolve_reference("caffe.center_loss") is caffe.center_loss
    assert resolve_reference("compat.caffe.center_loss") is caffe.center_loss


def test_framework_is_detected_from_the_candidate():
    assert detect_framework(torch_contrastive) == "torch"
    assert detect_framework(torch.nn.functional.triplet_margin_loss) == "torch"
    assert detect_framework(np_center_loss) in ("numpy", "torch")  # this module imports torch
    assert detect_framework(rl.center_loss) == "numpy"


def test_known_registry_is_consistent():
    import inspect

    from refloss.adapters import known

    keys = [e.key for e in known.entries()]
    assert len(keys) == len(set(keys))
    for entry in known.entries():
        ref = resolve_reference(entry.reference)
        params = inspect.signature(ref).parameters
        assert set(entry.reference_kwargs) <= set(params), entry.key
        assert entry.framework in ("numpy", "torch", "jax", "tensorflow")
        assert entry.must_match in ("preset", "reference", "none")


def test_known_entry_with_a_missing_package_is_not_installed():
    from refloss.adapters.known import Entry

    entry = Entry(key="x", name="x", requires=("no_such_package_anywhere",),
                  framework="torch", make=lambda: None, reference="center_loss",
                  preset="refloss.compat.no_such_module:f")
    assert not entry.installed()
    assert entry.preset_function() is None
    with pytest.raises(ValueError, match="known: no entry 'nope'"):
        __import__("refloss.adapters.known", fromlist=["get"]).get("nope")


def test_torch_bridge_gives_zero_gradient_for_an_unused_input():
    from refloss.adapters import bridges

    bridge = bridges.get("torch")
    outputs, pullback = bridge.vjp(lambda a, b: (a * 2).sum(),
                                   [np.ones((2, 2)), np.ones((2, 2))], ["float", "float"],
                                   dtype="float64", kwargs={}, grad=True)
    ga, gb = pullback(np.asarray(1.0))
    np.testing.assert_array_equal(ga, np.full((2, 2), 2.0))
    np.testing.assert_array_equal(gb, np.zeros((2, 2)))
    assert float(outputs[0]) == 8.0


# --------------------------------------------------------------------------
# real peers (installed here): a third-party implementation through the harness


def test_pytorch_metric_learning_triplet_loss_agrees_with_the_reference():
    losses = pytest.importorskip("pytorch_metric_learning.losses")
    loss = losses.TripletMarginLoss()

    def pml(embeddings, labels):
        return loss(embeddings, labels)

    report = crosscheck(pml, "batch_all_triplet_loss", framework="torch",
                        reference_kwargs={"margin": 0.05, "normalize": True}, max_examples=30)
    assert report.agrees, str(report)


def test_torch_triplet_margin_loss_differs_by_its_epsilon():
    f = torch.nn.functional.triplet_margin_loss
    report = crosscheck(f, "triplet_margin_loss", framework="torch", max_examples=EXAMPLES)
    assert not report.agrees
    cx = report.counterexample
    assert cx.kind == "value" and cx.size == 1
    # torch adds eps = 1e-6 to every difference: d(x, x) = 1e-6·√D, not 0
    a, p, n = (cx.inputs[r] for r in ("anchor", "positive", "negative"))
    assert np.array_equal(a, p) or np.array_equal(a, n)
    gap = abs(float(cx.candidate_value[0]) - float(cx.reference_value[0]))
    assert 0 < gap <= 3e-6 * np.sqrt(a.shape[1])
    # the report names the duplicate that exposes the epsilon
    assert "= anchor" in report.difference, report.difference


# --------------------------------------------------------------------------
# JAX candidates


def test_jax_candidates_agree_and_disagree_as_written():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy

    def jax_triplet(anchor, positive, negative):
        def norm(v):
            d2 = jnp.sum(v * v, axis=1)
            live = d2 > 0
            return jnp.where(live, jnp.sqrt(jnp.where(live, d2, 1.0)), 0.0)

        z = (norm(anchor - positive) + 1.0) - norm(anchor - negative)
        return jnp.mean(jnp.maximum(z, 0.0))

    def jax_paired_norm(a, b):  # jnp.linalg.norm: NaN gradient at a = b
        return jnp.linalg.norm(a - b, axis=1)

    @jax.custom_vjp
    def center(x, labels, centers):
        return 0.5 * jnp.sum((x - centers[labels]) ** 2)

    def center_fwd(x, labels, centers):
        return center(x, labels, centers), (x, labels, centers)

    def center_bwd(res, g):
        x, labels, centers = res
        diff = x - centers[labels]
        onehot = (labels[:, None] == jnp.arange(centers.shape[0])[None, :]).astype(x.dtype)
        # planted: the centers' gradient has the wrong sign
        return g * diff, None, g * (onehot.T @ diff)

    center.defvjp(center_fwd, center_bwd)

    # one input shape each: JAX compiles every primitive anew for each shape
    from refloss.testing import strategies as rst

    one_row = {"min_rows": 1, "max_rows": 1, "min_dim": 2, "max_dim": 2}
    before = jax.config.jax_enable_x64
    good = crosscheck(jax_triplet, "triplet_margin_loss", framework="jax", max_examples=15,
                      inputs=rst.triplets(**one_row))
    nan = crosscheck(jax_paired_norm, "paired_distances", framework="jax", max_examples=15,
                     inputs=rst.pairs(**one_row))
    flipped = crosscheck(center, "center_loss", framework="jax", max_examples=15,
                         inputs=rst.center_batches(min_size=1, max_size=1, min_dim=2,
                                                   max_dim=2, num_classes=2))
    assert good.agrees, str(good)
    assert not nan.agrees and "NaN" in nan.difference and nan.counterexample.size == 1
    assert not flipped.agrees and flipped.counterexample.role == "centers"
    assert flipped.counterexample.size == 1
    assert jax.config.jax_enable_x64 == before  # float64 ran in a local context


# --------------------------------------------------------------------------
# the dependency boundary


def test_refloss_imports_without_hypothesis_and_testing_says_what_is_missing():
    script = textwrap.dedent(
        """
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "hypothesis":
                    raise ImportError("hypothesis is made unimportable by this test")
                return None

        sys.meta_path.insert(0, Block())
        import refloss
        import refloss.cli
        try:
            import refloss.testing
        except ImportError as exc:
            print(exc)
        assert "hypothesis" not in sys.modules
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "refloss.testing needs Hypothesis" in out.stdout
    assert "pip install hypothesis" in out.stdout
