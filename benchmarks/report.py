"""Tables, targets, CSV, plot and the docs page, all from the list of result rows.

A row is the child's configuration plus its result (see ``child.Config`` and
``child.Result``) plus what :func:`derive` adds: the floor's median at the
same backend, dtype and B, the ratio to it, and the memory constant
:math:`c = \\Delta\\mathrm{peak} / (B^2 \\cdot \\mathrm{itemsize})`.
Everything here is a pure function of the rows (and of the run's metadata
for the page), so ``--from-csv`` regenerates exactly what the run printed.
"""

from __future__ import annotations

import csv
import json
import math
import pathlib
from dataclasses import dataclass
from typing import Any

from . import impls

# ---------------------------------------------------------------------------
# rows and the CSV

INT_FIELDS = ("batch", "dim", "repeats", "threads", "seed", "n", "ops", "syncs")
FLOAT_FIELDS = (
    "budget", "slow", "median_s", "min_s", "max_s", "warmup_s", "baseline_rss_mib",
    "peak_rss_mib", "peak_rss_delta_mib", "gpu_peak_mib", "gpu_peak_delta_mib", "value",
    "rel_err_f64", "grad_rel_err_f64", "wall_s", "floor_s", "ratio_floor", "mem_constant",
)
BOOL_FIELDS = ("accuracy", "peak_reset")
LIST_FIELDS = ("samples", "float64_ops", "sync_ops")  # JSON in the CSV
CSV_FIELDS = (
    "impl", "loss", "backend", "dtype", "labels", "batch", "dim", "status", "note",
    "n", "median_s", "min_s", "max_s", "floor_s", "ratio_floor",
    "peak_rss_delta_mib", "peak_rss_mib", "baseline_rss_mib", "peak_reset", "mem_constant",
    "gpu_peak_mib", "gpu_peak_delta_mib",
    "value", "value_dtype", "grad_dtype", "rel_err_f64", "grad_rel_err_f64", "float64_ops",
    "ops", "syncs", "sync_ops",
    "warmup_s", "samples", "wall_s", "repeats", "budget", "slow", "threads", "accuracy", "seed",
)
META_PREFIX = "# meta "
ITEMSIZE = {"float32": 4, "float64": 8}
FAILED = ("OOM", "timeout")


def _parse(name: str, value: Any) -> Any:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        return value
    if name in INT_FIELDS:
        return int(float(value))
    if name in FLOAT_FIELDS:
        return float(value)
    if name in BOOL_FIELDS:
        return value == "True"
    if name in LIST_FIELDS:
        return json.loads(value)
    return value


def normalize(row: dict) -> dict:
    """Types restored (a CSV row holds strings), missing fields as None."""
    out = {name: None for name in CSV_FIELDS}
    out.update({name: _parse(name, value) for name, value in row.items()})
    out["note"] = out["note"] or ""
    return out


def derive(rows: list[dict]) -> list[dict]:
    """Rows with ``floor_s``, ``ratio_floor`` and ``mem_constant`` (re)computed."""
    rows = [normalize(r) for r in rows]
    floors = {(r["backend"], r["dtype"], r["batch"]): r["median_s"] for r in rows
              if r["impl"] == "floor" and r["status"] == "ok"}
    for r in rows:
        r["floor_s"] = floors.get((r["backend"], r["dtype"], r["batch"]))
        ok = r["status"] == "ok" and r["median_s"] is not None
        r["ratio_floor"] = r["median_s"] / r["floor_s"] if ok and r["floor_s"] else None
        delta = (r["gpu_peak_delta_mib"] if r["backend"] in impls.GPU_BACKENDS
                 else r["peak_rss_delta_mib"])
        r["mem_constant"] = (delta * 2**20 / (r["batch"] ** 2 * ITEMSIZE[r["dtype"]])
                             if ok and delta is not None else None)
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def write_csv(path: pathlib.Path, meta: dict, rows: list[dict]) -> None:
    """One header line ``# meta {json}`` (the run's description), then the rows."""
    with open(path, "w", newline="") as f:
        f.write(META_PREFIX + json.dumps(meta, sort_keys=True) + "\n")
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: _cell(r.get(k)) for k in CSV_FIELDS})


