"""SavedModel export: a `serve` signature returning per-class probabilities, with label assets.

The SavedModel at `savedmodels/<name>/` holds:
- signature `serve`: input `x` (float32 features [B, D] or [0, 255] pixels [B, H, W, 3]),
  output `probabilities` [B, C] (sigmoid of the network's logits);
- assets `label_names.txt` (one class per line, output order) and `thresholds.csv`
  (`label,threshold`: the per-class decision thresholds training ended with);
- asset `train_counts.json` (when the run recorded them): `{"train_examples": N,
  "train_positives": [one count per class, output order]}`, the training counts from which the
  propensities of PSP@k come, so evaluating the export reports PSP@k as training did;
- asset `kpartial_export.json`: the marker that kpartial wrote this folder, with the input shape
  (and an image model's image size, which `tools/evaluate.py` uses).

`evaluate_saved_model` (tools/evaluate.py) reports `evaluation.test_metrics` at the export's
thresholds: the same `map`, `cf1`, `of1`, ... as the run's metrics.json on the same test set.

Exports never destroy what kpartial did not write: an existing target is replaced only when asked
(`overwrite`) and only if it holds the marker. The SavedModel is written to a temporary sibling and
renamed into place, so a crash never leaves half a SavedModel under the final name; the next
export to that name removes what a killed one left and puts back an export it had moved aside
(`recover_interrupted_export`).
"""

import json
import os
import re
import shutil
import tempfile

import numpy as np
import pandas as pd
import tensorflow as tf

from kpartial import class_stats, data, evaluation, pipeline
from kpartial.workdir import ARTIFACTS, LOCK, process_alive, write_json


class _ServingModule(tf.Module):
    def __init__(self, network, asset_dir):
        super().__init__()
        self.network = network
        self.label_names = tf.saved_model.Asset(os.path.join(asset_dir, "label_names.txt"))
        self.thresholds = tf.saved_model.Asset(os.path.join(asset_dir, "thresholds.csv"))
        self.marker = tf.saved_model.Asset(os.path.join(asset_dir, MARKER))
        if os.path.isfile(os.path.join(asset_dir, TRAIN_COUNTS)):
            self.train_counts = tf.saved_model.Asset(os.path.join(asset_dir, TRAIN_COUNTS))
        spec = tf.TensorSpec([None, *network.input_shape[1:]], tf.float32, name="x")
        self.serve = tf.function(self._serve, input_signature=[spec])

    def _serve(self, x):
        # A NaN feature would otherwise give plausible-looking probabilities.
        x = tf.debugging.assert_all_finite(x, "serve: input x contains NaN or inf")
        return {"probabilities": tf.sigmoid(tf.cast(self.network(x, training=False), tf.float32))}


MARKER = "kpartial_export.json"
TRAIN_COUNTS = "train_counts.json"
# The value of `written_by` in the metrics.json that `evaluate_saved_model` writes.
EVALUATE_WRITER = "kpartial.export.evaluate_saved_model"
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")


class ExportError(ValueError):
    """An export target that must not be written; the message names it."""


def check_export_name(name):
    """Raises ExportError unless `name` is one path component: letters, digits, `-`, `_`, `.`."""
    if not NAME_PATTERN.fullmatch(name or "") or name in (".", ".."):
        raise ExportError(
            f"export name {name!r} must be one folder name (letters, digits, '-', '_', '.'; not "
            "'.' or '..'); use an export dir flag to write elsewhere"
        )
    return name


def is_kpartial_export(path):
    return os.path.isfile(os.path.join(path, "assets", MARKER))


def read_marker(path):
    """The marker of an export (input shape, image size, ...), {} for an export without one."""
    marker = os.path.join(path, "assets", MARKER)
    if not os.path.isfile(marker):
        return {}
    with open(marker) as f:
        return json.load(f)


