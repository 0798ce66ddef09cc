"""The ``refloss`` console script (also ``python -m refloss``).

::

    refloss crosscheck                                  # every known implementation installed
    refloss crosscheck MODULE:FUNCTION --as REFERENCE [--framework F] [--kw k=v ...]
                       [--candidate-kw k=v ...] [--init-kw k=v ...] [--output N]
                       [--same CONVENTION] [--reseed] [domain flags]
                       [--examples N] [--dtype D] [--seed S] [--save FILE]
    refloss crosscheck --replay FILE [MODULE:FUNCTION]

Every form takes ``--format text|markdown|json`` (default: text on a
terminal, fitted to its width or ``--width``; Markdown when piped) — the
JSON schema is in docs/crosscheck.md.

Exit status: 0 when the candidate agrees (for the table: when every installed
implementation agrees with what it must match), 1 when it does not — a
value, gradient or crash difference, or a nondeterministic value (the
report or the table says where), 2 on bad usage — a target that does not
import, an unknown reference, a keyword that does not parse or that the
reference rejects — with a one-line message on stderr that names the flag
and no traceback (``REFLOSS_TRACEBACK=1`` shows it).

This module imports neither a framework nor Hypothesis at import time.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import sys
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

__all__ = ["main"]

PROG = "refloss"
TABLE_EXAMPLES = 30
TARGET_EXAMPLES = 100
DISTRIBUTED_EXAMPLES = 20  # batches of a --world-size check (one process group serves them)
FORMATS = ("text", "markdown", "json")
JSON_SCHEMA_VERSION = 1  # refloss.testing._json.SCHEMA_VERSION (this module imports no Hypothesis)


class UsageError(Exception):
    """Bad command-line usage: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _parser() -> argparse.ArgumentParser:
    top = _Parser(prog=PROG, description="Exact metric-learning losses: cross-check tools.")
    top.add_argument("--version", action="store_true", help="print the version and exit")
    sub = top.add_subparsers(dest="command", parser_class=_Parser)
    cc = sub.add_parser(
        "crosscheck",
        help="cross-check an implementation against refloss (or every known one)",
        description=(
            "Search (with Hypothesis) for inputs where a loss disagrees with the refloss "
            "reference or a compat preset, in value and gradient, and print the smallest "
            "counterexample. Without a TARGET, cross-check every known implementation "
            "that is installed and print one table."
        ),
    )
    cc.add_argument("target", nargs="?", metavar="MODULE:FUNCTION",
                    help="the candidate (a class is instantiated with the --init-kw "
                         "arguments, none by default)")
    cc.add_argument("--as", dest="reference", metavar="REFERENCE",
                    help="refloss function or compat preset, e.g. batch_hard_triplet_loss, "
                         "compat.caffe.center_loss")
    cc.add_argument("--framework", default="auto",
                    choices=("auto", "numpy", "torch", "jax", "tensorflow"),
                    help="the candidate's framework (default: guessed from its module)")
    cc.add_argument("--kw", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                    help="keyword options of the reference (Python literals; bare words "
                         "are strings)")
    cc.add_argument("--candidate-kw", nargs="+", action="extend", default=[],
                    metavar="KEY=VALUE", help="keyword arguments passed to the candidate")
    cc.add_argument("--init-kw", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                    help="constructor arguments when MODULE:FUNCTION names a class")
    cc.add_argument("--output", type=int, default=None, metavar="N",
                    help="the candidate returns a tuple: compare output N (e.g. 0 for "
                         "(loss, n_triplets))")
    cc.add_argument("--same", default=None, metavar="CONVENTION",
                    help="the candidate's pair flags: bool (default), int or float, plus "
                         "1=different and column ([B, 1]), e.g. 'float,1=different'")
    cc.add_argument("--reseed", action="store_true",
                    help="reseed Python/NumPy/torch global generators before every call "
                         "of the candidate (otherwise a value that changes between two "
                         "calls is NONDETERMINISTIC)")
    dom = cc.add_argument_group("input domain (what the candidate is meant for)")
    dom.add_argument("--batch-size", metavar="N or LO:HI", default=None,
                     help="rows per batch (samples, pairs or triplets)")
    dom.add_argument("--balanced", action="store_true",
                     help="P×K batches: every class has the same number of samples")
    dom.add_argument("--min-per-class", type=int, default=None, metavar="K",
                     help="at least K samples in every class")
    dom.add_argument("--min-classes", type=int, default=None, metavar="P",
                     help="at least P classes in a batch")
    dom.add_argument("--max-classes", type=int, default=None, metavar="P",
                     help="at most P classes in a batch")
    dom.add_argument("--no-singletons", action="store_true",
                     help="no class with a single sample")
    dom.add_argument("--no-duplicates", action="store_true",
                     help="no two equal rows")
    cc.add_argument("--examples", type=int, default=None, metavar="N",
                    help=f"inputs per check (default {TARGET_EXAMPLES} with a target, "
                         f"{TABLE_EXAMPLES} for the table)")
    cc.add_argument("--world-size", type=int, default=None, metavar="W",
                    help="cross-check a distributed torch loss: run it on the shards of "
                         "each batch in a gloo group of W CPU processes (default "
                         f"{DISTRIBUTED_EXAMPLES} batches)")
    cc.add_argument("--grad-reduce", default="sum", choices=("sum", "mean"),
                    help="with --world-size: each shard's gradient expected W·dL/dx_r "
                         "(sum, DDP's convention) or dL/dx_r (mean)")
    cc.add_argument("--even-shards", action="store_true",
                    help="with --world-size: equal shards only")
    cc.add_argument("--dtype", default=None, choices=("float64", "float32"),
                    help="dtype of the candidate's inputs (default float64)")
    cc.add_argument("--seed", type=int, default=0, help="search seed (default 0)")
    cc.add_argument("--no-grad", action="store_true", help="compare values only")
    cc.add_argument("--save", metavar="PATH",
                    help="save the counterexample to PATH (.npz); for the table, a "
                         "directory for every counterexample")
    cc.add_argument("--replay", metavar="FILE", help="re-run a saved counterexample")
    cc.add_argument("--only", metavar="TEXT", action="append", default=[],
                    help="table: only the implementations whose name or key contains TEXT")
    cc.add_argument("--no-progress", action="store_true",
                    help="table: no progress bar on stderr")
    cc.add_argument("--format", choices=FORMATS, default=None,
                    help="text (fits the terminal; the default on a terminal), markdown "
                         "(the default when piped) or json (schema_version "
                         f"{JSON_SCHEMA_VERSION}, see docs/crosscheck.md)")
    cc.add_argument("--width", type=int, default=None, metavar="COLUMNS",
                    help="--format text: the width to fit (default: the terminal's)")
    return top


