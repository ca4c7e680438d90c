"""Evaluation of a run: per-epoch evaluation and history, the test report and its plot.

The callbacks evaluate the validation or test set during training, keep the best epoch's weights
and record each epoch's logs; `test_metrics` reports a test set's metrics, `plot_ap_by_frequency`
draws its AP by class frequency (annotated entries only) and `write_ap_by_frequency` writes that
plot to the run's folder and TensorBoard.

`test_metrics` is the one report: a training run's metrics.json and `export.evaluate_saved_model`
(tools/evaluate.py) both write it, so a key means the same number in both. Evaluating an
exported model is `export`'s job.

Test sets are evaluated as a stream: each batch's scores are kept at its annotated entries only
(`sparse_scores.StreamingEvaluation`), and its labels are looked up by example id, so neither the
scores nor the labels of the test set are ever an [N, C] array.
"""

import io
import json
import os
import weakref

import keras
import numpy as np

from kpartial import metrics, pipeline
from kpartial.partial_model import network_of
from kpartial.sparse_scores import StreamingEvaluation
from kpartial.workdir import replace_atomically, weights_file_bytes, write_json


def stream_scores(predict, dataset, labels, from_logits=True):
    """The `sparse_scores.SparseScores` of `predict` on `dataset`, one batch at a time.

    Args:
      predict: maps a batch `{"x", "id"}` to its [B, C] logits (or probabilities).
      dataset: an evaluation dataset (`pipeline.evaluation_dataset`): batches in example order.
      labels: the dataset's int8 [N, C] labels or `SparseLabels`.
      from_logits: whether `predict` returns logits.
    """
    lookup = pipeline.label_lookup(labels)
    streaming = StreamingEvaluation(labels.shape[1])
    for batch in dataset:
        streaming.add(lookup(batch["id"]).numpy(), predict(batch), from_logits)
    return streaming.result()


def model_scores(model, dataset, labels):
    """`stream_scores` of a Keras model of logits: float32 sigmoid scores at annotated entries.

    The model is called on this process's device, not through its distribution strategy (whose
    `predict` would split or replicate batches across replicas and workers).
    """
    return stream_scores(logits_function(model), dataset, labels)


_COMPILED = weakref.WeakKeyDictionary()


def logits_function(model):
    """A compiled `batch -> logits [B, C]` of `model`, compiled once per network.

    A `PartialLabelModel` is scored by its network (`partial_model.network_of`).
    """
    import tensorflow as tf

    network = network_of(model)
    if network not in _COMPILED:
        _COMPILED[network] = tf.function(
            lambda x: network(x, training=False), reduce_retracing=True, autograph=False
        )
    logits = _COMPILED[network]
    return lambda batch: logits(batch["x"]).numpy()


class EvaluationCallback(keras.callbacks.Callback):
    """Adds `{prefix}_map`, `_cf1`, `_of1` to the epoch logs every `every` epochs and at the end.

    Metrics count only annotated entries (label != 0), with every class's threshold at 0.5.

    Args:
      dataset: the evaluated set's evaluation dataset (`pipeline.evaluation_dataset`).
      labels: the evaluated set's int8 [N, C] labels or `SparseLabels`.
      every: evaluate every this many epochs.
      total_epochs: the run's last epoch, always evaluated; None = only every `every` epochs.
      prefix: "val" for the validation split (monitoring and epoch selection), "test" for the
        test set (monitoring only, on request: nothing in training reads it).
    """

    def __init__(self, dataset, labels, every=1, total_epochs=None, prefix="test"):
        super().__init__()
        self.dataset, self.labels, self.prefix = dataset, labels, prefix
        self.every, self.total_epochs = max(1, every), total_epochs
        self.last = {}

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every and epoch + 1 != self.total_epochs:
            return
        result = model_scores(self.model, self.dataset, self.labels).evaluate()
        self.last = {f"{self.prefix}_{key}": result[key] for key in ("map", "cf1", "of1")}
        if logs is not None:
            logs.update(self.last)