def check_target(path, overwrite, own_workdir=None):
    """Raises ExportError if exporting to `path` would replace something it must not.

    With `own_workdir` (a resumed run exporting again), an export made from that workdir (its
    marker says so) may be replaced without `overwrite`: it is the run's own.
    """
    if not os.path.lexists(path):
        return
    own = own_workdir is not None and os.path.isdir(path) and not os.path.islink(path)
    if own and read_marker(path).get("workdir") == os.path.abspath(own_workdir):
        return
    if not overwrite:
        raise ExportError(f"export target {path} exists; pass --overwrite to replace it")
    if not os.path.isdir(path) or os.path.islink(path) or not is_kpartial_export(path):
        raise ExportError(
            f"export target {path} exists and is not a kpartial export (no assets/{MARKER}); "
            "not replacing it even with --overwrite"
        )


def export_saved_model(
    network,
    label_names,
    thresholds,
    path,
    overwrite=False,
    train_positives=None,
    num_train_examples=None,
    workdir=None,
    replace_own=False,
):
    """Writes a SavedModel of `network` to `path`; returns `path`.

    Args:
      network: a Keras model mapping inputs to logits.
      label_names: one name per output.
      thresholds: float [C] decision thresholds.
      path: the SavedModel folder.
      overwrite: replace an existing kpartial export at `path` (anything else is never replaced).
      train_positives: int [C] known training positives per class and
      num_train_examples: the number of training examples, both or neither: written as the asset
        `train_counts.json`, from which evaluating the export computes PSP@k.
      workdir: the run's workdir the network comes from, recorded in the marker.
      replace_own: replace an export of the same `workdir` without `overwrite` (a resumed run
        exporting again, `check_target`).

    Raises:
      ExportError: `path` exists and `overwrite` is off, or it is not a kpartial export.
      ValueError: the label names, thresholds or training positives do not match the outputs,
        or only one of `train_positives` and `num_train_examples` is given.
    """
    recover_interrupted_export(path)
    check_target(path, overwrite, workdir if replace_own else None)
    thresholds = np.asarray(thresholds, dtype=np.float32)
    if len(label_names) != network.output_shape[-1] or thresholds.shape != (len(label_names),):
        raise ValueError(
            f"{len(label_names)} label names and {thresholds.shape} thresholds for a "
            f"network with {network.output_shape[-1]} outputs"
        )
    counts = _train_counts(train_positives, num_train_examples, len(label_names))
    with tempfile.TemporaryDirectory() as asset_dir:
        with open(os.path.join(asset_dir, "label_names.txt"), "w") as f:
            f.write("".join(f"{name}\n" for name in label_names))
        pd.DataFrame({"label": list(label_names), "threshold": thresholds}).to_csv(
            os.path.join(asset_dir, "thresholds.csv"), index=False
        )
        input_shape = list(network.input_shape[1:])
        marker = {"format": "kpartial SavedModel", "version": 1, "input_shape": input_shape}
        if len(input_shape) == 3:
            marker["image_size"] = input_shape[:2]
        if workdir is not None:
            marker["workdir"] = os.path.abspath(workdir)
        with open(os.path.join(asset_dir, MARKER), "w") as f:
            json.dump(marker, f)
        if counts is not None:
            with open(os.path.join(asset_dir, TRAIN_COUNTS), "w") as f:
                json.dump(counts, f)
        module = _ServingModule(network, asset_dir)
        _save_then_rename(module, path)
    return path


def _train_counts(train_positives, num_train_examples, num_classes):
    """The `train_counts.json` content, or None when neither count is given.

    Raises:
      ValueError: only one is given, or they are not non-negative counts of `num_classes`.
    """
    if train_positives is None and num_train_examples is None:
        return None
    if train_positives is None or num_train_examples is None:
        raise ValueError("give both train_positives and num_train_examples, or neither")
    positives = np.asarray(train_positives)
    if (
        positives.shape != (num_classes,)
        or positives.dtype.kind not in "iu"
        or (positives < 0).any()
        or int(num_train_examples) < 1
    ):
        raise ValueError(
            f"train_positives must be {num_classes} non-negative integers and "
            f"num_train_examples >= 1; got shape {positives.shape} ({positives.dtype}) and "
            f"{num_train_examples}"
        )
    return {"train_examples": int(num_train_examples), "train_positives": positives.tolist()}


