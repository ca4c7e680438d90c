"""Subprocess tests of tools/train.py, tools/evaluate.py and tools/export.py."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import uuid

import numpy as np
import pytest

from kpartial.data.readers import synthetic

ROOT = pathlib.Path(__file__).resolve().parents[1]
NUM_CLASSES = 8


def _write_tiny_npz(path, split):
    d = synthetic.make_imbalanced_features(
        num_examples=600, num_classes=NUM_CLASSES, num_features=16, split=split
    )
    np.savez(path, x=d.features, y=d.labels, label_names=np.array(d.label_names))
    return f"npz:{path}"


def _run_tool(script, *args, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _describe(proc):
    return f"rc={proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def specs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_data")
    return _write_tiny_npz(root / "train.npz", "train"), _write_tiny_npz(root / "test.npz", "test")


@pytest.fixture(scope="module")
def trained(specs, tmp_path_factory, request):
    """One tools/train.py run with --export_name; yields (workdir, export dir, process)."""
    train_spec, test_spec = specs
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
        "--verbose=0",
        "--hidden_units=32",
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
    for name in ("config.json", "class_stats.csv", "network.keras", "checkpoint/latest.weights.h5"):
        assert (workdir / name).is_file(), name
    assert (workdir / "tensorboard").is_dir()
    assert (export_dir / "saved_model.pb").is_file()
    assert f"exported SavedModel to savedmodels/{export_dir.name}" in proc.stdout


def test_evaluate_matches_training_metrics(trained, specs, tmp_path):
    workdir, export_dir, train_proc = trained
    assert train_proc.returncode == 0, _describe(train_proc)
    _, test_spec = specs
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
    proc = _run_tool(
        "export.py", f"--workdir={workdir}", f"--export_dir={tmp_path / 'again'}"
    )
    assert proc.returncode == 0, _describe(proc)
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
    assert "--backbone_weights" in proc.stderr
    # Flag parsing fails before main(): nothing is written, not even the workdir.
    assert not (tmp_path / "w").exists()


def test_zero_known_fraction_fails_at_flag_parsing(specs, tmp_path):
    # Regression: --known_fraction=0 used to pass flag parsing and die in keep_fraction.
    train_spec, test_spec = specs
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
    assert "--known_fraction" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "w").exists()


def test_compare_cli_writes_table_csv_and_plot(tmp_path, specs):
    import pandas as pd

    train_spec, test_spec = specs
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
