"""Subprocess tests of the tools: what they write, and the console as a user meets it."""

import json
import os
import pty
import re
import shutil
import subprocess
import sys
import uuid

import pytest

from tests.helpers import NUM_CLASSES, ROOT
from tests.helpers import run_tool_in_subprocess as _run_tool


def _describe(proc):
    return f"rc={proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def trained(tiny_npz, tmp_path_factory, request):
    """One tools/train.py run with --export_name; yields (workdir, export dir, process)."""
    train_spec, test_spec = tiny_npz
    workdir = tmp_path_factory.mktemp("cli_train") / "run"
    name = f"_pytest_cli_{uuid.uuid4().hex[:10]}"
    export_dir = ROOT / "savedmodels" / name
    request.addfinalizer(lambda: shutil.rmtree(export_dir, ignore_errors=True))
    proc = _run_tool(
        "train.py",
        f"--train_data={train_spec}",
        f"--test_data={test_spec}",
        "--epochs=3",
        "--known_fraction=0.1",
        f"--workdir={workdir}",
        f"--export_name={name}",
        "--hidden_units=32",
        "--pseudo_start_epoch=1",
        tf_log_level=None,
    )
    return workdir, export_dir, proc


def test_train_writes_workdir_and_export(trained):
    workdir, export_dir, proc = trained
    assert proc.returncode == 0, _describe(proc)
    flag_lines = (workdir / "flags.txt").read_text().splitlines()
    assert "--epochs=3" in flag_lines
    assert "--hidden_units=32" in flag_lines
    assert f"--workdir={workdir}" in flag_lines
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["epochs"] == 3
    assert metrics["method"] == "kpartial"
    assert 0.0 <= metrics["map"] <= 1.0
    # The default kpartial run trains once (`--auto_tune=auto` trains two candidates).
    assert "auto_tune" not in metrics and not (workdir / "auto_tune").exists()
    for name in ("config.json", "class_stats.csv", "network.keras", "thresholds.csv"):
        assert (workdir / name).is_file(), name
    assert (workdir / "checkpoint/latest.weights.h5").is_file()
    assert (workdir / "tensorboard").is_dir()
    assert (export_dir / "saved_model.pb").is_file()
    assert f"exported SavedModel to savedmodels/{export_dir.name}" in proc.stdout
    # The last line names where everything went.
    assert proc.stdout.splitlines()[-1] == (
        f"workdir {workdir}; exported SavedModel to savedmodels/{export_dir.name}"
    )


def test_train_starts_quiet_and_prints_one_line_per_epoch_into_a_pipe(trained):
    workdir, _, proc = trained
    assert proc.returncode == 0, _describe(proc)
    assert proc.stderr == ""  # no TensorFlow banner, no absl INFO lines, no Python warnings
    assert "--verbose=auto" in (workdir / "flags.txt").read_text().splitlines()
    # --verbose=auto into a pipe: one short line per epoch with the right step count (600
    # examples in batches of 256, the remainder dropped).
    epoch_lines = [line for line in proc.stdout.splitlines() if re.match(r"epoch \d+/", line)]
    assert len(epoch_lines) == 3, proc.stdout
    assert all(" - 2 steps - " in line for line in epoch_lines)
    assert "━" not in proc.stdout
    longest = max(proc.stdout.replace(str(workdir), "W").splitlines(), key=len)
    assert len(longest) <= 200, longest


def test_evaluate_matches_training_metrics(trained, tiny_npz, tmp_path):
    workdir, export_dir, train_proc = trained
    assert train_proc.returncode == 0, _describe(train_proc)
    _, test_spec = tiny_npz
    out = tmp_path / "eval"
    proc = _run_tool(
        "evaluate.py",
        f"--model=savedmodels/{export_dir.name}",
        f"--test_data={test_spec}",
        f"--out={out}",
    )
    assert proc.returncode == 0, _describe(proc)
    evaluated = json.loads((out / "metrics.json").read_text())
    trained_metrics = json.loads((workdir / "metrics.json").read_text())
    assert evaluated["map"] == pytest.approx(trained_metrics["map"], abs=1e-5)
    assert evaluated["cf1"] == pytest.approx(trained_metrics["cf1"], abs=1e-5)
    assert evaluated["of1"] == pytest.approx(trained_metrics["of1"], abs=1e-5)
    assert (
        evaluated["annotated_entries"] == trained_metrics["annotated_entries"] == 600 * NUM_CLASSES
    )
    assert f"mAP={evaluated['map']:.4f}" in proc.stdout