def _leftovers(parent, name, kind):
    """The `.NAME.KIND-PID-*` folders that exports by processes now dead left behind."""
    pattern = re.compile(rf"\.{re.escape(name)}\.{kind}-(\d+)-")
    found = []
    for entry in os.listdir(parent) if os.path.isdir(parent) else ():
        match = pattern.match(entry)
        if match and not process_alive(int(match.group(1))):
            found.append(os.path.join(parent, entry))
    return found


def recover_interrupted_export(path):
    """Cleans up after exports to `path` that were killed: removes their half-written
    `.NAME.tmp-PID-*` folders, and puts back a previous export a killed replacement had moved
    aside (`.NAME.old-PID-*/NAME`) when nothing took its place. Folders of live exports are
    left alone. Returns the folders it removed or restored from."""
    parent, name = os.path.split(os.path.abspath(path))
    handled = []
    for old in _leftovers(parent, name, "old"):
        kept = os.path.join(old, name)
        if os.path.isdir(kept) and not os.path.lexists(path):
            os.replace(kept, path)
        shutil.rmtree(old)
        handled.append(old)
    for tmp in _leftovers(parent, name, "tmp"):
        shutil.rmtree(tmp)
        handled.append(tmp)
    return handled


def _save_then_rename(module, path):
    parent, name = os.path.split(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-{os.getpid()}-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # a folder as mkdir makes it (mkdtemp's is its owner's only)
    try:
        tf.saved_model.save(module, tmp, signatures={"serve": module.serve})
        if os.path.lexists(path):
            old = tempfile.mkdtemp(prefix=f".{name}.old-{os.getpid()}-", dir=parent)
            os.replace(path, os.path.join(old, name))
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)


def export_workdir(workdir, path, overwrite=False, replace_own=False):
    """Exports the network a training run left in `workdir` (see `kpartial.training`).

    The export carries the run's network, label names and thresholds, and, where the run recorded
    them, its training counts (`workdir_train_counts`), so that evaluating it gives PSP@k.

    Args:
      workdir: the finished run's workdir.
      path: the SavedModel folder; neither the workdir nor a folder containing it.
      overwrite: replace an existing kpartial export at `path`.
      replace_own: replace an export of this workdir even without `overwrite` (a resumed run
        exporting again; `tools/train.py --resume`).

    Returns:
      `path`.

    Raises:
      ExportError: as `export_saved_model`, or when `path` is the workdir or contains it.
      ValueError: `workdir` holds no network.keras (not a finished run).
    """
    target = os.path.abspath(path)
    if os.path.commonpath([os.path.abspath(workdir), target]) == target:
        raise ExportError(f"export target {path} is or contains the workdir {workdir}")
    import keras

    from kpartial import models  # noqa: F401 (registers custom layers for loading)

    network_path = os.path.join(workdir, "network.keras")
    if not os.path.isfile(network_path):
        raise ValueError(f"{network_path} not found: is {workdir} the workdir of a finished run?")
    network = keras.models.load_model(network_path, compile=False)
    with open(os.path.join(workdir, "label_names.txt")) as f:
        label_names = [line.rstrip("\n") for line in f]
    thresholds = np.load(os.path.join(workdir, "thresholds.npy"))
    positives, num_examples = workdir_train_counts(workdir, label_names)
    return export_saved_model(
        network,
        label_names,
        thresholds,
        path,
        overwrite,
        positives,
        num_examples,
        workdir,
        replace_own,
    )


def workdir_train_counts(workdir, label_names):
    """The training counts a finished run recorded, for PSP@k.

    The positives are class_stats.csv's, the ones the run's PSP@k used; the number of examples is
    metrics.json's `train_examples` (written by `evaluation.test_metrics` when the run had the
    counts).

    Returns:
      (int64 [C] training positives per class, number of training examples), or (None, None)
      when the workdir does not record both.
    """
    stats_path = os.path.join(workdir, "class_stats.csv")
    metrics_path = os.path.join(workdir, "metrics.json")
    if not (os.path.isfile(stats_path) and os.path.isfile(metrics_path)):
        return None, None
    with open(metrics_path) as f:
        num_examples = json.load(f).get("train_examples")
    if num_examples is None:
        return None, None
    positives = class_stats.ClassStatistics.from_csv(stats_path, label_names).positives
    return positives, int(num_examples)


