"""The ``refloss`` console script (also ``python -m refloss``).

::

    refloss crosscheck                                  # every known implementation installed
    refloss crosscheck MODULE:FUNCTION --as REFERENCE [--framework F] [--kw k=v ...]
                       [--candidate-kw k=v ...] [--init-kw k=v ...] [--output N]
                       [--same CONVENTION] [--reseed] [domain flags]
                       [--examples N] [--dtype D] [--seed S] [--save FILE]
    refloss crosscheck --replay FILE [MODULE:FUNCTION]

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
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

__all__ = ["main"]

PROG = "refloss"
TABLE_EXAMPLES = 30
TARGET_EXAMPLES = 100
DISTRIBUTED_EXAMPLES = 20  # batches of a --world-size check (one process group serves them)


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


def _framework(testing: Any, name: str, candidate: Any) -> str:
    return testing.detect_framework(candidate) if name == "auto" else name


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


#: Python argument names in messages -> the flags that set them
_FLAGS = {
    "reference_kwargs": "--kw", "candidate_kwargs": "--candidate-kw",
    "init_kwargs": "--init-kw", "output": "--output", "same": "--same",
    "max_examples": "--examples", "framework": "--framework", "dtype": "--dtype",
    "reference": "--as", "replay": "--replay",
}
_DOMAIN_FLAGS = {
    "batch_size": "--batch-size", "balanced": "--balanced", "min_per_class": "--min-per-class",
    "min_classes": "--min-classes", "max_classes": "--max-classes",
    "singletons": "--no-singletons", "duplicates": "--no-duplicates",
}


def cli_words(message: str) -> str:
    """A message of the Python API in the words of the command line: the
    argument it names becomes the flag that sets it."""
    head, sep, rest = message.partition(": ")
    if not sep:
        return message
    if head == "domain":
        key, sep2, tail = rest.partition(": ")
        if sep2 and key in _DOMAIN_FLAGS:
            return f"{_DOMAIN_FLAGS[key]}: {tail}"
        for key, flag in _DOMAIN_FLAGS.items():
            rest = rest.replace(key, flag)
        return f"domain flags: {rest}"
    if head in _FLAGS:
        rest = rest.replace("{'", "").replace("': ...}", "=...") if head in (
            "reference_kwargs", "init_kwargs") else rest
        return f"{_FLAGS[head]}: {rest}"
    return message


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
        out.write(f"{report}\n\n{report.summary()}\n")
        return 0 if report.agrees else 1
    report = testing.crosscheck(
        candidate, args.reference,
        framework=_framework(testing, args.framework, candidate),
        reference_kwargs=ref_kwargs, candidate_kwargs=cand_kwargs, grad=not args.no_grad,
        dtype=args.dtype or "float64", max_examples=args.examples or TARGET_EXAMPLES,
        seed=args.seed, name=args.target, domain=_domain(args) or None,
        reseed=args.reseed, output=args.output, same=args.same,
    )
    if args.save and not report.agrees:
        report.save(args.save)
    out.write(f"{report}\n\n{report.summary()}\n")
    return 0 if report.agrees else 1


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
    out.write(f"{report}\n\nreplay of {args.replay}: {verdict}\n{report.summary()}\n")
    return 0 if report.agrees else 1


# --------------------------------------------------------------------------
# the table of known implementations


class _Progress:
    """A progress bar on stderr (one line rewritten on a terminal, one line
    per step otherwise)."""

    def __init__(self, total: int, stream: TextIO, enabled: bool) -> None:
        self.total, self.stream, self.enabled = total, stream, enabled
        self.tty = enabled and hasattr(stream, "isatty") and stream.isatty()
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
            self.stream.write("\r" + text[:110].ljust(110))
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
            self.stream.write("\r" + text.ljust(110) + "\n")
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
    total = sum((e.preset is not None) + 1 for e in installed)
    progress = _Progress(total, err, not args.no_progress)
    rows = []
    failed = False
    for entry in selected:
        if not entry.installed():
            rows.append((entry, "not installed", "not installed", ""))
            continue
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
        must = {"preset": preset_result, "reference": ref_result}.get(entry.must_match)
        if must is not None and not isinstance(must, str) and not must.agrees:
            failed = True
        if isinstance(must, str) and must.startswith(("error", "not available")):
            failed = True
        if isinstance(preset_result, str) and preset_result.startswith("error"):
            failed = True
        first = _words(preset_result)
        first = f"vs preset: {first}" if first else _words(ref_result)
        if isinstance(ref_result, str) and ref_result.startswith(("error", "not available")):
            first = first or ref_result
        if entry.note and not (not isinstance(ref_result, str) and ref_result.agrees):
            first = f"{first} — {entry.note}" if first else entry.note
        rows.append((entry, _cell(preset_result), _cell(ref_result), first))
    progress.finish()

    out.write(_table(rows))
    n_run = len(installed)
    out.write(f"\n{n_run} of {len(selected)} known implementations installed; "
              f"{args.examples or TABLE_EXAMPLES} examples per check, seed {args.seed}.\n")
    if save_dir:
        out.write(f"counterexamples saved in {save_dir} "
                  f"(replay: refloss crosscheck --replay FILE)\n")
    return 1 if failed else 0


def _table(rows: list) -> str:
    header = ("implementation", "vs preset", "vs reference", "first difference")
    lines = ["| " + " | ".join(header) + " |", "|---|---|---|---|"]
    for entry, preset, ref, first in rows:
        cells = (entry.name, preset, ref, first or "—")
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


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