def merge(old_meta: dict, old_rows: list[dict], meta: dict,
          rows: list[dict]) -> tuple[dict, list[dict]]:
    """``(meta, rows)`` of an existing CSV with a newer run's rows merged in.

    A new row replaces the old row of the same configuration (impl, loss,
    backend, dtype, labels, B); the new run's description is appended to
    ``meta["merged"]`` so that the page says which rows came from where.
    """
    def key(r):
        return (r["impl"], r["loss"], r["backend"], r["dtype"], r["labels"], r["batch"])

    new = {key(r): r for r in rows}
    kept = [r for r in old_rows if key(r) not in new]
    summary = {k: meta.get(k) for k in ("command", "date", "gpu", "commit", "sizes")}
    merged_meta = {**old_meta, "merged": [*old_meta.get("merged", []), summary]}
    return merged_meta, kept + list(rows)


def read_csv(path: pathlib.Path) -> tuple[dict, list[dict]]:
    """``(meta, rows)`` of a CSV written by :func:`write_csv`."""
    with open(path, newline="") as f:
        first = f.readline()
        if not first.startswith(META_PREFIX):
            raise ValueError(f"{path}: expected a first line starting with {META_PREFIX!r}")
        meta = json.loads(first[len(META_PREFIX):])
        rows = [normalize(r) for r in csv.DictReader(f)]
    return meta, rows


# ---------------------------------------------------------------------------
# formatting


def fmt_s(t: float | None) -> str:
    """Seconds to 3 significant digits."""
    if t is None:
        return "—"
    return f"{t:.3g}" if t >= 1e-3 else f"{t:.2e}"


def fmt_mib(m: float | None) -> str:
    return "—" if m is None else f"{m:,.0f}"


def fmt_count(n: int | None) -> str:
    """An op or sync count; "—" where not counted (only torch steps are)."""
    return "—" if n is None else f"{n:,}"


def fmt_ratio(r: float | None) -> str:
    if r is None:
        return "—"
    if math.isinf(r):
        return "∞"
    return f"{r:.3g}×"


def status_text(r: dict) -> str:
    if r["status"] == "ok":
        return "ok" + (f" ({r['note']})" if r["note"] else "")
    if r["status"] == "skipped":
        return f"skipped ({r['note']})"
    if r["status"] in FAILED:
        return f"**{r['status']}**"
    return f"{r['status']}: {r['note']}"[:120]


def progress_line(r: dict) -> str:
    head = (f"{r['impl']} {r['loss']} {r['backend']} {r['dtype']} {r['labels']} "
            f"B={r['batch']}")
    if r.get("status") != "ok":
        return f"{head}: {r.get('status')} {r.get('note', '')}".rstrip()
    delta = r.get("peak_rss_delta_mib")
    gpu = r.get("gpu_peak_delta_mib")
    mem = f"Δ {fmt_mib(delta)} MiB" + (f", GPU Δ {fmt_mib(gpu)} MiB" if gpu is not None else "")
    return f"{head}: median {fmt_s(r['median_s'])} s (n={r['n']}), {mem}"


def _order(r: dict) -> tuple:
    impl_rank = impls.IMPLS.index(r["impl"]) if r["impl"] in impls.IMPLS else 99
    names = (*impls.ALL_LOSSES, impls.FLOOR)
    loss_rank = names.index(r["loss"]) if r["loss"] in names else 99
    return (r["dtype"], r["labels"], loss_rank, impl_rank, r["backend"], r["batch"])


HEADER = ("| impl | loss | backend | dtype | labels | B | median s | min s | max s | n "
          "| × floor | peak Δ MiB | peak MiB | c = Δ/(B²·size) | ops | syncs | status |")
RULE = "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"