class BestEpoch(keras.callbacks.Callback):
    """Keeps the network weights of the epoch with the highest `monitor` (`val_map`).

    Goes after the validation callback that puts `monitor` into the logs. With `path` (a run's
    `checkpoint/best.weights.h5`) the weights are written there, atomically, so a resumed run
    keeps them; without, they are kept in memory. `restore(model)` loads them into the network.
    """

    def __init__(self, monitor="val_map", path=None):
        super().__init__()
        self.monitor, self.path = monitor, path
        self.best_value, self.best_epoch, self._weights = -float("inf"), None, None

    def resume(self, records):
        """Takes the best of a resumed run's epoch `records` (`EpochLog.epochs`).

        The records go up to the run's checkpoint; the best one's weights are in `path`
        (rewritten if a later epoch was lost to the kill).
        """
        for record in records:
            value = record.get(self.monitor)
            if value is not None and value > self.best_value:
                self.best_value, self.best_epoch = value, record["epoch"]

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not value > self.best_value:  # NaN never wins
            return
        self.best_value, self.best_epoch = float(value), epoch + 1
        network = network_of(self.model)
        if self.path is None:
            self._weights = network.get_weights()
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        replace_atomically(
            self.path,
            lambda tmp: network.save_weights(tmp, overwrite=True),
            ".weights.h5",
            weights_file_bytes(network),
        )

    def restore(self, model):
        """Loads the best epoch's weights into `model`'s network; returns that epoch (1-based)."""
        if self.best_epoch is None:
            raise ValueError(f"no epoch reported {self.monitor}: nothing to select")
        network = network_of(model)
        if self.path is None:
            network.set_weights(self._weights)
        else:
            network.load_weights(self.path)
        return self.best_epoch


class EpochLog(keras.callbacks.Callback):
    """Collects each epoch's logs as `{"epoch": 1-based, **logs}`.

    Goes after the callbacks that add to the logs, so every record carries what that epoch
    measured.

    With `path`, the records are also written there (atomically) after every epoch, so a resumed
    run's history continues the killed run's: `resume(epochs_done)` reads them back.
    """

    def __init__(self, path=None):
        super().__init__()
        self.path = path
        self.epochs = []

    def resume(self, epochs_done):
        """Takes the records of the first `epochs_done` epochs from `path`.

        A record written after the last checkpoint, by a run killed in between, is dropped.
        """
        if not (self.path and os.path.isfile(self.path)):
            self.epochs = []
            return
        try:
            with open(self.path) as f:
                records = json.load(f)
            self.epochs = [record for record in records if record["epoch"] <= epochs_done]
        except (ValueError, TypeError, KeyError) as e:
            raise ValueError(f"{self.path} is not a kpartial epoch history ({e})") from None

    def on_epoch_end(self, epoch, logs=None):
        record = {k: v if isinstance(v, int) else float(v) for k, v in (logs or {}).items()}
        self.epochs.append({"epoch": epoch + 1, **record})
        if self.path:
            write_json(self.path, self.epochs)


# Keys of `test_metrics` that need the training counts (propensities).
PROPENSITY_KEYS = ("psp@1", "psp@3", "psp@5")


def test_metrics(scores, thresholds, train_positives=None, num_train_examples=None) -> dict:
    """The metrics of a test set, as a training run and tools/evaluate.py report them.

    Every metric counts only annotated test entries.

    Args:
      scores: the test set's `sparse_scores.SparseScores`.
      thresholds: float [C] per-class decision thresholds (0.5 everywhere when none were chosen),
        or one for every class.
      train_positives: int [C] known training positives per class, for the propensities of
        PSP@k (`metrics.propensities`); None leaves PSP@k out.
      num_train_examples: the number of training examples, for the same; None leaves PSP@k out.

    Returns:
      A dict of plain numbers (NaN where undefined):
      - `map`, `cf1`, `of1`, `cp`, `cr`, `op`, `or`, `evaluated_classes`, `annotated_entries`:
        `scores.evaluate(threshold=thresholds)`, F1s at `thresholds`;
      - `cf1@0.5`, `of1@0.5`: CF1 and OF1 at 0.5 for every class;
      - `p@1`, `p@3`, `p@5`, `ndcg@3`, `ndcg@5`, `cf1@top3`, `of1@top3`: `sparse_ranking_metrics`;
      - `psp@1`, `psp@3`, `psp@5` and `train_examples` (the N of their propensity model), only
        when both `train_positives` and `num_train_examples` are given.
    """
    result = scores.evaluate(threshold=thresholds)
    at_half = scores.f1_scores(0.5)
    result.update({"cf1@0.5": at_half["cf1"], "of1@0.5": at_half["of1"]})
    result.update(sparse_ranking_metrics(scores, train_positives, num_train_examples))
    if train_positives is not None and num_train_examples is not None:
        result["train_examples"] = int(num_train_examples)
    return result


test_metrics.__test__ = False  # not a pytest test where a test module imports it


