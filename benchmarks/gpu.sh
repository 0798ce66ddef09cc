#!/usr/bin/env bash
# Everything refloss needs a GPU for, in one command (run from anywhere):
#
#   benchmarks/gpu.sh            # the tests on torch CUDA and CuPy, then the GPU benchmarks
#   benchmarks/gpu.sh --quick    # the same with a short benchmark sweep (B in {256, 1024})
#
# 1. checks that torch sees a CUDA device and that cupy imports and sees one
#    (stops with the reason otherwise: the CUDA tests would only skip);
# 2. runs the test suite's torch:cuda and cupy parametrisations (the backend
#    fixture in tests/conftest.py skips them without a GPU, so they run only here);
# 3. runs `python -m benchmarks --device cuda`: syncs, ops, time and memory of
#    torch CUDA and CuPy up to B = 65536, merged into docs/benchmarks.csv
#    (rows of the same configuration replaced), and regenerates
#    docs/benchmarks.{md,png}. Extra arguments go to that command.
#
# PYTHON selects the interpreter (default: python). The log of each step is
# written to gpu-logs/ at the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
mkdir -p gpu-logs

"$PY" - <<'PYEOF'
import sys
sys.path.insert(0, ".")
from benchmarks.run import gpu_problems
problems = gpu_problems(["torch:cuda", "cupy"])
for name, why in problems.items():
    print(f"gpu.sh: {name}: {why}", file=sys.stderr)
sys.exit(1 if problems else 0)
PYEOF

# tests: only the GPU parametrisations (every other backend runs in CI)
"$PY" -m pytest -q -rs -k "cuda or cupy" tests/ 2>&1 | tee gpu-logs/tests.log

"$PY" -m benchmarks --device cuda --write-docs "$@" 2>&1 | tee gpu-logs/benchmarks.log