def read_train_counts(path):
    """The training counts an export recorded in `train_counts.json`.

    Returns:
      (int64 [C] training positives, number of training examples), or (None, None) for an export
      without `train_counts.json`.
    """
    counts = os.path.join(path, "assets", TRAIN_COUNTS)
    if not os.path.isfile(counts):
        return None, None
    with open(counts) as f:
        recorded = json.load(f)
    return np.asarray(recorded["train_positives"], np.int64), int(recorded["train_examples"])


def load_serving(path):
    """Loads an exported model.

    Returns:
      (the `serve` signature, tuple of label names, float32 [C] thresholds).
    """
    loaded = tf.saved_model.load(path)
    assets = os.path.join(path, "assets")
    with open(os.path.join(assets, "label_names.txt")) as f:
        label_names = tuple(line.rstrip("\n") for line in f)
    thresholds = pd.read_csv(os.path.join(assets, "thresholds.csv"))["threshold"].to_numpy(
        np.float32
    )
    return loaded.signatures["serve"], label_names, thresholds


# Said (in metrics.json's `left_out`, and by tools/evaluate.py) when an export lacks its counts.
NO_TRAIN_COUNTS = (
    f"{', '.join(evaluation.PROPENSITY_KEYS)} left out: the export records no training counts "
    f"(assets/{TRAIN_COUNTS}; exported before kpartial wrote them, or from a run without them)"
)


def evaluate_saved_model(
    model_path,
    test_data,
    batch_size=256,
    image_size=None,
    out_dir=None,
    data_options="",
    on_bad_input="error",
    overwrite=False,
):
    """Metrics of an exported SavedModel on `test_data` (FMT:PATH); optionally writes metrics.json.

    The metrics are `evaluation.test_metrics` at the export's thresholds, with PSP@k from the
    training counts the export records (left out, and said so in `left_out`, for an export without
    them): on the run's test set, the same `map`, `cf1`, `of1`, ... as the run's metrics.json.
    The test set is restricted to the model's classes when it has more (see
    `data.align_classes`); `data_options` are reader options "key=value,...". Image models
    are fed at the image size they were exported with; `image_size` (pixels), if given, must
    agree with it.

    Args:
      model_path: the SavedModel folder (a kpartial export).
      test_data: FMT:PATH of the test set.
      batch_size: prediction batch size.
      image_size: image side for image data; default: the export's.
      out_dir: if given, metrics.json is written there (see `check_metrics_target`).
      data_options, on_bad_input: as for `data.load_spec`.
      overwrite: replace a metrics.json that an earlier evaluation wrote in `out_dir`.

    Returns:
      The `test_metrics` dict with `model`, `test_data`, `image_size`, `skipped_input`, `note`,
      `written_by` (`EVALUATE_WRITER`) and, without training counts, `left_out`.

    Raises:
      DataError: the test data does not fit the model (classes, feature width), or is bad input.
      ExportError: `out_dir` must not receive this metrics.json (before anything is computed).
    """
    if out_dir:
        check_metrics_target(out_dir, overwrite)
    serve, label_names, thresholds = load_serving(model_path)
    test = _load_test_set(test_data, data_options, on_bad_input, label_names, model_path)
    input_shape = serve.structured_input_signature[1]["x"].shape.as_list()[1:]
    side = _check_inputs_fit(test, input_shape, test_data, model_path)
    if test.features is None:
        image_size = _image_side(model_path, side, image_size)
        # Images are verified after the cheaper checks that the data fits the model.
        test = data.verify_images(test, on_bad_input)
    dataset = pipeline.evaluation_dataset(test, batch_size, (image_size, image_size))
    scores = _export_scores(serve, dataset, test.labels)
    positives, num_train_examples = read_train_counts(model_path)
    result = evaluation.test_metrics(scores, thresholds, positives, num_train_examples)
    if positives is None:
        result["left_out"] = NO_TRAIN_COUNTS
    result.update(_evaluation_details(model_path, test_data, test, image_size))
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        write_json(os.path.join(out_dir, "metrics.json"), result)
    return result


