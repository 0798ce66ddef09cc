"""``python -m refloss``: the ``refloss`` console script (see :mod:`refloss.cli`)."""

from .cli import main

raise SystemExit(main())
