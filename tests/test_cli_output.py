"""What ``refloss crosscheck`` prints: Markdown when piped, a table that fits
the terminal, JSON with a documented schema, the rows of what is not
installed in one line, and Python arguments said as the flags that set them.

The formatting is tested on real reports of small NumPy candidates, through
``cli.main`` in this process (no subprocess, no framework).
"""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import numpy as np
import pytest
from helpers import cli_run

import refloss as rl
from refloss import cli

ROOT = pathlib.Path(__file__).resolve().parent.parent

CANDIDATES = textwrap.dedent(
    """
    import numpy as np
    import refloss as rl


    def doubled(x, labels):  # 2 × the reference: a named cause
        return 2 * rl.batch_all_triplet_loss(np.asarray(x), np.asarray(labels))


    def right(x, labels):
        return rl.batch_all_triplet_loss(np.asarray(x), np.asarray(labels))
    """
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_output")
    (d / "outcands.py").write_text(CANDIDATES)
    return d


# --------------------------------------------------------------------------
# the table's pieces, on stand-in entries and real reports


@dataclass(frozen=True)
class FakeEntry:
    key: str
    name: str
    framework: str = "torch"
    must_match: str = "preset"
    note: str = ""
    absent: tuple = ()

    def missing(self):
        return list(self.absent)


@pytest.fixture(scope="module")
def reports():
    from refloss.testing import crosscheck

    def doubled(x, labels):
        return 2 * rl.batch_all_triplet_loss(x, labels)

    def right(x, labels):
        return rl.batch_all_triplet_loss(x, labels)

    bad = crosscheck(doubled, "batch_all_triplet_loss", max_examples=5, framework="numpy")
    good = crosscheck(right, "batch_all_triplet_loss", max_examples=3, framework="numpy")
    assert not bad.agrees and good.agrees
    return good, bad


def table(reports):
    good, bad = reports
    rows = [
        cli._table_row(FakeEntry("a", "pytorch-metric-learning TripletMarginLoss() + "
                                 "TripletMarginMiner('semihard')", note="a documented "
                                 "difference | with a pipe"), good, bad),
        cli._table_row(FakeEntry("b", "refloss.adapters.torch.batch_all_triplet_loss",
                                 must_match="reference"), "n/a", good),
    ]
    missing = [FakeEntry("c", "jax thing", absent=("jax",)),
               FakeEntry("d", "tfa thing", absent=("tensorflow", "tensorflow-addons")),
               FakeEntry("e", "another jax thing", absent=("jax",))]
    return cli.TableResult(rows=rows, missing=missing, known=5, examples=5, seed=0)


def test_rows_not_installed_collapse_into_one_line(reports):
    t = table(reports)
    assert cli.missing_line(t.missing) == (
        "not installed (3 rows): jax, tensorflow, tensorflow-addons — "
        "pip install jax tensorflow tensorflow-addons")
    assert cli.missing_line([]) == ""
    for text in (cli.table_markdown(t), cli.table_text(t, 100)):
        assert text.count("not installed") == 1
        assert "jax thing" not in text


def test_markdown_rows_keep_their_content(reports):
    bad = reports[1]
    t = table(reports)
    lines = cli.table_markdown(t).splitlines()
    assert lines[:2] == ["| implementation | vs preset | vs reference | first difference |",
                         "|---|---|---|---|"]
    assert lines[2] == (
        "| pytorch-metric-learning TripletMarginLoss() + TripletMarginMiner('semihard') | "
        f"agrees | value differs | {bad.difference} — a documented difference \\| with a "
        "pipe |")
    assert lines[3] == "| refloss.adapters.torch.batch_all_triplet_loss | n/a | agrees | — |"
    assert lines[4:] == ["", cli.missing_line(t.missing),
                         "2 of 5 known implementations installed; 5 examples per check, "
                         "seed 0."]


@pytest.mark.parametrize("width", [30, 50, 72, 80, 100, 160])
def test_text_lines_fit_the_width(reports, width):
    text = cli.table_text(table(reports), width)
    assert max(len(line) for line in text.splitlines()) <= width
    words = " ".join(text.split())
    # nothing is lost in the wrapping: every word of the difference is there
    for word in reports[1].difference.split():
        assert word in words


def test_text_is_a_grid_when_wide_and_blocks_when_narrow(reports):
    wide = cli.table_text(table(reports), 100).splitlines()
    assert wide[0].split() == ["implementation", "vs", "preset", "vs", "reference", "first",
                               "difference"]
    assert set(wide[1]) <= {"-", " "}
    narrow = cli.table_text(table(reports), 40).splitlines()
    assert narrow[0] == "pytorch-metric-learning"  # a block per row, name first
    assert "  vs preset: n/a; vs reference: agrees" in narrow


def test_the_table_exit_code_follows_what_must_match(reports):
    good, bad = reports
    ok = cli._table_row(FakeEntry("x", "x", must_match="reference"), bad, good)
    failed = cli._table_row(FakeEntry("y", "y", must_match="preset"), bad, good)
    assert ok.ok and not failed.ok
    assert cli.TableResult([ok], [], 1, 5, 0).exit_code == 0
    assert cli.TableResult([ok, failed], [], 2, 5, 0).exit_code == 1


# --------------------------------------------------------------------------
# JSON: the schema of docs/crosscheck.md

JSON_TYPES = {"str": str, "int": int, "float": (int, float, str), "bool": bool, "any": object,
              "list": list, "dict": dict}
NULLABLE = re.compile(r"^(\w+)( or null)?$")


def check_schema(data, schema):
    """``schema``: {field: "type" or "type or null"} of docs/crosscheck.md."""
    assert set(schema) <= set(data), sorted(set(schema) - set(data))
    for key, spec in schema.items():
        kind, null = NULLABLE.match(spec).groups()
        if data[key] is None:
            assert null, f"{key} is null"
        else:
            assert isinstance(data[key], JSON_TYPES[kind]), (key, data[key])


def doc_schema(name):
    """The field table ``name`` of docs/crosscheck.md as {field: type}."""
    text = (ROOT / "docs" / "crosscheck.md").read_text(encoding="utf-8")
    block = text.split(f"<!-- schema: {name} -->", 1)[1].split("<!-- end schema -->", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| ([\w ]+?) \|", block, flags=re.M)
    assert rows, name
    return dict(rows)


def test_json_of_one_candidate_matches_the_documented_schema(workdir, capsys, monkeypatch):
    status, out, err = cli_run(workdir, ["outcands:doubled", "--as", "batch_all_triplet_loss",
                                      "--examples", "5", "--format", "json"],
                            capsys, monkeypatch)
    assert status == 1, err
    data = json.loads(out)
    check_schema(data, doc_schema("report"))
    assert data["schema_version"] == 1 and data["mode"] == "candidate"
    assert data["verdict"] == "disagree" and data["exit_code"] == 1
    check_schema(data["counterexample"], doc_schema("finding"))
    cx = data["counterexample"]
    assert cx["kind"] == "value" and "2 × the reference" in cx["cause"]
    np.testing.assert_allclose(cx["candidate_value"][0], 2 * cx["reference_value"][0])
    assert data["findings"][0] == cx

    status, out, _ = cli_run(workdir, ["outcands:right", "--as", "batch_all_triplet_loss",
                                    "--examples", "3", "--format", "json"],
                          capsys, monkeypatch)
    data = json.loads(out)
    assert status == 0 and data["exit_code"] == 0
    assert data["verdict"] == "agree" and data["counterexample"] is None


def test_json_of_the_table_matches_the_documented_schema(workdir, capsys, monkeypatch):
    status, out, _ = cli_run(workdir, ["--only", "numpy.center_loss", "--examples", "3",
                                    "--format", "json", "--no-progress"], capsys, monkeypatch)
    data = json.loads(out)
    check_schema(data, doc_schema("table"))
    assert status == 0 == data["exit_code"] and data["mode"] == "table"
    (row,) = data["rows"]
    check_schema(row, doc_schema("row"))
    assert row["vs_preset"] is None  # nothing to check: "n/a"
    check_schema(row["vs_reference"], doc_schema("check"))
    assert row["vs_reference"]["status"] == "agrees"


def test_json_of_the_fake_table_has_the_collapsed_rows(reports):
    data = json.loads(json.dumps(cli.table_dict(table(reports)), allow_nan=False))
    check_schema(data, doc_schema("table"))
    # row "a" must match its preset (which agrees), row "b" the reference (agrees)
    assert [r["ok"] for r in data["rows"]] == [True, True] and data["exit_code"] == 0
    assert data["rows"][0]["vs_reference"]["status"] == "value differs"
    assert data["rows"][0]["vs_reference"]["cause"]
    assert data["install"] == "pip install jax tensorflow tensorflow-addons"
    assert [m["key"] for m in data["not_installed"]] == ["c", "d", "e"]


def test_non_finite_numbers_become_strings():
    from refloss.testing._json import plain

    got = plain({"a": np.array([np.nan, np.inf, -np.inf, 1.5]), "b": (np.float32(2), None)})
    assert got == {"a": ["NaN", "Infinity", "-Infinity", 1.5], "b": [2.0, None]}
    json.dumps(got, allow_nan=False)


def test_piped_output_is_markdown_and_text_on_request(workdir, capsys, monkeypatch):
    _, out, _ = cli_run(workdir, ["--only", "numpy.center_loss", "--examples", "2",
                               "--no-progress"], capsys, monkeypatch)
    assert out.startswith("| implementation | vs preset | vs reference |")
    _, out, _ = cli_run(workdir, ["--only", "numpy.center_loss", "--examples", "2",
                               "--no-progress", "--format", "text", "--width", "40"],
                     capsys, monkeypatch)
    assert max(map(len, out.splitlines())) <= 40
    assert "|" not in out


# --------------------------------------------------------------------------
# Python arguments in messages, said as the flags that set them

CLI_WORDS = [
    ("the candidate returned a float, not a tensor: torch cannot differentiate it "
     "(compare values only with grad=False)",
     "the candidate returned a float, not a tensor: torch cannot differentiate it "
     "(compare values only with --no-grad)"),
    ("raised TypeError: output=1: the candidate returned one value",
     "raised TypeError: --output 1: the candidate returned one value"),
    ("returned 2 outputs, expected 1 (as refloss.center_loss; pick the value with output=N)",
     "returned 2 outputs, expected 1 (as refloss.center_loss; pick the value with --output N)"),
    ("replay: 'a.npz' was saved from a candidate that cannot be imported by name (f); "
     "pass candidate=",
     "--replay: 'a.npz' was saved from a candidate that cannot be imported by name (f); "
     "pass MODULE:FUNCTION after --replay FILE"),
    ("init_kwargs: cannot instantiate m:C with init_kwargs {'factr': 1} (TypeError: no)",
     "--init-kw: cannot instantiate m:C with --init-kw factr=1 (TypeError: no)"),
    ("reference_kwargs: f needs 'alfa', which is not an input array: give its value, "
     "e.g. {'alfa': ...}",
     "--kw: f needs 'alfa', which is not an input array: give its value, e.g. alfa=..."),
    ("candidate: expected a picklable callable for world_size (a lambda)",
     "MODULE:FUNCTION: expected a picklable callable for --world-size (a lambda)"),
    ("note: framework 'torch' inferred from the first call; pass framework='torch' to say so",
     "note: framework 'torch' inferred from the first call; pass --framework torch to say so"),
    ("max_examples: expected an integer >= 1, got 0", "--examples: expected an integer >= 1, "
     "got 0"),
    ("reference: no default inputs for f's arguments ['q']; pass inputs=<a strategy of dicts>",
     "--as: no default inputs for f's arguments ['q']; pass inputs=<a strategy of dicts> "
     "(from Python: refloss.testing.crosscheck)"),
    ("domain: min_per_class: expected an integer >= 1, got 0",
     "--min-per-class: expected an integer >= 1, got 0"),
    ("domain: batch_size: expected room for 2 samples (min_classes × min_per_class), got "
     "(1, 1)", "--batch-size: expected room for 2 samples (--min-classes × --min-per-class), "
     "got (1, 1)"),
    ("domain: max_classes: expected >= min_classes (2), got 1",
     "--max-classes: expected >= --min-classes (2), got 1"),
    ("domain: balanced, min_per_class applies to labeled batches; x has none",
     "domain flags: --balanced, --min-per-class applies to labeled batches; x has none"),
    ("domain: samples_per_class: expected at least 2 per class when singletons=False",
     "domain flags: samples_per_class: expected at least 2 per class when --no-singletons"),
    # counterexample data is not an argument
    ("value 0 vs reference 1 on 1 pair, same=[False] (a = b)",
     "value 0 vs reference 1 on 1 pair, same=[False] (a = b)"),
]


@pytest.mark.parametrize(("python", "words"), CLI_WORDS, ids=[p[:40] for p, _ in CLI_WORDS])
def test_cli_words_name_the_flags(python, words):
    assert cli.cli_words(python) == words


def test_every_python_argument_maps_to_a_real_flag():
    flags = {a for action in cli._parser()._subparsers._group_actions[0].choices[
        "crosscheck"]._actions for a in action.option_strings}
    for name, flag in cli.PYTHON_ARGS.items():
        assert flag is None or flag == "MODULE:FUNCTION" or flag in flags, name


def test_a_report_says_no_grad_not_grad_false(workdir, capsys, monkeypatch):
    pytest.importorskip("torch")
    (workdir / "floatcand.py").write_text(
        "import torch\n\n\ndef as_float(x, labels):\n    return float(x.sum())\n")
    status, out, err = cli_run(workdir, ["floatcand:as_float", "--as", "batch_all_triplet_loss",
                                      "--framework", "torch",
                                      "--examples", "3"], capsys, monkeypatch)
    assert status == 1, err
    assert "--no-grad" in out and "grad=False" not in out


# --------------------------------------------------------------------------
# the framework of a candidate, from Python


OPS: dict = {}  # functions reached through data: no name in the code says torch


def _torch_inside(x, labels):
    return OPS["cdist"](x, x).sum() * 0


def test_the_framework_is_inferred_from_the_first_call(monkeypatch):
    torch = pytest.importorskip("torch")
    from refloss.testing import crosscheck, detect_framework

    monkeypatch.setitem(OPS, "cdist", torch.cdist)
    assert detect_framework(_torch_inside) == "numpy"

    report = crosscheck(_torch_inside, "batch_all_triplet_loss", max_examples=2, grad=False)
    assert report.framework == "torch"
    assert any("inferred from the first call" in n and "framework='torch'" in n
               for n in report.notes)


def test_without_the_framework_a_note_says_what_to_pass(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setitem(OPS, "cdist", torch.cdist)
    from refloss.adapters import bridges

    from refloss.testing import crosscheck

    real = bridges.get

    def absent(name):
        if name == "torch":
            raise ImportError("framework: 'torch' needs torch, which is not installed")
        return real(name)

    monkeypatch.setattr(bridges, "get", absent)
    report = crosscheck(_torch_inside, "batch_all_triplet_loss", max_examples=2, grad=False)
    assert report.framework == "numpy" and report.kinds[0] == "raises"
    assert any("pass framework='torch'" in n for n in report.notes)


def test_the_framework_is_read_from_what_the_module_imports():
    from refloss.testing import detect_framework

    ns: dict = {}
    exec("from math import fsum as cdist\ndef f(x):\n    return cdist(x)\n", ns)
    assert detect_framework(ns["f"]) == "numpy"
    pytest.importorskip("torch")
    exec("from torch import cdist\ndef g(x):\n    return cdist(x, x)\n", ns)
    assert detect_framework(ns["g"]) == "torch"
    exec("import torch\nimport numpy as np\ndef h(x):\n    return np.sum(x)\n", ns)
    assert detect_framework(ns["h"]) == "numpy"  # a NumPy function next to torch code
    exec("def k(x):\n    return g(x)\n", ns)
    assert detect_framework(ns["k"]) == "torch"  # through a function of its module


# --------------------------------------------------------------------------
# the first hour: the README's first command is the one CI runs in a fresh venv


def _first_bash_block(text):
    return re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1).strip()


def test_ci_runs_the_readme_first_command_verbatim():
    readme = _first_bash_block((ROOT / "README.md").read_text(encoding="utf-8"))
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    block = ci.split("# --- the README's first command, verbatim ---", 1)[1]
    assert readme in block.split("# ---", 1)[0]


def test_the_script_runs_without_hypothesis_only_to_say_what_to_install(tmp_path):
    # a fresh `pip install .` has no Hypothesis: the error names the extra
    code = ("import sys; sys.modules['hypothesis'] = None\n"
            "from refloss import cli\n"
            "raise SystemExit(cli.main(['crosscheck', '--only', 'numpy']))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 2
    assert "pip install 'refloss[crosscheck]'" in out.stderr
    assert "Traceback" not in out.stderr