def sparse_ranking_metrics(scores, train_positives=None, num_train_examples=None):
    """P@1/3/5, nDCG@3/5 and top-3 CF1/OF1, each example's annotated entries ranked.

    Args:
      scores: the test set's `sparse_scores.SparseScores`.
      train_positives: int [C] known training positives per class, or None.
      num_train_examples: the number of training examples, or None.

    Returns:
      A dict of the metrics; PSP@1/3/5 too (Jain et al. propensities from the training
      positives) when `train_positives` and `num_train_examples` are both given.
    """
    result = {f"p@{k}": scores.precision_at_k(k) for k in (1, 3, 5)}
    result.update({f"ndcg@{k}": scores.ndcg_at_k(k) for k in (3, 5)})
    top3 = scores.f1_scores_at_top_k(3)
    result.update({"cf1@top3": top3["cf1"], "of1@top3": top3["of1"]})
    if train_positives is not None and num_train_examples is not None:
        propensity = metrics.propensities(train_positives, num_train_examples)
        result.update({key: scores.psp_at_k(propensity, int(key[4:])) for key in PROPENSITY_KEYS})
    return result


def plot_ap_by_frequency(per_class_ap, positive_counts, path, dataset="", method="", mean_ap=None):
    """Writes a PNG scatter of per-class AP against the class's number of training positives.

    The AP counts annotated test entries only. The title names `dataset`, `method` and `mean_ap`
    (also the PNG's Title metadata); classes without an evaluable AP are left out and counted in
    the legend. The x axis is logarithmic from 1 up (symlog), so the classes with no training
    positive sit apart at 0, with their own marker. Draws on its own `Figure`: no pyplot state,
    no change of matplotlib's backend.

    Args:
        per_class_ap: float [C] test AP per class (NaN where not evaluable).
        positive_counts: [C] known training positives per class.
        path: the PNG file to write.
        dataset: the data spec, for the title (its folders are left out).
        method: the method, for the title.
        mean_ap: the mAP for the title, or None.

    Returns:
        The PNG bytes (for a TensorBoard image too).
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    ap = np.asarray(per_class_ap, np.float64)
    counts = np.asarray(positive_counts, np.float64)
    evaluated = ~np.isnan(ap)
    unseen = evaluated & (counts <= 0)
    seen = evaluated & ~unseen
    figure = Figure(figsize=(6.4, 4.2), dpi=100)
    axes = figure.subplots()
    axes.scatter(
        counts[seen],
        ap[seen],
        s=14,
        alpha=0.7,
        label=f"{int(seen.sum())} classes with training positives",
    )
    if unseen.any():
        axes.scatter(
            np.zeros(int(unseen.sum())),
            ap[unseen],
            s=30,
            marker="x",
            color="tab:red",
            label=f"{int(unseen.sum())} classes with no training positive",
        )
    axes.set_xscale("symlog", linthresh=1, linscale=0.5)
    axes.set_xlim(left=-0.5, right=max(10.0, counts[evaluated].max(initial=1) * 1.5))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    axes.set_xlabel("training positives of the class (known labels; log scale above 1)")
    axes.set_ylabel("AP on annotated test entries")
    axes.set_ylim(-0.02, 1.02)
    axes.set_yticks(np.linspace(0, 1, 6))
    axes.grid(alpha=0.3)
    if (~evaluated).any():
        axes.plot([], [], " ", label=f"{int((~evaluated).sum())} classes not evaluable (no AP)")
    axes.legend(loc="lower right", fontsize=8)
    # A data spec's folders would crowd the title out: FMT:/a/b/file.arff -> FMT:file.arff.
    fmt, _, source = dataset.partition(":")
    dataset = f"{fmt}:{os.path.basename(source.rstrip('/'))}" if "/" in source else dataset
    mean = "" if mean_ap is None or not np.isfinite(mean_ap) else f"mAP {100 * mean_ap:.2f}%"
    title = " · ".join(filter(None, (dataset, method, mean))) or "per-class AP"
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Title": title})
    with open(path, "wb") as f:
        f.write(buffer.getvalue())
    return buffer.getvalue()


def write_ap_by_frequency(per_class_ap, positive_counts, workdir, dataset, method, mean_ap):
    """ap_by_frequency.png in `workdir`, and the same picture as the TensorBoard image of that name.

    Args:
      per_class_ap: float [C] test AP per class (nan where not evaluable).
      positive_counts: [C] known training positives per class.
      workdir: the run's folder.
      dataset, method: what the title names, e.g. "mulan:yeast-test.arff" and "kpartial, known
        fraction 0.1".
      mean_ap: the run's test mAP, for the title.
    """
    import tensorflow as tf

    png = plot_ap_by_frequency(
        per_class_ap,
        positive_counts,
        os.path.join(workdir, "ap_by_frequency.png"),
        dataset,
        method,
        mean_ap,
    )
    writer = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard", "plots"))
    with writer.as_default():
        tf.summary.image("ap_by_frequency", tf.io.decode_png(png)[None], step=0)
    writer.close()
