"""Presets that reproduce named public implementations exactly.

Each submodule reproduces one source — its defaults, distance, reduction,
label convention, edge cases and epsilon tricks — as a thin parameterisation
of the core with the same analytic-gradient machinery (``refloss.vjp``
accepts every preset). Each preset's docstring lists how it differs from the
reference semantics; its :class:`PresetInfo` record feeds docs/semantics.md.
"""

from __future__ import annotations

import importlib

from ._meta import PresetInfo, preset, presets, semantics_table

# submodules, in the order of the semantics table; each is imported lazily by
# all_presets() so that a missing optional one never breaks the package
MODULES: tuple[str, ...] = (
    "tfa", "tf_contrib", "pml", "torch_nn", "caffe", "kaiyangzhou", "jxgu1016", "facenet",
    "omoindrot", "triplet_reid", "hadsell", "tf_recipes",
)


def all_presets() -> list:
    """``(name, function)`` of every preset of every compat module."""
    mods = [importlib.import_module(f"{__name__}.{m}") for m in MODULES]
    return presets(*mods)


__all__ = ["MODULES", "PresetInfo", "all_presets", "preset", "presets", "semantics_table"]