def _row_markdown(r: dict) -> str:
    gpu = r["backend"] in impls.GPU_BACKENDS
    delta = r["gpu_peak_delta_mib"] if gpu else r["peak_rss_delta_mib"]
    peak = r["gpu_peak_mib"] if gpu else r["peak_rss_mib"]
    ok = r["status"] == "ok"
    c = "—" if r["mem_constant"] is None else f"{r['mem_constant']:.2f}"
    return (f"| {r['impl']} | {r['loss']} | {r['backend']} | {r['dtype']} | {r['labels']} "
            f"| {r['batch']} | {fmt_s(r['median_s']) if ok else '—'} "
            f"| {fmt_s(r['min_s']) if ok else '—'} | {fmt_s(r['max_s']) if ok else '—'} "
            f"| {r['n'] if ok else '—'} | {fmt_ratio(r['ratio_floor'])} "
            f"| {fmt_mib(delta) if ok else '—'} | {fmt_mib(peak)} | {c} "
            f"| {fmt_count(r['ops'])} | {fmt_count(r['syncs'])} | {status_text(r)} |")


def markdown_table(rows: list[dict]) -> str:
    """Every row in one Markdown table (GPU rows carry their device in ``backend``)."""
    return "\n".join([HEADER, RULE, *(_row_markdown(r) for r in sorted(rows, key=_order))])


def markdown_sections(rows: list[dict]) -> str:
    """One table per (dtype, label layout); the floor rows repeated in each."""
    floors = [r for r in rows if r["impl"] == "floor"]
    parts = []
    for dtype in sorted({r["dtype"] for r in rows}):
        for labels in sorted({r["labels"] for r in rows if r["impl"] != "floor"}):
            body = [r for r in rows if r["dtype"] == dtype and r["labels"] == labels]
            body += [r for r in floors if r["dtype"] == dtype]
            if not body:
                continue
            parts.append(f"#### {dtype}, labels {labels}\n\n{markdown_table(body)}\n")
    if not parts and floors:
        parts.append(markdown_table(floors) + "\n")
    return "\n".join(parts)


def summary_markdown(rows: list[dict]) -> str:
    """Per refloss configuration (loss, backend, dtype, labels): the memory
    constant c at the largest B measured, and the ops and syncs of one step at
    the smallest and the largest B counted (torch only) — flat op counts mean
    no loop grows with B."""
    groups: dict[tuple, list] = {}
    for r in rows:
        if r["impl"] in ("refloss", "refloss-adapter") and _ok(r):
            groups.setdefault((r["impl"], r["loss"], r["backend"], r["dtype"], r["labels"]),
                              []).append(r)
    if not groups:
        return "(no refloss configuration measured)"
    names = (*impls.ALL_LOSSES, impls.FLOOR)
    out = ["| impl | loss | backend | dtype | labels | largest B | c = Δ/(B²·size) "
           "| ops (B) | syncs (B) |", "|---|---|---|---|---|---:|---:|---|---|"]

    def rank(key):
        return (key[3], key[4], names.index(key[1]) if key[1] in names else 99, key[0], key[2])

    for key in sorted(groups, key=rank):
        series = sorted(groups[key], key=lambda r: r["batch"])
        top = series[-1]
        c = "—" if top["mem_constant"] is None else f"{top['mem_constant']:.2f}"
        counted = [r for r in series if r["ops"] is not None]
        ends = [counted[0], counted[-1]] if len(counted) > 1 else counted
        ops = " → ".join(f"{fmt_count(r['ops'])} ({r['batch']})" for r in ends) or "—"
        syncs = " → ".join(f"{fmt_count(r['syncs'])} ({r['batch']})" for r in ends) or "—"
        out.append(f"| {' | '.join(key)} | {top['batch']} | {c} | {ops} | {syncs} |")
    return "\n".join(out)


# ---------------------------------------------------------------------------
# targets


@dataclass(frozen=True)
class Target:
    """One line of the targets summary."""

    target: str
    where: str
    measured: str
    goal: str
    verdict: str  # "pass", "miss" or "n/a" (not measured in this run)


def _ok(r: dict) -> bool:
    return r["status"] == "ok" and r["median_s"] is not None


def _index(rows: list[dict]) -> dict:
    return {(r["impl"], r["loss"], r["backend"], r["dtype"], r["labels"], r["batch"]): r
            for r in rows}


def _refloss_groups(rows: list[dict], losses) -> list[tuple]:
    return sorted({(r["impl"], r["backend"], r["loss"]) for r in rows
                   if r["impl"] in ("refloss", "refloss-adapter") and r["loss"] in losses
                   and r["status"] not in ("unavailable",)})


