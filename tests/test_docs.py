"""Every code block of the docs runs: README.md and every page of the site (docs/**/*.md).

* ```python blocks run as written, each in a fresh namespace. The blocks of
  one page run in one process, one after the other (as a reader pastes them
  into one session), so a page pays for its imports once.
* ```bash blocks are split into commands (continuation lines, and the
  indented lines of a usage synopsis, joined; ``&&`` chains split, comments
  dropped). A ``pip install`` must name extras that
  pyproject.toml defines; every other command runs, in a copy of docs/ and
  examples/, and must leave the copied pages as they were (a command that
  regenerates a page must reproduce it), unless SKIPPED lists it, by its exact
  text, with the reason. A skipped command's ``--flags`` must still be in its
  program's ``--help``.
* ```text blocks are output and signatures, not code. Any other fence (or a
  fence without a language) fails: say what it is.
* The docstring examples (``>>>``) that the API reference shows run as doctests.
* Links: every page is in the site's nav, every relative link and anchor
  resolves, and no link leaves the repository except a public https URL.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                   re.M | re.S)
NOT_CODE = {"text"}  # output and signatures
SHELL = {"bash", "sh", "shell"}


def _name(page: pathlib.Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _blocks(page: pathlib.Path) -> list[tuple[str, int, str]]:
    """(language, line, body) of every fenced block, the body dedented."""
    text = page.read_text()
    out = []
    for m in FENCE.finditer(text):
        body = m.group("body")
        indent = m.group("indent")
        if indent:
            body = "".join(line[len(indent):] if line.startswith(indent) else line
                           for line in body.splitlines(keepends=True))
        out.append((m.group("lang").strip(), text.count("\n", 0, m.start()) + 1,
                    textwrap.dedent(body)))
    return out


def _commands(body: str) -> list[str]:
    """The commands of a shell block: continuations joined, comments dropped, && split."""
    commands = []
    # a usage synopsis wraps by indenting its next line: one command, as "\\" joins
    body = re.sub(r"\n[ \t]+(?=\S)", " ", body.replace("\\\n", " "))
    for line in body.splitlines():
        line = re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip()
        commands += [" ".join(c.split()) for c in line.split("&&") if c.strip()]
    return commands


# Shell commands of the docs that this test does not run, by page and exact text
# (continuations joined, comment dropped, spaces collapsed), each with why. A
# command whose text changes is run again; an entry whose command left the docs
# fails test_skip_list_is_exact; and the count is pinned, so the list can
# neither grow nor rot without an edit here.
SKIPPED = {
    # the README's commands: installs and the whole suite (.ci/run runs them verbatim)
    ("README.md", "refloss crosscheck"):
        "every known installed implementation: ~45 s of CPU; "
        "tests/test_cli.py::test_table_of_known_implementations runs the table",
    ("README.md", "refloss crosscheck mypkg.losses:triplet --as batch_all_triplet_loss "
                  "--framework torch"):
        "mypkg is a placeholder for the user's module; tests/test_cli.py runs real candidates",
    ("README.md", "HYPOTHESIS_PROFILE=ci python -m pytest -q -n 2 --dist worksteal"):
        "the test suite itself (.ci/run runs the README's line verbatim: test_ci_runs_...)",
    ("docs/crosscheck.md", "refloss crosscheck"):
        "every known installed implementation (as in the README)",
    ("docs/crosscheck.md", "refloss crosscheck --format json --no-progress > crosscheck.json"):
        "the whole table again (~45 s of CPU); tests/test_cli_output.py checks its JSON",
    ("docs/crosscheck.md", "python -c \"import json; t = json.load(open('crosscheck.json')); "
     "print(t['exit_code'], [r['name'] for r in t['rows'] if not r['ok']])\""):
        "reads the file the skipped command above writes",
    # the synopsis of the command, with placeholders (its flags are checked against --help)
    ("docs/crosscheck.md", "refloss crosscheck MODULE:FUNCTION --as REFERENCE [--framework F] "
     "[--kw k=v ...] [--candidate-kw k=v ...] [--init-kw k=v ...] [--output N] "
     "[--same CONVENTION] [--reseed] [domain flags] [--examples N] [--dtype float32] "
     "[--seed S] [--no-grad] [--save FILE]"): "synopsis",
    ("docs/crosscheck.md", "refloss crosscheck MODULE:FUNCTION --as REFERENCE --world-size W "
     "[--grad-reduce mean] [--even-shards] [--kw k=v ...] [--examples N] [--seed S]"):
        "synopsis",
    ("docs/crosscheck.md", "refloss crosscheck --replay FILE [MODULE:FUNCTION]"): "synopsis",
    ("docs/crosscheck.md", "python -m refloss crosscheck ..."): "synopsis",
    # minutes of benchmarking, or a GPU (tests/test_benchmarks.py runs the harness small)
    ("docs/benchmarks.md", "python -m benchmarks --quick"): "about 2 minutes",
    ("docs/benchmarks.md", "python -m benchmarks"): "the full sweep: tens of minutes",
    ("docs/benchmarks.md", "python -m benchmarks --device cuda"): "needs a GPU",
    ("docs/benchmarks.md", "benchmarks/gpu.sh"): "needs a GPU (the suite and the sweep on "
        "CUDA and CuPy); test_benchmarks.py checks --device cuda's refusal without one",
    ("docs/benchmarks.md", "python -m benchmarks --quick --write-docs"):
        "about 2 minutes, and rewrites the page with this machine's numbers",
    ("docs/benchmarks.md", "python -m benchmarks --from-csv docs/benchmarks.csv --write-docs"):
        "regenerates the page from the CSV; tests/test_benchmarks.py checks the generator",
    ("docs/benchmarks.md", "python -m benchmarks --from-csv other.csv --merge --write-docs"):
        "other.csv stands for another run's CSV; test_benchmarks.py tests --merge",
    ("docs/benchmarks.md", "python benchmarks/scale.py --batch 8192"): "minutes, GBs of memory",
    ("docs/distributed.md", "python examples/distributed.py"):
        "~25 s; test_distributed_example_runs below runs it and checks its output",
    ("docs/distributed.md", "python -m benchmarks.distributed --batch 2048 --dim 64 "
                            "--worlds 1 2 4 --repeats 3"): "a benchmark: minutes",
    # the test suite itself, in other profiles
    ("docs/testing.md", "HYPOTHESIS_PROFILE=ci python -m pytest -q -n 2 --dist worksteal"):
        "the suite itself",
    ("docs/testing.md", "HYPOTHESIS_PROFILE=thorough python -m pytest -q"): "the suite, 500 "
        "examples per property: hours",
    ("docs/testing.md", "HYPOTHESIS_PROFILE=soak python -m pytest -q tests/test_soak.py "
                        "-p no:randomly"): "the soak: 13 minutes",
    ("docs/testing.md", "HYPOTHESIS_PROFILE=soak REFLOSS_SOAK_REPORT=soak.json python -m pytest "
                        "-q tests/test_soak.py -p no:randomly --hypothesis-show-statistics"):
        "the soak: 13 minutes",
    ("docs/testing.md", "HYPOTHESIS_PROFILE=soak REFLOSS_SOAK_SCALE=0.03 python -m pytest -q "
                        "tests/test_soak.py -p no:randomly"): "a fraction of the soak: minutes",
    # the figure scripts at full size (tests/test_figures.py runs them small)
    ("docs/figures.md", "python docs/figures/center_loss_digits.py"):
        "half a minute, and rewrites the committed PNG; test_figures.py runs it small",
    ("docs/figures.md", "python docs/figures/triplet_mining.py"):
        "rewrites the committed PNG; test_figures.py runs it small",
}
SKIPPED_COUNT = 27  # raise it only together with a new, commented entry above

# program (after any VAR=value prefix) -> how to ask it for its flags
HELP = {
    "refloss crosscheck": ["-m", "refloss", "crosscheck", "--help"],
    "python -m refloss crosscheck": ["-m", "refloss", "crosscheck", "--help"],
    "python -m benchmarks.distributed": ["-m", "benchmarks.distributed", "--help"],
    "python -m benchmarks": ["-m", "benchmarks", "--help"],
    "python benchmarks/scale.py": [str(ROOT / "benchmarks" / "scale.py"), "--help"],
    "python -m pytest": ["-m", "pytest", "--noconftest", "--help"],  # no torch import
}


def _program(command: str) -> str:
    words = shlex.split(command)
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        words.pop(0)
    return " ".join(words)


def _shell_commands(page: pathlib.Path) -> list[str]:
    return [c for lang, _, body in _blocks(page) if lang in SHELL for c in _commands(body)]


def _extras() -> set[str]:
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([\w-]+)\s*=", section, re.M))


# ---------------------------------------------------------------------------
# python blocks

RUNNER = r"""
import json, sys, traceback
blocks = json.loads(open(sys.argv[1]).read())
failures = []
for name, code in blocks:
    namespace = {"__name__": "__main__"}
    try:
        exec(compile(code, name, "exec"), namespace)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            failures.append([name, "SystemExit(%r)" % (exc.code,)])
    except BaseException:
        failures.append([name, traceback.format_exc()[-3000:]])
