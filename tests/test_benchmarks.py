"""Smoke tests of the benchmark harness (benchmarks/): formats and protocol, no timings.

Each test proves one property of the harness on tiny batches: a child
measures and reports, the sweep writes a Markdown table and a CSV that
round-trips, the memory and time limits turn into OOM / timeout and skip
the larger B, the targets summary judges synthetic rows as the issue states
them, the hand-written torch peers compute refloss's losses (so the
comparison is of equal work), the float64 trace catches an upcast, and
docs/benchmarks.md is exactly what the harness generates from
docs/benchmarks.csv.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import refloss as rl  # noqa: E402
from benchmarks import report, run  # noqa: E402
from benchmarks.child import Config, make_labels, measure  # noqa: E402

TINY = ["--quick", "--backend", "numpy", "--loss", "batch_all", "--labels", "8-classes",
        "--repeats", "2", "--budget", "0.5"]


def _config(**kw) -> Config:
    base = {"impl": "refloss", "loss": "batch_all", "backend": "numpy", "dtype": "float32",
            "batch": 48, "labels": "4-per-class", "repeats": 2, "budget": 0.5, "threads": 1}
    base.update(kw)
    return Config(**base)


# ---------------------------------------------------------------------------
# the child


def test_child_reports_time_memory_and_float32_checks():
    r = measure(_config(accuracy=True))
    assert r.status == "ok", r.note
    assert r.n == len(r.samples) >= 1
    assert r.min_s <= r.median_s <= r.max_s
    assert r.peak_rss_mib >= r.baseline_rss_mib > 0
    assert r.peak_rss_delta_mib >= 0
    assert r.value_dtype == r.grad_dtype == "float32"
    assert r.rel_err_f64 is not None and r.rel_err_f64 < 1e-4
    assert r.grad_rel_err_f64 is not None


def test_child_config_round_trips_through_json():
    cfg = _config(labels="8-classes", accuracy=True, seed=3)
    assert Config.from_json(cfg.to_json()) == cfg


def test_missing_backend_is_unavailable_not_an_error():
    try:
        import cupy  # noqa: F401
    except ImportError:
        r = measure(_config(backend="cupy"))
        assert r.status == "unavailable"
        assert "cupy" in r.note
    else:
        pytest.skip("cupy is installed")


@pytest.mark.parametrize(("layout", "classes", "per_class"),
                         [("4-per-class", 16, 4), ("8-classes", 8, 8), ("3-per-class", 21, 3)])
def test_label_layouts_have_the_stated_class_sizes(layout, classes, per_class):
    labels = make_labels(layout, 64 if per_class != 3 else 63, seed=0)
    values, counts = np.unique(labels, return_counts=True)
    assert len(values) == classes
    assert set(counts.tolist()) == {per_class}
    assert labels.dtype == np.int64


def test_label_layouts_are_shuffled_and_identical_across_calls():
    a, b = make_labels("4-per-class", 64, seed=0), make_labels("4-per-class", 64, seed=0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, np.arange(64) // 4)


def test_bad_label_layout_names_the_argument():
    with pytest.raises(ValueError, match="labels must look like"):
        make_labels("four", 8, seed=0)


# ---------------------------------------------------------------------------
# the sweep, the table and the CSV


def test_sweep_prints_a_markdown_table_and_writes_a_csv(tmp_path, capsys):
    assert run.main([*TINY, "--impl", "refloss,floor", "--sizes", "32,64",
                     "--out", str(tmp_path), "--no-plot"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == report.HEADER and lines[1] == report.RULE
    body = [ln for ln in lines[2:] if ln.startswith("| ")]
    assert len([ln for ln in body if ln.startswith("| refloss | batch_all |")]) == 2
    assert len([ln for ln in body if ln.startswith("| floor | gemm+sort |")]) == 2
    assert all(ln.count("|") == report.HEADER.count("|") for ln in body[:4])
    assert "Targets" in out
    meta, rows = report.read_csv(tmp_path / "benchmarks.csv")
    assert meta["mode"] == "quick" and meta["threads"] >= 1 and meta["sizes"] == [32, 64]
    assert {(r["impl"], r["batch"], r["status"]) for r in rows} == {
        ("refloss", 32, "ok"), ("refloss", 64, "ok"), ("floor", 32, "ok"), ("floor", 64, "ok")}
    for r in report.derive(rows):
        assert r["ratio_floor"] == pytest.approx(r["median_s"] / r["floor_s"])
        assert r["mem_constant"] is not None


def test_csv_round_trips_every_field(tmp_path):
    rows = report.derive([{
        "impl": "refloss", "loss": "semihard", "backend": "torch", "dtype": "float32",
        "labels": "8-classes", "batch": 256, "dim": 128, "status": "ok", "note": "",
        "n": 3, "median_s": 0.25, "min_s": 0.2, "max_s": 0.3, "samples": [0.2, 0.25, 0.3],
        "peak_rss_delta_mib": 12.5, "peak_rss_mib": 300.0, "baseline_rss_mib": 287.5,
        "peak_reset": True, "value": 0.75, "value_dtype": "float32", "grad_dtype": "float32",
        "float64_ops": [], "accuracy": True, "ops": 312, "syncs": 4,
        "sync_ops": {"_local_scalar_dense": 3, "nonzero": 1}}])
    path = tmp_path / "b.csv"
    report.write_csv(path, {"mode": "full", "threads": 2}, rows)
    meta, back = report.read_csv(path)
    assert meta == {"mode": "full", "threads": 2}
    assert report.derive(back) == rows


def test_out_of_memory_is_reported_at_its_batch_and_larger_batches_are_skipped(capsys):
    # 20 MiB is below the interpreter itself: the watcher kills the child.
    assert run.main([*TINY, "--impl", "refloss", "--sizes", "32,64", "--mem-limit", "0.02"]) == 0
    out = capsys.readouterr().out
    assert "| refloss | batch_all | numpy | float32 | 8-classes | 32 |" in out
    row32 = next(ln for ln in out.splitlines() if "| 8-classes | 32 |" in ln)
    row64 = next(ln for ln in out.splitlines() if "| 8-classes | 64 |" in ln)
    assert "**OOM**" in row32
    assert "skipped (OOM at B=32)" in row64


def test_timeout_is_reported_at_its_batch_and_larger_batches_are_skipped(capsys):
    assert run.main([*TINY, "--impl", "refloss", "--sizes", "32,64", "--timeout", "0.01"]) == 0
    out = capsys.readouterr().out
    row32 = next(ln for ln in out.splitlines() if "| 8-classes | 32 |" in ln)
    row64 = next(ln for ln in out.splitlines() if "| 8-classes | 64 |" in ln)
    assert "**timeout**" in row32
    assert "skipped (timeout at B=32)" in row64


def test_threads_are_pinned_in_the_child_environment():
    env = run.child_env(3)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        assert env[name] == "3"
    assert str(run.ROOT) in env["PYTHONPATH"].split(":")


# ---------------------------------------------------------------------------
# the targets


def _row(impl, loss, backend, batch, median, *, dtype="float32", labels="8-classes",
         status="ok", delta=None, peak=None, grad_dtype="float32"):
    return {"impl": impl, "loss": loss, "backend": backend, "dtype": dtype, "labels": labels,
            "batch": batch, "status": status, "median_s": median if status == "ok" else None,
            "n": 3 if status == "ok" else None, "peak_rss_delta_mib": delta,
            "peak_rss_mib": peak, "value_dtype": "float32" if impl != "floor" else None,
            "grad_dtype": grad_dtype if impl != "floor" else None}


def _verdicts(rows) -> dict:
    return {(t.target, t.where): t.verdict for t in report.targets(report.derive(rows))}


def test_floor_target_passes_within_three_times_and_misses_beyond():
    rows = [_row("floor", "gemm+sort", "numpy", 4096, 1.0, labels="-"),
            _row("refloss", "batch_all", "numpy", 4096, 2.9),
            _row("refloss", "semihard", "numpy", 4096, 3.1)]
    v = _verdicts(rows)
    assert v[("batch_all f+b ≤ 3× floor at B=4096", "refloss on numpy")] == "pass"
    assert v[("semihard f+b ≤ 3× floor at B=4096", "refloss on numpy")] == "miss"


def test_floor_target_is_not_judged_below_its_batch_size():
    rows = [_row("floor", "gemm+sort", "numpy", 1024, 1.0, labels="-"),
            _row("refloss", "batch_all", "numpy", 1024, 1.5)]
    assert _verdicts(rows)[("batch_all f+b ≤ 3× floor at B=4096", "refloss on numpy")] == "n/a"


def test_pml_target_needs_fifty_times_with_eight_classes_and_ten_with_four_per_class():
    rows = [_row("refloss", "batch_all", "torch", 1024, 0.1),
            _row("pml", "batch_all", "torch", 1024, 4.0),
            _row("refloss", "batch_all", "torch", 1024, 0.1, labels="4-per-class"),
            _row("pml", "batch_all", "torch", 1024, 1.5, labels="4-per-class")]
    v = _verdicts(rows)
    where = "refloss on torch vs PML on torch"
    assert v[("batch_all ≥ 50× faster than PML all-triplets, B=1024, 8-classes", where)] == "miss"
    assert v[("batch_all ≥ 10× faster than PML all-triplets, B=1024, 4-per-class", where)] == (
        "pass")


def test_running_where_pml_runs_out_is_a_pass_only_if_refloss_ran_there():
    rows = [_row("refloss", "batch_all", "torch", 1024, 0.1),
            _row("pml", "batch_all", "torch", 1024, 8.0),
            _row("pml", "batch_all", "torch", 2048, None, status="OOM"),
            _row("refloss", "batch_all", "torch", 2048, 0.4)]
    name = ("batch_all runs where PML all-triplets runs out", "refloss on torch")
    assert _verdicts(rows)[name] == "pass"
    rows[-1] = _row("refloss", "batch_all", "torch", 2048, None, status="OOM")
    assert _verdicts(rows)[name] == "miss"


def test_batch_hard_target_compares_with_the_hand_written_version_on_torch():
    rows = [_row("refloss", "batch_hard", "torch", 1024, 0.05),
            _row("torch-hand", "batch_hard", "torch", 1024, 0.06),
            _row("refloss", "batch_hard", "torch", 4096, 0.7),
            _row("torch-hand", "batch_hard", "torch", 4096, 0.6)]
    name = ("batch_hard no slower than hand-written torch autograd", "refloss on torch")
    assert _verdicts(rows)[name] == "miss"
    rows[2] = _row("refloss", "batch_hard", "torch", 4096, 0.5)
    assert _verdicts(rows)[name] == "pass"


def test_memory_target_uses_the_constant_at_the_largest_batch():
    b = 4096
    six = 6 * b * b * 4 / 2**20
    rows = [_row("refloss", "contrastive", "numpy", 1024, 0.1, delta=1e6, peak=1e6),
            _row("refloss", "contrastive", "numpy", b, 1.0, delta=six * 0.99, peak=six)]
    t = {x.target: x for x in report.targets(report.derive(rows))}
    line = t["contrastive: peak memory ≤ 6·B²·itemsize + O(B·D)"]
    assert line.verdict == "pass" and "c = 5.94" in line.measured
    rows[1]["peak_rss_delta_mib"] = six * 1.01
    t = {x.target: x for x in report.targets(report.derive(rows))}
    assert t["contrastive: peak memory ≤ 6·B²·itemsize + O(B·D)"].verdict == "miss"


def test_float32_target_misses_on_a_float64_gradient():
    rows = [_row("refloss", "batch_all", "numpy", 256, 0.1, grad_dtype="float64")]
    t = {x.target: x for x in report.targets(report.derive(rows))}
    assert t["float32 in → float32 value and gradient"].verdict == "miss"


# ---------------------------------------------------------------------------
# the peers compute the same losses; the upcast trace works


def _separated_batch(rows=12, classes=3, seed=5):
    rng = np.random.default_rng(seed)
    labels = np.arange(rows) % classes
    return rng.standard_normal((rows, 4)), labels


def test_hand_written_batch_all_is_refloss_batch_all():
    torch = pytest.importorskip("torch")
    from benchmarks.impls import hand_batch_all

    x, labels = _separated_batch()
    expected = float(rl.batch_all_triplet_loss(x, labels))
    got = float(hand_batch_all(torch.from_numpy(x), torch.from_numpy(labels)))
    assert got == pytest.approx(expected, rel=1e-9)


def test_hand_written_batch_hard_is_refloss_batch_hard():
    torch = pytest.importorskip("torch")
    from benchmarks.impls import hand_batch_hard

    x, labels = _separated_batch()
    expected = float(rl.batch_hard_triplet_loss(x, labels))
    got = float(hand_batch_hard(torch.from_numpy(x), torch.from_numpy(labels)))
    assert got == pytest.approx(expected, rel=1e-9)


def test_float64_trace_names_an_upcast_and_passes_a_clean_call():
    torch = pytest.importorskip("torch")
    from benchmarks.child import _trace_float64

    x = torch.ones(3, dtype=torch.float32)
    ops, _ = _trace_float64(torch, lambda: (x.to(torch.float64) * 2).sum())
    assert "mul" in ops
    ops, _ = _trace_float64(torch, lambda: (x * 2).sum())
    assert ops == []


# ---------------------------------------------------------------------------
# the docs page


def test_docs_page_is_what_the_harness_generates_from_the_csv():
    page, table = ROOT / "docs" / "benchmarks.md", ROOT / "docs" / "benchmarks.csv"
    meta, rows = report.read_csv(table)
    assert report.generated_section(page.read_text()) == report.docs_section(meta, rows)


def test_write_docs_keeps_the_hand_written_text(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(f"# Title\n\nprose\n\n{report.BEGIN}\nold\n{report.END}\n\nafter\n")
    rows = [_row("floor", "gemm+sort", "numpy", 64, 0.001, labels="-")]
    report.write_docs(page, {"mode": "quick", "dim": 128}, rows)
    text = page.read_text()
    assert text.startswith("# Title\n\nprose\n\n")
    assert text.endswith("\n\nafter\n")
    assert "old" not in text
    assert "| floor | gemm+sort | numpy |" in text


# ---------------------------------------------------------------------------
# op and sync counts, the refloss-only variants, the GPU command


def test_count_ops_counts_every_aten_op_and_the_syncs_among_them():
    torch = pytest.importorskip("torch")
    from benchmarks.counting import count_ops

    x = torch.arange(6.0)
    out, ops, syncs, which = count_ops(lambda v: (v * 2 + 1).sum(), x)
    assert float(out) == 36.0 and ops == 3 and syncs == 0 and which == {}
    _, _, syncs, which = count_ops(lambda v: float(v.sum()), x)
    assert syncs == 1 and which == {"_local_scalar_dense": 1}
    _, _, syncs, which = count_ops(lambda v: v[v > 2], x)  # a hidden nonzero
    assert syncs == 1 and set(which) <= {"index", "nonzero"}
    _, _, syncs, which = count_ops(torch.nonzero, x)
    assert which == {"nonzero": 1}


def test_child_counts_ops_and_syncs_on_torch_only():
    pytest.importorskip("torch")
    r = measure(_config(backend="torch"))
    assert r.status == "ok", r.note
    assert r.ops > 50 and r.syncs >= 0 and sum(r.sync_ops.values()) == r.syncs
    assert measure(_config()).ops is None


@pytest.mark.parametrize("loss", ["batch_all:none", "batch_all:soft", "mine_semihard"])
def test_refloss_variants_are_measured(loss):
    r = measure(_config(loss=loss, batch=24))
    assert r.status == "ok", r.note
    assert r.peak_rss_delta_mib is not None and r.value is not None


def test_none_variant_reports_the_sum_of_the_terms():
    from benchmarks import impls

    x, labels = _separated_batch()
    value, grad = impls.build("refloss", "batch_all:none", x, labels, np)()
    expected = float(rl.batch_all_triplet_loss(x, labels, reduction="sum"))
    assert float(value) == pytest.approx(expected, rel=1e-12)
    assert grad.shape == x.shape


def test_variants_are_refloss_only_and_not_in_the_default_sweep():
    args = run.resolve(run.parser().parse_args(["--quick"]))
    assert "batch_all:none" not in args.loss
    args = run.resolve(run.parser().parse_args(["--quick", "--loss", "mine_semihard"]))
    assert [g[0] for g in run.plan(args) if g[0] != "floor"] == ["refloss", "refloss"]


def test_device_cuda_sweeps_the_gpu_backends_to_65536_and_merges_into_docs():
    args = run.resolve(run.parser().parse_args(["--device", "cuda"]))
    assert args.backend == ["torch:cuda", "cupy"]
    assert max(args.sizes) == 65536
    assert args.merge and args.out == run.DOCS
    args = run.resolve(run.parser().parse_args(["--device", "cuda", "--no-merge"]))
    assert not args.merge
    args = run.resolve(run.parser().parse_args(["--quick", "--device", "cuda"]))
    assert args.out is None and not args.merge
    with pytest.raises(SystemExit, match="--merge merges into"):
        run.resolve(run.parser().parse_args(["--quick", "--merge"]))


def test_device_cuda_without_any_gpu_backend_stops_with_the_reasons(monkeypatch):
    monkeypatch.setattr(run, "gpu_problems", lambda names: {n: f"no {n} here" for n in names})
    with pytest.raises(SystemExit, match=r"no usable GPU backend.*no torch:cuda here.*no cupy"):
        run.main(["--device", "cuda", "--out", "/nonexistent"])


def test_device_cuda_with_one_gpu_backend_warns_about_the_other(monkeypatch):
    import argparse
    import io

    monkeypatch.setattr(run, "gpu_problems", lambda names: {"cupy": "cupy is not installed"})
    log = io.StringIO()
    run.check_gpu(argparse.Namespace(backend=["torch:cuda", "cupy"]), log=log)
    assert "cupy: cupy is not installed" in log.getvalue()


def test_gpu_problems_names_the_cause_on_this_machine():
    problems = run.gpu_problems(["torch:cuda", "cupy"])
    for why in problems.values():
        assert why and ("torch" in why or "cupy" in why)


def test_merge_replaces_rows_of_the_same_configuration_and_records_the_run():
    old = [_row("refloss", "batch_all", "numpy", 256, 1.0),
           _row("refloss", "batch_all", "torch:cuda", 256, 9.0)]
    new = [_row("refloss", "batch_all", "torch:cuda", 256, 0.5),
           _row("refloss", "batch_all", "cupy", 256, 0.4)]
    meta, rows = report.merge({"mode": "full"}, old, {"command": "gpu", "gpu": "H200"}, new)
    got = {(r["backend"], r["median_s"]) for r in rows}
    assert got == {("numpy", 1.0), ("torch:cuda", 0.5), ("cupy", 0.4)}
    assert meta["mode"] == "full" and meta["merged"][0]["gpu"] == "H200"
    assert "merged in: `gpu`" in report.describe_run(meta)


def test_summary_shows_memory_constant_and_op_counts_from_smallest_to_largest_batch():
    rows = [dict(_row("refloss", "semihard", "torch", b, 0.1, delta=1.0), ops=ops, syncs=2)
            for b, ops in ((256, 300), (4096, 310))]
    text = report.summary_markdown(report.derive(rows))
    assert "| refloss | semihard | torch | float32 | 8-classes | 4096 |" in text
    assert "300 (256) → 310 (4096)" in text and "2 (256) → 2 (4096)" in text


def test_soft_batch_all_op_count_does_not_grow_with_the_batch():
    # before the positive-table blocks: one block per anchor from B = 256
    # (208 ops at B = 64, 995 at B = 256, 53,411 at B = 1024)
    torch = pytest.importorskip("torch")
    from benchmarks.counting import count_ops

    def ops(b):
        x = torch.from_numpy(np.random.default_rng(0).standard_normal((b, 8)))
        labels = torch.from_numpy(np.arange(b) // 4)
        return count_ops(rl.value_and_grad, rl.batch_all_triplet_loss, x, labels,
                         soft=True)[1]

    assert ops(256) <= 1.2 * ops(64)


def test_from_csv_with_merge_adds_the_rows_to_the_existing_csv(tmp_path):
    out, other = tmp_path / "out", tmp_path / "other.csv"
    out.mkdir()
    report.write_csv(out / "benchmarks.csv", {"mode": "full"},
                     [_row("refloss", "batch_all", "numpy", 256, 1.0)])
    report.write_csv(other, {"command": "gpu run", "gpu": "H200"},
                     [_row("refloss", "batch_all", "cupy", 256, 0.1)])
    assert run.main(["--from-csv", str(other), "--merge", "--out", str(out), "--no-plot"]) == 0
    meta, rows = report.read_csv(out / "benchmarks.csv")
    assert {r["backend"] for r in rows} == {"numpy", "cupy"}
    assert meta["mode"] == "full" and meta["merged"][0]["command"] == "gpu run"
