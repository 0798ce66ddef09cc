"""The core imports no framework: it works with torch, jax and cupy unimportable."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_core_works_with_frameworks_made_unimportable():
    script = textwrap.dedent(
        """
        import sys

        BLOCKED = ("torch", "jax", "jaxlib", "cupy", "tensorflow")

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{name} is made unimportable by this test")
                return None

        sys.meta_path.insert(0, Block())
        for name in BLOCKED:
            assert name not in sys.modules
        import numpy as np
        import refloss as rl
        x = np.array([[0.0, 0.0], [3.0, 4.0]])
        assert rl.pairwise_distances(x)[0, 1] == 5.0
        v, g = rl.value_and_grad(rl.center_loss, x, np.array([0, 1]), np.zeros((2, 2)))
        assert v == 12.5, v
        rc = rl.RunningCenters(2, 2, rule="mean")
        rc.update(x, np.array([1, 1]))
        assert (rc.centers[1] == [1.5, 2.0]).all()
        loaded = [m for m in BLOCKED if m in sys.modules]
        assert not loaded, loaded
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_core_source_names_no_framework():
    import pathlib

    import refloss

    root = pathlib.Path(refloss.__file__).parent
    for path in root.glob("*.py"):
        text = path.read_text()
        for lib in ("torch", "jax", "cupy", "tensorflow"):
            assert f"import {lib}" not in text, f"{path.name} imports {lib}"
