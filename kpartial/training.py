"""One training run, start to finish: data -> partial labels -> statistics -> model -> fit ->
metrics -> artifacts in the workdir. `tools/train.py` is a thin flag layer over `run`."""

import dataclasses
import json
import math
import os
import re
import time

import keras
import numpy as np
import tensorflow as tf

from kpartial import checkpoints, class_stats, data, evaluation, label_pruning, losses, metrics
from kpartial import models, pipeline, pseudo_labels, simulate, workdir
from kpartial.partial_model import EpochClock, PartialLabelModel, predict_probabilities
from kpartial.sparse_labels import SparseLabels, as_dense

METHODS = tuple(losses.METHODS)
# Exported per-class decision thresholds; the CF1/OF1 that runs report use the same value.
DECISION_THRESHOLD = 0.5


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on.

    `test_data` "" means: split `test_fraction` off `train_data` when it is > 0, else the embedded
    `synthetic:test` for `synthetic:train`. `*_data_options` are reader options "key=value,...".
    Training labels are used as the data gives them; `known_fraction` < 1 hides entries (a seeded
    simulation for fully annotated data), `simulation` is a file from `tools/simulate.py`.
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
    known_fraction: float = 1.0
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
        for name in FINITE_FIELDS:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not 0.0 < self.known_fraction <= 1.0:
            raise ValueError(f"known_fraction must be in (0, 1], got {self.known_fraction}")
        if self.jit_compile not in ("auto", "true", "false"):
            raise ValueError(f"jit_compile must be auto, true or false, got {self.jit_compile!r}")

    @property
    def uses_pseudo_labels(self):
        return _switched_on(self.pseudo_labels, self.method) and self.pseudo_start_epoch >= 0

    @property
    def uses_pruning(self):
        return _switched_on(self.pruning, self.method) and bool(self.prune_schedule)


# Hyperparameters that must be finite and non-negative (NaN would pass any range check).
FINITE_FIELDS = (
    "test_fraction",
    "known_fraction",
    "learning_rate",
    "weight_decay",
    "dropout",
    "loss_balance",
    "unknown_weight",
    "max_positive_weight",
    "pseudo_positive_threshold",
    "pseudo_negative_threshold",
    "pseudo_negative_coverage",
    "pseudo_weight",
)


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
    check_same_inputs(train, test)
    return train, align_classes(test, train.label_names, test_spec)


def check_same_inputs(train, test):
    """Raises DataError (naming both sources) unless train and test have the same kind of inputs
    and, for feature data, the same number of features."""
    width = lambda d: None if d.features is None else d.features.shape[1]
    if (train.features is None) != (test.features is None):
        kinds = ["images" if d.features is None else "features" for d in (train, test)]
        raise data.DataError(
            f"train {train.source} has {kinds[0]} but test {test.source} has {kinds[1]}"
        )
    if width(train) != width(test):
        raise data.DataError(
            f"train {train.source} has {width(train)} features but test {test.source} has "
            f"{width(test)}: they must agree (e.g. a label missing from one label file is read "
            "as a feature)"
        )


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


def training_labels(config, train, log=print):
    """The training labels the run may see: as given, or thinned by an explicit simulation.

    Labels are used as the data has them unless the config asks for a simulation (`simulation`
    or `known_fraction` < 1); thinning data that already has unknown entries is said in one line.
    """
    if config.simulation:
        labels, _ = simulate.load(config.simulation, train)
        return labels
    if config.known_fraction >= 1.0:
        return train.labels
    known = _num_known(train.labels)
    entries = train.num_examples * train.num_classes
    if known < entries:
        log(
            f"--known_fraction={config.known_fraction} thins labels that are already partial "
            f"({known} of {entries} entries known, {known / entries:.1%}): keeping about "
            f"{config.known_fraction:.0%} of them"
        )
    return simulate.keep_fraction(train.labels, config.known_fraction, config.seed)


def _num_known(labels):
    return labels.num_known if isinstance(labels, SparseLabels) else int(np.count_nonzero(labels))


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


