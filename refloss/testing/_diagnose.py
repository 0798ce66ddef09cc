"""The words of a difference: what differs (value, gradient, mined
triplets), how the two relate (off by a little, k × reference, opposite
sign), and where (the counterexample's batch, triplets or pairs described).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ._report import Counterexample

__all__ = ["describe"]


def describe(cx: Counterexample) -> str:
    """The difference of a counterexample in one line of words."""
    where = _where(cx)
    cause = f"; {cx.cause}" if getattr(cx, "cause", "") else ""
    if cx.kind in ("error", "raises", "nondeterministic") or (
            cx.kind == "value" and cx.message):
        return f"{cx.message} on {where}"
    if cx.kind == "indices":
        return f"{_indices_words(cx)} on {where}"
    if cx.kind == "gradient":
        return f"{_grad_words(cx)} on {where}{cause}"
    return f"{_value_words(cx)} on {where}{cause}"


def _value_words(cx: Counterexample) -> str:
    if not cx.candidate_value or not cx.reference_value:
        return "value differs"
    n = min(len(cx.candidate_value), len(cx.reference_value))
    for i in range(n):
        c = np.asarray(cx.candidate_value[i], dtype=np.float64)
        r = np.asarray(cx.reference_value[i], dtype=np.float64)
        if c.shape == r.shape and _same(c, r):
            continue
        label = "value" if i == 0 else f"output {i}"
        if np.any(np.isnan(c) & ~np.isnan(r)):
            return f"candidate {label} is NaN (reference {_arr(r)})"
        if np.any(np.isnan(r) & ~np.isnan(c)):
            return f"reference {label} is NaN, candidate {_arr(c)}"
        if c.size == 1:
            fmt = _num if abs(float(c) - float(r)) > 1e-4 * abs(float(r)) else _precise
            return f"{label} {fmt(float(c))} vs reference {fmt(float(r))}{_relation(c, r)}"
        k = int(np.argmax(np.abs(np.nan_to_num(c - r))))
        idx = np.unravel_index(k, c.shape)
        return (
            f"{label}[{', '.join(map(str, idx))}] {_num(float(c[idx]))} vs reference "
            f"{_num(float(r[idx]))}{_relation(c, r)}"
        )
    return "value differs"


def _grad_words(cx: Counterexample) -> str:
    role = cx.role or "?"
    c = cx.candidate_grads.get(role)
    r = cx.reference_grads.get(role)
    if c is None or r is None:
        return cx.message or f"gradient of {role} differs"
    c = np.asarray(c, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    if np.any(~np.isfinite(c) & np.isfinite(r)):
        bad = "NaN" if np.any(np.isnan(c)) else "inf"
        return f"candidate gradient of {role} is {bad} (reference finite: {_arr(r)})"
    if cx.message:
        return cx.message
    words = f"gradient of {role} differs"
    if c.shape == r.shape:
        live = np.abs(r) > 1e-12
        if np.any(live) and np.allclose(c, -r, rtol=1e-4, atol=1e-9):
            return f"gradient of {role} has the opposite sign"
        flipped = live & np.isclose(c, -r, rtol=1e-4, atol=1e-12)
        if np.any(flipped) and np.all(np.isclose(c[~flipped], r[~flipped], rtol=1e-4,
                                                 atol=1e-9)):
            return f"gradient of {role} has the opposite sign in {int(flipped.sum())} of " \
                   f"{c.size} entries"
        words += f" (max |difference| {_num(float(np.max(np.abs(c - r))))})" \
                 f"{_relation(c, r)}"
    return words


def _indices_words(cx: Counterexample) -> str:
    def rows(v):
        if not v:
            return set()
        return set(zip(*(np.asarray(a).tolist() for a in v), strict=False))

    c = rows(cx.candidate_value)
    r = rows(cx.reference_value)
    only_c = sorted(c - r)
    only_r = sorted(r - c)
    parts = []
    if only_c:
        parts.append(f"candidate mines {len(only_c)} the reference does not, e.g. {only_c[0]}")
    if only_r:
        parts.append(f"reference mines {len(only_r)} the candidate does not, e.g. {only_r[0]}")
    if not parts:
        return "mined indices differ (same set, different multiplicity)"
    return "; ".join(parts)


def _relation(c: np.ndarray, r: np.ndarray) -> str:
    c = np.asarray(c, dtype=np.float64).ravel()
    r = np.asarray(r, dtype=np.float64).ravel()
    if not (np.all(np.isfinite(c)) and np.all(np.isfinite(r))):
        return ""
    if np.all(r == 0) or np.all(c == 0):
        return ""  # the numbers themselves say it
    live = r != 0
    if np.any(c[~live] != 0):
        return ""
    gap = np.max(np.abs(c - r))
    if gap < 1e-4 * max(np.max(np.abs(r)), 1e-300):
        return f" (off by {_num(float(gap))})"
    # a ratio on one input says nothing of the cause ("5/4 ×" for missing
    # pairs): "k × reference" comes only from the named causes, when one k
    # holds on every example tried (_causes)
    return ""


def _ratio(k: float) -> str:
    for den in (1, 2, 3, 4, 6, 8):
        num = k * den
        whole = round(num)
        if abs(num - whole) < 1e-6 * max(1.0, abs(num)):
            return str(whole) if den == 1 else f"{whole}/{den}"
    return _num(k)


def _where(cx: Counterexample) -> str:
    inp = cx.inputs
    if "x" in inp and "labels" in inp:
        x, labels = np.asarray(inp["x"]), np.asarray(inp["labels"])
        b = x.shape[0]
        notes = _batch_notes(x, labels)
        if "centers" in inp:
            c = np.asarray(inp["centers"])
            if b and np.any(np.all(x == c[labels], axis=1)):
                notes.append("an embedding equal to its center")
        head = f"{b} sample{'s' if b != 1 else ''}, labels {labels.tolist()}"
        return head + (f" ({'; '.join(notes)})" if notes else "")
    if "anchor" in inp:
        a, p, n = (np.asarray(inp[k], dtype=np.float64) for k in ("anchor", "positive", "negative"))
        notes = []
        dap = np.sqrt(np.sum((a - p) ** 2, axis=1))
        dan = np.sqrt(np.sum((a - n) ** 2, axis=1))
        if np.any(dap == 0):
            notes.append("positive = anchor")
        if np.any(dan == 0):
            notes.append("negative = anchor")
        if np.any((dap == dan) & (dap > 0)):
            notes.append("d_ap = d_an exactly")
        k = a.shape[0]
        head = f"{k} triplet{'s' if k != 1 else ''}"
        return head + (f" ({'; '.join(notes)})" if notes else "")
    if "a" in inp:
        a, b = np.asarray(inp["a"]), np.asarray(inp["b"])
        k = a.shape[0]
        head = f"{k} pair{'s' if k != 1 else ''}"
        notes = []
        if "same" in inp:
            head += f", same={np.asarray(inp['same']).tolist()}"
        if k and np.any(np.all(a == b, axis=1)):
            notes.append("a = b (distance 0)")
        return head + (f" ({'; '.join(notes)})" if notes else "")
    if "x" in inp:
        x = np.asarray(inp["x"])
        notes = ["duplicate rows (distance 0)"] if _has_duplicates(x) else []
        head = f"{x.shape[0]} rows"
        return head + (f" ({'; '.join(notes)})" if notes else "")
    return "the counterexample"


def _has_duplicates(x: np.ndarray) -> bool:
    return x.shape[0] > 1 and np.unique(x, axis=0).shape[0] < x.shape[0]


def _batch_notes(x: np.ndarray, labels: np.ndarray) -> list[str]:
    notes = []
    if labels.size == 0:
        return ["empty batch"]
    classes, counts = np.unique(labels, return_counts=True)
    if classes.size == 1 and labels.size > 1:
        notes.append("a single class: no negative")
    if np.all(counts == 1):
        notes.append("every class has one sample: no positive pair")
    elif np.any(counts == 1):
        notes.append("a class with one sample")
    if _has_duplicates(x):
        notes.append("duplicate embeddings (distance 0)")
    if x.shape[1] and np.any(np.all(x == 0, axis=1)):
        notes.append("a zero embedding")
    u = np.unique(x, axis=0)
    if u.shape[0] > 2:
        diff = u[:, None, :] - u[None, :, :]
        d = np.sqrt(np.sum(diff.astype(np.float64) ** 2, axis=-1))
        upper = d[np.triu_indices(u.shape[0], 1)]
        if np.unique(upper).size < upper.size:
            notes.append("exactly equal distances (ties)")
    return notes


def _same(c: np.ndarray, r: np.ndarray) -> bool:
    return bool(np.array_equal(c, r, equal_nan=True))


def _num(v: float) -> str:
    if v is None:
        return "-"
    v = float(v)
    if np.isnan(v):
        return "nan"
    if np.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "0"
    if 1e-3 <= abs(v) < 1e5:
        return f"{v:.6g}"
    return f"{v:.3e}"


def _precise(v: float) -> str:
    return f"{float(v):.12g}"


def _arr(a: np.ndarray) -> str:
    a = np.asarray(a)
    if a.size == 1:
        return _num(float(a.ravel()[0]))
    return np.array2string(a, precision=6, separator=", ", threshold=20).replace("\n", "")