def _target_floor(rows: list[dict], at: int = 4096, goal: float = 3.0) -> list[Target]:
    out = []
    for impl, backend, loss in _refloss_groups(rows, ("batch_all", "semihard")):
        cands = [r for r in rows if (r["impl"], r["backend"], r["loss"]) == (impl, backend, loss)
                 and r["ratio_floor"] is not None]
        name = f"{loss} f+b ≤ {goal:g}× floor at B={at}"
        where = f"{impl} on {backend}"
        exact = [r for r in cands if r["batch"] == at]
        if exact:
            worst = max(exact, key=lambda r: r["ratio_floor"])
            best = min(exact, key=lambda r: r["ratio_floor"])
            out.append(Target(name, where,
                              f"worst {fmt_ratio(worst['ratio_floor'])} ({worst['dtype']}, "
                              f"{worst['labels']}); best {fmt_ratio(best['ratio_floor'])}",
                              f"≤ {goal:g}×", "pass" if worst["ratio_floor"] <= goal else "miss"))
        elif cands:
            top = max(r["batch"] for r in cands)
            worst = max((r for r in cands if r["batch"] == top), key=lambda r: r["ratio_floor"])
            out.append(Target(name, where,
                              f"B={at} not measured; at B={top}: worst "
                              f"{fmt_ratio(worst['ratio_floor'])} ({worst['dtype']}, "
                              f"{worst['labels']})", f"≤ {goal:g}×", "n/a"))
    return out


def _failure_batch(rows: list[dict], key: tuple) -> int | None:
    """Smallest B where the group (impl, loss, backend, dtype, labels) ran out."""
    fails = [r["batch"] for r in rows if (r["impl"], r["loss"], r["backend"], r["dtype"],
                                          r["labels"]) == key and r["status"] in FAILED]
    return min(fails) if fails else None


def _target_pml(rows: list[dict], at: int = 1024) -> list[Target]:
    goals = {"8-classes": 50.0, "4-per-class": 10.0}
    idx = _index(rows)
    out = []
    for impl, backend, _ in _refloss_groups(rows, ("batch_all",)):
        if backend not in ("torch", "numpy", "torch:cuda", "cupy"):
            continue
        peer_backend = "torch:cuda" if backend in impls.GPU_BACKENDS else "torch"
        for labels, goal in goals.items():
            measured, verdicts = [], []
            for dtype in ("float32", "float64"):
                mine = idx.get((impl, "batch_all", backend, dtype, labels, at))
                peer = idx.get(("pml", "batch_all", peer_backend, dtype, labels, at))
                if mine is None or peer is None or not _ok(mine):
                    continue
                if _ok(peer):
                    speedup = peer["median_s"] / mine["median_s"]
                    measured.append(f"{dtype}: {speedup:.3g}×")
                    verdicts.append(speedup >= goal)
                elif peer["status"] in FAILED or peer["status"] == "skipped":
                    why = peer["status"] if peer["status"] in FAILED else peer["note"]
                    measured.append(f"{dtype}: PML {why}, refloss {fmt_s(mine['median_s'])} s")
                    verdicts.append(True)
            name = f"batch_all ≥ {goal:g}× faster than PML all-triplets, B={at}, {labels}"
            where = f"{impl} on {backend} vs PML on {peer_backend}"
            if verdicts:
                out.append(Target(name, where, "; ".join(measured), f"≥ {goal:g}×",
                                  "pass" if all(verdicts) else "miss"))
            else:
                out.append(Target(name, where, f"B={at} not measured for both", f"≥ {goal:g}×",
                                  "n/a"))
        # Where PML's all-triplets loss runs out, refloss must still run.
        cases = []
        for dtype in ("float32", "float64"):
            for labels in goals:
                mine = [r for r in rows if (r["impl"], r["loss"], r["backend"], r["dtype"],
                                            r["labels"]) == (impl, "batch_all", backend, dtype,
                                                             labels)]
                fail = _failure_batch(rows, ("pml", "batch_all", peer_backend, dtype, labels))
                if mine and fail is not None:
                    ran = [r["batch"] for r in mine if _ok(r)]
                    cases.append((dtype, labels, fail, max(ran) if ran else None))
        name = "batch_all runs where PML all-triplets runs out"
        where = f"{impl} on {backend}"
        if not cases:
            out.append(Target(name, where, "PML ran at every B measured", "runs", "n/a"))
            continue
        text = "; ".join(f"{d}, {lab}: PML out at B={f}, refloss ran up to B={t}"
                         for d, lab, f, t in cases)
        passed = all(t is not None and t >= f for _, _, f, t in cases)
        out.append(Target(name, where, text, "runs", "pass" if passed else "miss"))
    return out


