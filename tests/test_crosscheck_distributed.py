"""crosscheck(..., world_size=W): a distributed torch candidate under a real
gloo group, judged against the reference on the whole batch, each classic
fault named by its signature.

One 2-process group (module fixture) serves every planted candidate of
tests/ddp_candidates.py; the public entry point and the command line each
spawn their own group once.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

import ddp_candidates as cand  # noqa: E402
from refloss.adapters._gloo_group import GlooGroup  # noqa: E402

from refloss import cli  # noqa: E402
from refloss.testing import crosscheck  # noqa: E402
from refloss.testing._distributed import crosscheck_distributed  # noqa: E402

WORLD = 2
KW = {"margin": 0.3}


@pytest.fixture(scope="module")
def group():
    with GlooGroup(WORLD, timeout=60) as g:
        yield g


def check(group, candidate, examples=4, **kw):
    return crosscheck_distributed(candidate, "batch_hard_triplet_loss", world_size=WORLD,
                                  reference_kwargs=KW, max_examples=examples, group=group,
                                  **kw)


def test_the_exact_wrapper_agrees_on_uneven_shards(group):
    report = check(group, cand.correct)
    assert report.agrees, str(report)
    assert report.examples == 4 and report.grad_error < 1e-12


def test_a_plain_all_gather_gives_no_gradient(group):
    report = check(group, cand.no_backward)
    assert report.faults == ["no gradient"], str(report)


def test_the_local_slice_without_loss_times_w_is_gradient_divided_by_w(group):
    report = check(group, cand.local_slice)
    assert report.faults == ["gradient ÷ W"], str(report)


def test_a_second_world_size_factor_is_gradient_times_w(group):
    report = check(group, cand.times_world)
    assert report.faults == ["gradient × W"], str(report)


def test_shard_local_mining_averaged_over_ranks(group):
    report = check(group, cand.shard_local)
    assert report.faults == ["shard-local mining", "gradient of the own shard's loss"], \
        str(report)


def test_no_gather_at_all_gives_different_values_per_rank(group):
    report = check(group, cand.own_shard)
    assert report.faults == ["values differ across ranks", "own shard only",
                             "gradient of the own shard's loss"], str(report)


def test_grad_reduce_mean_expects_the_plain_gradient(group):
    # the local-slice wrapper is exactly right for a loop that does not average
    assert check(group, cand.local_slice, grad_reduce="mean").agrees


def test_pml_distributed_wrapper_on_even_shards(group):
    """pytorch-metric-learning's DistributedLossWrapper returns W·L as its value
    (it multiplies the loss by the world size) and the gradient DDP needs."""
    losses = pytest.importorskip("pytorch_metric_learning.losses")
    wrapper = pytest.importorskip("pytorch_metric_learning.utils.distributed")
    candidate = wrapper.DistributedLossWrapper(losses.TripletMarginLoss(margin=0.2))
    report = crosscheck_distributed(
        candidate, "compat.pml.triplet_margin_loss", world_size=WORLD,
        reference_kwargs={"margin": 0.2}, max_examples=3, group=group, even_shards=True)
    assert report.faults == ["value × W"], str(report)
    assert "gradient: as expected on every rank" in report.details


def test_public_crosscheck_and_pml_wrapper_on_uneven_shards():
    """crosscheck(world_size=2) spawns its own group; PML's plain all_gather
    cannot take shards of different sizes: a rank raises (the group dies)."""
    losses = pytest.importorskip("pytorch_metric_learning.losses")
    wrapper = pytest.importorskip("pytorch_metric_learning.utils.distributed")
    candidate = wrapper.DistributedLossWrapper(losses.TripletMarginLoss(margin=0.2))
    report = crosscheck(candidate, "compat.pml.triplet_margin_loss",
                        reference_kwargs={"margin": 0.2}, max_examples=3, world_size=WORLD)
    assert not report.agrees and report.faults == ["raises"], str(report)


def test_command_line_world_size(capsys):
    status = cli.main(["crosscheck", "ddp_candidates:local_slice", "--as",
                       "batch_hard_triplet_loss", "--kw", "margin=0.3", "--world-size", "2",
                       "--examples", "3"])
    assert status == 1
    assert "fault: gradient ÷ W" in capsys.readouterr().out


def test_a_rank_left_in_a_collective_is_killed_and_reported():
    with GlooGroup(WORLD, timeout=5) as short:
        report = check(short, cand.raises_on_rank_one, examples=2)
        assert not short.alive
    assert report.faults == ["raises"], str(report)
    assert "planted: rank 1 gives up" in report.details[1]
    assert "did not finish within 5 s" in report.details[0]


@pytest.mark.parametrize(("kwargs", "error", "words"), [
    ({"world_size": 0}, ValueError, "world_size: expected an integer >= 1, got 0"),
    ({"world_size": 2, "grad_reduce": "max"}, ValueError,
     "grad_reduce: expected 'sum' or 'mean', got 'max'"),
    ({"world_size": 2, "reference": "center_loss"}, ValueError,
     "world_size: a distributed cross-check takes a labeled-batch reference of (x, labels)"),
    ({"world_size": 2, "candidate": lambda x, labels: x.sum()}, TypeError,
     "candidate: expected a picklable callable for world_size"),
])
def test_bad_usage_is_refused_before_any_process_starts(kwargs, error, words):
    kwargs = {"candidate": cand.correct, "reference": "batch_hard_triplet_loss", **kwargs}
    with pytest.raises(error) as info:
        crosscheck(kwargs.pop("candidate"), kwargs.pop("reference"), **kwargs)
    assert words in str(info.value)
