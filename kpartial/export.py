"""SavedModel export: a `serve` signature returning per-class probabilities, with label assets.

The SavedModel at `savedmodels/<name>/` holds:
- signature `serve`: input `x` (float32 features [B, D] or [0, 255] pixels [B, H, W, 3]),
  output `probabilities` [B, C] (sigmoid of the network's logits);
- assets `label_names.txt` (one class per line, output order) and `thresholds.csv`
  (`label,threshold`: the per-class decision thresholds training ended with).
"""

import os
import shutil
import tempfile

import numpy as np
import pandas as pd
import tensorflow as tf


class _ServingModule(tf.Module):
    def __init__(self, network, asset_dir):
        super().__init__()
        self.network = network
        self.label_names = tf.saved_model.Asset(os.path.join(asset_dir, "label_names.txt"))
        self.thresholds = tf.saved_model.Asset(os.path.join(asset_dir, "thresholds.csv"))
        spec = tf.TensorSpec([None, *network.input_shape[1:]], tf.float32, name="x")
        self.serve = tf.function(self._serve, input_signature=[spec])

    def _serve(self, x):
        return {"probabilities": tf.sigmoid(tf.cast(self.network(x, training=False), tf.float32))}


def export_saved_model(network, label_names, thresholds, path):
    """Writes a SavedModel of `network` to `path` (replacing what is there); returns `path`."""
    thresholds = np.asarray(thresholds, dtype=np.float32)
    if len(label_names) != network.output_shape[-1] or thresholds.shape != (len(label_names),):
        raise ValueError(
            f"{len(label_names)} label names and {thresholds.shape} thresholds for a "
            f"network with {network.output_shape[-1]} outputs"
        )
    with tempfile.TemporaryDirectory() as asset_dir:
        with open(os.path.join(asset_dir, "label_names.txt"), "w") as f:
            f.write("".join(f"{name}\n" for name in label_names))
        pd.DataFrame({"label": list(label_names), "threshold": thresholds}).to_csv(
            os.path.join(asset_dir, "thresholds.csv"), index=False
        )
        module = _ServingModule(network, asset_dir)
        if os.path.exists(path):
            shutil.rmtree(path)
        tf.saved_model.save(module, path, signatures={"serve": module.serve})
    return path


def export_workdir(workdir, path):
    """Exports the network a training run left in `workdir` (see `kpartial.training`)."""
    import keras

    from kpartial import models  # noqa: F401 (registers custom layers for loading)

    network_path = os.path.join(workdir, "network.keras")
    if not os.path.isfile(network_path):
        raise ValueError(f"{network_path} not found: is {workdir} the workdir of a finished run?")
    network = keras.models.load_model(network_path, compile=False)
    with open(os.path.join(workdir, "label_names.txt")) as f:
        label_names = [line.rstrip("\n") for line in f]
    thresholds = np.load(os.path.join(workdir, "thresholds.npy"))
    return export_saved_model(network, label_names, thresholds, path)


def load_serving(path):
    """Loads an exported model: returns (serve function, label names, thresholds)."""
    loaded = tf.saved_model.load(path)
    assets = os.path.join(path, "assets")
    with open(os.path.join(assets, "label_names.txt")) as f:
        label_names = tuple(line.rstrip("\n") for line in f)
    thresholds = pd.read_csv(os.path.join(assets, "thresholds.csv"))["threshold"].to_numpy(
        np.float32
    )
    return loaded.signatures["serve"], label_names, thresholds