def run(config, log=print, datasets=None, callbacks=(), resume=False, overwrite=False, files=None):
    """Trains, evaluates and writes artifacts into `config.workdir`; returns the metrics dict.

    Args:
      config: a `TrainConfig`.
      log: prints one line.
      datasets: `load_data(config)` when the caller already has it (runs only read it).
      callbacks: more Keras callbacks for `fit`.
      resume: continue the run in `config.workdir` from its last checkpoint; the config must be
        the one the run started with. A finished run is not trained again: its metrics are
        returned. A workdir without a run starts a new one.
      overwrite: replace a previous run in `config.workdir` (only kpartial's own artifacts are
        removed). Without `resume` or `overwrite`, a workdir holding a run is refused.
      files: {name: text} written into the workdir once it is claimed (e.g. the resolved flags).

    Raises:
      WorkdirError: the workdir is unusable, in use, or holds a run and neither flag was given.
      DataError: bad input data.
    """
    if not config.workdir:
        return _train(config, log, _inputs(config, datasets, log), callbacks, resuming=False)
    with workdir.claim(config.workdir, resume, overwrite, log) as resuming:
        if resuming:
            _check_resumable(config)
            if workdir.is_finished(config.workdir):
                log(f"--resume: {config.workdir} holds a finished run; nothing to train")
                with open(os.path.join(config.workdir, workdir.FINISHED)) as f:
                    return json.load(f)
        # Inputs first: a run that stops at bad input leaves nothing that blocks the next attempt.
        inputs = _inputs(config, datasets, log)
        if not resuming:
            workdir.write_atomically(
                os.path.join(config.workdir, "config.json"), _config_json(config)
            )
            for name, text in (files or {}).items():
                workdir.write_atomically(os.path.join(config.workdir, name), text)
        return _train(config, log, inputs, callbacks, resuming)


def _inputs(config, datasets, log):
    """(train, test, training labels, class statistics): everything read from the user's files."""
    train, test = datasets if datasets is not None else load_data(config)
    known = training_labels(config, train, log)
    return train, test, known, _class_statistics(config, known, train)


# TrainConfig fields that may differ between a run and its resumption.
RESUME_MAY_CHANGE = ("verbose",)


def _config_json(config):
    return json.dumps(dataclasses.asdict(config), indent=2)


def _check_resumable(config):
    path = os.path.join(config.workdir, "config.json")
    if not os.path.isfile(path):
        raise workdir.WorkdirError(
            f"--resume: {config.workdir} has no config.json, so it is not a resumable run"
        )
    with open(path) as f:
        started = json.load(f)
    now = json.loads(_config_json(config))
    changed = [
        f"{name}={started.get(name)!r} -> {now[name]!r}"
        for name in now
        if name not in RESUME_MAY_CHANGE and started.get(name) != now[name]
    ]
    if changed:
        raise workdir.WorkdirError(
            f"--resume: the run in {config.workdir} was started with other settings "
            f"({'; '.join(changed)}); resume with the same flags, or --overwrite"
        )


def _train(config, log, inputs, extra_callbacks, resuming):
    train, test, known, stats = inputs
    keras.utils.set_random_seed(config.seed)
    _log_data(log, train, test, stats)
    model = build_model(config, train, stats)
    backup = None
    start_epoch = 0
    if config.workdir:
        backup = checkpoints.ResumableBackup(os.path.join(config.workdir, "checkpoint"))
        if resuming:
            start_epoch = backup.restore(model)
            log(f"--resume: continuing {config.workdir} after epoch {start_epoch}")
    image_size = (config.image_size, config.image_size)
    train_ds = pipeline.training_dataset(
        train,
        known,
        config.batch_size,
        config.seed,
        image_size,
        epoch=model.epochs_done,
    )
    eval_batch_size = 1024 if train.features is not None else config.batch_size
    train_eval_ds = pipeline.evaluation_dataset(train, eval_batch_size, image_size)
    test_ds = pipeline.evaluation_dataset(test, eval_batch_size, image_size)
    test_labels = test.dense_labels()
    test_evaluation = evaluation.EvaluationCallback(
        test_ds, test_labels, config.eval_every, config.epochs
    )
    history_path = os.path.join(config.workdir, "history.json") if config.workdir else None
    epoch_log = evaluation.EpochLog(history_path)
    if resuming:
        epoch_log.resume(start_epoch)
    callbacks = [
        EpochClock(),
        *_technique_callbacks(config, train, known, stats, train_eval_ds, log),
        test_evaluation,
        *_output_callbacks(config, stats),
        *extra_callbacks,
        epoch_log,
        *([backup] if backup else []),  # last: the checkpoint holds everything the epoch changed
    ]
    started = time.perf_counter()
    model.fit(
        train_ds,
        epochs=config.epochs,
        initial_epoch=start_epoch,
        callbacks=callbacks,
        shuffle=False,
        verbose=config.verbose,
    )
    train_seconds = time.perf_counter() - started

    if test_evaluation.evaluated_epochs == config.epochs:  # predicted after the last epoch
        probabilities = test_evaluation.probabilities
    else:
        probabilities = predict_probabilities(model, test_ds)
    result = _report(config, model, probabilities, test_labels, stats, train, test, log)
    result.update(
        {
            "train_seconds": round(train_seconds, 3),
            "resumed_after_epoch": start_epoch if resuming else None,
            "history": epoch_log.epochs,
        }
    )
    if config.workdir:
        thresholds = np.full(train.num_classes, DECISION_THRESHOLD, np.float32)
        write_artifacts(config, model, train.label_names, thresholds, result)
        evaluation.write_ap_by_frequency(
            probabilities,
            test_labels,
            stats.positives,
            config.workdir,
            f"{config.method}, known fraction {config.known_fraction}",
        )
    return result