def _target_batch_hard(rows: list[dict], min_batch: int = 1024) -> list[Target]:
    idx = _index(rows)
    out = []
    for impl, backend, _ in _refloss_groups(rows, ("batch_hard",)):
        if backend not in ("torch", "torch:cuda"):
            continue
        ratios, wins = [], []
        for r in rows:
            if (r["impl"], r["loss"], r["backend"]) != (impl, "batch_hard", backend):
                continue
            if not _ok(r):
                continue
            hand = idx.get(("torch-hand", "batch_hard", backend, r["dtype"], r["labels"],
                            r["batch"]))
            if hand is None:
                continue
            if _ok(hand):
                ratios.append((r["median_s"] / hand["median_s"], r))
            elif hand["status"] in FAILED or hand["status"] == "skipped":
                wins.append(r)
        name = "batch_hard no slower than hand-written torch autograd"
        where = f"{impl} on {backend}"
        big = [(q, r) for q, r in ratios if r["batch"] >= min_batch]
        chosen = big or ratios
        if not chosen:
            out.append(Target(name, where, "no common B measured", "≤ 1×", "n/a"))
            continue
        q, r = max(chosen, key=lambda t: t[0])
        text = (f"worst {q:.3g}× at B={r['batch']} ({r['dtype']}, {r['labels']}) of "
                f"{len(chosen)} B ≥ {min_batch if big else 'any'}")
        if wins:
            text += f"; hand-written ran out where refloss ran at {len(wins)}"
        verdict = ("pass" if q <= 1.0 else "miss") if big else "n/a"
        out.append(Target(name, where, text, "≤ 1×", verdict))
    return out


def _target_memory(rows: list[dict], goal: float = 6.0, min_batch: int = 4096,
                   big: int = 16384, limit_gib: float = 8.0) -> list[Target]:
    out = []
    refl = [r for r in rows if r["impl"] in ("refloss", "refloss-adapter") and _ok(r)
            and r["mem_constant"] is not None]
    for loss in impls.ALL_LOSSES:
        mine = [r for r in refl if r["loss"] == loss]
        if not mine:
            continue
        # c at the largest B of each group: fixed costs and the O(B·D) terms
        # fade as B grows, so that is where c is the B² constant.
        largest: dict[tuple, dict] = {}
        for r in mine:
            key = (r["impl"], r["backend"], r["dtype"], r["labels"])
            if key not in largest or r["batch"] > largest[key]["batch"]:
                largest[key] = r
        worst = max(largest.values(), key=lambda r: r["mem_constant"])
        name = f"{loss}: peak memory ≤ {goal:g}·B²·itemsize + O(B·D)"
        where = (f"{worst['impl']} on {worst['backend']}, {worst['dtype']}, {worst['labels']}, "
                 f"B={worst['batch']}")
        text = f"c = {worst['mem_constant']:.2f} (worst of {len(largest)} groups at their "
        text += "largest B)"
        verdict = ("pass" if worst["mem_constant"] <= goal else "miss") if (
            worst["batch"] >= min_batch) else "n/a"
        if verdict == "n/a":
            text += f"; B < {min_batch}: fixed costs dominate"
        out.append(Target(name, where, text, f"c ≤ {goal:g}", verdict))
        if loss not in impls.LOSSES:  # the variants are measured on request only
            continue
        at_big = [r for r in mine if r["batch"] == big and r["dtype"] == "float32"]
        name = f"{loss}: B={big} float32 in under {limit_gib:g} GiB"
        if at_big:
            def peak(r):
                gpu = r["backend"] in impls.GPU_BACKENDS
                return r["gpu_peak_mib"] if gpu else r["peak_rss_mib"]

            top = max(at_big, key=peak)
            out.append(Target(name, f"{top['impl']} on {top['backend']}, {top['labels']}",
                              f"peak {peak(top) / 1024:.2f} GiB (absolute RSS or GPU peak)",
                              f"< {limit_gib:g} GiB",
                              "pass" if peak(top) < limit_gib * 1024 else "miss"))
        else:
            failed = [r for r in rows if r["impl"] in ("refloss", "refloss-adapter")
                      and r["loss"] == loss and r["batch"] == big and r["dtype"] == "float32"
                      and r["status"] in FAILED]
            if failed:
                out.append(Target(name, f"{failed[0]['impl']} on {failed[0]['backend']}",
                                  failed[0]["status"], f"< {limit_gib:g} GiB", "miss"))
            else:
                out.append(Target(name, "—", f"B={big} float32 not measured",
                                  f"< {limit_gib:g} GiB", "n/a"))
    return out


