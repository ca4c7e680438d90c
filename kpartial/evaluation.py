"""Per-epoch evaluation on the test set, logged for TensorBoard (annotated entries only)."""

import json
import os

import keras
import numpy as np

from kpartial import metrics
from kpartial.partial_model import predict_probabilities
from kpartial.workdir import write_atomically


class EvaluationCallback(keras.callbacks.Callback):
    """Adds `test_map`, `test_cf1`, `test_of1` to the epoch logs every `every` epochs and at the end.

    Metrics count only annotated test entries (label != 0).
    """

    def __init__(self, dataset, labels, every=1, total_epochs=None):
        super().__init__()
        self.dataset, self.labels = dataset, np.asarray(labels)
        self.every, self.total_epochs = max(1, every), total_epochs
        self.last = {}
        # The predictions of the last evaluated epoch, so a run need not predict the test set again.
        self.probabilities, self.evaluated_epochs = None, 0

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every and epoch + 1 != self.total_epochs:
            return
        self.probabilities = predict_probabilities(self.model, self.dataset)
        self.evaluated_epochs = epoch + 1
        result = metrics.evaluate(self.probabilities, self.labels)
        self.last = {
            "test_map": result["map"],
            "test_cf1": result["cf1"],
            "test_of1": result["of1"],
        }
        if logs is not None:
            logs.update(self.last)


class EpochLog(keras.callbacks.Callback):
    """Collects each epoch's logs as `{"epoch": 1-based, **logs}`; goes after the callbacks that
    add to the logs, so every record carries what that epoch measured.

    With `path`, the records are also written there (atomically) after every epoch, so a resumed
    run's history continues the killed run's: `resume(epochs_done)` reads them back.
    """

    def __init__(self, path=None):
        super().__init__()
        self.path = path
        self.epochs = []

    def resume(self, epochs_done):
        """Takes the records of the first `epochs_done` epochs from `path` (a record written after
        the last checkpoint, by a run killed in between, is dropped)."""
        if not (self.path and os.path.isfile(self.path)):
            self.epochs = []
            return
        with open(self.path) as f:
            records = json.load(f)
        self.epochs = [record for record in records if record["epoch"] <= epochs_done]

    def on_epoch_end(self, epoch, logs=None):
        record = {k: v if isinstance(v, int) else float(v) for k, v in (logs or {}).items()}
        self.epochs.append({"epoch": epoch + 1, **record})
        if self.path:
            write_json(self.path, self.epochs)


def json_safe(value):
    """Replaces NaN/inf floats (e.g. mAP with no evaluable class) by None, recursively."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_json(path, value):
    """`value` as strict JSON (NaN/inf written as null), atomically (see `write_atomically`)."""
    write_atomically(path, json.dumps(json_safe(value), indent=2, allow_nan=False))


def evaluate_saved_model(
    model_path,
    test_data,
    batch_size=256,
    image_size=None,
    out_dir=None,
    data_options="",
    on_bad_input="error",
):
    """Metrics of an exported SavedModel on `test_data` (FMT:PATH); optionally writes metrics.json.

    The test set is restricted to the model's classes when it has more (see
    `training.align_classes`); `data_options` are reader options "key=value,...". Image models
    are fed at the image size they were exported with; `image_size` (pixels), if given, must
    agree with it.

    Raises:
      DataError: the test data does not fit the model (classes, feature width), or is bad input.
    """
    from kpartial import data, export, pipeline, training

    serve, label_names, thresholds = export.load_serving(model_path)
    fmt, path = data.parse_data_spec(test_data)
    test = data.load(fmt, path, on_bad_input=on_bad_input, **training.parse_options(data_options))
    try:
        test = training.align_classes(test, label_names, test_data)
    except data.DataError as e:
        raise data.DataError(f"{e} (model {model_path})") from None
    input_shape = serve.structured_input_signature[1]["x"].shape.as_list()[1:]
    side = _check_inputs_fit(test, input_shape, test_data, model_path)
    if test.features is None:
        recorded = export.read_marker(model_path).get("image_size") or [None]
        trained_side = side or recorded[0]
        if image_size and trained_side and image_size != trained_side:
            raise data.DataError(
                f"image_size={image_size}: the model {model_path} takes "
                f"{trained_side} x {trained_side} images"
            )
        image_size = image_size or trained_side
        if not image_size:
            raise data.DataError(f"{model_path} does not record its image size: give image_size")
        test = data.verify_images(test, on_bad_input)
    test_labels = test.dense_labels()
    dataset = pipeline.evaluation_dataset(test, batch_size, (image_size, image_size))
    probabilities = np.concatenate(
        [serve(x=batch["x"])["probabilities"].numpy() for batch in dataset]
    )
    result = metrics.evaluate(probabilities, test_labels)
    at_exported = metrics.f1_scores(probabilities, test_labels, threshold=thresholds)
    result.update(
        {
            "cf1_exported_thresholds": at_exported["cf1"],
            "of1_exported_thresholds": at_exported["of1"],
            "model": model_path,
            "test_data": test_data,
            "image_size": image_size if test.features is None else None,
            "skipped_input": test.skipped,
            "note": "metrics count only annotated test entries",
        }
    )
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        write_json(os.path.join(out_dir, "metrics.json"), result)
    return result


def _check_inputs_fit(test, input_shape, test_data, model_path):
    """Raises DataError unless `test`'s inputs fit the model's; returns a fixed image side."""
    from kpartial import data

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


def ranking_metrics(probabilities, labels, positive_counts, num_train_examples):
    """P@1/3/5, nDCG@3/5, PSP@1/3/5 (Jain et al. propensities from training positives) and
    top-3 CF1/OF1, all over annotated test entries."""
    propensity = metrics.propensities(positive_counts, num_train_examples)
    result = {f"p@{k}": metrics.precision_at_k(probabilities, labels, k) for k in (1, 3, 5)}
    result.update({f"ndcg@{k}": metrics.ndcg_at_k(probabilities, labels, k) for k in (3, 5)})
    result.update(
        {f"psp@{k}": metrics.psp_at_k(probabilities, labels, propensity, k) for k in (1, 3, 5)}
    )
    top3 = metrics.f1_scores_at_top_k(probabilities, labels, k=3)
    result.update({"cf1@top3": top3["cf1"], "of1@top3": top3["of1"]})
    return result


def write_ap_by_frequency(probabilities, labels, positive_counts, workdir, title=""):
    """ap_by_frequency.png in `workdir`, and the same picture as a TensorBoard image."""
    import os

    import tensorflow as tf

    png = metrics.plot_ap_by_frequency(
        metrics.per_class_average_precision(probabilities, labels),
        positive_counts,
        os.path.join(workdir, "ap_by_frequency.png"),
        title,
    )
    writer = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard", "plots"))
    with writer.as_default():
        tf.summary.image("ap_by_class_frequency", tf.io.decode_png(png)[None], step=0)
    writer.close()