def _class_statistics(config, known, train):
    if config.class_stats:
        return class_stats.ClassStatistics.from_csv(config.class_stats, train.label_names)
    return class_stats.ClassStatistics.from_labels(known, train.label_names)


def _log_data(log, train, test, stats):
    num_known = int(stats.positives.sum() + stats.negatives.sum())
    log(
        f"train {train.source}: {train.num_examples} examples, {train.num_classes} classes, "
        f"{num_known} known labels ({num_known / (train.num_examples * train.num_classes):.1%}); "
        f"test {test.source}: {test.num_examples} examples"
    )
    for split_name, counts in (("train", train.skipped), ("test", test.skipped)):
        for reason, count in counts.items():
            log(f"skipped {count} {split_name} records (on_bad_input=skip): {reason}")


def needs_example_state(config):
    return config.uses_pseudo_labels or config.uses_pruning or config.method == "ll_cp"


def build_model(config, train, stats):
    """The compiled `PartialLabelModel` of the run."""
    example_state = needs_example_state(config)
    if example_state and train.num_examples * train.num_classes > MAX_DENSE_ENTRIES:
        raise data.DataError(
            f"{config.train_data}: pseudo labels, pruning and ll_cp keep dense [N, C] state, and "
            f"{train.num_examples} x {train.num_classes} is too large; use --pseudo_labels=off "
            "--pruning=off with another method"
        )
    loss_options = {}
    if config.method == "kpartial":
        loss_options = {
            "balance": config.loss_balance,
            "unknown_weight": config.unknown_weight,
            "max_positive_weight": config.max_positive_weight,
        }
    model = PartialLabelModel(
        build_network(config, train),
        train.num_examples,
        train.num_classes,
        losses.get(config.method, stats, **loss_options),
        config.pseudo_weight,
        keep_pseudo_labels=example_state,
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(config.learning_rate, config.weight_decay),
        jit_compile=resolve_jit_compile(config.jit_compile),
        steps_per_execution=config.steps_per_execution,
    )
    return model


def _technique_callbacks(config, train, known, stats, train_eval_ds, log):
    """Pseudo labels and label pruning, as the config switches them on."""
    if needs_example_state(config):
        known = as_dense(known)
    callbacks = []
    if config.uses_pseudo_labels:
        simulated = config.known_fraction < 1.0 or bool(config.simulation)
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
    return callbacks


def _output_callbacks(config, stats):
    if not config.workdir:
        return []
    stats.to_csv(os.path.join(config.workdir, "class_stats.csv"))
    return [keras.callbacks.TensorBoard(os.path.join(config.workdir, "tensorboard"))]


def _report(config, model, probabilities, test_labels, stats, train, test, log):
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
            "jit_compile": resolve_jit_compile(config.jit_compile),
            "active_classes": int(model.active_classes.numpy().sum()),
            "note": "metrics count only annotated test entries; mAP over classes with >=1 positive "
            "and >=1 negative",
            "skipped_input": {"train": train.skipped, "test": test.skipped},
        }
    )
    labels_used = (
        f"simulation={config.simulation}" if config.simulation else f"known={config.known_fraction}"
    )
    log(
        f"{config.method} {labels_used} seed={config.seed}: "
        f"mAP={result['map']:.4f} CF1={result['cf1']:.4f} OF1={result['of1']:.4f} "
        f"({result['evaluated_classes']} classes, annotated test entries only)"
        + (f"; artifacts in {config.workdir}" if config.workdir else "")
    )
    return result


def write_artifacts(config, model, label_names, thresholds, result):
    """metrics.json (last: it marks the run finished), the network (network.keras), label assets."""
    path = config.workdir
    model.network.save(os.path.join(path, "network.keras"))
    workdir.write_atomically(
        os.path.join(path, "label_names.txt"), "".join(f"{name}\n" for name in label_names)
    )
    np.save(os.path.join(path, "thresholds.npy"), thresholds)
    evaluation.write_json(os.path.join(path, "metrics.json"), result)
