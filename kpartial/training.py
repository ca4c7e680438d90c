"""One training run, start to finish: data -> partial labels -> statistics -> model -> fit ->
metrics -> artifacts in the workdir. `tools/train.py` is a thin flag layer over `run`."""

import dataclasses
import json
import os
import re
import time

import keras
import numpy as np
import tensorflow as tf

from kpartial import class_stats, data, evaluation, label_pruning, losses, metrics, models
from kpartial import pipeline, pseudo_labels, simulate
from kpartial.sparse_labels import as_dense
from kpartial.partial_model import EpochCallback, PartialLabelModel, predict_probabilities

METHODS = tuple(losses.METHODS)
# Exported per-class decision thresholds; the CF1/OF1 that runs report use the same value.
DECISION_THRESHOLD = 0.5


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on.

    `test_data` "" means: split `test_fraction` off `train_data` when it is > 0, else the embedded
    `synthetic:test` for `synthetic:train`. `*_data_options` are reader options "key=value,...".
    `simulation` is a file from `tools/simulate.py`; it replaces the `known_fraction` simulation.
    `verify_images` decodes every image once before training, so a corrupt one is named up front.

    `pseudo_labels` and `pruning` are "auto" (on for `method="kpartial"` only, so the other methods
    run as published), "on" (combine kpartial's pseudo labels / pruning with any loss) or "off".
    """

    train_data: str = "synthetic:train"
    test_data: str = ""
    train_data_options: str = ""
    test_data_options: str = ""
    on_bad_input: str = "error"
    test_fraction: float = 0.0
    split_seed: int = 0
    simulation: str = ""
    verify_images: bool = True
    method: str = "kpartial"
    known_fraction: float = 0.1
    seed: int = 1
    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    hidden_units: tuple = (512,)
    dropout: float = 0.2
    jit_compile: str = "auto"
    steps_per_execution: int = 16
    class_stats: str = ""
    loss_balance: float = 0.5
    unknown_weight: float = 0.1
    max_positive_weight: float = 50.0
    pseudo_labels: str = "auto"
    pseudo_start_epoch: int = 10
    pseudo_every: int = 5
    pseudo_mode: str = "prior"
    pseudo_positive_threshold: float = 0.5
    pseudo_negative_threshold: float = 0.05
    pseudo_negative_coverage: float = 0.1
    pseudo_weight: float = 0.5
    pruning: str = "auto"
    prune_schedule: tuple = ()
    prune_criterion: str = "fit_well"
    backbone: str = "mobilenet_v3_small"
    backbone_weights: str = ""
    image_size: int = 224
    eval_every: int = 1
    workdir: str = ""
    verbose: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        for name in ("pseudo_labels", "pruning"):
            if getattr(self, name) not in ("auto", "on", "off"):
                raise ValueError(f"{name} must be auto, on or off, got {getattr(self, name)!r}")
        if self.test_fraction and self.test_data:
            raise ValueError("give test_data or test_fraction, not both")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        data.BadInput(self.on_bad_input)  # validates the policy name
        for options in (self.train_data_options, self.test_data_options):
            parse_options(options)
        if self.jit_compile not in ("auto", "true", "false"):
            raise ValueError(f"jit_compile must be auto, true or false, got {self.jit_compile!r}")

    @property
    def uses_pseudo_labels(self):
        return _switched_on(self.pseudo_labels, self.method) and self.pseudo_start_epoch >= 0

    @property
    def uses_pruning(self):
        return _switched_on(self.pruning, self.method) and bool(self.prune_schedule)


def _switched_on(setting, method):
    return setting == "on" or (setting == "auto" and method == "kpartial")


def resolve_jit_compile(setting):
    """auto = XLA on GPU/TPU only; on CPU it does not pay (benchmarks/results/cpu_speed.md)."""
    if setting == "auto":
        return bool(
            tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU")
        )
    return setting == "true"


def parse_options(text):
    """ "key=value,key=value" -> dict; values become int, float or bool when they read as one.

    A comma starts a new option only before `name=`, so a value may itself be a comma list:
    "task_columns=NR-AR,SR-p53,featurizer=morgan".
    """
    options = {}
    parts = re.split(r",(?=\s*[A-Za-z_]\w*=)", text)
    for item in filter(None, (part.strip() for part in parts)):
        key, sep, value = item.partition("=")
        value = value.strip()
        if not sep or not key.strip():
            raise ValueError(f"reader option {item!r} must look like key=value")
        for convert in (int, float):
            try:
                value = convert(value)
                break
            except ValueError:
                pass
        else:
            value = {"true": True, "false": False}.get(value.lower(), value)
        options[key.strip()] = value
    return options


def _load(spec, options, on_bad_input, check_images=True):
    fmt, path = data.parse_data_spec(spec)
    loaded = data.load(fmt, path, on_bad_input=on_bad_input, **parse_options(options))
    return data.verify_images(loaded, on_bad_input) if check_images else loaded


# The TrainConfig fields `load_data` reads: runs that agree on them can share loaded data.
DATA_FIELDS = (
    "train_data",
    "test_data",
    "train_data_options",
    "test_data_options",
    "on_bad_input",
    "test_fraction",
    "split_seed",
    "verify_images",
)


def load_data(config):
    """(train, test) as the config says; test classes are aligned to train's."""
    train = _load(
        config.train_data, config.train_data_options, config.on_bad_input, config.verify_images
    )
    if config.test_fraction:
        return data.split(train, config.test_fraction, config.split_seed)
    test_spec = config.test_data
    if not test_spec:
        if config.train_data != "synthetic:train":
            raise data.DataError(
                f"no test set for {config.train_data}: give test_data or test_fraction"
            )
        test_spec = "synthetic:test"
    test = _load(test_spec, config.test_data_options, config.on_bad_input, config.verify_images)
    return train, align_classes(test, train.label_names, test_spec)


def align_classes(test, label_names, spec):
    """`test` restricted to and ordered by `label_names` (e.g. a train split chose fewer classes).

    Raises:
      DataError: if a training class is not among the test set's classes.
    """
    if test.label_names == tuple(label_names):
        return test
    column = {name: k for k, name in enumerate(test.label_names)}
    missing = [name for name in label_names if name not in column]
    if missing:
        raise data.DataError(
            f"{spec}: {len(missing)} training classes are not classes of the test set "
            f"(e.g. {missing[:3]}); train and test have different classes "
            f"({len(label_names)} vs {test.num_classes})"
        )
    return test.take_classes([column[name] for name in label_names])


def simulated_labels(config, train):
    """The training labels the run may see: a saved simulation or a `known_fraction` draw."""
    if config.simulation:
        labels, _ = simulate.load(config.simulation, train)
        return labels
    return simulate.keep_fraction(train.labels, config.known_fraction, config.seed)


# Beyond this many N x C entries, per-example state (pseudo labels) is not built densely.
MAX_DENSE_ENTRIES = 2**31


def build_network(config, train):
    if train.features is not None:
        return models.build_mlp(
            train.features.shape[1],
            train.num_classes,
            config.hidden_units,
            config.dropout,
            seed=config.seed,
        )
    return models.build_image_model(
        config.backbone,
        train.num_classes,
        (config.image_size, config.image_size),
        config.backbone_weights or None,
    )


def run(config, log=print, datasets=None):
    """Trains, evaluates and writes artifacts into `config.workdir`; returns the metrics dict.

    `datasets` is `load_data(config)` when the caller already has it (runs only read it).
    """
    keras.utils.set_random_seed(config.seed)
    if config.workdir:
        os.makedirs(config.workdir, exist_ok=True)
    train, test = datasets if datasets is not None else load_data(config)
    known = simulated_labels(config, train)
    if config.class_stats:
        stats = class_stats.ClassStatistics.from_csv(config.class_stats, train.label_names)
    else:
        stats = class_stats.ClassStatistics.from_labels(known, train.label_names)
    num_known = int(stats.positives.sum() + stats.negatives.sum())
    log(
        f"train {train.source}: {train.num_examples} examples, {train.num_classes} classes, "
        f"{num_known} known labels ({num_known / (train.num_examples * train.num_classes):.1%}); "
        f"test {test.source}: {test.num_examples} examples"
    )
    skipped = {"train": train.skipped, "test": test.skipped}
    for split_name, counts in skipped.items():
        for reason, count in counts.items():
            log(f"skipped {count} {split_name} records (on_bad_input=skip): {reason}")
    needs_example_state = (
        config.uses_pseudo_labels or config.uses_pruning or config.method == "ll_cp"
    )
    if needs_example_state and train.num_examples * train.num_classes > MAX_DENSE_ENTRIES:
        raise data.DataError(
            f"{config.train_data}: pseudo labels, pruning and ll_cp keep dense [N, C] state, and "
            f"{train.num_examples} x {train.num_classes} is too large; use --pseudo_labels=off "
            "--pruning=off with another method"
        )
    if needs_example_state:
        known = as_dense(known)
    loss_options = {}
    if config.method == "kpartial":
        loss_options = {
            "balance": config.loss_balance,
            "unknown_weight": config.unknown_weight,
            "max_positive_weight": config.max_positive_weight,
        }
    partial_loss = losses.get(config.method, stats, **loss_options)
    model = PartialLabelModel(
        build_network(config, train),
        train.num_examples,
        train.num_classes,
        partial_loss,
        config.pseudo_weight,
        keep_pseudo_labels=needs_example_state,
    )
    jit = resolve_jit_compile(config.jit_compile)
    model.compile(
        optimizer=keras.optimizers.AdamW(config.learning_rate, config.weight_decay),
        jit_compile=jit,
        steps_per_execution=config.steps_per_execution,
    )

    image_size = (config.image_size, config.image_size)
    train_ds = pipeline.training_dataset(train, known, config.batch_size, config.seed, image_size)
    eval_batch_size = 1024 if train.features is not None else config.batch_size
    train_eval_ds = pipeline.evaluation_dataset(train, eval_batch_size, image_size)
    test_ds = pipeline.evaluation_dataset(test, eval_batch_size, image_size)
    callbacks = [EpochCallback()]
    simulated = config.known_fraction < 1.0 or bool(config.simulation)
    if config.uses_pseudo_labels:
        callbacks.append(
            pseudo_labels.PseudoLabelCallback(
                train_eval_ds,
                known,
                config.pseudo_start_epoch,
                config.pseudo_every,
                config.pseudo_mode,
                stats.priors,
                config.pseudo_positive_threshold,
                config.pseudo_negative_threshold,
                config.pseudo_negative_coverage,
                true_labels=train.dense_labels() if simulated else None,
                log=log,
            )
        )
    if config.uses_pruning:
        callbacks.append(
            label_pruning.LabelPruningCallback(
                train_eval_ds,
                known,
                config.prune_schedule,
                config.prune_criterion,
                config.seed,
                log,
            )
        )
    test_labels = test.dense_labels()
    test_evaluation = evaluation.EvaluationCallback(
        test_ds, test_labels, config.eval_every, config.epochs
    )
    callbacks.append(test_evaluation)
    if config.workdir:
        stats.to_csv(os.path.join(config.workdir, "class_stats.csv"))
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(config.workdir, "tensorboard")))
        # Weights, pseudo labels, active classes and pseudo thresholds, after every epoch.
        callbacks.append(
            keras.callbacks.ModelCheckpoint(
                os.path.join(config.workdir, "checkpoint.weights.h5"), save_weights_only=True
            )
        )
    epoch_log = evaluation.EpochLog()
    callbacks.append(epoch_log)

    started = time.perf_counter()
    model.fit(
        train_ds, epochs=config.epochs, callbacks=callbacks, shuffle=False, verbose=config.verbose
    )
    train_seconds = time.perf_counter() - started

    if test_evaluation.evaluated_epochs == config.epochs:  # predicted after the last epoch
        probabilities = test_evaluation.probabilities
    else:
        probabilities = predict_probabilities(model, test_ds)
    thresholds = np.full(train.num_classes, DECISION_THRESHOLD, np.float32)
    result = metrics.evaluate(probabilities, test_labels)
    result.update(
        evaluation.ranking_metrics(probabilities, test_labels, stats.positives, train.num_examples)
    )
    result.update(
        {
            "method": config.method,
            "known_fraction": config.known_fraction,
            "seed": config.seed,
            "train_data": config.train_data,
            "test_data": config.test_data,
            "epochs": config.epochs,
            "train_seconds": round(train_seconds, 3),
            "jit_compile": jit,
            "active_classes": int(model.active_classes.numpy().sum()),
            "note": "metrics count only annotated test entries; mAP over classes with >=1 positive "
            "and >=1 negative",
            "history": epoch_log.epochs,
            "skipped_input": skipped,
        }
    )
    log(
        f"{config.method} "
        f"{'simulation=' + config.simulation if config.simulation else f'known={config.known_fraction}'} "
        f"seed={config.seed}: "
        f"mAP={result['map']:.4f} CF1={result['cf1']:.4f} OF1={result['of1']:.4f} "
        f"({result['evaluated_classes']} classes, annotated test entries only) in "
        f"{train_seconds:.1f}s"
    )
    if config.workdir:
        write_artifacts(config, model, train.label_names, thresholds, result)
        evaluation.write_ap_by_frequency(
            probabilities,
            test_labels,
            stats.positives,
            config.workdir,
            f"{config.method}, known fraction {config.known_fraction}",
        )
    return result


def json_safe(value):
    """Replaces NaN/inf floats (e.g. mAP with no evaluable class) by None, recursively."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_artifacts(config, model, label_names, thresholds, result):
    """config.json, metrics.json, the network (network.keras) and label assets."""
    workdir = config.workdir
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(config), f, indent=2)
    with open(os.path.join(workdir, "metrics.json"), "w") as f:
        json.dump(json_safe(result), f, indent=2, allow_nan=False)
    model.network.save(os.path.join(workdir, "network.keras"))
    with open(os.path.join(workdir, "label_names.txt"), "w") as f:
        f.write("".join(f"{name}\n" for name in label_names))
    np.save(os.path.join(workdir, "thresholds.npy"), thresholds)
