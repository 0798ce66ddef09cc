"""Checks of the built site that mkdocs --strict does not make (run by .ci/run).

    python docs/_check_site.py SITE_DIR

Fails when a page shows reStructuredText that the docstring extension
(docs/_griffe_rst.py) did not convert, or a ``$`` that arithmatex did not
take as math (a display ``$$`` glued to a paragraph, ``$x $``): MathJax would
then print the TeX source.
"""

from __future__ import annotations

import pathlib
import re
import sys

SKIP = re.compile(r"<(code|pre|script|style)\b[^>]*>.*?</\1>|"
                  r"<(span|div) class=\"arithmatex\">.*?</\2>", re.S)


def problems(site: pathlib.Path) -> list[str]:
    found = []
    for page in sorted(site.rglob("*.html")):
        text = SKIP.sub("", page.read_text(encoding="utf-8"))
        text = re.sub(r"<[^>]+>", "", text)  # tags (attributes may hold "$")
        for pattern in (r":(?:math|func|class|mod|meth):`", r"\.\. math::", r"\$"):
            for m in re.finditer(pattern, text):
                excerpt = " ".join(text[max(0, m.start() - 50):m.end() + 50].split())
                found.append(f"{page.relative_to(site)}: {m.group(0)!r} in ...{excerpt}...")
    return found


if __name__ == "__main__":
    site = pathlib.Path(sys.argv[1])
    if not (site / "index.html").is_file():
        sys.exit(f"{site}: no index.html (build the site first)")
    found = problems(site)
    print("\n".join(found) or f"{site}: no unrendered math or reST roles")
    sys.exit(1 if found else 0)
