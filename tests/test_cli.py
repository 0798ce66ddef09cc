"""The ``refloss`` console script, run for real in a subprocess.

Exit status: 0 agree, 1 disagree (with the report), 2 bad usage (one line on
stderr, no traceback). Candidates live in a module written to a temporary
directory, which is the subprocess's working directory (the script imports
``MODULE:FUNCTION`` from there, as ``python -m`` would).
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
from helpers import cli_run

SCRIPT = pathlib.Path(sys.executable).with_name("refloss")

CANDIDATES = textwrap.dedent(
    """
    import numpy as np


    def _d(x):
        diff = x[:, None, :] - x[None, :, :]
        return np.sqrt(np.sum(diff * diff, axis=-1))


    def batch_all(x, labels, self_positive=False, margin=1.0):
        d = _d(np.asarray(x, dtype=np.float64))
        t = [max((d[a, p] + margin) - d[a, n], 0.0)
             for a in range(len(labels)) for p in range(len(labels))
             for n in range(len(labels))
             if labels[p] == labels[a] and (p != a or self_positive) and labels[n] != labels[a]]
        t = np.asarray(t)
        k = np.count_nonzero(t > 0)
        return np.asarray(t.sum() / k if k else 0.0)


    def batch_all_self_positive(x, labels):
        return batch_all(x, labels, self_positive=True)


    def raises(x, labels):
        raise ZeroDivisionError("boom")


    def per_sample(x, labels):
        return np.zeros(x.shape[0])


    class CenterLoss:  # a loss class with constructor arguments

        def __init__(self, factor):
            self.factor = factor

        def __call__(self, x, labels, centers):
            return self.factor * np.sum((x - centers[labels]) ** 2)


    def with_count(x, labels):  # (loss, number of terms), as many public losses return
        return batch_all(x, labels), np.asarray(len(labels))


    def contrastive_dissimilar(a, b, label):  # label: float, 1 = dissimilar pair
        d = np.sqrt(np.sum((a - b) ** 2, axis=1))
        return np.mean((1 - label) * d ** 2 + label * np.maximum(1.0 - d, 0.0) ** 2)


    NOT_CALLABLE = 3
    """
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "cands.py").write_text(CANDIDATES)
    (d / "broken.py").write_text("import no_such_dependency_anywhere\n")
    return d


def run(args, cwd, *, module=False, timeout=300):
    cmd = [sys.executable, "-m", "refloss", *args] if module else [str(SCRIPT), *args]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("REFLOSS_TRACEBACK", None)
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env)


def one_line_error(out, *fragments):
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert lines[0].startswith("refloss crosscheck: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason="refloss script not installed")


# --------------------------------------------------------------------------
# one target


def test_agreeing_candidate_exits_0_with_the_report(workdir):
    out = run(["crosscheck", "cands:batch_all", "--as", "batch_all_triplet_loss",
               "--examples", "15"], workdir)
    assert out.returncode == 0, out.stderr
    assert "verdict: AGREE" in out.stdout
    assert out.stdout.strip().splitlines()[-1].startswith("AGREE cands:batch_all vs ")


def test_disagreeing_candidate_exits_1_and_saves_the_counterexample(workdir):
    saved = workdir / "selfpos.npz"
    out = run(["crosscheck", "cands:batch_all_self_positive", "--as",
               "batch_all_triplet_loss", "--examples", "30", "--save", str(saved)], workdir)
    assert out.returncode == 1, out.stderr
    assert "verdict: DISAGREE" in out.stdout
    assert "counterexample (shrunk, 2 samples)" in out.stdout
    assert out.stdout.strip().splitlines()[-1].startswith("DISAGREE ")
    assert saved.exists()

    again = run(["crosscheck", "--replay", str(saved)], workdir)
    assert again.returncode == 1, again.stderr
    assert "still disagrees" in again.stdout

    fixed = run(["crosscheck", "--replay", str(saved), "cands:batch_all"], workdir)
    assert fixed.returncode == 0, fixed.stderr
    assert "now agrees" in fixed.stdout


def test_reference_keywords_reach_the_reference(workdir):
    # the candidate's margin is 1.0: told 0.5, the reference disagrees
    out = run(["crosscheck", "cands:batch_all", "--as", "batch_all_triplet_loss",
               "--kw", "margin=0.5", "--examples", "30", "--no-grad"], workdir)
    assert out.returncode == 1, out.stderr
    assert "batch_all_triplet_loss(margin=0.5)" in out.stdout


def test_python_dash_m_refloss_runs_the_same_script(workdir):
    out = run(["--version"], workdir, module=True)
    assert out.returncode == 0 and out.stdout.startswith("refloss ")


# --------------------------------------------------------------------------
# bad usage: exit 2, one line, no traceback


# the kinds of bad input the script must name; each runs the real script
BAD_INPUT = [
    (["nosuchmodule:f", "--as", "center_loss"], ["cannot import module 'nosuchmodule'"]),
    (["broken:f", "--as", "center_loss"],
     ["cannot import module 'broken'", "no_such_dependency_anywhere"]),
    (["cands:batch_all", "--as", "no_such_loss"], ["no refloss function named"]),
    (["cands:batch_all", "--as", "batch_all_triplet_loss", "--kw", "margin=[1,"],
     ["--kw 'margin=[1,'", "does not parse"]),
]


def test_a_candidate_that_raises_is_a_finding_exit_1(workdir):
    out = run(["crosscheck", "cands:raises", "--as", "batch_all_triplet_loss",
               "--examples", "5"], workdir)
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "verdict: DISAGREE (raises)" in out.stdout
    assert "raised ZeroDivisionError: boom on 1 sample" in out.stdout
    assert "cands.py:" in out.stdout and "in raises" in out.stdout  # its own frame
    assert out.stderr == ""


@pytest.mark.parametrize(("args", "fragments"), BAD_INPUT,
                         ids=[" ".join(a)[:40] for a, _ in BAD_INPUT])
def test_bad_input_exits_2_with_one_line(workdir, args, fragments):
    one_line_error(run(["crosscheck", *args], workdir), *fragments)


# more misuse, through the same entry point in this process (cheaper than a
# subprocess each: main() is what the script calls)
MISUSE = [
    (["cands:nosuch", "--as", "center_loss"], ["has no attribute 'nosuch'"]),
    (["cands:NOT_CALLABLE", "--as", "center_loss"], ["not callable"]),
    (["cands", "--as", "center_loss"], ["expected MODULE:FUNCTION"]),
    (["cands:batch_all", "--as", "compat.nosuch.f"], ["no compat module"]),
    (["cands:batch_all"], ["needs --as REFERENCE"]),
    (["cands:batch_all", "--as", "batch_all_triplet_loss", "--kw", "margin"],
     ["expected KEY=VALUE"]),
    (["cands:batch_all", "--as", "batch_all_triplet_loss", "--kw", "margin="],
     ["no value after '='"]),
    (["cands:batch_all", "--as", "batch_all_triplet_loss", "--kw", "margn=1"],
     ["no keyword 'margn'"]),
    (["cands:batch_all", "--as", "batch_all_triplet_loss", "--kw", "margin=-1"],
     ["margin: expected"]),
    (["cands:batch_all", "--as", "center_loss", "--examples", "0"], ["--examples"]),
    (["cands:batch_all", "--as", "center_loss", "--framework", "mxnet"], ["--framework"]),
    (["--as", "center_loss"], ["--as needs a TARGET"]),
    (["--only", "nothing-matches-this"], ["no known implementation matches"]),
    (["--replay", "missing.npz"], ["no such file"]),
]


@pytest.mark.parametrize(("args", "fragments"), MISUSE,
                         ids=[" ".join(a)[:40] for a, _ in MISUSE])
def test_misuse_exits_2_with_one_line(workdir, args, fragments, capsys, monkeypatch):
    status, _, err = cli_run(workdir, args, capsys, monkeypatch)
    one_line_error(subprocess.CompletedProcess(args, status, "", err), *fragments)


GLUE = [
    # a class with constructor arguments
    (["cands:CenterLoss", "--as", "center_loss", "--init-kw", "factor=0.5"], 0),
    (["cands:CenterLoss", "--as", "center_loss", "--init-kw", "factor=1.0"], 1),
    # a tuple output
    (["cands:with_count", "--as", "batch_all_triplet_loss", "--output", "0"], 0),
    # pair labels with 1 = dissimilar, as floats
    (["cands:contrastive_dissimilar", "--as", "contrastive_loss", "--same",
      "float,1=different"], 0),
    (["cands:contrastive_dissimilar", "--as", "contrastive_loss"], 1),
]


@pytest.mark.parametrize(("args", "status"), GLUE, ids=[" ".join(a)[6:60] for a, _ in GLUE])
def test_no_glue_flags(workdir, args, status, capsys, monkeypatch):
    got, out, err = cli_run(workdir, [*args, "--examples", "8"], capsys, monkeypatch)
    assert got == status, out + err
    assert err == ""


def test_domain_flags_reach_the_search(workdir, capsys, monkeypatch):
    got, out, err = cli_run(workdir, ["cands:batch_all_self_positive", "--as",
                                      "batch_all_triplet_loss", "--balanced",
                                      "--min-per-class", "2", "--min-classes", "2",
                                      "--examples", "10", "--no-grad"], capsys, monkeypatch)
    assert got == 1, out + err
    assert "domain: min_classes=2, min_per_class=2, balanced=True" in out
    assert "labels [0, 0, 1, 1]" in out or "labels [0, 1, 0, 1]" in out or \
        "labels [0, 1, 1, 0]" in out or "labels [1, 0, 0, 1]" in out or \
        "labels [1, 0, 1, 0]" in out or "labels [1, 1, 0, 0]" in out


CLI_WORDS = [
    (["cands:CenterLoss", "--as", "center_loss", "--init-kw", "factr=1"],
     ["--init-kw: cannot instantiate cands:CenterLoss"]),
    (["cands:batch_all", "--as", "compat.facenet.center_loss"],
     ["--kw: refloss.compat.facenet.center_loss needs 'alfa'", "alfa=..."]),
    (["cands:batch_all", "--as", "batch_all_triplet_loss", "--same", "int"],
     ["--same: refloss.batch_all_triplet_loss takes no pair flags"]),
    (["cands:batch_all", "--as", "contrastive_loss", "--same", "bits"],
     ["--same: unknown word 'bits'"]),
    (["cands:batch_all", "--as", "contrastive_loss", "--balanced"],
     ["--balanced", "applies to labeled batches"]),
    (["cands:batch_all", "--as", "batch_all_triplet_loss", "--batch-size", "3:2"],
     ["--batch-size '3:2': expected 1 <= LO <= HI"]),
    (["--init-kw", "a=1"], ["--init-kw needs a TARGET"]),
]


@pytest.mark.parametrize(("args", "fragments"), CLI_WORDS,
                         ids=[" ".join(a)[:50] for a, _ in CLI_WORDS])
def test_errors_name_the_flag(workdir, args, fragments, capsys, monkeypatch):
    status, _, err = cli_run(workdir, args, capsys, monkeypatch)
    one_line_error(subprocess.CompletedProcess(args, status, "", err), *fragments)


def test_unknown_command_exits_2(workdir):
    one_line_error(run(["frobnicate"], workdir), "invalid choice")


# --------------------------------------------------------------------------
# the table of known implementations


def test_table_of_known_implementations(workdir):
    pytest.importorskip("torch")
    from refloss.adapters import known

    saved = workdir / "table"
    # every entry but the JAX adapters (whose per-shape compilation alone takes
    # longer than all the rest; the JAX bridge is tested in test_crosscheck.py)
    out = run(["crosscheck", "--only", "torch", "--only", "pytorch-metric-learning",
               "--only", "TensorFlow", "--examples", "3", "--save", str(saved)], workdir)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()  # piped: Markdown
    assert lines[0] == "| implementation | vs preset | vs reference | first difference |"
    rows = {ln.split(" | ")[0].lstrip("| "): ln for ln in lines[2:] if ln.startswith("| ")}
    wanted = [e for e in known.entries() if e.framework not in ("jax", "numpy")]
    assert set(rows) == {e.name for e in wanted if e.installed()}
    assert "| n/a | agrees | — |" in rows["refloss.adapters.torch.triplet_margin_loss"]
    assert "| agrees | agrees | — |" in rows["pytorch-metric-learning TripletMarginLoss()"]
    if importlib.util.find_spec("tensorflow_addons") is None:
        # the rows of what is not installed collapse into one line
        assert not any(name.startswith("TensorFlow Addons") for name in rows)
        assert "not installed (3 rows): " in out.stdout
        assert "tensorflow-addons — pip install " in out.stdout
    assert "checks in" in out.stderr  # the progress bar's last line

    # a counterexample of the table replays through the registry ("known:...")
    files = sorted(saved.glob("*-reference.npz"))
    assert files, "the table saved no counterexample"
    again = run(["crosscheck", "--replay", str(files[0])], workdir)
    assert again.returncode == 1, again.stderr
    assert "still disagrees" in again.stdout
