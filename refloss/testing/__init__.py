"""Cross-checking tools: Hypothesis strategies and the crosscheck harness.

``refloss.testing`` answers "is my triplet / center / contrastive loss
right?": :func:`crosscheck` searches for inputs where an implementation (in
NumPy, PyTorch, JAX or TensorFlow) disagrees with a refloss reference or a
compat preset, in value and gradient, and reports the smallest
counterexample Hypothesis can find; :func:`assert_matches` does the same
inside a test; :mod:`refloss.testing.strategies` holds the input strategies
for reuse in other suites. ``refloss crosscheck`` is the same from the shell.

This subpackage needs Hypothesis (the ``crosscheck`` extra: ``pip install
"refloss[crosscheck]"``); ``import refloss`` does not.
"""

try:
    import hypothesis  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "refloss.testing needs Hypothesis (so does refloss crosscheck), which is not "
        "installed: pip install hypothesis, or pip install 'refloss[crosscheck]'"
    ) from exc

from . import strategies
from ._report import Counterexample, Report, describe, load_counterexample
from .crosscheck import (
    FRAMEWORKS,
    TOLERANCES,
    CandidateError,
    CrosscheckError,
    Tolerance,
    assert_matches,
    crosscheck,
    detect_framework,
    load_candidate,
    reference_name,
    replay,
    resolve_reference,
)

__all__ = [
    "FRAMEWORKS",
    "TOLERANCES",
    "CandidateError",
    "Counterexample",
    "CrosscheckError",
    "Report",
    "Tolerance",
    "assert_matches",
    "crosscheck",
    "describe",
    "detect_framework",
    "load_candidate",
    "load_counterexample",
    "reference_name",
    "replay",
    "resolve_reference",
    "strategies",
]