open(sys.argv[2], "w").write(json.dumps(failures))
"""

PYTHON_PAGES = [p for p in PAGES if any(lang == "python" for lang, _, _ in _blocks(p))]


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=_name)
def test_python_blocks_run(page, tmp_path):
    blocks = [(f"{_name(page)}:{line}", body) for lang, line, body in _blocks(page)
              if lang == "python"]
    (tmp_path / "blocks.json").write_text(json.dumps(blocks))
    out = subprocess.run([sys.executable, "-c", RUNNER, str(tmp_path / "blocks.json"),
                          str(tmp_path / "failures.json")],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    failures = json.loads((tmp_path / "failures.json").read_text())
    assert not failures, "\n\n".join(f"block at {name}:\n{tb}" for name, tb in failures)


# ---------------------------------------------------------------------------
# shell blocks

def test_every_block_is_code_or_declared_output():
    unknown = [f"{_name(p)}:{line} ```{lang}" for p in PAGES for lang, line, _ in _blocks(p)
               if lang not in NOT_CODE | SHELL | {"python"}]
    assert not unknown, f"blocks this test neither runs nor knows as output: {unknown}"


def test_skip_list_is_exact():
    present = {(_name(p), c) for p in PAGES for c in _shell_commands(p)}
    stale = [key for key in SKIPPED if key not in present]
    assert not stale, f"SKIPPED lists commands that are no longer in the docs: {stale}"
    assert len(SKIPPED) == SKIPPED_COUNT


def test_pip_installs_name_existing_extras():
    extras = _extras()
    for page in PAGES:
        for command in _shell_commands(page):
            if not command.startswith("pip install"):
                continue
            named = {e.strip() for group in re.findall(r"\.\[([^\]]*)\]", command)
                     for e in group.split(",")}
            assert named <= extras, f"{_name(page)}: {command!r} names {named - extras}"


RUN_PAGES = [p for p in PAGES if any(
    not c.startswith("pip install") and (_name(p), c) not in SKIPPED for c in _shell_commands(p))]


@pytest.mark.parametrize("page", RUN_PAGES, ids=_name)
def test_shell_commands_run(page, tmp_path):
    # a copy, so that a command that writes a page writes the copy
    for folder in ("docs", "examples"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    before = {p: p.read_bytes() for p in (tmp_path / "docs").rglob("*") if p.is_file()}
    env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable),
                                                  os.environ.get("PATH", "")])}
    for command in _shell_commands(page):
        if command.startswith("pip install") or (_name(page), command) in SKIPPED:
            continue
        out = subprocess.run(command, shell=True, capture_output=True, text=True, cwd=tmp_path,
                             env=env, timeout=300)
        assert out.returncode == 0, f"{_name(page)}: {command!r}\n{out.stderr[-3000:]}"
    changed = [p.relative_to(tmp_path).as_posix() for p, data in before.items()
               if p.read_bytes() != data]
    assert not changed, f"{_name(page)}: the commands changed committed files {changed}"


def test_skipped_commands_use_existing_flags():
    helps: dict[str, str] = {}
    for page, command in SKIPPED:
        program = _program(command)
        key = next((k for k in sorted(HELP, key=len, reverse=True)
                    if program == k or program.startswith(k + " ")), None)
        if key is None:
            continue
        if key not in helps:
            out = subprocess.run([sys.executable, *HELP[key]], capture_output=True, text=True,
                                 cwd=ROOT, timeout=120)
            assert out.returncode == 0, out.stderr[-2000:]
            helps[key] = out.stdout
        flags = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", program)) - {"--help"}
        missing = sorted(f for f in flags if f not in helps[key])
        assert not missing, f"{page}: {command!r} uses flags {missing} that {key} lacks"


def test_ci_runs_the_readme_test_command_verbatim():
    readme = [c for lang, _, body in _blocks(ROOT / "README.md") if lang in SHELL
              for c in [body.strip()] if "pytest" in c]
    assert len(readme) == 1
    assert readme[0] in (ROOT / ".ci" / "run").read_text()


# ---------------------------------------------------------------------------
# docstring examples (shown on the API pages)

DOCTEST_MODULES = ["refloss.center", "refloss.contrastive", "refloss.hardest_negative",
                   "refloss.vjp", "refloss.adapters.torch", "refloss.adapters.jax"]


def test_doctest_modules_cover_every_docstring_example():
    sources = [p for folder in ("refloss", "adapters") for p in (ROOT / folder).rglob("*.py")
               if ">>>" in p.read_text()]
    names = {p.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
             .replace("adapters.", "refloss.adapters.", 1) for p in sources}
    assert names == set(DOCTEST_MODULES)


DOCTEST = """
import doctest, importlib, sys
module = importlib.import_module(sys.argv[1])
flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
result = doctest.testmod(module, optionflags=flags)
sys.exit(1 if result.failed or not result.attempted else 0)
"""


@pytest.mark.parametrize("module", DOCTEST_MODULES)
def test_docstring_examples_run(module):
    if module.endswith(("torch", "jax")):
        pytest.importorskip(module.rsplit(".", 1)[1])
    # a fresh process, as a reader's: the suite's JAX tests switch float64 on
    out = subprocess.run([sys.executable, "-c", DOCTEST, module], capture_output=True,
                         text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]


# ---------------------------------------------------------------------------
# links and nav

LINK = re.compile(r"(?<!\!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """The anchor of a heading (Python-Markdown's toc and GitHub agree on these)."""
    text = re.sub(r"[`*_]|\$[^$]*\$", lambda m: "" if m.group(0) in "`*_" else m.group(0),
                  heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return re.sub(r"\s+", "-", text.strip())


def _anchors(page: pathlib.Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {_slug(h) for h in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, re.M)}


def _links(page: pathlib.Path) -> list[str]:
    text = FENCE.sub("", page.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code
    return [a or b for a, b in LINK.findall(text)]


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text().split("\nnav:", 1)[1]
    listed = set(re.findall(r":\s*([\w/.-]+\.md)\s*$", nav, re.M))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages - listed == set(), "pages missing from mkdocs.yml's nav"
    assert listed - pages == set(), "nav entries without a page"


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_links_resolve_inside_the_repository(page):
    for target in _links(page):
        if target.startswith("https://"):
            continue
        assert not re.match(r"[a-z][\w+.-]*:", target), f"{_name(page)}: {target} (not https)"
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.is_relative_to(ROOT), f"{_name(page)}: {target} leaves the repository"
        if page.is_relative_to(DOCS):
            assert dest.is_relative_to(DOCS), f"{_name(page)}: {target} leaves the site"
        assert dest.exists(), f"{_name(page)}: {target} does not exist"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest), f"{_name(page)}: no heading #{anchor} in {path}"


# ---------------------------------------------------------------------------
# the examples

def test_quickstart_runs():
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "center loss" in out.stdout


def test_distributed_example_runs():
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "distributed.py")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "same trajectory and centers as one process" in out.stdout
