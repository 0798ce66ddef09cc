"""``python -m refloss.compat [PAGE]``: print the semantics table, or rewrite
it in PAGE between the ``<!-- semantics-table -->`` markers."""

from __future__ import annotations

import sys

from . import all_presets, semantics_table

BEGIN, END = "<!-- semantics-table:begin -->", "<!-- semantics-table:end -->"


def render_into(text: str, table: str) -> str:
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table}{END}{tail}"


def main(argv: list[str]) -> int:
    table = semantics_table(all_presets())
    if not argv:
        sys.stdout.write(table)
        return 0
    path = argv[0]
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(render_into(text, table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
