"""The README's tour: its commands run as written, and the lines it quotes are what they print."""

import re
import shlex
import shutil
import uuid

import pytest

from tests.helpers import ROOT
from tests.helpers import run_tool_in_subprocess as _run_tool

README = (ROOT / "README.md").read_text()
# Wall times differ between runs; everything else a quoted line says must be printed as quoted.
SECONDS = re.compile(r"\d+(\.\d+)? s\b")


def _blocks(after, count):
    """The first `count` fenced blocks after the heading `after`, as lists of lines."""
    text = README[README.index(after) :]
    return [
        block.strip("\n").splitlines() for block in re.findall(r"```\n(.*?)```", text, re.DOTALL)
    ][:count]


def _tool_args(command, replacements):
    """(tool script, arguments) of a README command line, with paths replaced for the test."""
    for old, new in replacements.items():
        command = command.replace(old, new)
    words = shlex.split(command)
    assert words[0] == ".venv/bin/python" and words[1].startswith("tools/"), command
    return words[1].removeprefix("tools/"), words[2:]


def _assert_quoted(quoted, printed, replacements):
    """Every quoted line but "..." is printed, in the quoted order, times aside."""
    printed = [SECONDS.sub("T s", line) for line in printed]
    position = 0
    for line in quoted:
        if line == "...":
            continue
        for old, new in replacements.items():
            line = line.replace(old, new)
        line = SECONDS.sub("T s", line)
        assert line in printed[position:], f"README line not printed (in order): {line}"
        position = printed.index(line, position) + 1


@pytest.fixture
def replacements(tmp_path, request):
    name = f"_pytest_readme_{uuid.uuid4().hex[:8]}"
    request.addfinalizer(lambda: shutil.rmtree(ROOT / "savedmodels" / name, ignore_errors=True))
    return {
        "workdirs/tour_eval": str(tmp_path / "tour_eval"),
        "workdirs/tour": str(tmp_path / "tour"),
        "savedmodels/tour": f"savedmodels/{name}",
        "--name=tour": f"--name={name}",
    }


def test_the_tour_prints_what_the_readme_quotes(replacements):
    (train_command,), train_output = _blocks("### 1. Train", 2)
    script, args = _tool_args(train_command, replacements)
    proc = _run_tool(script, *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _assert_quoted(train_output, proc.stdout.splitlines(), replacements)

    commands, evaluation_output = _blocks("### 3. Export, evaluate, serve", 2)
    for command in commands:
        script, args = _tool_args(command, replacements)
        proc = _run_tool(script, *args)
        assert proc.returncode == 0, proc.stderr[-2000:]
    _assert_quoted(evaluation_output, proc.stdout.splitlines(), replacements)


def test_the_tox21_example_runs_as_written_and_says_what_it_drops(shared_data, tmp_path):
    pytest.importorskip("rdkit")
    shared_data("moleculenet/tox21.csv")
    heading = "Natively partial labels, Tox21's assays"
    command, output = _blocks(heading, 2)
    replacements = {"workdirs/tox21": str(tmp_path / "tox21")}
    script, args = _tool_args(" ".join(line.rstrip("\\ ") for line in command), replacements)
    proc = _run_tool(script, *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _assert_quoted(output, proc.stdout.splitlines(), replacements)