def _target_float32(rows: list[dict], tol: float = 1e-4) -> list[Target]:
    out = []
    f32 = [r for r in rows if r["impl"] in ("refloss", "refloss-adapter") and _ok(r)
           and r["dtype"] == "float32"]
    if not f32:
        return [Target("float32 all the way through", "—", "no float32 refloss run",
                       "float32", "n/a")]
    bad = [r for r in f32 if r["grad_dtype"] not in (None, "float32")
           or r["value_dtype"] not in (None, "float32")]
    out.append(Target("float32 in → float32 value and gradient",
                      f"{len(f32)} refloss float32 runs",
                      "all float32" if not bad else
                      "; ".join(f"{r['loss']} {r['backend']}: {r['value_dtype']}/"
                                f"{r['grad_dtype']}" for r in bad[:4]),
                      "float32", "miss" if bad else "pass"))
    traced = [r for r in f32 if r["float64_ops"] is not None]
    if traced:
        ops = sorted({op for r in traced for op in r["float64_ops"]})
        losses = sorted({r["loss"] for r in traced if r["float64_ops"]})
        out.append(Target("no float64 op inside a float32 call (torch dispatch trace)",
                          f"{len(traced)} traced torch runs",
                          "none" if not ops else f"{', '.join(ops)} in {', '.join(losses)}",
                          "none", "miss" if ops else "pass"))
    checked = [r for r in f32 if r["rel_err_f64"] is not None]
    if checked:
        worst = max(checked, key=lambda r: r["rel_err_f64"])
        grad = max((r["grad_rel_err_f64"] or 0.0) for r in checked)
        out.append(Target(f"float32 value within {tol:g} relative of float64",
                          f"{len(checked)} runs; worst {worst['loss']} on {worst['backend']}, "
                          f"{worst['labels']}, B={worst['batch']}",
                          f"{worst['rel_err_f64']:.2e} (gradient: worst ‖Δg‖/‖g‖ "
                          f"{grad:.2e})", f"≤ {tol:g}",
                          "pass" if worst["rel_err_f64"] <= tol else "miss"))
    # Memory halves when nothing is upcast: float32/float64 peak at the same B.
    pairs = []
    for r in f32:
        if r["impl"] != "refloss" or r["peak_rss_delta_mib"] is None:
            continue
        twin = next((q for q in rows if _ok(q) and q["dtype"] == "float64" and all(
            q[k] == r[k] for k in ("impl", "loss", "backend", "labels", "batch"))), None)
        if twin is not None and twin["peak_rss_delta_mib"]:
            pairs.append((r["batch"], r["peak_rss_delta_mib"] / twin["peak_rss_delta_mib"], r))
    if pairs:
        top = max(b for b, _, _ in pairs)
        ratios = [q for b, q, _ in pairs if b == top]
        out.append(Target("float32 peak / float64 peak (≈ 0.5 when nothing is upcast)",
                          f"refloss, B={top}, {len(ratios)} pairs",
                          f"{min(ratios):.2f} – {max(ratios):.2f}", "≈ 0.5", "info"))
    return out


