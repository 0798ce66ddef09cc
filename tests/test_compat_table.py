"""docs/semantics.md holds exactly the table generated from the presets' metadata."""

from __future__ import annotations

import pathlib

from refloss.compat import all_presets, semantics_table
from refloss.compat.__main__ import BEGIN, END

PAGE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "semantics.md"


def test_semantics_page_matches_the_presets_metadata():
    text = PAGE.read_text(encoding="utf-8")
    table = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert table == semantics_table(all_presets()).strip(), (
        "docs/semantics.md is stale: run `python -m refloss.compat docs/semantics.md`"
    )


def test_every_preset_has_a_complete_record_and_a_docstring():
    for name, fn in all_presets():
        info = fn.__refloss_preset__
        for field, value in vars(info).items():
            assert isinstance(value, str) and value.strip(), f"{name}: empty {field}"
        assert fn.__doc__ and "Differences" in fn.__doc__, f"{name}: no 'Differences' section"
        assert hasattr(fn, "__refloss_vjp__"), f"{name}: no analytic VJP"
