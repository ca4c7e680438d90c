"""Tests of kpartial.export: the `serve` signature, label assets and `load_serving`."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from kpartial import class_stats, export, models

ROOT = pathlib.Path(__file__).resolve().parents[1]
LABELS = ("sun", "big cat", "sky, blue")  # a space and a comma: csv quoting must survive.
THRESHOLDS = (0.5, 0.1, 0.875)


def _sigmoid(logits):
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))


@pytest.fixture(scope="module")
def mlp_export(tmp_path_factory):
    network = models.build_mlp(5, 3, hidden_units=(7,), dropout=0.2, seed=3)
    path = str(tmp_path_factory.mktemp("mlp_export") / "model")
    assert export.export_saved_model(network, LABELS, THRESHOLDS, path) == path
    x = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    return network, path, x


def test_serves_in_a_fresh_process(mlp_export):
    network, path, x = mlp_export
    code = (
        "import json, sys\n"
        "import tensorflow as tf\n"
        "serve = tf.saved_model.load(sys.argv[1]).signatures['serve']\n"
        "out = serve(x=tf.constant(json.loads(sys.argv[2]), tf.float32))\n"
        "print('RESULT ' + json.dumps({k: v.numpy().tolist() for k, v in out.items()}))\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(  # noqa: PLW1510 (the return code is asserted below)
        [sys.executable, "-c", code, path, json.dumps(x.tolist())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    outputs = json.loads(line[len("RESULT ") :])
    assert list(outputs) == ["probabilities"]
    probabilities = np.asarray(outputs["probabilities"])
    assert probabilities.shape == (4, 3)
    np.testing.assert_allclose(
        probabilities, _sigmoid(network.predict(x, verbose=0)), atol=1e-5, rtol=0
    )


def test_assets_are_exact(mlp_export):
    _, path, _ = mlp_export
    assets = pathlib.Path(path) / "assets"
    assert (assets / "label_names.txt").read_text() == "sun\nbig cat\nsky, blue\n"
    assert (assets / "thresholds.csv").read_text() == (
        'label,threshold\nsun,0.5\nbig cat,0.1\n"sky, blue",0.875\n'
    )


def test_load_serving(mlp_export):
    network, path, x = mlp_export
    serve, label_names, thresholds = export.load_serving(path)
    assert label_names == LABELS
    assert thresholds.dtype == np.float32
    np.testing.assert_array_equal(thresholds, np.asarray(THRESHOLDS, np.float32))
    probabilities = serve(x=tf.constant(x))["probabilities"].numpy()
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(
        probabilities, _sigmoid(network.predict(x, verbose=0)), atol=1e-5, rtol=0
    )
    # Batch size is free: one row serves too.
    assert serve(x=tf.constant(x[:1]))["probabilities"].shape == (1, 3)


def test_export_replaces_an_existing_export(tmp_path):
    network = models.build_mlp(2, 2, hidden_units=(), dropout=0.0, seed=0)
    path = str(tmp_path / "model")
    export.export_saved_model(network, ["a", "b"], [0.5, 0.5], path)
    (tmp_path / "model" / "stale.txt").write_text("left over")
    with pytest.raises(export.ExportError, match="exists; pass --overwrite"):
        export.export_saved_model(network, ["c", "d"], [0.25, 0.75], path)
    export.export_saved_model(network, ["c", "d"], [0.25, 0.75], path, overwrite=True)
    assert not (tmp_path / "model" / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary left behind
    _, names, thresholds = export.load_serving(path)
    assert names == ("c", "d")
    np.testing.assert_array_equal(thresholds, np.float32([0.25, 0.75]))


def _dead_pid():
    """A pid no process has: a child that already exited (and was reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_next_export_cleans_up_after_killed_ones(tmp_path):
    """A killed export leaves `.NAME.tmp-PID-*`, or (killed while replacing) the previous export
    in `.NAME.old-PID-*/NAME` and nothing at NAME: the next export removes the first and puts the
    second back (then refuses to replace it without --overwrite); a live export's are kept."""
    network = models.build_mlp(2, 2, hidden_units=(), dropout=0.0, seed=0)
    path = tmp_path / "model"
    export.export_saved_model(network, ["a", "b"], [0.5, 0.5], str(path))
    dead = _dead_pid()
    half = tmp_path / f".model.tmp-{dead}-x1"
    half.mkdir()
    (half / "saved_model.pb").write_text("half")
    aside = tmp_path / f".model.old-{dead}-x2"
    aside.mkdir()
    path.rename(aside / "model")  # killed between moving the old export aside and renaming
    live = tmp_path / f".model.tmp-{os.getpid()}-x3"  # this process: an export in progress
    live.mkdir()
    with pytest.raises(export.ExportError, match="exists; pass --overwrite"):
        export.export_saved_model(network, ["c", "d"], [0.25, 0.75], str(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "model"]
    assert export.load_serving(str(path))[1] == ("a", "b")  # the previous export is back


def test_mismatched_label_count_raises(tmp_path):
    network = models.build_mlp(5, 3, hidden_units=(4,), dropout=0.0)
    with pytest.raises(ValueError, match="2 label names"):
        export.export_saved_model(network, ["a", "b"], [0.5, 0.5], str(tmp_path / "m1"))
    with pytest.raises(ValueError, match="3 outputs"):
        export.export_saved_model(network, ["a", "b", "c"], [0.5, 0.5], str(tmp_path / "m2"))
    assert not (tmp_path / "m1").exists() and not (tmp_path / "m2").exists()


def test_export_workdir_without_network_raises(tmp_path):
    with pytest.raises(ValueError, match="network.keras"):
        export.export_workdir(str(tmp_path), str(tmp_path / "out"))


def test_image_model_serves_raw_pixels(tmp_path):
    network = models.build_image_model("mobilenet_v3_small", 3, image_size=(32, 32))
    path = export.export_saved_model(
        network, ["a", "b", "c"], [0.5, 0.5, 0.5], str(tmp_path / "image_model")
    )
    x = np.random.default_rng(1).uniform(0.0, 255.0, (2, 32, 32, 3)).astype(np.float32)
    serve, names, _ = export.load_serving(path)
    assert names == ("a", "b", "c")
    assert serve.structured_input_signature[1]["x"].shape.as_list() == [None, 32, 32, 3]
    probabilities = serve(x=tf.constant(x))["probabilities"].numpy()
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(
        probabilities, _sigmoid(network.predict(x, verbose=0)), atol=1e-5, rtol=0
    )


# ----------------------------------------------------------------------------
# Training counts and evaluating an export: the report training writes


def _npz_test_set(path, num_examples=120, seed=0):
    """An npz test set for a 5-feature, 3-class network (classes a, b, c); returns (spec, x, y)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_examples, 5)).astype(np.float32)
    y = rng.choice(np.array([-1, 0, 1], np.int8), size=(num_examples, 3), p=[0.5, 0.2, 0.3])
    y[:, 0] = np.where(y[:, 0] == 0, -1, y[:, 0])  # every row has a known label
    np.savez(path, x=x, y=y, label_names=np.array(["a", "b", "c"]))
    return f"npz:{path}", x, y


@pytest.fixture(scope="module")
def counted_export(tmp_path_factory):
    """A 3-class export with training counts, and one of the same network without."""
    folder = tmp_path_factory.mktemp("counted")
    network = models.build_mlp(5, 3, hidden_units=(6,), dropout=0.0, seed=1)
    thresholds = [0.3, 0.5, 0.7]
    counted = export.export_saved_model(
        network, ["a", "b", "c"], thresholds, str(folder / "counted"), False, [40, 3, 0], 200
    )
    bare = export.export_saved_model(network, ["a", "b", "c"], thresholds, str(folder / "bare"))
    return network, counted, bare, np.float32(thresholds)


def test_training_counts_travel_as_an_asset(counted_export):
    _, counted, bare, _ = counted_export
    asset = pathlib.Path(counted) / "assets" / export.TRAIN_COUNTS
    assert json.loads(asset.read_text()) == {"train_examples": 200, "train_positives": [40, 3, 0]}
    positives, num_examples = export.read_train_counts(counted)
    np.testing.assert_array_equal(positives, [40, 3, 0])
    assert num_examples == 200
    assert not (pathlib.Path(bare) / "assets" / export.TRAIN_COUNTS).exists()
    assert export.read_train_counts(bare) == (None, None)


def test_training_counts_are_both_given_and_fit_the_outputs(tmp_path):
    network = models.build_mlp(5, 3, hidden_units=(), dropout=0.0)
    with pytest.raises(ValueError, match="both train_positives and num_train_examples"):
        export.export_saved_model(network, "abc", [0.5] * 3, str(tmp_path / "m"), False, [1, 2, 3])
    with pytest.raises(ValueError, match="3 non-negative integers"):
        export.export_saved_model(network, "abc", [0.5] * 3, str(tmp_path / "m"), False, [1, 2], 9)
    assert not (tmp_path / "m").exists()


def test_evaluation_is_test_metrics_at_the_exported_thresholds(counted_export, tmp_path):
    from tests import dense_reference

    network, counted, bare, thresholds = counted_export
    spec, x, y = _npz_test_set(tmp_path / "test.npz")
    probabilities = tf.sigmoid(network(x, training=False)).numpy()
    expected = dense_reference.test_metrics(y, probabilities, thresholds, [40, 3, 0], 200)
    result = export.evaluate_saved_model(counted, spec, batch_size=32)
    assert set(expected) <= set(result)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-6, nan_ok=True), key
    assert "left_out" not in result and result["written_by"] == export.EVALUATE_WRITER
    # Without the counts: the same numbers, PSP@k left out and said so.
    without = export.evaluate_saved_model(bare, spec, batch_size=32)
    assert not {"psp@1", "psp@3", "psp@5", "train_examples"} & set(without)
    assert without["left_out"] == export.NO_TRAIN_COUNTS
    assert "psp@1, psp@3, psp@5 left out" in without["left_out"]
    for key in set(without) - {"model", "left_out"}:
        assert without[key] == result[key] or without[key] != without[key], key


def _fake_workdir(path, network, train_examples=None):
    path.mkdir()
    network.save(path / "network.keras")
    (path / "label_names.txt").write_text("a\nb\nc\n")
    np.save(path / "thresholds.npy", np.float32([0.4, 0.5, 0.6]))
    positives, negatives = np.array([7, 0, 2]), np.array([5, 9, 1])
    class_stats.ClassStatistics(
        ("a", "b", "c"), positives, negatives, (positives + 1.0) / (positives + negatives + 2.0)
    ).to_csv(path / "class_stats.csv")
    metrics = {"map": 0.5} if train_examples is None else {"map": 0.5, "train_examples": 30}
    (path / "metrics.json").write_text(json.dumps(metrics))
    return path


def test_export_workdir_carries_the_runs_training_counts(tmp_path):
    network = models.build_mlp(5, 3, hidden_units=(4,), dropout=0.0, seed=2)
    run = _fake_workdir(tmp_path / "run", network, train_examples=30)
    path = export.export_workdir(str(run), str(tmp_path / "model"))
    positives, num_examples = export.read_train_counts(path)
    np.testing.assert_array_equal(positives, [7, 0, 2])
    assert num_examples == 30
    # A run from before metrics.json recorded train_examples: exported without the counts.
    old = _fake_workdir(tmp_path / "old", network)
    assert export.workdir_train_counts(str(old), ["a", "b", "c"]) == (None, None)
    path = export.export_workdir(str(old), str(tmp_path / "old_model"))
    assert export.read_train_counts(path) == (None, None)


def test_a_run_exports_again_over_its_own_export_only(tmp_path):
    """A resumed run re-exports to its target without --overwrite when the export there came
    from its own workdir (the marker records it); another run's export is still refused."""
    network = models.build_mlp(5, 3, hidden_units=(4,), dropout=0.0, seed=2)
    run = _fake_workdir(tmp_path / "run", network, train_examples=30)
    other = _fake_workdir(tmp_path / "other", network, train_examples=30)
    path = export.export_workdir(str(run), str(tmp_path / "model"))
    assert export.read_marker(path)["workdir"] == str(run.resolve())
    export.check_target(path, False, str(run))  # tools/train.py --resume's check before training
    assert export.export_workdir(str(run), path, replace_own=True) == path
    with pytest.raises(export.ExportError, match="exists; pass --overwrite"):
        export.export_workdir(str(other), path, replace_own=True)
    with pytest.raises(export.ExportError, match="exists; pass --overwrite"):
        export.export_workdir(str(run), path)  # not resuming: a second export is refused


def test_evaluation_never_writes_over_a_runs_metrics(counted_export, tmp_path):
    _, counted, _, _ = counted_export
    spec, _, _ = _npz_test_set(tmp_path / "test.npz", num_examples=20)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    with pytest.raises(export.ExportError, match="is a training run's workdir .*config.json"):
        export.evaluate_saved_model(counted, spec, out_dir=str(run), overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]
    # A metrics.json that no evaluation wrote (a run's, copied): never replaced.
    copied = tmp_path / "copied"
    copied.mkdir()
    (copied / "metrics.json").write_text('{"map": 0.5}')
    with pytest.raises(export.ExportError, match="no evaluation wrote it"):
        export.evaluate_saved_model(counted, spec, out_dir=str(copied), overwrite=True)
    assert (copied / "metrics.json").read_text() == '{"map": 0.5}'
    # An evaluation's: replaced with overwrite only.
    out = tmp_path / "eval"
    export.evaluate_saved_model(counted, spec, out_dir=str(out))
    written = json.loads((out / "metrics.json").read_text())
    assert written["written_by"] == export.EVALUATE_WRITER and written["train_examples"] == 200
    with pytest.raises(export.ExportError, match="pass --overwrite"):
        export.evaluate_saved_model(counted, spec, out_dir=str(out))
    export.evaluate_saved_model(counted, spec, out_dir=str(out), overwrite=True)


def test_evaluate_tool_refuses_a_runs_workdir_in_one_line(counted_export, tmp_path):
    from tests.helpers import run_tool_in_subprocess

    _, counted, _, _ = counted_export
    spec, _, _ = _npz_test_set(tmp_path / "test.npz", num_examples=20)
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text('{"map": 0.5}')
    (run / "network.keras").write_text("")
    proc = run_tool_in_subprocess(
        "evaluate.py", f"--model={counted}", f"--test_data={spec}", f"--out={run}", "--overwrite"
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"error: {run} is a training run's workdir"), line
    assert (run / "metrics.json").read_text() == '{"map": 0.5}'
