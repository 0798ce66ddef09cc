"""The metadata record every compat preset carries, and the semantics table.

Each preset is a public function decorated with :func:`preset`, which attaches
a :class:`PresetInfo` as ``fn.__refloss_preset__``. :func:`semantics_table`
renders every record as the Markdown table of docs/semantics.md, so the table
is generated from the code and cannot drift from it (a test compares them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class PresetInfo:
    """How one public implementation defines its loss (read from its source)."""

    implementation: str  # e.g. "TensorFlow Addons triplet_semihard_loss"
    distance: str  # e.g. "L2 (GEMM formula)"
    squared: str  # e.g. "no" / "yes" / "hinge squared"
    margin: str  # default margin(s)
    reduction: str  # e.g. "sum / #ordered positive pairs"
    labels: str  # label convention, e.g. "y = 1 similar"
    edge_cases: str  # e.g. "no positive pair -> NaN"
    epsilon: str  # epsilon tricks, e.g. "sqrt(D2 + 1e-16*[D2<=0])"
    source: str  # repository @ commit : file (function)


COLUMNS = [f.name for f in fields(PresetInfo)]


def preset(info: PresetInfo) -> Callable:
    """Attach ``info`` to a preset function (a decorator)."""

    def attach(fn: Callable) -> Callable:
        fn.__refloss_preset__ = info
        return fn

    return attach


def presets(*modules: Any) -> list[tuple[str, Callable]]:
    """``(qualified name, function)`` of every preset in ``modules``, in order."""
    out = []
    for mod in modules:
        for name in getattr(mod, "__all__", []):
            fn = getattr(mod, name)
            if hasattr(fn, "__refloss_preset__"):
                out.append((f"{mod.__name__.rsplit('.', 1)[-1]}.{name}", fn))
    return out


def semantics_table(entries: list[tuple[str, Callable]]) -> str:
    """The Markdown table: one row per preset, one column per metadata field."""
    header = ["preset", *COLUMNS]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for name, fn in entries:
        info = fn.__refloss_preset__
        cells = [f"`{name}`", *(getattr(info, c).replace("|", "\\|") for c in COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
