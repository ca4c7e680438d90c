"""Tests of kpartial.export: the `serve` signature, label assets and `load_serving`."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from kpartial import export, models

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