def test_export_tool(trained, tmp_path):
    workdir, export_dir, train_proc = trained
    assert train_proc.returncode == 0, _describe(train_proc)
    # At the level the Makefile sets: still no native lines, and no SavedModel INFO records.
    proc = _run_tool(
        "export.py", f"--workdir={workdir}", f"--export_dir={tmp_path / 'again'}", tf_log_level="2"
    )
    assert proc.returncode == 0, _describe(proc)
    assert proc.stderr == ""
    target = tmp_path / "again"
    assert (target / "saved_model.pb").is_file()
    assert (
        (target / "assets" / "label_names.txt").read_text()
        == (export_dir / "assets" / "label_names.txt").read_text()
        == "".join(f"class_{c:02d}\n" for c in range(NUM_CLASSES))
    )
    assert (target / "assets" / "thresholds.csv").read_text() == (
        export_dir / "assets" / "thresholds.csv"
    ).read_text()
    assert f"exported SavedModel to {target}" in proc.stdout


def test_unknown_data_format_fails(tmp_path):
    proc = _run_tool(
        "train.py", "--train_data=nosuchfmt:x", f"--workdir={tmp_path / 'w'}", "--verbose=0"
    )
    assert proc.returncode != 0
    assert "nosuchfmt" in proc.stderr
    assert "unknown format" in proc.stderr
    assert not (tmp_path / "w" / "metrics.json").exists()


def test_missing_npz_fails_naming_the_file(tmp_path):
    proc = _run_tool(
        "train.py", "--train_data=npz:/no/such.npz", f"--workdir={tmp_path / 'w'}", "--verbose=0"
    )
    assert proc.returncode != 0
    assert "/no/such.npz" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "w" / "metrics.json").exists()


def test_missing_backbone_weights_fails_at_flag_parsing(tmp_path):
    proc = _run_tool(
        "train.py", "--backbone_weights=/no/file.h5", f"--workdir={tmp_path / 'w'}", "--verbose=0"
    )
    assert proc.returncode != 0
    assert "Flags parsing error" in proc.stderr
    assert "backbone_weights" in proc.stderr
    # Flag parsing fails before main(): nothing is written, not even the workdir.
    assert not (tmp_path / "w").exists()


def test_zero_known_fraction_fails_at_flag_parsing(tiny_npz, tmp_path):
    # Regression: --known_fraction=0 used to pass flag parsing and die in keep_fraction.
    train_spec, test_spec = tiny_npz
    proc = _run_tool(
        "train.py",
        f"--train_data={train_spec}",
        f"--test_data={test_spec}",
        "--known_fraction=0",
        f"--workdir={tmp_path / 'w'}",
        "--verbose=0",
    )
    assert proc.returncode != 0
    assert "Flags parsing error" in proc.stderr
    assert "known_fraction" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "w").exists()


def test_compare_cli_writes_table_csv_and_plot(tmp_path, tiny_npz):
    import pandas as pd

    train_spec, test_spec = tiny_npz
    out = tmp_path / "cmp"
    proc = _run_tool(
        "compare.py",
        f"--train_data={train_spec}",
        f"--test_data={test_spec}",
        "--methods=ignore,asl",
        "--known_fractions=0.5",
        "--seeds=1,2",
        "--epochs=1",
        "--verbose=0",
        f"--out={out}",
    )
    assert proc.returncode == 0, _describe(proc)
    rows = pd.read_csv(out / "results.csv")
    assert sorted(rows["variant"]) == ["asl", "asl", "ignore", "ignore"]
    assert "| ignore | " in (out / "results.md").read_text()
    assert (out / "map_by_known_fraction.png").read_bytes()[:4] == b"\x89PNG"
    bad = _run_tool("compare.py", "--methods=nope", f"--out={out}")
    assert bad.returncode != 0 and "--methods" in bad.stderr


def test_train_shows_keras_progress_bar_on_a_terminal(tiny_npz, tmp_path):
    """--verbose=auto with a terminal as stdout: Keras' own progress bar (verbose=1)."""
    train_spec, test_spec = tiny_npz
    controller, terminal = pty.openpty()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    args = [f"--train_data={train_spec}", f"--test_data={test_spec}", "--epochs=1"]
    with subprocess.Popen(
        [sys.executable, str(ROOT / "tools" / "train.py"), *args, "--hidden_units=8"]
        + ["--pseudo_labels=off", f"--workdir={tmp_path / 'w'}"],
        cwd=ROOT,
        env=env,
        stdout=terminal,
        stderr=subprocess.PIPE,
    ) as proc:
        os.close(terminal)
        shown = b""
        while chunk := _read(controller):
            shown += chunk
        stderr = proc.stderr.read().decode()
    os.close(controller)
    assert proc.returncode == 0, stderr
    text = shown.decode(errors="replace")
    assert "2/2" in text and "━" in text  # the bar, with the right step count


def _read(fd):
    try:
        return os.read(fd, 65536)
    except OSError:  # the terminal closed: the process ended
        return b""


