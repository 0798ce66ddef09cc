"""refloss benchmarks: forward + backward time and peak memory against peers and the floor.

``python -m benchmarks --quick`` (or ``python benchmarks/run.py --quick``)
runs a small sweep; ``python -m benchmarks`` the full one, which writes
docs/benchmarks.{csv,png} and regenerates the results section of
docs/benchmarks.md. Modules:

* :mod:`benchmarks.impls` — what is measured (refloss, pytorch-metric-learning,
  hand-written torch autograd, the floor);
* :mod:`benchmarks.child` — one measurement in a fresh process;
* :mod:`benchmarks.run` — the sweep, limits, command line;
* :mod:`benchmarks.report` — table, targets, CSV, plot, docs page;
* :mod:`benchmarks.scale` — the older single-size NumPy script, now a thin
  front end of the same measurement.

Nothing here is imported by refloss; torch and pytorch-metric-learning are
imported only inside the children that measure them.
"""