def _load_test_set(test_data, data_options, on_bad_input, label_names, model_path):
    """The test set of `test_data`, restricted to the model's classes (`data.align_classes`)."""
    test = data.load_spec(test_data, data_options, on_bad_input)
    try:
        return data.align_classes(test, label_names, test_data)
    except data.DataError as e:
        raise data.DataError(f"{e} (model {model_path})") from None


def _image_side(model_path, side, image_size):
    """The image side to feed an image model: its fixed `side`, else its export's image size.

    Raises:
      DataError: `image_size` (if given) disagrees with it, or neither it nor `image_size` is known.
    """
    recorded = read_marker(model_path).get("image_size") or [None]
    trained_side = side or recorded[0]
    if image_size and trained_side and image_size != trained_side:
        raise data.DataError(
            f"image_size={image_size}: the model {model_path} takes "
            f"{trained_side} x {trained_side} images"
        )
    image_size = image_size or trained_side
    if not image_size:
        raise data.DataError(f"{model_path} does not record its image size: give image_size")
    return image_size


def _export_scores(serve, dataset, labels):
    """The `SparseScores` of the `serve` signature's probabilities on `dataset`.

    Batch by batch, keeping the scores at annotated entries only: no [N, C] array of scores or of
    labels (sparse test labels stay sparse).
    """
    return evaluation.stream_scores(
        lambda batch: serve(x=batch["x"])["probabilities"].numpy(),
        dataset,
        labels,
        from_logits=False,
    )


def _evaluation_details(model_path, test_data, test, image_size):
    """What an evaluation's result says besides the metrics: its inputs, its note, its writer."""
    return {
        "model": model_path,
        "test_data": test_data,
        "image_size": image_size if test.features is None else None,
        "skipped_input": test.skipped,
        "note": "metrics count only annotated test entries; cf1/of1 at the export's "
        "thresholds (thresholds.csv), cf1@0.5/of1@0.5 at 0.5",
        "written_by": EVALUATE_WRITER,
    }


def check_metrics_target(out_dir, overwrite=False):
    """Raises ExportError (one line) unless an evaluation may write `out_dir`/metrics.json.

    A training run's workdir (a folder holding any of `workdir.ARTIFACTS` other than
    metrics.json, or a run's lock) is refused: its metrics.json is the run's, and would mark an
    unfinished run finished. An existing metrics.json is replaced only with `overwrite`, and only
    if an evaluation wrote it (`written_by`).
    """
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ExportError(f"{out_dir} is a file, not a folder for metrics.json")
    run_files = [
        name
        for name in (*ARTIFACTS, LOCK)
        if name != "metrics.json" and os.path.lexists(os.path.join(out_dir, name))
    ]
    if run_files:
        raise ExportError(
            f"{out_dir} is a training run's workdir (it holds {', '.join(run_files[:3])}); "
            "not writing an evaluation's metrics.json there: give another folder"
        )
    path = os.path.join(out_dir, "metrics.json")
    if not os.path.lexists(path):
        return
    try:
        with open(path) as f:
            writer = json.load(f).get("written_by")
    except (OSError, ValueError, AttributeError):
        writer = None
    if writer != EVALUATE_WRITER:
        raise ExportError(
            f"{path} exists and no evaluation wrote it (a training run's metrics?); not "
            "replacing it even with --overwrite: give another folder"
        )
    if not overwrite:
        raise ExportError(f"{path} exists (an earlier evaluation); pass --overwrite to replace it")


def _check_inputs_fit(test, input_shape, test_data, model_path):
    """Raises DataError unless `test`'s inputs fit the model's; returns a fixed image side."""
    if test.features is not None:
        if len(input_shape) != 1 or input_shape[0] != test.features.shape[1]:
            raise data.DataError(
                f"{test_data} has {test.features.shape[1]} features per example but the model "
                f"{model_path} takes inputs of shape {input_shape}"
            )
        return None
    if len(input_shape) != 3:
        raise data.DataError(
            f"{test_data} holds images but the model {model_path} takes {input_shape[0]} features"
        )
    return input_shape[0]
