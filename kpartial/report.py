"""A finished run's report: decision thresholds, test metrics, the headline, the artifacts.

The test set is evaluated once, after the epoch and the per-class thresholds were chosen on the
validation part. Its metrics come from `kpartial.evaluation.test_metrics`, the function
`tools/evaluate.py` uses for an export, so a key means the same in both `metrics.json` files.
"""

import os

import numpy as np
import pandas as pd

from kpartial import class_stats, evaluation, losses, workdir
from kpartial.partial_model import network_of
from kpartial.sparse_labels import as_sparse
from kpartial.sparse_scores import SparseScores

# The decision threshold of a class without a validated one of its own.
DECISION_THRESHOLD = 0.5
# A class needs this many validation positives (and a negative) for a threshold of its own.
MIN_THRESHOLD_POSITIVES = 3


def log_inputs(log, inputs, config):
    """Lines on what the run reads: the splits, skipped records, the class statistics."""
    train, test, stats = inputs.train, inputs.test, inputs.stats
    num_known = int(stats.positives.sum() + stats.negatives.sum())
    if config.data.validation_data:
        log(
            f"validation: {inputs.validation.num_examples} examples of "
            f"{inputs.validation.source}, labels as given (epoch selection, thresholds)"
        )
    elif inputs.validation is not None:
        log(
            f"validation: {inputs.validation.num_examples} training examples held out with "
            "their known labels (epoch selection, thresholds); not trained on"
        )
    log(
        f"train {train.source}: {train.num_examples} examples, {train.num_classes} classes, "
        f"{num_known} known labels ({num_known / (train.num_examples * train.num_classes):.1%}); "
        f"test {test.source}: {test.num_examples} examples"
    )
    for split_name, counts in (("train", train.skipped), ("test", test.skipped)):
        for reason, count in counts.items():
            log(f"skipped {count} {split_name} records (on_bad_input=skip): {reason}")
    if stats.annotation and (
        stats.depends_on_class or config.data.missing_labels not in ("counts", "tested")
    ):
        log(f"class statistics: {stats.annotation}")
    if (
        config.loss.has_techniques
        and stats.complete
        and "negative_focusing" not in config.loss.parsed_options
    ):
        log(
            "every training entry is annotated: kpartial focuses its known negatives with gamma "
            f"{losses.COMPLETE_LABELS_NEGATIVE_FOCUSING:g} (ASL's), not 2 (kpartial.class_stats)"
        )


def decision_thresholds(model, inputs, validation_dataset):
    """(float32 [C] thresholds, bool [C] chosen on validation) of the model's current weights."""
    num_classes = inputs.train.num_classes
    if inputs.validation is None:
        return np.full(num_classes, DECISION_THRESHOLD, np.float32), np.zeros(num_classes, bool)
    scores = evaluation.model_scores(model, validation_dataset, inputs.validation.labels)
    thresholds, chosen = scores.best_f1_thresholds(MIN_THRESHOLD_POSITIVES, DECISION_THRESHOLD)
    return thresholds.astype(np.float32), chosen


def test_report(config, model, scores, inputs, thresholds, chosen, selected_epoch, log):
    """The run's metrics dict from the test set's `SparseScores`; logs the headline."""
    train, test, stats = inputs.train, inputs.test, inputs.stats
    result = evaluation.test_metrics(scores, thresholds, stats.positives, train.num_examples)
    if inputs.simulated_test is not None:
        result["simulated_test_map"] = restricted(
            scores, inputs.simulated_test
        ).mean_average_precision()
    validation = inputs.validation
    result["selection"] = {
        "select_epoch": config.runtime.select_epoch,
        "selected_epoch": selected_epoch,
        "validation_examples": 0 if validation is None else validation.num_examples,
        "thresholds_from_validation": int(chosen.sum()),
        "note": "the epoch and the thresholds were chosen on "
        + (
            f"the validation data {config.data.validation_data} (its labels)"
            if config.data.validation_data
            else "held-out training examples (their known labels)"
        )
        + "; the test set was evaluated once, after both were chosen",
    }
    result.update(
        {
            "method": config.loss.method,
            "known_fraction": config.data.known_fraction,
            "seed": config.runtime.seed,
            "train_data": config.data.train_data,
            "test_data": config.data.test_data,
            "epochs": config.runtime.epochs,
            "jit_compile": bool(model.jit_compile),
            "dtype_policy": network_of(model).dtype_policy.name,
            "active_classes": int(model.active_classes.numpy().sum()),
            "note": "metrics count only annotated test entries (the full truth where the test set is "
            "fully labelled); mAP over classes with >=1 positive and >=1 negative; "
            "simulated_test_map: mAP over the test entries the training labels' simulation would "
            "have kept (what a test set annotated the same way shows)",
            "skipped_input": {"train": train.skipped, "test": test.skipped},
        }
    )
    labels_used = (
        f"simulation={config.data.simulation}"
        if config.data.simulation
        else f"known={config.data.known_fraction}"
    )
    log(
        f"{config.loss.method} {labels_used} seed={config.runtime.seed}: "
        f"mAP={result['map']:.4f} CF1={result['cf1']:.4f} OF1={result['of1']:.4f} "
        f"({result['evaluated_classes']} classes, annotated test entries; epoch "
        f"{selected_epoch}/{config.runtime.epochs}"
        + (" chosen on validation" if config.runtime.select_epoch == "best" else "")
        + ")"
        + (f"; artifacts in {config.workdir}" if config.workdir else "")
    )
    return result


def restricted(scores, labels):
    """`scores` (a `SparseScores`) at the entries `labels` annotates only."""
    kept = as_sparse(labels)
    keys = scores.rows * scores.num_classes + scores.classes
    at = np.isin(keys, kept.rows() * kept.num_classes + kept.classes)
    return SparseScores(
        scores.rows[at],
        scores.classes[at],
        scores.scores[at],
        scores.labels[at],
        scores.num_examples,
        scores.num_classes,
    )


def write_outputs(config, model, inputs, scores, result, thresholds, chosen):
    """The plot, the thresholds table, then the artifacts (metrics.json last: the run finished)."""
    stats = inputs.stats
    evaluation.write_ap_by_frequency(
        scores.per_class_average_precision(),
        stats.positives,
        config.workdir,
        dataset=inputs.test.source,
        method=f"{config.loss.method}, known fraction {config.data.known_fraction}",
        mean_ap=result["map"],
    )
    validation_positives = np.zeros(len(chosen), np.int64)
    if inputs.validation is not None:
        validation_positives = class_stats.ClassStatistics.from_labels(
            inputs.validation.labels, inputs.train.label_names
        ).positives
    table = pd.DataFrame(
        {
            "label": list(inputs.train.label_names),
            "threshold": thresholds,
            "source": np.where(chosen, "validation F1", "default 0.5"),
            "validation_positives": validation_positives,
        }
    )
    workdir.write_atomically(
        os.path.join(config.workdir, "thresholds.csv"), table.to_csv(index=False)
    )
    write_artifacts(config.workdir, model, inputs.train.label_names, thresholds, result)


def write_artifacts(path, model, label_names, thresholds, result):
    """metrics.json (last: it marks the run finished), the network (network.keras), label assets."""
    model.network.save(os.path.join(path, "network.keras"))
    workdir.write_atomically(
        os.path.join(path, "label_names.txt"), "".join(f"{name}\n" for name in label_names)
    )
    np.save(os.path.join(path, "thresholds.npy"), thresholds)
    workdir.write_json(os.path.join(path, "metrics.json"), result)
