"""Per-epoch evaluation on the test set, logged for TensorBoard (annotated entries only)."""

import keras
import numpy as np

from kpartial import metrics
from kpartial.partial_model import predict_probabilities


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
    add to the logs, so every record carries what that epoch measured."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append({"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}})


def evaluate_saved_model(
    model_path, test_data, batch_size=256, image_size=224, out_dir=None, data_options=""
):
    """Metrics of an exported SavedModel on `test_data` (FMT:PATH); optionally writes metrics.json.

    The test set is restricted to the model's classes when it has more (see
    `training.align_classes`); `data_options` are reader options "key=value,...".
    """
    import json
    import os

    from kpartial import data, export, pipeline, training

    serve, label_names, thresholds = export.load_serving(model_path)
    fmt, path = data.parse_data_spec(test_data)
    test = data.load(fmt, path, **training.parse_options(data_options))
    try:
        test = training.align_classes(test, label_names, test_data)
    except data.DataError as e:
        raise data.DataError(f"{e} (model {model_path})") from None
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
            "note": "metrics count only annotated test entries",
        }
    )
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "metrics.json"), "w") as f:
            json.dump(result, f, indent=2)
    return result


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
