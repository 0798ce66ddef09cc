"""The figures of the site regenerate from their scripts, and show what they claim.

The scripts (docs/figures/*.py) run here at a small size into a temporary
folder; the committed PNGs are the same scripts at full size.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import numpy as np
import pytest

FIGURES = pathlib.Path(__file__).resolve().parent.parent / "docs" / "figures"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_figure_{name}", FIGURES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _is_real_png(path: pathlib.Path, min_bytes: int) -> bool:
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > min_bytes


def test_center_loss_figure_lowers_intra_class_spread(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    runs = _script("center_loss_digits").main(tmp_path, quick=True)
    assert _is_real_png(tmp_path / "center_loss_digits.png", 10_000)
    softmax, *centered = runs
    assert softmax.lam == 0 and softmax.centers is None and len(centered) >= 2
    for run in centered:
        # the figure's claim: every lambda > 0 pulls the classes tighter than softmax alone
        assert run.spread < 0.8 * softmax.spread, (run.lam, run.spread, softmax.spread)
        assert run.accuracy > 0.5  # and the network still classifies
        assert run.centers.shape == (10, 2) and np.isfinite(run.centers).all()


def test_triplet_mining_figure_shows_three_different_choices(tmp_path):
    pytest.importorskip("matplotlib")
    module = _script("triplet_mining")
    sel = module.main(tmp_path, dpi=40)
    assert _is_real_png(tmp_path / "triplet_mining.png", 5_000)
    d_an = sel.d[module.ANCHOR]
    d_ap = d_an[module.POSITIVE]
    # the batch illustrates all three cases: some batch-all terms are zero, some not
    assert 0 < (sel.batch_all_terms > 0).sum() < len(sel.negatives)
    # the semi-hard negative lies in the band the figure shades, and is not batch-hard's
    assert d_ap < d_an[sel.semihard_negative] < d_ap + module.MARGIN
    assert sel.semihard_negative != sel.hard_negative


def test_committed_figures_exist_and_are_on_the_site():
    page = (FIGURES.parent / "figures.md").read_text()
    for name in ("center_loss_digits.png", "triplet_mining.png"):
        assert _is_real_png(FIGURES / name, 20_000), name
        assert f"figures/{name}" in page, name
    assert "benchmarks.png" in page