def test_train_helpshort_groups_flags_and_lists_every_method():
    from kpartial import losses

    proc = _run_tool("train.py", "--helpshort")
    assert proc.returncode == 1, _describe(proc)  # absl's help exits 1
    headings = re.findall(r"^(\S[^\n]*):$", proc.stdout, re.MULTILINE)
    assert headings[-7:] == [
        "data",
        "loss",
        "pseudo labels",
        "pruning",
        "model",
        "runtime",
        "output",
    ]
    groups = dict(
        zip(headings[-7:], re.split(r"^\S[^\n]*:$", proc.stdout, flags=re.MULTILINE)[-7:])
    )
    assert "--train_data:" in groups["data"] and "--workdir:" in groups["output"]
    assert "--prune_schedule:" in groups["pruning"] and "--epochs:" in groups["runtime"]
    method_help = " ".join(groups["loss"].split("--method:")[1].split("(default:")[0].split())
    registry = getattr(losses, "LOSSES", None) or losses.METHODS
    for name in registry:
        assert re.search(rf"[;:] {name}\b", method_help), name  # every method, with its words
    assert proc.stderr == ""
    compare = _run_tool("compare.py", "--helpshort")
    assert "--methods:" in compare.stdout and "\nruntime:\n" in compare.stdout


def test_pseudo_start_at_or_after_epochs_is_a_flag_error(tiny_npz, tmp_path):
    train_spec, test_spec = tiny_npz
    data_flags = (f"--train_data={train_spec}", f"--test_data={test_spec}")
    proc = _run_tool(
        "train.py", *data_flags, "--epochs=5", "--pseudo_start_epoch=5", f"--workdir={tmp_path}/w"
    )
    assert proc.returncode == 1
    assert "Flags parsing error" in proc.stderr and "pseudo_start_epoch" in proc.stderr
    assert not (tmp_path / "w").exists()
    # Without pseudo labels (--method=ignore) the same flags parse; the run gets to the data.
    proc = _run_tool(
        "train.py",
        "--train_data=npz:/no/such.npz",
        "--method=ignore",
        "--epochs=5",
        "--pseudo_start_epoch=5",
        f"--workdir={tmp_path}/w",
    )
    assert proc.returncode == 1 and proc.stderr.startswith("error: /no/such.npz"), _describe(proc)


@pytest.mark.parametrize(
    "script, flags, names",
    [
        ("train.py", ["--train_data=npz:/no/such.npz", "--workdir={tmp}/w"], "/no/such.npz"),
        ("compare.py", ["--train_data=npz:/no/such.npz", "--out={tmp}/o"], "/no/such.npz"),
        ("simulate.py", ["--data=npz:/no/such.npz", "--fraction=0.5"], "/no/such.npz"),
        ("simulate.py", ["--data=nosuchfmt:x", "--fraction=0.5"], "nosuchfmt"),
        ("make_tfrecords.py", ["--data=npz:/no/such.npz", "--out={tmp}/r"], "/no/such.npz"),
        ("evaluate.py", ["--model={model}", "--test_data=npz:/no/such.npz"], "/no/such.npz"),
        ("export.py", ["--workdir={tmp}/nothing", "--export_dir={tmp}/e"], "nothing"),
        ("demo.py", ["--workdir={tmp}/a_file", "--epochs=12"], "a_file"),
    ],
)
def test_a_data_error_is_one_line(script, flags, names, trained, tmp_path):
    """Every tool: bad data (or a bad folder) is `error: ...` alone on stderr, exit status 1."""
    (tmp_path / "a_file").write_text("x")
    model = f"savedmodels/{trained[1].name}"
    proc = _run_tool(script, *(f.format(tmp=tmp_path, model=model) for f in flags))
    assert proc.returncode == 1, _describe(proc)
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: ") and names in line


def test_a_bad_image_found_during_training_is_one_line(tmp_path):
    """With --noverify_images a file that is not an image fails when its batch is built: one
    line naming the file and the flag, exit 1, not TensorFlow's traceback."""
    from PIL import Image

    rows = ["image,a,b"]
    for i in range(8):
        Image.new("RGB", (20, 20), (30 * i, 20, 90)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{1 if i % 2 else -1},{-1 if i % 2 else 1}")
    (tmp_path / "3.png").write_text("not an image")
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    proc = _run_tool(
        "train.py",
        f"--train_data=manifest:{tmp_path / 'train.csv'}",
        "--train_data_options=image_column=image",
        "--image_size=32",
        "--noverify_images",
        "--epochs=1",
        "--batch_size=4",
        "--validation_fraction=0",
        "--test_fraction=0.25",
        "--select_epoch=last",
        f"--workdir={tmp_path / 'run'}",
    )
    assert proc.returncode == 1, _describe(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, _describe(proc)
    assert "not an image" in lines[0] and "3.png" in lines[0] and "--verify_images" in lines[0]