def targets(rows: list[dict]) -> list[Target]:
    """The issue's targets, each with its measured value and a verdict."""
    return (_target_floor(rows) + _target_pml(rows) + _target_batch_hard(rows)
            + _target_memory(rows) + _target_float32(rows))


def targets_markdown(lines: list[Target]) -> str:
    if not lines:
        return "(no target measurable from these rows)"
    out = ["| target | where | measured | goal | result |", "|---|---|---|---|---|"]
    out += [f"| {t.target} | {t.where} | {t.measured} | {t.goal} | **{t.verdict}** |"
            for t in lines]
    return "\n".join(out)


# ---------------------------------------------------------------------------
# the plot

_COLORS = {("refloss", "numpy"): "C0", ("refloss", "cupy"): "C0",
           ("refloss", "torch"): "C1", ("refloss", "torch:cuda"): "C1",
           ("refloss-adapter", "torch"): "C2", ("refloss-adapter", "torch:cuda"): "C2",
           ("pml", "torch"): "C3", ("pml", "torch:cuda"): "C3",
           ("torch-hand", "torch"): "C4", ("torch-hand", "torch:cuda"): "C4",
           ("floor", "numpy"): "black", ("floor", "cupy"): "black",
           ("floor", "torch"): "gray", ("floor", "torch:cuda"): "gray"}
_LAYOUT_STYLES = ("-", "--", "-.", (0, (1, 1)))


def plot(rows: list[dict], meta: dict, path: pathlib.Path, dtype: str = "float32") -> bool:
    """Time and peak memory against B (log–log): one row of panels per loss.

    Colour = implementation and backend, line style = label layout, the
    floor (dotted) in every panel. Only ``dtype`` rows are drawn (float64 is
    in the tables). A group that ran out of memory or time gets a cross and
    its status at the B where it happened. Returns False when matplotlib is
    not installed.
    """
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    rows = [r for r in rows if r["dtype"] == dtype]
    losses = [loss for loss in impls.LOSSES if any(r["loss"] == loss for r in rows)]
    if not losses:
        losses = [impls.FLOOR]
    layouts = sorted({r["labels"] for r in rows if r["impl"] != "floor"})
    style_of = {lab: _LAYOUT_STYLES[i % len(_LAYOUT_STYLES)] for i, lab in enumerate(layouts)}
    fig, axes = plt.subplots(len(losses), 2, figsize=(12, 3.6 * len(losses) + 1.6),
                             squeeze=False)
    used = {}
    floors = [r for r in rows if r["impl"] == "floor"]
    for i, loss in enumerate(losses):
        chosen = [r for r in rows if r["loss"] == loss] + floors
        for key in sorted({(r["impl"], r["backend"], r["labels"]) for r in chosen}):
            impl, backend, labels = key
            series = sorted((r for r in chosen if (r["impl"], r["backend"], r["labels"]) == key),
                            key=lambda r: r["batch"])
            color = _COLORS.get((impl, backend), "C7")
            style = ":" if impl == "floor" else style_of.get(labels, "-")
            used[f"{impl} ({backend})"] = color
            gpu = backend in impls.GPU_BACKENDS
            fields = ("median_s", "gpu_peak_delta_mib" if gpu else "peak_rss_delta_mib")
            for j, field in enumerate(fields):
                ax = axes[i][j]
                pts = [(r["batch"], r[field]) for r in series
                       if _ok(r) and r[field] is not None and r[field] > 0]
                if pts:
                    ax.plot(*zip(*pts), linestyle=style, marker="o", ms=3.5, lw=1.3,
                            color=color)
                for r in series:
                    if r["status"] in FAILED:
                        y = pts[-1][1] if pts else 1.0
                        ax.plot([r["batch"]], [y], marker="X", ms=10, color=color, ls="none")
                        ax.annotate(r["status"], (r["batch"], y), textcoords="offset points",
                                    xytext=(5, 3), fontsize=8, color=color)
        for j, ylabel in enumerate(("forward + backward, median (s)",
                                    "peak memory above baseline (MiB)")):
            ax = axes[i][j]
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("batch size B")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(f"{loss}, {dtype}, D = {meta.get('dim', 128)}")
    handles = [Line2D([], [], color=c, lw=2, label=name) for name, c in used.items()]
    handles += [Line2D([], [], color="black", linestyle=st, label=f"labels {lab}")
                for lab, st in style_of.items()]
    handles.append(Line2D([], [], color="black", marker="X", ls="none", ms=9,
                          label="out of memory / time"))
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=9, frameon=False)
    mode = meta.get("mode", "?")
    fig.suptitle(f"refloss benchmarks: {mode} run, {meta.get('threads', '?')} threads, "
                 f"{meta.get('machine', {}).get('cpu', '?')} (floor dotted)", fontsize=11)
    n_legend_rows = math.ceil(len(handles) / 4)
    bottom = (0.25 + 0.22 * n_legend_rows) / (3.6 * len(losses) + 1.6)
    fig.tight_layout(rect=(0, bottom, 1, 0.98))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------
