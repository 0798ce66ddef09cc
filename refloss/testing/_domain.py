"""Input domains: the inputs a candidate is meant for (balanced P×K batches,
at least K samples per class, at least P classes, no singleton classes, no
duplicated rows, a batch-size range).

A :class:`Domain` turns into strategy arguments (the search draws only
inside it), accepts or rejects an input (shrinking never leaves it), and
lists the deletions that keep an input inside it — single rows, one sample
of every class at once, one whole class — so that a counterexample is
1-minimal *inside* the domain: no allowed deletion keeps the difference.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

__all__ = ["Domain"]

# roles with one entry per row (sample, pair or triplet)
PER_ROW = ("x", "labels", "anchor", "positive", "negative", "a", "b", "same", "distances")


@dataclass(frozen=True)
class Domain:
    """Which inputs the search draws (every field optional).

    ``batch_size``: ``(lo, hi)`` rows (samples, pairs or triplets);
    ``min_classes`` / ``max_classes``: distinct labels in a batch;
    ``min_per_class``: samples of every class present (2 = no singleton
    class); ``balanced``: every class the same number of samples (P×K);
    ``singletons``: False forbids classes with one sample; ``duplicates``:
    False forbids two equal rows.
    """

    batch_size: tuple[int, int] | None = None
    min_classes: int | None = None
    max_classes: int | None = None
    min_per_class: int = 1
    balanced: bool = False
    singletons: bool = True
    duplicates: bool = True

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> Domain:
        """A domain from ``crosscheck(domain=...)``; raises naming the key."""
        if options is None:
            return cls()
        if isinstance(options, Domain):
            return options
        if not isinstance(options, Mapping):
            raise TypeError(f"domain: expected a dict of options, got {type(options).__name__}")
        known = [f.name for f in fields(cls)]
        for k in options:
            if k not in known:
                raise ValueError(f"domain: unknown option {k!r} (known: {', '.join(known)})")
        opts = dict(options)
        size = opts.get("batch_size")
        if size is not None:
            if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
                size = (int(size), int(size))
            if (not isinstance(size, (tuple, list)) or len(size) != 2
                    or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                               for v in size)):
                raise TypeError(f"domain: batch_size: expected an integer or a (min, max) "
                                f"pair, got {size!r}")
            if size[0] < 1 or size[1] < size[0]:
                raise ValueError(f"domain: batch_size: expected 1 <= min <= max, got {size!r}")
            opts["batch_size"] = (int(size[0]), int(size[1]))
        for k in ("min_classes", "max_classes"):
            v = opts.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))
                                  or v < 1):
                raise ValueError(f"domain: {k}: expected an integer >= 1, got {v!r}")
        v = opts.get("min_per_class", 1)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"domain: min_per_class: expected an integer >= 1, got {v!r}")
        for k in ("balanced", "singletons", "duplicates"):
            if k in opts and not isinstance(opts[k], bool):
                raise TypeError(f"domain: {k}: expected True or False, got {opts[k]!r}")
        dom = cls(**opts)
        if not dom.singletons and dom.min_per_class < 2:
            dom = cls(**{**opts, "min_per_class": 2})
        if (dom.min_classes and dom.max_classes and dom.min_classes > dom.max_classes):
            raise ValueError(f"domain: max_classes: expected >= min_classes "
                             f"({dom.min_classes}), got {dom.max_classes}")
        return dom

    @property
    def is_default(self) -> bool:
        return self == Domain()

    @property
    def labeled_only(self) -> list[str]:
        """The options set here that only a labeled batch has."""
        out = []
        if self.min_classes is not None or self.max_classes is not None:
            out.append("min_classes/max_classes")
        if self.min_per_class > 1:
            out.append("min_per_class" if self.singletons else "singletons")
        if self.balanced:
            out.append("balanced")
        return out

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) != f.default}

    # ------------------------------------------------------------------
    # membership and deletions

    def accepts(self, inputs: Mapping[str, Any]) -> bool:
        """Whether ``inputs`` (a dict by role) lies inside the domain."""
        rows = _rows(inputs)
        if self.batch_size is not None and rows is not None:
            if not self.batch_size[0] <= rows <= self.batch_size[1]:
                return False
        if not self.duplicates:
            for role in ("x",):
                if role in inputs:
                    x = np.asarray(inputs[role])
                    if x.shape[0] > 1 and np.unique(x, axis=0).shape[0] < x.shape[0]:
                        return False
        if "labels" in inputs and "x" in inputs:
            labels = np.asarray(inputs["labels"])
            if labels.size == 0:
                return True
            _, counts = np.unique(labels, return_counts=True)
            if self.min_classes is not None and counts.size < self.min_classes:
                return False
            if self.max_classes is not None and counts.size > self.max_classes:
                return False
            if counts.min() < self.min_per_class:
                return False
            if self.balanced and np.unique(counts).size > 1:
                return False
        return True

    def deletions(self, inputs: Mapping[str, Any]) -> Iterator[dict]:
        """Smaller inputs inside the domain: each single row, and for labeled
        batches one whole class and one sample of every class at once."""
        n = _rows(inputs) or 0
        seen = set()
        groups: list[tuple[int, ...]] = [(i,) for i in range(n)]
        if "labels" in inputs and "x" in inputs and n:
            labels = np.asarray(inputs["labels"])
            classes = np.unique(labels)
            groups += [tuple(np.flatnonzero(labels == c)) for c in classes]
            groups.append(tuple(int(np.flatnonzero(labels == c)[-1]) for c in classes))
        for g in groups:
            key = tuple(sorted(g))
            if key in seen or len(key) >= n:
                continue  # never below one row: an empty batch is its own question
            seen.add(key)
            smaller = drop_rows(inputs, key)
            if self.accepts(smaller):
                yield smaller


def _rows(inputs: Mapping[str, Any]) -> int | None:
    for role in ("x", "anchor", "a", "distances"):
        if role in inputs:
            return int(np.shape(inputs[role])[0])
    return None


def drop_rows(inputs: Mapping[str, Any], rows: tuple[int, ...]) -> dict:
    """``inputs`` without the given rows of every per-row role."""
    out = {}
    for role, a in inputs.items():
        a = np.asarray(a)
        out[role] = np.delete(a, list(rows), axis=0) if role in PER_ROW else a
    return out