# --------------------------------------------------------------------------
# keyword values


_BARE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-.]*$")


def parse_kwargs(items: Sequence[str], option: str) -> dict[str, Any]:
    """``["margin=0.2", "metric=cosine"]`` -> ``{"margin": 0.2, "metric": "cosine"}``.

    Values are Python literals (numbers, True/False/None, quoted strings,
    tuples); a bare word is a string. Raises UsageError naming the item.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            raise UsageError(f"{option} {item!r}: expected KEY=VALUE")
        if not key.isidentifier():
            raise UsageError(f"{option} {item!r}: {key!r} is not a keyword name")
        if key in out:
            raise UsageError(f"{option} {item!r}: {key!r} given twice")
        text = text.strip()
        if text == "":
            raise UsageError(f"{option} {item!r}: no value after '='")
        low = text.lower()
        if low in ("true", "false", "none"):
            value: Any = {"true": True, "false": False, "none": None}[low]
        else:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                if not _BARE.match(text):
                    raise UsageError(
                        f"{option} {item!r}: value {text!r} does not parse (use a number, "
                        f"True/False/None, a quoted string or a bare word)"
                    ) from None
                value = text
        out[key] = value
    return out


# --------------------------------------------------------------------------
# one target


def _testing() -> Any:
    try:
        import refloss.testing as testing
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    return testing


def _domain(args: argparse.Namespace) -> dict[str, Any]:
    """The ``domain=`` of the domain flags (empty: every input)."""
    out: dict[str, Any] = {}
    if args.batch_size is not None:
        lo, sep, hi = args.batch_size.partition(":")
        try:
            size = (int(lo), int(hi)) if sep else (int(lo), int(lo))
        except ValueError:
            raise UsageError(f"--batch-size {args.batch_size!r}: expected N or LO:HI "
                             f"(integers)") from None
        if size[0] < 1 or size[1] < size[0]:
            raise UsageError(f"--batch-size {args.batch_size!r}: expected 1 <= LO <= HI")
        out["batch_size"] = size
    if args.balanced:
        out["balanced"] = True
    for flag, key in (("--min-per-class", "min_per_class"), ("--min-classes", "min_classes"),
                      ("--max-classes", "max_classes")):
        value = getattr(args, key)
        if value is not None:
            if value < 1:
                raise UsageError(f"{flag}: expected an integer >= 1, got {value}")
            out[key] = value
    if args.no_singletons:
        out["singletons"] = False
    if args.no_duplicates:
        out["duplicates"] = False
    return out


#: every argument of ``refloss.testing.crosscheck`` / ``replay`` that a
#: message can name -> how the command line says it: the flag that takes its
#: value, the switch that sets it (see _SWITCHES), or None (Python only)
PYTHON_ARGS: dict[str, str | None] = {
    "reference": "--as", "reference_kwargs": "--kw", "candidate_kwargs": "--candidate-kw",
    "init_kwargs": "--init-kw", "output": "--output", "same": "--same",
    "max_examples": "--examples", "framework": "--framework", "dtype": "--dtype",
    "seed": "--seed", "replay": "--replay", "world_size": "--world-size",
    "grad_reduce": "--grad-reduce", "candidate": "MODULE:FUNCTION",
    "grad": "--no-grad", "reseed": "--reseed", "even_shards": "--even-shards",
    "inputs": None,
}
#: switches: the Python value they stand for
_SWITCHES = {"grad": "False", "reseed": "True", "even_shards": "True"}
#: written ``same=[False]`` in the words of a counterexample: never rewritten inline
_DATA_WORDS = ("same",)
_DOMAIN_FLAGS = {
    "batch_size": "--batch-size", "balanced": "--balanced", "min_per_class": "--min-per-class",
    "min_classes": "--min-classes", "max_classes": "--max-classes",
    "singletons": "--no-singletons", "duplicates": "--no-duplicates",
}
_INLINE = re.compile(
    r"\b(" + "|".join(sorted((k for k in PYTHON_ARGS if k not in _DATA_WORDS),
                              key=len, reverse=True))
    + r")=('[^']*'|<[^>]*>|[\w.\-]+)?"
)
_BARE = re.compile(r"\b(" + "|".join(k for k in PYTHON_ARGS if "_" in k)
                   + r")\b( \{[^{}]*\})?")


def _flag_value(name: str, value: str | None) -> str:
    flag = PYTHON_ARGS[name]
    if flag is None:  # no flag: say where it is set
        return f"{name}={value or '...'} (from Python: refloss.testing.crosscheck)"
    if name in _SWITCHES:
        return flag if value in (None, _SWITCHES[name]) else f"no {flag}"
    if name == "candidate":  # replay(candidate=...): the name after the file
        return f"{flag} after --replay FILE"
    if not value:
        return flag
    return f"{flag} {value.strip(chr(39))}"


def _kwargs_words(flag: str, literal: str | None) -> str:
    """``init_kwargs {'a': 1}`` -> ``--init-kw a=1``."""
    if not literal:
        return flag
    try:
        given = ast.literal_eval(literal.strip())
    except (ValueError, SyntaxError):
        return f"{flag}{literal}"
    if not isinstance(given, dict):
        return f"{flag}{literal}"
    return f"{flag} " + " ".join(f"{k}={v!r}" for k, v in given.items())


def cli_hints(text: str) -> str:
    """Rewrite the Python arguments a message names inline (``grad=False``,
    ``output=N``, ``framework='torch'``, ``init_kwargs {...}``, a bare
    ``world_size``) as the command line's flags (``--no-grad``, ...), from
    :data:`PYTHON_ARGS`. Counterexample data (``same=[False]``) is left alone."""
    text = _INLINE.sub(lambda m: _flag_value(m.group(1), m.group(2)), text)

    def bare(m: re.Match) -> str:
        flag = PYTHON_ARGS[m.group(1)]
        if flag is None:
            return m.group(0)
        if m.group(1).endswith("_kwargs"):
            return _kwargs_words(flag, m.group(2))
        return flag + (m.group(2) or "")

    return _BARE.sub(bare, text)


_DOMAIN_WORDS = re.compile(r"\b(" + "|".join(_DOMAIN_FLAGS) + r")\b(=False\b)?")


def _domain_words(text: str) -> str:
    """The domain options a message names (``min_classes``,
    ``singletons=False``) as their flags."""
    return _DOMAIN_WORDS.sub(lambda m: _DOMAIN_FLAGS[m.group(1)], text)


def cli_words(message: str) -> str:
    """A message of the Python API in the words of the command line: the
    argument it names (``reference_kwargs: ...``) becomes the flag that sets
    it (``--kw: ...``), and so do the arguments it names inline (see
    :func:`cli_hints`)."""
    head, sep, rest = message.partition(": ")
    if not sep:
        return cli_hints(message)
    if head == "domain":
        key, sep2, tail = rest.partition(": ")
        if sep2 and key in _DOMAIN_FLAGS:
            return f"{_DOMAIN_FLAGS[key]}: {_domain_words(cli_hints(tail))}"
        return f"domain flags: {_domain_words(cli_hints(rest))}"
    if PYTHON_ARGS.get(head):
        rest = re.sub(r"\{'(\w+)': \.\.\.\}", r"\1=...", rest)  # e.g. {'alfa': ...}
        return f"{PYTHON_ARGS[head]}: {cli_hints(rest)}"
    return cli_hints(message)


def _run_target(args: argparse.Namespace, out: TextIO) -> int:
    testing = _testing()
    if not args.reference:
        raise UsageError("crosscheck MODULE:FUNCTION needs --as REFERENCE "
                         "(a refloss function or compat preset)")
    ref_kwargs = parse_kwargs(args.kw, "--kw")
    cand_kwargs = parse_kwargs(args.candidate_kw, "--candidate-kw")
    init_kwargs = parse_kwargs(args.init_kw, "--init-kw")
    if sys.path[:1] != [os.getcwd()]:  # the console script does not see the cwd by itself
        sys.path.insert(0, os.getcwd())
    candidate = testing.load_candidate(args.target, init_kwargs or None)
    if args.world_size is not None:
        report = testing.crosscheck(
            candidate, args.reference, reference_kwargs=ref_kwargs,
            candidate_kwargs=cand_kwargs, grad=not args.no_grad,
            dtype=args.dtype or "float64", max_examples=args.examples or DISTRIBUTED_EXAMPLES,
            seed=args.seed, name=args.target, output=args.output, world_size=args.world_size,
            grad_reduce=args.grad_reduce, even_shards=args.even_shards)
        return _emit_report(report, args, out)
    report = testing.crosscheck(
        candidate, args.reference, framework=args.framework,
        reference_kwargs=ref_kwargs, candidate_kwargs=cand_kwargs, grad=not args.no_grad,
        dtype=args.dtype or "float64", max_examples=args.examples or TARGET_EXAMPLES,
        seed=args.seed, name=args.target, domain=_domain(args) or None,
        reseed=args.reseed, output=args.output, same=args.same,
    )
    if args.save and not report.agrees:
        report.save(args.save)
    return _emit_report(report, args, out)


def _run_replay(args: argparse.Namespace, out: TextIO) -> int:
    testing = _testing()
    for flag, value in (("--as", args.reference), ("--kw", args.kw),
                        ("--candidate-kw", args.candidate_kw), ("--init-kw", args.init_kw),
                        ("--output", args.output), ("--same", args.same),
                        ("domain flags", _domain(args))):
        if value or (flag == "--output" and value is not None):
            raise UsageError(f"--replay takes its options from the file, not {flag}")
    if sys.path[:1] != [os.getcwd()]:  # the saved candidate is imported by name
        sys.path.insert(0, os.getcwd())
    candidate = testing.load_candidate(args.target) if args.target else None
    report = testing.replay(args.replay, candidate=candidate)
    verdict = "still disagrees" if not report.agrees else "now agrees"
    return _emit_report(report, args, out, before=f"replay of {args.replay}: {verdict}\n")


def _output_format(args: argparse.Namespace, out: TextIO) -> str:
    """--format, else text on a terminal and Markdown when piped."""
    if args.format:
        return args.format
    return "text" if hasattr(out, "isatty") and out.isatty() else "markdown"


def _width(args: argparse.Namespace) -> int:
    if args.width is not None:
        return args.width
    return shutil.get_terminal_size((100, 24)).columns


def _emit_report(report: Any, args: argparse.Namespace, out: TextIO, before: str = "") -> int:
    """Write one report in the chosen format; returns the exit status."""
    status = 0 if report.agrees else 1
    fmt = _output_format(args, out)
    if fmt == "json":
        from refloss.testing import _json

        data = (report.to_dict() if hasattr(report, "to_dict")
                else _json.distributed_dict(report))
        data["exit_code"] = status
        out.write(json.dumps(data, indent=2, allow_nan=False) + "\n")
        return status
    text = cli_hints(f"{report}\n\n{before}{report.summary()}")
    if fmt == "text":
        text = fit_lines(text, _width(args))
    out.write(text + "\n")
    return status


_ARRAY_LINE = re.compile(r"^\s*(\S+ = )?\[")


def fit_lines(text: str, width: int) -> str:
    """Wrap the prose lines of a report to ``width`` (continuations indented
    under the first); arrays are left as NumPy prints them."""
    lines = []
    for line in text.splitlines():
        if len(line) <= width or _ARRAY_LINE.match(line):
            lines.append(line)
            continue
        indent = " " * (len(line) - len(line.lstrip()))
        lines.extend(textwrap.wrap(line, width, subsequent_indent=indent + "  ",
                                   break_on_hyphens=False) or [line])
    return "\n".join(lines)


# --------------------------------------------------------------------------
# the table of known implementations


class _Progress:
    """A progress bar on stderr (one line rewritten on a terminal, one line
    per step otherwise)."""

    def __init__(self, total: int, stream: TextIO, enabled: bool) -> None:
        self.total, self.stream, self.enabled = total, stream, enabled
        self.tty = enabled and hasattr(stream, "isatty") and stream.isatty()
        self.columns = max(shutil.get_terminal_size((111, 24)).columns - 1, 40)
        self.done = 0
        self.start = time.monotonic()

    def step(self, label: str) -> None:
        if not self.enabled:
            return
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        bar = "#" * filled + "-" * (width - filled)
        text = f"[{bar}] {self.done:>2}/{self.total} {label}"
        if self.tty:
            self.stream.write("\r" + text[:self.columns].ljust(self.columns))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def advance(self) -> None:
        self.done += 1

    def finish(self) -> None:
        if not self.enabled:
            return
        took = time.monotonic() - self.start
        text = f"[{'#' * 24}] {self.done}/{self.total} checks in {took:.1f} s"
        if self.tty:
            self.stream.write("\r" + text.ljust(self.columns) + "\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def _cell(result: Any) -> str:
    if isinstance(result, str):
        return result
    if result.agrees:
        return "agrees"
    if result.verdict == "nondeterministic":
        return "nondeterministic"
    cx = result.counterexample
    kind = cx.kind if cx is not None else "value"
    return {"value": "value differs", "gradient": "gradient differs",
            "indices": "triplets differ", "raises": "raises"}.get(kind, "differs")


def _words(result: Any) -> str:
    if isinstance(result, str) or result.agrees:
        return ""
    return result.difference


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_")


def _check_known(testing: Any, entry: Any, reference: Any, kwargs: dict, args, save_dir,
                 what: str) -> Any:
    try:
        candidate = entry.candidate()
    except Exception as exc:
        return f"not available ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})"
    try:
        dtype = args.dtype or entry.dtype
        report = testing.crosscheck(
            candidate, reference, framework=entry.framework, reference_kwargs=kwargs,
            grad=not args.no_grad, dtype=dtype, max_examples=args.examples or TABLE_EXAMPLES,
            seed=args.seed, name=entry.name, inputs=entry.strategy(dtype),
        )
    except (testing.CrosscheckError, ValueError, TypeError, ImportError) as exc:
        return f"error: {str(exc).splitlines()[0][:160]}"
    if save_dir and not report.agrees:
        report.save(os.path.join(save_dir, f"{_slug(entry.key)}-{what}.npz"))
    return report


def _run_table(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    for flag, value in (("--as", args.reference), ("--kw", args.kw),
                        ("--candidate-kw", args.candidate_kw), ("--init-kw", args.init_kw),
                        ("--output", args.output), ("--same", args.same),
                        ("domain flags", _domain(args)), ("--reseed", args.reseed)):
        if value or (flag == "--output" and value is not None):
            raise UsageError(f"{flag} needs a TARGET (MODULE:FUNCTION)")
    if args.framework != "auto":
        raise UsageError("--framework needs a TARGET (MODULE:FUNCTION)")
    testing = _testing()
    try:
        from refloss.adapters import known
    except ImportError as exc:  # pragma: no cover - ships with refloss
        raise UsageError(f"refloss.adapters.known is missing ({exc})") from None
    selected = known.entries()
    if args.only:
        wanted = [w.lower() for w in args.only]
        selected = [e for e in selected
                    if any(w in e.key.lower() or w in e.name.lower() for w in wanted)]
        if not selected:
            raise UsageError(f"--only {' '.join(args.only)}: no known implementation matches")
    save_dir = args.save
    if save_dir:
        os.makedirs(save_dir, exist_ok=True)

    installed = [e for e in selected if e.installed()]
    missing = [e for e in selected if not e.installed()]
    total = sum((e.preset is not None) + 1 for e in installed)
    progress = _Progress(total, err, not args.no_progress)
    rows = []
    for entry in installed:
        preset_fn = entry.preset_function() if entry.preset else None
        if entry.preset is None:
            preset_result: Any = "n/a"
        elif preset_fn is None:
            progress.advance()
            preset_result = "no preset"
        else:
            progress.step(f"{entry.name} vs its preset")
            preset_result = _check_known(testing, entry, preset_fn, entry.preset_kwargs,
                                         args, save_dir, "preset")
            progress.advance()
        progress.step(f"{entry.name} vs the reference")
        ref_result = _check_known(testing, entry, entry.reference, entry.reference_kwargs,
                                  args, save_dir, "reference")
        progress.advance()
        rows.append(_table_row(entry, preset_result, ref_result))
    progress.finish()

    table = TableResult(rows=rows, missing=missing, known=len(selected),
                        examples=args.examples or TABLE_EXAMPLES, seed=args.seed,
                        saved_in=save_dir or None)
    fmt = _output_format(args, out)
    if fmt == "json":
        out.write(json.dumps(table_dict(table), indent=2, allow_nan=False) + "\n")
    elif fmt == "text":
        out.write(table_text(table, _width(args)))
    else:
        out.write(table_markdown(table))
    return table.exit_code


@dataclass
class TableRow:
    """One installed implementation: its two checks (a Report, or a word:
    "n/a", "no preset", "error: ...", "not available (...)"), the first
    difference in words, and whether what it must match agreed."""

    entry: Any
    preset: Any
    reference: Any
    first: str
    ok: bool


@dataclass
class TableResult:
    """The table of known implementations, before it is formatted."""

    rows: list[TableRow]
    missing: list[Any]  # the known.Entry of each implementation not installed
    known: int
    examples: int
    seed: int
    saved_in: str | None = None

    @property
    def exit_code(self) -> int:
        return 0 if all(r.ok for r in self.rows) else 1


def _table_row(entry: Any, preset_result: Any, ref_result: Any) -> TableRow:
    ok = True
    must = {"preset": preset_result, "reference": ref_result}.get(entry.must_match)
    if must is not None and not isinstance(must, str) and not must.agrees:
        ok = False
    if isinstance(must, str) and must.startswith(("error", "not available")):
        ok = False
    if isinstance(preset_result, str) and preset_result.startswith("error"):
        ok = False
    first = _words(preset_result)
    first = f"vs preset: {first}" if first else _words(ref_result)
    if isinstance(ref_result, str) and ref_result.startswith(("error", "not available")):
        first = first or ref_result
    if entry.note and not (not isinstance(ref_result, str) and ref_result.agrees):
        first = f"{first} — {entry.note}" if first else entry.note
    return TableRow(entry, preset_result, ref_result, cli_hints(first), ok)


def missing_line(missing: Sequence[Any]) -> str:
    """The implementations not installed, in one line with what installs them
    ("" when every one is installed)."""
    if not missing:
        return ""
    dists = sorted({d for e in missing for d in e.missing()})
    rows = f"{len(missing)} row{'' if len(missing) == 1 else 's'}"
    return f"not installed ({rows}): {', '.join(dists)} — pip install {' '.join(dists)}"


def _footer(table: TableResult) -> list[str]:
    lines = [missing_line(table.missing)] if table.missing else []
    lines.append(f"{len(table.rows)} of {table.known} known implementations installed; "
                 f"{table.examples} examples per check, seed {table.seed}.")
    if table.saved_in:
        lines.append(f"counterexamples saved in {table.saved_in} "
                     f"(replay: refloss crosscheck --replay FILE)")
    return lines


_HEADER = ("implementation", "vs preset", "vs reference", "first difference")


def _cells(row: TableRow) -> tuple[str, str, str, str]:
    return (row.entry.name, _cell(row.preset), _cell(row.reference), row.first or "—")


def table_markdown(table: TableResult) -> str:
    """The table as Markdown (the format when piped), then the footer lines."""
    lines = ["| " + " | ".join(_HEADER) + " |", "|---|---|---|---|"]
    for row in table.rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(row)) + " |")
    return "\n".join(lines) + "\n\n" + "\n".join(_footer(table)) + "\n"


_GAP = 2
_MIN_LAST = 24  # narrower than this, rows are printed as blocks


def table_text(table: TableResult, width: int) -> str:
    """The table for a terminal of ``width`` columns: every line fits, the
    long cells wrap in their column; on a narrow terminal one block per row."""
    width = max(width, 20)
    cells = [_cells(row) for row in table.rows]
    widths = _column_widths([_HEADER, *cells], width)
    if widths is None:
        body = _blocks(cells, width)
    else:
        body = _grid(cells, widths)
    footer = [ln for line in _footer(table)
              for ln in (textwrap.wrap(line, width, subsequent_indent="  ",
                                       break_on_hyphens=False) or [""])]
    return "\n".join([*body, "", *footer]) + "\n"


def _column_widths(rows: list, width: int) -> list[int] | None:
    """Widths of the four columns that fit ``width``: the verdict columns
    keep theirs, the name takes up to 40 % of the rest, the first difference
    what is left; None when that leaves it under _MIN_LAST."""
    natural = [max(len(r[i]) for r in rows) for i in range(4)]
    room = width - _GAP * 3 - natural[1] - natural[2]
    if natural[0] + natural[3] <= room:
        return natural
    name = min(natural[0], max(16, int(room * 0.4), room - natural[3]))
    last = room - name
    if last < min(_MIN_LAST, natural[3]):
        return None
    return [name, natural[1], natural[2], min(last, natural[3])]


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_on_hyphens=False) or [""]


def _wrap_name(text: str, width: int) -> list[str]:
    """A dotted name wrapped after a dot, underscore, space or parenthesis
    (never inside a word unless a word is wider than the column)."""
    lines = [""]
    for piece in filter(None, re.findall(r"\(?[^ ._(]*[ ._]?", text)):
        if len(lines[-1]) + len(piece.rstrip()) > width and lines[-1]:
            lines.append("")
        while len(piece.rstrip()) > width:
            lines[-1] += piece[:width]
            piece = piece[width:]
            lines.append("")
        lines[-1] += piece.lstrip() if not lines[-1] else piece
    return [ln.rstrip() for ln in lines if ln.strip()] or [""]


def _grid(cells: list, widths: list[int]) -> list[str]:
    def line(parts: Sequence[str]) -> str:
        return (" " * _GAP).join(p.ljust(w) for p, w in zip(parts, widths)).rstrip()

    out = [line(_HEADER), line(["-" * w for w in widths])]
    wrapped = [[_wrap_name(row[0], widths[0])]
               + [_wrap(c, w) for c, w in zip(row[1:], widths[1:])] for row in cells]
    tall = any(len(col) > 1 for row in wrapped for col in row)
    for i, row in enumerate(wrapped):
        if tall and i:
            out.append("")
        for k in range(max(len(col) for col in row)):
            out.append(line([col[k] if k < len(col) else "" for col in row]))
    return out


def _blocks(cells: list, width: int) -> list[str]:
    out = []
    for name, preset, ref, first in cells:
        if out:
            out.append("")
        out.extend(_wrap_name(name, width))
        out.extend(textwrap.wrap(f"vs preset: {preset}; vs reference: {ref}", width,
                                 initial_indent="  ", subsequent_indent="  "))
        out.extend(textwrap.wrap(first, width, initial_indent="  ", subsequent_indent="  ",
                                 break_on_hyphens=False))
    return out


def _check_dict(result: Any) -> dict | None:
    """One check of a row for --format json (None: nothing to check, "n/a")."""
    if isinstance(result, str):
        if result == "n/a":
            return None
        status = result.split(":", 1)[0].split(" (", 1)[0]
        return {"status": status, "verdict": None, "examples": 0, "kinds": [],
                "difference": "", "cause": "", "message": result, "saved_to": None}
    cx = result.counterexample
    return {"status": _cell(result), "verdict": result.verdict, "examples": result.examples,
            "kinds": list(result.kinds), "difference": cli_hints(result.difference),
            "cause": cx.cause if cx is not None else "", "message": "",
            "saved_to": result.saved_to}


def table_dict(table: TableResult) -> dict:
    """The table for --format json (schema: docs/crosscheck.md)."""
    return {
        "schema_version": JSON_SCHEMA_VERSION,
        "mode": "table",
        "exit_code": table.exit_code,
        "examples": table.examples,
        "seed": table.seed,
        "known": table.known,
        "installed": len(table.rows),
        "rows": [{
            "key": r.entry.key, "name": r.entry.name, "framework": r.entry.framework,
            "must_match": r.entry.must_match, "ok": r.ok,
            "vs_preset": _check_dict(r.preset), "vs_reference": _check_dict(r.reference),
            "first_difference": r.first, "note": r.entry.note,
        } for r in table.rows],
        "not_installed": [{"key": e.key, "name": e.name, "missing": e.missing()}
                          for e in table.missing],
        "install": missing_line(table.missing).partition(" — ")[2] or None,
        "saved_in": table.saved_in,
    }


# --------------------------------------------------------------------------
# entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    out, err = sys.stdout, sys.stderr
    try:
        args = _parser().parse_args(argv)
        if args.version:
            import refloss

            out.write(f"refloss {refloss.__version__}\n")
            return 0
        if args.command != "crosscheck":
            raise UsageError(f"expected a command: crosscheck (see '{PROG} --help')")
        if args.examples is not None and args.examples < 1:
            raise UsageError(f"--examples: expected an integer >= 1, got {args.examples}")
        if args.replay:
            return _run_replay(args, out)
        if args.target:
            return _run_target(args, out)
        return _run_table(args, out, err)
    except UsageError as exc:
        err.write(f"{PROG} crosscheck: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        err.write(f"{PROG}: interrupted\n")
        return 2
    except Exception as exc:  # bad input of every other kind: one line, no traceback
        if os.environ.get("REFLOSS_TRACEBACK"):
            raise
        message = str(exc).strip().splitlines()
        text = message[0] if message else type(exc).__name__
        kind = "" if _is_expected(exc) else f"{type(exc).__name__}: "
        err.write(f"{PROG} crosscheck: error: {kind}{cli_words(text)}\n")
        return 2


def _is_expected(exc: BaseException) -> bool:
    """Errors whose message already says what is wrong (they name the argument)."""
    if isinstance(exc, (ValueError, TypeError, ImportError)):
        return True
    return type(exc).__name__ in ("CrosscheckError", "CandidateError")


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
