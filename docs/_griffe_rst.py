"""Griffe extension for the site: refloss's reST-flavoured docstrings as Markdown.

The docstrings are Google style (Args / Returns / References) with a few
reStructuredText constructs that read well in ``help()`` and on GitHub but
that mkdocstrings, which renders docstring text as Markdown, would print
literally: ``:math:`...``` roles, ``.. math::`` directives and
``:func:`` / ``:class:`` / ``:mod:`` roles. This rewrites them before the
docstring is parsed: math into the ``$...$`` / ``$$...$$`` that
pymdownx.arithmatex passes to MathJax, cross-reference roles into code spans.
It changes nothing outside the docs build.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE_MATH = re.compile(r":math:`([^`]+)`")
_ROLE_REF = re.compile(r":(?:func|class|mod|meth|attr|data|obj|exc):`~?([^`]+)`")
# Google style's "Examples:" section turns doctest lines into code blocks; the
# singular "Example:" would be an admonition of Markdown text.
_EXAMPLE = re.compile(r"^([ \t]*)Example:[ \t]*$", re.M)
_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<first>.*)$")


def _math_blocks(text: str) -> str:
    """``.. math:: a`` plus its more-indented continuation -> a ``$$`` block."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = _DIRECTIVE.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent = m.group("indent")
        body = [m.group("first").strip()] if m.group("first").strip() else []
        i += 1
        while i < len(lines) and (not lines[i].strip() or
                                  len(lines[i]) - len(lines[i].lstrip()) > len(indent)):
            if lines[i].strip():
                body.append(lines[i].strip())
            elif body:  # a blank line ends a directive that already has a body
                break
            i += 1
        # Markdown continues a list item at 4 spaces, not at the 2 of "* item"
        pad = "    " if 0 < len(indent) < 4 else indent
        out += ["", f"{pad}$$", *(f"{pad}{b}" for b in body), f"{pad}$$", ""]
    return "\n".join(out)


def rst_to_markdown(text: str) -> str:
    text = _EXAMPLE.sub(r"\1Examples:", _math_blocks(text))
    text = _ROLE_MATH.sub(lambda m: f"${m.group(1).strip()}$", text)
    return _ROLE_REF.sub(lambda m: f"`{m.group(1)}`", text)


class RstMath(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)