# the run's description and the docs page

BEGIN = "<!-- BEGIN GENERATED: python -m benchmarks writes this section; do not edit -->"
END = "<!-- END GENERATED -->"


def describe_run(meta: dict) -> str:
    m = meta.get("machine", {})
    v = meta.get("versions", {})
    return "\n".join([
        f"- command: `{meta.get('command')}`",
        f"- mode: {meta.get('mode')} run, {meta.get('date')}; B ∈ {meta.get('sizes')}, "
        f"D = {meta.get('dim')}; up to {meta.get('repeats')} timed repeats or "
        f"{meta.get('budget_s')} s of them after warm-up; timeout {meta.get('timeout_s')} s "
        f"and memory limit {meta.get('mem_limit_gib')} GiB per configuration",
        f"- machine: {m.get('cpu')}, {m.get('cores')} cores ({m.get('usable_cores')} usable), "
        f"{m.get('ram_gib')} GiB RAM, {m.get('os')}; GPU: {meta.get('gpu')}; "
        f"load average at start {meta.get('load_average')}",
        f"- threads: {meta.get('threads')} (OMP_NUM_THREADS, MKL_NUM_THREADS, "
        f"OPENBLAS_NUM_THREADS and torch.set_num_threads)",
        "- versions: Python " + str(m.get("python")) + ", "
        + ", ".join(f"{k} {v[k]}" for k in sorted(v))
        + f"; refloss commit {meta.get('commit')}",
        *(f"- merged in: `{m.get('command')}`, {m.get('date')}, GPU: {m.get('gpu')}, "
          f"commit {m.get('commit')} (its rows replace those of the same configuration)"
          for m in meta.get("merged", [])),
    ])


def docs_section(meta: dict, rows: list[dict]) -> str:
    """The generated part of docs/benchmarks.md: a function of the CSV alone."""
    rows = derive(rows)
    quick = meta.get("mode") == "quick"
    warning = ("\n> **Quick run** (`--quick`: B ≤ 1024, few repeats, float32, 8 classes) — "
               "indicative, not the full sweep; targets at B = 4096 and beyond read "
               "\"n/a\".\n" if quick else "")
    return "\n".join([
        BEGIN,
        "",
        "## Results",
        warning,
        describe_run(meta),
        "",
        "![time and memory against B](benchmarks.png)",
        "",
        "Raw numbers, one row per configuration: [benchmarks.csv](benchmarks.csv).",
        "",
        "### Targets",
        "",
        targets_markdown(targets(rows)),
        "",
        "### Memory and op counts per configuration",
        "",
        summary_markdown(rows),
        "",
        "### All measurements",
        "",
        markdown_sections(rows),
        END,
    ])


def write_docs(path: pathlib.Path, meta: dict, rows: list[dict]) -> None:
    """Replace the generated section of ``path`` (create the page if missing)."""
    section = docs_section(meta, rows)
    text = path.read_text() if path.exists() else "# Benchmarks\n\n" + BEGIN + "\n" + END + "\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip("\n") + "\n\n" + BEGIN + "\n" + END + "\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(head + section + tail)


def generated_section(text: str) -> str:
    """The generated section of a page's text (BEGIN to END, both included)."""
    start = text.index(BEGIN)
    return text[start:text.index(END, start) + len(END)]
